"""The omni pipeline against transformers (notes/parity.md): the tiny random Qwen2.5-Omni thinker of
scripts/make_hf_tiny_omni.py, converted by llama.cpp's own converter (f32 files, f32 KV cache, no
flash attention) against the same thinker in transformers, float32, eager attention.

For text, an image, audio alone, video without sound and video with its sound, the prompt goes
through create_chat_completion (chat template, our media decoding, encoders, layout, positions,
decoding) and through transformers' own processor (chat template, placeholder expansion, image
processor, Whisper features) and get_rope_index. Checked: the same token ids, our decode positions
equal to get_rope_index's exactly, and the last-token logits within parity.md's tolerance.

Video with its sound is where llama.cpp cannot compute the reference: its KV-cache mask under
M-RoPE follows positions, not sequence order (see hf_reference.position_order_mask), and in a
2-second chunk the audio comes after the second grid with smaller t. test_audio_in_video_mask
measures the difference and proves it is the mask alone, by running the reference with llama.cpp's
position-order mask; test_where_position_order_differs says which query-key pairs differ, for any
lengths; test_sequence_order_is_refused_by_llama_cpp shows why no decoding order gives the
reference's mask; the part that decoding order can give (the first grid not seeing the first audio
token) omnisift_decode_embd gives, by starting a batch where (t, h, w) goes down.
"""

from __future__ import annotations

import fractions
import wave
from pathlib import Path

import numpy as np
import pytest

import torch  # noqa: E402  (references: a missing one must fail, not skip)
import transformers  # noqa: F401,E402

import pyomnisift  # noqa: E402
from pyomnisift import _sequence as S  # noqa: E402
from pyomnisift.media import decode  # noqa: E402

import hf_reference as H  # noqa: E402  (tests/ is on the path: pytest's rootdir conftest)
from decode_helpers import clear, decode_rows, decode_tokens, logits_of, prefill  # noqa: E402

# parity.md, f32 files: max abs diff about 1e-3, cosine > 0.99999 (2e-3 as in test_audio_tower.py).
# The floor is llama.cpp's, not the pipeline: on this model a one-token prompt through plain
# llama_cpp.Llama is already 1.8e-4 from an exact float64 forward of the same GGUF weights
# (transformers in float32 stays within 3e-6 of float64), and our text logits equal
# llama_cpp.Llama.eval's bit for bit. The cause (found with Qwen2.5-VL, test_parity_qwen25_vl.py):
# llama.cpp 0.3.36's qwen2vl architecture does not read the GGUF's RMS-norm epsilon and normalizes
# with eps 0; the difference scales with the model's eps (1e-6 here; 1e-5 gives 10x, 1e-12 gives
# 2e-6). README, "Found on the way".
MAX_ABS, MIN_COS = 2e-3, 0.99999
TOKEN_OF = {S.MODALITY_IMAGE: H.IMAGE_TOKEN, S.MODALITY_AUDIO: H.AUDIO_TOKEN, S.MODALITY_VIDEO: H.VIDEO_TOKEN}
QUESTION = "Describe what you see and hear, briefly."


# --- fixtures: the model pair, the reference, the media


@pytest.fixture(scope="module")
def hf_tiny():
    import make_hf_tiny_omni

    return make_hf_tiny_omni.make_hf_tiny_omni()


@pytest.fixture(scope="module")
def thinker(hf_tiny):
    import make_hf_tiny_omni

    return make_hf_tiny_omni.load_thinker(hf_tiny["hf"])


@pytest.fixture(scope="module")
def processor(hf_tiny):
    from pyomnisift.tiny_model import CHAT_TEMPLATE

    return H.make_processor(hf_tiny["hf"], CHAT_TEMPLATE)


