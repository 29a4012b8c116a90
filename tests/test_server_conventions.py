"""The conventions clients of llama_cpp.server, llama-server and the OpenAI API expect, on real HTTP
with the tiny model: refused fields (max_tokens <= 0, n > 1, bad logit_bias, bad grammar) as 400s in
OpenAI's shape, grammar and logprobs checked against llama-cpp-python's own Llama on the same GGUF,
usage in streams (and stream_options.include_usage), how a stream ends, the model id, error bodies
without paths, input_video, CORS, --config_file, /v1/completions, the tokenizer routes and /metrics.
After every refused request the next one answers exactly as before."""

from __future__ import annotations

import base64
import json
import os
import re
import subprocess
import sys
import time

import pytest

httpx = pytest.importorskip("httpx")
pytest.importorskip("prometheus_client")

import llama_cpp  # noqa: E402

from test_server import (FakeLlama, Server, assert_error, data_uri, media_dir, post, server,  # noqa: E402,F401
                         sse_events, video_msg, _free_port)
from tool_clips import write_clip  # noqa: E402

TEXT = [{"role": "system", "content": "You are terse."}, {"role": "user", "content": "Name three colours."}]
GREEDY = {"max_tokens": 8, "temperature": 0}


@pytest.fixture(scope="module")
def plain(tiny_model):
    """llama-cpp-python's own Llama on the same GGUF (logits of every position kept: logprobs)."""
    m = llama_cpp.Llama(str(tiny_model[0]), n_ctx=1024, n_batch=1024, n_ubatch=1024, n_threads=2, logits_all=True,
                        verbose=False)
    yield m
    m.close()


@pytest.fixture(scope="module")
def lp_server(tiny_model):
    """A server started with --logits_all true (small n_ctx: it keeps n_ctx x n_vocab logits)."""
    from pyomnisift.server import ModelSettings, ServerSettings, create_app

    llm, mmproj = tiny_model
    app = create_app(server_settings=ServerSettings(api_key=None),
                     model_settings=ModelSettings(model=str(llm), mmproj=str(mmproj), n_ctx=1024, n_threads=2,
                                                  logits_all=True))
    with Server(app) as s:
        yield s
    app.state.model.close()


def answer(server, body=None):
    r = post(server, {"messages": TEXT, **GREEDY} if body is None else body)
    assert r.status_code == 200, r.text
    return r.json()["choices"][0]["message"]["content"]


def stream_chunks(server, body, path="/v1/chat/completions"):
    with httpx.stream("POST", server.base + path, json={**body, "stream": True}, timeout=120) as r:
        assert r.status_code == 200, r.read()
        events = sse_events(r)
    assert events[-1] == "[DONE]", events[-3:]
    return [json.loads(e) for e in events[:-1]]


# --- refused fields: OpenAI's 400s, and the model untouched


def test_max_tokens_and_n_are_refused(server):
    before = answer(server)
    assert answer(server, {"messages": TEXT, "n": 1, **GREEDY}) == before      # what clients send
    for bad, param in ((dict(max_tokens=0), "max_tokens"), (dict(max_tokens=-5), "max_tokens"), (dict(n=2), "n"),
                       (dict(stream_options={"include_usage": True}), "stream_options")):
        err = assert_error(post(server, {"messages": TEXT, **bad}), 400, param)
        assert err["param"] == param and err["type"] == "invalid_request_error", err
        assert answer(server) == before
    for bad, param in ((dict(max_tokens=0), "max_tokens"), (dict(n=3), "n"), (dict(best_of=2), "best_of"),
                       (dict(prompt=["a", "b"]), "prompt")):
        r = httpx.post(server.base + "/v1/completions", json={"prompt": "Once", **bad}, timeout=60)
        assert assert_error(r, 400, param)["param"] == param
    assert answer(server) == before


