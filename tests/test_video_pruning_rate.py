"""vLLM's `video_pruning_rate` (the fraction of video tokens pruned, EVS) accepted as an alias of
1 - video_retention: in the constructor, per call, on the command line and in server requests; the
same kept tokens and logits as the retention it names; both at once refused by name."""

from __future__ import annotations

import re

import numpy as np
import pytest

import pyomnisift
from decode_helpers import logits_of, prefill
from test_cli import one_line_error, run
from test_server import Server, assert_error, post, video_msg
from tool_clips import write_clip


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    return write_clip(tmp_path_factory.mktemp("pruning") / "clip.mp4", seconds=2.0)


def _ask(clip_path):
    return [{"role": "user", "content": [{"type": "video_url", "video_url": {"url": str(clip_path)}},
                                         {"type": "text", "text": "What happens?"}]}]


def test_per_call_alias_is_the_retention_it_names(tiny_omni, clip):
    by_rate = prefill(tiny_omni, _ask(clip), video_pruning_rate=0.65)
    rate_logits = logits_of(tiny_omni)
    by_retention = prefill(tiny_omni, _ask(clip), video_retention=0.35)
    assert by_rate["omnisift"]["retention"]["video_retention"] == 0.35
    assert by_rate["omnisift"]["video"] == by_retention["omnisift"]["video"]
    assert by_rate["omnisift"]["video"]["tokens_kept"] < by_rate["omnisift"]["video"]["tokens_in"]
    np.testing.assert_array_equal(rate_logits, logits_of(tiny_omni))
    with pytest.raises(ValueError, match="video_retention or video_pruning_rate"):
        tiny_omni.create_chat_completion(_ask(clip), max_tokens=1, video_retention=0.5, video_pruning_rate=0.5)
    with pytest.raises(ValueError, match=r"video_pruning_rate = 1\.5"):
        tiny_omni.create_chat_completion(_ask(clip), max_tokens=1, video_pruning_rate=1.5)


def test_constructor_alias(tiny_model):
    llm, mmproj = tiny_model
    with pyomnisift.Llama(str(llm), str(mmproj), n_ctx=512, video_pruning_rate=0.75) as model:
        assert model.settings.video_retention == 0.25
    with pyomnisift.Llama(str(llm), str(mmproj), n_ctx=512) as model:
        assert model.settings.video_retention == pyomnisift.Settings.video_retention
    with pytest.raises(ValueError, match="not both"):
        pyomnisift.Llama(str(llm), str(mmproj), n_ctx=512, video_retention=0.3, video_pruning_rate=0.7)


def test_cli_flag(tiny_model, clip):
    llm, mmproj = tiny_model
    one_line_error(run("chat", "-m", llm, "--mmproj", mmproj, "--video-retention", "0.3",
                       "--video-pruning-rate", "0.7", "-p", "hi"), "--video-pruning-rate", "not both")
    one_line_error(run("chat", "-m", llm, "--mmproj", mmproj, "--video-pruning-rate", "2", "-p", "hi"),
                   "--video-pruning-rate")
    counts = []
    for flag, value in (("--video-pruning-rate", "0.75"), ("--video-retention", "0.25")):
        p = run("chat", "-m", llm, "--mmproj", mmproj, "--video", clip, flag, value, "-n", "1", "--stats",
                "-p", "What happens?")
        assert p.returncode == 0, p.stderr
        counts.append(re.search(r"video (\d+)->(\d+)", p.stderr).groups())
    assert counts[0] == counts[1] and int(counts[0][1]) < int(counts[0][0]), counts


def test_server_request_field(tiny_model, clip):
    from pyomnisift.server import ModelSettings, ServerSettings, create_app

    llm, mmproj = tiny_model
    app = create_app(server_settings=ServerSettings(allowed_media_dir=str(clip.parent), api_key=None),
                     model_settings=ModelSettings(model=str(llm), mmproj=str(mmproj), n_ctx=4096, n_threads=2,
                                                  video_pruning_rate=0.5))
    try:
        with Server(app) as server:
            r = post(server, {"messages": video_msg("clip.mp4"), "max_tokens": 1})
            assert r.status_code == 200, r.text
            assert r.json()["usage"]["omnisift"]["retention"]["video_retention"] == 0.5   # the server default
            r = post(server, {"messages": video_msg("clip.mp4"), "max_tokens": 1, "video_pruning_rate": 0.75})
            assert r.status_code == 200, r.text
            assert r.json()["usage"]["omnisift"]["retention"]["video_retention"] == 0.25
            r = post(server, {"messages": video_msg("clip.mp4"), "video_pruning_rate": 0.5, "video_retention": 0.5})
            assert_error(r, 400, "video_pruning_rate")
            r = post(server, {"messages": video_msg("clip.mp4"), "max_tokens": 1})
            assert r.status_code == 200, r.text
    finally:
        app.state.model.close()
