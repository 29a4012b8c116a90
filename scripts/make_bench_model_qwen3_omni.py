#!/usr/bin/env python3
"""The benchmark's Qwen3-Omni pair: Qwen3-Omni-30B-A3B geometry with random weights.

Speed does not depend on the values, so every tensor has the shape and the file type a user's
download has, and random contents. The tensor names, the per-layer tensor set, the dtypes and the
metadata keys are those llama.cpp's converter writes for Qwen3-Omni, read from the tiny converted
pair of scripts/make_hf_tiny_families.py --family qwen3-omni (the TEMPLATE; this script checks its
own tensor set and keys against it and stops on any difference), at the real dimensions.

- LLM (`qwen3-omni-bench-llm-{N}l-q4_0.gguf`): arch `qwen3vlmoe`, Qwen3-Omni-30B-A3B thinker
  geometry: width 2048, 32 query / 4 KV heads of 128 with q_norm / k_norm, MoE of 128 experts (8
  used) of FFN 768 in every layer (no dense FFN, no shared expert), vocabulary 151,936, M-RoPE
  sections 24/20/20/0, rope base 1e6, RMS eps 1e-6, n_deepstack_layers 0 (as llama.cpp's converter
  writes it; pyomnisift overrides it from the mmproj's 3 deepstack layers at load).
  **Layers: 36 of the real 48 by default** (`--n-layer 48` writes the full depth, `--n-layer 24`
  less). Measured at 36 layers (13.0 GB file) on the 2-core / 23.5-GiB machine of the benchmark:
  the process holds 18.0 GB RSS once loaded (15.0 GB anonymous: the weights repacked by llama.cpp's
  CPU_REPACK buffer type, both towers, compute buffers; 3.0 GB file-backed mmap pages) and peaks at
  20.9-22.1 GiB in the benchmark (scripts/bench.py --model 3omni, 10s_448, 9 runs on the idle machine
  of 2026-12-06; already 20.8-21.7 GiB loaded and warm: file-backed pages count; over the ~20 GB aim). Each further
  layer adds ~0.35 GB of Q4_0 weights (3 x 113 MB of experts + attention), so the full 48 would hold
  ~19.2 GB anonymous and peak near 24 GB: more than the machine has, next to the concurrent test
  runs. 36 is the first reduction tried (48, then 36, then 24): it loads and runs, peaking at 20.9-22.1
  GiB, over that aim (24 layers, not yet generated, would stay under it). Every
  per-token cost that is per layer (attention, experts, KV) is therefore 36/48 of the real model's;
  the embedding / output and the towers are full size.
  The big matrices (attention, experts, embedding, output) are Q4_0 written directly as raw blocks
  (random nibbles, a fixed f16 scale per block sized so that rows have ~1/sqrt(fan_in) weights): no
  f16 intermediate (an f16 file of the 30B would be 60 GB). The router (ffn_gate_inp) stays f32 as
  the converter writes it (random values: tokens spread over all experts, as in a real model); norms
  are f32 near 1. Tokenizer: the 0.5B bench model's Qwen2.5 BPE (151,936 entries, the same
  vocabulary as Qwen3), with Qwen3-Omni's added tokens (<think>, <|audio_start|> 151669,
  <|audio_end|> 151670, <|audio_pad|> 151675, ...) written over its [PAD...] entries 151665..151675,
  as single control tokens; the chat template is pyomnisift's Qwen3-Omni one.
- mmproj (`qwen3-omni-bench-mmproj-q8_0.gguf`): projectors `qwen3vl_merger` (vision) + `qwen3a`
  (audio). Vision tower of Qwen3-Omni's geometry: 27 blocks, width 1152, 16 heads, FFN 4304 (GELU,
  no gate), patch 16, spatial merge 2, temporal patch 2 (two Conv2D kernels), 2304 learned
  positions (48 x 48, image_size 768), output 2048, deepstack mergers after blocks 8 / 16 / 24
  (clip.vision.is_deepstack_layers; tensors v.deepstack.{8,16,24}.*). Audio tower of its geometry:
  three 3x3 stride-2 Conv2D of 480 channels over 128 mel bins, conv_out 480*16 -> 1280, 32 layers of
  width 1280, 20 heads, FFN 5120, 1500 sinusoidal positions, projector 1280 -> 1280 -> 2048 (n_window
  50 is not a GGUF key: libmtmd fixes it). Types as llama.cpp's converter at --outtype q8_0: Q8_0
  for 2-D matrices whose rows are a multiple of 32 (the vision FFN's down projection, rows of 4304,
  stays f16), convolutions (and conv_out) f16, norms / biases / positions f32.

To keep generation to a few minutes, the layers (and the blocks of a tower) share one random draw per
tensor shape: each layer still reads its own copy of the bytes, so the cost is a real model's.

    python scripts/make_bench_model_qwen3_omni.py [--out DIR] [--n-layer 48]   # prints the paths (cached)
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
from pathlib import Path

import numpy as np

from make_bench_model import _stamp
from make_bench_model_3b import _Draws, _q8_0_eligible

LLM = dict(n_layer=48, n_embd=2048, n_head=32, n_head_kv=4, head_dim=128, n_expert=128, n_expert_used=8,
           n_ff_exp=768, n_ff=768, n_vocab=151936, rope_base=1e6, eps=1e-6, context=65536,
           rope_sections=[24, 20, 20, 0])
BENCH_N_LAYER = 36      # the default depth written (see the docstring)
VISION = dict(n_embd=1152, n_ff=4304, n_layer=27, n_head=16, eps=1e-6, patch_size=16, image_size=768, n_pos=2304,
              spatial_merge=2, deepstack=[8, 16, 24])
AUDIO = dict(n_embd=1280, n_ff=5120, n_layer=32, n_head=20, eps=1e-5, n_mel=128, n_pos=1500, conv_ch=480)
N_PROJ = 2048
# Qwen3-Omni's added tokens beyond Qwen2.5's (ids 151665..151675): name, control token?
QWEN3_OMNI_ADDED = {151665: ("<tool_response>", False), 151666: ("</tool_response>", False),
                    151667: ("<think>", False), 151668: ("</think>", False),
                    151669: ("<|audio_start|>", True), 151670: ("<|audio_end|>", True),
                    151671: ("<tts_pad>", False), 151672: ("<tts_text_bos>", False),
                    151673: ("<tts_text_eod>", False), 151674: ("<tts_text_bos_single>", False),
                    151675: ("<|audio_pad|>", True)}
REQUIRED_SINGLE = {"<|im_start|>": 151644, "<|im_end|>": 151645, "<|vision_start|>": 151652,
                   "<|vision_end|>": 151653, "<|image_pad|>": 151655, "<|video_pad|>": 151656,
                   "<|audio_start|>": 151669, "<|audio_end|>": 151670, "<|audio_pad|>": 151675}
LLM_FILE = "qwen3-omni-bench-llm-{n}l-q4_0.gguf"
MMPROJ_FILE = "qwen3-omni-bench-mmproj-q8_0.gguf"
FORMAT_VERSION = 1
Q4_0_BLOCK = 18         # bytes per 32 weights: f16 scale + 16 bytes of nibbles


def template_dir() -> Path:
    from bench_assets import cache_dir

    return cache_dir() / "hf-tiny-families" / "qwen3-omni-seed0"


def _pattern(name: str) -> str:
    return re.sub(r"^(blk|v\.blk|a\.blk|v\.deepstack)\.\d+\.", r"\1.N.", name)


def read_template(path: Path) -> tuple[dict, dict]:
    """({tensor name pattern: GGML type name}, {key: value}) of a template GGUF."""
    from gguf import GGUFReader

    r = GGUFReader(str(path))
    tensors = {}
    for t in r.tensors:
        tensors.setdefault(_pattern(t.name), t.tensor_type.name)
    keys = {k: f for k, f in r.fields.items() if not k.startswith("GGUF.")}
    return tensors, keys


# --------------------------------------------------------------------------- raw Q4_0

class _Q4Draws:
    """Random Q4_0 blocks, one draw per (shape, fan_in), shared by every layer of that shape."""

    def __init__(self, seed: int):
        self.rng = np.random.default_rng(seed)
        self.cache: dict = {}

    def mat(self, *shape, fan_in=None) -> np.ndarray:
        """uint8 array (*shape[:-1], shape[-1] / 32 * 18): the Q4_0 bytes of a (*shape) matrix."""
        key = (shape, fan_in)
        if key not in self.cache:
            *rows, n = shape
            assert n % 32 == 0, shape
            nb = n // 32
            blocks = np.frombuffer(self.rng.bytes(int(np.prod(rows)) * nb * Q4_0_BLOCK), np.uint8)
            blocks = blocks.reshape(*rows, nb, Q4_0_BLOCK).copy()
            # nibbles uniform in 0..15 -> (q - 8) * d has std ~4.6 d: d makes it ~1/sqrt(fan_in)
            d = np.float16(1.0 / (4.6 * np.sqrt(fan_in or n)))
            blocks[..., :2] = np.frombuffer(d.tobytes(), np.uint8)
            self.cache[key] = blocks.reshape(*rows, nb * Q4_0_BLOCK)
        return self.cache[key]


def check_against(template: Path, mine: dict, skip: set = frozenset()) -> set:
    """Raises on a tensor-set or forced-type difference from the template; returns its keys."""
    t_tensors, t_keys = read_template(template)
    wanted = set(t_tensors) - set(skip)
    if set(mine) != wanted:
        raise ValueError(f"tensor set differs from the template {template}: {sorted(set(mine) ^ wanted)}")
    for p in wanted:   # the template is f32: what it forces otherwise (f16 convolutions) stays so here
        if t_tensors[p] != "F32" and mine[p] != t_tensors[p]:
            raise ValueError(f"{p}: template {t_tensors[p]}, here {mine[p]}")
    return set(t_keys) - {"general.architecture"}


def check_keys_written(w, keys: set) -> None:
    missing = keys - set(w.kv_data[0])
    if missing:
        raise ValueError(f"keys of the template not written: {sorted(missing)}")


# --------------------------------------------------------------------------- LLM

def tokenizer_keys_qwen3(w, src: Path, n_vocab: int, added: dict = QWEN3_OMNI_ADDED,
                         required: dict = REQUIRED_SINGLE) -> None:
    """The Qwen2.5 tokenizer of src with a Qwen3 model's added tokens (default: Qwen3-Omni's), eos / pad
    and pyomnisift's Qwen3 chat template."""
    from gguf import TokenType

    from pyomnisift._template import QWEN3_CHAT_TEMPLATE
    from pyomnisift.tiny_model import read_gguf_kv

    kv = read_gguf_kv(src)
    tokens = list(kv["tokenizer.ggml.tokens"])
    types = list(kv["tokenizer.ggml.token_type"])
    if len(tokens) != n_vocab:
        raise ValueError(f"{src}: {len(tokens)} tokens, expected {n_vocab}")
    for i, (tok, control) in added.items():
        if tokens[i] != tok and not tokens[i].startswith("[PAD"):
            raise ValueError(f"{src}: token {i} is {tokens[i]!r}, neither {tok!r} nor a [PAD] entry")
        tokens[i] = tok
        types[i] = int(TokenType.CONTROL if control else TokenType.USER_DEFINED)
    for tok, i in required.items():
        if tokens[i] != tok or types[i] != int(TokenType.CONTROL):
            raise ValueError(f"token {i}: {tokens[i]!r} (type {types[i]}), expected control token {tok!r}")
    w.add_tokenizer_model(kv["tokenizer.ggml.model"])
    w.add_tokenizer_pre(kv["tokenizer.ggml.pre"])
    w.add_token_list(tokens)
    w.add_token_types(types)
    w.add_token_merges(kv["tokenizer.ggml.merges"])
    w.add_eos_token_id(151645)        # <|im_end|>, as the converted Qwen3-Omni
    w.add_pad_token_id(151643)
    w.add_chat_template(QWEN3_CHAT_TEMPLATE)


