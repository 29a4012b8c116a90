"""The omni pipeline end to end on the tiny model: against llama.cpp's own mtmd path, against
pyomnisift.sift on the whole sequence, and on bad input."""

from __future__ import annotations

import base64
import functools
import ctypes
import fractions

import llama_cpp
import numpy as np
import pytest
from llama_cpp import mtmd_cpp as mtmd

import pyomnisift
from pyomnisift import _sequence as S
from pyomnisift.media import decode, sampling
from pyomnisift._errors import ModelFileError

from decode_helpers import clear, collect_units, decode_rows, decode_tokens, logits_of, prefill
from device import LLM_KW

OFF = dict(video_retention=1.0, audio_retention=1.0, image_retention=1.0)


@pytest.fixture(scope="module")
def omni(tiny_model):
    llm, mmproj = tiny_model
    model = pyomnisift.Llama(str(llm), str(mmproj), n_ctx=4096, n_threads=2, **OFF, **LLM_KW)
    yield model
    model.close()


def user(*parts):
    return [{"role": "user", "content": list(parts)}]


def text(t):
    return {"type": "text", "text": t}


def video(path):
    return {"type": "video_url", "video_url": {"url": str(path)}}


def image(path):
    return {"type": "image_url", "image_url": {"url": str(path)}}


def audio_part(path):
    data = base64.b64encode(open(path, "rb").read()).decode()
    return {"type": "input_audio", "input_audio": {"data": data, "format": str(path).rsplit(".", 1)[-1]}}


def write_video(path, seconds: float, fps: int = 10, size=(112, 84), with_audio: bool = True):
    """A small synthetic clip: a moving square, and optionally a tone."""
    import av

    with av.open(str(path), "w") as c:
        vs = c.add_stream("mpeg4", rate=fps)
        vs.width, vs.height, vs.pix_fmt = size[0], size[1], "yuv420p"
        if with_audio:
            aus = c.add_stream("aac", rate=16000, layout="mono")
        for i in range(int(seconds * fps)):
            img = np.zeros((size[1], size[0], 3), np.uint8)
            img[10:40, (i * 3) % (size[0] - 30):(i * 3) % (size[0] - 30) + 30] = 255
            for p in vs.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                c.mux(p)
        for p in vs.encode():
            c.mux(p)
        if with_audio:
            t = np.arange(int(seconds * 16000)) / 16000
            pcm = (0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)[None]
            frame = av.AudioFrame.from_ndarray(pcm, format="flt", layout="mono")
            frame.sample_rate = 16000
            frame.time_base = fractions.Fraction(1, 16000)
            for p in aus.encode(frame):
                c.mux(p)
            for p in aus.encode():
                c.mux(p)
    return path


# --- against llama.cpp's own path


def test_image_prompt_matches_mtmd_eval_chunks(omni, assets):
    """Compression off, same token stream: our decode at our positions == mtmd_helper_eval_chunks."""
    pixels = decode.read_image(assets["test-1.jpeg"])
    h, w = sampling.smart_resize(*pixels.shape[:2], 56 * 56, 28 * 28 * 1280)
    from PIL import Image

    pixels = np.asarray(Image.fromarray(pixels).resize((w, h), Image.BICUBIC))
    lctx, vocab_n = omni.ctx, omni.n_vocab()

    # llama.cpp's path: mtmd tokenizes (text, image, text) and evaluates every chunk itself.
    prompt = b"<|im_start|>user\n<__media__>What is this?<|im_end|>\n<|im_start|>assistant\n"
    data = np.ascontiguousarray(pixels)
    bm = mtmd.mtmd_bitmap_init(w, h, data.ctypes.data_as(ctypes.POINTER(ctypes.c_uint8)))
    chunks = mtmd.mtmd_input_chunks_init()
    inp = mtmd.mtmd_input_text(text=prompt, text_len=len(prompt), add_special=False, parse_special=True)
    arr = (mtmd.mtmd_bitmap_p_ctypes * 1)(bm)
    try:
        assert mtmd.mtmd_tokenize(omni.chat_handler.vision.ptr, chunks, ctypes.byref(inp), arr, 1) == 0
        clear(omni)
        new_n_past = llama_cpp.llama_pos(0)
        assert mtmd.mtmd_helper_eval_chunks(omni.chat_handler.vision.ptr, lctx, chunks, 0, 0, 1024, True,
                                            ctypes.byref(new_n_past)) == 0
        ref = logits_of(omni)

        # Ours: the same chunks, text through omnisift_decode_tokens, the image through our encoder
        # at the positions of our sequence layout.
        clear(omni)
        pos = 0
        n_chunks = mtmd.mtmd_input_chunks_size(chunks)
        for i in range(n_chunks):
            chunk = mtmd.mtmd_input_chunks_get(chunks, i)
            last = i == n_chunks - 1
            if mtmd.mtmd_input_chunk_get_type(chunk) == mtmd.MTMD_INPUT_CHUNK_TYPE_TEXT:
                n = ctypes.c_size_t()
                ids = mtmd.mtmd_input_chunk_get_tokens_text(chunk, ctypes.byref(n))[:n.value]
                decode_tokens(omni, ids, list(range(pos, pos + len(ids))), last)
                pos += len(ids)
            else:
                rows, gh, gw = omni.chat_handler.vision.encode([pixels])
                [block] = S.image_blocks(gh, gw, pos)
                decode_rows(omni, rows, block.positions)
                pos = S.end_position([block], pos)
        assert pos == new_n_past.value  # the same position bookkeeping as mtmd
        ours = logits_of(omni)
    finally:
        mtmd.mtmd_input_chunks_free(chunks)
        mtmd.mtmd_bitmap_free(bm)
        clear(omni)
    assert ours.shape == ref.shape == (vocab_n,)
    np.testing.assert_allclose(ours, ref, rtol=0, atol=1e-4 * np.abs(ref).max())
    assert np.argmax(ours) == np.argmax(ref)


