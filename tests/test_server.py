"""The OpenAI-compatible server through real HTTP on 127.0.0.1: the openai client (video part,
streaming), bad requests (each a 4xx in OpenAI's error shape), and a good request after them."""

from __future__ import annotations

import base64
import inspect
import json
import socket
import threading
import time

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("sse_starlette")
httpx = pytest.importorskip("httpx")

import pyomnisift  # noqa: E402
from tool_clips import write_clip, write_wav  # noqa: E402

# Streaming and the contract's keyword arguments arrive with the chat API rework (issue 10).
STREAMING = "progress" in inspect.signature(pyomnisift.Llama.create_chat_completion).parameters
needs_streaming = pytest.mark.skipif(not STREAMING, reason="create_chat_completion(stream=True) is not on this branch yet")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """uvicorn in a thread, started as __main__ starts it (its uvicorn_options included)."""

    def __init__(self, app):
        import uvicorn

        from pyomnisift.server.limits import uvicorn_options

        self.app = app
        self.port = _free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning",
                                                    **uvicorn_options(app.state.server_settings)))
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self):
        self.thread.start()
        deadline = time.time() + 30
        while not self.server.started:
            if time.time() > deadline or not self.thread.is_alive():
                raise RuntimeError("the server did not start")
            time.sleep(0.05)
        return self

    def __exit__(self, *exc):
        self.server.should_exit = True
        self.thread.join(10)


@pytest.fixture(scope="module")
def media_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("media")
    write_clip(d / "clip.mp4", seconds=2.0)
    write_wav(d / "tone.wav")
    return d


@pytest.fixture(scope="module")
def server(tiny_model, media_dir):
    from pyomnisift.server import ModelSettings, ServerSettings, create_app

    llm, mmproj = tiny_model
    app = create_app(server_settings=ServerSettings(allowed_media_dir=str(media_dir), max_body_bytes=2_000_000,
                                                    api_key=None),
                     model_settings=ModelSettings(model=str(llm), mmproj=str(mmproj), n_ctx=4096, n_threads=2))
    with Server(app) as s:
        yield s
    app.state.model.close()


def data_uri(path, mime):
    return f"data:{mime};base64," + base64.b64encode(path.read_bytes()).decode()


def video_msg(url, text="What happens?"):
    return [{"role": "user", "content": [{"type": "video_url", "video_url": {"url": url}},
                                         {"type": "text", "text": text}]}]


def post(server, body, **kw):
    return httpx.post(server.base + "/v1/chat/completions", json=body, timeout=120, **kw)


def assert_error(r, status, *words):
    assert r.status_code == status, (r.status_code, r.text)
    err = r.json()["error"]
    assert set(err) >= {"message", "type", "param", "code"}, err
    for w in words:
        assert w in err["message"], err["message"]
    return err


def test_health_and_models(server):
    r = httpx.get(server.base + "/health")
    assert r.status_code == 200 and r.json()["status"] == "ok"
    m = httpx.get(server.base + "/v1/models").json()
    assert m["object"] == "list" and m["data"][0]["id"] == "omni-tiny-llm.gguf"


def test_openai_client_video_data_uri(server, media_dir):
    openai = pytest.importorskip("openai")
    client = openai.OpenAI(base_url=server.base + "/v1", api_key="unused")
    t0 = time.perf_counter()
    out = client.chat.completions.create(
        model="omni-tiny-llm.gguf", messages=video_msg(data_uri(media_dir / "clip.mp4", "video/mp4")),
        max_tokens=4, temperature=0, extra_body={"video_retention": 0.5, "audio_retention": 0.5})
    elapsed = time.perf_counter() - t0
    assert out.object == "chat.completion"
    assert out.choices[0].message.role == "assistant"
    assert isinstance(out.choices[0].message.content, str)
    assert out.choices[0].finish_reason in ("stop", "length")
    usage = out.usage.model_dump()
    omni = usage["omnisift"]
    assert omni["video"]["tokens_kept"] < omni["video"]["tokens_in"]
    assert omni["audio"]["tokens_in"] > 0
    print(f"\nopenai client, 2-s clip as a data URI, 4 tokens: {elapsed * 1000:.0f} ms")