def attention_tensors(b: str, q: _Q4Draws, r: _Draws, g: dict = LLM) -> list:
    """A Qwen3 layer's attention (with q_norm / k_norm) of geometry g, in the converter's order."""
    d, hd = g["n_embd"], g["head_dim"]
    nq, nkv = g["n_head"] * hd, g["n_head_kv"] * hd
    return [(b + "attn_k_norm.weight", r.vec(hd, 1.0), False),
            (b + "attn_k.weight", q.mat(nkv, d), True),
            (b + "attn_output.weight", q.mat(d, nq), True),
            (b + "attn_q_norm.weight", r.vec(hd, 1.0), False),
            (b + "attn_q.weight", q.mat(nq, d), True),
            (b + "attn_v.weight", q.mat(nkv, d), True)]


def llm_tensors(n_layer: int, seed: int = 0):
    """[(name, array, raw Q4_0?)] in the converter's order (output, token_embd, layers, output_norm)."""
    g, q, r = LLM, _Q4Draws(seed), _Draws(seed + 100)
    d, E, ffe = g["n_embd"], g["n_expert"], g["n_ff_exp"]
    out = [("output.weight", q.mat(g["n_vocab"], d), True), ("token_embd.weight", q.mat(g["n_vocab"], d, fan_in=1), True)]
    for i in range(n_layer):
        b = f"blk.{i}."
        out += [(b + "attn_norm.weight", r.vec(d, 1.0), False),
                (b + "ffn_down_exps.weight", q.mat(E, d, ffe), True),
                (b + "ffn_gate_exps.weight", q.mat(E, ffe, d), True),
                (b + "ffn_up_exps.weight", q.mat(E, ffe, d), True),
                (b + "ffn_gate_inp.weight", r.mat(E, d, dtype=np.float32), False),
                (b + "ffn_norm.weight", r.vec(d, 1.0), False)] + attention_tensors(b, q, r)
    out.append(("output_norm.weight", r.vec(d, 1.0), False))
    return out