def test_audio_llm_with_ordinary_rope_matches_mtmd_eval_chunks(tiny_audio_model, assets):
    """An audio LLM (Qwen2-Audio shape: qwen2 arch, Whisper-style 30-s tower): libmtmd encodes the
    audio, positions are contiguous, and the result is llama.cpp's own path, logit for logit."""
    llm_path, mmproj = tiny_audio_model
    with pyomnisift.Llama(str(llm_path), str(mmproj), n_ctx=2048, n_threads=2, **OFF, **LLM_KW) as m:
        out = prefill(m, user(audio_part(assets["test-2.mp3"]), text("Transcribe.")))
        ours = logits_of(m)
        assert out["omnisift"]["audio"]["tokens_in"] == 750  # one padded 30-s window, as mtmd makes it
        assert out["omnisift"]["audio"]["padding_avoided"] == 0
        assert m.n_tokens == out["prompt_tokens"]  # contiguous positions: one per KV cell

        prompt = m.chat_handler.formatter(messages=[{"role": "user", "content": "<__media__>Transcribe."}]).prompt.encode()
        pcm = decode.read_audio(assets["test-2.mp3"])
        bm = mtmd.mtmd_bitmap_init_from_audio(len(pcm), pcm.ctypes.data_as(ctypes.POINTER(ctypes.c_float)))
        chunks = mtmd.mtmd_input_chunks_init()
        try:
            inp = mtmd.mtmd_input_text(text=prompt, text_len=len(prompt), add_special=False, parse_special=True)
            assert mtmd.mtmd_tokenize(m.chat_handler.vision.ptr, chunks, ctypes.byref(inp),
                                      (mtmd.mtmd_bitmap_p_ctypes * 1)(bm), 1) == 0
            clear(m)
            n_past = llama_cpp.llama_pos(0)
            assert mtmd.mtmd_helper_eval_chunks(m.chat_handler.vision.ptr, m.ctx, chunks, 0, 0, 1024, True,
                                                ctypes.byref(n_past)) == 0
            ref = logits_of(m)
        finally:
            mtmd.mtmd_input_chunks_free(chunks)
            mtmd.mtmd_bitmap_free(bm)
        assert n_past.value == out["prompt_tokens"]
        np.testing.assert_allclose(ours, ref, rtol=0, atol=1e-4 * np.abs(ref).max())


# --- compression: the decoded rows are sift's


@pytest.mark.parametrize("video_ret,audio_ret,selector", [(0.25, 0.5, "anchor"), (0.35, 0.6, "random"),
                                                            (1.0, 1.0, "anchor")])
