"""The `pyomnisift` command: help from any directory, one-line errors (no traceback) for a wrong
flag or a missing file, and chat (one-shot and interactive) on the tiny model."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import pytest

from tool_clips import write_clip, write_wav



def run(*args, cwd=None, stdin=None, timeout=300):
    exe = shutil.which("pyomnisift", path=os.path.dirname(sys.executable))
    cmd = [exe] if exe else [sys.executable, "-m", "pyomnisift"]
    return subprocess.run([*cmd, *map(str, args)], capture_output=True, text=True, cwd=cwd, input=stdin,
                          timeout=timeout)


def one_line_error(p, *words):
    assert p.returncode != 0
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1, p.stderr
    assert "Traceback" not in p.stderr
    for w in words:
        assert w in lines[0], lines[0]


def test_help_from_any_directory(tmp_path):
    p = run("--help", cwd=tmp_path)
    assert p.returncode == 0
    for cmd in ("chat", "serve", "viz", "convert", "convert-head", "demo"):
        assert cmd in p.stdout
    p = subprocess.run([sys.executable, "-m", "pyomnisift", "chat", "--help"], capture_output=True, text=True,
                       cwd=tmp_path)
    assert p.returncode == 0
    for flag in ("-m", "--mmproj", "--video", "--audio", "--image", "-n", "-c", "-ngl", "-t", "--video-fps",
                 "--video-retention", "--audio-retention", "--audio-selector", "--sift-head", "--temp", "--seed"):
        assert flag in p.stdout, flag
    assert run("serve", "--help", cwd=tmp_path).returncode == 0


def test_wrong_flag_and_missing_files(tiny_model, tmp_path):
    llm, mmproj = tiny_model
    one_line_error(run("chat", "-m", llm, "--no-such-flag"), "--no-such-flag")
    one_line_error(run("frobnicate"), "frobnicate")
    one_line_error(run("chat", "-m", tmp_path / "nope.gguf", "-p", "hi"), "model file not found", "nope.gguf")
    one_line_error(run("chat", "-m", llm, "--mmproj", mmproj, "--video", tmp_path / "nope.mp4", "-p", "hi"),
                   "video file not found")
    one_line_error(run("chat", "-m", llm, "--video", llm, "-p", "hi"), "--mmproj")
    one_line_error(run("chat", "-m", llm, "--mmproj", mmproj, "--video-retention", "1.5", "-p", "hi"),
                   "--video-retention")
    one_line_error(run("chat", "-m", llm, "--audio-selector", "vgas", "-p", "hi"), "--sift-head")
    one_line_error(run("viz", "-m", llm, "--mmproj", mmproj, "-o", tmp_path / "x.png"), "exactly one")
    one_line_error(run("serve", "--model", tmp_path / "nope.gguf"), "not found")
    one_line_error(run("serve", "--model", llm, "--port", "notaport"), "port")
    one_line_error(run("convert-head", tmp_path / "nope.safetensors", tmp_path / "h.gguf"), "no such file")
    one_line_error(run("convert", tmp_path, tmp_path / "out"), "config.json")


def test_not_media_is_one_line(tiny_model, tmp_path):
    llm, mmproj = tiny_model
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"not a video at all" * 100)
    p = run("chat", "-m", llm, "--mmproj", mmproj, "--video", bad, "-p", "hi", "-n", "2")
    one_line_error(p, "error")


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    return write_clip(tmp_path_factory.mktemp("cli") / "clip.mp4", seconds=2.0)


def test_chat_one_shot(tiny_model, clip):
    llm, mmproj = tiny_model
    p = run("chat", "-m", llm, "--mmproj", mmproj, "--video", clip, "-p", "What happens?", "-n", "5",
            "--temp", "0", "--video-retention", "0.3", "-t", "2", "--stats")
    assert p.returncode == 0, p.stderr
    assert p.stdout.endswith("\n") and "[prompt" in p.stderr and "video" in p.stderr
    assert "\r" not in p.stderr          # no progress bars off a TTY


def test_chat_interactive_keeps_the_conversation(tiny_model, clip):
    llm, mmproj = tiny_model
    p = run("chat", "-m", llm, "--mmproj", mmproj, "--video", clip, "-n", "3", "--temp", "0", "-t", "2",
            "--stats", stdin="What happens?\nAnd then?\n/exit\n")
    assert p.returncode == 0, p.stderr
    stats = [line for line in p.stderr.splitlines() if line.startswith("[prompt")]
    assert len(stats) == 2
    # the second prompt holds the first turn (media included) and grows
    first, second = (int(s.split()[1]) for s in stats)
    assert second > first


class FakeLlama:
    """Yields chunks shaped as the chat API contract says; records the messages of each call."""

    def __init__(self):
        self.calls = []

    def create_chat_completion(self, messages, stream=False, progress=None, **kw):
        import copy

        self.calls.append((copy.deepcopy(messages), kw))
        if progress is not None:
            progress("encode", 1, 1)
        yield {"object": "chat.completion.chunk", "choices": [{"index": 0, "delta": {"role": "assistant"},
                                                                "finish_reason": None}]}
        for piece in ("Hel", "lo"):
            yield {"object": "chat.completion.chunk", "choices": [{"index": 0, "delta": {"content": piece},
                                                                    "finish_reason": None}]}
        yield {"object": "chat.completion.chunk", "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}],
               "usage": {"prompt_tokens": 10 * len(self.calls), "completion_tokens": 2,
                         "omnisift": {"video": {"tokens_in": 100, "tokens_kept": 33}, "timings_ms": {"ttft": 5.0}}}}


def test_repl_logic_with_a_fake_model(tiny_model, clip, monkeypatch, capsys):
    """Runs now (no streaming model needed): media go with the first question only, the history
    grows turn by turn (so the model can reuse its KV cache), /reset starts over."""
    import io

    from pyomnisift import cli

    llm, mmproj = tiny_model
    fake = FakeLlama()
    monkeypatch.setattr(cli, "load_model", lambda args, progress=None: fake)
    monkeypatch.setattr(sys, "stdin", io.StringIO("first?\nsecond?\n/reset\nthird?\n"))
    rc = cli.main(["chat", "-m", str(llm), "--mmproj", str(mmproj), "--video", str(clip), "-n", "4",
                   "--temp", "0", "--seed", "7", "--stats"])
    assert rc == 0
    out, err = capsys.readouterr()
    assert out == "Hello\nHello\nHello\n"
    assert err.count("[prompt") == 3 and "video 100->33" in err
    m1, kw = fake.calls[0]
    assert kw["max_tokens"] == 4 and kw["temperature"] == 0 and kw["seed"] == 7
    assert m1[0]["content"][0] == {"type": "video_url", "video_url": {"url": str(clip)}}
    m2, _ = fake.calls[1]
    assert [m["role"] for m in m2] == ["user", "assistant", "user"]
    assert m2[0] == m1[0] and m2[1]["content"] == "Hello" and m2[2]["content"] == "second?"
    m3, _ = fake.calls[2]
    assert len(m3) == 1 and m3[0]["content"][0]["type"] == "video_url"     # /reset: media again


@pytest.fixture(scope="module")
def big_clip(tmp_path_factory):
    return write_clip(tmp_path_factory.mktemp("cli") / "big.mp4", seconds=4.0, size=(448, 336))


def test_errors_name_flags(tiny_model, big_clip, tmp_path):
    """The command line's errors name its flags, never the Python arguments behind them."""
    llm, mmproj = tiny_model
    p = run("chat", "-m", llm, "--mmproj", mmproj, "--video", big_clip, "-c", "256", "-p", "hi", "-n", "2", "-t", "2")
    one_line_error(p, "-c/--ctx-size is 256", "--fit-context", "--video-retention / --audio-retention")
    assert "fit_context" not in p.stderr and "n_ctx" not in p.stderr
    p = run("chat", "-m", llm, "--mmproj", mmproj, "--video", big_clip, "-c", "256", "-p", "hi", "-n", "2", "-t", "2",
            "--fit-context", "--stats", "--temp", "0")
    assert p.returncode == 0, p.stderr
    prompt = int(p.stderr.split("[prompt ")[1].split()[0])
    assert prompt + 2 <= 256
    sound = write_wav(tmp_path / "talk.wav")
    one_line_error(run("chat", "-m", llm, "--mmproj", mmproj, "--video", sound, "-p", "hi"),
                   "has no video stream; pass it with --audio")
    one_line_error(run("chat", "-m", llm, "--mmproj", mmproj, "--video-fps", "0", "-p", "hi"), "--video-fps")
    from pyomnisift import cli

    assert cli.in_flags('audio_selector="vgas" needs sift_head; video_fps must be in (0, 60]') == \
        '--audio-selector="vgas" needs --sift-head; --video-fps must be in (0, 60]'
    assert cli.in_flags("a --video-retention and my_video_retention") == "a --video-retention and my_video_retention"


