"""The server under the failures of issue 13 that need real HTTP: concurrent requests (bad ones among
them) and a client that drops a stream; afterwards every request answers as it does alone."""

from __future__ import annotations

import threading
import time

import pytest

httpx = pytest.importorskip("httpx")

from test_server import data_uri, media_dir, post, server, video_msg  # noqa: E402,F401  (fixtures)

TEXT = {"messages": [{"role": "user", "content": "Name three colours."}], "max_tokens": 8, "temperature": 0}


def content(r):
    assert r.status_code == 200, r.text
    return r.json()["choices"][0]["message"]["content"]


def test_concurrent_requests_answer_as_alone(server, media_dir):
    clip = {"messages": video_msg(data_uri(media_dir / "clip.mp4", "video/mp4")), "max_tokens": 8, "temperature": 0}
    bad = {"messages": video_msg("data:video/mp4;base64,@@@")}
    alone = {"text": content(post(server, TEXT)), "clip": content(post(server, clip))}
    results, jobs = {}, [("text", TEXT), ("clip", clip), ("bad", bad)] * 3

    def send(i, kind, body):
        results[i] = (kind, post(server, body))
    threads = [threading.Thread(target=send, args=(i, k, b)) for i, (k, b) in enumerate(jobs)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(300)
    assert len(results) == len(jobs)
    for kind, r in results.values():
        if kind == "bad":
            assert r.status_code == 400 and "base64" in r.json()["error"]["message"], r.text
        else:
            assert content(r) == alone[kind], kind
    assert content(post(server, TEXT)) == alone["text"]


def test_disconnect_mid_stream_leaves_no_trace(server, media_dir):
    alone = content(post(server, TEXT))
    model = server.app.state.model
    before = len(model.streams)
    body = {"messages": video_msg(data_uri(media_dir / "clip.mp4", "video/mp4")), "stream": True,
            "max_tokens": 2000, "temperature": 1.0, "seed": 3}
    for _ in range(2):
        with httpx.stream("POST", server.base + "/v1/chat/completions", json=body, timeout=120) as r:
            assert r.status_code == 200
            n = 0
            for line in r.iter_lines():
                n += line.startswith("data: ")
                if n == 3:
                    break                      # leaving the block drops the connection
    deadline = time.time() + 60
    while len(model.streams) < before + 2 and time.time() < deadline:
        time.sleep(0.05)
    assert [s["end"] for s in model.streams[before:]] == ["disconnect", "disconnect"]
    assert content(post(server, TEXT)) == alone
