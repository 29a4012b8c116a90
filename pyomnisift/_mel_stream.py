"""Log-mel features of a clip that arrives in PCM blocks, equal to ``_mel.log_mel`` of the whole clip.

Two things in the extractor's definition (see _mel.py) are not local to a frame, so the clip is
read twice and never held:

- the floor of every value, ``peak - 8``, is set by the maximum over every frame of the 30-s padded
  signal: ``scan`` (pass 1) computes the frames only to keep that maximum and the sample count;
- the frames at the two ends see the padding (a reflection at the start; at the end zeros for a
  clip shorter than 30 s, else a reflection of its last samples), which depends on the length, so
  the last frames are computed only once the stream has ended.

``iter_window_features`` (pass 2) then computes the same frames again and hands them out in steps of
whole 2-s windows (200 frames, the audio tower's window), which the tower encodes independently.
Each frame is computed from the same 400 samples by the same float64 operations as ``log_mel``, so
the features are bitwise equal, whatever the block sizes (the tests check it).

Memory is one incoming block, 400 samples of context, a bounded FFT batch and one step of features.
"""

from __future__ import annotations

from typing import Iterable, Iterator, NamedTuple, Optional, Tuple

import numpy as np

from . import _mel

WINDOW_FRAMES = 200            # = OMNISIFT_AUDIO_WINDOW_FRAMES (checked in _audio.py)
_HALF = _mel.N_FFT // 2       # centred frames: reflect padding of 200 samples at each end
_BATCH = 2000                  # frames per FFT batch: bounds the float64 scratch (6.4 MB)
_GATHER = 32000                # samples gathered before framing: amortises tiny blocks