def add_qwen3_llm_keys(w, g: dict, n_layer: int) -> None:
    """The hyperparameter keys a Qwen3 text model of geometry g has whatever its FFN (dense or MoE),
    and the Q4_0 file type."""
    w.add_block_count(n_layer)
    w.add_context_length(g["context"])
    w.add_embedding_length(g["n_embd"])
    w.add_feed_forward_length(g["n_ff"])
    w.add_head_count(g["n_head"])
    w.add_head_count_kv(g["n_head_kv"])
    w.add_rope_dimension_sections(g["rope_sections"])
    w.add_rope_freq_base(g["rope_base"])
    w.add_layer_norm_rms_eps(g["eps"])
    w.add_key_length(g["head_dim"])
    w.add_value_length(g["head_dim"])
    w.add_file_type(2)   # LLAMA_FTYPE_MOSTLY_Q4_0


def write_llm(tokenizer_src: Path, path: Path, n_layer: int, template: Path) -> None:
    from gguf import GGUFWriter

    g = LLM
    tensors = llm_tensors(n_layer)
    keys = check_against(template, {_pattern(n): ("Q4_0" if raw else "F32") for n, _, raw in tensors})
    a = "qwen3vlmoe"
    w = GGUFWriter(str(path), a)
    depth = "" if n_layer == g["n_layer"] else f", {n_layer} of its 48 layers"
    w.add_type("model")
    w.add_name(f"Qwen3-Omni-30B-A3B thinker geometry{depth}, random weights (pyomnisift bench)")
    w.add_size_label("128x0.8B")
    add_qwen3_llm_keys(w, g, n_layer)
    w.add_expert_count(g["n_expert"])
    w.add_expert_used_count(g["n_expert_used"])
    w.add_expert_feed_forward_length(g["n_ff_exp"])
    w.add_num_deepstack_layers(0)
    w.add_quantization_version(2)
    tokenizer_keys_qwen3(w, tokenizer_src, g["n_vocab"])
    check_keys_written(w, keys)
    write_tensors_q4(w, tensors)


