"""Log-mel features exactly as Qwen2.5-Omni's processor computes them, in numpy.

Qwen2.5-Omni uses transformers' ``WhisperFeatureExtractor(feature_size=128)``: 16 kHz, a periodic
Hann window of 400 samples, hop 160, centred frames (reflect padding), power spectrum, slaney mel
filters over 0-8 kHz, log10 clamped at 1e-10, dynamic range limited to 8 below the maximum, then
(x + 4) / 4. The extractor pads every clip with silence to 30 s (longer clips are left as they
are, given ``truncation=False``) and reports as valid only the frames that start inside the clip;
the audio tower sees only those. Two consequences that must be reproduced for the token count and
the values to match:

- the frames near the end of a clip shorter than 30 s see zeros (not a reflection) after it;
- the maximum that sets the dynamic range is taken over every frame of the padded signal,
  including the frames just after the clip that are not kept.
"""

from __future__ import annotations

import functools

import numpy as np

SAMPLE_RATE = 16000
N_FFT = 400
HOP = 160
N_MELS = 128
_PAD_TO = 30 * SAMPLE_RATE  # the extractor's chunk_length of 30 s
_LOG_FLOOR = -10.0          # log10 of the 1e-10 clamp: the value of a silent frame


def n_frames(n_samples: int) -> int:
    """Mel frames the audio tower sees for a clip of n_samples (the extractor's attention mask).
    Rows per clip are the tower's rule, read from the library: ``_audio.n_tokens``."""
    padded = max(n_samples, _PAD_TO)
    return min(-(-n_samples // HOP), padded // HOP)


def _hz_to_mel(f: np.ndarray) -> np.ndarray:
    f = np.asarray(f, dtype=np.float64)
    mel = 3.0 * f / 200.0
    log_region = f >= 1000.0
    mel[log_region] = 15.0 + np.log(f[log_region] / 1000.0) * (27.0 / np.log(6.4))
    return mel


def _mel_to_hz(m: np.ndarray) -> np.ndarray:
    m = np.asarray(m, dtype=np.float64)
    f = 200.0 * m / 3.0
    log_region = m >= 15.0
    f[log_region] = 1000.0 * np.exp(np.log(6.4) / 27.0 * (m[log_region] - 15.0))
    return f


@functools.lru_cache(maxsize=None)
def mel_filters() -> np.ndarray:
    """Slaney-normalised triangular filters on the slaney mel scale, [n_fft/2 + 1, n_mels]."""
    n_bins = N_FFT // 2 + 1
    mel_points = np.linspace(_hz_to_mel(np.array([0.0]))[0], _hz_to_mel(np.array([8000.0]))[0], N_MELS + 2)
    centres = _mel_to_hz(mel_points)
    fft_freqs = np.linspace(0, SAMPLE_RATE // 2, n_bins)
    slopes = centres[None, :] - fft_freqs[:, None]
    widths = np.diff(centres)
    down = -slopes[:, :-2] / widths[:-1]
    up = slopes[:, 2:] / widths[1:]
    filters = np.maximum(0.0, np.minimum(down, up))
    filters *= 2.0 / (centres[2:] - centres[:-2])[None, :]
    return filters


@functools.lru_cache(maxsize=None)
def _window() -> np.ndarray:
    # periodic Hann, as torch.hann_window(400) and transformers' window_function(400, "hann")
    return 0.5 - 0.5 * np.cos(2.0 * np.pi * np.arange(N_FFT) / N_FFT)


_BLOCK = 4096  # frames per FFT batch: bounds the float64 scratch (13 MB) for clips of any length


def _log_mel_frames(signal: np.ndarray, n_out: int) -> np.ndarray:
    """log10 mel power of the first n_out centred frames of signal, [n_out, n_mels] float32."""
    padded = np.pad(signal, N_FFT // 2, mode="reflect")
    frames = np.lib.stride_tricks.sliding_window_view(padded, N_FFT)[::HOP][:n_out]
    out = np.empty((n_out, N_MELS), dtype=np.float32)
    for start in range(0, n_out, _BLOCK):
        block = frames[start:start + _BLOCK].astype(np.float64) * _window()
        power = np.abs(np.fft.rfft(block, axis=1)) ** 2
        out[start:start + _BLOCK] = np.log10(np.maximum(power @ mel_filters(), 1e-10))
    return out


def log_mel(pcm: np.ndarray) -> np.ndarray:
    """Features [n_frames(len(pcm)), 128] (frames are rows) of float32 mono PCM at 16 kHz.

    pcm must be validated by the caller (1-D, finite, non-empty).
    """
    n = len(pcm)
    padded_len = max(n, _PAD_TO)
    n_all = padded_len // HOP  # frames the extractor computes (its last STFT frame is dropped)
    # Frames from n // HOP + 3 on start past the clip: they cover only padding, which is silence
    # unless the padding is short enough for the end reflection to reach back into the clip.
    n_touching = min(n_all, n // HOP + 3)
    if padded_len - n > N_FFT:
        signal = np.concatenate([pcm, np.zeros(n_touching * HOP + N_FFT - n, dtype=pcm.dtype)])
        log_spec = _log_mel_frames(signal, n_touching)
        peak = log_spec.max() if n_touching == n_all else max(float(log_spec.max()), _LOG_FLOOR)
    else:
        signal = np.concatenate([pcm, np.zeros(padded_len - n, dtype=pcm.dtype)])
        log_spec = _log_mel_frames(signal, n_all)
        peak = log_spec.max()
    log_spec = log_spec[:n_frames(n)]
    log_spec = np.maximum(log_spec, peak - 8.0)
    return ((log_spec + 4.0) / 4.0).astype(np.float32)