class AudioPlan(NamedTuple):
    """What pass 1 learns about a clip: enough to count its tokens and to compute its features."""

    n_samples: int
    peak: float  # max log10 mel power over the padded signal (a float32 value)

    @property
    def n_frames(self) -> int:
        return _mel.n_frames(self.n_samples)

    @property
    def n_windows(self) -> int:
        """2-s windows of features (the last may be partial, even 1 or 2 frames with no row)."""
        return -(-self.n_frames // WINDOW_FRAMES)


def _checked(blocks: Iterable) -> Iterator[np.ndarray]:
    """The blocks as contiguous float32, with errors that say which block and sample is wrong."""
    if isinstance(blocks, np.ndarray):
        raise TypeError("give an iterable of PCM blocks (e.g. [pcm]), not one array")
    offset = 0
    for i, block in enumerate(blocks):
        a = np.asarray(block)
        if a.ndim != 1:
            raise ValueError(f"audio block {i} has shape {a.shape}: blocks must be 1-D mono samples "
                             "(average the channels first)")
        if not np.issubdtype(a.dtype, np.floating):
            raise ValueError(f"audio block {i} has dtype {a.dtype}: samples must be float in [-1, 1]")
        if a.size == 0:
            continue
        a = np.ascontiguousarray(a, dtype=np.float32)
        finite = np.isfinite(a)
        if not finite.all():
            raise ValueError(f"audio contains NaN or infinite samples (block {i}, sample "
                             f"{offset + int(np.argmin(finite))} of the clip)")
        offset += a.size
        yield a


def _log_rows(frames: np.ndarray) -> np.ndarray:
    # the per-frame operations of _mel._log_mel_frames, in the same order and precision
    out = np.empty((len(frames), _mel.N_MELS), dtype=np.float32)
    for start in range(0, len(frames), _BATCH):
        block = frames[start:start + _BATCH].astype(np.float64) * _mel._window()
        power = np.abs(np.fft.rfft(block, axis=1)) ** 2
        out[start:start + _BATCH] = np.log10(np.maximum(power @ _mel.mel_filters(), 1e-10))
    return out


class _Frames:
    """Iterates (first_frame, log10 mel rows float32) over every frame the extractor computes that
    touches the clip; afterwards ``n_samples`` and ``silent_tail`` (frames after those, which cover
    only zero padding and are exactly the log floor) are set."""

    def __init__(self, blocks: Iterable, n_expected: Optional[int] = None):
        self._blocks = blocks
        self._n_expected = n_expected
        self.n_samples = 0
        self.silent_tail = False

    def _count(self, n: int) -> None:
        self.n_samples += n
        if self._n_expected is not None and self.n_samples > self._n_expected:
            raise ValueError(f"the audio stream is longer than the {self._n_expected} samples its scan "
                             "counted: pass 2 must read the same audio as pass 1")

    def __iter__(self) -> Iterator[Tuple[int, np.ndarray]]:
        blocks = _checked(self._blocks)
        # The start reflection needs the first 201 samples (padded[199 - j] = s[1 + j]).
        head, got = [], 0
        for block in blocks:
            self._count(len(block))
            head.append(block)
            got += len(block)
            if got > _HALF:
                break
        if got == 0:
            raise ValueError("audio is empty")
        s = np.concatenate(head)
        first = s[:_HALF + 1] if got > _HALF else np.concatenate([s, np.zeros(_HALF + 1 - got, np.float32)])
        self._buf = np.concatenate([first[1:_HALF + 1][::-1], s])  # padded signal from frame _next
        self._next = 0
        pending, n_pending = [], 0
        for block in blocks:
            self._count(len(block))
            pending.append(block)
            n_pending += len(block)
            if n_pending >= _GATHER:
                yield from self._emit(pending, None)
                pending, n_pending = [], 0
        if self._n_expected is not None and self.n_samples != self._n_expected:
            raise ValueError(f"the audio stream has {self.n_samples} samples, its scan counted "
                             f"{self._n_expected}: pass 2 must read the same audio as pass 1")
        yield from self._emit(pending + self._end_padding(pending), self._n_total)

    def _end_padding(self, pending) -> list:
        """What follows the clip in the padded signal; sets the number of frames to compute."""
        n = self.n_samples
        padded_len = max(n, _mel._PAD_TO)
        n_all = padded_len // _mel.HOP  # the extractor drops its last STFT frame
        if padded_len - n > _mel.N_FFT:
            # Zeros, and the end reflection only ever reflects zeros: frames from n // HOP + 3 on
            # see zeros only (as in _mel.log_mel), so they are not computed.
            self._n_total = min(n_all, n // _mel.HOP + 3)
            self.silent_tail = self._n_total < n_all
            last_needed = _mel.HOP * (self._n_total - 1) + _mel.N_FFT  # padded end of the last frame
            return [np.zeros(max(0, last_needed - (n + _HALF)), np.float32)]
        # A clip of 30 s (less 400 samples) or more: zeros up to 30 s, then a reflection of the last
        # 201 samples of that signal; buf and pending hold at least those.
        self._n_total = n_all
        zeros = np.zeros(padded_len - n, np.float32)
        tail = np.concatenate([self._buf[-(_HALF + 1):]] + pending + [zeros])[-(_HALF + 1):]
        return [zeros, tail[:-1][::-1]]

    def _emit(self, parts, limit: Optional[int]) -> Iterator[Tuple[int, np.ndarray]]:
        buf = np.concatenate([self._buf] + parts)
        n = (len(buf) - _mel.N_FFT) // _mel.HOP + 1 if len(buf) >= _mel.N_FFT else 0
        if limit is not None:
            n = limit - self._next
        frames = np.lib.stride_tricks.sliding_window_view(buf, _mel.N_FFT)[::_mel.HOP]
        assert len(frames) >= n >= 0, (len(frames), n)
        for start in range(0, n, _BATCH):
            yield self._next + start, _log_rows(frames[start:min(n, start + _BATCH)])
        self._buf = buf[_mel.HOP * n:]
        self._next += n


def scan(blocks: Iterable) -> AudioPlan:
    """Pass 1: the sample count and the log-mel peak of a clip given as an iterable of 16 kHz mono
    float PCM blocks of any sizes (NaN, infinity, integer or multi-channel blocks raise ValueError,
    an empty stream too). Holds neither the signal nor its features."""
    frames = _Frames(blocks)
    peak = np.float32(-np.inf)
    for _, rows in frames:
        peak = max(peak, rows.max())
    if frames.silent_tail:
        peak = max(peak, np.float32(_mel._LOG_FLOOR))
    return AudioPlan(frames.n_samples, float(peak))


def iter_window_features(blocks: Iterable, plan: AudioPlan,
                         windows_per_step: int = 1) -> Iterator[Tuple[int, np.ndarray]]:
    """Pass 2: yields (first_window, features [frames, 128] float32) for consecutive steps of
    ``windows_per_step`` 2-s windows; together they are exactly ``_mel.log_mel(whole clip)``
    (window w is frames [200 w, 200 w + 200); the last step holds what is left, its last window
    possibly partial). ``blocks`` must give the same samples as the scan that made ``plan``: a
    different length or peak raises ValueError (the length as soon as it shows, before the last step
    is handed out)."""
    if not isinstance(plan, AudioPlan):
        raise TypeError(f"plan must be the AudioPlan that scan() returned, got {type(plan).__name__}")
    if isinstance(windows_per_step, bool) or not isinstance(windows_per_step, (int, np.integer)) \
            or windows_per_step < 1:
        raise ValueError(f"windows_per_step must be a positive integer, got {windows_per_step!r}")
    n_keep, step = plan.n_frames, WINDOW_FRAMES * int(windows_per_step)
    floor = np.float32(plan.peak) - np.float32(8.0)
    frames = _Frames(blocks, n_expected=plan.n_samples)
    peak = np.float32(-np.inf)
    kept, n_kept, first = [], 0, 0  # features not yet handed out, from frame first
    for start, rows in frames:
        peak = max(peak, rows.max())
        rows = rows[:max(0, n_keep - start)]
        kept.append((np.maximum(rows, floor) + np.float32(4.0)) / np.float32(4.0))
        n_kept += len(rows)
        # Hand out whole steps, but hold back the one with the clip's last frame until the stream has
        # ended and been checked against the plan.
        while n_kept >= step and first + step < n_keep:
            features = np.concatenate(kept)
            yield first // WINDOW_FRAMES, features[:step]
            kept, n_kept, first = [features[step:]], n_kept - step, first + step
    if frames.silent_tail:
        peak = max(peak, np.float32(_mel._LOG_FLOOR))
    if float(peak) != plan.peak:
        raise ValueError(f"the audio stream's log-mel peak is {float(peak)}, its scan found {plan.peak}: "
                         "pass 2 must read the same audio as pass 1")
    features = np.concatenate(kept)
    assert first + len(features) == n_keep, (first, len(features), n_keep)
    for offset in range(0, len(features), step):
        yield (first + offset) // WINDOW_FRAMES, features[offset:offset + step]
