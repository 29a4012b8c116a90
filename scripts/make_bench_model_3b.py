#!/usr/bin/env python3
"""The benchmark's second pair: Qwen2.5-Omni-3B geometry with random weights.

Speed does not depend on the values, so every tensor has the shape and the file type a user's
download has, and random contents; nothing is downloaded but the 0.5B bench model, whose Qwen2.5
tokenizer (vocabulary 151,936, the same as the 3B's) the LLM reuses.

- LLM (`omni-bench-3b-llm-q4_k_m.gguf`, ~1.9 GB): arch `qwen2vl`, Qwen2.5-3B shapes (36 layers,
  width 2048, 16 query / 2 KV heads of 128, FFN 11008, q/k/v biases, tied embeddings, M-RoPE
  sections 16/24/24/0, rope base 1e6), written in f16 and quantized to Q4_K_M with
  llama-cpp-python's `llama_model_quantize` (llama.cpp's own mix: Q6_K for some attn_v / ffn_down
  and the embedding's neighbours); the f16 file is deleted afterwards.
- Qwen2.5-VL-3B (`--family vl`): the same LLM (Qwen2.5-VL-3B's language model has Qwen2.5-3B's shapes)
  and `vl-bench-3b-mmproj-q8_0.gguf`, the same vision tower alone under projector `qwen2.5vl_merger`
  (Qwen2.5-VL-3B's tower has Qwen2.5-Omni-3B's geometry).
- mmproj (`omni-bench-3b-mmproj-{f16,q8_0}.gguf`, projector `qwen2.5o`, projecting to 2048):
  vision tower of Qwen2.5-Omni's geometry (32 blocks, width 1280, 16 heads, FFN 3420, patch 14,
  spatial merge 2, temporal patch 2, window attention of 112 px with full attention in blocks
  7/15/23/31, i.e. n_wa_pattern 8 as llama.cpp's qwen2.5vl graph reads it: `(il + 1) % 8 == 0`);
  audio tower of its geometry (32 layers, width 1280, 20 heads, FFN 5120, 128 mel bins, 1500
  positions). The q8_0 file stores the 2-D matrices as Q8_0 where the row length allows (a multiple
  of 32: the vision FFN's down projection, rows of 3420, stays f16, as llama.cpp's converter leaves
  it), convolutions f16 and norms / biases / positions f32, as llama.cpp's converter writes them.

To keep generation to a few minutes, the blocks of a tower (and the LLM's layers) share one random
draw per tensor shape: each layer still reads its own copy of the bytes, so the cost is a real model's.

    python scripts/make_bench_model_3b.py [--out DIR]   # prints the paths (cached after the first run)
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import numpy as np

from make_bench_model import TEMPORAL_PATCH, _stamp, qwen2vl_keys, tokenizer_keys
from pyomnisift.tiny_model import _sinusoids, write_omni_mmproj_keys

LLM = dict(n_layer=36, n_embd=2048, n_head=16, n_head_kv=2, n_ff=11008, n_vocab=151936,
           rope_base=1e6, eps=1e-6, context=32768, rope_sections=[16, 24, 24, 0])
VISION = dict(n_embd=1280, n_ff=3420, n_layer=32, n_head=16, eps=1e-6, image_size=560, patch_size=14,
              n_wa_pattern=8)
AUDIO = dict(n_embd=1280, n_ff=5120, n_layer=32, n_head=20, eps=1e-5, n_mel=128, n_pos=1500)
LLM_FILE = "omni-bench-3b-llm-q4_k_m.gguf"
MMPROJ_FILES = {"f16": "omni-bench-3b-mmproj-f16.gguf", "q8_0": "omni-bench-3b-mmproj-q8_0.gguf",
                "vl-q8_0": "vl-bench-3b-mmproj-q8_0.gguf"}
FORMAT_VERSION = 1


class _Draws:
    """One random draw per (shape, kind), shared by every layer that has that shape."""

    def __init__(self, seed: int):
        self.rng = np.random.default_rng(seed)
        self.cache: dict = {}

    def mat(self, *shape, fan_in=None, dtype=np.float16):
        key = ("mat", shape, fan_in, dtype)
        if key not in self.cache:
            scale = 1.0 / np.sqrt(fan_in or shape[-1])
            self.cache[key] = (self.rng.standard_normal(shape, dtype=np.float32) * scale).astype(dtype)
        return self.cache[key]

    def vec(self, n, centre=0.0):
        key = ("vec", n, centre)
        if key not in self.cache:
            self.cache[key] = (centre + 0.02 * self.rng.standard_normal(n, dtype=np.float32)).astype(np.float32)
        return self.cache[key]


# --------------------------------------------------------------------------- LLM

def write_llm_f16(tokenizer_src: Path, path: Path, seed: int = 0) -> None:
    from gguf import GGUFWriter

    g, r = LLM, _Draws(seed)
    d, ff, hd = g["n_embd"], g["n_ff"], g["n_embd"] // g["n_head"]
    kv = g["n_head_kv"] * hd
    w = GGUFWriter(str(path), "qwen2vl")
    qwen2vl_keys(w, "Qwen2.5-Omni-3B thinker geometry, random weights (pyomnisift bench)", 1,   # MOSTLY_F16
                 **{k: g[k] for k in ("n_layer", "context", "n_embd", "n_ff", "n_head", "n_head_kv", "rope_base",
                                      "eps", "rope_sections")})
    tokenizer_keys(w, tokenizer_src, n_vocab=g["n_vocab"])
    w.add_tensor("token_embd.weight", r.mat(g["n_vocab"], d, fan_in=1))
    w.add_tensor("output_norm.weight", r.vec(d, 1.0))
    for i in range(g["n_layer"]):
        b = f"blk.{i}."
        w.add_tensor(b + "attn_norm.weight", r.vec(d, 1.0))
        w.add_tensor(b + "attn_q.weight", r.mat(d, d))
        w.add_tensor(b + "attn_q.bias", r.vec(d))
        w.add_tensor(b + "attn_k.weight", r.mat(kv, d))
        w.add_tensor(b + "attn_k.bias", r.vec(kv))
        w.add_tensor(b + "attn_v.weight", r.mat(kv, d))
        w.add_tensor(b + "attn_v.bias", r.vec(kv))
        w.add_tensor(b + "attn_output.weight", r.mat(d, d))
        w.add_tensor(b + "ffn_norm.weight", r.vec(d, 1.0))
        w.add_tensor(b + "ffn_gate.weight", r.mat(ff, d))
        w.add_tensor(b + "ffn_up.weight", r.mat(ff, d))
        w.add_tensor(b + "ffn_down.weight", r.mat(d, ff))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def quantize_q4_k_m(src: Path, dst: Path, n_threads: int) -> None:
    import llama_cpp

    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = llama_cpp.LLAMA_FTYPE_MOSTLY_Q4_K_M
    params.nthread = n_threads
    if llama_cpp.llama_model_quantize(os.fsencode(src), os.fsencode(dst), params) != 0:
        raise RuntimeError(f"llama_model_quantize failed on {src}")


# --------------------------------------------------------------------------- mmproj

def vision_tensors(n_proj: int, r: _Draws) -> dict[str, np.ndarray]:
    v = VISION
    d, ff, ps = v["n_embd"], v["n_ff"], v["patch_size"]
    merged = 4 * d
    fan = 3 * ps * ps * TEMPORAL_PATCH
    t = {"v.patch_embd.weight": r.mat(d, 3, ps, ps, fan_in=fan),
         "v.patch_embd.weight.1": r.mat(d, 3, ps, ps, fan_in=fan + 1)}
    for i in range(v["n_layer"]):
        b = f"v.blk.{i}."
        t |= {b + "ln1.weight": r.vec(d, 1.0),
              b + "attn_q.weight": r.mat(d, d), b + "attn_q.bias": r.vec(d),
              b + "attn_k.weight": r.mat(d, d), b + "attn_k.bias": r.vec(d),
              b + "attn_v.weight": r.mat(d, d), b + "attn_v.bias": r.vec(d),
              b + "attn_out.weight": r.mat(d, d), b + "attn_out.bias": r.vec(d),
              b + "ln2.weight": r.vec(d, 1.0),
              b + "ffn_gate.weight": r.mat(ff, d), b + "ffn_gate.bias": r.vec(ff),
              b + "ffn_up.weight": r.mat(ff, d), b + "ffn_up.bias": r.vec(ff),
              b + "ffn_down.weight": r.mat(d, ff), b + "ffn_down.bias": r.vec(d)}
    t |= {"v.post_ln.weight": r.vec(d, 1.0),
          "mm.0.weight": r.mat(merged, merged), "mm.0.bias": r.vec(merged),
          "mm.2.weight": r.mat(n_proj, merged), "mm.2.bias": r.vec(n_proj)}
    return t


def audio_tensors(n_proj: int, r: _Draws) -> dict[str, np.ndarray]:
    a = AUDIO
    d, ff = a["n_embd"], a["n_ff"]
    t = {"a.conv1d.1.weight": r.mat(d, a["n_mel"], 3, fan_in=3 * a["n_mel"]),
         "a.conv1d.1.bias": r.vec(d)[:, None],
         "a.conv1d.2.weight": r.mat(d, d, 3, fan_in=3 * d),
         "a.conv1d.2.bias": r.vec(d + 1)[:d, None],
         "a.position_embd.weight": _sinusoids(a["n_pos"], d)}
    for i in range(a["n_layer"]):
        b = f"a.blk.{i}."
        t |= {b + "ln1.weight": r.vec(d, 1.0), b + "ln1.bias": r.vec(d),
              b + "attn_q.weight": r.mat(d, d), b + "attn_q.bias": r.vec(d),
              b + "attn_k.weight": r.mat(d, d),
              b + "attn_v.weight": r.mat(d, d), b + "attn_v.bias": r.vec(d),
              b + "attn_out.weight": r.mat(d, d), b + "attn_out.bias": r.vec(d),
              b + "ln2.weight": r.vec(d, 1.0), b + "ln2.bias": r.vec(d),
              b + "ffn_up.weight": r.mat(ff, d), b + "ffn_up.bias": r.vec(ff),
              b + "ffn_down.weight": r.mat(d, ff), b + "ffn_down.bias": r.vec(d)}
    t |= {"a.post_ln.weight": r.vec(d, 1.0), "a.post_ln.bias": r.vec(d),
          "mm.a.fc.weight": r.mat(n_proj, d), "mm.a.fc.bias": r.vec(n_proj)}
    return t


def _q8_0_eligible(name: str, arr: np.ndarray) -> bool:
    """As llama.cpp's converter at --outtype q8_0: 2-D weight matrices whose rows split into blocks."""
    return (arr.ndim == 2 and name.endswith(".weight") and "position_embd" not in name
            and arr.shape[-1] % 32 == 0)