def write_tensors_q4(w, tensors) -> None:
    """Adds (name, data, raw) tensors, raw ones as Q4_0 blocks, the others as they are, and writes the file."""
    from gguf import GGMLQuantizationType

    for name, data, raw in tensors:
        if raw:
            w.add_tensor(name, data, raw_dtype=GGMLQuantizationType.Q4_0)
        else:
            w.add_tensor(name, np.ascontiguousarray(data))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file(progress=False)
    w.close()


# --------------------------------------------------------------------------- mmproj

def vision_tensors(r: _Draws, v: dict = VISION, n_proj: int = N_PROJ) -> dict[str, np.ndarray]:
    """A Qwen3-VL vision tower (qwen3vl_merger) of geometry v (default: Qwen3-Omni's)."""
    d, ff, ps = v["n_embd"], v["n_ff"], v["patch_size"]
    merged = 4 * d
    fan = 3 * ps * ps * 2
    t = {"v.patch_embd.weight": r.mat(d, 3, ps, ps, fan_in=fan),
         "v.patch_embd.weight.1": r.mat(d, 3, ps, ps, fan_in=fan + 1),
         "v.patch_embd.bias": r.vec(d),
         "v.position_embd.weight": r.mat(v["n_pos"], d, fan_in=1, dtype=np.float32) * np.float32(0.02)}
    for i in range(v["n_layer"]):
        b = f"v.blk.{i}."
        t |= {b + "ln1.weight": r.vec(d, 1.0), b + "ln1.bias": r.vec(d),
              b + "attn_qkv.weight": r.mat(3 * d, d), b + "attn_qkv.bias": r.vec(3 * d),
              b + "attn_out.weight": r.mat(d, d), b + "attn_out.bias": r.vec(d),
              b + "ln2.weight": r.vec(d, 1.0), b + "ln2.bias": r.vec(d),
              b + "ffn_up.weight": r.mat(ff, d), b + "ffn_up.bias": r.vec(ff),
              b + "ffn_down.weight": r.mat(d, ff), b + "ffn_down.bias": r.vec(d)}
    t |= {"v.post_ln.weight": r.vec(d, 1.0), "v.post_ln.bias": r.vec(d),
          "mm.0.weight": r.mat(merged, merged), "mm.0.bias": r.vec(merged),
          "mm.2.weight": r.mat(n_proj, merged), "mm.2.bias": r.vec(n_proj)}
    for i in v["deepstack"]:
        b = f"v.deepstack.{i}."
        t |= {b + "norm.weight": r.vec(merged, 1.0), b + "norm.bias": r.vec(merged),
              b + "fc1.weight": r.mat(merged, merged), b + "fc1.bias": r.vec(merged),
              b + "fc2.weight": r.mat(n_proj, merged), b + "fc2.bias": r.vec(n_proj)}
    return t