def test_stats_counts_tokens(tiny_model, tiny_omni, clip):
    """--stats reports the answer's tokens, as the library counts them for the same greedy answer."""
    llm, mmproj = tiny_model
    p = run("chat", "-m", llm, "--mmproj", mmproj, "--video", clip, "-p", "What happens?", "-n", "7",
            "--temp", "0", "-t", "2", "--stats")
    assert p.returncode == 0, p.stderr
    line = next(x for x in p.stderr.splitlines() if x.startswith("[prompt"))
    n_cli = int(line.split("completion ")[1].split(",")[0])
    tiny_omni.reset()
    ref = tiny_omni.create_chat_completion(
        [{"role": "user", "content": [{"type": "video_url", "video_url": {"url": os.path.abspath(clip)}},
                                      {"type": "text", "text": "What happens?"}]}], max_tokens=7, temperature=0.0)
    assert n_cli == ref["usage"]["completion_tokens"]
    assert p.stdout.rstrip("\n") == ref["choices"][0]["message"]["content"]


def run_on_terminal(*args, timeout=300):
    """Runs the command with stderr on a pseudo-terminal (stdout a pipe); returns (process, what
    the terminal received)."""
    import pty
    import threading

    exe = shutil.which("pyomnisift", path=os.path.dirname(sys.executable))
    cmd = [exe] if exe else [sys.executable, "-m", "pyomnisift"]
    master, slave = pty.openpty()
    received = bytearray()

    def drain():
        while True:
            try:
                chunk = os.read(master, 65536)
            except OSError:
                return
            if not chunk:
                return
            received.extend(chunk)

    reader = threading.Thread(target=drain, daemon=True)
    reader.start()
    try:
        p = subprocess.run([*cmd, *map(str, args)], stdout=subprocess.PIPE, stderr=slave, text=True, timeout=timeout)
    finally:
        os.close(slave)
        reader.join(timeout=5)
        os.close(master)
    return p, received.decode("utf-8", "replace")


@pytest.mark.parametrize("command", ["chat", "viz"])
def test_progress_bars_for_every_stage_on_a_terminal(tiny_model, clip, tmp_path, command):
    import re

    llm, mmproj = tiny_model
    extra = ["-p", "What happens?", "-n", "3", "--temp", "0"] if command == "chat" else ["-o", tmp_path / "k.png"]
    p, terminal = run_on_terminal(command, "-m", llm, "--mmproj", mmproj, "--video", clip, "-t", "2", *extra)
    assert p.returncode == 0, terminal
    for stage in ("load", "plan", "encode", "prefill", "generate"):
        assert re.search(rf"{stage}:\s+\d+%", terminal), (stage, terminal[-2000:])