def write_mmproj(path: Path, n_proj: int, variant: str, seed: int = 1) -> None:
    from gguf import GGMLQuantizationType, GGUFWriter
    from gguf.quants import quantize

    r = _Draws(seed)
    writer = GGUFWriter(str(path), "clip")
    vl = variant.startswith("vl-")
    if vl:   # Qwen2.5-VL: the vision tower alone
        write_omni_mmproj_keys(writer, f"vl-bench-3b ({variant}; Qwen2.5-VL-3B tower geometry, random)",
                               VISION, None, n_proj, VISION["n_wa_pattern"], projector="qwen2.5vl_merger")
        tensors = vision_tensors(n_proj, r)
    else:
        write_omni_mmproj_keys(writer, f"omni-bench-3b ({variant}; Qwen2.5-Omni-3B tower geometry, random)",
                               VISION, AUDIO, n_proj, VISION["n_wa_pattern"])
        tensors = vision_tensors(n_proj, r) | audio_tensors(n_proj, r)
    q8 = variant.endswith("q8_0")
    writer.add_file_type(7 if q8 else 1)
    quantized: dict = {}
    for name, data in tensors.items():
        if q8 and _q8_0_eligible(name, data):
            key = id(data)   # shared draws are quantized once
            if key not in quantized:
                quantized[key] = quantize(data.astype(np.float32), GGMLQuantizationType.Q8_0)
            writer.add_tensor(name, quantized[key], raw_dtype=GGMLQuantizationType.Q8_0)
        else:
            writer.add_tensor(name, np.ascontiguousarray(data))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