def audio_tensors(r: _Draws) -> dict[str, np.ndarray]:
    from pyomnisift.tiny_model import _sinusoids

    a = AUDIO
    d, ff, ch = a["n_embd"], a["n_ff"], a["conv_ch"]
    n_freq = a["n_mel"]
    for _ in range(3):
        n_freq = (n_freq + 1) // 2        # 128 -> 64 -> 32 -> 16
    t = {"a.position_embd.weight": _sinusoids(a["n_pos"], d),
         "a.conv2d.1.weight": r.mat(ch, 1, 3, 3, fan_in=9), "a.conv2d.1.bias": r.vec(ch)[:, None, None],
         "a.conv2d.2.weight": r.mat(ch, ch, 3, 3, fan_in=9 * ch), "a.conv2d.2.bias": r.vec(ch + 1)[:ch, None, None],
         "a.conv2d.3.weight": r.mat(ch, ch, 3, 3, fan_in=9 * ch + 1), "a.conv2d.3.bias": r.vec(ch + 2)[:ch, None, None],
         "a.conv_out.weight": r.mat(d, ch * n_freq)}
    for i in range(a["n_layer"]):
        b = f"a.blk.{i}."
        t |= {b + "ln1.weight": r.vec(d, 1.0), b + "ln1.bias": r.vec(d),
              b + "attn_q.weight": r.mat(d, d), b + "attn_q.bias": r.vec(d),
              b + "attn_k.weight": r.mat(d, d), b + "attn_k.bias": r.vec(d),
              b + "attn_v.weight": r.mat(d, d), b + "attn_v.bias": r.vec(d),
              b + "attn_out.weight": r.mat(d, d), b + "attn_out.bias": r.vec(d),
              b + "ln2.weight": r.vec(d, 1.0), b + "ln2.bias": r.vec(d),
              b + "ffn_up.weight": r.mat(ff, d), b + "ffn_up.bias": r.vec(ff),
              b + "ffn_down.weight": r.mat(d, ff), b + "ffn_down.bias": r.vec(d)}
    t |= {"a.post_ln.weight": r.vec(d, 1.0), "a.post_ln.bias": r.vec(d),
          "mm.a.mlp.1.weight": r.mat(d, d), "mm.a.mlp.1.bias": r.vec(d),
          "mm.a.mlp.2.weight": r.mat(N_PROJ, d), "mm.a.mlp.2.bias": r.vec(N_PROJ)}
    return t


