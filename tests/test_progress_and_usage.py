"""Using it from Python: progress through every stage (load, plan, encode, prefill, generate), the
token count of a streamed answer, the retention an audio-only prompt really used, and
Llama.from_pretrained with an mmproj (from a local Hugging Face cache: nothing is downloaded)."""

from __future__ import annotations

import shutil

import pytest

import pyomnisift
from tool_clips import write_clip, write_wav


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    return write_clip(tmp_path_factory.mktemp("ux") / "clip.mp4", seconds=4.0)


def video_msgs(path, question="What happens?"):
    return [{"role": "user", "content": [{"type": "video_url", "video_url": {"url": str(path)}},
                                         {"type": "text", "text": question}]}]


class Recorder:
    def __init__(self):
        self.calls = []

    def __call__(self, stage, done, total):
        self.calls.append((stage, done, total))

    def of(self, stage):
        return [(d, t) for s, d, t in self.calls if s == stage]


def test_progress_reports_every_stage(tiny_model, clip):
    llm, mmproj = tiny_model
    rec = Recorder()
    with pyomnisift.Llama(str(llm), str(mmproj), n_ctx=4096, n_threads=2, progress=rec) as m:
        load = rec.of("load")
        # llama.cpp's own load callback drives it (several steps), then the encoders: 100 of 100
        assert len(load) > 2 and load[-1] == (100, 100) and all(t == 100 for _, t in load)
        assert [d for d, _ in load] == sorted(d for d, _ in load)
        rec.calls.clear()
        out = m.create_chat_completion(video_msgs(clip), max_tokens=4, temperature=0.0, progress=rec)
        units = []
        m.reset()
        m.create_chat_completion(video_msgs(clip), max_tokens=4, temperature=0.0, on_unit=units.append)
    stages = [s for s, _, _ in rec.calls]
    first = {s: stages.index(s) for s in set(stages)}
    assert sorted(first, key=first.get) == ["plan", "encode", "prefill", "generate"]
    assert rec.of("plan") == [(1, 1)]
    assert rec.of("encode") == [(i + 1, len(units)) for i in range(len(units))]   # one per unit
    prefill = rec.of("prefill")
    assert prefill[-1][0] == prefill[-1][1] > 0 and all(d <= t for d, t in prefill)
    generate = rec.of("generate")
    n = out["usage"]["completion_tokens"]
    assert generate[-1] == (n, n) and all(t == 4 for _, t in generate[:-1])


def test_progress_that_raises_cancels_the_load(tiny_model):
    llm, mmproj = tiny_model

    def stop(stage, done, total):
        if done > 10:
            raise RuntimeError("enough")

    with pytest.raises(RuntimeError, match="enough"):
        pyomnisift.Llama(str(llm), str(mmproj), n_ctx=512, n_threads=2, progress=stop)


@pytest.mark.parametrize("how", ["length", "end of generation"])
def test_a_streamed_answer_counts_tokens_as_the_whole_one(tiny_omni, clip, how):
    """usage["completion_tokens"] of the last streamed chunk is llama-cpp-python's count for the same
    answer returned whole (not the number of text pieces streamed)."""
    kw = dict(max_tokens=9, temperature=0.0)
    if how == "end of generation":
        kw["logit_bias"] = {tiny_omni.token_eos(): 100.0}   # the first token sampled ends it
    whole = tiny_omni.create_chat_completion(video_msgs(clip), **kw)
    chunks = list(tiny_omni.create_chat_completion(video_msgs(clip), stream=True, **kw))
    usage = chunks[-1]["usage"]
    assert usage["completion_tokens"] == whole["usage"]["completion_tokens"] == (9 if how == "length" else 0)
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]
    assert chunks[-1]["choices"][0]["finish_reason"] == whole["choices"][0]["finish_reason"]


def test_audio_only_prompt_reports_the_retention_it_used(tiny_omni, tmp_path, clip):
    """Audio is selected by what is seen: without a video beside it, it is kept whole, and usage
    says so (retention 1.0) instead of echoing the asked value."""
    wav = write_wav(tmp_path / "talk.wav", seconds=4.0)
    msgs = [{"role": "user", "content": [
        {"type": "input_audio", "input_audio": {"data": "file://" + str(wav), "format": "wav"}},
        {"type": "text", "text": "What is said?"}]}]
    st = tiny_omni.create_chat_completion(msgs, max_tokens=1, audio_retention=0.5)["usage"]["omnisift"]
    assert st["audio"]["tokens_kept"] == st["audio"]["tokens_in"] == 100
    assert st["retention"]["audio_retention"] == 1.0
    # the video's own sound track is selected: the asked value is the one used
    st = tiny_omni.create_chat_completion(video_msgs(clip), max_tokens=1, audio_retention=0.5)["usage"]["omnisift"]
    assert st["retention"]["audio_retention"] == 0.5
    assert 0 < st["audio"]["tokens_kept"] < st["audio"]["tokens_in"]


