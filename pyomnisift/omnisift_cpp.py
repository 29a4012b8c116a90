"""ctypes bindings of cpp/omnisift.h, one Python function per C function, in header order.

Keep this file a mechanical mirror of the header: validation and conversion belong in the
high-level modules that call it.
"""

from __future__ import annotations

import ctypes
import pathlib

# llama_cpp (and its mtmd bindings) first: they dlopen libllama, libmtmd and ggml by path from
# llama_cpp/lib, and the dynamic loader then binds libomnisift's NEEDED sonames to those loaded
# objects. Loaded the other way round, llama-cpp-python's dlopen by path would not recognise our
# copies (the files in llama_cpp/lib are copies, not symlinks) and a second ggml would load.
import llama_cpp  # noqa: F401
import llama_cpp.mtmd_cpp  # noqa: F401

from ._ctypes_extensions import ctypes_function, load_shared_library
from ._errors import ModelFileError, OmniSiftError

_lib = load_shared_library("omnisift", pathlib.Path(__file__).parent / "lib")
_fn = lambda name, argtypes, restype: ctypes_function(_lib, name, argtypes, restype)  # noqa: E731

# --- status codes (enum omnisift_status)
OMNISIFT_OK = 0
OMNISIFT_ERR_ARGUMENT = -1
OMNISIFT_ERR_FILE = -2
OMNISIFT_ERR_BACKEND = -3
OMNISIFT_ERR_INTERNAL = -4


@_fn("omnisift_version", [], ctypes.c_char_p)
def omnisift_version() -> bytes: ...


@_fn("omnisift_llama_cpp_python_version", [], ctypes.c_char_p)
def omnisift_llama_cpp_python_version() -> bytes: ...


@_fn("omnisift_last_error", [], ctypes.c_char_p)
def omnisift_last_error() -> bytes: ...


def check(status: int, what: str = "") -> None:
    """Raises the Python exception matching a non-zero omnisift status."""
    if status == OMNISIFT_OK:
        return
    msg = omnisift_last_error().decode("utf-8", "replace") or f"status {status}"
    if what:
        msg = f"{what}: {msg}"
    if status == OMNISIFT_ERR_ARGUMENT:
        raise ValueError(msg)
    if status == OMNISIFT_ERR_FILE:
        raise ModelFileError(what or "file", omnisift_last_error().decode("utf-8", "replace"))
    raise OmniSiftError(msg)


def check_ptr(ptr, what: str):
    """Raises when a constructor returned NULL; returns the pointer otherwise."""
    if not ptr:
        msg = omnisift_last_error().decode("utf-8", "replace") or "unknown failure"
        raise OmniSiftError(f"{what}: {msg}")
    return ptr


# --- engine
omnisift_engine_p = ctypes.c_void_p


class omnisift_engine_params(ctypes.Structure):
    _fields_ = [("n_threads", ctypes.c_int32), ("device", ctypes.c_char_p)]


@_fn("omnisift_engine_default_params", [], omnisift_engine_params)
def omnisift_engine_default_params() -> omnisift_engine_params: ...


@_fn("omnisift_engine_init", [omnisift_engine_params], omnisift_engine_p)
def omnisift_engine_init(params: omnisift_engine_params) -> int: ...


@_fn("omnisift_engine_free", [omnisift_engine_p], None)
def omnisift_engine_free(engine: int) -> None: ...


@_fn("omnisift_engine_device", [omnisift_engine_p], ctypes.c_char_p)
def omnisift_engine_device(engine: int) -> bytes: ...


class omnisift_engine_stats(ctypes.Structure):
    _fields_ = [("n_graphs", ctypes.c_int64), ("n_nodes", ctypes.c_int64), ("n_nodes_off_device", ctypes.c_int64),
                ("n_splits", ctypes.c_int64), ("bytes_to_device", ctypes.c_int64),
                ("bytes_from_device", ctypes.c_int64), ("bytes_host_copied", ctypes.c_int64)]


@_fn("omnisift_engine_get_stats", [omnisift_engine_p], omnisift_engine_stats)
def omnisift_engine_get_stats(engine: int) -> omnisift_engine_stats: ...


@_fn("omnisift_engine_reset_stats", [omnisift_engine_p], None)
def omnisift_engine_reset_stats(engine: int) -> None: ...


@_fn("omnisift_add_rpc_server", [ctypes.c_char_p], ctypes.c_int32)
def omnisift_add_rpc_server(endpoint: bytes) -> int: ...


# --- compression
OMNISIFT_MODALITY_TEXT = 0
OMNISIFT_MODALITY_VIDEO = 1
OMNISIFT_MODALITY_AUDIO = 2
OMNISIFT_MODALITY_IMAGE = 3