def test_grammar_as_llama_cpp_python(server, plain):
    grammar = 'root ::= ("red" | "green" | "blue") (", " ("red" | "green" | "blue"))*'
    before = answer(server)
    r = post(server, {"messages": TEXT, "grammar": grammar, **GREEDY})
    assert r.status_code == 200, r.text
    ours = r.json()["choices"][0]["message"]["content"]
    plain.reset()
    ref = plain.create_chat_completion(TEXT, grammar=llama_cpp.LlamaGrammar.from_string(grammar, verbose=False),
                                       **GREEDY)["choices"][0]["message"]["content"]
    assert ours == ref and re.fullmatch(r"(red|green|blue)(, (red|green|blue))*,?( \w*)?", ours), (ours, ref)
    streamed = stream_chunks(server, {"messages": TEXT, "grammar": grammar, **GREEDY})
    assert "".join(c["choices"][0]["delta"].get("content") or "" for c in streamed) == ours
    for bad in ('root ::= "unterminated', "rot ::= \"x\"", "root ::= undefined_rule"):
        err = assert_error(post(server, {"messages": TEXT, "grammar": bad, **GREEDY}), 400, "grammar")
        assert err["param"] == "grammar"
    assert answer(server) == before


@pytest.mark.parametrize("grammar", [
    "root ::= " + "(" * 20000 + '"a"' + ")" * 20000,                                  # parser's stack
    "root::=r0\n" + "".join(f"r{i}::=r{i + 1}\n" for i in range(100000)) + 'r100000::="a"',
    'root ::= "a"{100000}', 'root ::= ("a"{0,300}){0,300}', 'root ::= x{0,300}\nx ::= "a"{0,300}'])
def test_grammars_that_crash_llama_cpp_are_refused(server, grammar):
    """Each of these kills the process inside llama.cpp (a segfault while parsing, or at the first
    sampled token) or, the last, holds it for more than 5 minutes: checked with llama-cpp-python
    0.3.36's own Llama in a child process. The server refuses them."""
    before = answer(server)
    assert_error(post(server, {"messages": TEXT, "grammar": grammar, **GREEDY}), 400, "too large")
    assert answer(server) == before


def test_json_schemas_bounded_as_grammars(server):
    before = answer(server)
    for schema, word in (({"type": "array", "items": {"type": "string"}, "maxItems": 10**9}, "maxItems"),
                         ({"type": "string", "maxLength": 100000}, "maxLength"),
                         ({"type": "array", "items": {"type": "string", "maxLength": 500}, "maxItems": 500}, "too large")):
        r = post(server, {"messages": TEXT, "response_format": {"type": "json_object", "schema": schema}, **GREEDY})
        assert assert_error(r, 400, word)["param"] == "response_format"
        assert answer(server) == before
    ok = {"type": "object", "properties": {"a": {"type": "array", "maxItems": 5, "items": {"type": "string"}}}}
    r = post(server, {"messages": TEXT, "response_format": {"type": "json_object", "schema": ok}, **GREEDY})
    assert r.status_code == 200, r.text


def test_grammar_bounds_keep_real_grammars(server, plain):
    from llama_cpp import llama_grammar

    from pyomnisift.server import gbnf

    schema = llama_grammar.json_schema_to_gbnf(json.dumps({"type": "object", "properties": {
        "a": {"type": "array", "items": {"type": "string"}, "maxItems": 10}, "b": {"type": "integer"}}}))
    for g in (llama_grammar.JSON_GBNF, llama_grammar.ARITHMETIC_GBNF, llama_grammar.C_GBNF, schema,
              'root ::= ("a"{0,32}){0,32}', "root ::= [a-z]{1,1024}",
              "root ::= r0\n" + "".join(f"r{i} ::= r{i + 1}?\n" for i in range(1000)) + "r1000 ::= [a-z]"):
        gbnf.check(g)
    r = post(server, {"messages": TEXT, "grammar": llama_grammar.JSON_GBNF, "max_tokens": 4, "temperature": 0})
    assert r.status_code == 200, r.text


def test_logit_bias_ids_checked_and_applied(server, plain, capfd):
    before = answer(server)
    n_vocab = plain.n_vocab()
    capfd.readouterr()
    for bad in ({str(n_vocab): 5}, {"-1": 5}, {"hello": 5}, {"15": 1000}):
        err = assert_error(post(server, {"messages": TEXT, "logit_bias": bad, **GREEDY}), 400, "logit_bias")
        assert err["param"] == "logit_bias"
    assert "Traceback" not in capfd.readouterr().err
    assert answer(server) == before
    token = plain.tokenize(b" blue", add_bos=False)[0]
    r = post(server, {"messages": TEXT, "logit_bias": {str(token): 100}, **GREEDY})
    plain.reset()
    ref = plain.create_chat_completion(TEXT, logit_bias={token: 100.0}, **GREEDY)
    assert r.json()["choices"][0]["message"]["content"] == ref["choices"][0]["message"]["content"]
    assert "blue" in ref["choices"][0]["message"]["content"]
    r = post(server, {"messages": TEXT, "logit_bias": {" blue": 100}, "logit_bias_type": "tokens", **GREEDY})
    assert r.json()["choices"][0]["message"]["content"] == ref["choices"][0]["message"]["content"]
    assert "Traceback" not in capfd.readouterr().err
    assert answer(server) == before


