"""A child process's environment in which ggml's CPU backend sees no AMX (tests/hide_amx.c, built
here with the system C compiler): llama.cpp's own choices of a CPU without AMX, on any x86 CPU."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path


def hidden_amx_env(build_dir: Path) -> dict:
    lib = build_dir / "hide_amx.so"
    if not lib.is_file():
        src = Path(__file__).with_name("hide_amx.c")
        subprocess.run(["cc", "-shared", "-fPIC", "-O2", "-o", str(lib), str(src), "-ldl"], check=True)
    # after what is preloaded already (AddressSanitizer's runtime must come first)
    return {**os.environ, "LD_PRELOAD": " ".join(filter(None, [os.environ.get("LD_PRELOAD"), str(lib)]))}
