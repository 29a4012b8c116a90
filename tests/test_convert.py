"""`pyomnisift convert` on a tiny random checkpoint laid out like the OmniSIFT-7B release (sharded
safetensors with an index; the Qwen2.5-Omni thinker, talker-free, plus `thinker.compressor.*`, the
learned selector): LLM + mmproj by llama.cpp's own converter, the head, the quantized LLM; the
converted files answer a video prompt with audio_selector="vgas"."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import numpy as np
import pytest

import safetensors.numpy as safetensors_numpy  # noqa: E402
import torch  # noqa: E402,F401
import transformers  # noqa: E402,F401

import pyomnisift  # noqa: E402
from pyomnisift import convert_head  # noqa: E402
from tool_clips import write_clip  # noqa: E402

HIDDEN, SCORE_HIDDEN, N_HEAD = 64, 32, 8


def compressor_tensors(d: int, seed: int = 3) -> dict:
    rng = np.random.default_rng(seed)
    shapes = {
        "v_proj.weight": (HIDDEN, d), "v_proj.bias": (HIDDEN,), "a_proj.weight": (HIDDEN, d), "a_proj.bias": (HIDDEN,),
        "v_norm.weight": (HIDDEN,), "v_norm.bias": (HIDDEN,), "a_norm.weight": (HIDDEN,), "a_norm.bias": (HIDDEN,),
        "cross_attn.in_proj_weight": (3 * HIDDEN, HIDDEN), "cross_attn.in_proj_bias": (3 * HIDDEN,),
        "cross_attn.out_proj.weight": (HIDDEN, HIDDEN), "cross_attn.out_proj.bias": (HIDDEN,),
        "post_attn_norm.weight": (HIDDEN,), "post_attn_norm.bias": (HIDDEN,),
        "score_head.0.weight": (SCORE_HIDDEN, HIDDEN), "score_head.0.bias": (SCORE_HIDDEN,),
        "score_head.2.weight": (1, SCORE_HIDDEN), "score_head.2.bias": (1,),
    }
    assert set(shapes) == set(convert_head.NAMES)
    out = {}
    for name, shape in shapes.items():
        if "norm.weight" in name:
            v = 1.0 + 0.1 * rng.standard_normal(shape)
        else:
            v = rng.standard_normal(shape) / np.sqrt(shape[-1])
        out[convert_head.PREFIX + name] = v.astype(np.float32)
    return out


@pytest.fixture(scope="module")
def release_like_checkpoint(tmp_path_factory):
    import make_hf_tiny_omni

    hf = make_hf_tiny_omni.make_hf_tiny_omni()["hf"]
    ckpt = tmp_path_factory.mktemp("ckpt") / "OmniSIFT-tiny"
    shutil.copytree(hf, ckpt)
    # The release ships Qwen2.5-Omni's chat template in tokenizer_config.json; the tiny one has none.
    from pyomnisift import tiny_model as make_tiny_model

    tok_cfg = ckpt / "tokenizer_config.json"
    tok_cfg.write_text(json.dumps(json.loads(tok_cfg.read_text()) | {"chat_template": make_tiny_model.CHAT_TEMPLATE}))
    single = ckpt / "model.safetensors"
    from safetensors import safe_open

    with safe_open(str(single), "np") as f:
        keys = list(f.keys())
    d = json.loads((ckpt / "config.json").read_text())["thinker_config"]["text_config"]["hidden_size"]
    shard1, shard2 = "model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"
    single.rename(ckpt / shard1)
    extra = compressor_tensors(d)
    safetensors_numpy.save_file(extra, str(ckpt / shard2), metadata={"format": "pt"})
    weight_map = {k: shard1 for k in keys} | {k: shard2 for k in extra}
    (ckpt / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    return ckpt


@pytest.fixture(scope="module")
def converted(release_like_checkpoint, tmp_path_factory):
    out = tmp_path_factory.mktemp("converted")
    p = subprocess.run([sys.executable, "-m", "pyomnisift", "convert", str(release_like_checkpoint), str(out),
                        "--outtype", "f32", "--quantize", "Q4_K_M"], capture_output=True, text=True, timeout=900)
    assert p.returncode == 0, p.stdout + p.stderr
    paths = dict(line.split("\t") for line in p.stdout.splitlines() if "\t" in line)
    return {k: v.strip() for k, v in paths.items()}


def test_files_and_names(converted):
    import gguf

    name = "omnisift-tiny"
    assert converted["llm"].endswith(f"{name}-f32.gguf") and converted["mmproj"].endswith(f"mmproj-{name}-f32.gguf")
    assert converted["sift_head"].endswith(f"{name}-sift-head.gguf")
    llm = gguf.GGUFReader(converted["llm"])
    assert not any("compressor" in t.name for t in llm.tensors)
    arch = llm.fields["general.architecture"]
    assert bytes(arch.parts[arch.data[0]]).decode() == "qwen2vl"
    head = gguf.GGUFReader(converted["sift_head"])
    dims = {k: int(head.fields[f"omnisift.{k}"].parts[-1][0]) for k in ("n_embd", "hidden", "n_head", "score_hidden")}
    assert dims == {"n_embd": 128, "hidden": HIDDEN, "n_head": N_HEAD, "score_hidden": SCORE_HIDDEN}
    q = gguf.GGUFReader(converted["quantized"])
    ftype = q.fields["general.file_type"]
    assert int(ftype.parts[ftype.data[0]][0]) == 15            # LLAMA_FTYPE_MOSTLY_Q4_K_M
    info, mm = pyomnisift.check_pair(converted["llm"], converted["mmproj"])
    assert mm.has_audio and mm.projector_type == "qwen2.5o"


@pytest.mark.parametrize("which", ["llm", "quantized"])
def test_converted_files_answer_a_video_prompt_with_vgas(converted, tmp_path, which):
    """f32 and Q4_K_M (the latter through the AMX-safe load on CPUs where llama.cpp's repacking crashes)."""
    clip = write_clip(tmp_path / "clip.mp4", seconds=2.0)
    llm = pyomnisift.Llama(converted[which], converted["mmproj"], n_ctx=4096, n_threads=2,
                           sift_head=converted["sift_head"], audio_selector="vgas", audio_retention=0.5,
                           video_retention=0.5)
    try:
        out = llm.create_chat_completion([{"role": "user", "content": [
            {"type": "video_url", "video_url": {"url": str(clip)}}, {"type": "text", "text": "What is this?"}]}],
            max_tokens=3, temperature=0)
    finally:
        llm.close()
    st = out["usage"]["omnisift"]
    assert out["object"] == "chat.completion"
    assert 0 < st["audio"]["tokens_kept"] < st["audio"]["tokens_in"]
    assert 0 < st["video"]["tokens_kept"] < st["video"]["tokens_in"]


def test_plain_qwen_checkpoint_gives_no_head(tmp_path):
    import make_hf_tiny_omni

    from pyomnisift.convert import has_selector

    assert not has_selector(make_hf_tiny_omni.make_hf_tiny_omni()["hf"])
