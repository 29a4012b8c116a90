"""pyomnisift's vLLM plugin on vLLM's CPU build (`make test-vllm`; README "Serving with vLLM").

The tiny random Qwen2.5-Omni checkpoint of the parity tests (scripts/make_hf_tiny_omni.py), one
4-second clip (8 frames at 2 fps) with its sound, greedy decoding. Each vLLM engine runs in a
process of its own (vllm_driver.py); transformers runs here (hf_omni.py).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import pyomnisift
from hf_omni import Reference

HERE = Path(__file__).parent
PROMPT = ("<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\n"
          "<|vision_bos|><|VIDEO|><|vision_eos|>What happens in this clip?<|im_end|>\n<|im_start|>assistant\n")
MAX_TOKENS = 8
FULL = {"video_retention": 1.0, "audio_retention": 1.0}
COMPRESSED = {"video_retention": 0.5, "audio_retention": 0.6, "audio_selector": "anchor"}
RANDOM_SELECTOR = {"video_retention": 0.33, "audio_retention": 0.4, "audio_selector": "random", "sift_seed": 7}


@pytest.fixture(scope="module")
def model_dir() -> str:
    path = os.environ.get("PYOMNISIFT_HF_TINY")
    if not path:
        from make_hf_tiny_omni import make_hf_tiny_omni
        path = str(make_hf_tiny_omni()["hf"])
    return path


@pytest.fixture(scope="module")
def media(tmp_path_factory):
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 255, (8, 56, 84, 3), dtype=np.uint8)
    audio = (0.1 * rng.standard_normal(16000 * 4)).astype(np.float32)
    path = tmp_path_factory.mktemp("media") / "clip.npz"
    np.savez(path, frames=frames, audio=audio)
    return path, frames, audio


def run_vllm(tmp_path: Path, model_dir: str, media_path: Path, requests: list, plugin: bool, record=None,
             tensor_parallel_size: int = 1, **extra) -> list:
    spec = {"model": model_dir, "media": str(media_path), "prompt": PROMPT, "max_tokens": MAX_TOKENS,
            "requests": requests, "record": str(record) if record else None,
            "tensor_parallel_size": tensor_parallel_size, **extra}
    spec_path = tmp_path / f"spec-{plugin}-{tensor_parallel_size}.json"
    spec_path.write_text(json.dumps(spec))
    env = {**os.environ, "VLLM_CPU_KVCACHE_SPACE": "1"}
    if tensor_parallel_size > 1:  # one NUMA node here: vLLM asks for the workers' cores by hand
        env["VLLM_CPU_OMP_THREADS_BIND"] = "|".join(str(i % os.cpu_count()) for i in range(tensor_parallel_size))
    env["VLLM_PLUGINS"] = "omnisift" if plugin else "none"
    if record:
        env["PYOMNISIFT_VLLM_RECORD"] = str(record)
    done = subprocess.run([sys.executable, str(HERE / "vllm_driver.py"), str(spec_path)], env=env,
                          capture_output=True, text=True, timeout=900)
    lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
    assert done.returncode == 0 and lines, done.stdout[-3000:] + done.stderr[-6000:]
    return json.loads(lines[-1][len("RESULT "):])


@pytest.fixture(scope="module")
def reference(model_dir, media):
    _, frames, audio = media
    ref = Reference(model_dir)
    inputs = ref.inputs(PROMPT, frames, audio)
    ids, embeds, positions, modality = ref.sequence(inputs)
    return ref, ids, embeds, positions, modality


@pytest.fixture(scope="module")
def plugin_run(tmp_path_factory, model_dir, media):
    tmp = tmp_path_factory.mktemp("plugin")
    record = tmp / "record"
    results = run_vllm(tmp, model_dir, media[0], [FULL, COMPRESSED, RANDOM_SELECTOR], plugin=True, record=record)
    return results, record


def recorded(record: Path, k: int) -> dict:
    files = sorted(record.glob(f"req-{k}-*.npz"))
    assert len(files) == 1, files
    return dict(np.load(files[0]))


@pytest.mark.parametrize("k, settings", [(1, COMPRESSED), (2, RANDOM_SELECTOR)])
def test_keep_mask_equals_pyomnisift_on_transformers_rows(plugin_run, reference, k, settings):
    """(a) The plugin's rows and layout are transformers' (same positions, rows within float
    tolerance), and its keep mask is pyomnisift.sift's on transformers' rows."""
    _, record = plugin_run
    ref, ids, embeds, positions, modality = reference
    item = recorded(record, k)
    media = modality > 0
    hf_rows, hf_pos, hf_mod = embeds[media].numpy(), positions[:, media].numpy(), modality[media]
    np.testing.assert_array_equal(item["modality"], hf_mod)
    np.testing.assert_array_equal(item["positions"] + hf_pos[0, 0], hf_pos)  # the item starts at hf_pos[0, 0]
    np.testing.assert_allclose(item["rows"], hf_rows, rtol=0, atol=1e-3 * np.abs(hf_rows).max())
    sift_settings = {key: v for key, v in settings.items() if key != "sift_seed"}
    if "sift_seed" in settings:
        sift_settings["seed"] = settings["sift_seed"]
    # positions from the item's start: the random selector draws by t, and the plugin's item does not
    # know where a prompt puts it (its encoder output is cached per media and settings)
    expected = pyomnisift.sift(hf_rows, hf_mod, hf_pos - hf_pos[0, 0], **sift_settings)
    assert 0 < expected.sum() < len(expected)
    np.testing.assert_array_equal(item["keep"], expected)
    if settings["audio_selector"] != "random":  # the other selectors do not depend on where the item starts
        np.testing.assert_array_equal(pyomnisift.sift(hf_rows, hf_mod, hf_pos, **sift_settings), expected)
    # the same call on the plugin's own rows gives its mask too (the rows differ only by float noise)
    np.testing.assert_array_equal(pyomnisift.sift(item["rows"], item["modality"], item["positions"], **sift_settings),
                                  item["keep"])


def test_prompt_length_is_the_c_rule(plugin_run, reference):
    """The scheduled prompt has exactly the rows the C rule keeps (pyomnisift.n_kept) plus the text."""
    results, _ = plugin_run
    ref, ids, embeds, positions, modality = reference
    media = modality > 0
    assert len(results[0]["prompt_token_ids"]) == len(ids)
    for k, settings in ((1, COMPRESSED), (2, RANDOM_SELECTOR)):
        n = pyomnisift.n_kept(modality[media], positions[:, media].numpy(),
                              video_retention=settings["video_retention"], audio_retention=settings["audio_retention"],
                              audio_selector=settings["audio_selector"])
        assert len(results[k]["prompt_token_ids"]) == len(ids) - media.sum() + n


def test_full_retention_equals_transformers(plugin_run, reference):
    """(b) At retention 1.0 the plugin's greedy tokens are transformers' on the full sequence."""
    results, _ = plugin_run
    ref, ids, embeds, positions, modality = reference
    assert results[0]["prompt_token_ids"] == ids.tolist()
    assert results[0]["token_ids"] == ref.greedy(embeds, positions, MAX_TOKENS)


@pytest.mark.parametrize("k, settings", [(1, COMPRESSED), (2, RANDOM_SELECTOR)])
def test_compressed_equals_transformers_on_kept_rows(plugin_run, reference, k, settings):
    """(c) Compressed, the plugin's greedy tokens are transformers' fed the kept rows (pyomnisift's
    mask) at their original positions."""
    results, record = plugin_run
    ref, ids, embeds, positions, modality = reference
    keep = np.ones(len(ids), bool)
    keep[modality > 0] = recorded(record, k)["keep"]
    expected = ref.greedy(embeds[torch.from_numpy(keep)], positions[:, torch.from_numpy(keep)], MAX_TOKENS)
    assert results[k]["token_ids"] == expected
    # and the compression changed the answer's input: the full sequence gives another continuation
    assert keep.sum() < len(keep)


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_vllm_serve_openai_client(tmp_path, model_dir, media):
    """(d) `vllm serve` with the plugin, the OpenAI client, a video with its sound: the server's
    --mm-processor-kwargs are the defaults, a request's mm_processor_kwargs override them, and each
    answer (text and prompt length) is the offline engine's (LLM.chat, same path) for the same
    settings; the compressed prompt is the C rule's length shorter than the full one."""
    import time

    import httpx
    from openai import OpenAI

    from pyomnisift._template import QWEN25_OMNI_CHAT_TEMPLATE
    from tool_clips import write_clip

    clip = write_clip(tmp_path / "clip.mp4", seconds=4.0, fps=8)
    template = tmp_path / "template.jinja"
    template.write_text(QWEN25_OMNI_CHAT_TEMPLATE)
    messages = [{"role": "user", "content": [{"type": "video_url", "video_url": {"url": f"file://{clip}"}},
                                             {"type": "text", "text": "What happens in this clip?"}]}]
    server_defaults = {"video_retention": 0.5, "audio_retention": 0.6}
    requests = [{"use_audio_in_video": True}, {"use_audio_in_video": True, **FULL}]

    port = _free_port()
    env = {**os.environ, "VLLM_PLUGINS": "omnisift", "VLLM_CPU_KVCACHE_SPACE": "1"}
    log = open(tmp_path / "serve.log", "w")
    server = subprocess.Popen(
        [str(Path(sys.executable).parent / "vllm"), "serve", model_dir, "--port", str(port),
         "--host", "127.0.0.1", "--dtype", "float32", "--max-model-len", "4096", "--enforce-eager",
         "--max-num-seqs", "2", "--seed", "0", "--chat-template", str(template),
         "--allowed-local-media-path", str(tmp_path), "--trust-request-mm-kwargs",
         "--limit-mm-per-prompt", json.dumps({"image": 0, "video": 1, "audio": 1}),
         "--mm-processor-kwargs", json.dumps(server_defaults)], env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.time() + 600
        while True:
            assert server.poll() is None, (tmp_path / "serve.log").read_text()[-5000:]
            try:
                if httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.time() < deadline, "vllm serve did not start"
            time.sleep(2)
        client = OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="-")
        served = [client.chat.completions.create(model=model_dir, messages=messages, max_tokens=MAX_TOKENS,
                                                 temperature=0, extra_body={"mm_processor_kwargs": kw})
                  for kw in requests]
    finally:
        server.terminate()
        server.wait(timeout=60)
        log.close()

    offline = run_vllm(tmp_path, model_dir, media[0], [{**server_defaults, **requests[0]}, requests[1]],
                       plugin=True, chat={"messages": messages, "template": QWEN25_OMNI_CHAT_TEMPLATE},
                       allowed_local_media_path=str(tmp_path))
    for got, want in zip(served, offline):
        assert got.usage.prompt_tokens == len(want["prompt_token_ids"])
        assert got.choices[0].message.content == want["text"]
    assert served[0].usage.prompt_tokens < served[1].usage.prompt_tokens


def test_tensor_parallel_two_cpu_processes(tmp_path, model_dir, media, plugin_run):
    """Tensor parallelism over two CPU worker processes (vLLM's CPU build offers it): the
    compressed request gives the single-process tokens and prompt."""
    results = run_vllm(tmp_path, model_dir, media[0], [COMPRESSED], plugin=True, tensor_parallel_size=2)
    single, _ = plugin_run
    assert results[0]["prompt_token_ids"] == single[1]["prompt_token_ids"]
    assert results[0]["token_ids"] == single[1]["token_ids"]