# --- logprobs (--logits_all), against llama-cpp-python's Llama


def test_logprobs_need_the_flag(server):
    before = answer(server)
    err = assert_error(post(server, {"messages": TEXT, "logprobs": True, **GREEDY}), 400, "--logits_all")
    assert err["param"] == "logprobs"
    err = assert_error(post(server, {"messages": TEXT, "top_logprobs": 2, **GREEDY}), 400, "logprobs")
    assert err["param"] == "top_logprobs"
    r = httpx.post(server.base + "/v1/completions", json={"prompt": "Once", "logprobs": 2}, timeout=60)
    assert_error(r, 400, "--logits_all")
    assert answer(server) == before


def test_logprobs_equal_llama_cpp_python(lp_server, plain):
    r = post(lp_server, {"messages": TEXT, "logprobs": True, "top_logprobs": 3, **GREEDY})
    assert r.status_code == 200, r.text
    ours = r.json()["choices"][0]["logprobs"]["content"]
    plain.reset()
    ref = plain.create_chat_completion(TEXT, logprobs=True, top_logprobs=3, **GREEDY)["choices"][0]["logprobs"]["content"]
    assert [t["token"] for t in ours] == [t["token"] for t in ref] and len(ours) > 0
    for a, b in zip(ours, ref):
        assert a["logprob"] == pytest.approx(b["logprob"], abs=1e-3)
        assert [t["token"] for t in a["top_logprobs"]] == [t["token"] for t in b["top_logprobs"]]
        assert [t["logprob"] for t in a["top_logprobs"]] == pytest.approx([t["logprob"] for t in b["top_logprobs"]],
                                                                          abs=1e-3)
        assert a["logprob"] == pytest.approx(max(t["logprob"] for t in a["top_logprobs"]), abs=1e-5)  # greedy
    # logprobs alone: each token's own, no alternatives (OpenAI's top_logprobs 0)
    r = post(lp_server, {"messages": TEXT, "logprobs": True, **GREEDY})
    alone = r.json()["choices"][0]["logprobs"]["content"]
    assert [t["logprob"] for t in alone] == pytest.approx([t["logprob"] for t in ours], abs=1e-5)
    assert_error(post(lp_server, {"messages": TEXT, "logprobs": True, "top_logprobs": 21}), 400, "top_logprobs")
    # /v1/completions: the integer form, as llama-cpp-python's create_completion
    r = httpx.post(lp_server.base + "/v1/completions", json={"prompt": "Once upon a time", "logprobs": 2, **GREEDY},
                   timeout=60)
    plain.reset()
    ref = plain.create_completion("Once upon a time", logprobs=2, **GREEDY)["choices"][0]["logprobs"]
    got = r.json()["choices"][0]["logprobs"]
    assert got["tokens"] == ref["tokens"]
    assert got["token_logprobs"] == pytest.approx(ref["token_logprobs"], abs=1e-3)


def test_logprobs_after_a_video(lp_server, media_dir):
    body = {"messages": video_msg(data_uri(media_dir / "clip.mp4", "video/mp4")), "logprobs": True,
            "top_logprobs": 2, **GREEDY}
    r = post(lp_server, body)
    assert r.status_code == 200, r.text
    content = r.json()["choices"][0]["logprobs"]["content"]
    assert len(content) == r.json()["usage"]["completion_tokens"] > 0
    for t in content:
        assert t["logprob"] <= 0 and t["logprob"] == pytest.approx(t["top_logprobs"][0]["logprob"], abs=1e-5)
    streamed = stream_chunks(lp_server, body)
    lps = [x for c in streamed if c["choices"] and c["choices"][0].get("logprobs")
           for x in c["choices"][0]["logprobs"]["content"]]
    assert [x["token"] for x in lps] == [t["token"] for t in content]


# --- streams: usage, include_usage, how they end


