"""Which frames of a video reach the model, at what size: the rules of Qwen's own preprocessing
package, ``qwen-omni-utils`` (``qwen_omni_utils.v2_5.vision_process``: ``smart_nframes``,
``smart_resize``, ``fetch_video``), restated on plain numbers so that they can be computed from a
stream's frame count and rate before anything is decoded. No PyAV here; see ``decode.py``.

The rules, for a stream of ``total_frames`` frames at ``video_fps`` (its average rate):

* ``nframes = floor_by_factor(min(min(max(total_frames / video_fps * fps, min_frames), max_frames),
  total_frames), 2)`` with ``fps = 2``, ``min_frames = ceil_by_factor(4, 2)`` and ``max_frames =
  floor_by_factor(min(768, total_frames), 2)`` (``smart_nframes``);
* frame indices ``torch.linspace(0, total_frames - 1, nframes).round()`` (the reference's video
  readers), computed here bit-exactly as PyTorch's CPU kernel does it in float32 (see
  ``frame_indices``);
* ``sample_fps = nframes / max(total_frames, 1e-6) * video_fps``; the processor times each pair
  of frames (one grid) as ``2 / sample_fps`` seconds (``second_per_grid_ts``);
* per-frame pixel budget ``max(min(768*28*28, total_pixels / nframes * 2), int(min_pixels * 1.05))``
  with ``total_pixels = MODEL_SEQ_LEN * 28 * 28 * 0.9`` (env ``MODEL_SEQ_LEN``, default 128000) and
  ``min_pixels = 128*28*28``; a smaller ``max_pixels`` asked for caps it further (``fetch_video``);
* frame size ``smart_resize(height, width, 28, min_pixels, max_pixels)``.
"""

from __future__ import annotations

import dataclasses
import math
import os
from typing import Optional

import numpy as np

PATCH_FACTOR = 28                    # vision patch 14 x spatial merge 2
FRAME_FACTOR = 2                     # frames come in pairs (temporal patch 2)
FPS = 2.0
MIN_FRAMES, MAX_FRAMES = 4, 768      # FPS_MIN_FRAMES, FPS_MAX_FRAMES
VIDEO_MIN_PIXELS = 128 * 28 * 28     # VIDEO_MIN_TOKEN_NUM * 28 * 28
VIDEO_MAX_PIXELS = 768 * 28 * 28     # VIDEO_MAX_TOKEN_NUM * 28 * 28
MODEL_SEQ_LEN_DEFAULT = 128000
MAX_RATIO = 200


def round_by_factor(number, factor: int) -> int:
    return round(number / factor) * factor


def ceil_by_factor(number, factor: int) -> int:
    return math.ceil(number / factor) * factor


def floor_by_factor(number, factor: int) -> int:
    return math.floor(number / factor) * factor


def smart_resize(height: int, width: int, min_pixels: float, max_pixels: float,
                 factor: int = PATCH_FACTOR) -> tuple[int, int]:
    """Target (height, width): multiples of `factor`, area within [min_pixels, max_pixels], aspect
    ratio kept as well as those allow: ``qwen_omni_utils.v2_5.smart_resize`` (the transformers
    Qwen2-VL processors' rule), so that libmtmd receives frames it does not resize again.

    One deliberate difference: where the reference's downscaling branch would floor a side to 0
    (aspect ratios near 200:1 with a small budget; the reference then fails in its resize), the
    side stays `factor`."""
    if min(height, width) <= 0:
        raise ValueError(f"image has no pixels ({width}x{height})")
    if max(height, width) / min(height, width) > MAX_RATIO:
        raise ValueError(f"aspect ratio {width}x{height} is beyond {MAX_RATIO}:1")
    if max_pixels < min_pixels:
        raise ValueError(f"max_pixels {max_pixels} is below min_pixels {min_pixels}")
    h = max(factor, round_by_factor(height, factor))
    w = max(factor, round_by_factor(width, factor))
    if h * w > max_pixels:
        beta = math.sqrt(height * width / max_pixels)
        h = max(factor, floor_by_factor(height / beta, factor))
        w = max(factor, floor_by_factor(width / beta, factor))
    elif h * w < min_pixels:
        beta = math.sqrt(min_pixels / (height * width))
        h = ceil_by_factor(height * beta, factor)
        w = ceil_by_factor(width * beta, factor)
    return h, w


def smart_nframes(total_frames: int, video_fps: float, fps: float = FPS,
                  min_frames: int = MIN_FRAMES, max_frames: Optional[int] = None) -> int:
    """Frames sampled from a stream of `total_frames` at `video_fps` (the reference's
    ``smart_nframes`` with ``fps``, ``min_frames``, ``max_frames``; ``max_frames=None`` is its
    default ``min(768, total_frames)``). Raises ValueError outside [2, total_frames], as it does."""
    if not video_fps or not math.isfinite(video_fps) or video_fps <= 0:
        raise ValueError(f"the stream's frame rate is unknown ({video_fps})")
    lo = ceil_by_factor(min_frames, FRAME_FACTOR)
    hi = floor_by_factor(min(MAX_FRAMES, total_frames) if max_frames is None else max_frames, FRAME_FACTOR)
    n = total_frames / video_fps * fps
    n = min(min(max(n, lo), hi), total_frames)
    n = floor_by_factor(n, FRAME_FACTOR)
    if not (FRAME_FACTOR <= n <= total_frames):
        raise ValueError(f"nframes should be in [{FRAME_FACTOR}, {total_frames}], got {n} "
                         f"({total_frames} frames at {video_fps:.3f} fps)")
    return n