def test_h264_clip_as_data_uri(server, assets):
    """test-3.mp4 (H.264 + AAC) as a data URI: its frames and its sound track are read from one
    in-memory buffer at once (this failed before the media rework gave each reader its own position)."""
    r = post(server, {"messages": video_msg(data_uri(assets["test-3.mp4"], "video/mp4")), "max_tokens": 2,
                      "video_retention": 0.25})
    assert r.status_code == 200, r.text
    assert r.json()["usage"]["omnisift"]["audio"]["tokens_in"] > 200


def test_local_path_under_allowed_dir_and_audio_part(server, media_dir):
    body = {"messages": [{"role": "user", "content": [
        {"type": "video_url", "video_url": {"url": "clip.mp4"}},
        {"type": "input_audio", "input_audio": {"data": base64.b64encode((media_dir / "tone.wav").read_bytes()).decode(),
                                                "format": "wav"}},
        {"type": "text", "text": "And the tone?"}]}], "max_tokens": 2, "temperature": 0}
    r = post(server, body)
    assert r.status_code == 200, r.text
    assert r.json()["usage"]["omnisift"]["audio"]["tokens_in"] > 0
    r = post(server, {**body, "messages": video_msg("file://" + str(media_dir / "clip.mp4"))})
    assert r.status_code == 200, r.text


def test_bad_requests_then_a_good_one(server, media_dir, tmp_path):
    clip = data_uri(media_dir / "clip.mp4", "video/mp4")
    r = httpx.post(server.base + "/v1/chat/completions", content=b'{"messages": [', timeout=30,
                   headers={"content-type": "application/json"})
    assert_error(r, 400, "JSON")
    r = post(server, {"messages": [{"role": "user", "content": [{"type": "hologram_url", "hologram_url": {}}]}]})
    assert_error(r, 400, "hologram_url")
    r = post(server, {"messages": video_msg("data:video/mp4;base64,@@not base64@@")})
    err = assert_error(r, 400, "base64")
    assert err["param"] == "messages[0].content[0].video_url.url"
    r = post(server, {"messages": [{"role": "user", "content": [
        {"type": "input_audio", "input_audio": {"data": "%%%", "format": "wav"}}]}]})
    assert_error(r, 400, "base64")
    r = post(server, {"messages": video_msg("https://example.com/clip.mp4")})
    assert_error(r, 400, "remote")
    outside = write_clip(tmp_path / "outside.mp4", seconds=1.0)
    r = post(server, {"messages": video_msg(str(outside))})
    assert_error(r, 400, "allowed media folder")
    r = post(server, {"messages": video_msg("../" + outside.name)})
    assert_error(r, 400, "allowed media folder")
    r = post(server, {"messages": video_msg(clip), "video_retention": 1.5})
    assert_error(r, 400, "video_retention")
    r = post(server, {"messages": video_msg(clip), "audio_selector": "loudest"})
    assert_error(r, 400, "audio_selector")
    r = post(server, {"messages": []})
    assert_error(r, 400, "messages")
    r = post(server, {"messages": video_msg("data:video/mp4;base64," + "A" * 3_000_000)})
    assert_error(r, 413, "limit")
    r = post(server, {"messages": video_msg(data_uri(media_dir / "tone.wav", "video/mp4"))})
    assert 400 <= r.status_code < 500, r.text         # bytes that are no video: the model refuses them
    r = httpx.get(server.base + "/health")
    assert r.status_code == 200
    r = post(server, {"messages": video_msg(clip), "max_tokens": 2, "temperature": 0})
    assert r.status_code == 200, r.text
    assert r.json()["object"] == "chat.completion"


def test_api_key(tiny_model):
    from pyomnisift.server import ServerSettings, create_app

    class Stub:          # no model needed to check the key
        alias, llama = "stub", object()

    app = create_app(server_settings=ServerSettings(api_key="sekrit"), model=Stub())
    with Server(app) as s:
        assert_error(httpx.get(s.base + "/v1/models"), 401, "API key")
        r = httpx.get(s.base + "/v1/models", headers={"Authorization": "Bearer sekrit"})
        assert r.status_code == 200 and r.json()["data"][0]["id"] == "stub"


