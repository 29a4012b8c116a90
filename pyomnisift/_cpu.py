"""Whether llama.cpp's extra CPU buffer types are safe to use on this machine.

llama.cpp 0.3.36 (llama-cpp-python's pin) repacks Q4_0 / Q4_1 / Q8_0 / Q4_K / Q5_K / Q6_K / IQ4_XS
weights into its AMX buffer type when the CPU has AMX (Intel Sapphire Rapids and later), and then
segfaults in ggml_backend_amx_mul_mat on the first decode (llama.cpp issue 20824, closed without a
fix). Loading with `use_extra_bufts = false` avoids that path; it also turns off the CPU_REPACK
buffer type (llama.cpp's weight repacking for its AVX2 / AVX-512 kernels). `repack_overrides` gives
that back without AMX: a `tensor_buft_overrides` list that places exactly the weights CPU_REPACK
handles there, the rest staying in the plain CPU buffer.
"""

from __future__ import annotations

import ctypes
import functools
import re
from typing import Optional

import llama_cpp


@functools.lru_cache(maxsize=None)
def cpu_has_amx() -> bool:
    """The CPU reports AMX and the loaded ggml CPU backend was built to use it."""
    try:
        with open("/proc/cpuinfo") as f:
            flags = next((line for line in f if line.startswith("flags")), "")
    except OSError:
        return False
    if "amx_int8" not in flags.split() and "amx_tile" not in flags.split():
        return False
    info = llama_cpp.llama_print_system_info().decode("utf-8", "replace")
    return "AMX_INT8 = 1" in info


def use_extra_bufts(requested: Optional[bool]) -> bool:
    """`requested` if given (True / False), else False exactly where the AMX path would crash."""
    if requested is not None:
        if not isinstance(requested, bool):
            raise TypeError(f"use_extra_bufts must be True, False or None (auto), got {requested!r}")
        return requested
    return not cpu_has_amx()


# --- keeping llama.cpp's CPU weight repacking without the AMX buffer type

# What ggml-cpu 0.3.36 repacks on x86-64 (repack.cpp, ggml_repack_get_optimal_repack_type): these
# types, with the rows of a matrix (ne[1]) a multiple of 8, and the CPU feature each needs. The
# repack buffer aborts on a tensor it has no layout for, so only these are ever sent to it.
_X86_REPACKED = {"Q4_0": "AVX2", "Q4_K": "AVX2", "IQ4_NL": "AVX2", "MXFP4": "AVX2", "Q2_K": "AVX512"}
_MATMUL_WEIGHT = re.compile(r"^blk\.(\d+)\.([A-Za-z0-9_.]+)\.weight$")


class llama_model_tensor_buft_override(ctypes.Structure):
    """llama.h's struct llama_model_tensor_buft_override (llama-cpp-python 0.3.36 does not bind it)."""
    _fields_ = [("pattern", ctypes.c_char_p), ("buft", ctypes.c_void_p)]


@functools.lru_cache(maxsize=None)
def _ggml():
    """llama-cpp-python's own handle on libggml (its dependency libggml-base resolves through it)."""
    from llama_cpp._ggml import libggml as lib

    for name, argtypes, restype in (("ggml_backend_dev_by_type", [ctypes.c_int], ctypes.c_void_p),
                                    ("ggml_backend_dev_backend_reg", [ctypes.c_void_p], ctypes.c_void_p),
                                    ("ggml_backend_reg_get_proc_address", [ctypes.c_void_p, ctypes.c_char_p],
                                     ctypes.c_void_p),
                                    ("ggml_backend_buft_name", [ctypes.c_void_p], ctypes.c_char_p)):
        fn = getattr(lib, name)
        fn.argtypes, fn.restype = argtypes, restype
    return lib


@functools.lru_cache(maxsize=None)
def cpu_repack_buft() -> Optional[int]:
    """The CPU backend's CPU_REPACK buffer type (an extra buffer type of the CPU device), or None."""
    ggml = _ggml()
    dev = ggml.ggml_backend_dev_by_type(0)   # GGML_BACKEND_DEVICE_TYPE_CPU
    if not dev:
        return None
    reg = ggml.ggml_backend_dev_backend_reg(dev)
    addr = ggml.ggml_backend_reg_get_proc_address(reg, b"ggml_backend_dev_get_extra_bufts")
    if not addr:
        return None
    get_extra = ctypes.CFUNCTYPE(ctypes.POINTER(ctypes.c_void_p), ctypes.c_void_p)(addr)
    bufts = get_extra(dev)
    i = 0
    while bufts and bufts[i]:
        if ggml.ggml_backend_buft_name(bufts[i]) == b"CPU_REPACK":
            return bufts[i]
        i += 1
    return None


def _cpu_features() -> set:
    info = llama_cpp.llama_print_system_info().decode("utf-8", "replace")
    return {m.group(1) for m in re.finditer(r"(\w+) = 1", info)}


def repack_patterns(model_path: str) -> list[str]:
    """Regexes (one per weight name, listing its layers) of the GGUF's matrix weights that CPU_REPACK
    takes on this CPU; empty off x86-64 (where the crash this works around does not exist)."""
    import platform

    from gguf import GGMLQuantizationType

    from ._gguf import read_tensor_infos

    if platform.machine().lower() not in ("x86_64", "amd64"):
        return []
    features = _cpu_features()
    ok = {int(GGMLQuantizationType[t]) for t, need in _X86_REPACKED.items() if need in features}
    layers: dict[str, list[str]] = {}
    for name, ne, ttype in read_tensor_infos(model_path):
        m = _MATMUL_WEIGHT.match(name)
        if m and len(ne) == 2 and ttype in ok and ne[1] % 8 == 0:   # norms and biases are 1-D
            layers.setdefault(m.group(2), []).append(m.group(1))
    return [rf"^blk\.({'|'.join(ids)})\.{re.escape(name)}\.weight$" for name, ids in sorted(layers.items())]


def repack_overrides(model_path: str):
    """A NULL-terminated llama_model_tensor_buft_override array sending the weights that llama.cpp
    would repack to CPU_REPACK (and nothing to AMX), or None when there is nothing to send."""
    buft = cpu_repack_buft()
    patterns = repack_patterns(model_path) if buft else []
    if not patterns:
        return None
    arr = (llama_model_tensor_buft_override * (len(patterns) + 1))()
    keep = [p.encode() for p in patterns]
    for i, p in enumerate(keep):
        arr[i].pattern, arr[i].buft = p, buft
    arr._patterns = keep   # the C strings live as long as the array
    return arr
