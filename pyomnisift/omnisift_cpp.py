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


# --- compression
# @@compression-bindings@@ (replace this marker with the compression bindings)

# --- audio tower
# @@audio-bindings@@ (replace this marker with the audio tower bindings)