def _type_of(name: str, arr: np.ndarray) -> str:
    """As llama.cpp's converter at --outtype q8_0 for this pair (convolutions forced f16)."""
    if ".conv" in name and name.endswith(".weight"):
        return "F16"
    if _q8_0_eligible(name, arr):
        return "Q8_0"
    if arr.ndim == 1 or "position_embd" in name or name.endswith(".bias"):
        return "F32"
    return "F16"


def add_vision_keys(w, v: dict, n_proj: int) -> None:
    """The clip.vision.* keys of a Qwen3-VL vision tower's geometry v, as the converter writes them."""
    w.add_bool("clip.has_vision_encoder", True)
    w.add_uint32("clip.vision.projection_dim", n_proj)
    w.add_uint32("clip.vision.image_size", v["image_size"])
    w.add_uint32("clip.vision.patch_size", v["patch_size"])
    w.add_uint32("clip.vision.embedding_length", v["n_embd"])
    w.add_uint32("clip.vision.feed_forward_length", v["n_ff"])
    w.add_uint32("clip.vision.block_count", v["n_layer"])
    w.add_uint32("clip.vision.attention.head_count", v["n_head"])
    w.add_array("clip.vision.image_mean", [0.5, 0.5, 0.5])
    w.add_array("clip.vision.image_std", [0.5, 0.5, 0.5])


def write_mmproj(path: Path, template: Path, seed: int = 1) -> None:
    from gguf import GGUFWriter

    v, a = VISION, AUDIO
    r = _Draws(seed)
    tensors = vision_tensors(r) | audio_tensors(r)
    types = {n: _type_of(n, x) for n, x in tensors.items()}
    keys = check_against(template, {_pattern(n): t for n, t in types.items()})
    w = GGUFWriter(str(path), "clip")
    w.add_type("mmproj")
    w.add_name("Qwen3-Omni-30B-A3B towers geometry, random weights (pyomnisift bench, q8_0)")
    w.add_size_label("1.2B")
    w.add_file_type(7)   # MOSTLY_Q8_0
    add_vision_keys(w, v, N_PROJ)
    w.add_bool("clip.has_audio_encoder", True)
    w.add_uint32("clip.audio.projection_dim", N_PROJ)
    w.add_uint32("clip.audio.embedding_length", a["n_embd"])
    w.add_uint32("clip.audio.feed_forward_length", a["n_ff"])
    w.add_uint32("clip.audio.block_count", a["n_layer"])
    w.add_uint32("clip.audio.attention.head_count", a["n_head"])
    w.add_uint32("clip.audio.num_mel_bins", a["n_mel"])
    w.add_float32("clip.audio.attention.layer_norm_epsilon", a["eps"])
    w.add_bool("clip.use_gelu", True)
    w.add_uint32("clip.vision.spatial_merge_size", v["spatial_merge"])
    w.add_float32("clip.vision.attention.layer_norm_epsilon", v["eps"])
    w.add_array("clip.vision.is_deepstack_layers", [i in v["deepstack"] for i in range(v["n_layer"])])
    w.add_string("clip.vision.projector_type", "qwen3vl_merger")
    w.add_string("clip.audio.projector_type", "qwen3a")
    w.add_quantization_version(2)
    check_keys_written(w, keys)
    write_tensors_q8(w, tensors, types)


