"""Qwen2.5-VL (video without sound, images, text) against transformers, as test_parity_transformers.py
checks Qwen2.5-Omni: a tiny random Qwen2.5-VL (scripts/make_hf_tiny_families.py) converted by
llama.cpp's own converter (f32 files, f32 KV cache, no flash attention) against the same model in
transformers, float32, eager attention.

Checked: the same token ids through the whole chat template (Qwen2.5-VL's <|vision_start|> /
<|vision_end|> wrappers and its processor's placeholder expansion); our decode positions equal to
Qwen2.5-VL's get_rope_index (2 position ids a second of video: vision_config.tokens_per_second);
last-token logits at retention 1.0 within the Omni tests' tolerance; compressed, the keep masks
equal to the independent reference of the method (tests/sift_reference.py) on the rows the
pipeline encoded, and the last logits equal to transformers fed the kept rows at their original
position ids.
"""

from __future__ import annotations

import types
import warnings

import numpy as np
import pytest
import torch  # noqa: F401  (references: a missing one must fail, not skip)

import pyomnisift
from pyomnisift import _sequence as S
from pyomnisift._template import QWEN25_VL_CHAT_TEMPLATE
from pyomnisift.media import decode

import hf_reference as H
import sift_reference as R
from decode_helpers import clear, logits_of, prefill
from test_parity_transformers import MAX_ABS, MIN_COS, QUESTION, Recorder, agreement, write_video

TOKEN_OF = {S.MODALITY_IMAGE: "<|image_pad|>", S.MODALITY_VIDEO: "<|video_pad|>"}


@pytest.fixture(scope="module")
def vl():
    import make_hf_tiny_families

    return make_hf_tiny_families.make_hf_tiny_family("qwen2.5-vl")


@pytest.fixture(scope="module")
def model(vl):
    import make_hf_tiny_families

    return make_hf_tiny_families.load_qwen25_vl(vl["hf"])


class _VideoProcessor(H.NumpyVideoProcessor):
    """The numpy stand-in of Qwen2VLVideoProcessor (hf_reference), with the sampling metadata
    Qwen2_5_VLProcessor reads second_per_grid_ts from (temporal patch 2 / sampled fps)."""

    def __call__(self, videos, fps=2.0, **kw):
        out = super().__call__(videos, **kw)
        out["video_metadata"] = [types.SimpleNamespace(sampled_fps=fps) for _ in videos]
        return out


@pytest.fixture(scope="module")
def processor(vl):
    from transformers import AutoTokenizer, Qwen2_5_VLProcessor
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

    class Processor(Qwen2_5_VLProcessor):
        def check_argument_for_proper_class(self, name, arg):
            if name != "video_processor":  # the stand-in is no registered class
                return super().check_argument_for_proper_class(name, arg)

    image = Qwen2VLImageProcessorPil.from_pretrained(vl["hf"])
    return Processor(image_processor=image, video_processor=_VideoProcessor(image.image_mean, image.image_std),
                     tokenizer=AutoTokenizer.from_pretrained(vl["hf"]), chat_template=QWEN25_VL_CHAT_TEMPLATE)


@pytest.fixture(scope="module")
def ours(vl):
    # f32 KV cache (GGML_TYPE_F32 = 0), no flash attention: the reference computes in float32. The
    # converted model has no chat template: the family's released one is the fallback.
    llm = pyomnisift.Llama(str(vl["llm"]), str(vl["mmproj"]), n_ctx=4096, n_threads=2, type_k=0, type_v=0,
                           flash_attn=False, video_retention=1.0)
    assert llm.chat_handler.family.name == "Qwen2.5-VL"
    yield llm
    llm.close()


@pytest.fixture(scope="module")
def media(assets, tmp_path_factory):
    from PIL import Image

    d = tmp_path_factory.mktemp("parity-vl-media")
    image = d / "image.png"   # 224x168: multiples of 28 inside the bounds, neither side resizes
    Image.open(assets["test-1.jpeg"]).convert("RGB").resize((224, 168), Image.BICUBIC).save(image)
    return {"image": image, "video": write_video(d / "video.mp4", seconds=4, with_audio=False),
            "video-1.5s": write_video(d / "video-1.5s.mp4", seconds=1.5, with_audio=False),
            # with a sound track: Qwen2.5-VL has no audio tower, the video goes without it
            "video+audio": write_video(d / "video+audio.mp4", seconds=4, with_audio=True)}


def reference_inputs(processor, case: str, media, video_fps: float = 2.0) -> dict:
    kind = case.split("-")[0].split("+")[0]
    parts, kw = [], {}
    if kind == "image":
        parts.append({"type": "image"})
        kw["images"] = [decode.read_image(media[case])]
    elif kind == "video":
        parts.append({"type": "video"})
        kw["videos"] = [np.stack(list(decode.iter_video_frames(media[case], video_fps)))]
        kw["videos_kwargs"] = {"fps": decode.probe_video(media[case], video_fps).sample_fps}
    parts.append({"type": "text", "text": QUESTION})
    text = processor.apply_chat_template([{"role": "user", "content": parts}], tokenize=False,
                                         add_generation_prompt=True)
    out = dict(processor(text=text, return_tensors="pt", **kw))
    out["text"] = text
    return out


def rope_index(model, inputs) -> np.ndarray:
    with torch.no_grad():
        pos, _ = model.model.get_rope_index(inputs["input_ids"], inputs["mm_token_type_ids"],
                                            inputs.get("image_grid_thw"), inputs.get("video_grid_thw"),
                                            inputs.get("second_per_grid_ts"),
                                            torch.ones_like(inputs["input_ids"]))
    return pos[:, 0].numpy()


