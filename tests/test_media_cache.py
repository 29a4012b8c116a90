"""The media cache (issue 20): states of prompts up to each decoded media item, restored in another
conversation, another Llama or another process, and never where a fresh context would answer
otherwise. Every restored answer is checked against a fresh context's logits (no cache)."""

from __future__ import annotations

import multiprocessing
import os
import warnings

import llama_cpp
import numpy as np
import pytest

import pyomnisift
import pyomnisift._state_cache as state_cache
from pyomnisift import MediaDiskCache, MediaRAMCache

from decode_helpers import clear, logits_of, prefill
from device import LLM_KW
from tool_clips import write_clip

KW = dict(n_ctx=4096, n_batch=512, n_ubatch=512, n_threads=2, **LLM_KW)


def video(path):
    return {"type": "video_url", "video_url": {"url": str(path)}}


def ask(*parts, system="You are terse."):
    content = [p if isinstance(p, dict) else {"type": "text", "text": p} for p in parts]
    return [{"role": "system", "content": system}, {"role": "user", "content": content}]


# --- the stores


def test_ram_cache_evicts_least_recently_used_within_its_budget():
    c = MediaRAMCache(capacity_bytes=100)
    c.put(b"a", b"x" * 40)
    c.put(b"b", b"y" * 40)
    assert c.get(b"a") == b"x" * 40            # a is now the most recent
    c.put(b"c", b"z" * 40)                     # 120 > 100: b goes
    assert b"b" not in c and b"a" in c and b"c" in c and c.nbytes == 80
    c.put(b"big", b"w" * 101)                  # larger than the budget: not kept, nothing evicted
    assert b"big" not in c and len(c) == 2
    c.put(b"a", b"q" * 10)                     # replacing counts the new size
    assert c.nbytes == 50 and c.get(b"a") == b"q" * 10
    c.discard(b"a")
    assert c.get(b"a") is None and c.nbytes == 40
    with pytest.raises(ValueError, match="capacity_bytes"):
        MediaRAMCache(0)


def _entry_files(directory) -> list:
    return sorted((os.path.join(d, f) for d, _, fs in os.walk(directory) for f in fs if f.endswith(".state")),
                  key=os.path.getsize)


def test_disk_cache_persists_and_drops_damaged_entries(tmp_path):
    big, small = os.urandom(200_000), os.urandom(1000)
    c = MediaDiskCache(tmp_path / "c", capacity_bytes=1 << 24)
    c.put(b"k1", big)
    c.put(b"k2", small)
    c = MediaDiskCache(tmp_path / "c", capacity_bytes=1 << 24)     # another process, later
    assert c.get(b"k1") == big and c.get(b"k2") == small
    path = _entry_files(tmp_path / "c")[-1]                        # the big one
    with open(path, "r+b") as f:                                   # truncated
        f.truncate(100_000)
    with pytest.warns(UserWarning, match="truncated or corrupt"):
        assert c.get(b"k1") is None
    assert b"k1" not in c and len(_entry_files(tmp_path / "c")) == 1   # removed
    c.put(b"k1", big)
    path = _entry_files(tmp_path / "c")[-1]
    with open(path, "r+b") as f:                                   # one byte changed
        f.seek(150_000)
        byte = f.read(1)
        f.seek(150_000)
        f.write(bytes([byte[0] ^ 1]))
    with pytest.warns(UserWarning, match="truncated or corrupt"):
        assert c.get(b"k1") is None
    assert b"k1" not in c


def test_disk_cache_keeps_to_its_budget_least_recently_used_first(tmp_path):
    c = MediaDiskCache(tmp_path / "c", capacity_bytes=2_000_000)
    for i in range(20):
        c.put(b"k%d" % i, os.urandom(300_000))
        if i >= 1:
            assert c.get(b"k1") is not None          # k1 stays in use
    sizes = sum(os.path.getsize(p) for p in _entry_files(tmp_path / "c"))
    assert sizes <= 2_000_000 and c.nbytes == sizes and len(c) == 6
    assert b"k19" in c and b"k1" in c and b"k0" not in c and b"k13" not in c
    c.put(b"huge", os.urandom(2_000_000))            # larger than the budget: not kept, nothing evicted
    assert b"huge" not in c and len(c) == 6


def test_disk_cache_refuses_a_file_as_its_directory(tmp_path):
    (tmp_path / "f").write_text("x")
    with pytest.raises(ValueError, match="is a file"):
        MediaDiskCache(tmp_path / "f")


