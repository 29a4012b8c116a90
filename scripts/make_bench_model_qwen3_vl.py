#!/usr/bin/env python3
"""The benchmark's Qwen3-VL pair: Qwen3-VL-4B-Instruct geometry with random weights.

As scripts/make_bench_model_qwen3_omni.py does for Qwen3-Omni: every tensor has the shape and file type
a user's download has, random contents; the tensor names, the per-layer tensor set and the metadata
keys are those llama.cpp's converter writes for Qwen3-VL, checked against the tiny converted pair of
scripts/make_hf_tiny_families.py --family qwen3-vl (the TEMPLATE), at the real dimensions.

- LLM (`qwen3-vl-4b-bench-llm-q4_0.gguf`): arch `qwen3vl`, Qwen3-VL-4B-Instruct's text model: 36
  layers of width 2560, 32 query / 8 KV heads of 128 with q_norm / k_norm, dense SwiGLU FFN 9728,
  vocabulary 151,936 with tied embeddings (the converter then writes no output.weight: the one
  difference from the untied tiny template, allowed here), interleaved M-RoPE sections 24/20/20/0,
  rope base 5e6, RMS eps 1e-6, n_deepstack_layers 3 (the converter writes it for Qwen3-VL). All 36
  layers: it fits this machine (peak RSS 5.4 GiB in the benchmark). The big matrices are Q4_0
  written as raw blocks (as the Qwen3-Omni pair; the popular downloads are Q4_K_M, not measured
  here); norms f32 near 1.
  Tokenizer: the 0.5B bench model's Qwen2.5 BPE (the same 151,936-entry vocabulary) with Qwen3-VL's
  added tokens (<tool_response>, </tool_response>, <think>, </think>) over its [PAD...] entries
  151665..151668; the chat template is pyomnisift's Qwen3 one.
- mmproj (`qwen3-vl-4b-bench-mmproj-q8_0.gguf`): projector `qwen3vl_merger`, Qwen3-VL-4B's vision
  tower: 24 blocks of width 1024, 16 heads, FFN 4096 (GELU), patch 16, spatial merge 2, temporal patch
  2, 2304 learned positions, output 2560, deepstack mergers after blocks 5 / 11 / 17. Types as llama.cpp's
  converter at --outtype q8_0 (as the Qwen3-Omni pair).

    python scripts/make_bench_model_qwen3_vl.py [--out DIR]   # prints the paths (cached)
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from make_bench_model import _stamp
from make_bench_model_3b import _Draws
from make_bench_model_qwen3_omni import (_Q4Draws, _pattern, _type_of, add_qwen3_llm_keys, add_vision_keys,
                                         attention_tensors, check_against, check_keys_written, tokenizer_keys_qwen3,
                                         vision_tensors, write_tensors_q4, write_tensors_q8)

LLM = dict(n_layer=36, n_embd=2560, n_head=32, n_head_kv=8, head_dim=128, n_ff=9728, n_vocab=151936,
           rope_base=5e6, eps=1e-6, context=262144, rope_sections=[24, 20, 20, 0])
VISION = dict(n_embd=1024, n_ff=4096, n_layer=24, n_head=16, eps=1e-6, patch_size=16, image_size=768, n_pos=2304,
              spatial_merge=2, deepstack=[5, 11, 17])
N_PROJ = 2560
# Qwen3-VL's added tokens beyond Qwen2.5's: name, control token?
QWEN3_VL_ADDED = {151665: ("<tool_response>", False), 151666: ("</tool_response>", False),
                  151667: ("<think>", False), 151668: ("</think>", False)}
REQUIRED_SINGLE = {"<|im_start|>": 151644, "<|im_end|>": 151645, "<|vision_start|>": 151652,
                   "<|vision_end|>": 151653, "<|image_pad|>": 151655, "<|video_pad|>": 151656}
TIED_ONLY = {"output.weight"}   # in the untied tiny template, not written for a tied model
LLM_FILE = "qwen3-vl-4b-bench-llm-q4_0.gguf"
MMPROJ_FILE = "qwen3-vl-4b-bench-mmproj-q8_0.gguf"
FORMAT_VERSION = 1


def template_dir() -> Path:
    from bench_assets import cache_dir

    return cache_dir() / "hf-tiny-families" / "qwen3-vl-seed0"


def llm_tensors(seed: int = 0):
    """[(name, array, raw Q4_0?)] in the converter's order (token_embd, layers, output_norm)."""
    g, q, r = LLM, _Q4Draws(seed), _Draws(seed + 100)
    d, ff = g["n_embd"], g["n_ff"]
    out = [("token_embd.weight", q.mat(g["n_vocab"], d, fan_in=1), True)]
    for i in range(g["n_layer"]):
        b = f"blk.{i}."
        out += [(b + "attn_norm.weight", r.vec(d, 1.0), False),
                (b + "ffn_down.weight", q.mat(d, ff), True),
                (b + "ffn_gate.weight", q.mat(ff, d), True),
                (b + "ffn_up.weight", q.mat(ff, d), True),
                (b + "ffn_norm.weight", r.vec(d, 1.0), False)] + attention_tensors(b, q, r, LLM)
    out.append(("output_norm.weight", r.vec(d, 1.0), False))
    return out


