"""The transformers side of tests/test_parity_transformers.py: the reference's own processor (chat
template, placeholder expansion, image processor, Whisper features), get_rope_index, and a float32
eager forward of the tiny Qwen2.5-Omni thinker built by scripts/make_hf_tiny_omni.py.

Without torchvision transformers 5.23 has no Qwen2-VL video processor, so video frames are turned
into `pixel_values_videos` here with numpy, by the Qwen2-VL recipe (rescale 1/255, normalize,
patchify with temporal patch 2, 14x14 patches in 2x2 merge order). `check_patchify` compares that
recipe with transformers' PIL image processor on an image, so the numpy copy cannot drift silently.
The frames themselves come from pyomnisift's PyAV decoder on both sides: the reference's frame
sampler (qwen-omni-utils, torchvision / decord) is not what these tests compare.
"""

from __future__ import annotations

import numpy as np

PATCH, MERGE, TEMPORAL = 14, 2, 2
IMAGE_TOKEN, AUDIO_TOKEN, VIDEO_TOKEN = "<|IMAGE|>", "<|AUDIO|>", "<|VIDEO|>"


def patchify(frames: np.ndarray, mean, std, patch: int = PATCH) -> tuple[np.ndarray, np.ndarray]:
    """uint8 frames [T, H, W, 3] (H, W multiples of 2 * patch, T a multiple of 2; one image: T = 1,
    repeated as the processor does) -> (pixel_values [n_patches, 3 * 2 * patch * patch] float32,
    grid_thw [3]), Qwen2-VL's layout (Qwen3-VL's with patch 16)."""
    frames = np.asarray(frames)
    if frames.shape[0] == 1:
        frames = np.repeat(frames, TEMPORAL, axis=0)
    t, h, w, _ = frames.shape
    assert t % TEMPORAL == 0 and h % (patch * MERGE) == 0 and w % (patch * MERGE) == 0, frames.shape
    x = frames.astype(np.float32) * np.float32(1 / 255)
    x = (x - np.asarray(mean, np.float32)) / np.asarray(std, np.float32)
    x = x.transpose(0, 3, 1, 2)  # T, C, H, W
    gt, gh, gw = t // TEMPORAL, h // patch, w // patch
    x = x.reshape(gt, TEMPORAL, 3, gh // MERGE, MERGE, patch, gw // MERGE, MERGE, patch)
    x = x.transpose(0, 3, 6, 4, 7, 2, 1, 5, 8)
    return (np.ascontiguousarray(x.reshape(gt * gh * gw, 3 * TEMPORAL * patch * patch), dtype=np.float32),
            np.array([gt, gh, gw], np.int64))


class NumpyVideoProcessor:
    """Stands in for Qwen2VLVideoProcessor (torchvision-only in transformers 5.23) inside the
    reference processor: frames already at a size the processor would keep. The processors read
    temporal_patch_size (a grid's seconds: temporal_patch_size / fps) and merge_size."""

    temporal_patch_size, merge_size = TEMPORAL, MERGE

    def __init__(self, mean, std, patch: int = PATCH):
        self.mean, self.std, self.patch_size = mean, std, patch

    def __call__(self, videos, **_):
        from transformers.feature_extraction_utils import BatchFeature

        pixels, grids = zip(*(patchify(v, self.mean, self.std, self.patch_size) for v in videos))
        return BatchFeature({"pixel_values_videos": np.concatenate(pixels), "video_grid_thw": np.stack(grids)})


def make_processor(hf_dir, chat_template: str):
    """transformers' Qwen2_5OmniProcessor with its real tokenizer, PIL image processor and Whisper
    feature extractor, and the numpy video processor."""
    from transformers import AutoTokenizer, Qwen2_5OmniProcessor, WhisperFeatureExtractor
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

    class Processor(Qwen2_5OmniProcessor):
        def check_argument_for_proper_class(self, name, arg):
            if name != "video_processor":  # the stand-in is no registered class
                return super().check_argument_for_proper_class(name, arg)

    image = Qwen2VLImageProcessorPil.from_pretrained(hf_dir)
    return Processor(image_processor=image, video_processor=NumpyVideoProcessor(image.image_mean, image.image_std),
                     feature_extractor=WhisperFeatureExtractor.from_pretrained(hf_dir),
                     tokenizer=AutoTokenizer.from_pretrained(hf_dir), chat_template=chat_template)


def check_patchify(processor, image: np.ndarray) -> None:
    ref = processor.image_processor(images=[image], return_tensors="np")
    ours, grid = patchify(image[None], processor.image_processor.image_mean, processor.image_processor.image_std)
    np.testing.assert_array_equal(ref["image_grid_thw"][0], grid)
    np.testing.assert_allclose(ours, ref["pixel_values"], rtol=0, atol=1e-5)


def build_inputs(processor, messages, images=None, audio=None, videos=None, audio_in_video=False,
                 video_fps: float = 2.0) -> dict:
    """The reference's inputs: the chat template rendered by the processor, then the processor's
    expansion of every placeholder. Media are given as arrays (images uint8 HWC, audio float32
    16 kHz, videos uint8 THWC, sampled at video_fps); with audio_in_video, audio[i] is the track of
    videos[i]."""
    text = processor.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    kwargs = {}
    if audio_in_video:
        kwargs = dict(audio_from_video_indices=list(range(len(videos))), load_audio_from_video=True)
    if videos is not None:
        kwargs["videos_kwargs"] = {"fps": video_fps}  # sets video_second_per_grid = 2 / fps
    out = processor(text=text, images=images, audio=audio, videos=videos, return_tensors="pt", **kwargs)
    out = dict(out)
    out["text"] = text
    out["use_audio_in_video"] = audio_in_video
    return out


def rope_index(thinker, inputs):
    """get_rope_index's position ids [3, L] (numpy) for the inputs."""
    import torch

    fam = inputs.get("feature_attention_mask")
    with torch.no_grad():
        pos, _ = thinker.model.get_rope_index(
            inputs["input_ids"], inputs.get("image_grid_thw"), inputs.get("video_grid_thw"),
            torch.ones_like(inputs["input_ids"]), inputs["use_audio_in_video"],
            fam.sum(-1) if fam is not None else None, inputs.get("video_second_per_grid"))
    return pos[:, 0].numpy()


def position_order_mask(positions: np.ndarray) -> np.ndarray:
    """llama.cpp's KV-cache causal mask under M-RoPE (llama-kv-cache.cpp set_input_kq_mask_impl and
    llama_kv_cell_ext::is_2d_gt): key k is visible to query q unless t_k > t_q, or t_k == t_q and
    (y_k > y_q, or y_k == y_q and x_k > x_q), with y the row (section 1) and x the column
    (section 2); text tokens carry t in every section. That is: visible iff (t, y, x)_k <= (t, y, x)_q
    lexicographically, whatever the order of arrival. bool [L, L], [query, key]."""
    t, y, x = (positions[i].astype(np.int64) for i in range(3))
    key = (t[None, :] < t[:, None]) | ((t[None, :] == t[:, None]) & (
        (y[None, :] < y[:, None]) | ((y[None, :] == y[:, None]) & (x[None, :] <= x[:, None]))))
    return key


def last_logits(thinker, inputs, visible: np.ndarray | None = None) -> np.ndarray:
    """The thinker's last-position logits, float32 eager. `visible` (bool [L, L], [query, key])
    replaces the sequence-order causal mask; the positions are get_rope_index's either way.

    transformers 5.23 takes a custom mask as a 4D tensor, returned as is by masking_utils
    (_preprocess_mask_arguments), or as the per-layer-type dict used here; eager attention ADDS it
    to the scores, so it must be float (0 / very negative): a 4D bool mask is accepted silently and
    added as 0 / 1 (checked: last logits off by 1.5 on a 11-token prompt)."""
    import torch

    positions = torch.from_numpy(rope_index(thinker, inputs))[:, None, :]
    if visible is None:
        mask = torch.ones_like(inputs["input_ids"])
    else:
        add = torch.zeros(visible.shape, dtype=torch.float32)
        add[~torch.from_numpy(visible)] = torch.finfo(torch.float32).min
        mask = {"full_attention": add[None, None]}  # used as is by the text model (eager: added to scores)
    names = ("input_ids", "pixel_values", "image_grid_thw", "pixel_values_videos", "video_grid_thw",
             "input_features", "feature_attention_mask", "video_second_per_grid")
    with torch.no_grad():  # the thinker's forward, with the LM head on the last position only
        out = thinker.model(**{k: inputs[k] for k in names if inputs.get(k) is not None}, attention_mask=mask,
                            position_ids=positions, use_audio_in_video=inputs["use_audio_in_video"],
                            use_cache=False)
        return thinker.lm_head(out.last_hidden_state[0, -1]).numpy()


def logits_of_recorded(table, text_model, lm_head, calls, positions: np.ndarray) -> tuple[int, np.ndarray]:
    """(tokens, last logits) of a recorded prompt (Recorder.calls: text tokens and kept media rows in
    decode order) through a reference text model: tokens embedded by its own table, rows as given,
    at our position ids [3, L], its own causal mask."""
    import torch

    with torch.no_grad():
        embeds = torch.cat([table(torch.tensor(data, dtype=torch.long)) if kind == "tokens" else torch.from_numpy(data)
                            for kind, data, _ in calls]).float()[None]
        hidden = text_model(inputs_embeds=embeds, position_ids=torch.from_numpy(positions.astype(np.int64))[:, None, :],
                            attention_mask=torch.ones(1, embeds.shape[1], dtype=torch.long), use_cache=False)
        return embeds.shape[1], lm_head(hidden.last_hidden_state[0, -1]).numpy()


def additive_mask(visible, n: int):
    """An attention mask: all ones (causal in sequence order), or `visible` (bool [L, L], [query,
    key]) as a 4D float additive mask, which Qwen3 text models (create_causal_mask) use as is; it
    must be float: a bool one would be added as 0 / 1 (last_logits)."""
    import torch

    if visible is None:
        return torch.ones(1, n, dtype=torch.long)
    add = torch.zeros(visible.shape, dtype=torch.float32)
    add[~torch.from_numpy(np.asarray(visible, bool))] = torch.finfo(torch.float32).min
    return add[None, None]


def deepstack_logits(text, lm_head, hidden: int, ids, rows, deepstack_rows, positions, visual_mask,
                     visible=None) -> np.ndarray:
    """Last logits of a Qwen3 text model (Qwen3-VL's, Qwen3-Omni's thinker's) fed inputs_embeds: the
    token embedding where ids >= 0, the given rows ([n, hidden], in order) where ids < 0;
    deepstack_rows (one [n_visual, hidden] array a deepstack layer, or None) added after the first
    decoder layers at visual_mask (bool [L], a subset of ids < 0), as the models' forwards pass
    deepstack_visual_embeds / visual_pos_masks; position ids [3, L] as given; causal mask in
    sequence order, or `visible`."""
    import torch

    ids = np.asarray(ids, dtype=np.int64)
    rows = np.asarray(rows, dtype=np.float32).reshape(-1, hidden)
    visual_mask = np.zeros(len(ids), bool) if visual_mask is None else np.asarray(visual_mask, bool)
    given = ids < 0
    assert given.sum() == len(rows), (given.sum(), rows.shape)
    assert not (visual_mask & ~given).any(), "visual rows must be given rows"
    with torch.no_grad():
        embeds = text.embed_tokens(torch.from_numpy(np.where(given, 0, ids))).float()
        embeds[torch.from_numpy(given)] = torch.from_numpy(rows)
        kw = {}
        if deepstack_rows is not None:
            deep = [torch.from_numpy(np.asarray(d, dtype=np.float32)) for d in deepstack_rows]
            assert all(d.shape[0] == visual_mask.sum() for d in deep), ([d.shape for d in deep], visual_mask.sum())
            kw = dict(deepstack_visual_embeds=deep, visual_pos_masks=torch.from_numpy(visual_mask)[None])
        pos = torch.from_numpy(np.asarray(positions, dtype=np.int64))[:, None, :]
        out = text(inputs_embeds=embeds[None], position_ids=pos, use_cache=False,
                   attention_mask=additive_mask(visible, len(ids)), **kw)
        return lm_head(out.last_hidden_state[0, -1]).float().numpy()