def _writer(directory, n):
    c = MediaDiskCache(directory, capacity_bytes=8_000_000)
    rng = np.random.default_rng(1)
    for i in range(n):
        c.put(b"k%d" % (i % 7), rng.bytes(int(rng.integers(40_000, 400_000))))


def test_two_processes_never_read_a_half_written_entry(tmp_path):
    """One process rewrites entries (and evicts) as fast as it can while this one reads them: every
    read is whole (its checksum holds) or a miss, never a damaged entry."""
    d = str(tmp_path / "shared")
    MediaDiskCache(d)                          # the directory, before both processes open it
    w = multiprocessing.get_context("spawn").Process(target=_writer, args=(d, 300))
    w.start()
    c = MediaDiskCache(d, capacity_bytes=8_000_000)
    hits = 0
    with warnings.catch_warnings():
        warnings.simplefilter("error")         # a damaged entry would warn: fail instead
        while w.is_alive():
            for i in range(7):
                hits += c.get(b"k%d" % i) is not None
    w.join()
    assert w.exitcode == 0 and hits > 0


# --- the model


@pytest.fixture(scope="module")
def clips(tmp_path_factory, assets):
    d = tmp_path_factory.mktemp("cache-clips")
    return assets["test-3.mp4"], write_clip(d / "b.mp4", seconds=2.0)


@pytest.fixture(scope="module")
def fresh(tiny_model):
    """The reference: a Llama with no cache, cleared before every prompt."""
    with pyomnisift.Llama(str(tiny_model[0]), str(tiny_model[1]), **KW) as m:
        yield m


def fresh_logits(fresh, messages):
    clear(fresh)
    out = prefill(fresh, messages)
    return out, logits_of(fresh)


def test_alternating_conversations_restore_the_video(tiny_model, fresh, clips):
    a, b = clips
    cache = MediaRAMCache()
    with pyomnisift.Llama(str(tiny_model[0]), str(tiny_model[1]), cache=cache, **KW) as llm:
        first = prefill(llm, ask(video(a), "What happens?"))["omnisift"]
        assert first["media_restored"] == 0 and first["cache_bytes_stored"] > 0 and len(cache) == 1
        prefill(llm, ask(video(b), "And here?"))                  # the context now holds b, not a
        again = ask(video(a), "Who speaks?")                      # another conversation about a
        st = prefill(llm, again)["omnisift"]
        assert st["media_restored"] == 1 and st["media_reused"] == 0
        assert st["encoder_calls"] == {"vision": 0, "audio": 0} and st["media_cells_decoded"] == 0
        assert st["cache_bytes_stored"] == 0                      # already there
        got = logits_of(llm)
        ref, want = fresh_logits(fresh, again)
        assert np.array_equal(got, want)
        assert ref["prompt_tokens"] == prefill(llm, again)["prompt_tokens"]
        # the same prompt again: the context holds it, nothing restored
        assert prefill(llm, again)["omnisift"]["media_reused"] == 1


def test_longest_cached_prefix_is_restored(tiny_model, fresh, clips):
    a, b = clips
    with pyomnisift.Llama(str(tiny_model[0]), str(tiny_model[1]), cache=MediaRAMCache(), **KW) as llm:
        both = prefill(llm, ask(video(a), video(b), "Compare."))["omnisift"]
        assert both["media_restored"] == 0
        clear(llm)
        only_a = ask(video(a), "What happens?")                   # a prefix of the first prompt
        st = prefill(llm, only_a)["omnisift"]
        assert st["media_restored"] == 1 and st["encoder_calls"] == {"vision": 0, "audio": 0}
        assert np.array_equal(logits_of(llm), fresh_logits(fresh, only_a)[1])
        clear(llm)
        other = ask(video(a), video(b), "Which is longer?")       # both items, other question
        st = prefill(llm, other)["omnisift"]
        assert st["media_restored"] == 2 and st["encoder_calls"] == {"vision": 0, "audio": 0}
        assert np.array_equal(logits_of(llm), fresh_logits(fresh, other)[1])
        clear(llm)
        st = prefill(llm, ask(video(a), "Compare.", system="Be verbose."))["omnisift"]   # other text before a
        assert st["media_restored"] == 0 and st["encoder_calls"]["vision"] > 0