def test_decoded_rows_are_what_sift_keeps(omni, assets, video_ret, audio_ret, selector):
    """Unit-by-unit compression (what streaming does) keeps exactly what sift keeps of the whole
    sequence at once, and the counts follow the drop rule."""
    clear(omni)
    out, (rows, modality, positions, keep) = collect_units(
        functools.partial(prefill, omni), user(video(assets["test-3.mp4"]), text("What happens?")),
        video_retention=video_ret, audio_retention=audio_ret, audio_selector=selector)
    mask = pyomnisift.sift(rows, modality, positions, video_retention=video_ret, audio_retention=audio_ret,
                           audio_selector=selector, engine=omni.chat_handler.engine)
    np.testing.assert_array_equal(keep, mask)
    st = out["omnisift"]
    assert st["video"]["tokens_in"] == 10 * 13 * 26  # 10 s at 2 fps = 10 grids of 13 x 26 (728 x 364)
    assert st["audio"]["tokens_in"] == 251          # 25 per second of real audio
    assert st["video"]["tokens_kept"] == int((modality[mask] == S.MODALITY_VIDEO).sum())
    assert st["video"]["tokens_kept"] == 10 * (338 - int(338 * (1 - video_ret) + 1e-9))
    assert st["audio"]["tokens_kept"] == int((modality[mask] == S.MODALITY_AUDIO).sum())
    assert st["media_cells_decoded"] == mask.sum() + 4   # + vision/audio bos and eos
    n_text = prefill(omni, user(text("What happens?")))["prompt_tokens"]
    assert out["prompt_tokens"] == mask.sum() + n_text + 4
    assert st["audio"]["padding_avoided"] == 750 - 251


@pytest.mark.parametrize("fps", [1.0, 3.0])
def test_units_pair_grids_as_sift_does_at_any_fps(omni, assets, fps):
    """At 1 fps a 2-s chunk of the reference holds one grid, at 3 fps three: the units still pair
    grids two by two in time (sift's chunks), with the audio of their seconds, so unit-by-unit
    compression equals sift on the whole sequence."""
    clear(omni)
    out, (rows, modality, positions, keep) = collect_units(
        functools.partial(prefill, omni), user(video(assets["test-3.mp4"]), text("What happens?")),
        video_retention=0.3, audio_retention=0.5, video_fps=fps)
    n_grids = len(np.unique(positions[0, modality == S.MODALITY_VIDEO]))
    assert n_grids == int(10 * fps) // 2
    mask = pyomnisift.sift(rows, modality, positions, video_retention=0.3, audio_retention=0.5,
                           engine=omni.chat_handler.engine)
    np.testing.assert_array_equal(keep, mask)
    # every chunk with surviving video pruned its audio: none of the 251 audio tokens escaped
    assert out["omnisift"]["audio"]["tokens_kept"] < 0.6 * 251


def test_compression_shrinks_the_prompt_and_changes_logits(omni, assets):
    msgs = user(video(assets["test-3.mp4"]), text("What happens?"))
    clear(omni)
    full = prefill(omni, msgs)
    full_logits = logits_of(omni)
    small = prefill(omni, msgs, video_retention=0.25, audio_retention=0.5)
    assert small["prompt_tokens"] < 0.3 * full["prompt_tokens"]
    assert small["omnisift"]["media_reused"] == 0    # other settings, other rows: encoded again
    assert not np.allclose(logits_of(omni), full_logits)
    again = prefill(omni, msgs)  # and back: nothing of the previous request leaks
    np.testing.assert_array_equal(logits_of(omni), full_logits)
    assert again["prompt_tokens"] == full["prompt_tokens"]
    assert {k: again["omnisift"][k] for k in ("video", "audio")} == {k: full["omnisift"][k] for k in ("video", "audio")}


def test_chat_completion_shape(omni, assets):
    r = omni.create_chat_completion(user(image(assets["test-1.jpeg"]), audio_part(assets["test-2.mp3"]),
                                         text("Describe.")), max_tokens=4, temperature=0)
    assert r["object"] == "chat.completion" and r["choices"][0]["message"]["role"] == "assistant"
    assert r["choices"][0]["finish_reason"] in ("stop", "length")
    u = r["usage"]
    assert u["completion_tokens"] <= 4 and u["total_tokens"] == u["prompt_tokens"] + u["completion_tokens"]
    st = u["omnisift"]
    assert st["image"]["tokens_in"] == st["image"]["tokens_kept"] > 0
    assert st["audio"]["tokens_in"] == 436  # 17.44 s of narration, 25 tokens per second
    assert set(st["timings_ms"]) >= {"media_decode", "encode", "compress", "prefill"}
    again = omni.create_chat_completion(user(image(assets["test-1.jpeg"]), audio_part(assets["test-2.mp3"]),
                                             text("Describe.")), max_tokens=4, temperature=0)
    assert again["choices"][0]["message"] == r["choices"][0]["message"]


