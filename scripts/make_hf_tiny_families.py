"""Tiny random checkpoints of the Qwen families pyomnisift does not serve yet (Qwen2.5-VL, Qwen3-VL,
Qwen3-Omni), built in transformers and converted with llama.cpp's own converter from the pinned
sdist, as scripts/make_hf_tiny_omni.py does for Qwen2.5-Omni.

What these GGUF pairs are is what llama.cpp's converter says they are (architecture, projector type
per tower), which is what pyomnisift's family detection must recognise, and refuse by name where it
does not serve the family (tests/test_families.py). Qwen2.5-VL is also the transformers reference of
tests/test_parity_qwen25_vl.py: its vocabulary is the Qwen2 one of make_hf_tiny_omni with
Qwen2.5-VL's added tokens in their released order (<|vision_start|> = 151652, <|video_pad|> = 151656).
Qwen3-Omni is the transformers reference of the Qwen3-Omni thinker parity (tests/qwen3_omni_reference.py):
its vocabulary carries the released Qwen3-Omni added tokens and ids (<|image_pad|> = 151655,
<|video_pad|> = 151656, <|audio_start|> = 151669, <|audio_pad|> = 151675) and its thinker config the
released token ids and 13 position ids a second. Qwen3-VL is the transformers reference of the Qwen3-VL
parity (tests/qwen3_vl_reference.py): its vocabulary carries the released Qwen3-VL added tokens and ids
(Qwen2.5-VL's 22, then <tool_response>, </tool_response>, <think>, </think>: <|vision_start|> = 151652,
<|vision_end|> = 151653, <|image_pad|> = 151655, <|video_pad|> = 151656), its tokenizer config the
media token names Qwen3VLProcessor reads and its config the released token ids.

Output (cached): DIR/<family>/{hf/, llm.gguf, mmproj.gguf} with DIR = $PYOMNISIFT_CACHE/hf-tiny-families
(default cache ~/.cache/pyomnisift); a stamp of this script's and make_hf_tiny_omni's hashes rebuilds
them after an edit.

Usage: python scripts/make_hf_tiny_families.py [--family NAME ...] [--force]
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

import make_hf_tiny_omni as omni
from pyomnisift.assets import default_cache_dir, ensure_assets, ensure_converter, sha256_of

TEXT = dict(vocab_size=omni.VOCAB_SIZE, hidden_size=128, intermediate_size=256, num_hidden_layers=2,
            num_attention_heads=4, num_key_value_heads=2, head_dim=32, tie_word_embeddings=False,
            rms_norm_eps=1e-6)   # the released models' (and the tiny Omni's); see README, "Found on the way"
QWEN3_VISION = dict(depth=2, hidden_size=64, intermediate_size=96, num_heads=2, out_hidden_size=128,
                    patch_size=16, num_position_embeddings=64, deepstack_visual_indexes=[0])
QWEN3_MOE = dict(num_experts=4, num_experts_per_tok=2, moe_intermediate_size=64, decoder_sparse_step=1,
                 mlp_only_layers=[])
MROPE = dict(rope_type="default", rope_theta=1e6, mrope_section=[4, 6, 6])
# Qwen2.5-VL's (and Qwen2-VL's) added tokens in the released order, ids 151643 on
QWEN25_VL_ADDED_TOKENS = [
    "<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|object_ref_start|>", "<|object_ref_end|>",
    "<|box_start|>", "<|box_end|>", "<|quad_start|>", "<|quad_end|>", "<|vision_start|>", "<|vision_end|>",
    "<|vision_pad|>", "<|image_pad|>", "<|video_pad|>", "<tool_call>", "</tool_call>", "<|fim_prefix|>",
    "<|fim_middle|>", "<|fim_suffix|>", "<|fim_pad|>", "<|repo_name|>", "<|file_sep|>",
]
QWEN25_VL_MEDIA_TOKENS = dict(image_token="<|image_pad|>", video_token="<|video_pad|>",
                              vision_start_token="<|vision_start|>", vision_end_token="<|vision_end|>")
# Qwen3-VL's added tokens in the released order, ids 151643 on (<|vision_start|> = 151652,
# <|vision_end|> = 151653, <|image_pad|> = 151655, <|video_pad|> = 151656); the media token names as
# Qwen3VLProcessor reads them from the tokenizer (image_token, video_token, vision_start_token,
# vision_end_token), and the released config's token ids (transformers' defaults too, kept explicit).
QWEN3_VL_ADDED_TOKENS = QWEN25_VL_ADDED_TOKENS + ["<tool_response>", "</tool_response>", "<think>", "</think>"]
QWEN3_VL_MEDIA_TOKENS = dict(image_token="<|image_pad|>", video_token="<|video_pad|>",
                             vision_start_token="<|vision_start|>", vision_end_token="<|vision_end|>")
QWEN3_VL_IDS = dict(image_token_id=151655, video_token_id=151656, vision_start_token_id=151652,
                    vision_end_token_id=151653)
# Qwen3-Omni's added tokens in the released order, ids 151643 on (<|vision_start|> = 151652,
# <|image_pad|> = 151655, <|video_pad|> = 151656, <|audio_start|> = 151669, <|audio_pad|> = 151675)
QWEN3_OMNI_ADDED_TOKENS = QWEN25_VL_ADDED_TOKENS + [
    "<tool_response>", "</tool_response>", "<think>", "</think>", "<|audio_start|>", "<|audio_end|>",
    "<tts_pad>", "<tts_text_bos>", "<tts_text_eod>", "<tts_text_bos_single>", "<|audio_pad|>",
]
QWEN3_OMNI_MEDIA_TOKENS = dict(image_token="<|image_pad|>", video_token="<|video_pad|>", audio_token="<|audio_pad|>",
                               vision_bos_token="<|vision_start|>", vision_eos_token="<|vision_end|>",
                               audio_bos_token="<|audio_start|>", audio_eos_token="<|audio_end|>")
# The released thinker config's token ids (transformers' defaults are Qwen2.5-Omni's audio ids) and
# 13 position ids a second (transformers' default is 25). get_rope_index reads vision_start_token_id
# from the thinker config, which declares no such field: it is kept as an extra attribute.
QWEN3_OMNI_IDS = dict(audio_token_id=151675, image_token_id=151655, video_token_id=151656,
                      audio_start_token_id=151669, audio_end_token_id=151670, vision_start_token_id=151652,
                      vision_end_token_id=151653, position_id_per_seconds=13)
# the image processors' settings of the released checkpoints (the converter reads mean / std)
QWEN25_PRE = {k: v for k, v in omni.PREPROCESSOR.items() if not k.startswith(("feature", "sampling", "hop",
                                                                              "chunk", "n_fft", "padding"))}
QWEN25_PRE.update(processor_class="Qwen2_5_VLProcessor")
QWEN3_PRE = dict(QWEN25_PRE, image_processor_type="Qwen2VLImageProcessorFast", patch_size=16,
                 image_mean=[0.5, 0.5, 0.5], image_std=[0.5, 0.5, 0.5], processor_class="Qwen3VLProcessor")
QWEN3_OMNI_PRE = dict(QWEN3_PRE, **{k: v for k, v in omni.PREPROCESSOR.items() if k.startswith(
    ("feature", "sampling", "hop", "chunk", "n_fft", "padding"))}, processor_class="Qwen3OmniMoeProcessor")


def _qwen25_vl():
    from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration

    config = Qwen2_5_VLConfig(
        text_config=dict(TEXT, rope_parameters=MROPE),
        # depth >= 3: the converter maps the merger's mlp.2 through the vision block table
        vision_config=dict(depth=4, hidden_size=64, intermediate_size=96, num_heads=2, out_hidden_size=128,
                           fullatt_block_indexes=[1, 3], window_size=112,
                           tokens_per_second=2))   # every released Qwen2.5-VL's (transformers' default is 4)
    return Qwen2_5_VLForConditionalGeneration(config), "Qwen2_5_VLForConditionalGeneration", QWEN25_PRE


def _qwen3_vl():
    from transformers import Qwen3VLConfig, Qwen3VLForConditionalGeneration

    config = Qwen3VLConfig(text_config=dict(TEXT, rope_parameters=dict(MROPE, mrope_interleaved=True)),
                           vision_config=QWEN3_VISION, **QWEN3_VL_IDS)
    return Qwen3VLForConditionalGeneration(config), "Qwen3VLForConditionalGeneration", QWEN3_PRE


def _qwen3_omni():
    from transformers import Qwen3OmniMoeConfig, Qwen3OmniMoeForConditionalGeneration

    thinker = dict(
        text_config=dict(TEXT, **QWEN3_MOE, rope_parameters=dict(MROPE, mrope_interleaved=True)),
        vision_config=QWEN3_VISION,
        audio_config=dict(encoder_layers=2, d_model=64, encoder_attention_heads=4, encoder_ffn_dim=128,
                          num_mel_bins=128, n_window=50, output_dim=128, max_source_positions=1500,
                          downsample_hidden_size=32),
        **QWEN3_OMNI_IDS)
    config = Qwen3OmniMoeConfig(thinker_config=thinker, enable_audio_output=False)
    return Qwen3OmniMoeForConditionalGeneration(config), "Qwen3OmniMoeForConditionalGeneration", QWEN3_OMNI_PRE


FAMILIES = {"qwen2.5-vl": _qwen25_vl, "qwen3-vl": _qwen3_vl, "qwen3-omni": _qwen3_omni}


def _write_model(build, out: Path, seed: int) -> None:
    import torch

    torch.manual_seed(seed)
    model, architecture, preprocessor = build()
    model = model.float().eval()
    omni._randomize(model, seed)
    model.save_pretrained(out)
    cfg_path = out / "config.json"
    cfg = json.loads(cfg_path.read_text())
    cfg["architectures"] = [architecture]   # the name the converter registers the family under
    cfg_path.write_text(json.dumps(cfg, indent=2))
    (out / "preprocessor_config.json").write_text(json.dumps(preprocessor, indent=2))


def _mmproj_input(name: str, hf_dir: Path, root: Path) -> Path:
    """The checkpoint the mmproj is converted from. The pinned converter cannot convert Qwen3-Omni's
    vision tower as the checkpoint names it (Qwen3OmniMmprojModel.modify_tensors renames
    "thinker.visual." to "model.visual.", which Qwen3VLVisionModel.modify_tensors and gguf-py's
    tensor map do not know: "Can not map tensor 'model.visual.blocks.0.attn.proj.bias'"); its
    filter_tensors does take "model.visual." (to "visual."), so the mmproj is converted from a copy
    whose vision tensors are named so. The LLM is converted from the checkpoint as saved."""
    if name != "qwen3-omni":
        return hf_dir
    from safetensors.torch import load_file, save_file

    out = root / "hf-mmproj"
    shutil.copytree(hf_dir, out)
    tensors = load_file(out / "model.safetensors")
    save_file({k.replace("thinker.visual.", "model.visual.", 1): v for k, v in tensors.items()},
              out / "model.safetensors", metadata={"format": "pt"})
    return out


def make_hf_tiny_family(name: str, cache_dir=None, seed: int = 0, force: bool = False) -> dict[str, Path]:
    """{"hf": dir, "llm": llm.gguf, "mmproj": mmproj.gguf} of one family, building what is missing."""
    cache = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    root = cache / "hf-tiny-families" / f"{name}-seed{seed}"
    paths = {"hf": root / "hf", "llm": root / "llm.gguf", "mmproj": root / "mmproj.gguf"}
    stamp = root / "generator.sha256"
    generator = sha256_of(Path(__file__)) + sha256_of(Path(omni.__file__))
    if (not force and all(p.exists() for p in paths.values()) and stamp.is_file()
            and stamp.read_text() == generator):
        return paths
    assets = ensure_assets(cache)
    converter = ensure_converter(cache)
    shutil.rmtree(root, ignore_errors=True)
    paths["hf"].mkdir(parents=True)
    _write_model(FAMILIES[name], paths["hf"], seed)
    if name == "qwen2.5-vl":
        omni._write_tokenizer(assets["ggml-vocab-qwen2.gguf"], paths["hf"], QWEN25_VL_ADDED_TOKENS,
                              QWEN25_VL_MEDIA_TOKENS)
    elif name == "qwen3-vl":
        omni._write_tokenizer(assets["ggml-vocab-qwen2.gguf"], paths["hf"], QWEN3_VL_ADDED_TOKENS,
                              QWEN3_VL_MEDIA_TOKENS)
    elif name == "qwen3-omni":
        omni._write_tokenizer(assets["ggml-vocab-qwen2.gguf"], paths["hf"], QWEN3_OMNI_ADDED_TOKENS,
                              QWEN3_OMNI_MEDIA_TOKENS)
    else:
        omni._write_tokenizer(assets["ggml-vocab-qwen2.gguf"], paths["hf"])
    omni._convert(converter, _mmproj_input(name, paths["hf"], root), paths["mmproj"], mmproj=True)
    omni._convert(converter, paths["hf"], paths["llm"], mmproj=False)
    shutil.rmtree(root / "hf-mmproj", ignore_errors=True)
    stamp.write_text(generator)
    return paths


def load_qwen25_vl(hf_dir):
    """The transformers reference: Qwen2.5-VL in float32 with eager attention."""
    from transformers import Qwen2_5_VLForConditionalGeneration

    return Qwen2_5_VLForConditionalGeneration.from_pretrained(hf_dir, dtype="float32",
                                                              attn_implementation="eager").eval()


def load_qwen3_vl(hf_dir):
    """The transformers reference: Qwen3-VL (Qwen3VLForConditionalGeneration) in float32 with eager
    attention."""
    from transformers import Qwen3VLForConditionalGeneration

    model = Qwen3VLForConditionalGeneration.from_pretrained(hf_dir, dtype="float32",
                                                            attn_implementation="eager").eval()
    assert all(getattr(model.config, k) == v for k, v in QWEN3_VL_IDS.items())
    return model


def load_qwen3_omni(hf_dir):
    """The transformers reference: Qwen3-Omni's thinker (Qwen3OmniMoeThinkerForConditionalGeneration)
    in float32 with eager attention, loaded from the whole checkpoint (no talker: enable_audio_output
    is off)."""
    from transformers import Qwen3OmniMoeForConditionalGeneration

    model = Qwen3OmniMoeForConditionalGeneration.from_pretrained(hf_dir, dtype="float32",
                                                                 attn_implementation="eager").eval()
    thinker = model.thinker
    assert thinker.config.vision_start_token_id == QWEN3_OMNI_IDS["vision_start_token_id"]
    return thinker


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--family", action="append", choices=sorted(FAMILIES), help="default: all")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--cache", default=None)
    ap.add_argument("--force", action="store_true")
    args = ap.parse_args(argv)
    for name in args.family or sorted(FAMILIES):
        paths = make_hf_tiny_family(name, args.cache, args.seed, args.force)
        print(name, paths["llm"], paths["mmproj"])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