@pytest.fixture(scope="module")
def ours(hf_tiny):
    # f32 KV cache (GGML_TYPE_F32 = 0) and no flash attention: the reference computes in float32.
    # The converted model carries no chat template: pyomnisift falls back to the released
    # Qwen2.5-Omni template, the one the reference processor renders with.
    model = pyomnisift.Llama(str(hf_tiny["llm"]), str(hf_tiny["mmproj"]), n_ctx=4096, n_threads=2,
                             type_k=0, type_v=0, flash_attn=False, video_retention=1.0, audio_retention=1.0)
    yield model
    model.close()


@pytest.fixture(scope="module")
def media(assets, tmp_path_factory):
    from PIL import Image

    d = tmp_path_factory.mktemp("parity-media")
    out = {}
    # 224x168: multiples of 28 inside the image bounds, so neither side resizes.
    out["image"] = d / "image.png"
    Image.open(assets["test-1.jpeg"]).convert("RGB").resize((224, 168), Image.BICUBIC).save(out["image"])
    speech = decode.read_audio(assets["test-2.mp3"])
    out["audio-4s"] = write_wav(d / "audio-4s.wav", speech[16000:16000 + 4 * 16000])    # two full 2-s windows
    out["audio-2.6s"] = write_wav(d / "audio-2.6s.wav", speech[:41600])                 # a partial last window
    out["video"] = write_video(d / "video.mp4", seconds=4, with_audio=False)
    out["video+audio"] = write_video(d / "video+audio.mp4", seconds=4, with_audio=True)
    # 1.5 s at 2 fps is 3 frames: clamped to the minimum of 4 (sample fps 2.67, 0.75 s a grid)
    out["video-1.5s"] = write_video(d / "video-1.5s.mp4", seconds=1.5, with_audio=False)
    out["video+audio-1.5s"] = write_video(d / "video+audio-1.5s.mp4", seconds=1.5, with_audio=True)
    # a 1-fps source: 6 frames where 2 fps asks for 12, so the sample fps is 1 (2 s a grid)
    out["video+audio-1fps-source"] = write_video(d / "video+audio-1fps.mp4", seconds=6, with_audio=True, fps=1)
    return out


def write_wav(path: Path, pcm: np.ndarray) -> Path:
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(16000)
        w.writeframes((np.clip(pcm, -1, 1) * 32767).astype("<i2").tobytes())
    return path


