"""Whether llama.cpp's extra CPU buffer types are safe to use on this machine.

llama.cpp 0.3.36 (llama-cpp-python's pin) repacks Q4_0 / Q4_1 / Q8_0 / Q4_K / Q5_K / Q6_K / IQ4_XS
weights into its AMX buffer type when the CPU has AMX (Intel Sapphire Rapids and later), and then
segfaults in ggml_backend_amx_mul_mat on the first decode (llama.cpp issue 20824, closed without a
fix). Loading with `use_extra_bufts = false` avoids that path; it also turns off the CPU_REPACK
buffer type, which costs some prefill speed but never correctness.
"""

from __future__ import annotations

import functools
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