def test_other_settings_are_other_entries(tiny_model, clips):
    a, _ = clips
    with pyomnisift.Llama(str(tiny_model[0]), str(tiny_model[1]), cache=MediaRAMCache(), **KW) as llm:
        prefill(llm, ask(video(a), "What happens?"))
        clear(llm)
        st = prefill(llm, ask(video(a), "What happens?"), video_retention=0.5)["omnisift"]
        assert st["media_restored"] == 0 and st["encoder_calls"]["vision"] > 0


def test_restart_restores_from_disk(tiny_model, fresh, clips, tmp_path):
    a, _ = clips
    msgs = ask(video(a), "What happens?")
    with pyomnisift.Llama(str(tiny_model[0]), str(tiny_model[1]), cache=MediaDiskCache(tmp_path / "c"), **KW) as llm:
        assert prefill(llm, msgs)["omnisift"]["cache_bytes_stored"] > 0
    with pyomnisift.Llama(str(tiny_model[0]), str(tiny_model[1]), cache=MediaDiskCache(tmp_path / "c"), **KW) as llm:
        st = prefill(llm, ask(video(a), "Who speaks?"))["omnisift"]
        assert st["media_restored"] == 1 and st["encoder_calls"] == {"vision": 0, "audio": 0}
        assert np.array_equal(logits_of(llm), fresh_logits(fresh, ask(video(a), "Who speaks?"))[1])


@pytest.fixture(scope="module")
def other_mmproj(tmp_path_factory, assets):
    """An mmproj of the same geometry with other weights (the tiny generator's next seed)."""
    from pyomnisift import tiny_model as make_tiny_model

    out = tmp_path_factory.mktemp("other-pair")
    make_tiny_model.make_tiny_model(out, 1, assets["ggml-vocab-qwen2.gguf"])
    return out / make_tiny_model.MMPROJ_FILE


@pytest.mark.parametrize("change", ["mmproj", "kv_type", "llama_cpp_build", "n_ubatch"])
def test_entries_of_another_model_build_or_kv_type_are_never_restored(tiny_model, fresh, clips, tmp_path,
                                                                     other_mmproj, monkeypatch, change):
    a, _ = clips
    cache = MediaDiskCache(tmp_path / "c")
    with pyomnisift.Llama(str(tiny_model[0]), str(tiny_model[1]), cache=cache, **KW) as llm:
        prefill(llm, ask(video(a), "What happens?"))
    mmproj, kw = str(tiny_model[1]), dict(KW)
    if change == "mmproj":
        mmproj = str(other_mmproj)
    elif change == "kv_type":
        kw["type_k"] = llama_cpp.GGML_TYPE_F32
    elif change == "n_ubatch":
        kw["n_ubatch"] = 256
    else:   # another llama.cpp build: another library file
        monkeypatch.setattr(state_cache, "file_identity", _other_build(state_cache.file_identity))
    with pyomnisift.Llama(str(tiny_model[0]), mmproj, cache=cache, **kw) as llm:
        st = prefill(llm, ask(video(a), "Who speaks?"))["omnisift"]
        assert st["media_restored"] == 0 and st["encoder_calls"]["vision"] > 0


def _other_build(file_identity):
    libllama = llama_cpp.llama_cpp._lib._name

    def identity(path, whole=False):
        got = file_identity(path, whole)
        return got[::-1] if path == libllama else got
    return identity