OMNISIFT_AUDIO_SELECTOR_NONE = 0
OMNISIFT_AUDIO_SELECTOR_ANCHOR = 1
OMNISIFT_AUDIO_SELECTOR_VGAS = 2
OMNISIFT_AUDIO_SELECTOR_RANDOM = 3



@_fn("omnisift_audio_selector_name", [ctypes.c_int32], ctypes.c_char_p)
def omnisift_audio_selector_name(selector: int) -> bytes | None: ...


@_fn("omnisift_retention_range", [ctypes.POINTER(ctypes.c_double), ctypes.POINTER(ctypes.c_double)], None)
def omnisift_retention_range(lo, hi) -> None: ...


omnisift_head_p = ctypes.c_void_p


@_fn("omnisift_head_load", [omnisift_engine_p, ctypes.c_char_p], omnisift_head_p)
def omnisift_head_load(engine: int, path: bytes) -> int: ...


@_fn("omnisift_head_free", [omnisift_head_p], None)
def omnisift_head_free(head: int) -> None: ...


@_fn("omnisift_head_n_embd", [omnisift_head_p], ctypes.c_int32)
def omnisift_head_n_embd(head: int) -> int: ...


@_fn("omnisift_head_n_hidden", [omnisift_head_p], ctypes.c_int32)
def omnisift_head_n_hidden(head: int) -> int: ...


class omnisift_sift_params(ctypes.Structure):
    _fields_ = [
        ("video_retention", ctypes.c_double),
        ("audio_retention", ctypes.c_double),
        ("image_retention", ctypes.c_double),
        ("audio_selector", ctypes.c_int32),
        ("head", omnisift_head_p),
        ("seed", ctypes.c_uint64),
    ]


@_fn("omnisift_sift_default_params", [], omnisift_sift_params)
def omnisift_sift_default_params() -> omnisift_sift_params: ...


@_fn("omnisift_sift", [omnisift_engine_p, ctypes.c_void_p, ctypes.c_int64, ctypes.c_int64, ctypes.c_void_p,
                       ctypes.c_void_p, ctypes.POINTER(omnisift_sift_params), ctypes.c_void_p, ctypes.c_void_p],
     ctypes.c_int32)
def omnisift_sift(engine: int, embd: int, n_tokens: int, n_embd: int, modality: int, pos: int,
                  params, keep: int, scores) -> int: ...

@_fn("omnisift_sift_n_kept", [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64, ctypes.POINTER(omnisift_sift_params)],
     ctypes.c_int64)
def omnisift_sift_n_kept(modality: int, pos: int, n_tokens: int, params) -> int: ...


@_fn("omnisift_sift_chunks", [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64, ctypes.c_void_p], ctypes.c_int64)
def omnisift_sift_chunks(modality: int, pos: int, n_tokens: int, chunk: int) -> int: ...


# --- audio tower
omnisift_audio_tower_p = ctypes.c_void_p
OMNISIFT_AUDIO_WINDOW_FRAMES = 200


@_fn("omnisift_audio_tower_init", [omnisift_engine_p, ctypes.c_char_p], omnisift_audio_tower_p)
def omnisift_audio_tower_init(engine: int, mmproj_path: bytes) -> int: ...


@_fn("omnisift_audio_tower_free", [omnisift_audio_tower_p], None)
def omnisift_audio_tower_free(tower: int) -> None: ...


@_fn("omnisift_audio_tower_n_embd", [omnisift_audio_tower_p], ctypes.c_int32)
def omnisift_audio_tower_n_embd(tower: int) -> int: ...


@_fn("omnisift_audio_tower_n_mel", [omnisift_audio_tower_p], ctypes.c_int32)
def omnisift_audio_tower_n_mel(tower: int) -> int: ...


@_fn("omnisift_audio_n_tokens", [ctypes.c_int64], ctypes.c_int64)
def omnisift_audio_n_tokens(n_frames: int) -> int: ...


@_fn("omnisift_audio_tower_encode",
     [omnisift_audio_tower_p, ctypes.POINTER(ctypes.c_float), ctypes.c_int64,
      ctypes.POINTER(ctypes.c_float), ctypes.c_int64], ctypes.c_int32)
def omnisift_audio_tower_encode(tower: int, mel, n_frames: int, out, n_out_rows: int) -> int: ...

# --- mmproj: one audio tower in memory


@_fn("omnisift_mmproj_write_vision_only", [ctypes.c_char_p, ctypes.c_char_p], ctypes.c_int32)
def omnisift_mmproj_write_vision_only(src: bytes, dst: bytes) -> int: ...


@_fn("omnisift_mmproj_write_audio_only", [ctypes.c_char_p, ctypes.c_char_p], ctypes.c_int32)
def omnisift_mmproj_write_audio_only(src: bytes, dst: bytes) -> int: ...