def write_llm(tokenizer_src: Path, path: Path, template: Path) -> None:
    from gguf import GGUFWriter

    g = LLM
    tensors = llm_tensors()
    keys = check_against(template, {_pattern(n): ("Q4_0" if raw else "F32") for n, _, raw in tensors}, TIED_ONLY)
    w = GGUFWriter(str(path), "qwen3vl")
    w.add_type("model")
    w.add_name("Qwen3-VL-4B-Instruct geometry, random weights (pyomnisift bench)")
    w.add_size_label("4B")
    add_qwen3_llm_keys(w, g, g["n_layer"])
    w.add_num_deepstack_layers(len(VISION["deepstack"]))
    w.add_quantization_version(2)
    tokenizer_keys_qwen3(w, tokenizer_src, g["n_vocab"], QWEN3_VL_ADDED, REQUIRED_SINGLE)
    check_keys_written(w, keys)
    write_tensors_q4(w, tensors)


def write_mmproj(path: Path, template: Path, seed: int = 1) -> None:
    from gguf import GGUFWriter

    v = VISION
    tensors = vision_tensors(_Draws(seed), v, N_PROJ)
    types = {n: _type_of(n, x) for n, x in tensors.items()}
    keys = check_against(template, {_pattern(n): t for n, t in types.items()})
    w = GGUFWriter(str(path), "clip")
    w.add_type("mmproj")
    w.add_name("Qwen3-VL-4B-Instruct vision tower geometry, random weights (pyomnisift bench, q8_0)")
    w.add_size_label("0.4B")
    w.add_file_type(7)   # MOSTLY_Q8_0
    add_vision_keys(w, v, N_PROJ)
    w.add_string("clip.projector_type", "qwen3vl_merger")
    w.add_bool("clip.use_gelu", True)
    w.add_uint32("clip.vision.spatial_merge_size", v["spatial_merge"])
    w.add_float32("clip.vision.attention.layer_norm_epsilon", v["eps"])
    w.add_array("clip.vision.is_deepstack_layers", [i in v["deepstack"] for i in range(v["n_layer"])])
    w.add_quantization_version(2)
    check_keys_written(w, keys)
    write_tensors_q8(w, tensors, types)


def make_bench_model_qwen3_vl(out_dir: Path | None = None, tokenizer: str | None = None,
                              template: str | None = None) -> dict:
    """Builds (once, cached) the pair; returns {"llm", "mmproj", "generation_s"}. tokenizer: a GGUF with
    the Qwen2.5 tokenizer keys instead of the 0.5B bench model. template: the directory of the tiny
    converted Qwen3-VL pair (default: make_hf_tiny_families' cache)."""
    import time

    from bench_assets import cache_dir, fetch_bench_model

    src = Path(tokenizer) if tokenizer else fetch_bench_model()
    tdir = Path(template) if template else template_dir()
    if not (tdir / "llm.gguf").is_file():
        raise FileNotFoundError(f"{tdir}/llm.gguf: run scripts/make_hf_tiny_families.py --family qwen3-vl first")
    out = Path(out_dir) if out_dir else cache_dir() / "bench"
    out.mkdir(parents=True, exist_ok=True)
    stamp_file = out / "qwen3-vl-bench.stamp"
    stamp = _stamp(FORMAT_VERSION, LLM, VISION, N_PROJ, src.stat().st_size)
    done = json.loads(stamp_file.read_text()) if stamp_file.is_file() else {}
    if done.get("stamp") != stamp:
        done = {"stamp": stamp}
    paths = {"llm": out / LLM_FILE, "mmproj": out / MMPROJ_FILE}
    writers = {"llm": lambda p: write_llm(src, p, tdir / "llm.gguf"),
               "mmproj": lambda p: write_mmproj(p, tdir / "mmproj.gguf")}
    for key, path in paths.items():
        if done.get(key) and path.is_file():
            continue
        t0 = time.time()
        tmp = path.with_suffix(".tmp")
        writers[key](tmp)
        os.replace(tmp, path)
        done[key] = round(time.time() - t0, 1)
        stamp_file.write_text(json.dumps(done))
    return dict(paths, generation_s={k: done[k] for k in paths})


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", help="output directory (default: the pyomnisift cache's bench/)")
    p.add_argument("--tokenizer", help="a GGUF with the Qwen2.5 tokenizer (default: the 0.5B bench model)")
    p.add_argument("--template", help="directory of the tiny converted Qwen3-VL pair (llm.gguf, mmproj.gguf)")
    args = p.parse_args(argv)
    r = make_bench_model_qwen3_vl(Path(args.out) if args.out else None, args.tokenizer, args.template)
    print(r["llm"])
    print(r["mmproj"])
    print("generation s:", r["generation_s"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