def _hf_cache(root, repo_id, files: dict) -> str:
    """A Hugging Face cache holding one snapshot of repo_id (the layout huggingface_hub writes)."""
    commit = "0123456789abcdef0123456789abcdef01234567"
    repo = root / ("models--" + repo_id.replace("/", "--"))
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)
    snap = repo / "snapshots" / commit
    snap.mkdir(parents=True)
    for name, src in files.items():
        shutil.copyfile(src, snap / name)
    return commit


def test_from_pretrained_takes_an_mmproj_from_a_local_cache(tiny_model, tmp_path, monkeypatch):
    huggingface_hub = pytest.importorskip("huggingface_hub")
    import huggingface_hub.constants  # noqa: F401 - loaded lazily otherwise
    llm, mmproj = tiny_model
    _hf_cache(tmp_path, "someone/omni-tiny-GGUF", {"omni-tiny-Q8_0.gguf": llm, "mmproj-omni-tiny-f16.gguf": mmproj})
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)   # a request would fail

    def no_network(*a, **k):
        raise AssertionError("from_pretrained went to the network")

    monkeypatch.setattr(huggingface_hub, "list_repo_files", no_network)
    with pyomnisift.Llama.from_pretrained("someone/omni-tiny-GGUF", "*Q8_0.gguf", mmproj_filename="mmproj-*.gguf",
                                          cache_dir=str(tmp_path), n_ctx=1024, n_threads=2) as m:
        assert m.model_path.endswith("omni-tiny-Q8_0.gguf")
        assert m.chat_handler.clip_model_path.endswith("mmproj-omni-tiny-f16.gguf")
        assert m.chat_handler.vision is not None and m.chat_handler.audio is not None
    with pyomnisift.Llama.from_pretrained("someone/omni-tiny-GGUF", "omni-tiny-Q8_0.gguf", cache_dir=str(tmp_path),
                                          n_ctx=256, n_threads=2) as text_only:
        assert text_only.chat_handler.clip_model_path is None
    with pytest.raises(ValueError, match=r"2 files .* match '\*\.gguf'"):
        pyomnisift.Llama.from_pretrained("someone/omni-tiny-GGUF", "*.gguf", cache_dir=str(tmp_path))
    with pytest.raises(ValueError, match="not both"):
        pyomnisift.Llama.from_pretrained("someone/omni-tiny-GGUF", "*Q8_0.gguf", mmproj_filename="mmproj-*.gguf",
                                         mmproj_path=str(mmproj), cache_dir=str(tmp_path))


def test_from_pretrained_fetches_with_huggingface_hub(tiny_model, tmp_path, monkeypatch):
    """Online: the names are matched against the repository's listing and each file is fetched by
    hf_hub_download (both replaced here, so nothing is downloaded)."""
    huggingface_hub = pytest.importorskip("huggingface_hub")
    import huggingface_hub.constants  # noqa: F401 - loaded lazily otherwise
    llm, mmproj = tiny_model
    fetched = []

    def hf_hub_download(repo_id, filename, subfolder=None, cache_dir=None, local_dir=None, **kw):
        fetched.append((repo_id, subfolder, filename))
        return str({"omni.gguf": llm, "mmproj.gguf": mmproj}[filename])

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(huggingface_hub, "list_repo_files", lambda repo_id: ["README.md", "gguf/omni.gguf",
                                                                               "gguf/mmproj.gguf"])
    monkeypatch.setattr(huggingface_hub, "hf_hub_download", hf_hub_download)
    with pyomnisift.Llama.from_pretrained("o/r", "gguf/omni*", mmproj_filename="*mmproj*", n_ctx=1024,
                                          n_threads=2) as m:
        assert m.chat_handler.clip_model_path == str(mmproj)
    assert fetched == [("o/r", "gguf", "mmproj.gguf"), ("o/r", "gguf", "omni.gguf")]
