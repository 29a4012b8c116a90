"""The device legs' own checks (collected only on a device: `make test-device` on a ggml RPC device,
scripts/gpu_check.sh on a GPU): every node
of our graphs runs on the device, the keep masks are the CPU's, and a video prompt's compressed decode
on the device (LLM offloaded, towers and compression there) gives the CPU run's tokens and logits."""

from __future__ import annotations

import llama_cpp
import numpy as np
import pytest

import pyomnisift

from decode_helpers import clear
from device import LLM_KW, RPC, VULKAN
from test_parity_transformers import MAX_ABS, VISION_ROWS_ATOL
from test_sift import random_sequence


def assert_on_device(stats: dict) -> None:
    assert stats["n_graphs"] > 0 and stats["n_nodes"] > 0
    assert stats["n_nodes_off_device"] == 0, stats
    assert stats["n_splits"] == stats["n_graphs"], stats


def test_the_engine_is_the_device():
    if RPC:
        assert pyomnisift.default_engine().device == "RPC0"
        assert pyomnisift.add_rpc_servers(RPC) == {RPC: 1}    # registering again changes nothing
    if VULKAN:
        assert pyomnisift.default_engine().device == "Vulkan0"
    assert pyomnisift.Engine().device == pyomnisift.default_engine().device != "CPU"


@pytest.mark.parametrize("selector", ["anchor", "none", "random"])
def test_sift_runs_on_the_device_with_the_cpu_masks(selector):
    dev, cpu = pyomnisift.default_engine(), pyomnisift.Engine(device="CPU")
    rng = np.random.default_rng(18)
    for _ in range(12):
        emb, mod, pos = random_sequence(rng).arrays()
        kw = dict(video_retention=0.33, audio_retention=0.5, image_retention=0.5, audio_selector=selector)
        dev.reset_stats()
        keep = pyomnisift.sift(emb, mod, pos, engine=dev, **kw)
        if (mod == 1).any() or (mod == 3).any():
            assert_on_device(dev.stats())
        np.testing.assert_array_equal(keep, pyomnisift.sift(emb, mod, pos, engine=cpu, **kw))


def test_audio_tower_runs_on_the_device_with_the_cpu_rows(tiny_model):
    mmproj = tiny_model[1]
    dev = pyomnisift.default_engine()
    on_dev = pyomnisift.AudioTower(mmproj, engine=dev)
    on_cpu = pyomnisift.AudioTower(mmproj, engine=pyomnisift.Engine(device="CPU"))
    mel = np.sin(np.arange(450 * 128, dtype=np.float32) * 0.013).reshape(450, 128) * 0.8
    dev.reset_stats()
    rows = on_dev.encode_features(mel)
    assert_on_device(dev.stats())
    # RPC0 computes with the CPU's kernels: float rounding only. Vulkan multiplies the mmproj's f16
    # weights by f32 activations, where the CPU rounds the activations to f16 first (ggml-cpu's f16
    # dot product): rows differ by up to 1.3e-4 on lavapipe, so there both are held to the tolerance
    # the CPU tower has against transformers on the same weights (test_audio_tower.py, atol 1e-3).
    atol = 1e-3 if VULKAN else 1e-5
    np.testing.assert_allclose(rows, on_cpu.encode_features(mel), rtol=0, atol=atol)


def _logits(llm) -> np.ndarray:
    n_vocab = llama_cpp.llama_vocab_n_tokens(llama_cpp.llama_model_get_vocab(llm.model))
    return np.ctypeslib.as_array(llama_cpp.llama_get_logits_ith(llm.ctx, -1), shape=(n_vocab,)).copy()


def test_compressed_video_prompt_on_the_device_is_the_cpu_run(tiny_model, assets):
    llm, mmproj = tiny_model
    msgs = [{"role": "user", "content": [{"type": "video_url", "video_url": {"url": str(assets["test-3.mp4"])}},
                                         {"type": "text", "text": "What happens?"}]}]
    results = {}
    for where, kw in (("device", LLM_KW), ("cpu", {"n_gpu_layers": 0})):
        with pyomnisift.Llama(str(llm), str(mmproj), n_ctx=4096, n_threads=2, **kw) as m:
            assert (m.chat_handler.engine.device != "CPU") == (where == "device")
            m.chat_handler.engine.reset_stats()
            units = []
            first = m.create_chat_completion(msgs, max_tokens=1, temperature=0.0,
                                             on_unit=lambda u: units.append((u.kind, u.keep.copy(), u.rows.copy())))
            logits = _logits(m)
            if where == "device":
                assert_on_device(m.chat_handler.engine.stats())
            clear(m)
            answer = m.create_chat_completion(msgs, max_tokens=12, temperature=0.0)
            results[where] = (first["usage"], logits, answer["choices"][0]["message"]["content"], units)
    dev, cpu = results["device"], results["cpu"]
    # RPC computes with the CPU's kernels, on a graph split the same way: float rounding only. Vulkan
    # (lavapipe: f32 shaders, where ggml-cpu rounds activations to f16 against the mmproj's f16
    # kernels) differs by up to 1.2e-3 in the vision rows: there both runs are held to what the
    # towers meet against transformers (vision 3e-3: test_parity_transformers.py; audio 1e-3), and
    # the logits to the parity tests' 2e-3.
    rows_atol, logits_atol = (VISION_ROWS_ATOL, MAX_ABS) if VULKAN else (1e-4, 1e-4)
    omni_dev, omni_cpu = dev[0]["omnisift"], cpu[0]["omnisift"]
    for m in ("video", "audio"):
        assert omni_dev[m] == omni_cpu[m]                               # tokens in / kept per modality
    assert 0 < omni_dev["video"]["tokens_kept"] < omni_dev["video"]["tokens_in"]
    assert dev[0]["prompt_tokens"] == cpu[0]["prompt_tokens"]
    assert len(dev[3]) == len(cpu[3]) > 0
    for (kind_d, keep_d, rows_d), (kind_c, keep_c, rows_c) in zip(dev[3], cpu[3]):
        assert kind_d == kind_c
        np.testing.assert_array_equal(keep_d, keep_c)                   # the same tokens kept, unit by unit
        np.testing.assert_allclose(rows_d, rows_c, rtol=0, atol=rows_atol)   # encoder rows (towers on the device)
    assert dev[2] == cpu[2]                                         # greedy answer
    np.testing.assert_allclose(dev[1], cpu[1], rtol=0, atol=logits_atol * max(1.0, float(np.abs(cpu[1]).max())))
