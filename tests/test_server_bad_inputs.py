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


class _SilentLlama:
    """Generates a long time before yielding its second chunk (as llama-cpp-python does for bytes that
    are no UTF-8 yet), polling should_stop per token as pyomnisift.Llama's stopping criteria do."""

    def __init__(self):
        self.tokens, self.stopped = 0, []

    def create_chat_completion(self, messages, stream=False, should_stop=None, **kw):
        assert stream and should_stop is not None
        return self._stream(should_stop)

    def _stream(self, should_stop):
        base = {"id": "x", "object": "chat.completion.chunk", "created": 0, "model": "fake"}
        start = time.time()
        try:
            yield {**base, "choices": [{"index": 0, "delta": {"role": "assistant"}, "finish_reason": None}]}
            while not should_stop() and time.time() - start < 60:     # tokens that yield nothing
                time.sleep(0.005)
                self.tokens += 1
        finally:
            # The server may also stop it by closing the generator while it is suspended at the
            # first chunk (the waiting request seen right after that chunk was sent): stopped too.
            self.stopped.append(time.time() - start)
        yield {**base, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}

    def close(self):
        pass


@pytest.mark.parametrize("how", ["disconnect", "interrupted"])
def test_a_stream_that_yields_nothing_still_stops(how):
    """Found by the soak (scripts/soak_server.py): a dropped stream whose generation yielded no chunk
    for minutes kept the model busy and every later request waited. Now the generation stops within
    a token or so of the client leaving (or of a request waiting, with interrupt_requests)."""
    import asyncio

    from pyomnisift.server import ServerSettings, create_app
    from pyomnisift.server.model import OmniModel
    from test_server import Server

    model = OmniModel.__new__(OmniModel)
    model.llama, model.alias, model.lock, model.waiting, model.streams = _SilentLlama(), "fake", asyncio.Lock(), 0, []
    app = create_app(server_settings=ServerSettings(interrupt_requests=how == "interrupted"), model=model)
    body = {"messages": [{"role": "user", "content": "long"}], "stream": True}
    with Server(app) as s:
        with httpx.stream("POST", s.base + "/v1/chat/completions", json=body, timeout=30) as r:
            for line in r.iter_lines():
                if line.startswith("data: ") and not model.waiting:
                    if how == "disconnect":
                        break                       # leaves mid-stream
                    model.waiting += 1              # as a request queued behind the lock; read on
        deadline = time.time() + 20
        while not model.llama.stopped and time.time() < deadline:
            time.sleep(0.05)
        assert model.llama.stopped and model.llama.stopped[0] < 5, model.llama.stopped
        deadline = time.time() + 10
        while not model.streams and time.time() < deadline:
            time.sleep(0.05)
        assert model.streams[-1]["end"] == how, model.streams
        assert not model.lock.locked()