# --------------------------------------------------------------------------- cache

def make_bench_model_3b(out_dir: Path | None = None, n_threads: int = 2, tokenizer: str | None = None,
                        vl: bool = False) -> dict:
    """Builds (once, cached) the pair; returns {"llm", "mmproj": {variant: path}}. tokenizer: a GGUF
    holding the Qwen2.5 tokenizer keys (scripts/gpu_bundle.sh extracts one), instead of the 0.5B
    bench model, where that cannot be downloaded. vl: also the Qwen2.5-VL mmproj ("vl-q8_0")."""
    from bench_assets import cache_dir, fetch_bench_model

    src = Path(tokenizer) if tokenizer else fetch_bench_model()
    out = Path(out_dir) if out_dir else cache_dir() / "bench"
    out.mkdir(parents=True, exist_ok=True)
    stamp_file = out / "omni-bench-3b.stamp"
    stamp = _stamp(FORMAT_VERSION, LLM, VISION, AUDIO, src.stat().st_size)
    llm = out / LLM_FILE
    mmprojs = {k: out / v for k, v in MMPROJ_FILES.items() if vl or not k.startswith("vl-")}
    done = json.loads(stamp_file.read_text()) if stamp_file.is_file() else {}
    if done.get("stamp") != stamp:
        done = {"stamp": stamp}
    if not (done.get("llm") and llm.is_file()):
        f16 = out / "omni-bench-3b-llm-f16.tmp"
        write_llm_f16(src, f16)
        tmp = llm.with_suffix(".tmp")
        try:
            quantize_q4_k_m(f16, tmp, n_threads)
        finally:
            f16.unlink(missing_ok=True)
        os.replace(tmp, llm)
        done["llm"] = True
        stamp_file.write_text(json.dumps(done))
    for variant, path in mmprojs.items():
        if not (done.get(variant) and path.is_file()):
            tmp = path.with_suffix(".tmp")
            write_mmproj(tmp, LLM["n_embd"], variant)
            os.replace(tmp, path)
            done[variant] = True
            stamp_file.write_text(json.dumps(done))
    return {"llm": llm, "mmproj": mmprojs}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", help="output directory (default: the pyomnisift cache's bench/)")
    p.add_argument("--threads", type=int, default=os.cpu_count() or 2, help="for llama_model_quantize")
    p.add_argument("--tokenizer", help="a GGUF with the Qwen2.5 tokenizer (default: the 0.5B bench model)")
    args = p.parse_args(argv)
    r = make_bench_model_3b(Path(args.out) if args.out else None, args.threads, args.tokenizer)
    print(r["llm"])
    for k, v in r["mmproj"].items():
        print(f"{k}: {v}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