# --- bad input: clear errors, and the context stays usable


def reference_logits(omni):
    clear(omni)   # as on a fresh model
    prefill(omni, user(text("Hello")))
    return logits_of(omni)


def test_not_media_file(omni, tmp_path):
    before = reference_logits(omni)
    bogus = tmp_path / "clip.mp4"
    bogus.write_bytes(b"this is not a video" * 100)
    with pytest.raises(ModelFileError, match="clip.mp4"):
        prefill(omni, user(video(bogus), text("?")))
    np.testing.assert_array_equal(reference_logits(omni), before)


def test_missing_file_and_remote_url(omni, tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.png"):
        prefill(omni, user(image(tmp_path / "nope.png"), text("?")))
    with pytest.raises(ValueError, match="network"):
        prefill(omni, user(image("https://example.com/a.png"), text("?")))
    with pytest.raises(ValueError, match="unsupported content part"):
        prefill(omni, user({"type": "file", "file": {}}, text("?")))


def test_video_without_audio_track(omni, tmp_path):
    clip = write_video(tmp_path / "silent.mp4", 4.0, with_audio=False)
    st = prefill(omni, user(video(clip), text("?")))["omnisift"]
    assert st["audio"]["tokens_in"] == 0
    # 4 s -> 8 frames -> 4 grids; 112x84 is upscaled to the processor's minimum of 128 * 28 * 28
    # pixels: 392x280, a grid of 14 x 10 merged tokens
    assert st["video"]["tokens_in"] == 4 * 14 * 10


def test_video_with_audio_track(omni, tmp_path):
    clip = write_video(tmp_path / "tone.mp4", 4.0)
    st = prefill(omni, user(video(clip), text("?")))["omnisift"]
    assert st["video"]["tokens_in"] == 4 * 14 * 10 and 98 <= st["audio"]["tokens_in"] <= 102


def test_low_fps_prunes_all_the_audio(omni, tmp_path):
    """Regression: at video_fps=1 grids were timed as if sampled at 2 fps, so the audio of the later
    seconds fell into chunks without video and was never pruned (101 of 151 kept at 0.5)."""
    clip = write_video(tmp_path / "six.mp4", 6.0)
    st = prefill(omni, user(video(clip), text("?")), video_fps=1.0, video_retention=0.5, audio_retention=0.5)["omnisift"]
    n = st["audio"]["tokens_in"]
    assert 148 <= n <= 152
    # two units: grids 0-1 with the audio of seconds 0-4, grid 2 with the rest; each keeps half
    assert st["audio"]["tokens_kept"] == (100 - 50) + (n - 100) - (n - 100) // 2


def test_static_frames_are_encoded_once(omni, tmp_path):
    """A still clip: pairs pixel-identical to the one before reuse its rows. The rows the model gets
    are what the encoder gives each pair, for one call instead of six."""
    import av

    path = tmp_path / "still.mp4"
    with av.open(str(path), "w") as c:
        vs = c.add_stream("png", rate=4)   # lossless: every decoded frame is the same pixels
        vs.width, vs.height, vs.pix_fmt = 112, 84, "rgb24"
        img = np.random.default_rng(0).integers(0, 256, (84, 112, 3), dtype=np.uint8)
        for _ in range(24):
            for p in vs.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                c.mux(p)
        for p in vs.encode():
            c.mux(p)
    msgs = user(video(path), text("?"))
    clear(omni)
    st = prefill(omni, msgs, video_retention=0.5)["omnisift"]
    assert st["encoder_calls"]["vision"] == 1 and st["frame_pairs_reused"] == 5   # 6 s at 2 fps: 6 pairs, 1 encoded
    # what encoding any of the six pairs gives, through libmtmd from Python (not the C context)

    frames = list(decode.iter_video_frames(str(path), info=decode.probe_video(str(path), 2.0)))
    expected = omni.chat_handler.vision.encode(frames[:2])[0]
    clear(omni)
    _, (rows, modality, _, _) = collect_units(functools.partial(prefill, omni), msgs, video_retention=0.5)
    for g in range(6):
        np.testing.assert_array_equal(rows[modality == S.MODALITY_VIDEO][g * len(expected):(g + 1) * len(expected)], expected)


def test_audio_shorter_than_a_token(omni, tmp_path):
    import wave

    path = tmp_path / "blip.wav"
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1), w.setsampwidth(2), w.setframerate(16000)
        w.writeframes(np.zeros(320, np.int16).tobytes())  # 20 ms
    with pytest.raises(ValueError, match="shorter than one audio token"):
        prefill(omni, user(audio_part(path), text("?")))