def test_stream_usage_equals_the_non_streamed_count(server, media_dir):
    for body in ({"messages": TEXT, **GREEDY}, {"messages": TEXT, "max_tokens": 40, "temperature": 0},
                 {"messages": video_msg(data_uri(media_dir / "clip.mp4", "video/mp4")), **GREEDY}):
        whole = post(server, body).json()
        chunks = stream_chunks(server, body)
        last = chunks[-1]
        assert last["choices"][0]["finish_reason"] == whole["choices"][0]["finish_reason"]
        u, w = last["usage"], whole["usage"]
        assert (u["prompt_tokens"], u["completion_tokens"], u["total_tokens"]) == \
               (w["prompt_tokens"], w["completion_tokens"], w["total_tokens"])
        assert u["total_tokens"] == u["prompt_tokens"] + u["completion_tokens"] and u["completion_tokens"] > 0
        if whole["choices"][0]["finish_reason"] == "length":
            assert u["completion_tokens"] == body["max_tokens"]


def test_stream_options_include_usage(server):
    openai = pytest.importorskip("openai")
    client = openai.OpenAI(base_url=server.base + "/v1", api_key="unused")
    chunks = list(client.chat.completions.create(model="x", messages=TEXT, stream=True,
                                                 stream_options={"include_usage": True}, **GREEDY))
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens > 0
    assert chunks[-2].choices[0].finish_reason in ("stop", "length")
    assert chunks[-1].usage.model_dump()["total_tokens"] == chunks[-2].usage.model_dump()["total_tokens"]
    plain_stream = stream_chunks(server, {"messages": TEXT, **GREEDY})
    assert all(c["choices"] for c in plain_stream)          # no extra chunk unless asked
    chunks = stream_chunks(server, {"prompt": "Once upon a time", "stream_options": {"include_usage": True},
                                    **GREEDY}, path="/v1/completions")
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["completion_tokens"] == GREEDY["max_tokens"]


@pytest.fixture()
def fake_server():
    import asyncio

    from pyomnisift.server import ServerSettings, create_app
    from pyomnisift.server.model import OmniModel

    model = OmniModel.__new__(OmniModel)
    model.llama, model.alias, model.lock, model.waiting, model.streams = FakeLlama(delay=0.02), "fake", asyncio.Lock(), 0, []
    app = create_app(server_settings=ServerSettings(), model=model)
    with Server(app) as s:
        yield s


def test_error_mid_stream_ends_with_finish_reason_and_done(fake_server):
    openai = pytest.importorskip("openai")
    chunks = stream_chunks(fake_server, {"messages": [{"role": "user", "content": "fail"}], "max_tokens": 10})
    assert [c["choices"][0]["delta"].get("content") for c in chunks[1:-1]] == ["t0 ", "t1 "]
    last = chunks[-1]
    assert last["choices"][0]["finish_reason"] == "error" and last["id"] == chunks[0]["id"]
    assert last["error"]["message"] == "decode failed" and last["error"]["type"] == "internal_server_error"
    streams = fake_server.app.state.model.streams
    deadline = time.time() + 10
    while not streams and time.time() < deadline:      # recorded once the response is closed
        time.sleep(0.02)
    assert streams[-1]["end"] == "error"
    client = openai.OpenAI(base_url=fake_server.base + "/v1", api_key="unused")
    with pytest.raises(openai.APIError, match="decode failed"):
        list(client.chat.completions.create(model="x", messages=[{"role": "user", "content": "fail"}], stream=True))
    r = post(fake_server, {"messages": [{"role": "user", "content": "next"}], "max_tokens": 2, "stream": True})
    assert r.status_code == 200 and r.text.rstrip().endswith("[DONE]")


def test_interrupted_stream_ends_with_finish_reason_and_done(fake_server):
    import concurrent.futures

    model = fake_server.app.state.model
    long = {"messages": [{"role": "user", "content": "long"}], "max_tokens": 2000, "stream": True}
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        first = pool.submit(post, fake_server, long)
        while not model.llama.active:
            time.sleep(0.01)
        assert post(fake_server, {"messages": [{"role": "user", "content": "short"}], "max_tokens": 1}).status_code == 200
        events = [line[6:] for line in first.result().text.splitlines() if line.startswith("data: ")]
    assert events[-1] == "[DONE]"
    assert json.loads(events[-2])["choices"][0]["finish_reason"] == "stop"
    assert model.streams[0]["end"] == "interrupted" and model.llama.produced[0] < 2000


# --- the model id, error bodies