# --- decoding
_float_p = ctypes.POINTER(ctypes.c_float)
_int32_p = ctypes.POINTER(ctypes.c_int32)


@_fn("omnisift_decode_embd",
     [ctypes.c_void_p, _float_p, ctypes.c_int64, ctypes.c_int64, _int32_p, ctypes.c_int32, ctypes.c_int32],
     ctypes.c_int32)
def omnisift_decode_embd(lctx, embd, n_rows: int, n_embd: int, pos, seq_id: int, logits_last: int) -> int: ...


@_fn("omnisift_decode_tokens",
     [ctypes.c_void_p, _int32_p, ctypes.c_int64, _int32_p, ctypes.c_int32, ctypes.c_int32],
     ctypes.c_int32)
def omnisift_decode_tokens(lctx, tokens, n_tokens: int, pos, seq_id: int, logits_last: int) -> int: ...


# --- context: one call per compression unit encodes, sifts and queues it

omnisift_context_p = ctypes.c_void_p


class omnisift_context_params(ctypes.Structure):
    _fields_ = [
        ("seq_id", ctypes.c_int32),
        ("max_rows", ctypes.c_int64),
        ("reuse_identical", ctypes.c_int32),
    ]


class omnisift_unit(ctypes.Structure):
    _fields_ = [
        ("n_rows", ctypes.c_int64),
        ("modality", ctypes.c_void_p),
        ("source", ctypes.c_void_p),
        ("pos", ctypes.c_void_p),
        ("renumber_from", ctypes.c_int32),
        ("frames", ctypes.c_void_p),
        ("n_frames", ctypes.c_int32),
        ("frames_per_grid", ctypes.c_int32),
        ("width", ctypes.c_int32),
        ("height", ctypes.c_int32),
        ("mel", ctypes.c_void_p),
        ("n_mel_frames", ctypes.c_int64),
        ("audio_rows", ctypes.c_void_p),
        ("n_audio_rows", ctypes.c_int64),
        ("embd", ctypes.c_void_p),
        ("text", ctypes.c_void_p),
        ("text_pos", ctypes.c_void_p),
        ("n_text", ctypes.c_int64),
    ]


class omnisift_context_stats(ctypes.Structure):
    _fields_ = [
        ("n_rows_in", ctypes.c_int64),
        ("n_rows_kept", ctypes.c_int64),
        ("n_flushes", ctypes.c_int64),
        ("n_decode_calls", ctypes.c_int64),
        ("n_vision_calls", ctypes.c_int64),
        ("n_grids_reused", ctypes.c_int64),
        ("n_audio_calls", ctypes.c_int64),
        ("t_vision_ms", ctypes.c_double),
        ("t_audio_ms", ctypes.c_double),
        ("t_sift_ms", ctypes.c_double),
        ("t_decode_ms", ctypes.c_double),
        ("bytes_host_copied", ctypes.c_int64),
    ]


@_fn("omnisift_context_default_params", [], omnisift_context_params)
def omnisift_context_default_params() -> omnisift_context_params: ...


@_fn("omnisift_context_init",
     [ctypes.c_void_p, ctypes.c_void_p, omnisift_engine_p, omnisift_audio_tower_p, omnisift_context_params],
     omnisift_context_p)
def omnisift_context_init(lctx, mctx, engine, tower, params: omnisift_context_params) -> int: ...


@_fn("omnisift_context_free", [omnisift_context_p], None)
def omnisift_context_free(ctx: int) -> None: ...


@_fn("omnisift_context_begin", [omnisift_context_p, ctypes.POINTER(omnisift_sift_params)], ctypes.c_int32)
def omnisift_context_begin(ctx: int, params) -> int: ...


@_fn("omnisift_context_add", [omnisift_context_p, ctypes.POINTER(omnisift_unit), ctypes.c_void_p], ctypes.c_int32)
def omnisift_context_add(ctx: int, unit, keep) -> int: ...


@_fn("omnisift_context_end", [omnisift_context_p, ctypes.c_int32], ctypes.c_int32)
def omnisift_context_end(ctx: int, logits_last: int) -> int: ...


@_fn("omnisift_context_unit_rows",
     [omnisift_context_p, ctypes.POINTER(ctypes.c_int64), ctypes.POINTER(ctypes.c_int64)],
     ctypes.POINTER(ctypes.c_float))
def omnisift_context_unit_rows(ctx: int, n_rows, n_embd): ...


@_fn("omnisift_context_n_queued", [omnisift_context_p], ctypes.c_int64)
def omnisift_context_n_queued(ctx: int) -> int: ...


@_fn("omnisift_context_get_stats", [omnisift_context_p], omnisift_context_stats)
def omnisift_context_get_stats(ctx: int) -> omnisift_context_stats: ...
