"""The drop-in check: llama-cpp-python's own tests (tests/test_llama.py of its 0.3.36 sdist:
completion, grammar, logits processor, save/load state, the repeated-prompt cache) pass with
pyomnisift.Llama in place of llama_cpp.Llama, on a real model (Qwen2.5-Coder-0.5B-Instruct Q4_K_M,
from PyPI as the benchmark gets it).

Their file is run unmodified in a child pytest; a conftest beside it puts pyomnisift.Llama in
llama_cpp's namespace and answers their hf_hub_download with the local model (nothing is fetched
from a hub)."""

from __future__ import annotations

import os
import subprocess
import sys
import tarfile

import pytest

from pyomnisift._converter import default_cache_dir, download_sdist

CONFTEST = '''
import os

import huggingface_hub

import llama_cpp
import pyomnisift

huggingface_hub.hf_hub_download = lambda repo_id, filename, **kw: os.environ["OMNISIFT_REAL_MODEL"]
if os.environ.get("OMNISIFT_DROP_IN") == "1":
    llama_cpp.Llama = pyomnisift.Llama
'''

TESTS = ["test_real_llama", "test_real_llama_repeated_prompt_cache"]


@pytest.fixture(scope="module")
def suite(tmp_path_factory):
    sdist = download_sdist(default_cache_dir() / "sdist")
    out = tmp_path_factory.mktemp("llama-cpp-python-tests")
    with tarfile.open(sdist) as tar:
        member = tar.getmember("llama_cpp_python-0.3.36/tests/test_llama.py")
        (out / "test_llama.py").write_bytes(tar.extractfile(member).read())
    (out / "conftest.py").write_text(CONFTEST)
    return out


@pytest.fixture(scope="module")
def real_model():
    from bench_assets import fetch_bench_model

    return fetch_bench_model()


def _run(suite, model, drop_in: bool) -> subprocess.CompletedProcess:
    env = dict(os.environ, OMNISIFT_REAL_MODEL=str(model), OMNISIFT_DROP_IN="1" if drop_in else "0")
    return subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-rA",
                           *[f"test_llama.py::{name}" for name in TESTS]],
                          cwd=suite, env=env, capture_output=True, text=True, timeout=900)


def test_llama_cpp_python_tests_pass_with_pyomnisift_llama(suite, real_model):
    ours = _run(suite, real_model, drop_in=True)
    assert ours.returncode == 0, ours.stdout[-4000:] + ours.stderr[-2000:]
    for name in TESTS:
        assert f"PASSED test_llama.py::{name}" in ours.stdout, ours.stdout[-4000:]
