"""AudioTower: Qwen2.5-Omni's audio encoder on 2-second windows, as the model was trained.

llama.cpp (libmtmd) pads every clip to 30 s and attends over 1500 frames at once, which is not the
function Qwen2.5-Omni learned: 750 rows for a 2-s clip where transformers gives 50, and different
values. AudioTower computes the reference function (transformers' Qwen2_5OmniAudioEncoder) in
ggml with the mmproj's own weights: 25 rows per second of real audio, 50 per 2-s window.
"""

from __future__ import annotations

import ctypes
import os
from typing import Optional

import numpy as np

from . import _mel, _mel_stream
from . import omnisift_cpp as C
from ._engine import Engine, default_engine
from ._errors import ModelFileError
from ._internals import Handle
from ._model_info import check_pair, read_mmproj_info

SAMPLE_RATE = _mel.SAMPLE_RATE
WINDOW_SAMPLES = C.OMNISIFT_AUDIO_WINDOW_FRAMES * _mel.HOP   # 2 s
ROWS_PER_WINDOW = 50
# The streamed features are cut into the windows the library encodes independently: one size.
if _mel_stream.WINDOW_FRAMES != C.OMNISIFT_AUDIO_WINDOW_FRAMES:
    raise ImportError(f"libomnisift's audio window is {C.OMNISIFT_AUDIO_WINDOW_FRAMES} frames, "
                      f"_mel_stream cuts {_mel_stream.WINDOW_FRAMES}")


def n_tokens(n_samples: int) -> int:
    """Rows that encode() returns for a clip of n_samples at 16 kHz (same count as transformers)."""
    return int(C.omnisift_audio_n_tokens(_mel.n_frames(n_samples)))


def window_rows(n_samples: int) -> np.ndarray:
    """[n_windows, 2] int64 row ranges [start, end) of each 2-second window of a clip, in order.

    Window w covers samples [32000 w, 32000 (w + 1)) and its rows are [50 w, 50 w + 50), except
    the last partial window, which has only the rows of its real length (none, and it is left
    out, when it is 20 ms or shorter).
    """
    total = n_tokens(n_samples)
    starts = np.arange(0, total, ROWS_PER_WINDOW, dtype=np.int64)
    return np.stack([starts, np.minimum(starts + ROWS_PER_WINDOW, total)], axis=1)


def _check_pcm(pcm, sample_rate: int) -> np.ndarray:
    if sample_rate != SAMPLE_RATE:
        raise ValueError(f"audio must be sampled at {SAMPLE_RATE} Hz, got {sample_rate} Hz: resample it "
                         "first (Qwen2.5-Omni's features are defined at 16 kHz)")
    pcm = np.asarray(pcm)
    if pcm.ndim != 1:
        raise ValueError(f"audio must be mono, a 1-D array of samples; got shape {pcm.shape} "
                         "(average the channels first)")
    if not np.issubdtype(pcm.dtype, np.floating):
        raise ValueError(f"audio must be float samples in [-1, 1], got dtype {pcm.dtype}")
    if pcm.size == 0:
        raise ValueError("audio is empty")
    pcm = np.ascontiguousarray(pcm, dtype=np.float32)
    if not np.isfinite(pcm).all():
        raise ValueError("audio contains NaN or infinite samples")
    return pcm


