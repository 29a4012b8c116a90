"""Qwen3-Omni (video with its own sound, video, images, audio, text) against transformers, as
test_parity_transformers.py checks Qwen2.5-Omni: a tiny random Qwen3-Omni (scripts/
make_hf_tiny_families.py: MoE thinker, Qwen3-VL vision tower with a deepstack layer, qwen3a audio
tower, the released token ids, 13 position ids a second) converted by llama.cpp's own converter
(f32 files, f32 KV cache, no flash attention) against its thinker in transformers, float32, eager
(tests/qwen3_omni_reference.py: the reference processor, get_rope_index, forward).

Checked: the same token ids through the chat template and Qwen3-Omni's processor (its audio
interleaved with the video token by token, every wrapper at its own position); our decode positions
equal to get_rope_index; last-token logits at retention 1.0 within the Omni tests' tolerance; and
compressed, the keep masks equal to the independent numpy reference of the method (scored on the
main embedding, not the deepstack features) and the last logits equal to transformers fed the kept
rows (main rows as inputs_embeds, deepstack rows at the kept visual positions) at their original
position ids.

What the converted pair needs from us (each a finding on llama.cpp 0.3.36, README): the thinker is
written with n_deepstack_layers 0 (transformers adds the deepstack features: pyomnisift.Llama loads
it with the mmproj's count as a metadata override); libmtmd refuses the mmproj whole (vision rows
256 wide with deepstack, audio 128: each tower gets a one-tower copy); and its qwen3a preprocessor
keeps one mel frame more than the reference (the audio given to it ends a sample early).
"""

from __future__ import annotations

import wave

import numpy as np
import pytest
import torch  # noqa: F401  (references: a missing one must fail, not skip)

import pyomnisift
from pyomnisift import _sequence as S
from pyomnisift.media import decode, sampling

import qwen3_omni_reference as R3
import sift_reference as R
from decode_helpers import clear, logits_of, prefill
from test_parity_transformers import MAX_ABS, MIN_COS, Recorder, agreement, llama_cpp_mask, write_video

TOKEN_OF = {S.MODALITY_IMAGE: R3.IMAGE_TOKEN, S.MODALITY_VIDEO: R3.VIDEO_TOKEN, S.MODALITY_AUDIO: R3.AUDIO_TOKEN}
PATCH = 32                  # Qwen3's 16-pixel patches, merged 2 x 2
FRAME = (512, 288)          # multiples of 32 inside Qwen3's video bounds (128..768 tokens): resized to itself
# An image's end-to-end logits: its one grid's rows weigh more in 25 tokens than a video's in 595, and
# libmtmd's vision tower is 1.9e-3 from transformers' (ggml's f16 GELU table; test_towers_match_reference):
# 2.8e-3 measured here. The LLM given the same rows is held to MAX_ABS (test_llm_matches_reference_on_our_rows).
IMAGE_MAX_ABS = 3e-3
# libmtmd's Qwen3-VL tower against transformers' (f32 weights): 3.0e-3 on the image, 1.6e-3 on the
# video measured here (Qwen2.5-Omni's tower: 1.7e-3, test_parity_transformers.VISION_ROWS_ATOL 3e-3)
VISION_ROWS_ATOL = 4e-3
# qwen3a rows of audio whose mel frames fill whole 100-frame chunks (whole seconds): 2.5e-3 measured
AUDIO_ROWS_ATOL = 5e-3


@pytest.fixture(scope="module")
def fam():
    import make_hf_tiny_families

    return make_hf_tiny_families.make_hf_tiny_family("qwen3-omni")


@pytest.fixture(scope="module")
def thinker(fam):
    import make_hf_tiny_families

    return make_hf_tiny_families.load_qwen3_omni(fam["hf"])


@pytest.fixture(scope="module")
def processor(fam):
    return R3.make_processor(fam["hf"])


@pytest.fixture(scope="module")
def ours(fam):
    llm = pyomnisift.Llama(str(fam["llm"]), str(fam["mmproj"]), n_ctx=4096, n_threads=2, type_k=0, type_v=0,
                           flash_attn=False, video_retention=1.0, audio_retention=1.0)
    assert llm.chat_handler.family.name == "Qwen3-Omni"
    yield llm
    llm.close()