def frame_indices(total_frames: int, nframes: int) -> np.ndarray:
    """``torch.linspace(0, total_frames - 1, nframes).round().long()``, bit for bit, without torch.

    The reference computes these indices in float32, and from about 19,000 frames on (10 minutes
    at 30 fps) float32 rounds some of them to the neighbouring frame compared with exact
    arithmetic. PyTorch's CPU kernel is scalar: ``start + step * i`` for ``i < nframes // 2``, else
    ``end - step * (nframes - 1 - i)``, with ``step = float32(end - start) / (nframes - 1)``; its
    AVX2 and AVX512 builds (every x86-64 CPU of the last decade) contract each of those into one
    fused multiply-add, which is what is computed here (the float32 product is exact in float64
    and so is the sum for these magnitudes, so one rounding to float32 gives the fma's result).
    Checked equal to torch 2.13 for 17,000 (frames, nframes) pairs up to 3M frames under both
    ATEN_CPU_CAPABILITY=avx2 and avx512; a torch forced to its non-vector DEFAULT build (no fma)
    differs from itself in the other builds for long clips."""
    if nframes <= 0:
        return np.zeros(0, np.int64)
    if nframes == 1:
        return np.zeros(1, np.int64)
    start, end = np.float32(0), np.float32(total_frames - 1)
    step = np.float64(np.float32(end - start) / np.float32(nframes - 1))
    i = np.arange(nframes, dtype=np.int64)
    lo = (step * i.astype(np.float64) + np.float64(start)).astype(np.float32)
    hi = (np.float64(end) - step * (nframes - 1 - i).astype(np.float64)).astype(np.float32)
    values = np.where(i < nframes // 2, lo, hi)
    return np.rint(values).astype(np.int64)   # round half to even, as torch.round


def model_seq_len() -> int:
    """The reference's ``MODEL_SEQ_LEN`` (env var, default 128000); read on every call here (the
    reference reads it once, at import)."""
    return int(float(os.environ.get("MODEL_SEQ_LEN", MODEL_SEQ_LEN_DEFAULT)))


def video_total_pixels(factor: int = PATCH_FACTOR) -> float:
    """Pixel budget of a whole video: ``MODEL_SEQ_LEN * 28 * 28 * 0.9`` (90,316,800 by default; the
    factor is ``image_patch_size * 2``: 28 for Qwen2.5, 32 for Qwen3)."""
    return model_seq_len() * factor * factor * 0.9


def video_pixel_bounds(factor: int = PATCH_FACTOR) -> tuple[int, int]:
    """``fetch_video``'s default (min, max) frame area for a patch factor: 128 and 768 tokens."""
    return VIDEO_MIN_PIXELS // (28 * 28) * factor * factor, VIDEO_MAX_PIXELS // (28 * 28) * factor * factor


def frame_pixel_budget(nframes: int, min_pixels: float = VIDEO_MIN_PIXELS,
                       max_pixels: Optional[float] = None, total_pixels: Optional[float] = None,
                       factor: int = PATCH_FACTOR) -> float:
    """Largest area of one frame: ``fetch_video``'s ``max(min(768*28*28, total_pixels / nframes *
    2), int(min_pixels * 1.05))``, capped by `max_pixels` when given (its ``max_pixels`` key)."""
    if total_pixels is None:
        total_pixels = video_total_pixels(factor)
    budget = max(min(video_pixel_bounds(factor)[1], total_pixels / nframes * FRAME_FACTOR), int(min_pixels * 1.05))
    return budget if max_pixels is None else min(max_pixels, budget)


@dataclasses.dataclass(frozen=True, eq=False)
class SamplingPlan:
    nframes: int               # frames sampled, a multiple of 2
    frame_indices: np.ndarray  # int64 [nframes], into the stream's frames in presentation order
    sample_fps: float          # nframes / total_frames * video_fps
    max_pixels: float          # the per-frame budget the size was chosen within
    height: int                # frame size for the model (multiples of 28)
    width: int


def plan_sampling(total_frames: int, video_fps: float, height: int, width: int, *,
                  fps: float = FPS, min_frames: int = MIN_FRAMES, max_frames: Optional[int] = None,
                  min_pixels: float = VIDEO_MIN_PIXELS, max_pixels: Optional[float] = VIDEO_MAX_PIXELS,
                  total_pixels: Optional[float] = None, factor: int = PATCH_FACTOR) -> SamplingPlan:
    """The reference's sampling of a stream of `total_frames` frames of `height` x `width` (as
    displayed, i.e. after rotation) at `video_fps`: frame count, indices, sample fps and size."""
    n = smart_nframes(total_frames, video_fps, fps, min_frames, max_frames)
    idx = frame_indices(total_frames, n)
    idx.setflags(write=False)
    sample_fps = n / max(total_frames, 1e-6) * video_fps
    budget = frame_pixel_budget(n, min_pixels, max_pixels, total_pixels, factor)
    h, w = smart_resize(height, width, min_pixels, budget, factor)
    return SamplingPlan(n, idx, sample_fps, budget, h, w)
