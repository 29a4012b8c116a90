"""libmtmd's encoders (clip.cpp): images and video frame pairs through the vision tower, and audio
for towers that really are Whisper-style 30-s windows (Qwen2-Audio, Ultravox, Voxtral).

Only the encoders are used: the text mtmd would wrap around media ("<|vision_start|>" as plain
text, which the Omni vocabulary lacks) is discarded, and the sequence is built with the model's own
special tokens instead (see _sequence.py).
"""

from __future__ import annotations

import ctypes
import os

import numpy as np
from llama_cpp import mtmd_cpp as mtmd
from llama_cpp._logger import llama_log_callback
from llama_cpp._utils import suppress_stdout_stderr

# libmtmd logs to stderr by default; route it through llama-cpp-python's callback, which honours
# Llama(verbose=...) (errors always print).
mtmd.mtmd_log_set(llama_log_callback, None)
mtmd.mtmd_helper_log_set(llama_log_callback, None)

from ._errors import ModelFileError
from ._internals import Handle


def vision_only(mmproj_path) -> str:
    """The mmproj without its audio tower, for libmtmd when pyomnisift's own tower encodes the audio
    (libmtmd would otherwise hold a second copy of the audio weights: omnisift.h), or when libmtmd
    refuses the pair of towers (Qwen3-Omni). Written once into the cache (``PYOMNISIFT_CACHE``,
    default ~/.cache/pyomnisift) under a name derived from the file's path, size and modification
    time, so an edited mmproj gets a new copy."""
    return _one_tower(mmproj_path, "vision")


def audio_only(mmproj_path) -> str:
    """The mmproj without its vision tower (as vision_only): Qwen3-Omni's audio tower for libmtmd,
    which refuses that mmproj whole (its vision rows carry the deepstack features, its audio rows
    do not: omnisift.h)."""
    return _one_tower(mmproj_path, "audio")


def _one_tower(mmproj_path, tower: str) -> str:
    import hashlib

    from . import omnisift_cpp as C
    from ._converter import default_cache_dir

    src = os.path.realpath(os.fspath(mmproj_path))
    st = os.stat(src)
    key = hashlib.sha256(repr((src, st.st_size, st.st_mtime_ns)).encode()).hexdigest()[:16]
    out_dir = default_cache_dir() / f"mmproj-{tower}"
    out = out_dir / f"{key}-{os.path.basename(src)}"
    if not out.is_file():
        out_dir.mkdir(parents=True, exist_ok=True)
        tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
        write = C.omnisift_mmproj_write_audio_only if tower == "audio" else C.omnisift_mmproj_write_vision_only
        C.check(write(src.encode(), os.fsencode(tmp)), src)
        os.replace(tmp, out)   # atomic: a concurrent reader sees the whole file or none
    return str(out)


class VocabModel(Handle):
    """A model's vocabulary and hyperparameters, without its weights (llama.cpp's vocab_only load)."""

    _free = staticmethod(lambda ptr: __import__("llama_cpp").llama_model_free(ptr))

    def __init__(self, model_path, verbose: bool = True):
        import llama_cpp

        params = llama_cpp.llama_model_default_params()
        params.vocab_only = True
        with suppress_stdout_stderr(disable=verbose):
            self._ptr = llama_cpp.llama_model_load_from_file(os.fspath(model_path).encode(), params)
        if not self._ptr:
            raise ModelFileError(model_path, "llama.cpp could not read this model's vocabulary")