def test_too_short_video(omni, tmp_path):
    clip = write_video(tmp_path / "one-frame.mp4", 0.1, with_audio=False)
    with pytest.raises(ModelFileError, match="one-frame.mp4"):
        prefill(omni, user(video(clip), text("?")))


def test_prompt_longer_than_context(tiny_model, assets):
    llm, mmproj = tiny_model
    with pyomnisift.Llama(str(llm), str(mmproj), n_ctx=1024, n_threads=2, **OFF, **LLM_KW) as small:
        msgs = user(video(assets["test-3.mp4"]), text("?"))
        with pytest.raises(ValueError, match=r"needs \d+ tokens.*n_ctx is 1024.*retention of about 0\.\d\d"):
            prefill(small, msgs)
        # the suggested retention does fit, and the context was left usable
        out = prefill(small, msgs, video_retention=0.2, audio_retention=0.2)
        assert out["prompt_tokens"] < 1024


def test_mmproj_without_audio(tiny_model, assets, tmp_path):
    import gguf

    llm, mmproj = tiny_model
    reader = gguf.GGUFReader(str(mmproj))
    out = tmp_path / "vision-only-mmproj.gguf"
    writer = gguf.GGUFWriter(str(out), "clip")
    for field in reader.fields.values():
        if field.name.startswith(("GGUF.", "general.architecture")) or field.name.startswith("clip.audio."):
            continue
        value = field.contents()
        if field.name == "clip.has_audio_encoder":
            value = False
        vtype = field.types[0]
        sub = field.types[-1] if vtype == gguf.GGUFValueType.ARRAY else None
        writer.add_key_value(field.name, value, vtype, sub_type=sub)
    for t in reader.tensors:
        if not t.name.startswith(("a.", "mm.a.")):
            writer.add_tensor(t.name, np.array(t.data), raw_shape=list(reversed(t.shape.tolist())),
                              raw_dtype=t.tensor_type)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    with pyomnisift.Llama(str(llm), str(out), n_ctx=2048, n_threads=2, **LLM_KW) as vision_only:
        with pytest.raises(ValueError, match="no audio tower"):
            prefill(vision_only, user(audio_part(assets["test-2.mp3"]), text("?")))
        prefill(vision_only, user(image(assets["test-1.jpeg"]), text("?")))  # still usable


def test_learned_head_end_to_end(tiny_model, assets, tmp_path):
    """A VGAS head converted with pyomnisift convert-head drives the audio selection of a
    whole prompt; a head of another width is refused when the model is created."""
    import torch
    from pyomnisift import convert_head as convert_sift_head
    import sift_reference as ref

    llm, mmproj = tiny_model
    head_pt = tmp_path / "compressor.pt"
    torch.save(ref.make_vgas_module(64, hidden=32, n_head=8, score_hidden=16, seed=1).state_dict(), head_pt)
    convert_sift_head.convert(head_pt, tmp_path / "head.gguf")
    with pyomnisift.Llama(str(llm), str(mmproj), n_ctx=4096, n_threads=2, audio_selector="vgas",
                          sift_head=str(tmp_path / "head.gguf"), video_retention=0.3, audio_retention=0.4, **LLM_KW) as m:
        out, (rows, modality, positions, keep) = collect_units(functools.partial(prefill, m), user(video(assets["test-3.mp4"]), text("?")))
        st = out["omnisift"]
        assert st["audio"]["tokens_kept"] < st["audio"]["tokens_in"] == 251
        mask = pyomnisift.sift(rows, modality, positions, video_retention=0.3, audio_retention=0.4,
                               audio_selector="vgas", sift_head=m.chat_handler.sift_head)
        np.testing.assert_array_equal(keep, mask)
        anchor = pyomnisift.sift(rows, modality, positions, video_retention=0.3, audio_retention=0.4,
                                 audio_selector="anchor", engine=m.chat_handler.engine)
        assert (anchor != mask).any()  # the head, not the default selector, chose

    torch.save(ref.make_vgas_module(48, hidden=32, n_head=8, score_hidden=16).state_dict(), head_pt)
    convert_sift_head.convert(head_pt, tmp_path / "head48.gguf")
    with pytest.raises(ValueError, match="width 48"):
        pyomnisift.Llama(str(llm), str(mmproj), n_ctx=1024, audio_selector="vgas",
                         sift_head=str(tmp_path / "head48.gguf"), **LLM_KW)
