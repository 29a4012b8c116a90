"""Qwen3-VL (video without sound, images, text) against transformers: a tiny random Qwen3-VL
(scripts/make_hf_tiny_families.py: dense qwen3vl LLM, Qwen3-VL vision tower with a deepstack layer,
the released token ids) converted by llama.cpp's own converter (f32 files, f32 KV cache, no flash
attention) against Qwen3VLForConditionalGeneration, float32, eager (tests/qwen3_vl_reference.py).

Checked: the same token ids through the chat template and Qwen3VLProcessor's expansion (before each
frame grid "<t seconds>" and its own wrappers, as text); our decode positions equal to
get_rope_index (each grid placed as an image where the text before it ends, the next text at
+max(h, w)); last-token logits at retention 1.0; compressed, the keep masks equal to the numpy
reference of the method (main slice scored) and the last logits equal to transformers' text model
fed what we decoded (kept rows, deepstack at the kept visual rows, the timestamps' tokens) at our
positions.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch  # noqa: F401  (references: a missing one must fail, not skip)

import pyomnisift
from pyomnisift import _sequence as S
from pyomnisift.media import decode, sampling

import qwen3_vl_reference as R3
import sift_reference as R
from decode_helpers import clear, logits_of, prefill
from test_parity_qwen3_omni import VISION_ROWS_ATOL
from test_parity_transformers import MAX_ABS, MIN_COS, Recorder, agreement, llama_cpp_mask, write_video

TOKEN_OF = {S.MODALITY_IMAGE: R3.IMAGE_TOKEN, S.MODALITY_VIDEO: R3.VIDEO_TOKEN}
# The image prompt end to end: libmtmd's tower is 1.7e-3 from transformers' on its 6 rows
# (test_vision_rows_match_reference) and this random model amplifies it to 5.2e-3 in 23 tokens; the
# decode given the same rows is 2.8e-4 (test_llm_matches_reference_on_our_rows, held to MAX_ABS).
QWEN3_VL_IMAGE_MAX_ABS = 6e-3
PATCH = 32
FRAME = (512, 288)


@pytest.fixture(scope="module")
def fam():
    import make_hf_tiny_families

    return make_hf_tiny_families.make_hf_tiny_family("qwen3-vl")


@pytest.fixture(scope="module")
def model(fam):
    import make_hf_tiny_families

    return make_hf_tiny_families.load_qwen3_vl(fam["hf"])


@pytest.fixture(scope="module")
def processor(fam):
    return R3.make_processor(fam["hf"])


@pytest.fixture(scope="module")
def ours(fam):
    llm = pyomnisift.Llama(str(fam["llm"]), str(fam["mmproj"]), n_ctx=4096, n_threads=2, type_k=0, type_v=0,
                           flash_attn=False, video_retention=1.0)
    assert llm.chat_handler.family.name == "Qwen3-VL"
    yield llm
    llm.close()


@pytest.fixture(scope="module")
def media(tmp_path_factory):
    from PIL import Image

    d = tmp_path_factory.mktemp("parity-qwen3-vl-media")
    image = d / "image.png"     # 96x64: multiples of 32 inside the image bounds, not resized
    yy, xx = np.mgrid[0:64, 0:96]
    Image.fromarray(np.stack([xx * 2, yy * 3, (xx + yy) % 256], -1).astype(np.uint8)).save(image)
    return {"image": image,
            "video": write_video(d / "video.mp4", seconds=4, with_audio=False, size=FRAME),
            "video-1.5s": write_video(d / "video-1.5s.mp4", seconds=1.5, with_audio=False, size=FRAME),
            # a sound track the model cannot hear: used without it, with a warning
            "video+audio": write_video(d / "video+audio.mp4", seconds=4, with_audio=True, size=FRAME)}


def _part(kind, path):
    if kind == "image":
        return {"type": "image_url", "image_url": {"url": str(path)}}
    return {"type": "video_url", "video_url": {"url": str(path)}}


def reference_inputs(processor, case: str, media) -> dict:
    if case == "text":
        return R3.reference_inputs(processor, "text")
    if case == "image":
        return R3.reference_inputs(processor, "image", image=decode.read_image(media["image"]))
    lo, hi = sampling.video_pixel_bounds(PATCH)
    info = decode.probe_video(media[case], 2.0, lo, hi, factor=PATCH)
    frames = np.stack(list(decode.iter_video_frames(media[case], info=info)))
    return R3.reference_inputs(processor, "video", video_frames=frames, frames_indices=info.frame_indices.tolist(),
                               source_fps=info.source_fps)


def run_ours(ours, processor, media, case: str, **settings):
    kind = case.split("-")[0].split("+")[0]
    parts = [] if kind == "text" else [_part(kind, media[case])]
    parts.append({"type": "text", "text": R3.QUESTION})
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


def media_ids(processor) -> list:
    return [processor.tokenizer.convert_tokens_to_ids(t) for t in TOKEN_OF.values()]


@pytest.fixture(scope="module")
def results(ours, processor, media):
    cache = {}

    def get(case):
        if case not in cache:
            ids, positions, logits, *_ = run_ours(ours, processor, media, case)
            cache[case] = ids, positions, logits, reference_inputs(processor, case, media)
        return cache[case]

    return get


@pytest.mark.parametrize("case", ["text", "image", "video", "video-1.5s", "video+audio"])
def test_prompt_positions_and_logits_match_reference(results, model, processor, case):
    ids, positions, logits, inputs = results(case)
    ref_ids = inputs["input_ids"][0].numpy()
    assert ids.tolist() == ref_ids.tolist(), f"prompt differs:\n{R3.expanded_text(processor, inputs)!r}"
    np.testing.assert_array_equal(positions, R3.rope_index(model, inputs))
    visible = llama_cpp_mask(ids, positions, media_ids(processor))
    assert (visible == np.tril(np.ones_like(visible))).all()   # positions rise with the sequence
    ref = R3.reference_logits(model, inputs)
    max_abs, cos = agreement(logits, ref)
    print(f"\n{case}: {len(ids)} tokens, max abs diff {max_abs:.2e}, cosine {cos:.9f}")
    bound = QWEN3_VL_IMAGE_MAX_ABS if case == "image" else MAX_ABS
    assert max_abs < bound and cos > MIN_COS, f"{case}: max abs diff {max_abs:.2e}, cosine {cos:.9f}"


def test_video_timestamps_are_text_before_each_grid(results, processor):
    """"<t seconds>" (the mean source time of the grid's two frames, one decimal) and the grid's own
    wrappers before every grid (4 s at 2 frames a second: 4 grids), as ordinary text positions: each
    grid starts where its text ends and the next text follows at + max(h, w)."""
    import re

    ids, positions, _, inputs = results("video")
    stamps = [float(t) for t in re.findall(r"<([0-9.]+) seconds><\|vision_start\|>", R3.expanded_text(processor, inputs))]
    assert len(stamps) == inputs["video_grid_thw"][0, 0].item() == 4 and np.all(np.diff(stamps) > 0.9), stamps
    video = ids == processor.tokenizer.convert_tokens_to_ids(R3.VIDEO_TOKEN)
    starts = np.unique(positions[0][video])
    _, gh, gw = (inputs["video_grid_thw"][0] // 2).tolist()
    gaps = np.diff(starts) - max(gh, gw)    # the text between two grids: end, timestamp, start
    n_between = len(processor.tokenizer("<|vision_end|><1.2 seconds><|vision_start|>")["input_ids"])
    assert (gaps == n_between).all(), gaps


def _reference_of_recorded(model, rec, positions, processor):
    ids = np.array(rec.ids)
    given = np.isin(ids, media_ids(processor))
    rows = np.concatenate([data for kind, data, _ in rec.calls if kind == "rows"])
    hidden = model.config.text_config.hidden_size
    deep = [rows[:, hidden * (i + 1): hidden * (i + 2)] for i in range(rows.shape[1] // hidden - 1)]
    return R3.logits_of_rows(model, np.where(given, -1, ids), rows[:, :hidden], deep or None, positions, given)


@pytest.mark.parametrize("case", ["image", "video"])
def test_llm_matches_reference_on_our_rows(ours, processor, media, model, case):
    ids, positions, logits, rec, _, _ = run_ours(ours, processor, media, case)
    max_abs, cos = agreement(logits, _reference_of_recorded(model, rec, positions, processor))
    print(f"\n{case} on our rows: max abs diff {max_abs:.2e}, cosine {cos:.9f}")
    assert max_abs < MAX_ABS and cos > MIN_COS, f"{case}: max abs diff {max_abs:.2e}, cosine {cos:.9f}"


@pytest.mark.parametrize("case", ["image", "video"])
def test_vision_rows_match_reference(ours, processor, media, model, case):
    *_, units, _ = run_ours(ours, processor, media, case)
    modality = S.MODALITY_IMAGE if case == "image" else S.MODALITY_VIDEO
    rows = np.concatenate([u.rows[u.modality == modality] for u in units])
    main, deep = R3.vision_rows(model, reference_inputs(processor, case, media))
    ref = np.concatenate([main] + deep, axis=1)
    assert rows.shape == ref.shape
    diff = float(np.abs(rows - ref).max())
    print(f"\n{case} vision rows: {rows.shape}, max abs diff {diff:.2e}")
    assert diff < VISION_ROWS_ATOL, diff


@pytest.mark.parametrize("video_retention", [0.35, 0.25])
def test_compressed_decode_matches_reference(ours, processor, media, model, video_retention):
    ids, positions, logits, rec, units, out = run_ours(ours, processor, media, "video", video_retention=video_retention)
    st = out["omnisift"]["video"]
    assert st["tokens_kept"] < (video_retention + 0.05) * st["tokens_in"]
    hidden = model.config.text_config.hidden_size
    rows = np.concatenate([u.rows for u in units])
    modality = np.concatenate([u.modality for u in units])
    unit_pos = np.concatenate([u.positions for u in units], axis=1)
    keep = np.concatenate([u.keep for u in units])
    ref_keep, _ = R.sift(rows[:, :hidden], modality, unit_pos, video_retention=video_retention)
    np.testing.assert_array_equal(keep, ref_keep)
    assert len(ids) == out["prompt_tokens"] == positions.shape[1]
    max_abs, cos = agreement(logits, _reference_of_recorded(model, rec, positions, processor))
    print(f"\nQwen3-VL video at video_retention {video_retention}: {len(ids)} tokens ({st['tokens_kept']} of "
          f"{st['tokens_in']} video), max abs diff {max_abs:.2e}, cosine {cos:.9f}")
    assert max_abs < MAX_ABS and cos > MIN_COS, f"max abs diff {max_abs:.2e}, cosine {cos:.9f}"
