"""The front ends on a Qwen3-Omni pair (the tiny converted one of scripts/make_hf_tiny_families.py):
chat API with a follow-up turn and streaming, command line, server and the picture, on a clip with
its sound; the answers and counts are compared with the library's own call on the same model (its
parity with transformers is tests/test_parity_qwen3_omni.py). And llama-cpp-python's own way of
loading (llama_cpp.Llama + the handler), which cannot know the deepstack override: a clear error."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

import pyomnisift
from pyomnisift import viz
from test_cli import run
from test_server import Server, post, video_msg
from tool_clips import write_clip


@pytest.fixture(scope="module")
def fam():
    import make_hf_tiny_families

    return make_hf_tiny_families.make_hf_tiny_family("qwen3-omni")


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    return write_clip(tmp_path_factory.mktemp("q3-front") / "clip.mp4", seconds=2.0)


@pytest.fixture(scope="module")
def model(fam):
    with pyomnisift.Llama(str(fam["llm"]), str(fam["mmproj"]), n_ctx=4096, n_threads=2) as llm:
        yield llm


def _ask(clip_path, text="What happens?"):
    return [{"role": "user", "content": [{"type": "video_url", "video_url": {"url": str(clip_path)}},
                                         {"type": "text", "text": text}]}]


def test_chat_follow_up_and_streaming(model, clip):
    first = model.create_chat_completion(_ask(clip), max_tokens=4, temperature=0)
    omni = first["usage"]["omnisift"]
    assert 0 < omni["video"]["tokens_kept"] < omni["video"]["tokens_in"]
    assert 0 < omni["audio"]["tokens_kept"] < omni["audio"]["tokens_in"]   # its sound, selected by what is seen
    assert not omni.get("warnings")
    messages = _ask(clip) + [first["choices"][0]["message"], {"role": "user", "content": "And then?"}]
    follow = model.create_chat_completion(messages, max_tokens=4, temperature=0)
    assert follow["usage"]["omnisift"]["media_reused"] == 1
    assert follow["usage"]["omnisift"]["media_cells_decoded"] == 0
    chunks = list(model.create_chat_completion(_ask(clip), max_tokens=4, temperature=0, stream=True))
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks)
    assert text == first["choices"][0]["message"]["content"]


def test_audio_encoded_while_planning_is_reported_as_encoding(model, tmp_path, monkeypatch):
    """libmtmd's audio tower encodes a whole track when the request is planned: usage says so under
    encode_audio and encoder_calls, not inside media_decode; a follow-up turn encodes nothing (the rows
    are kept with the probe, within a budget)."""
    import time

    clip = write_clip(tmp_path / "other.mp4", seconds=1.5)   # not the module clip: not probed yet
    tower = model.chat_handler.planner.audio
    spent = []
    encode = tower.encode_audio

    def timed(pcm):
        t0 = time.perf_counter()
        try:
            return encode(pcm)
        finally:
            spent.append((time.perf_counter() - t0) * 1e3)

    monkeypatch.setattr(tower, "encode_audio", timed)
    first = model.create_chat_completion(_ask(clip), max_tokens=1, temperature=0)["usage"]["omnisift"]
    assert len(spent) == 1 and first["encoder_calls"]["audio"] == 1
    t = first["timings_ms"]
    assert t["encode_audio"] >= spent[0] * 0.999
    assert t["media_decode"] >= 0 and t["encode"] == pytest.approx(t["encode_vision"] + t["encode_audio"], abs=1e-2)
    messages = _ask(clip) + [{"role": "assistant", "content": "x"}, {"role": "user", "content": "And?"}]
    again = model.create_chat_completion(messages, max_tokens=1, temperature=0)["usage"]["omnisift"]
    assert len(spent) == 1 and again["encoder_calls"]["audio"] == 0 and again["timings_ms"]["encode_audio"] == 0

    # rows past the planner's budget are not kept: another clip's follow-up encodes again, and says so
    from pyomnisift import _plan

    monkeypatch.setattr(_plan, "PROBE_ROWS_BYTES", 0)
    other = write_clip(tmp_path / "third.mp4", seconds=1.2)
    model.create_chat_completion(_ask(other), max_tokens=1, temperature=0)
    messages = _ask(other) + [{"role": "assistant", "content": "x"}, {"role": "user", "content": "And?"}]
    again = model.create_chat_completion(messages, max_tokens=1, temperature=0)["usage"]["omnisift"]
    assert len(spent) == 3 and again["encoder_calls"]["audio"] == 1
    assert again["timings_ms"]["encode_audio"] >= spent[-1] * 0.999


def test_cli_and_server_answer_as_the_library(fam, model, clip):
    reference = model.create_chat_completion(_ask(clip), max_tokens=3, temperature=0)
    counts = reference["usage"]["omnisift"]
    p = run("chat", "-m", fam["llm"], "--mmproj", fam["mmproj"], "--video", clip, "-n", "3", "--temp", "0",
            "--stats", "-p", "What happens?")
    assert p.returncode == 0, p.stderr
    assert re.search(r"video (\d+)->(\d+)", p.stderr).groups() == (str(counts["video"]["tokens_in"]),
                                                                  str(counts["video"]["tokens_kept"]))

    from pyomnisift.server import ModelSettings, ServerSettings, create_app

    app = create_app(server_settings=ServerSettings(allowed_media_dir=str(clip.parent), api_key=None),
                     model_settings=ModelSettings(model=str(fam["llm"]), mmproj=str(fam["mmproj"]), n_ctx=4096,
                                                  n_threads=2))
    try:
        with Server(app) as server:
            r = post(server, {"messages": video_msg("clip.mp4"), "max_tokens": 3, "temperature": 0})
            assert r.status_code == 200, r.text
            out = r.json()
            assert out["choices"][0]["message"]["content"] == reference["choices"][0]["message"]["content"]
            assert out["usage"]["omnisift"]["video"] == counts["video"]
            assert out["usage"]["omnisift"]["audio"] == counts["audio"]
    finally:
        app.state.model.close()


def test_picture(fam, model, clip, tmp_path):
    """32-pixel patches: the picture's grids are the model's."""
    records = []
    model.create_chat_completion(_ask(clip), max_tokens=1, video_retention=0.3, on_unit=records.append)
    result = viz.visualize(model, clip, "video", output=tmp_path / "kept.png", video_retention=0.3)
    kept = sum(int(r.keep[r.modality == 1].sum()) for r in records)
    assert sum(int(m.sum()) for m in result.grids.values()) == kept > 0
    out = tmp_path / "cli.png"
    p = subprocess.run([sys.executable, "-m", "pyomnisift", "viz", "-m", str(fam["llm"]), "--mmproj", str(fam["mmproj"]),
                        "--video", str(clip), "--video-retention", "0.3", "-t", "2", "-o", str(out)],
                       capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr
    assert out.is_file()


def test_llama_cpp_python_load_needs_the_deepstack_override(fam):
    """llama_cpp.Llama loads the thinker as converted (no deepstack): the handler says what to pass;
    with that override it serves as pyomnisift.Llama does."""
    import llama_cpp

    handler = pyomnisift.OmniSIFTChatHandler(str(fam["mmproj"]))
    llama = llama_cpp.Llama(str(fam["llm"]), chat_handler=handler, n_ctx=1024, verbose=False)
    try:
        with pytest.raises(pyomnisift.ModelFileError, match=r"kv_overrides=\{'qwen3vlmoe.n_deepstack_layers': 1\}"):
            llama.create_chat_completion([{"role": "user", "content": "hi"}], max_tokens=1)
    finally:
        llama.close()
    handler = pyomnisift.OmniSIFTChatHandler(str(fam["mmproj"]))
    llama = llama_cpp.Llama(str(fam["llm"]), chat_handler=handler, n_ctx=1024, verbose=False,
                            kv_overrides={"qwen3vlmoe.n_deepstack_layers": 1})
    try:
        out = llama.create_chat_completion([{"role": "user", "content": "hi"}], max_tokens=2, temperature=0)
        assert out["usage"]["completion_tokens"] >= 1
    finally:
        llama.close()