def reference_logits(model, inputs) -> np.ndarray:
    names = ("input_ids", "pixel_values", "image_grid_thw", "pixel_values_videos", "video_grid_thw",
             "second_per_grid_ts", "mm_token_type_ids")
    with torch.no_grad():
        out = model.model(**{k: inputs[k] for k in names if inputs.get(k) is not None},
                          attention_mask=torch.ones_like(inputs["input_ids"]),
                          position_ids=torch.from_numpy(rope_index(model, inputs))[:, None, :], use_cache=False)
        return model.lm_head(out.last_hidden_state[0, -1]).numpy()


def _part(kind, path):
    return {"type": "image_url", "image_url": {"url": str(path)}} if kind == "image" else \
        {"type": "video_url", "video_url": {"url": str(path)}}


def run_ours(ours, processor, media, case: str, **settings):
    """(ids, positions [3, L], last logits, recorder, usage) of our prefill of one case."""
    kind = case.split("-")[0].split("+")[0]
    parts = [] if kind == "text" else [_part(kind, media[case])]
    parts.append({"type": "text", "text": QUESTION})
    rec = Recorder(ours, processor.tokenizer, TOKEN_OF)
    units = []

    def on_unit(u):
        units.append(u)
        rec.on_unit(u)

    clear(ours)
    try:
        out = prefill(ours, [{"role": "user", "content": parts}], on_unit=on_unit, **settings)
    finally:
        rec.close()
    return np.array(rec.ids), rec.positions, logits_of(ours), rec, units, out


@pytest.fixture(scope="module")
def results(ours, processor, media, model):
    cache = {}

    def get(case):
        if case not in cache:
            with warnings.catch_warnings(record=True) as seen:
                warnings.simplefilter("always")
                ids, positions, logits, *_ = run_ours(ours, processor, media, case)
            # a sound track the model cannot hear is said, not dropped silently
            said = [str(w.message) for w in seen if "without its sound" in str(w.message)]
            assert said == ([f"{media[case]}: this model's mmproj has no audio tower; the video is used "
                             "without its sound"] if case == "video+audio" else []), said
            inputs = reference_inputs(processor, case, media)
            cache[case] = ids, positions, logits, inputs, reference_logits(model, inputs)
        return cache[case]

    return get


@pytest.mark.parametrize("case", ["text", "image", "video", "video-1.5s", "video+audio"])
def test_prompt_positions_and_logits_match_reference(results, model, case):
    ids, positions, logits, inputs, ref = results(case)
    ref_ids = inputs["input_ids"][0].numpy()
    assert ids.tolist() == ref_ids.tolist(), f"prompt differs from the reference's:\n{inputs['text']!r}"
    np.testing.assert_array_equal(positions, rope_index(model, inputs))
    max_abs, cos = agreement(logits, ref)
    print(f"\n{case}: {len(ids)} tokens, max abs diff {max_abs:.2e}, cosine {cos:.9f}")
    assert max_abs < MAX_ABS and cos > MIN_COS, f"{case}: max abs diff {max_abs:.2e}, cosine {cos:.9f}"


def test_video_positions_are_qwen25_vl_time(results, processor):
    """2 position ids a second (Qwen2.5-Omni counts 25): grid k of a 2-fps video at t = start + 2k."""
    ids, positions, _, inputs, _ = results("video")
    video = ids == processor.tokenizer.convert_tokens_to_ids("<|video_pad|>")
    t = np.unique(positions[0][video])
    assert len(t) == inputs["video_grid_thw"][0, 0].item() and (np.diff(t) == 2).all(), t


@pytest.mark.parametrize("video_retention", [0.35, 0.25])
def test_compressed_decode_matches_reference(ours, processor, media, model, video_retention):
    """Compressed: the keep masks are the method's (independent numpy reference on the rows the
    pipeline encoded), and transformers given the kept rows as inputs_embeds at their original
    position ids, the text embedded by its own table, gives our last logits."""
    ids, positions, logits, rec, units, out = run_ours(ours, processor, media, "video", video_retention=video_retention)
    st = out["omnisift"]["video"]
    assert st["tokens_kept"] < 0.4 * st["tokens_in"]
    rows = np.concatenate([u.rows for u in units])
    modality = np.concatenate([u.modality for u in units])
    unit_pos = np.concatenate([u.positions for u in units], axis=1)
    keep = np.concatenate([u.keep for u in units])
    ref_keep, _ = R.sift(rows, modality, unit_pos, video_retention=video_retention)
    np.testing.assert_array_equal(keep, ref_keep)
    n, ref = H.logits_of_recorded(model.get_input_embeddings(), model.model.language_model, model.lm_head,
                                  rec.calls, positions)
    assert n == out["prompt_tokens"] == positions.shape[1]
    max_abs, cos = agreement(logits, ref)
    print(f"\nQwen2.5-VL video at video_retention {video_retention}: {n} tokens "
          f"({st['tokens_kept']} of {st['tokens_in']} video), max abs diff {max_abs:.2e}, cosine {cos:.9f}")
    assert max_abs < MAX_ABS and cos > MIN_COS, f"max abs diff {max_abs:.2e}, cosine {cos:.9f}"


def test_grids_sharing_a_time_position_are_refused(ours, media):
    """At 2 position ids a second, frames sampled faster than 4 a second put two grids at one t:
    refused by name, before anything is encoded; the model answers after."""
    with pytest.raises(ValueError, match=r"video\.mp4: sampled at 8 frames a second.*at most 4"):
        ours.create_chat_completion([{"role": "user", "content": [_part("video", media["video"]),
                                                                  {"type": "text", "text": "hi"}]}],
                                    max_tokens=1, video_fps=8.0)
    out = ours.create_chat_completion([{"role": "user", "content": "hi"}], max_tokens=1)
    assert out["usage"]["completion_tokens"] == 1
