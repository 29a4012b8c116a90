"""The transformers side of the Qwen3-Omni thinker parity: the reference's own processor
(Qwen3OmniMoeProcessor: chat template, placeholder expansion with audio interleaved in video, PIL
image processor, Whisper features), get_rope_index, a float32 eager forward of the tiny Qwen3-Omni
thinker built by scripts/make_hf_tiny_families.py (family "qwen3-omni", released token ids, 13
position ids a second), its towers' rows, and its text model fed given rows (compressed decoding).

As in hf_reference.py, transformers 5.23 without torchvision has no video processor: frames are
turned into `pixel_values_videos` with numpy by the Qwen3-VL recipe (rescale 1/255, normalize with
the checkpoint's mean / std, temporal patch 2, 16x16 patches in 2x2 merge order); check_patchify
compares that recipe with the PIL image processor on an image.

Qwen3-Omni's processor gives video `video_second_per_grid` = temporal patch 2 / fps, so a grid k of
a video sits at t = start + k * 2 / fps * 13: integral at 2 fps (13 a grid), not at every rate
(get_rope_index works in float; rope_index says so when it is not integral).
"""

from __future__ import annotations

import numpy as np

import hf_reference as H

PATCH, MERGE, TEMPORAL = 16, 2, 2
IMAGE_TOKEN, VIDEO_TOKEN, AUDIO_TOKEN = "<|image_pad|>", "<|video_pad|>", "<|audio_pad|>"
QUESTION = "Describe what you see and hear, briefly."

# the family's template (the reference processor renders it; the expansion is the processor's)
from pyomnisift._template import QWEN3_CHAT_TEMPLATE as CHAT_TEMPLATE  # noqa: E402


def patchify(frames: np.ndarray, mean, std) -> tuple[np.ndarray, np.ndarray]:
    """hf_reference.patchify with Qwen3-VL's 16-pixel patches."""
    return H.patchify(frames, mean, std, PATCH)


def make_processor(hf_dir, chat_template: str = CHAT_TEMPLATE):
    """transformers' Qwen3OmniMoeProcessor with the checkpoint's tokenizer (the released media token
    names), PIL image processor and Whisper feature extractor, and the numpy video processor."""
    from transformers import AutoTokenizer, Qwen3OmniMoeProcessor, WhisperFeatureExtractor
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

    class Processor(Qwen3OmniMoeProcessor):
        def check_argument_for_proper_class(self, name, arg):
            if name != "video_processor":  # the stand-in is no registered class
                return super().check_argument_for_proper_class(name, arg)

    image = Qwen2VLImageProcessorPil.from_pretrained(hf_dir)
    assert (image.patch_size, image.merge_size, image.temporal_patch_size) == (PATCH, MERGE, TEMPORAL)
    return Processor(image_processor=image, video_processor=H.NumpyVideoProcessor(image.image_mean, image.image_std, PATCH),
                     feature_extractor=WhisperFeatureExtractor.from_pretrained(hf_dir),
                     tokenizer=AutoTokenizer.from_pretrained(hf_dir), chat_template=chat_template)


def check_patchify(processor, image: np.ndarray) -> None:
    """The numpy recipe against the PIL image processor on one image (sides multiples of 32)."""
    ref = processor.image_processor(images=[image], return_tensors="np")
    ours, grid = patchify(image[None], processor.image_processor.image_mean, processor.image_processor.image_std)
    np.testing.assert_array_equal(ref["image_grid_thw"][0], grid)
    np.testing.assert_allclose(ours, ref["pixel_values"], rtol=0, atol=1e-5)


def reference_inputs(processor, kind: str, image=None, video_frames=None, fps: float | None = None, audio=None,
                     audio_in_video: bool = False, question: str = QUESTION) -> dict:
    """The reference's inputs for one user turn: `kind` is "text" or "+"-joined parts among "image",
    "video", "audio", rendered in that order before the question (e.g. "image", "video",
    "audio", "image+audio"). Media are arrays: image uint8 HWC, video_frames uint8 THWC sampled at
    `fps`, audio float32 16 kHz mono. audio_in_video: `audio` is the video's track, interleaved with
    its frames by the processor (no separate audio part; kind must not name "audio").

    Returns the processor's outputs as torch tensors (input_ids, attention_mask, pixel_values,
    image_grid_thw, pixel_values_videos, video_grid_thw, video_second_per_grid, input_features,
    feature_attention_mask, as present), plus "text" (the rendered prompt) and "use_audio_in_video"."""
    parts_of = [] if kind == "text" else kind.split("+")
    assert set(parts_of) <= {"image", "video", "audio"}, kind
    assert not (audio_in_video and ("audio" in parts_of or "video" not in parts_of)), kind
    parts, kw = [{"type": p} for p in parts_of], {}
    parts.append({"type": "text", "text": question})
    if "image" in parts_of:
        kw["images"] = [np.asarray(image)]
    if "video" in parts_of:
        assert fps is not None, "a video needs its sampling rate (video_second_per_grid = 2 / fps)"
        kw["videos"] = [np.asarray(video_frames)]
        kw["videos_kwargs"] = {"fps": float(fps)}
    if "audio" in parts_of or audio_in_video:
        kw["audio"] = [np.asarray(audio, dtype=np.float32)]
    if audio_in_video:
        # the track given, not decoded from a file: one audio slot, from video 0
        kw.update(load_audio_from_video=True, audio_from_video_indices=[0])
    text = processor.apply_chat_template([{"role": "user", "content": parts}], tokenize=False,
                                         add_generation_prompt=True)
    out = dict(processor(text=text, return_tensors="pt", **kw))
    out["text"] = text
    out["use_audio_in_video"] = audio_in_video
    return out