@pytest.fixture(scope="module")
def media(tmp_path_factory):
    from PIL import Image

    d = tmp_path_factory.mktemp("parity-qwen3-omni-media")
    rng = np.random.default_rng(3)
    image = d / "image.png"     # 96x64: multiples of 32 inside the image bounds, not resized
    yy, xx = np.mgrid[0:64, 0:96]
    Image.fromarray(np.stack([xx * 2, yy * 3, (xx + yy) % 256], -1).astype(np.uint8)).save(image)
    audio = d / "audio.wav"
    t = np.arange(4 * 16000) / 16000
    pcm = 0.3 * np.sin(2 * np.pi * (300 + 200 * t) * t) + 0.05 * rng.standard_normal(len(t))
    with wave.open(str(audio), "wb") as w:
        w.setnchannels(1), w.setsampwidth(2), w.setframerate(16000)
        w.writeframes((pcm * 32767).astype(np.int16).tobytes())
    return {"image": image, "audio": audio,
            "video": write_video(d / "video.mp4", seconds=4, with_audio=False, size=FRAME),
            # PCM: exactly 4 s of sound (an AAC track carries 1,536 samples more: see
            # test_partial_audio_chunk_is_llama_cpp_s)
            "video+audio": write_video_pcm(d / "video+audio.mkv", seconds=4, size=FRAME),
            "video+aac": write_video(d / "video+aac.mp4", seconds=4, with_audio=True, size=FRAME)}


