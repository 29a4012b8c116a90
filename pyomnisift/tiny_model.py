"""Write a tiny random Qwen2.5-Omni-shaped model pair (LLM + mmproj) as GGUF.

The pair has the real Qwen2.5-Omni vocabulary, special-token ids and chat
template, and encoders laid out exactly as llama.cpp's converter writes them
(projector "qwen2.5o": Qwen2.5-VL vision tower + Whisper-style audio tower), so
llama.cpp runs text, image, audio and video prompts through it. The weights are
random, so the model only proves plumbing and numerics, never accuracy. Output
is byte-identical for a given seed.

Usage: python -m pyomnisift.tiny_model --out DIR [--seed N]
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Optional

import numpy as np
from gguf import GGUFType, GGUFWriter, TokenType, VisionProjectorType

from .assets import ensure_assets
from ._gguf import read_metadata

LLM_FILE = "omni-tiny-llm.gguf"
MMPROJ_FILE = "omni-tiny-mmproj.gguf"
# The audio-LLM variant (--variant audio): Qwen2-Audio's shape, an ordinary-RoPE qwen2 LLM and a
# Whisper-style "qwen2a" tower that libmtmd encodes in 30-s windows.
AUDIO_LLM_FILE = "audio-tiny-llm.gguf"
AUDIO_MMPROJ_FILE = "audio-tiny-mmproj.gguf"

LLM = dict(n_layer=2, n_embd=64, n_head=4, n_head_kv=2, n_ff=128,
           n_ctx=32768, rope_base=1e6, rms_eps=1e-6)
# M-RoPE sections (temporal, height, width, unused) in rotary pairs; they must
# sum to head_dim / 2 = 8. Real models use [16, 24, 24, 0] for head_dim 128.
ROPE_SECTIONS = [2, 3, 3, 0]
N_VOCAB = 151936

# The vision FFN width must differ from its embedding width: clip.cpp takes
# ffn_down with ne[0] == n_embd for a legacy file with up/down swapped.
VISION = dict(n_embd=32, n_ff=48, n_layer=2, n_head=2, eps=1e-6,
              image_size=560, patch_size=14)
# Window attention in every layer but each n_wa_pattern-th one, which is what
# Qwen2.5-VL's fullatt_block_indexes [n-1, 2n-1, ...] becomes in the converter;
# with 2 layers this covers both kinds (layer 0 windowed, layer 1 full).
N_WA_PATTERN = 2
IMAGE_MEAN = [0.48145466, 0.4578275, 0.40821073]
IMAGE_STD = [0.26862954, 0.26130258, 0.27577711]
TEMPORAL_PATCH = 2  # Qwen2.5-VL's Conv3D kernel depth: frames merged per token

AUDIO = dict(n_embd=32, n_ff=64, n_layer=2, n_head=2, eps=1e-5, n_mel=128)
AUDIO_N_POS = 1500  # Whisper positions: 30 s of mel frames after the stride-2 conv

# Qwen2.5-Omni added tokens, in the released order, from id 151643 on. The
# converter marks tokens that are special or look like <|...|> as CONTROL and
# the rest (the tool-call tags) as USER_DEFINED.
ADDED_TOKENS = [
    "<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|AUDIO|>", "<|audio_bos|>",
    "<|audio_eos|>", "<|box_end|>", "<|quad_start|>", "<|quad_end|>",
    "<|vision_bos|>", "<|vision_eos|>", "<|vision_pad|>", "<|IMAGE|>",
    "<|VIDEO|>", "<tool_call>", "</tool_call>", "<|fim_prefix|>",
    "<|fim_middle|>", "<|fim_suffix|>", "<|fim_pad|>", "<|repo_name|>",
    "<|file_sep|>",
]
FIRST_ADDED_ID = 151643
ENDOFTEXT_ID, IM_END_ID = 151643, 151645

from ._template import QWEN25_OMNI_CHAT_TEMPLATE as CHAT_TEMPLATE  # noqa: E402


class _Weights:
    """Seeded random tensors scaled so that every block changes its input.

    transformers' default init (std 0.02, zero biases, unit norms) makes whole
    blocks nearly the identity, which hides wiring bugs in a parity test.
    """

    def __init__(self, seed: int):
        self.rng = np.random.default_rng(seed)

    def matrix(self, *shape: int, fan_in: int | None = None) -> np.ndarray:
        fan_in = fan_in or shape[-1]
        return (self.rng.standard_normal(shape) / np.sqrt(fan_in)).astype(np.float32)

    def bias(self, n: int) -> np.ndarray:
        return (0.1 * self.rng.standard_normal(n)).astype(np.float32)

    def norm(self, n: int) -> np.ndarray:
        return self.rng.uniform(0.9, 1.1, n).astype(np.float32)


def read_gguf_kv(path: Path) -> dict[str, object]:
    """Key/value metadata of a GGUF file (the tensors are not read)."""
    return read_metadata(path)


def _tokenizer(vocab_path: Path) -> tuple[list[str], list[int], list[str]]:
    kv = read_gguf_kv(vocab_path)
    if (kv["tokenizer.ggml.model"], kv["tokenizer.ggml.pre"]) != ("gpt2", "qwen2"):
        raise ValueError(f"{vocab_path} is not a Qwen2 BPE vocabulary")
    tokens = kv["tokenizer.ggml.tokens"]
    types = kv["tokenizer.ggml.token_type"]
    merges = kv["tokenizer.ggml.merges"]
    if len(tokens) != N_VOCAB:
        raise ValueError(f"{vocab_path} has {len(tokens)} tokens, expected {N_VOCAB}")
    # The Qwen2 vocabulary has <|endoftext|>, <|im_start|>, <|im_end|> at the
    # Omni ids already and "[PAD<id>]" placeholders after them: overwrite both,
    # and refuse anything else there rather than silently shifting ids.
    for i, token in enumerate(ADDED_TOKENS, FIRST_ADDED_ID):
        if tokens[i] not in (token, f"[PAD{i}]"):
            raise ValueError(f"{vocab_path}: id {i} holds {tokens[i]!r}, expected {token!r}")
        tokens[i] = token
        looks_special = token.startswith("<|") and token.endswith("|>")
        types[i] = int(TokenType.CONTROL if looks_special else TokenType.USER_DEFINED)
    # ids the tokenizer never produces, as the converter writes them
    for i in range(FIRST_ADDED_ID + len(ADDED_TOKENS), N_VOCAB):
        tokens[i] = f"[PAD{i}]"
        types[i] = int(TokenType.UNUSED)
    return tokens, types, merges


def _write(writer: GGUFWriter, tensors: dict[str, np.ndarray], path: Path) -> None:
    for name, data in tensors.items():
        writer.add_tensor(name, data)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def _atomic_path(path: Path) -> Path:
    return path.with_name(path.name + ".tmp")


def _llm(path: Path, w: _Weights, vocab_path: Path, mrope: bool = True) -> None:
    p = LLM
    head_dim = p["n_embd"] // p["n_head"]
    assert sum(ROPE_SECTIONS) == head_dim // 2
    n_embd, n_kv = p["n_embd"], p["n_head_kv"] * head_dim

    writer = GGUFWriter(_atomic_path(path), "qwen2vl" if mrope else "qwen2")
    writer.add_name("omni-tiny")
    writer.add_block_count(p["n_layer"])
    writer.add_context_length(p["n_ctx"])
    writer.add_embedding_length(n_embd)
    writer.add_feed_forward_length(p["n_ff"])
    writer.add_head_count(p["n_head"])
    writer.add_head_count_kv(p["n_head_kv"])
    writer.add_rope_freq_base(p["rope_base"])
    writer.add_layer_norm_rms_eps(p["rms_eps"])
    if mrope:
        writer.add_rope_dimension_sections(ROPE_SECTIONS)

    tokens, types, merges = _tokenizer(vocab_path)
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre("qwen2")
    writer.add_token_list(tokens)
    writer.add_token_types(types)
    writer.add_token_merges(merges)
    writer.add_bos_token_id(ENDOFTEXT_ID)
    writer.add_eos_token_id(IM_END_ID)
    writer.add_pad_token_id(ENDOFTEXT_ID)
    writer.add_add_bos_token(False)
    writer.add_chat_template(CHAT_TEMPLATE)

    # The output projection is tied to token_embd (no "output" tensor), and
    # token_embd alone is f16: it is 99% of the parameters.
    tensors = {"token_embd.weight": w.matrix(N_VOCAB, n_embd).astype(np.float16)}
    for i in range(p["n_layer"]):
        b = f"blk.{i}."
        tensors |= {
            b + "attn_norm.weight": w.norm(n_embd),
            b + "attn_q.weight": w.matrix(n_embd, n_embd),
            b + "attn_q.bias": w.bias(n_embd),
            b + "attn_k.weight": w.matrix(n_kv, n_embd),
            b + "attn_k.bias": w.bias(n_kv),
            b + "attn_v.weight": w.matrix(n_kv, n_embd),
            b + "attn_v.bias": w.bias(n_kv),
            b + "attn_output.weight": w.matrix(n_embd, n_embd),
            b + "ffn_norm.weight": w.norm(n_embd),
            b + "ffn_gate.weight": w.matrix(p["n_ff"], n_embd),
            b + "ffn_up.weight": w.matrix(p["n_ff"], n_embd),
            b + "ffn_down.weight": w.matrix(n_embd, p["n_ff"]),
        }
    tensors["output_norm.weight"] = w.norm(n_embd)
    _write(writer, tensors, path)


def _vision_tensors(w: _Weights, n_proj: int) -> dict[str, np.ndarray]:
    v = VISION
    d, ff, ps = v["n_embd"], v["n_ff"], v["patch_size"]
    assert ff != d, "see VISION: clip.cpp would swap ffn_up and ffn_down"
    merged = d * 4  # the 2x2 patch merger concatenates 4 neighbours
    # The converter splits the Conv3D patch embedding (kernel depth 2) into
    # one Conv2D per frame: .weight for frame 0, .weight.1 for frame 1.
    patch_fan_in = 3 * ps * ps * TEMPORAL_PATCH
    t = {
        "v.patch_embd.weight": w.matrix(d, 3, ps, ps, fan_in=patch_fan_in),
        "v.patch_embd.weight.1": w.matrix(d, 3, ps, ps, fan_in=patch_fan_in),
    }
    for i in range(v["n_layer"]):
        b = f"v.blk.{i}."
        t |= {
            b + "ln1.weight": w.norm(d),  # RMSNorm: no bias
            b + "attn_q.weight": w.matrix(d, d),
            b + "attn_q.bias": w.bias(d),
            b + "attn_k.weight": w.matrix(d, d),
            b + "attn_k.bias": w.bias(d),
            b + "attn_v.weight": w.matrix(d, d),
            b + "attn_v.bias": w.bias(d),
            b + "attn_out.weight": w.matrix(d, d),
            b + "attn_out.bias": w.bias(d),
            b + "ln2.weight": w.norm(d),
            b + "ffn_gate.weight": w.matrix(ff, d),
            b + "ffn_gate.bias": w.bias(ff),
            b + "ffn_up.weight": w.matrix(ff, d),
            b + "ffn_up.bias": w.bias(ff),
            b + "ffn_down.weight": w.matrix(d, ff),
            b + "ffn_down.bias": w.bias(d),
        }
    t |= {
        "v.post_ln.weight": w.norm(d),  # the merger's ln_q
        "mm.0.weight": w.matrix(merged, merged),
        "mm.0.bias": w.bias(merged),
        "mm.2.weight": w.matrix(n_proj, merged),
        "mm.2.bias": w.bias(n_proj),
    }
    return t


def _sinusoids(length: int, channels: int) -> np.ndarray:
    """Whisper's fixed position table, as the converter generates it."""
    log_increment = np.log(10000) / (channels // 2 - 1)
    inv_timescales = np.exp(-log_increment * np.arange(channels // 2, dtype=np.float32))
    scaled = np.arange(length, dtype=np.float32)[:, None] * inv_timescales[None, :]
    return np.concatenate([np.sin(scaled), np.cos(scaled)], axis=1).astype(np.float32)


def _audio_tensors(w: _Weights, n_proj: int) -> dict[str, np.ndarray]:
    a = AUDIO
    d, ff, n_mel = a["n_embd"], a["n_ff"], a["n_mel"]
    # As the converter writes them: conv kernels always f16, conv biases as
    # [d, 1] columns so that clip.cpp broadcasts them over time.
    t = {
        "a.conv1d.1.weight": w.matrix(d, n_mel, 3, fan_in=n_mel * 3).astype(np.float16),
        "a.conv1d.1.bias": w.bias(d)[:, None],
        "a.conv1d.2.weight": w.matrix(d, d, 3, fan_in=d * 3).astype(np.float16),
        "a.conv1d.2.bias": w.bias(d)[:, None],
        "a.position_embd.weight": _sinusoids(AUDIO_N_POS, d),
    }
    for i in range(a["n_layer"]):
        b = f"a.blk.{i}."
        t |= {
            b + "ln1.weight": w.norm(d),
            b + "ln1.bias": w.bias(d),
            b + "attn_q.weight": w.matrix(d, d),
            b + "attn_q.bias": w.bias(d),
            b + "attn_k.weight": w.matrix(d, d),  # Whisper's k_proj has no bias
            b + "attn_v.weight": w.matrix(d, d),
            b + "attn_v.bias": w.bias(d),
            b + "attn_out.weight": w.matrix(d, d),
            b + "attn_out.bias": w.bias(d),
            b + "ln2.weight": w.norm(d),
            b + "ln2.bias": w.bias(d),
            b + "ffn_up.weight": w.matrix(ff, d),
            b + "ffn_up.bias": w.bias(ff),
            b + "ffn_down.weight": w.matrix(d, ff),
            b + "ffn_down.bias": w.bias(d),
        }
    t |= {
        "a.post_ln.weight": w.norm(d),
        "a.post_ln.bias": w.bias(d),
        "mm.a.fc.weight": w.matrix(n_proj, d),
        "mm.a.fc.bias": w.bias(n_proj),
    }
    return t


def _mmproj(path: Path, w: _Weights) -> None:
    n_proj = LLM["n_embd"]  # both towers project into the LLM's embedding space
    v = VISION

    writer = GGUFWriter(_atomic_path(path), "clip")
    write_omni_mmproj_keys(writer, "omni-tiny", v, AUDIO, n_proj, N_WA_PATTERN)
    _write(writer, _vision_tensors(w, n_proj) | _audio_tensors(w, n_proj), path)


def write_omni_mmproj_keys(writer: GGUFWriter, name: str, vision: dict, audio: Optional[dict], n_proj: int,
                           n_wa_pattern: int, projector: str = VisionProjectorType.QWEN25O) -> None:
    """The metadata of a qwen2.5o mmproj (vision + audio towers), as llama.cpp's converter writes it;
    with audio None and projector "qwen2.5vl_merger", a Qwen2.5-VL mmproj (the same vision tower)."""
    v = vision
    writer.add_type(GGUFType.MMPROJ)
    writer.add_name(name)
    # "qwen2.5o" makes clip.cpp load the vision part as qwen2.5vl and the
    # audio part as qwen2a from this one file.
    writer.add_clip_projector_type(projector)
    writer.add_clip_has_vision_encoder(True)
    writer.add_clip_has_audio_encoder(audio is not None)
    writer.add_vision_use_silu(True)

    writer.add_vision_embedding_length(v["n_embd"])
    writer.add_vision_feed_forward_length(v["n_ff"])
    writer.add_vision_block_count(v["n_layer"])
    writer.add_vision_head_count(v["n_head"])
    writer.add_vision_projection_dim(n_proj)
    writer.add_vision_attention_layernorm_eps(v["eps"])
    writer.add_vision_image_size(v["image_size"])
    writer.add_vision_patch_size(v["patch_size"])
    writer.add_vision_image_mean(IMAGE_MEAN)
    writer.add_vision_image_std(IMAGE_STD)
    writer.add_vision_n_wa_pattern(n_wa_pattern)
    if audio is not None:
        _add_audio_keys(writer, audio, n_proj)


def _add_audio_keys(writer: GGUFWriter, audio: dict, n_proj: int) -> None:
    a = audio
    writer.add_audio_embedding_length(a["n_embd"])
    writer.add_audio_feed_forward_length(a["n_ff"])
    writer.add_audio_block_count(a["n_layer"])
    writer.add_audio_head_count(a["n_head"])
    writer.add_audio_projection_dim(n_proj)
    writer.add_audio_attention_layernorm_eps(a["eps"])
    writer.add_audio_num_mel_bins(a["n_mel"])


def _audio_mmproj(path: Path, w: _Weights) -> None:
    writer = GGUFWriter(_atomic_path(path), "clip")
    writer.add_type(GGUFType.MMPROJ)
    writer.add_name("audio-tiny")
    writer.add_clip_projector_type("qwen2a")
    writer.add_clip_has_vision_encoder(False)
    writer.add_clip_has_audio_encoder(True)
    _add_audio_keys(writer, AUDIO, LLM["n_embd"])
    _write(writer, _audio_tensors(w, LLM["n_embd"]), path)


def make_tiny_audio_model(out_dir: str | os.PathLike, seed: int = 0,
                          vocab_path: str | os.PathLike | None = None) -> tuple[Path, Path]:
    """The audio-LLM variant: (llm_path, mmproj_path) in out_dir."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    vocab = Path(vocab_path) if vocab_path else ensure_assets()["ggml-vocab-qwen2.gguf"]
    llm_path, mmproj_path = out / AUDIO_LLM_FILE, out / AUDIO_MMPROJ_FILE
    w = _Weights(seed)
    _llm(llm_path, w, vocab, mrope=False)
    _audio_mmproj(mmproj_path, w)
    for path in (llm_path, mmproj_path):
        os.replace(_atomic_path(path), path)
    return llm_path, mmproj_path


def make_tiny_model(out_dir: str | os.PathLike, seed: int = 0,
                    vocab_path: str | os.PathLike | None = None) -> tuple[Path, Path]:
    """Write the pair into out_dir and return (llm_path, mmproj_path).

    vocab_path defaults to the Qwen2 vocabulary from fetch_assets.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    vocab = Path(vocab_path) if vocab_path else ensure_assets()["ggml-vocab-qwen2.gguf"]
    llm_path, mmproj_path = out / LLM_FILE, out / MMPROJ_FILE
    w = _Weights(seed)
    _llm(llm_path, w, vocab)
    _mmproj(mmproj_path, w)
    # Written under temporary names first: an interrupted run never leaves a
    # truncated file under a final name for the test cache to reuse.
    for path in (llm_path, mmproj_path):
        os.replace(_atomic_path(path), path)
    return llm_path, mmproj_path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, help="output directory")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--vocab", help="ggml-vocab-qwen2.gguf (default: fetched and cached)")
    parser.add_argument("--variant", choices=["omni", "audio"], default="omni",
                        help="omni: Qwen2.5-Omni shape (default); audio: Qwen2-Audio shape")
    args = parser.parse_args(argv)
    make = make_tiny_model if args.variant == "omni" else make_tiny_audio_model
    for path in make(args.out, args.seed, args.vocab):
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
