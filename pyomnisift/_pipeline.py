"""Execution of a plan: encode -> sift -> decode, one compression unit at a time.

A unit is what OmniSIFT compresses together (omnisift.h): a pair of frame grids with the audio whose
t falls in their seconds, an image, or a stretch of audio without video (always kept). Units are
independent, so compressing unit by unit gives the whole-sequence keep mask, and media memory stays
bounded by one unit whatever the video's length. Kept rows are decoded at their original (t, h, w)
positions (M-RoPE models), or at consecutive positions for models with ordinary RoPE.

The context is llama-cpp-python's: text goes through `Llama.eval` (positions `n_tokens` onward), media
through libomnisift's decode at explicit positions, and `input_ids` / `n_tokens` are kept in
llama-cpp-python's convention (see _plan.py) so that its own generation continues from them.
"""

from __future__ import annotations

import queue
import threading
from typing import Callable, Optional

import numpy as np

from . import _media, _sequence as S
from . import omnisift_cpp as C
from ._errors import ModelFileError
from ._audio_stream import AudioRows
from ._plan import AUDIO_BLOCK, MediaSegment, Plan, TextSegment
from ._prefill import Prefill, sift_params
from ._sift import chunks as sift_chunks
from ._stats import Stats, UnitRecord

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


class _PlannedRows:
    """Rows a tower encoded whole at planning (libmtmd's 30-s windows), by range like AudioRows."""

    def __init__(self, rows: np.ndarray):
        self.rows = rows

    def take(self, start: int, n: int) -> np.ndarray:
        return self.rows[start:start + n]

    def close(self) -> None:
        pass


class _CountingRows:
    """AudioRows, counting the encoder steps it runs (usage["omnisift"]["encoder_calls"])."""

    def __init__(self, rows: AudioRows, stats: Stats):
        self.rows, self.stats = rows, stats

    def take(self, start: int, n: int) -> np.ndarray:
        self.stats.encoder_calls["audio"] += 1
        return self.rows.take(start, n)

    def close(self) -> None:
        self.rows.close()


