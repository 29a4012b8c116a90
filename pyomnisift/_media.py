"""Media decoding with PyAV: video frames sampled and sized as Qwen2.5-Omni's processor does,
audio as 16 kHz mono float32, images as RGB.

Frames are yielded lazily, so a long video is never held whole in memory.
"""

from __future__ import annotations

import dataclasses
import math
import os
from typing import Iterator

import numpy as np

from ._errors import ModelFileError

SAMPLE_RATE = 16000
PATCH_FACTOR = 28                   # vision patch 14 x spatial merge 2
VIDEO_MIN_PIXELS = 128 * 28 * 28    # Qwen2.5-Omni processor's video size bounds
VIDEO_MAX_PIXELS = 768 * 28 * 28
FRAME_FACTOR = 2                    # frames come in pairs (temporal patch 2)
MIN_FRAMES, MAX_FRAMES = 4, 768


def smart_resize(height: int, width: int, min_pixels: int, max_pixels: int,
                 factor: int = PATCH_FACTOR) -> tuple[int, int]:
    """Target (height, width): multiples of `factor`, area within [min_pixels, max_pixels], aspect
    ratio kept as well as those allow. Same rule as the transformers Qwen2-VL processors, so that
    libmtmd receives frames it does not need to resize again."""
    if min(height, width) <= 0:
        raise ValueError(f"image has no pixels ({width}x{height})")
    if max(height, width) / min(height, width) > 200:
        raise ValueError(f"aspect ratio {width}x{height} is beyond 200:1")
    h = round(height / factor) * factor
    w = round(width / factor) * factor
    if h * w > max_pixels:
        beta = math.sqrt(height * width / max_pixels)
        h = max(factor, math.floor(height / beta / factor) * factor)
        w = max(factor, math.floor(width / beta / factor) * factor)
    elif h * w < min_pixels:
        beta = math.sqrt(min_pixels / (height * width))
        h = math.ceil(height * beta / factor) * factor
        w = math.ceil(width * beta / factor) * factor
    return h, w


def _name(source) -> str:
    return "<in-memory media>" if hasattr(source, "read") else os.fspath(source)


def _ready(source, what: str):
    """A path that exists, or a binary file-like object rewound (one source may be read several times)."""
    if hasattr(source, "read"):
        source.seek(0)
        return source
    source = os.fspath(source)
    if not os.path.exists(source):
        raise FileNotFoundError(f"{what} not found: {source}")
    return source


def _open(source, what: str):
    import av

    source = _ready(source, what)
    try:
        return av.open(source)
    except (av.error.FFmpegError, ValueError) as e:
        raise ModelFileError(_name(source), f"cannot be decoded as {what}: {e}") from e


@dataclasses.dataclass(frozen=True)
class VideoInfo:
    path: str
    duration: float        # seconds
    n_frames: int          # frames in the stream
    n_sampled: int         # frames sampled at the target fps (a multiple of 2)
    height: int            # size after smart_resize
    width: int
    has_audio: bool


def probe_video(path, fps: float = 2.0, min_pixels: int = VIDEO_MIN_PIXELS,
                max_pixels: int = VIDEO_MAX_PIXELS) -> VideoInfo:
    with _open(path, "video") as c:
        if not c.streams.video:
            raise ModelFileError(_name(path), "has no video stream")
        vs = c.streams.video[0]
        rate = float(vs.average_rate or vs.guessed_rate or 0)
        if vs.duration is not None and vs.time_base is not None:
            duration = float(vs.duration * vs.time_base)
        elif c.duration is not None:
            duration = c.duration / 1e6
        else:
            duration = 0.0
        n_frames = vs.frames or int(round(duration * rate))
        if n_frames <= 0 or duration <= 0:
            raise ModelFileError(_name(path), "video stream is empty")
        h, w = smart_resize(vs.codec_context.height, vs.codec_context.width, min_pixels, max_pixels)
        if n_frames < FRAME_FACTOR:
            raise ModelFileError(_name(path), f"video has {n_frames} frame(s); at least {FRAME_FACTOR} are needed")
        # The Qwen vision utilities' rule: duration x fps frames, at least 4, at most 768 and the
        # stream's own count, rounded to whole pairs.
        top = min(MAX_FRAMES, n_frames) // FRAME_FACTOR * FRAME_FACTOR
        n_sampled = min(max(n_frames / rate * fps if rate > 0 else n_frames, MIN_FRAMES), top)
        n_sampled = max(FRAME_FACTOR, round(n_sampled / FRAME_FACTOR) * FRAME_FACTOR)
        return VideoInfo(_name(path), duration, n_frames, n_sampled, h, w, bool(c.streams.audio))


def iter_video_frames(path, fps: float = 2.0, min_pixels: int = VIDEO_MIN_PIXELS,
                      max_pixels: int = VIDEO_MAX_PIXELS) -> Iterator[np.ndarray]:
    """Yields sampled frames as uint8 RGB [height, width, 3], resized with bicubic filtering.

    Frame indices are spread evenly over the stream (linspace, rounded), the rule of the Qwen
    vision utilities; the count is the duration times fps, rounded to a multiple of 2.
    """
    from PIL import Image

    info = probe_video(path, fps, min_pixels, max_pixels)
    wanted = np.round(np.linspace(0, info.n_frames - 1, info.n_sampled)).astype(np.int64)
    with _open(path, "video") as c:
        stream = c.streams.video[0]
        stream.thread_type = "AUTO"
        j = 0
        for i, frame in enumerate(c.decode(stream)):
            while j < len(wanted) and wanted[j] == i:   # an index may repeat when fps > source rate
                img = frame.to_image().resize((info.width, info.height), Image.BICUBIC)
                yield np.asarray(img, dtype=np.uint8)
                j += 1
            if j == len(wanted):
                return
        # Streams whose header over-counts frames: repeat the last frame so pairs stay whole.
        if j < len(wanted) and j > 0:
            for _ in range(len(wanted) - j):
                yield np.asarray(img, dtype=np.uint8)


def read_audio(path, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """The first audio stream of a file (audio or video), as mono float32 at `sample_rate`."""
    import av

    with _open(path, "audio") as c:
        if not c.streams.audio:
            raise ModelFileError(_name(path), "has no audio stream")
        resampler = av.AudioResampler(format="flt", layout="mono", rate=sample_rate)
        parts = []
        for frame in c.decode(c.streams.audio[0]):
            for out in resampler.resample(frame):
                parts.append(out.to_ndarray().reshape(-1))
        for out in resampler.resample(None):
            parts.append(out.to_ndarray().reshape(-1))
    pcm = np.concatenate(parts).astype(np.float32) if parts else np.zeros(0, np.float32)
    return pcm


def read_image(path) -> np.ndarray:
    """An image file as uint8 RGB [height, width, 3]."""
    from PIL import Image, UnidentifiedImageError

    path = _ready(path, "image")
    try:
        with Image.open(path) as img:
            return np.asarray(img.convert("RGB"), dtype=np.uint8)
    except (UnidentifiedImageError, OSError) as e:
        raise ModelFileError(_name(path), f"is not an image PIL can read: {e}") from e
