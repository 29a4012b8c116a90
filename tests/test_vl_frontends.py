"""The front ends on the video-only pairs, Qwen2.5-VL and Qwen3-VL (the tiny converted ones of
scripts/make_hf_tiny_families.py):
chat API with a follow-up turn and streaming, command line, server and the picture; the answers and
counts are compared with the library's own call on the same model (their parity with transformers:
tests/test_parity_qwen25_vl.py, tests/test_parity_qwen3_vl.py)."""

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


@pytest.fixture(scope="module", params=["qwen2.5-vl", "qwen3-vl"])
def vl(request):
    """Both video-only families: Qwen2.5-VL, and Qwen3-VL (timestamps as text between its grids)."""
    import make_hf_tiny_families

    return make_hf_tiny_families.make_hf_tiny_family(request.param)


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    return write_clip(tmp_path_factory.mktemp("vl-front") / "clip.mp4", seconds=2.0)


@pytest.fixture(scope="module")
def model(vl):
    with pyomnisift.Llama(str(vl["llm"]), str(vl["mmproj"]), n_ctx=4096, n_threads=2) as llm:
        yield llm


def _ask(clip_path, text="What happens?"):
    return [{"role": "user", "content": [{"type": "video_url", "video_url": {"url": str(clip_path)}},
                                         {"type": "text", "text": text}]}]


def test_chat_follow_up_and_streaming(model, clip):
    first = model.create_chat_completion(_ask(clip), max_tokens=4, temperature=0)
    omni = first["usage"]["omnisift"]
    assert 0 < omni["video"]["tokens_kept"] < omni["video"]["tokens_in"]
    assert omni["audio"]["tokens_in"] == 0          # no audio tower: the clip's sound is not used
    messages = _ask(clip) + [first["choices"][0]["message"], {"role": "user", "content": "And then?"}]
    follow = model.create_chat_completion(messages, max_tokens=4, temperature=0)
    # the video is in the context already: nothing encoded, nothing of it decoded again
    assert follow["usage"]["omnisift"]["media_reused"] == 1
    assert follow["usage"]["omnisift"]["media_cells_decoded"] == 0
    assert first["usage"]["omnisift"]["warnings"] == [
        f"{clip}: this model's mmproj has no audio tower; the video is used without its sound"]
    chunks = list(model.create_chat_completion(_ask(clip), max_tokens=4, temperature=0, stream=True))
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks)
    assert text == first["choices"][0]["message"]["content"]


def test_cli_and_server_answer_as_the_library(vl, model, clip):
    reference = model.create_chat_completion(_ask(clip), max_tokens=3, temperature=0)
    counts = reference["usage"]["omnisift"]["video"]
    p = run("chat", "-m", vl["llm"], "--mmproj", vl["mmproj"], "--video", clip, "-n", "3", "--temp", "0",
            "--stats", "-p", "What happens?")
    assert p.returncode == 0, p.stderr
    assert re.search(r"video (\d+)->(\d+)", p.stderr).groups() == (str(counts["tokens_in"]), str(counts["tokens_kept"]))

    from pyomnisift.server import ModelSettings, ServerSettings, create_app

    app = create_app(server_settings=ServerSettings(allowed_media_dir=str(clip.parent), api_key=None),
                     model_settings=ModelSettings(model=str(vl["llm"]), mmproj=str(vl["mmproj"]), n_ctx=4096,
                                                  n_threads=2))
    try:
        with Server(app) as server:
            r = post(server, {"messages": video_msg("clip.mp4"), "max_tokens": 3, "temperature": 0})
            assert r.status_code == 200, r.text
            out = r.json()
            assert out["choices"][0]["message"]["content"] == reference["choices"][0]["message"]["content"]
            assert out["usage"]["omnisift"]["video"] == counts
    finally:
        app.state.model.close()


def test_picture(vl, model, clip, tmp_path):
    records = []
    model.create_chat_completion(_ask(clip), max_tokens=1, video_retention=0.3, on_unit=records.append)
    result = viz.visualize(model, clip, "video", output=tmp_path / "kept.png", video_retention=0.3)
    kept = sum(int(r.keep[r.modality == 1].sum()) for r in records)
    assert sum(int(m.sum()) for m in result.grids.values()) == kept > 0
    out = tmp_path / "cli.png"
    p = subprocess.run([sys.executable, "-m", "pyomnisift", "viz", "-m", str(vl["llm"]), "--mmproj", str(vl["mmproj"]),
                        "--video", str(clip), "--video-retention", "0.3", "-t", "2", "-o", str(out)],
                       capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr
    assert out.is_file()