@needs_streaming
def test_openai_client_streaming(server, media_dir):
    openai = pytest.importorskip("openai")
    client = openai.OpenAI(base_url=server.base + "/v1", api_key="unused")
    chunks = list(client.chat.completions.create(
        model="x", messages=video_msg(data_uri(media_dir / "clip.mp4", "video/mp4")), max_tokens=6,
        temperature=0, stream=True))
    assert chunks[0].choices[0].delta.role == "assistant"
    assert all(c.object == "chat.completion.chunk" for c in chunks)
    assert chunks[-1].choices[0].finish_reason in ("stop", "length")
    assert "omnisift" in chunks[-1].usage.model_dump()


@needs_streaming
def test_stream_bad_input_is_a_plain_400(server):
    r = post(server, {"messages": video_msg("data:video/mp4;base64,AAAA"), "stream": True})
    assert 400 <= r.status_code < 500 and r.headers["content-type"].startswith("application/json"), r.text


@needs_streaming
def test_client_disconnect_stops_generation(server, media_dir):
    model = server.app.state.model
    before = len(model.streams)
    body = {"messages": video_msg(data_uri(media_dir / "clip.mp4", "video/mp4")), "stream": True,
            "max_tokens": 3000, "temperature": 1.0, "seed": 1}
    with httpx.stream("POST", server.base + "/v1/chat/completions", json=body, timeout=120) as r:
        assert r.status_code == 200
        n = 0
        for line in r.iter_lines():
            if line.startswith("data: "):
                n += 1
                if n == 3:
                    break          # leaving the block closes the connection
    deadline = time.time() + 30
    while len(model.streams) == before and time.time() < deadline:
        time.sleep(0.05)
    assert len(model.streams) == before + 1, "the stream did not end after the client left"
    rec = model.streams[-1]
    assert rec["end"] == "disconnect" and rec["chunks"] < 100, rec
    r = post(server, {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 2})
    assert r.status_code == 200, r.text


# --- the streaming path with a stand-in model (runs on any branch): SSE shape, errors before the
# first chunk, client disconnects, serialization

class FakeLlama:
    """Streams as the chat API contract says: role chunk, content deltas, a last chunk with
    finish_reason and usage; bad input raises before the first chunk."""

    def __init__(self, delay=0.01):
        self.delay = delay
        self.active = 0
        self.max_active = 0
        self.produced = []
        self.closed = []
        self.kwargs = []

    def create_chat_completion(self, messages, stream=False, max_tokens=None, should_stop=None, **kw):
        self.kwargs.append(dict(kw, max_tokens=max_tokens))
        text = json.dumps(messages)
        if "bad" in text:
            raise ValueError("video 1: cannot be decoded as video")
        if not stream:
            return {"object": "chat.completion", "choices": [{"index": 0, "message": {"role": "assistant", "content": "ok"},
                                                              "finish_reason": "stop"}], "usage": {}}
        return self._stream(max_tokens or 10, should_stop, text)

    def _stream(self, n, should_stop, text):
        base = {"id": "chatcmpl-x", "object": "chat.completion.chunk", "created": 0, "model": "fake"}
        self.active += 1
        self.max_active = max(self.max_active, self.active)
        produced = 0
        try:
            yield {**base, "choices": [{"index": 0, "delta": {"role": "assistant"}, "finish_reason": None}]}
            finish = "length"
            for i in range(n):
                time.sleep(self.delay)
                if should_stop is not None and should_stop():
                    finish = "stop"             # the contract: should_stop ends the generation
                    break
                if "fail" in text and i == 2:
                    raise RuntimeError("decode failed")
                produced += 1
                yield {**base, "choices": [{"index": 0, "delta": {"content": f"t{i} "}, "finish_reason": None}]}
            yield {**base, "choices": [{"index": 0, "delta": {}, "finish_reason": finish}],
                   "usage": {"prompt_tokens": 1, "completion_tokens": produced, "total_tokens": produced + 1,
                             "omnisift": {"video": {"tokens_in": 10, "tokens_kept": 3}}}}
        finally:
            self.active -= 1
            self.produced.append(produced)
            self.closed.append(True)

    def close(self):
        pass


@pytest.fixture()
def fake_server():
    from pyomnisift.server import ServerSettings, create_app
    from pyomnisift.server.model import OmniModel

    model = OmniModel.__new__(OmniModel)        # the real wrapper (lock, records) around a stand-in
    import asyncio

    model.llama, model.alias, model.lock, model.waiting, model.streams = FakeLlama(), "fake", asyncio.Lock(), 0, []
    app = create_app(server_settings=ServerSettings(interrupt_requests=False), model=model)
    with Server(app) as s:
        yield s