def write_tensors_q8(w, tensors: dict, types: dict) -> None:
    """Adds the mmproj's tensors in the converter's types at --outtype q8_0 (Q8_0, F16 or F32) and
    writes the file."""
    from gguf import GGMLQuantizationType
    from gguf.quants import quantize

    quantized: dict = {}
    for name, data in tensors.items():
        t = types[name]
        if t == "Q8_0":
            key = id(data)   # shared draws are quantized once
            if key not in quantized:
                quantized[key] = quantize(data.astype(np.float32), GGMLQuantizationType.Q8_0)
            w.add_tensor(name, quantized[key], raw_dtype=GGMLQuantizationType.Q8_0)
        else:
            w.add_tensor(name, np.ascontiguousarray(data.astype(np.float16 if t == "F16" else np.float32)))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


# --------------------------------------------------------------------------- cache

def make_bench_model_qwen3_omni(out_dir: Path | None = None, n_layer: int = BENCH_N_LAYER,
                                tokenizer: str | None = None, template: str | None = None) -> dict:
    """Builds (once, cached) the pair; returns {"llm", "mmproj", "n_layer", "generation_s"}.
    tokenizer: a GGUF with the Qwen2.5 tokenizer keys instead of the 0.5B bench model. template: the
    directory of the tiny converted Qwen3-Omni pair (default: make_hf_tiny_families' cache)."""
    import time

    from bench_assets import cache_dir, fetch_bench_model

    src = Path(tokenizer) if tokenizer else fetch_bench_model()
    tdir = Path(template) if template else template_dir()
    if not (tdir / "llm.gguf").is_file():
        raise FileNotFoundError(f"{tdir}/llm.gguf: run scripts/make_hf_tiny_families.py --family qwen3-omni first")
    out = Path(out_dir) if out_dir else cache_dir() / "bench"
    out.mkdir(parents=True, exist_ok=True)
    stamp_file = out / "qwen3-omni-bench.stamp"
    stamp = _stamp(FORMAT_VERSION, LLM, VISION, AUDIO, N_PROJ, src.stat().st_size)
    llm = out / LLM_FILE.format(n=n_layer)
    mmproj = out / MMPROJ_FILE
    done = json.loads(stamp_file.read_text()) if stamp_file.is_file() else {}
    if done.get("stamp") != stamp:
        done = {"stamp": stamp}
    key = f"llm-{n_layer}"
    if not (done.get(key) and llm.is_file()):
        t0 = time.time()
        tmp = llm.with_suffix(".tmp")
        write_llm(src, tmp, n_layer, tdir / "llm.gguf")
        os.replace(tmp, llm)
        done[key] = round(time.time() - t0, 1)
        stamp_file.write_text(json.dumps(done))
    if not (done.get("mmproj") and mmproj.is_file()):
        t0 = time.time()
        tmp = mmproj.with_suffix(".tmp")
        write_mmproj(tmp, tdir / "mmproj.gguf")
        os.replace(tmp, mmproj)
        done["mmproj"] = round(time.time() - t0, 1)
        stamp_file.write_text(json.dumps(done))
    return {"llm": llm, "mmproj": mmproj, "n_layer": n_layer,
            "generation_s": {"llm": done[key], "mmproj": done["mmproj"]}}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", help="output directory (default: the pyomnisift cache's bench/)")
    p.add_argument("--n-layer", type=int, default=BENCH_N_LAYER, help="LLM depth (Qwen3-Omni's: 48)")
    p.add_argument("--tokenizer", help="a GGUF with the Qwen2.5 tokenizer (default: the 0.5B bench model)")
    p.add_argument("--template", help="directory of the tiny converted Qwen3-Omni pair (llm.gguf, mmproj.gguf)")
    args = p.parse_args(argv)
    r = make_bench_model_qwen3_omni(Path(args.out) if args.out else None, args.n_layer, args.tokenizer, args.template)
    print(r["llm"])
    print(r["mmproj"])
    print("generation s:", r["generation_s"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
