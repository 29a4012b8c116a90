"""The CMake configure step refuses, with a message saying what to do, a Python without
llama-cpp-python or with another version of it (libomnisift must match llama.cpp's C API)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path


ROOT = Path(__file__).resolve().parents[1]


def configure(tmp_path: Path, env_extra: dict, python: str = sys.executable) -> subprocess.CompletedProcess:
    import os

    env = dict(os.environ, **env_extra)
    return subprocess.run(["cmake", "-S", str(ROOT), "-B", str(tmp_path / "build"), f"-DPython_EXECUTABLE={python}"],
                          capture_output=True, text=True, env=env, timeout=120)


def fake_llama_cpp_python(site: Path, version: str) -> Path:
    (site / "llama_cpp").mkdir(parents=True)
    (site / "llama_cpp" / "__init__.py").write_text("raise ImportError('configure must not import me')\n")
    dist = site / f"llama_cpp_python-{version}.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text(f"Metadata-Version: 2.1\nName: llama_cpp_python\nVersion: {version}\n")
    return site


def test_missing_llama_cpp_python(tmp_path):
    # -I -S: no PYTHONPATH and no site-packages, so llama_cpp cannot be found
    wrapper = tmp_path / "python-without-llama-cpp"
    wrapper.write_text(f"#!/bin/sh\nexec {sys.executable} -I -S \"$@\"\n")
    wrapper.chmod(0o755)
    proc = configure(tmp_path, {}, python=str(wrapper))
    assert proc.returncode != 0
    assert "llama-cpp-python==0.3.36 must be installed" in proc.stderr
    assert "pip install llama-cpp-python==0.3.36" in proc.stderr


def test_other_llama_cpp_python_version(tmp_path):
    site = fake_llama_cpp_python(tmp_path / "site", "0.3.20")
    proc = configure(tmp_path, {"PYTHONPATH": str(site)})
    assert proc.returncode != 0
    assert "found llama-cpp-python 0.3.20" in proc.stderr and "exactly 0.3.36" in proc.stderr