def rope_positions(thinker, inputs, audio_in_video: bool | None = None) -> np.ndarray:
    """get_rope_index's position ids [3, L] as it computes them (float64 of its float32)."""
    import torch

    if audio_in_video is None:
        audio_in_video = inputs.get("use_audio_in_video", False)
    fam = inputs.get("feature_attention_mask")
    with torch.no_grad():
        pos, _ = thinker.get_rope_index(
            inputs["input_ids"], inputs.get("image_grid_thw"), inputs.get("video_grid_thw"),
            torch.ones_like(inputs["input_ids"]), bool(audio_in_video),
            fam.sum(-1) if fam is not None else None, inputs.get("video_second_per_grid"))
    return pos[:, 0].double().numpy()


def rope_index(thinker, inputs, audio_in_video: bool | None = None) -> np.ndarray:
    """get_rope_index's position ids [3, L], int64. Raises ValueError where they are not integral
    (a video sampled at a rate where 2 / fps * 13 is no integer): llama.cpp's positions are."""
    pos = rope_positions(thinker, inputs, audio_in_video)
    if not np.array_equal(pos, np.round(pos)):
        frac = sorted(set(np.round(pos[pos != np.round(pos)], 4).tolist()))[:8]
        raise ValueError(f"get_rope_index gives non-integral positions (e.g. {frac})")
    return pos.astype(np.int64)


_NAMES = ("input_ids", "pixel_values", "image_grid_thw", "pixel_values_videos", "video_grid_thw",
          "input_features", "feature_attention_mask", "video_second_per_grid")


def reference_logits(thinker, inputs, audio_in_video: bool | None = None, visible=None) -> np.ndarray:
    """The thinker's last-position logits (float32, eager): its whole forward (vision tower with
    deepstack, audio tower, placeholder scatter) at get_rope_index's positions, causal mask, or the
    given one (`visible`, bool [L, L] [query, key]: see hf_reference.last_logits)."""
    import torch

    if audio_in_video is None:
        audio_in_video = inputs.get("use_audio_in_video", False)
    positions = torch.from_numpy(rope_positions(thinker, inputs, audio_in_video)).float()[:, None, :]
    mask = H.additive_mask(visible, inputs["input_ids"].shape[1])
    with torch.no_grad():   # the thinker's forward, with the LM head on the last position only
        out = thinker.model(**{k: inputs[k] for k in _NAMES if inputs.get(k) is not None},
                            attention_mask=mask, position_ids=positions,
                            use_audio_in_video=bool(audio_in_video), use_cache=False)
        return thinker.lm_head(out.last_hidden_state[0, -1]).float().numpy()


def logits_of_rows(thinker, ids, rows, deepstack_rows, positions, visual_mask, visible=None) -> np.ndarray:
    """hf_reference.deepstack_logits with this model's text model: what we decoded (rows where ids < 0,
    deepstack at visual_mask) at the given positions (compressed decoding: kept rows at their
    original positions)."""
    return H.deepstack_logits(thinker.model.language_model, thinker.lm_head,
                              thinker.config.text_config.hidden_size,
                              ids, rows, deepstack_rows, positions, visual_mask, visible)


def vision_rows(thinker, inputs, kind: str | None = None) -> tuple[np.ndarray, list[np.ndarray]]:
    """(main rows [n, hidden], [deepstack rows [n, hidden] per deepstack layer]) as the thinker's
    visual tower gives them for the inputs' video (kind "video", the default where there is one)
    or image(s) (kind "image"), every item concatenated in order."""
    import torch

    kind = kind or ("video" if inputs.get("pixel_values_videos") is not None else "image")
    with torch.no_grad():
        if kind == "video":
            out = thinker.get_video_features(inputs["pixel_values_videos"], inputs["video_grid_thw"], return_dict=True)
        else:
            out = thinker.get_image_features(inputs["pixel_values"], inputs["image_grid_thw"], return_dict=True)
        main = torch.cat(out.pooler_output).float().numpy()
        deep = [torch.cat(d).float().numpy() for d in out.deepstack_features]
    return main, deep


def audio_rows(thinker, inputs) -> np.ndarray:
    """Rows [n, hidden] of the inputs' audio (every clip, in order) as the thinker's audio tower
    gives them (its n_window chunking, the lengths of feature_attention_mask)."""
    import torch

    with torch.no_grad():
        out = thinker.get_audio_features(inputs["input_features"], inputs["feature_attention_mask"], return_dict=True)
        return out.last_hidden_state.float().numpy()


def n_audio_tokens(thinker, inputs) -> list[int]:
    """The processor / get_rope_index count of audio tokens per clip (_get_feat_extract_output_lengths)."""
    from transformers.models.qwen3_omni_moe.processing_qwen3_omni_moe import _get_feat_extract_output_lengths

    lengths = inputs["feature_attention_mask"].sum(-1)
    return [int(n) for n in _get_feat_extract_output_lengths(lengths, thinker.config.audio_config.n_window)]