def test_model_is_the_listed_id(server):
    listed = httpx.get(server.base + "/v1/models").json()["data"][0]["id"]
    assert post(server, {"messages": TEXT, **GREEDY}).json()["model"] == listed
    assert {c["model"] for c in stream_chunks(server, {"messages": TEXT, **GREEDY})} == {listed}
    r = httpx.post(server.base + "/v1/completions", json={"prompt": "Once", **GREEDY}, timeout=60)
    assert r.json()["model"] == listed
    assert {c["model"] for c in stream_chunks(server, {"prompt": "Once", **GREEDY}, path="/v1/completions")} == {listed}


def test_error_bodies_carry_no_paths_or_reprs(server, media_dir):
    before = answer(server)
    junk = media_dir / "junk.mp4"
    junk.write_bytes(b"this is no media " * 64)
    garbage = base64.b64encode(b"\x00\x01garbage" * 100).decode()
    bodies = [video_msg(str(junk)), video_msg("file://" + str(junk)),
              video_msg("data:video/mp4;base64," + garbage),
              [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "data:image/png;base64," + garbage}}]}],
              [{"role": "user", "content": [{"type": "input_audio", "input_audio": {"data": garbage, "format": "wav"}}]}],
              [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": str(junk)}}]}]]
    for messages in bodies:
        r = post(server, {"messages": messages, **GREEDY})
        assert 400 <= r.status_code < 500, r.text
        message = r.json()["error"]["message"]
        assert str(media_dir) not in message and os.path.realpath(media_dir) not in message, message
        assert not re.search(r"object at 0x|(?<![\w.:/])/(tmp|home|root|work|usr)\b", message), message
        if "junk" in json.dumps(messages):
            assert "junk.mp4" in message, message       # still says which file
        assert answer(server) == before
    junk.unlink()


# --- input_video (llama-server's part name)


def test_input_video_is_video_url(server, media_dir):
    clip = (media_dir / "clip.mp4").read_bytes()
    b64 = base64.b64encode(clip).decode()
    ref = post(server, {"messages": video_msg(data_uri(media_dir / "clip.mp4", "video/mp4")), **GREEDY}).json()
    local = "file://" + str(media_dir / "clip.mp4")
    for part in ({"data": b64}, {"url": "data:video/mp4;base64," + b64}, local, {"url": local}):
        r = post(server, {"messages": [{"role": "user", "content": [{"type": "input_video", "input_video": part},
                                                                   {"type": "text", "text": "What happens?"}]}],
                          **GREEDY})
        assert r.status_code == 200, r.text
        assert r.json()["usage"]["omnisift"]["video"] == ref["usage"]["omnisift"]["video"]
        assert r.json()["choices"][0]["message"] == ref["choices"][0]["message"]
    for bad, word in (({"data": "@@@"}, "base64"), ({"data": b64, "url": local}, "exactly one"), ({}, "exactly one"),
                      ({"url": "https://example.com/v.mp4"}, "remote")):
        r = post(server, {"messages": [{"role": "user", "content": [{"type": "input_video", "input_video": bad}]}]})
        assert_error(r, 400, word)
    assert post(server, {"messages": video_msg(data_uri(media_dir / "clip.mp4", "video/mp4")), **GREEDY}).json()[
        "choices"][0]["message"] == ref["choices"][0]["message"]


# --- CORS, --config_file


def test_cors_only_when_configured(server):
    from pyomnisift.server import ServerSettings, create_app

    r = httpx.options(server.base + "/v1/chat/completions", headers={
        "Origin": "https://app.example", "Access-Control-Request-Method": "POST"})
    assert "access-control-allow-origin" not in r.headers      # off by default

    class Stub:
        alias, llama = "stub", object()

    app = create_app(server_settings=ServerSettings(api_key="k", cors_origins=["https://app.example"]), model=Stub())
    with Server(app) as s:
        pre = {"Origin": "https://app.example", "Access-Control-Request-Method": "POST",
               "Access-Control-Request-Headers": "authorization, content-type"}
        r = httpx.options(s.base + "/v1/chat/completions", headers=pre)
        assert r.status_code == 200 and r.headers["access-control-allow-origin"] == "https://app.example"
        assert "authorization" in r.headers["access-control-allow-headers"].lower()
        r = httpx.get(s.base + "/v1/models", headers={"Origin": "https://app.example", "Authorization": "Bearer k"})
        assert r.status_code == 200 and r.headers["access-control-allow-origin"] == "https://app.example"
        r = httpx.options(s.base + "/v1/chat/completions", headers={**pre, "Origin": "https://evil.example"})
        assert r.status_code == 400 and "access-control-allow-origin" not in r.headers
        r = httpx.get(s.base + "/v1/models", headers={"Origin": "https://app.example"})
        assert r.status_code == 401 and r.headers["access-control-allow-origin"] == "https://app.example"


def test_config_file(tiny_model, tmp_path):
    from pydantic import ValidationError

    from pyomnisift.server.settings import load_config_file

    llm, mmproj = tiny_model
    yaml_file = tmp_path / "server.yaml"
    yaml_file.write_text(f"host: 127.0.0.1\nport: {_free_port()}\napi_key: sekrit\ncors_origins: ['https://a.example']\n"
                         f"models:\n  - model: {llm}\n    mmproj: {mmproj}\n    model_alias: tiny\n    n_ctx: 1024\n"
                         f"    n_threads: 2\n    video_retention: 0.5\n")
    server, model = load_config_file(str(yaml_file))
    assert (server.api_key, server.cors_origins, model.model_alias, model.n_ctx, model.video_retention) == \
           ("sekrit", ["https://a.example"], "tiny", 1024, 0.5)
    json_file = tmp_path / "server.json"
    json_file.write_text(json.dumps({"port": 1234, "model": str(llm), "mmproj": str(mmproj), "n_ctx": 2048}))
    server, model = load_config_file(str(json_file), {"n_ctx": 512})
    assert (server.port, model.n_ctx, model.model) == (1234, 512, str(llm))   # flags win
    for text, word in (("{", "not valid JSON"), ("[1]", "an object"), ('{"models": [{}, {}]}', "exactly one"),
                       ('{"model": "m", "n_ctxx": 5}', "n_ctxx")):
        bad = tmp_path / "bad.json"
        bad.write_text(text)
        with pytest.raises(ValueError, match=word):
            load_config_file(str(bad))
    bad.write_text('{"model": "m", "n_ctx": -4}')
    with pytest.raises(ValidationError):
        load_config_file(str(bad))

    # The command line, as users start it: the file's settings are the server's.
    server_port = load_config_file(str(yaml_file))[0].port
    proc = subprocess.Popen([sys.executable, "-P", "-m", "pyomnisift.server", "--config_file", str(yaml_file)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        base = f"http://127.0.0.1:{server_port}"
        deadline = time.time() + 60
        while time.time() < deadline and proc.poll() is None:
            try:
                if httpx.get(base + "/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.2)
        assert proc.poll() is None, proc.communicate()[1].decode()
        assert httpx.get(base + "/v1/models").status_code == 401
        r = httpx.get(base + "/v1/models", headers={"Authorization": "Bearer sekrit"})
        assert r.json()["data"][0]["id"] == "tiny"
    finally:
        proc.terminate()
        proc.wait(30)
    out = subprocess.run([sys.executable, "-P", "-m", "pyomnisift.server", "--config_file", str(tmp_path / "none.yaml")],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 2 and "config file not found" in out.stderr, out.stderr


# --- /v1/completions, tokenizer routes


def test_completions_as_llama_cpp_python(server, plain):
    openai = pytest.importorskip("openai")
    before = answer(server)
    prompt = "Once upon a time"
    r = httpx.post(server.base + "/v1/completions", json={"prompt": prompt, **GREEDY}, timeout=60).json()
    plain.reset()
    ref = plain.create_completion(prompt, **GREEDY)
    assert r["object"] == "text_completion" and r["choices"][0]["text"] == ref["choices"][0]["text"]
    assert r["usage"] == ref["usage"]
    chunks = stream_chunks(server, {"prompt": prompt, **GREEDY}, path="/v1/completions")
    assert "".join(c["choices"][0]["text"] for c in chunks) == ref["choices"][0]["text"]
    assert chunks[-1]["choices"][0]["finish_reason"] == ref["choices"][0]["finish_reason"]
    assert chunks[-1]["usage"] == ref["usage"]
    client = openai.OpenAI(base_url=server.base + "/v1", api_key="unused")
    out = client.completions.create(model="x", prompt=prompt, **GREEDY)
    assert out.choices[0].text == ref["choices"][0]["text"]
    assert answer(server) == before      # the chat after a completion: as before


def test_tokenize_routes(server, plain):
    text = "Hello world<|im_start|> ünïcode"
    ids = plain.tokenize(text.encode(), add_bos=False, special=True)
    r = httpx.post(server.base + "/tokenize", json={"content": text}).json()
    assert r == {"tokens": ids}
    r = httpx.post(server.base + "/tokenize", json={"content": text, "parse_special": False}).json()
    assert r["tokens"] == plain.tokenize(text.encode(), add_bos=False, special=False) != ids
    r = httpx.post(server.base + "/tokenize", json={"content": text, "with_pieces": True}).json()
    assert [t["id"] for t in r["tokens"]] == ids
    pieces = b"".join(p["piece"].encode() if isinstance(p["piece"], str) else bytes(p["piece"]) for p in r["tokens"])
    assert pieces.decode() == text
    assert httpx.post(server.base + "/detokenize", json={"tokens": ids}).json() == {"content": text}
    r = httpx.post(server.base + "/extras/tokenize", json={"input": text}).json()
    assert r == {"tokens": plain.tokenize(text.encode(), special=True)}
    assert httpx.post(server.base + "/extras/tokenize/count", json={"input": text}).json() == {"count": len(r["tokens"])}
    assert httpx.post(server.base + "/extras/detokenize", json={"tokens": ids}).json() == \
           {"text": plain.detokenize(ids).decode()}
    for bad in ([plain.n_vocab()], [-1], [1, 2**31 - 1]):
        for path in ("/detokenize", "/extras/detokenize"):
            err = assert_error(httpx.post(server.base + path, json={"tokens": bad}), 400, "vocabulary")
            assert err["param"].startswith("tokens[")
    assert_error(httpx.post(server.base + "/tokenize", json={"text": "x"}), 400, "content")
    assert httpx.post(server.base + "/tokenize", json={"content": text}).json() == {"tokens": ids}


# --- /metrics


def _scrape(server) -> dict:
    from prometheus_client.parser import text_string_to_metric_families

    r = httpx.get(server.base + "/metrics")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
    out = {}
    for family in text_string_to_metric_families(r.text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def test_metrics(server, media_dir):
    a = _scrape(server)
    body = {"messages": video_msg(data_uri(media_dir / "clip.mp4", "video/mp4")), "video_retention": 0.5, **GREEDY}
    usage = post(server, body).json()["usage"]
    assert_error(post(server, {"messages": TEXT, "n": 2}), 400, "n")
    streamed = stream_chunks(server, {"messages": TEXT, **GREEDY})[-1]["usage"]
    b = _scrape(server)

    def delta(name, **labels):
        key = (name, tuple(sorted(labels.items())))
        return b.get(key, 0) - a.get(key, 0)

    assert delta("pyomnisift_requests_total", route="/v1/chat/completions", status="200") == 2
    assert delta("pyomnisift_requests_total", route="/v1/chat/completions", status="400") == 1
    assert delta("pyomnisift_requests_total", route="/metrics", status="200") == 1
    for m in ("video", "audio", "image"):
        assert delta("pyomnisift_media_tokens_in_total", modality=m) == usage["omnisift"][m]["tokens_in"]
        assert delta("pyomnisift_media_tokens_kept_total", modality=m) == usage["omnisift"][m]["tokens_kept"]
    assert usage["omnisift"]["video"]["tokens_kept"] < usage["omnisift"]["video"]["tokens_in"]
    assert delta("pyomnisift_prompt_tokens_total") == usage["prompt_tokens"] + streamed["prompt_tokens"]
    assert delta("pyomnisift_completion_tokens_total") == usage["completion_tokens"] + streamed["completion_tokens"]
    assert delta("pyomnisift_time_to_first_token_seconds_count") == 2
    ttft = (usage["omnisift"]["timings_ms"]["ttft"] + streamed["omnisift"]["timings_ms"]["ttft"]) / 1000
    assert delta("pyomnisift_time_to_first_token_seconds_sum") == pytest.approx(ttft, rel=1e-6)
    assert b[("pyomnisift_requests_waiting", ())] == 0
    httpx.get(server.base + "/no/such/path")
    assert delta("pyomnisift_requests_total", route="other", status="404") == 0   # b was taken before
    assert _scrape(server)[("pyomnisift_requests_total", (("route", "other"), ("status", "404")))] >= 1