class Pipeline:
    """Decodes plans into one llama-cpp-python context with one model's encoders.

    batch_rows: kept rows of consecutive units are decoded together, up to this many per flush
    (0: the context's n_batch; 1: every unit on its own, as before batching across units).
    reuse_identical_pairs: a frame pair pixel-identical to the pair before takes its rows instead
    of being encoded again (the encoder is deterministic, so the rows are the same).
    """

    def __init__(self, *, vision, audio, engine, uses_mrope: bool, n_embd: int, batch_rows: int = 0,
                 reuse_identical_pairs: bool = True):
        self.vision = vision
        self.audio = audio
        self.engine = engine
        self.uses_mrope = uses_mrope
        self.n_embd = n_embd
        self.batch_rows = batch_rows
        self.reuse_identical_pairs = reuse_identical_pairs

    def decode(self, llama, plan: Plan, start: int, stop: int, stats: Stats, *, sift_head=None,
               on_unit: Optional[Callable] = None, progress: Optional[Callable] = None) -> None:
        """Decodes the plan's positions [start, stop) into `llama`, whose context holds [0, start)
        already; `stop` is a segment boundary. Media that starts before `start` must not be cut."""
        for seg in plan.segments:
            if seg.end <= start or seg.start >= stop:
                continue
            if isinstance(seg, TextSegment):
                if llama.n_tokens != max(seg.start, start):
                    raise RuntimeError(f"context at position {llama.n_tokens}, the plan at {max(seg.start, start)}")
                with stats.timer("prefill"):
                    llama.eval(seg.tokens[max(start - seg.start, 0):])
                continue
            if seg.start < start:
                raise RuntimeError("a media item cannot be decoded from its middle")
            self._media(llama, plan, seg, stats, sift_head, on_unit, progress)
            if progress is not None:
                progress("prefill", seg.end - start, len(plan.ids) - start)

    # --- one media item

    def _media(self, llama, plan: Plan, seg: MediaSegment, stats: Stats, sift_head, on_unit, progress) -> None:
        ctx = llama.ctx
        self._next = seg.start   # the next position under ordinary RoPE
        self._last_pair = None   # (frames, rows) of the pair encoded last, within this item
        if seg.open_tokens:
            self._tokens(ctx, seg.open_tokens, seg.start, stats)
        lay, s = seg.layout, plan.settings
        frames = audio = None
        if seg.probe.kind == "video":
            # Frames are read and resized on a thread (PyAV and PIL release the GIL) while the previous
            # unit is encoded and decoded; the queue bounds what is held to two units of frames.
            frames = _prefetch(_media.iter_video_frames(seg.item.source, info=seg.probe.video,
                                                        budget=seg.item.budget), depth=4)
        if seg.probe.audio_rows is not None:
            audio = _PlannedRows(seg.probe.audio_rows)
        elif seg.probe.n_audio:
            # the track is read a second time, 2 s at a time, next to the frames it goes with; PyAV
            # decodes and resamples it on a thread (it releases the GIL), a few blocks ahead
            blocks = _media.iter_audio(seg.item.source, AUDIO_BLOCK, budget=seg.item.budget)
            audio = _CountingRows(AudioRows(self.audio, _prefetch(blocks, depth=4), seg.probe.audio_plan), stats)
        # One C call per unit sifts it and queues its kept rows; the queue is decoded n_batch rows at a
        # time, so a llama_decode takes several units' rows (t ascends from unit to unit).
        prefill = Prefill(ctx, self.engine, sift_params(s, sift_head), self.batch_rows)
        try:
            all_units = units(seg)
            for done, rows_idx in enumerate(all_units):
                rows = self._encode_unit(seg, rows_idx, frames, audio, stats)
                mod = lay.modality[rows_idx]
                pos = lay.positions[:, rows_idx]
                keep = prefill.add(rows, mod, pos, renumber_from=-1 if self.uses_mrope else self._next)
                if not self.uses_mrope:
                    self._next += int(keep.sum())
                if on_unit is not None:
                    on_unit(UnitRecord(seg.index, seg.probe.kind, mod, lay.source[rows_idx], pos, keep, rows))
                if progress is not None:
                    progress("encode", done + 1, len(all_units))
            prefill.flush()
        finally:
            st = prefill.stats()
            stats.timings["compress"] += st["t_sift_ms"]
            stats.timings["prefill"] += st["t_decode_ms"]
            stats.media_batches += st["n_decode_calls"]
            prefill.close()
            if frames is not None:
                frames.close()
            if audio is not None:
                audio.close()
        if seg.close_tokens:
            self._tokens(ctx, seg.close_tokens, seg.end - 1, stats)
        if not self.uses_mrope and self._next != seg.end:
            raise RuntimeError(f"decoded up to position {self._next}, the plan expected {seg.end}")
        llama.input_ids[seg.start:seg.end] = seg.placeholders
        llama.n_tokens = seg.end
        stats.media_cells += seg.n_cells

    def _encode_unit(self, seg: MediaSegment, rows_idx: np.ndarray, frames, audio, stats: Stats) -> np.ndarray:
        """The encoder rows of one unit, in the unit's (sequence) order."""
        lay = seg.layout
        if seg.probe.kind == "image":
            with stats.timer("media_decode"):
                gh, gw = seg.probe.grid
                pixels = _resize(_media.read_image(seg.item.source, seg.item.budget), gh * 28, gw * 28)
            with stats.timer("encode_vision"):
                rows, _, _ = self.vision.encode([pixels])
            stats.encoder_calls["vision"] += 1
            return rows
        out = np.empty((len(rows_idx), self.n_embd), np.float32)
        mod, src = lay.modality[rows_idx], lay.source[rows_idx]
        last = self._last_pair
        for k in np.unique(src[mod == S.MODALITY_VIDEO]):
            with stats.timer("media_decode"):
                pair = [next(frames, None), next(frames, None)]
            if pair[1] is None:
                raise ModelFileError(seg.item.label, "the video stream ended before its announced length")
            if (self.reuse_identical_pairs and last is not None
                    and all(np.array_equal(a, b) for a, b in zip(pair, last[0]))):
                # A pair pixel-identical to the one before (slides, screen recordings, a still
                # camera) has the same rows: the encoder is deterministic.
                grid, (rh, rw) = last[1], seg.probe.grid
                stats.pairs_reused += 1
            else:
                with stats.timer("encode_vision"):
                    grid, rh, rw = self.vision.encode(pair)
                stats.encoder_calls["vision"] += 1
                last = (pair, grid)
            if (rh, rw) != seg.probe.grid:
                raise ModelFileError(seg.item.label, f"libmtmd made a {rh}x{rw} grid of frames sized for "
                                                     f"{seg.probe.grid[0]}x{seg.probe.grid[1]}")
            sel = (mod == S.MODALITY_VIDEO) & (src == k)
            out[sel] = grid   # a grid's rows are consecutive and in row-major order
        self._last_pair = last
        is_audio = mod == S.MODALITY_AUDIO
        if is_audio.any():
            a = src[is_audio]
            with stats.timer("encode_audio"):
                out[is_audio] = audio.take(int(a.min()), int(a.max() - a.min()) + 1)[a - a.min()]
        return out

    # --- decoding at explicit positions

    def _positions(self, layout_pos: np.ndarray) -> np.ndarray:
        if self.uses_mrope:
            return layout_pos
        n = layout_pos.shape[-1]
        out = np.arange(self._next, self._next + n, dtype=np.int32)
        self._next += n
        return np.broadcast_to(out, layout_pos.shape) if layout_pos.ndim == 2 else out

    def _tokens(self, ctx, tokens: list, pos: int, stats: Stats) -> None:
        toks = np.ascontiguousarray(tokens, dtype=np.int32)
        positions = np.ascontiguousarray(self._positions(np.full(len(toks), pos, np.int32)), dtype=np.int32)
        with stats.timer("prefill"):
            C.check(C.omnisift_decode_tokens(ctx, toks.ctypes.data_as(C._int32_p), len(toks),
                                             positions.ctypes.data_as(C._int32_p), 0, 0), "decode")


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