class MtmdEncoder(Handle):
    """An mtmd context bound to a loaded llama model."""

    _free = mtmd.mtmd_free

    def __init__(self, mmproj_path, llama_model, n_embd: int, n_threads: int = 0, use_gpu: bool = True,
                 image_min_tokens: int = -1, image_max_tokens: int = -1, verbose: bool = True,
                 n_embd_out: int = 0):
        """n_embd: the width of the rows the tower gives; they are zero-padded to n_embd_out when
        that is wider (Qwen3-Omni's audio rows for its deepstack model: the deepstack slices of a
        row that is not visual are zero in the reference). `llama_model` may be a VocabModel of the
        model loaded without its deepstack override, which libmtmd checks the audio width against;
        the encoder keeps it open while it lives."""
        params = mtmd.mtmd_context_params_default()
        params.use_gpu = use_gpu
        params.n_threads = n_threads or max(1, (os.cpu_count() or 2) // 2)
        params.print_timings = False
        params.warmup = False
        params.image_min_tokens = image_min_tokens
        params.image_max_tokens = image_max_tokens
        # clip.cpp prints its load-time warnings itself, past the log callback: silence the process's
        # stdout/stderr while it loads, as llama-cpp-python's MTMDChatHandler does.
        self._vocab = llama_model if isinstance(llama_model, VocabModel) else None
        model_ptr = llama_model.ptr if self._vocab is not None else llama_model
        with suppress_stdout_stderr(disable=verbose):
            self._ptr = mtmd.mtmd_init_from_file(os.fspath(mmproj_path).encode(), model_ptr, params)
        if not self._ptr:
            raise ModelFileError(mmproj_path, "libmtmd could not load this mmproj (its log says why)")
        self.n_embd = n_embd
        self.n_embd_out = max(n_embd_out, n_embd)
        self.supports_vision = bool(mtmd.mtmd_support_vision(self.ptr))
        self.supports_audio = bool(mtmd.mtmd_support_audio(self.ptr))
        self._marker = mtmd.mtmd_default_marker()

    def close(self) -> None:
        super().close()
        vocab, self._vocab = getattr(self, "_vocab", None), None
        if vocab is not None:
            vocab.close()

    def encode_audio(self, pcm: np.ndarray) -> np.ndarray:
        """Rows [n, n_embd] of 16 kHz mono float32 PCM as libmtmd encodes it: every 30-s window."""
        if not self.supports_audio:
            raise ValueError("this mmproj has no audio tower")
        pcm = np.ascontiguousarray(pcm, dtype=np.float32)
        bm = mtmd.mtmd_bitmap_init_from_audio(len(pcm), pcm.ctypes.data_as(ctypes.POINTER(ctypes.c_float)))
        chunks = self._encode([bm], mtmd.MTMD_INPUT_CHUNK_TYPE_AUDIO)
        return np.concatenate([rows for rows, _ in chunks])

    def encode(self, frames: list) -> tuple[np.ndarray, int, int]:
        """Encodes one image ([frame]) or one temporal pair ([frame0, frame1], equal sizes).

        Returns (rows [n, n_embd] float32 in row-major grid order, grid_h, grid_w).
        """
        if not self.supports_vision:
            raise ValueError("this mmproj has no vision tower: it cannot encode images or video")
        if len(frames) not in (1, 2):
            raise ValueError(f"encode takes one image or a pair of frames, got {len(frames)}")
        shapes = {f.shape for f in frames}
        if len(shapes) != 1:
            raise ValueError(f"the frames of a pair must have one size, got {sorted(shapes)}")
        chunks = self._encode([self._bitmap(f, mergeable=len(frames) == 2) for f in frames],
                              mtmd.MTMD_INPUT_CHUNK_TYPE_IMAGE)
        if len(chunks) != 1:
            raise ValueError(f"libmtmd made {len(chunks)} image chunks of {len(frames)} frame(s): this "
                             "projector does not merge frame pairs (video needs a Qwen-VL family model)")
        [(rows, (nx, ny))] = chunks
        return rows, ny, nx

    def _encode(self, bitmaps: list, kind: int) -> list:
        """Tokenizes bitmaps (freed here) and encodes each media chunk of `kind`:
        [(rows [n, n_embd], (nx, ny) for images)]."""
        chunks = mtmd.mtmd_input_chunks_init()
        try:
            text = self._marker * len(bitmaps)
            inp = mtmd.mtmd_input_text(text=text, text_len=len(text), add_special=False, parse_special=False)
            arr = (mtmd.mtmd_bitmap_p_ctypes * len(bitmaps))(*bitmaps)
            if mtmd.mtmd_tokenize(self.ptr, chunks, ctypes.byref(inp), arr, len(bitmaps)) != 0:
                raise ValueError("libmtmd could not tokenize the media")
            out = []
            for i in range(mtmd.mtmd_input_chunks_size(chunks)):
                chunk = mtmd.mtmd_input_chunks_get(chunks, i)
                if mtmd.mtmd_input_chunk_get_type(chunk) != kind:
                    continue
                n = mtmd.mtmd_input_chunk_get_n_tokens(chunk)
                grid = None
                if kind == mtmd.MTMD_INPUT_CHUNK_TYPE_IMAGE:
                    image = mtmd.mtmd_input_chunk_get_tokens_image(chunk)
                    grid = (mtmd.mtmd_image_tokens_get_nx(image), mtmd.mtmd_image_tokens_get_ny(image))
                if mtmd.mtmd_encode_chunk(self.ptr, chunk) != 0:
                    raise RuntimeError("libmtmd failed to encode the media")
                rows = np.ctypeslib.as_array(mtmd.mtmd_get_output_embd(self.ptr), shape=(n * self.n_embd,))
                rows = rows.reshape(n, self.n_embd)   # a view of libmtmd's buffer: copied (pad copies)
                rows = (np.pad(rows, ((0, 0), (0, self.n_embd_out - self.n_embd))) if self.n_embd_out > self.n_embd
                        else rows.copy())
                out.append((rows, grid))
            return out
        finally:
            mtmd.mtmd_input_chunks_free(chunks)
            for bm in bitmaps:
                mtmd.mtmd_bitmap_free(bm)

    @staticmethod
    def _bitmap(pixels: np.ndarray, mergeable: bool):
        if pixels.dtype != np.uint8 or pixels.ndim != 3 or pixels.shape[2] != 3:
            raise ValueError(f"frames must be uint8 RGB [height, width, 3], got {pixels.dtype} {pixels.shape}")
        height, width, _ = pixels.shape
        data = np.ascontiguousarray(pixels)
        bm = mtmd.mtmd_bitmap_init(width, height, data.ctypes.data_as(ctypes.POINTER(ctypes.c_uint8)))
        mtmd.mtmd_bitmap_set_mergeable(bm, mergeable)
        return bm
