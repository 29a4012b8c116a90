"""Build a tiny random Qwen2.5-Omni in transformers and convert it with llama.cpp's own converter.

This is the offline parity recipe of notes/parity.md: the transformers thinker is the reference,
and llm.gguf + mmproj.gguf are what llama.cpp's convert_hf_to_gguf.py (from the pinned sdist)
makes of it, so both sides share every weight. No hub access: the config is written here and the
tokenizer is rebuilt from the Qwen2 vocabulary stored in the sdist. Deterministic for a seed.

Output (cached): DIR/hf/ (save_pretrained + tokenizer), DIR/llm.gguf, DIR/mmproj.gguf, with DIR
= $PYOMNISIFT_CACHE/hf-tiny-omni-seed{N} (default cache ~/.cache/pyomnisift). A stamp of this
script's hash makes an edit to it rebuild the model instead of reusing a stale one.

Usage: python scripts/make_hf_tiny_omni.py [--seed N] [--cache DIR] [--force]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

from pyomnisift.assets import default_cache_dir, ensure_assets, ensure_converter, sha256_of

# Qwen2's pre-tokenizer split (tokenizer.json of every Qwen2 / Qwen2.5 model).
QWEN2_SPLIT = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
               r"|\s*[\r\n]+|\s+(?!\S)|\s+")
# Qwen2.5-Omni's added tokens in the released order, ids 151643 on.
ADDED_TOKENS = [
    "<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|AUDIO|>", "<|audio_bos|>", "<|audio_eos|>",
    "<|box_end|>", "<|quad_start|>", "<|quad_end|>", "<|vision_bos|>", "<|vision_eos|>",
    "<|vision_pad|>", "<|IMAGE|>", "<|VIDEO|>", "<tool_call>", "</tool_call>", "<|fim_prefix|>",
    "<|fim_middle|>", "<|fim_suffix|>", "<|fim_pad|>", "<|repo_name|>", "<|file_sep|>",
]
N_REGULAR = 151643
VOCAB_SIZE = 151936
VISION_START_TOKEN_ID = 151652

THINKER = dict(
    text_config=dict(vocab_size=VOCAB_SIZE, hidden_size=128, intermediate_size=256, num_hidden_layers=2,
                     num_attention_heads=4, num_key_value_heads=2, head_dim=32,
                     rope_parameters=dict(rope_type="default", rope_theta=1e6, mrope_section=[4, 6, 6]),
                     tie_word_embeddings=False),
    vision_config=dict(depth=2, hidden_size=64, intermediate_size=96, num_heads=2, out_hidden_size=128,
                       fullatt_block_indexes=[1], window_size=112),
    audio_config=dict(encoder_layers=2, d_model=64, encoder_attention_heads=4, encoder_ffn_dim=128,
                      num_mel_bins=128, n_window=100, output_dim=128, max_source_positions=1500),
)
PREPROCESSOR = {
    "feature_extractor_type": "WhisperFeatureExtractor", "feature_size": 128, "sampling_rate": 16000,
    "hop_length": 160, "chunk_length": 30, "n_fft": 400, "padding_value": 0.0,
    "image_processor_type": "Qwen2VLImageProcessor", "do_resize": True, "do_rescale": True,
    "do_normalize": True, "do_convert_rgb": True, "rescale_factor": 1 / 255,
    "image_mean": [0.48145466, 0.4578275, 0.40821073], "image_std": [0.26862954, 0.26130258, 0.27577711],
    "min_pixels": 3136, "max_pixels": 12845056, "patch_size": 14, "temporal_patch_size": 2,
    "merge_size": 2, "processor_class": "Qwen2_5OmniProcessor",
}


OMNI_MEDIA_TOKENS = dict(image_token="<|IMAGE|>", audio_token="<|AUDIO|>", video_token="<|VIDEO|>",
                         vision_bos_token="<|vision_bos|>", vision_eos_token="<|vision_eos|>",
                         audio_bos_token="<|audio_bos|>", audio_eos_token="<|audio_eos|>")


def _write_tokenizer(vocab_gguf: Path, out: Path, added_tokens: list = ADDED_TOKENS,
                     media_tokens: dict = OMNI_MEDIA_TOKENS) -> None:
    from gguf import GGUFReader
    from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    reader = GGUFReader(vocab_gguf)
    tokens = reader.fields["tokenizer.ggml.tokens"].contents()[:N_REGULAR]
    merges = [tuple(m.split(" ", 1)) for m in reader.fields["tokenizer.ggml.merges"].contents()]
    tok = Tokenizer(models.BPE(vocab={t: i for i, t in enumerate(tokens)}, merges=merges,
                               fuse_unk=False, byte_fallback=False))
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(QWEN2_SPLIT), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=False, use_regex=False),
    ])
    tok.decoder = decoders.ByteLevel(add_prefix_space=False, trim_offsets=False, use_regex=False)
    # Added in the released order first: the wrapper below would otherwise put its eos/pad tokens
    # and the non-"<|" tokens at other ids.
    tok.add_tokens([AddedToken(t, special=t.startswith("<|"), normalized=False) for t in added_tokens])
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, eos_token="<|im_end|>", pad_token="<|endoftext|>",
        additional_special_tokens=[t for t in added_tokens if t.startswith("<|")],
        model_max_length=32768)
    ids = {t: fast.convert_tokens_to_ids(t) for t in added_tokens}
    assert ids == {t: N_REGULAR + i for i, t in enumerate(added_tokens)}, ids
    assert len(fast) == N_REGULAR + len(added_tokens)
    fast.save_pretrained(out)
    # The processor reads the media token names from the tokenizer config.
    cfg_path = out / "tokenizer_config.json"
    cfg = json.loads(cfg_path.read_text())
    cfg.update(media_tokens)
    cfg_path.write_text(json.dumps(cfg, indent=2))
    # vocab.json + merges.txt for tools that read the slow format.
    (out / "vocab.json").write_text(json.dumps({t: i for i, t in enumerate(tokens)}, ensure_ascii=False))
    (out / "merges.txt").write_text("#version: 0.2\n" + "\n".join(" ".join(m) for m in merges) + "\n")


def _randomize(model, seed: int) -> None:
    """std 1/sqrt(fan_in), norms 1 +/- 0.1, non-zero biases: the default 0.02 init makes every
    block negligible and would hide bugs in the comparison."""
    import torch

    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in sorted(model.named_parameters()):
            if p.ndim >= 2:
                p.copy_(torch.randn(p.shape, generator=gen) / math.sqrt(p[0].numel()))
            elif "norm" in name or "ln_" in name or "layer_norm" in name:
                if name.endswith("bias"):
                    p.copy_(0.1 * torch.randn(p.shape, generator=gen))
                else:
                    p.copy_(1.0 + 0.1 * (2 * torch.rand(p.shape, generator=gen) - 1))
            else:
                p.copy_(0.1 * torch.randn(p.shape, generator=gen))


def _write_model(out: Path, seed: int) -> None:
    import torch
    from transformers import Qwen2_5OmniConfig, Qwen2_5OmniForConditionalGeneration

    torch.manual_seed(seed)
    config = Qwen2_5OmniConfig(thinker_config=THINKER, enable_audio_output=False)
    model = Qwen2_5OmniForConditionalGeneration(config).float().eval()
    _randomize(model, seed)
    model.save_pretrained(out)
    cfg_path = out / "config.json"
    cfg = json.loads(cfg_path.read_text())
    cfg["architectures"] = ["Qwen2_5OmniModel"]  # the only name the converter registers
    cfg_path.write_text(json.dumps(cfg, indent=2))
    (out / "preprocessor_config.json").write_text(json.dumps(PREPROCESSOR, indent=2))
    torch.save({}, out / "spk_dict.pt")  # from_pretrained asks for it


def _convert(converter: Path, hf_dir: Path, out: Path, mmproj: bool) -> None:
    tmp = out.with_suffix(".tmp.gguf")
    cmd = [sys.executable, str(converter), str(hf_dir), "--outtype", "f32", "--outfile", str(tmp)]
    if mmproj:
        cmd.append("--mmproj")
    done = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{done.stdout[-4000:]}")
    os.replace(tmp, out)


def load_thinker(hf_dir):
    """The transformers reference: the thinker in float32 with eager attention."""
    from transformers import Qwen2_5OmniThinkerForConditionalGeneration

    thinker = Qwen2_5OmniThinkerForConditionalGeneration.from_pretrained(
        hf_dir, dtype="float32", attn_implementation="eager").eval()
    thinker.config.vision_start_token_id = VISION_START_TOKEN_ID  # read by the position code
    return thinker


def make_hf_tiny_omni(cache_dir=None, seed: int = 0, force: bool = False) -> dict[str, Path]:
    """Returns {"hf": dir, "llm": llm.gguf, "mmproj": mmproj.gguf}, building what is missing."""
    cache = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    root = cache / f"hf-tiny-omni-seed{seed}"
    paths = {"hf": root / "hf", "llm": root / "llm.gguf", "mmproj": root / "mmproj.gguf"}
    stamp = root / "generator.sha256"
    generator = sha256_of(Path(__file__))
    if (not force and all(p.exists() for p in paths.values()) and stamp.is_file()
            and stamp.read_text() == generator):
        return paths
    assets = ensure_assets(cache)
    converter = ensure_converter(cache)
    shutil.rmtree(root, ignore_errors=True)
    paths["hf"].mkdir(parents=True)
    _write_model(paths["hf"], seed)
    _write_tokenizer(assets["ggml-vocab-qwen2.gguf"], paths["hf"])
    _convert(converter, paths["hf"], paths["mmproj"], mmproj=True)
    _convert(converter, paths["hf"], paths["llm"], mmproj=False)
    stamp.write_text(generator)
    return paths


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--cache", help="cache directory (default: $PYOMNISIFT_CACHE or ~/.cache/pyomnisift)")
    parser.add_argument("--force", action="store_true", help="rebuild even if cached")
    args = parser.parse_args(argv)
    for name, path in make_hf_tiny_omni(args.cache, args.seed, args.force).items():
        print(f"{name}\t{path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
