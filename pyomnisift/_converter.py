"""llama.cpp's own checkpoint converter (convert_hf_to_gguf.py), from the pinned llama-cpp-python sdist.

The sdist of the llama-cpp-python that pyomnisift is built against carries the llama.cpp tree the
installed libraries were built from, converter included; it is fetched from PyPI with pip (checked
by sha256) once and the converter is extracted into the cache (with its conversion/ and gguf-py/).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

SDIST_REQUIREMENT = "llama-cpp-python==0.3.36"
SDIST_NAME = "llama_cpp_python-0.3.36.tar.gz"
SDIST_SHA256 = "832db0699007f1be95a7e41ef12e88926b02ba836461e36a36372db2760c1a2e"
MEMBER_PREFIX = "llama_cpp_python-0.3.36/vendor/llama.cpp/"
CONVERTER_PARTS = ("convert_hf_to_gguf.py", "conversion/", "gguf-py/")


def default_cache_dir() -> Path:
    env = os.environ.get("PYOMNISIFT_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "pyomnisift"


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def download_sdist(sdist_dir: Path) -> Path:
    """The pinned sdist in sdist_dir, downloaded with pip when missing; raises on a checksum mismatch."""
    sdist = Path(sdist_dir) / SDIST_NAME
    if sdist.is_file() and sha256_of(sdist) == SDIST_SHA256:
        return sdist
    sdist.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=sdist.parent) as tmp:
        subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:",
                        "--dest", tmp, SDIST_REQUIREMENT], check=True)
        got = Path(tmp) / SDIST_NAME
        if not got.is_file():
            raise RuntimeError(f"pip download did not produce {SDIST_NAME}")
        digest = sha256_of(got)
        if digest != SDIST_SHA256:
            raise RuntimeError(f"{SDIST_REQUIREMENT} sdist: sha256 {digest}, expected {SDIST_SHA256}")
        os.replace(got, sdist)
    return sdist


def ensure_converter(cache_dir=None, sdist: Path | None = None) -> Path:
    """Path of convert_hf_to_gguf.py (conversion/ and gguf-py/ beside it), extracted on first use."""
    cache = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    root = cache / "converter"
    script = root / CONVERTER_PARTS[0]
    if script.is_file():
        return script
    sdist = sdist or download_sdist(cache / "sdist")
    cache.mkdir(parents=True, exist_ok=True)
    # Extracted into a scratch dir and renamed, so that a partial tree is never taken as complete.
    with tempfile.TemporaryDirectory(dir=cache) as tmp:
        with tarfile.open(sdist, "r:gz") as tar:
            members = [m for m in tar if (m.isfile() or m.isdir()) and any(
                m.name.startswith(MEMBER_PREFIX + part) for part in CONVERTER_PARTS)]
            for m in members:
                m.name = m.name[len(MEMBER_PREFIX):]
            tar.extractall(tmp, members=members, filter="data")
        if not (Path(tmp) / CONVERTER_PARTS[0]).is_file():
            raise RuntimeError(f"{sdist} lacks {CONVERTER_PARTS[0]}")
        shutil.rmtree(root, ignore_errors=True)
        os.replace(tmp, root)
        os.mkdir(tmp)  # for TemporaryDirectory's cleanup
    return script