def write_video_pcm(path, seconds: int, size, fps: int = 10):
    """A synthetic clip with an uncompressed sound track of exactly `seconds` s (Matroska)."""
    import av

    rng = np.random.default_rng(7)
    width, height = size
    yy, xx = np.mgrid[0:height, 0:width]
    with av.open(str(path), "w") as c:
        vs = c.add_stream("mpeg4", rate=fps)
        vs.width, vs.height, vs.pix_fmt, vs.bit_rate = width, height, "yuv420p", 4_000_000
        aus = c.add_stream("pcm_s16le", rate=16000, layout="mono")
        for i in range(seconds * fps):
            img = np.stack([(xx * 255 // width + 9 * i) % 256, (yy * 255 // height) % 256,
                            ((xx + yy + 13 * i) % 64) * 4], axis=-1).astype(np.uint8)
            img[60:120, (i * 11) % (width - 60):][:, :60] = rng.integers(0, 256, (60, 60, 3), dtype=np.uint8)
            for p in vs.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                c.mux(p)
        for p in vs.encode():
            c.mux(p)
        t = np.arange(seconds * 16000) / 16000
        pcm = 0.3 * np.sin(2 * np.pi * (200 + 150 * t) * t) + 0.05 * rng.standard_normal(len(t))
        frame = av.AudioFrame.from_ndarray((pcm * 32767).astype(np.int16)[None], format="s16", layout="mono")
        frame.sample_rate = 16000
        for p in aus.encode(frame):
            c.mux(p)
        for p in aus.encode():
            c.mux(p)
    return path


def _part(kind, path):
    if kind == "image":
        return {"type": "image_url", "image_url": {"url": str(path)}}
    if kind == "audio":
        import base64

        return {"type": "input_audio", "input_audio": {"data": base64.b64encode(path.read_bytes()).decode(),
                                                       "format": "wav"}}
    return {"type": "video_url", "video_url": {"url": str(path)}}


def video_frames(path, fps: float = 2.0):
    """The frames and sample rate our pipeline samples (Qwen3's 32-pixel factor and bounds)."""
    lo, hi = sampling.video_pixel_bounds(PATCH)
    info = decode.probe_video(path, fps, lo, hi, factor=PATCH)
    return np.stack(list(decode.iter_video_frames(path, info=info))), info.sample_fps


def reference_inputs(processor, case: str, media) -> dict:
    if case == "text":
        return R3.reference_inputs(processor, "text")
    if case == "image":
        return R3.reference_inputs(processor, "image", image=decode.read_image(media["image"]))
    if case == "audio":
        return R3.reference_inputs(processor, "audio", audio=decode.read_audio(media["audio"]))
    path = media[case]
    frames, fps = video_frames(path)
    if case == "video":
        return R3.reference_inputs(processor, "video", video_frames=frames, fps=fps)
    return R3.reference_inputs(processor, "video", video_frames=frames, fps=fps,   # video+audio, video+aac
                               audio=decode.read_audio(path), audio_in_video=True)


def run_ours(ours, processor, media, case: str, **settings):
    """(ids, positions [3, L], last logits, recorder, units, usage) of our prefill of one case."""
    parts = [] if case == "text" else [_part(case.split("+")[0], media[case])]   # "video+audio": the video
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
def results(ours, processor, media, thinker):
    cache = {}

    def get(case):
        if case not in cache:
            ids, positions, logits, *_ = run_ours(ours, processor, media, case)
            inputs = reference_inputs(processor, case, media)
            cache[case] = ids, positions, logits, inputs
        return cache[case]

    return get


@pytest.mark.parametrize("case", ["text", "image", "audio", "video", "video+audio"])
def test_prompt_positions_and_logits_match_reference(results, thinker, processor, case):
    """Ids and positions identical; logits within the Omni tolerance. With a video's sound, audio
    token j shares t with grid k where j = 13 k, and llama.cpp's M-RoPE mask orders such ties by
    (t, h, w), not by sequence (test_parity_transformers.mask_differences): the reference is run
    with the mask our decode gives llama.cpp, which for the other cases is its own causal mask."""
    ids, positions, logits, inputs = results(case)
    ref_ids = inputs["input_ids"][0].numpy()
    assert ids.tolist() == ref_ids.tolist(), f"prompt differs from the reference's:\n{inputs['text']!r}"
    np.testing.assert_array_equal(positions, R3.rope_index(thinker, inputs))
    visible = llama_cpp_mask(ids, positions, media_ids(processor))
    causal = np.tril(np.ones_like(visible))
    assert (case == "video+audio") == bool((visible != causal).any())
    ref = R3.reference_logits(thinker, inputs, visible=None if (visible == causal).all() else visible)
    max_abs, cos = agreement(logits, ref)
    print(f"\n{case}: {len(ids)} tokens, max abs diff {max_abs:.2e}, cosine {cos:.9f}")
    bound = IMAGE_MAX_ABS if case == "image" else MAX_ABS
    assert max_abs < bound and cos > MIN_COS, f"{case}: max abs diff {max_abs:.2e}, cosine {cos:.9f}"


@pytest.mark.parametrize("case", ["image", "audio", "video", "video+audio"])
def test_llm_matches_reference_on_our_rows(ours, processor, media, thinker, case):
    """The decode alone, at retention 1.0: transformers' text model fed the rows we decoded (main
    slice as inputs_embeds, deepstack slice at the visual rows) at our positions gives our logits."""
    ids, positions, logits, rec, _, _ = run_ours(ours, processor, media, case)
    visible = llama_cpp_mask(ids, positions, media_ids(processor))
    ref = _reference_of_recorded(thinker, rec, positions, processor,
                                 None if (visible == np.tril(np.ones_like(visible))).all() else visible)
    max_abs, cos = agreement(logits, ref)
    print(f"\n{case} on our rows: max abs diff {max_abs:.2e}, cosine {cos:.9f}")
    assert max_abs < MAX_ABS and cos > MIN_COS, f"{case}: max abs diff {max_abs:.2e}, cosine {cos:.9f}"


def _our_rows(ours, processor, media, case, modality):
    *_, units, _ = run_ours(ours, processor, media, case)
    return np.concatenate([u.rows[u.modality == modality] for u in units])


@pytest.mark.parametrize("case", ["image", "video"])
def test_vision_rows_match_reference(ours, processor, media, thinker, case):
    """libmtmd's Qwen3-VL tower (main and deepstack slices) against transformers' visual tower."""
    hidden = thinker.config.text_config.hidden_size
    rows = _our_rows(ours, processor, media, case, S.MODALITY_IMAGE if case == "image" else S.MODALITY_VIDEO)
    main, deep = R3.vision_rows(thinker, reference_inputs(processor, case, media))
    ref = np.concatenate([main] + deep, axis=1)
    assert rows.shape == ref.shape == (len(main), hidden * (1 + len(deep)))
    diff = float(np.abs(rows - ref).max())
    print(f"\n{case} vision rows: {rows.shape}, max abs diff {diff:.2e} (rows up to {np.abs(ref).max():.2f})")
    assert diff < VISION_ROWS_ATOL, diff


@pytest.mark.parametrize("case", ["audio", "video+audio"])
def test_audio_rows_match_reference(ours, processor, media, thinker, case):
    """libmtmd's qwen3a tower (through pyomnisift's frame-count mend) against transformers' audio
    tower, on audio of whole seconds: as many rows, each within AUDIO_ROWS_ATOL; deepstack slices zero."""
    hidden = thinker.config.text_config.hidden_size
    rows = _our_rows(ours, processor, media, case, S.MODALITY_AUDIO)
    ref = R3.audio_rows(thinker, reference_inputs(processor, case, media))
    assert rows.shape == (len(ref), 2 * hidden) and not rows[:, hidden:].any()
    diff = float(np.abs(rows[:, :hidden] - ref).max())
    print(f"\n{case} audio rows: {len(ref)}, max abs diff {diff:.2e}")
    assert diff < AUDIO_ROWS_ATOL, diff


def test_partial_audio_chunk_is_llama_cpp_s(ours, processor, media, thinker):
    """Audio whose mel frames end inside a 100-frame chunk (an AAC track: 4 s + 1,536 samples = 409
    frames): as many rows as the reference (libmtmd alone returns 13 for the padded chunk: 65), but
    libmtmd's qwen3a attends over the chunk's zero padding, which transformers' drops after the
    convolutions: every row of the window moves. Upstream behaviour, measured here; it fails
    (and should then be removed) when llama.cpp masks the padding."""
    hidden = thinker.config.text_config.hidden_size
    inputs = reference_inputs(processor, "video+aac", media)
    ref = R3.audio_rows(thinker, inputs)
    rows = _our_rows(ours, processor, media, "video+aac", S.MODALITY_AUDIO)
    assert len(decode.read_audio(media["video+aac"])) % 16000 != 0
    assert rows.shape == (len(ref), 2 * hidden)
    diff = float(np.abs(rows[:, :hidden] - ref).max())
    print(f"\nvideo+aac audio rows: {len(ref)}, max abs diff {diff:.2e}")
    assert diff > AUDIO_ROWS_ATOL, diff


def test_audio_interleaves_with_video_token_by_token(results, processor, thinker):
    """Qwen3-Omni's layout, not Qwen2.5-Omni's 2-second chunks: each grid k at t = 13 k is followed
    by the audio tokens with 13 k <= j < 13 (k + 1); the four wrappers take four positions."""
    ids, positions, _, inputs = results("video+audio")
    tok = processor.tokenizer.convert_tokens_to_ids
    video, audio = ids == tok(R3.VIDEO_TOKEN), ids == tok(R3.AUDIO_TOKEN)
    start = positions[0][video].min()
    grid_t = np.unique(positions[0][video]) - start
    assert (np.diff(grid_t) == 13).all() and grid_t[0] == 0, grid_t
    order = np.flatnonzero(video | audio)
    kinds = video[order]
    t = positions[0][order] - start
    for k, gt in enumerate(grid_t[1:], 1):   # audio before grid k: exactly those with t below its t
        first = np.flatnonzero(kinds & (t == gt))[0]
        assert (t[:first][~kinds[:first]] < gt).all() and (t[first:][~kinds[first:]] >= gt).all()
    for name in ("<|vision_start|>", "<|audio_start|>", "<|audio_end|>", "<|vision_end|>"):
        assert (ids == tok(name)).sum() == 1
    wrap = [positions[0][ids == tok(n)][0] for n in ("<|vision_start|>", "<|audio_start|>")]
    assert wrap[1] == wrap[0] + 1 and start == wrap[1] + 1


def _reference_of_recorded(thinker, rec, positions, processor, visible=None):
    """transformers' text model fed what we decoded: the kept rows' main slice as inputs_embeds,
    their deepstack slice at the kept visual rows, text embedded by its own table."""
    ids = np.array(rec.ids)
    mids = media_ids(processor)
    rows = np.concatenate([data for kind, data, _ in rec.calls if kind == "rows"])
    hidden = thinker.config.text_config.hidden_size
    tok = processor.tokenizer.convert_tokens_to_ids
    given = np.isin(ids, mids)
    visual = np.isin(ids, [tok(R3.VIDEO_TOKEN), tok(R3.IMAGE_TOKEN)])
    n_deep = rows.shape[1] // hidden - 1
    deep = [rows[visual[given], hidden * (i + 1): hidden * (i + 2)] for i in range(n_deep)]
    assert not rows[~visual[given], hidden:].any(), "audio rows carry no deepstack features"
    return R3.logits_of_rows(thinker, np.where(given, -1, ids), rows[:, :hidden], deep or None, positions,
                             visual, visible)


@pytest.mark.parametrize("case,retention", [("video", 0.35), ("video+audio", 0.35), ("video+audio", 0.25)])
def test_compressed_decode_matches_reference(ours, processor, media, thinker, case, retention):
    """Compressed: the keep masks are the method's (numpy reference on the main slice of the rows
    the pipeline encoded, STVP on grid pairs and the anchor audio selector), and transformers given
    the kept rows at their original position ids gives our last logits."""
    ids, positions, logits, rec, units, out = run_ours(ours, processor, media, case, video_retention=retention,
                                                       audio_retention=retention)
    st = out["omnisift"]
    assert st["video"]["tokens_kept"] < (retention + 0.05) * st["video"]["tokens_in"]
    hidden = thinker.config.text_config.hidden_size
    rows = np.concatenate([u.rows for u in units])
    assert rows.shape[1] == 2 * hidden     # main + one deepstack slice
    modality = np.concatenate([u.modality for u in units])
    unit_pos = np.concatenate([u.positions for u in units], axis=1)
    keep = np.concatenate([u.keep for u in units])
    ref_keep, _ = R.sift(rows[:, :hidden], modality, unit_pos, video_retention=retention, audio_retention=retention)
    np.testing.assert_array_equal(keep, ref_keep)
    if case == "video+audio":
        assert 0 < st["audio"]["tokens_kept"] < st["audio"]["tokens_in"]
    visible = llama_cpp_mask(ids, positions, media_ids(processor))
    ref = _reference_of_recorded(thinker, rec, positions, processor,
                                 None if (visible == np.tril(np.ones_like(visible))).all() else visible)
    assert len(ids) == out["prompt_tokens"] == positions.shape[1]
    max_abs, cos = agreement(logits, ref)
    print(f"\nQwen3-Omni {case} at retention {retention}: {len(ids)} tokens ({st['video']['tokens_kept']} of "
          f"{st['video']['tokens_in']} video, {st['audio']['tokens_kept']} of {st['audio']['tokens_in']} audio), "
          f"max abs diff {max_abs:.2e}, cosine {cos:.9f}")
    assert max_abs < MAX_ABS and cos > MIN_COS, f"max abs diff {max_abs:.2e}, cosine {cos:.9f}"


def test_vgas_is_refused(ours, media):
    """The learned audio selector has no head for this model: refused by name, nothing decoded."""
    with pytest.raises(ValueError, match="vgas"):
        ours.create_chat_completion([{"role": "user", "content": [_part("video", media["video+audio"]),
                                                                  {"type": "text", "text": "hi"}]}],
                                    max_tokens=1, audio_selector="vgas")


def test_numpy_video_patches_are_the_image_processors(processor, media):
    """The reference's video input is built by numpy (no torchvision here): the recipe gives what
    Qwen3-Omni's own PIL image processor gives on an image."""
    R3.check_patchify(processor, decode.read_image(media["image"]))