class AudioTower(Handle):
    """The audio tower of a Qwen2.5-Omni mmproj (projector type ``qwen2.5o``).

    ``AudioTower(mmproj_path)`` computes on the thread's default engine (GPU if there is one);
    ``n_threads`` gives it its own engine with that many CPU threads, ``engine`` a given one.
    ``model_path`` (optional) checks that the tower's output width is the LLM's embedding width.
    """

    _free = C.omnisift_audio_tower_free

    def __init__(self, mmproj_path, n_threads: Optional[int] = None, engine: Optional[Engine] = None,
                 model_path=None):
        mmproj_path = os.fspath(mmproj_path)
        info = read_mmproj_info(mmproj_path)
        if not info.has_audio:
            raise ModelFileError(mmproj_path, "this mmproj has no audio encoder")
        if info.projector_type != "qwen2.5o":
            raise ModelFileError(
                mmproj_path,
                f"projector type is {info.projector_type!r}, not 'qwen2.5o': AudioTower runs only "
                "Qwen2.5-Omni's windowed audio tower; Whisper-style towers (Qwen2-Audio, Ultravox, "
                "Voxtral) take 30-s windows and are encoded by libmtmd")
        if model_path is not None:
            check_pair(model_path, mmproj_path)
        if engine is not None and n_threads is not None:
            raise ValueError("give either engine or n_threads, not both")
        if engine is None:
            engine = default_engine() if n_threads is None else Engine(n_threads=n_threads)
        self._engine = engine  # the tower computes on it: keep it alive as long as the tower
        self._ptr = C.check_ptr(C.omnisift_audio_tower_init(engine.ptr, mmproj_path.encode()),
                                f"audio tower of {mmproj_path}")
        self.path = mmproj_path
        self.n_embd = int(C.omnisift_audio_tower_n_embd(self._ptr))
        n_mel = int(C.omnisift_audio_tower_n_mel(self._ptr))
        if n_mel != _mel.N_MELS:
            self.close()
            raise ModelFileError(mmproj_path, f"audio tower takes {n_mel} mel bins, Qwen2.5-Omni uses "
                                              f"{_mel.N_MELS}")

    def encode(self, pcm, sample_rate: int = SAMPLE_RATE, return_windows: bool = False):
        """Rows [n_tokens, n_embd] float32 for float mono PCM; with return_windows, also the
        [n_windows, 2] row ranges of the 2-second windows (see ``window_rows``)."""
        pcm = _check_pcm(pcm, sample_rate)
        rows = self.encode_features(_mel.log_mel(pcm))
        return (rows, window_rows(len(pcm))) if return_windows else rows

    def encode_features(self, mel) -> np.ndarray:
        """Rows for log-mel features [n_frames, 128] as WhisperFeatureExtractor's valid frames
        (transposed: frames are rows)."""
        mel = np.ascontiguousarray(mel, dtype=np.float32)
        if mel.ndim != 2 or mel.shape[1] != _mel.N_MELS or mel.shape[0] == 0:
            raise ValueError(f"features must be [n_frames > 0, {_mel.N_MELS}], got shape {mel.shape}")
        n = int(C.omnisift_audio_n_tokens(mel.shape[0]))
        out = np.empty((n, self.n_embd), dtype=np.float32)
        fptr = ctypes.POINTER(ctypes.c_float)
        C.check(C.omnisift_audio_tower_encode(self.ptr, mel.ctypes.data_as(fptr), mel.shape[0],
                                              out.ctypes.data_as(fptr), n), "audio tower")
        return out

    def encode_windows(self, features, first_window: int) -> np.ndarray:
        """Rows of consecutive 2-s windows [first_window, ...) of a clip, from their features (a
        step of ``_mel_stream.iter_window_features``): equal to rows [50 first_window, 50
        first_window + len) of ``encode`` of the whole clip. The windows are independent (own
        convolutions, positions from 0, attention inside the window), so this is the same function;
        on the CPU backend the values are bitwise the same (tests/test_audio_stream.py).
        first_window only places the rows (they start at row 50 first_window); it is checked."""
        if isinstance(first_window, bool) or not isinstance(first_window, (int, np.integer)) or first_window < 0:
            raise ValueError(f"first_window must be a window index >= 0, got {first_window!r}")
        return self.encode_features(features)

    def iter_encode(self, blocks, plan: "_mel_stream.AudioPlan", windows_per_step: int = 1):
        """Pass 2 of a streamed clip (pass 1: ``plan = _mel_stream.scan(blocks)``): yields
        (first_window, rows) per step of ``windows_per_step`` windows, rows being those of
        ``encode(whole clip)`` from row 50 first_window on; memory is one step, not the clip."""
        for first, features in _mel_stream.iter_window_features(blocks, plan, windows_per_step):
            yield first, self.encode_windows(features, first)
