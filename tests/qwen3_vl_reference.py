"""The transformers side of the Qwen3-VL parity (images, video without sound, text): the reference's
own processor (Qwen3VLProcessor: chat template, placeholder expansion with a text timestamp before
every frame grid, PIL image processor), get_rope_index, a float32 eager forward of the tiny Qwen3-VL
built by scripts/make_hf_tiny_families.py (family "qwen3-vl": released added tokens and token ids,
a Qwen3-VL vision tower with a deepstack layer), its tower's rows, and its text model fed given rows
(compressed decoding).

As in qwen3_omni_reference.py, transformers 5.23 without torchvision has no video processor: frames
(already sampled, sides multiples of 32) are turned into `pixel_values_videos` with numpy by the
Qwen3-VL recipe (hf_reference.patchify with 16-pixel patches). Qwen3VLProcessor writes a video as
one block a temporal grid (two frames):

    <{t:.1f} seconds><|vision_start|><|video_pad|> * (h * w / 4)<|vision_end|>

with t the mean of the grid's first and last frame's source times (frames_indices[i] / source fps:
_calculate_timestamps), so the stand-in video processor returns the video metadata it reads
(frames_indices: the source frame index of each sampled frame; fps: the source stream's rate).
transformers 5.23 replaces only the template's <|video_pad|>: the template's own <|vision_start|> /
<|vision_end|> stay around the per-grid blocks (user\\n<|vision_start|><0.2 seconds><|vision_start|>
...<|vision_end|><|vision_end|>), as the HF processor of the released checkpoints does since 5.x.

get_rope_index splits a video into one grid per temporal patch (t = 1 each): every grid's positions
start where the text before it ends (temporal = that start, no time scaling), the timestamps being
ordinary text positions.
"""

from __future__ import annotations

import numpy as np

import hf_reference as H

PATCH, MERGE, TEMPORAL = 16, 2, 2
IMAGE_TOKEN, VIDEO_TOKEN = "<|image_pad|>", "<|video_pad|>"
VISION_START, VISION_END = "<|vision_start|>", "<|vision_end|>"
QUESTION = "Describe what you see, briefly."

# the family's fallback template (the reference processor renders it; the expansion is the processor's)
from pyomnisift._template import QWEN3_CHAT_TEMPLATE as CHAT_TEMPLATE  # noqa: E402


def patchify(frames: np.ndarray, mean, std) -> tuple[np.ndarray, np.ndarray]:
    """hf_reference.patchify with Qwen3-VL's 16-pixel patches."""
    return H.patchify(frames, mean, std, PATCH)


class NumpyVideoProcessor(H.NumpyVideoProcessor):
    """hf_reference's numpy stand-in plus the video metadata Qwen3VLProcessor reads to write the
    timestamps (metadata.frames_indices, metadata.fps), built from the caller's `video_metadata`
    (one dict or VideoMetadata a video: frames_indices, fps). The frames are taken as sampled."""

    def __call__(self, videos, video_metadata=None, **kw):
        from transformers.video_utils import VideoMetadata

        out = super().__call__(videos, **kw)
        if video_metadata is None:
            raise ValueError("Qwen3-VL's timestamps need each video's frames_indices and source fps")
        if isinstance(video_metadata, (dict, VideoMetadata)):
            video_metadata = [video_metadata]
        metas = []
        for v, m in zip(videos, video_metadata, strict=True):
            v = np.asarray(v)
            idx = [int(i) for i in m["frames_indices"]]
            assert len(idx) == len(v), (len(idx), v.shape)
            metas.append(VideoMetadata(total_num_frames=idx[-1] + 1, fps=float(m["fps"]), height=v.shape[1],
                                       width=v.shape[2], frames_indices=idx))
        out["video_metadata"] = metas
        return out


def make_processor(hf_dir, chat_template: str = CHAT_TEMPLATE):
    """transformers' Qwen3VLProcessor with the checkpoint's tokenizer (the released media token names),
    PIL image processor and the numpy video processor (with metadata)."""
    from transformers import AutoTokenizer, Qwen3VLProcessor
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

    class Processor(Qwen3VLProcessor):
        def check_argument_for_proper_class(self, name, arg):
            if name != "video_processor":  # the stand-in is no registered class
                return super().check_argument_for_proper_class(name, arg)

    image = Qwen2VLImageProcessorPil.from_pretrained(hf_dir)
    assert (image.patch_size, image.merge_size, image.temporal_patch_size) == (PATCH, MERGE, TEMPORAL)
    proc = Processor(image_processor=image, video_processor=NumpyVideoProcessor(image.image_mean, image.image_std, PATCH),
                     tokenizer=AutoTokenizer.from_pretrained(hf_dir), chat_template=chat_template)
    assert (proc.image_token, proc.video_token, proc.vision_start_token, proc.vision_end_token) == (
        IMAGE_TOKEN, VIDEO_TOKEN, VISION_START, VISION_END)
    return proc


def check_patchify(processor, image: np.ndarray) -> None:
    """The numpy recipe against the PIL image processor on one image (sides multiples of 32)."""
    ref = processor.image_processor(images=[image], return_tensors="np")
    ours, grid = patchify(image[None], processor.image_processor.image_mean, processor.image_processor.image_std)
    np.testing.assert_array_equal(ref["image_grid_thw"][0], grid)
    np.testing.assert_allclose(ours, ref["pixel_values"], rtol=0, atol=1e-5)