def write_video(path: Path, seconds: float, with_audio: bool, fps: int = 10, size=(392, 280)) -> Path:
    """A synthetic clip whose frames are a multiple of 28 inside the video bounds (392x280 = 140
    merged tokens a grid), so that our resize is the identity; optionally an AAC track (a chirp
    and noise)."""
    import av

    rng = np.random.default_rng(5)
    width, height = size
    yy, xx = np.mgrid[0:height, 0:width]
    with av.open(str(path), "w") as c:
        vs = c.add_stream("mpeg4", rate=fps)
        vs.width, vs.height, vs.pix_fmt, vs.bit_rate = width, height, "yuv420p", 4_000_000
        aus = c.add_stream("aac", rate=16000, layout="mono") if with_audio else None
        for i in range(int(seconds * fps)):
            img = np.stack([(xx * 255 // width + 9 * i) % 256, (yy * 255 // height) % 256,
                            ((xx + yy + 13 * i) % 64) * 4], axis=-1).astype(np.uint8)
            x0 = (i * 11) % (width - 60)
            img[60:120, x0:x0 + 60] = rng.integers(0, 256, (60, 60, 3), dtype=np.uint8)
            for p in vs.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                c.mux(p)
        for p in vs.encode():
            c.mux(p)
        if with_audio:
            t = np.arange(int(seconds * 16000)) / 16000
            pcm = 0.3 * np.sin(2 * np.pi * (200 + 150 * t) * t) + 0.05 * rng.standard_normal(len(t))
            frame = av.AudioFrame.from_ndarray(pcm.astype(np.float32)[None], format="flt", layout="mono")
            frame.sample_rate = 16000
            frame.time_base = fractions.Fraction(1, 16000)
            for p in aus.encode(frame):
                c.mux(p)
            for p in aus.encode():
                c.mux(p)
    return path


# --- one case on both sides


class Recorder:
    """What our pipeline decodes, in decode order: token ids (media rows as their placeholder
    token), (t, h, w) decode positions, and what was decoded (to replay it). Text goes through
    llama-cpp-python's eval (positions n_tokens on) and the context's token decode, media rows
    through the C context's queue: each unit's kept rows and positions come from its on_unit record
    (the queue decodes them in this order, several units per batch)."""

    def __init__(self, model, tokenizer, token_of: dict = TOKEN_OF):
        self.ids, self.pos, self.calls = [], [], []
        self.model, self.pipeline = model, model.chat_handler.context
        placeholder = {m: tokenizer.convert_tokens_to_ids(t) for m, t in token_of.items()}
        eval_, tokens_ = model.eval, self.pipeline._tokens

        def record_tokens(toks, positions):
            self.ids += [int(t) for t in toks]
            self.pos.append(np.broadcast_to(np.asarray(positions, np.int64), (3, len(toks))))
            self.calls.append(("tokens", list(toks), np.asarray(positions).copy()))

        def eval(toks):
            record_tokens(toks, np.arange(model.n_tokens, model.n_tokens + len(toks)))
            return eval_(toks)

        def tokens(ctx, toks, pos, nxt, stats, apart=False):
            record_tokens(toks, (pos + np.arange(len(toks)) if apart else np.full(len(toks), pos))
                          if self.pipeline.uses_mrope else np.arange(nxt, nxt + len(toks)))
            return tokens_(ctx, toks, pos, nxt, stats, apart)

        def rows(mod, rows, pos):
            self.ids += [placeholder[int(m)] for m in mod]
            self.pos.append(np.asarray(pos, np.int64))
            self.calls.append(("rows", np.array(rows), np.asarray(pos).copy()))

        def on_unit(u):
            if not len(u.text):
                if u.keep.any():
                    rows(u.modality[u.keep], u.rows[u.keep], u.positions[:, u.keep])
                return
            # text inside the unit (Qwen3-VL's timestamps): the context decodes the kept rows in t
            # order and each text token before the first row of a larger t
            kept = np.flatnonzero(u.keep)
            kept = kept[np.argsort(u.positions[0, kept], kind="stable")]
            j = 0
            for t in np.unique(u.positions[0, kept]):
                k = j + int((u.text_positions[j:] < t).sum())
                if k > j:
                    record_tokens(u.text[j:k], u.text_positions[j:k])
                    j = k
                r = kept[u.positions[0, kept] == t]
                rows(u.modality[r], u.rows[r], u.positions[:, r])
            if j < len(u.text):
                record_tokens(u.text[j:], u.text_positions[j:])

        model.eval, self.pipeline._tokens = eval, tokens
        self.on_unit = on_unit

    def close(self):
        del self.model.eval, self.pipeline._tokens

    @property
    def positions(self) -> np.ndarray:
        return np.concatenate(self.pos, axis=1)


def _openai_part(kind, path):
    if kind == "image":
        return {"type": "image_url", "image_url": {"url": str(path)}}
    if kind == "audio":
        return {"type": "input_audio", "input_audio": {"data": f"file://{path}", "format": "wav"}}
    return {"type": "video_url", "video_url": {"url": str(path)}}


def run_case(ours, processor, media, case: str, video_fps: float = 2.0):
    """(our ids, our positions [3, L], our logits, reference inputs) for one case."""
    kind = case.split("-")[0].split("+")[0]
    parts, hf_parts, kw = [], [], {}
    if kind != "text":
        path = media[case]
        parts.append(_openai_part(kind, path))
        hf_parts.append({"type": kind})
        if kind == "image":
            kw["images"] = [decode.read_image(path)]
        elif kind == "audio":
            kw["audio"] = [decode.read_audio(path)]
        else:
            kw["videos"] = [np.stack(list(decode.iter_video_frames(path, video_fps)))]
            # the reference's processor is given the fps frames were really sampled at
            # (process_mm_info's video_sample_fps): the asked fps unless the frame count was clamped
            kw["video_fps"] = decode.probe_video(path, video_fps).sample_fps
            if "+audio" in case:
                kw["audio"] = [decode.read_audio(path)]
                kw["audio_in_video"] = True
    parts.append({"type": "text", "text": QUESTION})
    hf_parts.append({"type": "text", "text": QUESTION})
    rec = Recorder(ours, processor.tokenizer)
    clear(ours)   # every case decoded whole, as on a fresh model
    try:
        prefill(ours, [{"role": "user", "content": parts}], video_fps=video_fps, on_unit=rec.on_unit)
    finally:
        rec.close()
    inputs = H.build_inputs(processor, [{"role": "user", "content": hf_parts}], **kw)
    inputs["our_calls"] = rec.calls
    return np.array(rec.ids), rec.positions, logits_of(ours), inputs


def agreement(a: np.ndarray, b: np.ndarray) -> tuple[float, float]:
    a, b = a.astype(np.float64), b.astype(np.float64)
    return float(np.abs(a - b).max()), float(a @ b / np.linalg.norm(a) / np.linalg.norm(b))


@pytest.fixture(scope="module")
def results(ours, processor, media, thinker):
    """Cases computed once per module: {case: (ids, positions, our logits, inputs)}."""
    cache = {}

    def get(case, video_fps=2.0):
        if (case, video_fps) not in cache:
            cache[case, video_fps] = run_case(ours, processor, media, case, video_fps)
        return cache[case, video_fps]

    return get


@pytest.fixture(scope="module")
def reference(results, thinker):
    """The reference's last logits with its own (sequence-order) mask, once per case."""
    cache = {}

    def get(case, video_fps=2.0):
        if (case, video_fps) not in cache:
            cache[case, video_fps] = H.last_logits(thinker, results(case, video_fps)[3])
        return cache[case, video_fps]

    return get


# --- tests


def test_numpy_patchify_is_the_image_processor(processor, media):
    H.check_patchify(processor, decode.read_image(media["image"]))


@pytest.mark.parametrize("case", ["text", "image", "audio-4s", "audio-2.6s", "video", "video+audio"])
def test_prompt_and_positions_match_reference(results, thinker, case):
    """Same token ids through the whole chat template (text, wrappers, placeholder counts and their
    interleaving), and our decode positions equal get_rope_index's exactly."""
    ids, positions, _, inputs = results(case)
    ref_ids = inputs["input_ids"][0].numpy()
    assert ids.tolist() == ref_ids.tolist(), f"prompt differs from the reference's:\n{inputs['text']!r}"
    np.testing.assert_array_equal(positions, H.rope_index(thinker, inputs))


# libmtmd's vision tower against transformers' (f32 weights both): 1.7e-3 measured on the CPU (rows up
# to 3.0). The tolerance a device's vision rows are held to where they may differ from the CPU's by
# more than the RPC leg's 1e-4 (test_device_leg.py on Vulkan: lavapipe's f32 shaders against
# ggml-cpu's f16-rounded activations on f16 kernels).
VISION_ROWS_ATOL = 3e-3


def vision_rows(inputs, thinker) -> tuple[np.ndarray, np.ndarray]:
    """(ours, the reference's) vision rows of a video case: ours as libmtmd encoded them (the rows
    decoded at retention 1.0, grid by grid), the reference's vision tower (get_video_features) on its
    processor's pixels."""
    ours = np.concatenate([data for kind, data, _ in inputs["our_calls"] if kind == "rows"])
    with torch.no_grad():
        out = thinker.get_video_features(inputs["pixel_values_videos"], inputs["video_grid_thw"])
        ref = (out.pooler_output if hasattr(out, "pooler_output") else out)
        ref = (torch.cat(ref) if isinstance(ref, (tuple, list)) else ref).numpy()
    return ours, ref


def test_vision_rows_match_reference(results, thinker):
    """The vision tower alone (a 4-s video: 4 grids of 140 rows): libmtmd's rows against
    transformers' on the same pixels (f32 weights in both; the tower's full-attention
    and window-attention blocks, the merger)."""
    ours, ref = vision_rows(results("video")[3], thinker)
    assert ours.shape == ref.shape == (4 * 140, 128), (ours.shape, ref.shape)
    diff = float(np.abs(ours - ref).max())
    print(f"\nvision rows: {ours.shape[0]} rows, max abs diff {diff:.2e} (rows up to {np.abs(ref).max():.2f})")
    assert diff < VISION_ROWS_ATOL, diff


@pytest.mark.parametrize("case", ["text", "image", "audio-4s", "audio-2.6s", "video"])
def test_logits_match_reference(results, reference, case):
    """Where the sequence order and llama.cpp's position order agree, plain parity."""
    ids, positions, logits, inputs = results(case)
    # the premise: llama.cpp's position-order mask is the causal mask here
    visible = H.position_order_mask(positions)
    assert (visible == np.tril(np.ones_like(visible))).all()
    max_abs, cos = agreement(logits, reference(case))
    print(f"\n{case}: {len(ids)} tokens, max abs diff {max_abs:.2e}, cosine {cos:.9f}")
    assert max_abs < MAX_ABS and cos > MIN_COS, f"{case}: max abs diff {max_abs:.2e}, cosine {cos:.9f}"


def mask_differences(ids: np.ndarray, positions: np.ndarray, media_ids) -> dict:
    """Where llama.cpp's position-order mask and the reference's sequence-order mask disagree, in
    three classes of query-key pairs:
    - "text": two text tokens sharing one position (<|vision_bos|><|audio_bos|> and
      <|audio_eos|><|vision_eos|>): llama.cpp lets the first see the second;
    - "same_t": media rows with equal t in different order: the first grid's rows see the first
      audio token (t equal, (y, x) larger) and that token sees only the grid's (0, 0) row;
    - "cross_t": audio with t below the chunk's second grid, laid out after it: it cannot see
      that grid, which sees it."""
    visible = H.position_order_mask(positions)
    diff = visible != np.tril(np.ones_like(visible))
    text = ~np.isin(ids, list(media_ids))
    t = positions[0]
    by_text = diff & text[:, None] & text[None, :]
    same_t = diff & ~by_text & (t[:, None] == t[None, :])
    return {"text": by_text, "same_t": same_t, "cross_t": diff & ~by_text & ~same_t}


def _layout(n_grids, gh, gw, n_audio, n_before=5, n_after=4):
    """ids and positions of text, a video with its sound laid out by _sequence, text."""
    start = n_before + 1
    blocks = S.video_with_audio_blocks(n_grids, gh, gw, n_audio, start)
    end = S.end_position(blocks, start)
    ids = [0] * n_before + [1, 2] + [{S.MODALITY_VIDEO: 3, S.MODALITY_AUDIO: 4}[b.modality]
                                     for b in blocks for _ in range(b.n_rows)] + [5, 6] + [0] * n_after
    pos = np.concatenate([S.audio_positions(n_before, 0), np.full((3, 2), n_before)]
                         + [b.positions for b in blocks]
                         + [np.full((3, 2), end), S.audio_positions(n_after, end + 1)], axis=1)
    return np.array(ids), pos


@pytest.mark.parametrize("n_grids, n_audio, n_cross", [
    (4, 100, 2 * 25),   # two full chunks: audio 0..24 and 50..74 lie before their chunk's second grid
    (4, 25, 25),        # audio of 1 s: all of it before the second grid
    (4, 10, 10),
    (3, 75, 25),        # the last chunk holds one grid: no crossing there
    (1, 50, 0),         # one grid: only the first audio token and the wrapper pairs differ
])
def test_where_position_order_differs(n_grids, n_audio, n_cross):
    """The difference never disappears for video with its sound: the wrappers share positions and
    the first audio token shares the first grid's t, whatever the lengths. Only the crossing
    (audio before a chunk's second grid, by far the largest effect) depends on two grids a chunk."""
    gh, gw = 3, 4
    ids, pos = _layout(n_grids, gh, gw, n_audio)
    d = mask_differences(ids, pos, media_ids=(3, 4))
    g = gh * gw
    assert d["text"].sum() == 2
    assert d["same_t"].sum() == 2 * g - 1
    assert d["cross_t"].sum() == 2 * g * n_cross
    # and nothing else: without the sound the two orders agree
    blocks = S.video_blocks(n_grids, gh, gw, 6)
    pos = np.concatenate([S.audio_positions(5, 0), np.full((3, 1), 5)] + [b.positions for b in blocks], axis=1)
    visible = H.position_order_mask(pos)
    assert (visible == np.tril(np.ones_like(visible))).all()


def test_sequence_order_is_refused_by_llama_cpp(ours):
    """Why no decoding order gives the reference's mask through llama.cpp's public API: a key is
    visible only if it is already in the cache (or in the same batch) AND not after the query in
    (t, y, x) order. For audio to see its chunk's second grid that grid must be decoded first, but
    llama.cpp refuses an embedding batch whose t is below the sequence's largest t (X <= Y), and a
    token batch at a position already used (X < Y): neither the audio after the second grid nor
    <|audio_bos|> after <|vision_bos|> at its position can be decoded later."""
    rows = np.zeros((2, ours.n_embd()), np.float32)
    clear(ours)
    try:
        decode_tokens(ours, [100, 101], [0, 1], False)
        decode_rows(ours, rows, np.array([[27, 27], [2, 2], [2, 3]]))       # a grid at t = 27
        with pytest.raises(Exception, match="decoding failed"):
            decode_rows(ours, rows, np.array([[2, 3], [2, 3], [2, 3]]))     # audio at t = 2, 3
        decode_rows(ours, rows, np.array([[27, 28], [27, 28], [27, 28]]))   # equal t is accepted
        decode_tokens(ours, [102], [29], False)
        with pytest.raises(Exception, match="decoding failed"):
            decode_tokens(ours, [103], [29], False)                         # a second token at 29
    finally:
        clear(ours)


def llama_cpp_mask(ids, positions, media_ids) -> np.ndarray:
    """What our decode gives llama.cpp's attention: its position-order mask, less the pairs that
    omnisift_decode_embd hides by starting a new batch where (t, h, w) goes down (the first grid's
    rows then cannot see the first audio token, decoded after them)."""
    visible = H.position_order_mask(positions)
    shown = visible & ~np.tril(np.ones_like(visible))
    return visible & ~(mask_differences(ids, positions, media_ids)["same_t"] & shown)


@pytest.mark.parametrize("video_fps", [2.0, 1.0])
def test_audio_in_video_mask(results, reference, thinker, processor, video_fps):
    """Video with its sound: see mask_differences for the pairs llama.cpp's position-order mask
    treats differently from the reference's sequence order.

    Asserted: (a) the reference with its own sequence-order mask differs from us by more than the
    tolerance (the size is in the message); (b) the reference run with the mask our decode gives
    llama.cpp (llama_cpp_mask) agrees with us within parity tolerance: the mask is the only
    difference. Printed: how much each class of pairs moves the reference's logits by itself."""
    ids, positions, logits, inputs = results("video+audio", video_fps)
    media_ids = [processor.tokenizer.convert_tokens_to_ids(t) for t in TOKEN_OF.values()]
    visible = llama_cpp_mask(ids, positions, media_ids)
    causal = np.tril(np.ones_like(visible))
    n_future = int((visible & ~causal).sum())      # pairs llama.cpp shows that the reference hides
    n_hidden = int((~visible & causal).sum())      # pairs llama.cpp hides that the reference shows
    assert n_future > 0 and n_hidden > 0

    ref = reference("video+audio", video_fps)
    seq_max, seq_cos = agreement(logits, ref)
    pos_max, pos_cos = agreement(logits, H.last_logits(thinker, inputs, visible))
    report = (f"video+audio at {video_fps:g} fps ({len(ids)} tokens, {n_hidden} query-key pairs hidden by "
              f"llama.cpp that the reference shows, {n_future} shown that it hides): ours vs reference max abs "
              f"diff {seq_max:.3e}, cosine {seq_cos:.9f}; ours vs reference with llama.cpp's mask: max abs "
              f"diff {pos_max:.2e}, cosine {pos_cos:.9f}")
    for name, pairs in mask_differences(ids, positions, media_ids).items():
        m, c = agreement(ref, H.last_logits(thinker, inputs, causal ^ pairs))
        report += f"; {name} pairs ({int(pairs.sum())}) alone move the reference by {m:.2e} (cosine {c:.9f})"
    print("\n" + report)
    assert pos_max < MAX_ABS and pos_cos > MIN_COS, report
    assert seq_max > MAX_ABS, report


def _lex_pieces(positions: np.ndarray) -> list[np.ndarray]:
    """Rows in stable t order (the order llama.cpp needs), cut wherever (t, y, x) goes down: the
    rule of omnisift_decode_embd, written again here from its specification."""
    order = np.argsort(positions[0], kind="stable")
    pos = positions[:, order].T.tolist()
    cuts = [i for i in range(1, len(pos)) if pos[i] <= pos[i - 1]]
    return np.split(order, cuts)


def replay(ours, calls, split: bool) -> np.ndarray:
    """Decodes a recorded prompt again through the same public calls; with split, each media call
    is first cut into _lex_pieces. Returns the last logits."""
    clear(ours)
    try:
        for i, (kind, data, pos) in enumerate(calls):
            if kind == "tokens":
                decode_tokens(ours, data, pos, i == len(calls) - 1)
                continue
            for idx in _lex_pieces(pos) if split else [np.arange(pos.shape[1])]:
                decode_rows(ours, data[idx], pos[:, idx])
        return logits_of(ours)
    finally:
        clear(ours)


@pytest.mark.parametrize("video_fps", [2.0, 1.0])
def test_decode_cuts_where_positions_go_down(results, ours, video_fps):
    """omnisift_decode_embd's batches: cutting each media call beforehand into the pieces of the
    rule changes nothing (the C++ cuts there already), and the replay is faithful."""
    ids, positions, logits, inputs = results("video+audio", video_fps)
    calls = inputs["our_calls"]
    assert any(len(_lex_pieces(pos)) > 1 for kind, _, pos in calls if kind == "rows")
    np.testing.assert_array_equal(replay(ours, calls, split=False), logits)
    np.testing.assert_array_equal(replay(ours, calls, split=True), logits)


@pytest.mark.parametrize("case", ["video", "video+audio"])
def test_video_fps_other_than_2(results, reference, processor, thinker, case):
    """Llama(video_fps=1): frames sampled at 1 fps, so a grid covers 2 s and the reference spaces
    grids 50 position ids apart (video_second_per_grid = temporal patch 2 / fps)."""
    ids, positions, logits, inputs = results(case, 1.0)
    assert inputs["video_second_per_grid"].tolist() == [2.0]
    assert ids.tolist() == inputs["input_ids"][0].tolist()
    np.testing.assert_array_equal(positions, H.rope_index(thinker, inputs))
    max_abs, cos = agreement(logits, reference(case, 1.0))
    if case == "video":
        assert max_abs < MAX_ABS and cos > MIN_COS, f"{case} at 1 fps: max abs diff {max_abs:.2e}, cosine {cos:.9f}"
        return
    # One grid a chunk: no audio lies before a later grid of its chunk, so only the wrapper pairs and
    # the first audio token differ from the reference's order (see mask_differences).
    media_ids = [processor.tokenizer.convert_tokens_to_ids(t) for t in TOKEN_OF.values()]
    d = mask_differences(ids, positions, media_ids)
    assert d["cross_t"].sum() == 0 and d["text"].sum() == 2 and d["same_t"].sum() > 0
    pos_max, pos_cos = agreement(logits, H.last_logits(thinker, inputs, llama_cpp_mask(ids, positions, media_ids)))
    report = (f"video+audio at 1 fps ({len(ids)} tokens): ours vs reference max abs diff {max_abs:.3e}, "
              f"cosine {cos:.9f}; with llama.cpp's mask {pos_max:.2e}, cosine {pos_cos:.9f}")
    print("\n" + report)
    assert pos_max < MAX_ABS and pos_cos > MIN_COS, report


@pytest.mark.parametrize("video_retention", [0.33, 0.23])
def test_compressed_decode_matches_reference_on_kept_rows(ours, processor, media, thinker, video_retention):
    """Compression on (a video without sound at the paper's 35% and 25% video settings): the
    transformers thinker given the same kept rows as inputs_embeds at their original position ids,
    the text embedded by its own table and its own causal mask over the compressed sequence, gives
    our last logits. (Without sound, llama.cpp's position-order mask is that causal mask.)"""
    rec = Recorder(ours, processor.tokenizer)
    clear(ours)
    try:
        out = prefill(ours, [{"role": "user", "content": [_openai_part("video", media["video"]),
                                                         {"type": "text", "text": QUESTION}]}],
                           video_retention=video_retention, on_unit=rec.on_unit)
    finally:
        rec.close()
    ours_logits = logits_of(ours)
    st = out["omnisift"]["video"]
    assert st["tokens_kept"] < 0.4 * st["tokens_in"]
    positions = rec.positions
    visible = H.position_order_mask(positions)
    assert (visible == np.tril(np.ones_like(visible))).all()
    n, ref = H.logits_of_recorded(thinker.get_input_embeddings(), thinker.model, thinker.lm_head, rec.calls, positions)
    assert n == out["prompt_tokens"] == positions.shape[1]
    max_abs, cos = agreement(ours_logits, ref)
    print(f"\nvideo at video_retention {video_retention}: {n} of "
          f"{st['tokens_in'] + n - st['tokens_kept']} tokens, max abs diff {max_abs:.2e}, cosine {cos:.9f}")
    assert max_abs < MAX_ABS and cos > MIN_COS, f"max abs diff {max_abs:.2e}, cosine {cos:.9f}"


@pytest.mark.parametrize("case,second_per_grid", [("video-1.5s", 0.75), ("video+audio-1.5s", 0.75),
                                                  ("video+audio-1fps-source", 2.0)])
def test_clamped_frame_count(results, reference, processor, thinker, case, second_per_grid):
    """Frame counts clamped: a clip shorter than 4 frames at the asked fps (both sides sample 4
    frames: sample fps 2.67, a grid covers 0.75 s), a source slower than the asked fps (all its
    frames: sample fps 1, 2 s a grid) (second_per_grid_ts = 2 / sample fps); positions identical,
    logits within parity (with sound: against the reference given llama.cpp's mask, as above)."""
    ids, positions, logits, inputs = results(case)
    np.testing.assert_allclose(inputs["video_second_per_grid"].numpy(), [second_per_grid], rtol=1e-6)
    assert ids.tolist() == inputs["input_ids"][0].tolist()
    np.testing.assert_array_equal(positions, H.rope_index(thinker, inputs))
    if case == "video-1.5s":
        max_abs, cos = agreement(logits, reference(case))
    else:
        media_ids = [processor.tokenizer.convert_tokens_to_ids(t) for t in TOKEN_OF.values()]
        max_abs, cos = agreement(logits, H.last_logits(thinker, inputs, llama_cpp_mask(ids, positions, media_ids)))
    print(f"\n{case}: {len(ids)} tokens, max abs diff {max_abs:.2e}, cosine {cos:.9f}")
    assert max_abs < MAX_ABS and cos > MIN_COS, f"{case}: max abs diff {max_abs:.2e}, cosine {cos:.9f}"