def sse_events(r):
    return [line[6:] for line in r.iter_lines() if line.startswith("data: ")]


def test_sse_stream_shape_with_openai_client(fake_server):
    openai = pytest.importorskip("openai")
    client = openai.OpenAI(base_url=fake_server.base + "/v1", api_key="unused")
    chunks = list(client.chat.completions.create(model="fake", messages=[{"role": "user", "content": "hi"}],
                                                 max_tokens=5, stream=True, extra_body={"video_retention": 0.25}))
    assert chunks[0].choices[0].delta.role == "assistant"
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == "t0 t1 t2 t3 t4 "
    assert chunks[-1].choices[0].finish_reason == "length"
    assert chunks[-1].usage.model_dump()["omnisift"]["video"]["tokens_kept"] == 3
    kw = fake_server.app.state.model.llama.kwargs[-1]
    assert kw["video_retention"] == 0.25 and kw["max_tokens"] == 5
    assert "temperature" not in kw        # unset fields keep the library's defaults
    with httpx.stream("POST", fake_server.base + "/v1/chat/completions", timeout=30,
                      json={"messages": [{"role": "user", "content": "hi"}], "max_tokens": 2, "stream": True}) as r:
        assert r.headers["content-type"].startswith("text/event-stream")
        events = sse_events(r)
    assert events[-1] == "[DONE]" and len(events) == 1 + 2 + 1 + 1


def test_stream_error_before_first_chunk_is_json_400(fake_server):
    r = post(fake_server, {"messages": [{"role": "user", "content": "bad"}], "stream": True})
    err = assert_error(r, 400, "cannot be decoded")
    assert err["type"] == "invalid_request_error"
    r = post(fake_server, {"messages": [{"role": "user", "content": "fine"}], "max_tokens": 1, "stream": True})
    assert r.status_code == 200 and "[DONE]" in r.text          # the lock was released


def test_disconnect_closes_the_generation(fake_server):
    model = fake_server.app.state.model
    body = {"messages": [{"role": "user", "content": "long"}], "max_tokens": 5000, "stream": True}
    with httpx.stream("POST", fake_server.base + "/v1/chat/completions", json=body, timeout=30) as r:
        for i, _ in enumerate(r.iter_lines()):
            if i >= 6:
                break
    deadline = time.time() + 20
    while not model.streams and time.time() < deadline:
        time.sleep(0.02)
    assert model.streams and model.streams[-1]["end"] == "disconnect", model.streams
    assert model.llama.closed == [True] and model.llama.produced[-1] < 500, model.llama.produced
    r = post(fake_server, {"messages": [{"role": "user", "content": "next"}], "max_tokens": 1})
    assert r.status_code == 200


def test_requests_are_serialized(fake_server):
    import concurrent.futures

    body = {"messages": [{"role": "user", "content": "x"}], "max_tokens": 20, "stream": True}
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        results = list(pool.map(lambda _: post(fake_server, body), range(4)))
    assert all(r.status_code == 200 and r.text.rstrip().endswith("[DONE]") for r in results)
    assert fake_server.app.state.model.llama.max_active == 1


def test_waiting_request_interrupts_a_stream():
    """llama_cpp.server's interrupt_requests (on by default): a request that waits for the model
    ends the stream in progress, then is answered."""
    import asyncio
    import concurrent.futures

    from pyomnisift.server import ServerSettings, create_app
    from pyomnisift.server.model import OmniModel

    model = OmniModel.__new__(OmniModel)
    model.llama, model.alias, model.lock, model.waiting, model.streams = FakeLlama(delay=0.02), "fake", asyncio.Lock(), 0, []
    app = create_app(server_settings=ServerSettings(), model=model)
    with Server(app) as s:
        long = {"messages": [{"role": "user", "content": "long"}], "max_tokens": 2000, "stream": True}
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            first = pool.submit(post, s, long)
            while not model.llama.active:
                time.sleep(0.01)
            r = post(s, {"messages": [{"role": "user", "content": "short"}], "max_tokens": 1})
            assert r.status_code == 200
            assert first.result().status_code == 200
    assert model.streams[0]["end"] == "interrupted" and model.llama.produced[0] < 2000