def timestamps(frames_indices, source_fps: float, temporal_patch_size: int = TEMPORAL) -> list[float]:
    """The seconds Qwen3VLProcessor writes before each temporal grid (its _calculate_timestamps:
    the mean of the grid's first and last frame, frames_indices[i] / source_fps)."""
    idx = [int(i) for i in frames_indices]
    idx += [idx[-1]] * (-len(idx) % temporal_patch_size)
    t = [i / source_fps for i in idx]
    return [(t[i] + t[i + temporal_patch_size - 1]) / 2 for i in range(0, len(t), temporal_patch_size)]


def reference_inputs(processor, kind: str, image=None, video_frames=None, frames_indices=None,
                     source_fps: float | None = None, question: str = QUESTION) -> dict:
    """The reference's inputs for one user turn: `kind` "text", "image" or "video", the medium before
    the question. image uint8 HWC; video_frames uint8 THWC (already sampled, T even), with
    frames_indices (each frame's index in the source stream) and source_fps (the stream's rate),
    from which the processor writes the timestamps.

    Returns the processor's outputs as torch tensors (input_ids, attention_mask, mm_token_type_ids,
    pixel_values, image_grid_thw, pixel_values_videos, video_grid_thw, as present), plus "text"
    (the rendered prompt, before expansion)."""
    assert kind in ("text", "image", "video"), kind
    parts, kw = ([] if kind == "text" else [{"type": kind}]), {}
    parts.append({"type": "text", "text": question})
    if kind == "image":
        kw["images"] = [np.asarray(image)]
    if kind == "video":
        assert frames_indices is not None and source_fps is not None, \
            "a Qwen3-VL video needs frames_indices and source_fps (its timestamps)"
        kw["videos"] = [np.asarray(video_frames)]
        kw["videos_kwargs"] = {"video_metadata": [{"frames_indices": list(frames_indices), "fps": float(source_fps)}]}
    text = processor.apply_chat_template([{"role": "user", "content": parts}], tokenize=False,
                                         add_generation_prompt=True)
    out = dict(processor(text=text, return_tensors="pt", **kw))
    out.pop("video_metadata", None)
    out["text"] = text
    return out


def expanded_text(processor, inputs) -> str:
    """The prompt after the processor's expansion (input_ids decoded), timestamps included."""
    return processor.tokenizer.decode(inputs["input_ids"][0].tolist(), skip_special_tokens=False)


def _mm_token_type_ids(model, inputs):
    """The processor's mm_token_type_ids, or built as it builds them (text 0, image 1, video 2)."""
    import torch

    mm = inputs.get("mm_token_type_ids")
    if mm is None:
        ids = inputs["input_ids"]
        mm = torch.zeros_like(ids)
        mm[ids == model.config.image_token_id] = 1
        mm[ids == model.config.video_token_id] = 2
    return mm


def rope_index(model, inputs) -> np.ndarray:
    """get_rope_index's position ids [3, L], int64 (Qwen3VLModel.get_rope_index: input_ids,
    mm_token_type_ids, image_grid_thw, video_grid_thw)."""
    import torch

    with torch.no_grad():
        pos, _ = model.model.get_rope_index(inputs["input_ids"], _mm_token_type_ids(model, inputs),
                                            image_grid_thw=inputs.get("image_grid_thw"),
                                            video_grid_thw=inputs.get("video_grid_thw"))
    return pos[:, 0].numpy().astype(np.int64)


_NAMES = ("input_ids", "pixel_values", "image_grid_thw", "pixel_values_videos", "video_grid_thw")


def reference_logits(model, inputs, visible=None) -> np.ndarray:
    """The model's last-position logits (float32, eager): its whole forward (vision tower with
    deepstack, placeholder scatter, deepstack added after the first decoder layers) at
    get_rope_index's positions, causal mask, or the given one (`visible`, bool [L, L] [query, key])."""
    import torch

    positions = torch.from_numpy(rope_index(model, inputs))[:, None, :]
    mask = H.additive_mask(visible, inputs["input_ids"].shape[1])
    with torch.no_grad():   # the model's forward, with the LM head on the last position only
        out = model.model(**{k: inputs[k] for k in _NAMES if inputs.get(k) is not None},
                          mm_token_type_ids=_mm_token_type_ids(model, inputs), attention_mask=mask,
                          position_ids=positions, use_cache=False)
        return model.lm_head(out.last_hidden_state[0, -1]).float().numpy()


def logits_of_rows(model, ids, rows, deepstack_rows, positions, visual_mask, visible=None) -> np.ndarray:
    """hf_reference.deepstack_logits with this model's text model: what we decoded (rows where ids < 0,
    deepstack at visual_mask) at the given positions (compressed decoding: kept rows at their
    original positions)."""
    return H.deepstack_logits(model.model.language_model, model.lm_head, model.config.text_config.hidden_size,
                              ids, rows, deepstack_rows, positions, visual_mask, visible)


def vision_rows(model, inputs, kind: str | None = None) -> tuple[np.ndarray, list[np.ndarray]]:
    """(main rows [n, hidden], [deepstack rows [n, hidden] per deepstack layer]) as the model's
    visual tower gives them for the inputs' video (kind "video", the default where there is one)
    or image(s) (kind "image"), every item concatenated in order."""
    import torch

    kind = kind or ("video" if inputs.get("pixel_values_videos") is not None else "image")
    with torch.no_grad():
        if kind == "video":
            out = model.model.get_video_features(inputs["pixel_values_videos"], inputs["video_grid_thw"],
                                                 return_dict=True)
        else:
            out = model.model.get_image_features(inputs["pixel_values"], inputs["image_grid_thw"], return_dict=True)
        main = torch.cat(out.pooler_output).float().numpy()
        deep = [torch.cat(d).float().numpy() for d in out.deepstack_features]
    return main, deep
