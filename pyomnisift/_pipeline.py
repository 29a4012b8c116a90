"""The inputs of compression units: which rows of a media item form each unit, and the frames and
audio features that the context hands to C with them (nothing here writes llama's state).

A unit is what OmniSIFT compresses together (omnisift.h): a pair of frame grids with the audio whose
t falls in their seconds, an image, or a stretch of audio without video (always kept). Units are
independent, so compressing unit by unit gives the whole-sequence keep mask, and media memory stays
bounded by one unit whatever the video's length.
"""

from __future__ import annotations

import queue
import threading
from typing import Optional

import numpy as np

from . import _mel_stream, _sequence as S
from .media import decode
from ._audio import window_rows
from ._errors import ModelFileError
from ._plan import AUDIO_BLOCK, MediaSegment
from ._sift import chunks as sift_chunks

AUDIO_ROWS_PER_UNIT = 800   # audio without video is kept whole; decode it in 32-s stretches


def units(seg: MediaSegment) -> list:
    """Row indices (sequence order) of each compression unit of a media item, in decode order."""
    lay = seg.layout
    if seg.probe.kind == "image":
        return [np.arange(lay.n_rows)]
    if seg.probe.kind == "audio":
        return [np.arange(a, min(a + AUDIO_ROWS_PER_UNIT, lay.n_rows)) for a in range(0, lay.n_rows, AUDIO_ROWS_PER_UNIT)]
    # omnisift.h's chunks (C: omnisift_sift_chunks); rows in no chunk (audio before the first grid,
    # which a video's layout never has) would go with the first, where they are kept all the same
    unit = np.maximum(sift_chunks(lay.modality, lay.positions), 0)
    order = np.argsort(unit, kind="stable")
    return np.split(order, np.flatnonzero(np.diff(unit[order])) + 1)


class Frames:
    """The frames of a media item, a unit's worth at a time: video frames are read and resized on a
    thread (PyAV and PIL release the GIL) while the previous unit is encoded and decoded."""

    def __init__(self, seg: MediaSegment):
        self.seg = seg
        self.per_grid = 1 if seg.probe.kind == "image" else 2
        self._iter = None
        if seg.probe.kind == "video":
            # the queue bounds what is held to two units of frames
            self._iter = _prefetch(decode.iter_video_frames(seg.item.source, info=seg.probe.video,
                                                                     budget=seg.item.budget), depth=4)

    def take(self, n_grids: int) -> list:
        """The frames of the next n_grids grids (uint8 [h, w, 3], C-contiguous)."""
        if n_grids == 0:
            return []
        if self._iter is None:   # an image: one grid, one frame
            gh, gw = self.seg.probe.grid
            patch = self.seg.probe.patch
            return [np.ascontiguousarray(_resize(decode.read_image(self.seg.item.source, self.seg.item.budget),
                                                 gh * patch, gw * patch))]
        out = [next(self._iter, None) for _ in range(self.per_grid * n_grids)]
        if out and out[-1] is None:
            raise ModelFileError(self.seg.item.label, "the video stream ended before its announced length")
        return [np.ascontiguousarray(f, dtype=np.uint8) for f in out]

    def close(self) -> None:
        if self._iter is not None:
            self._iter.close()


class AudioFeed:
    """A media item's audio, given to C as the stream grows: for our windowed tower, log-mel
    features of the next whole 2-s windows (the track read a second time, 2 s at a time, on a
    thread, a few blocks ahead); for towers that encoded the whole clip at planning (libmtmd's), those
    rows. ``until(end)`` returns what brings the stream to at least `end` rows (None: it holds them)."""

    def __init__(self, seg: MediaSegment):
        self.mel = seg.probe.audio_rows is None
        self.given = 0
        if self.mel:
            blocks = _prefetch(decode.iter_audio(seg.item.source, AUDIO_BLOCK, budget=seg.item.budget), depth=4)
            self._steps = _mel_stream.iter_window_features(blocks, seg.probe.audio_plan)
            # rows of the stream once window w is encoded (the C rule, asked once per item, not per unit)
            self._ends = window_rows(seg.probe.audio_plan.n_samples)[:, 1]
        else:
            self._rows = np.ascontiguousarray(seg.probe.audio_rows, dtype=np.float32)

    def until(self, end: int) -> Optional[np.ndarray]:
        if self.given >= end:
            return None
        if not self.mel:
            out, self.given = self._rows[self.given:end], end
            return out
        parts = []
        while self.given < end:
            first, features = next(self._steps)
            parts.append(features)
            if first < len(self._ends):   # else a last window of 1 or 2 frames, which has no row
                self.given = int(self._ends[first])
        return np.ascontiguousarray(np.concatenate(parts) if len(parts) > 1 else parts[0], dtype=np.float32)

    def finish(self) -> None:
        """Runs the stream to its end (at most a last window of 1 or 2 frames, which has no row),
        where pass 2 is checked against the plan."""
        if self.mel:
            for first, _ in self._steps:
                if first < len(self._ends):
                    raise RuntimeError("audio rows left over after the item's last unit")

    def close(self) -> None:
        if self.mel:
            self._steps.close()


def _prefetch(iterator, depth: int):
    """Runs `iterator` on a thread, `depth` items ahead; re-raises its exceptions in the consumer."""
    q: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()
    done = object()

    def produce():
        try:
            for item in iterator:
                while not stop.is_set():
                    try:
                        q.put(item, timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if stop.is_set():
                    return
            q.put(done)
        except BaseException as e:  # handed to the consumer, which raises it
            q.put(e)

    thread = threading.Thread(target=produce, name="pyomnisift-prefetch", daemon=True)
    thread.start()
    try:
        while True:
            item = q.get()
            if item is done:
                return
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        while thread.is_alive():  # unblock a producer waiting on a full queue
            try:
                q.get_nowait()
            except queue.Empty:
                thread.join(timeout=0.1)


def _resize(pixels: np.ndarray, height: int, width: int) -> np.ndarray:
    if pixels.shape[:2] == (height, width):
        return pixels
    from PIL import Image

    return np.asarray(Image.fromarray(pixels).resize((width, height), Image.BICUBIC), dtype=np.uint8)