class _Truncating(MediaRAMCache):
    """Hands back half of every state: what llama.cpp cannot read (as a state of another build)."""

    def get(self, key):
        value = super().get(key)
        return None if value is None else value[:len(value) // 2]


def test_a_state_llama_cpp_refuses_is_dropped_and_the_answer_is_fresh(tiny_model, fresh, clips):
    a, _ = clips
    cache = _Truncating()
    with pyomnisift.Llama(str(tiny_model[0]), str(tiny_model[1]), cache=cache, **KW) as llm:
        prefill(llm, ask(video(a), "What happens?"))
        clear(llm)
        msgs = ask(video(a), "Who speaks?")
        with pytest.warns(UserWarning, match="could not restore"):
            st = prefill(llm, msgs)["omnisift"]
        assert st["media_restored"] == 0 and st["encoder_calls"]["vision"] > 0
        assert np.array_equal(logits_of(llm), fresh_logits(fresh, msgs)[1])
        assert len(cache) == 1    # the refused entry is gone, this request's state is in its place


def test_a_corrupt_disk_entry_is_ignored_and_the_answer_is_fresh(tiny_model, fresh, clips, tmp_path):
    a, _ = clips
    cache = MediaDiskCache(tmp_path / "c")
    with pyomnisift.Llama(str(tiny_model[0]), str(tiny_model[1]), cache=cache, **KW) as llm:
        prefill(llm, ask(video(a), "What happens?"))
        clear(llm)
        [path] = _entry_files(tmp_path / "c")
        with open(path, "r+b") as f:
            f.truncate(os.path.getsize(path) - 1)
        msgs = ask(video(a), "Who speaks?")
        with pytest.warns(UserWarning, match="truncated or corrupt"):
            st = prefill(llm, msgs)["omnisift"]
        assert st["media_restored"] == 0
        assert np.array_equal(logits_of(llm), fresh_logits(fresh, msgs)[1])


def test_set_cache_takes_llama_cpp_pythons_caches_too(tiny_model):
    with pyomnisift.Llama(str(tiny_model[0]), str(tiny_model[1]), **KW) as llm:
        assert llm.media_cache is None
        ram = MediaRAMCache()
        llm.set_cache(ram)
        assert llm.media_cache is ram and llm.cache is None
        theirs = llama_cpp.LlamaRAMCache()
        llm.set_cache(theirs)
        assert llm.cache is theirs and llm.media_cache is ram
        llm.set_cache(None)
        assert llm.media_cache is None


# --- the command line and the server


def test_cli_cache_dir_restores_in_the_next_run(tiny_model, clips, tmp_path):
    from test_cli import run

    a, _ = clips
    common = ["chat", "-m", tiny_model[0], "--mmproj", tiny_model[1], "--video", a, "-n", "6", "--temp", "0",
              "-t", "2", "--stats"]
    first = run(*common, "-p", "What happens?", "--cache-dir", tmp_path / "c")
    assert first.returncode == 0, first.stderr
    assert "from the cache" not in first.stderr
    second = run(*common, "-p", "Who speaks?", "--cache-dir", tmp_path / "c")
    assert second.returncode == 0, second.stderr
    assert "1 media from the cache" in second.stderr
    uncached = run(*common, "-p", "Who speaks?")
    assert second.stdout == uncached.stdout
    p = run(*common, "-p", "x", "--cache-size", "10")
    assert p.returncode != 0 and "--cache-size needs --cache-dir" in p.stderr
    p = run(*common, "-p", "x", "--cache-dir", tmp_path / "c", "--cache-size", "0")
    assert p.returncode != 0 and "--cache-size" in p.stderr and "Traceback" not in p.stderr


def test_server_disk_cache_alternating_users(tiny_model, clips, tmp_path):
    httpx = pytest.importorskip("httpx")
    from pyomnisift.server import ModelSettings, ServerSettings, create_app
    from test_server import Server

    a, b = clips
    media = tmp_path / "media"
    media.mkdir()
    for clip in clips:
        (media / clip.name).write_bytes(clip.read_bytes())

    def msgs(clip, q):
        return [{"role": "user", "content": [{"type": "video_url", "video_url": {"url": f"file://{media / clip.name}"}},
                                             {"type": "text", "text": q}]}]

    def ask(server, m):
        r = httpx.post(server.base + "/v1/chat/completions", timeout=120,
                       json=dict(messages=m, max_tokens=6, temperature=0.0))
        assert r.status_code == 200, r.text
        return r.json()

    model = dict(model=str(tiny_model[0]), mmproj=str(tiny_model[1]), n_ctx=4096, n_threads=2)
    app = create_app(server_settings=ServerSettings(allowed_media_dir=str(media), api_key=None),
                     model_settings=ModelSettings(**model, cache=True, cache_type="disk", cache_dir=str(tmp_path / "c"),
                                                  cache_size=1 << 28))
    with Server(app) as s:
        ask(s, msgs(a, "What happens?"))
        ask(s, msgs(b, "And here?"))                           # the other user: the context now holds b
        again = ask(s, msgs(a, "Who speaks?"))
    app.state.model.close()
    assert again["usage"]["omnisift"]["media_restored"] == 1
    assert again["usage"]["omnisift"]["encoder_calls"] == {"vision": 0, "audio": 0}
    with pyomnisift.Llama(str(tiny_model[0]), str(tiny_model[1]), n_ctx=4096, n_threads=2, **LLM_KW) as fresh:
        want = fresh.create_chat_completion(msgs(a, "Who speaks?"), max_tokens=6, temperature=0.0)
    assert again["choices"][0]["message"]["content"] == want["choices"][0]["message"]["content"]
    assert any(f.endswith(".state") for f in os.listdir(tmp_path / "c"))
