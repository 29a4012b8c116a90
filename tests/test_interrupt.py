"""Ctrl-C while media is encoded: a SIGINT sent to a child process stops encoding within one unit,
cleanly (no "Exception ignored" from a ctypes callback, no traceback), and the next request answers
as a fresh context does; the CLI ends with its one line and status 130."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from media_clips import write_clip

CHILD = r"""
import json, sys
import pyomnisift

llm_path, mmproj_path, clip = sys.argv[1:4]
llm = pyomnisift.Llama(llm_path, mmproj_path, n_ctx=16384, n_threads=2, verbose=True)
msgs = [{"role": "user", "content": [{"type": "video_url", "video_url": {"url": clip}},
                                     {"type": "text", "text": "What happens?"}]}]
ask = lambda **kw: llm.create_chat_completion(msgs, max_tokens=4, temperature=0.0, **kw)
fresh = ask()
llm.reset()
llm._ctx.kv_cache_clear()
llm.create_chat_completion([{"role": "user", "content": "hi"}], max_tokens=2)  # something held before
done = []

def progress(stage, n, total):
    if stage == "encode":
        done.append(n)
        print(json.dumps({"unit": n, "total": total}), flush=True)

try:
    ask(progress=progress)
    print(json.dumps({"interrupted": False}), flush=True)
except KeyboardInterrupt:
    print(json.dumps({"interrupted": True, "units": len(done)}), flush=True)
again = ask()
print(json.dumps({"same": again["choices"][0]["message"] == fresh["choices"][0]["message"],
                  "reused": again["usage"]["omnisift"]["media_reused"],
                  "calls": again["usage"]["omnisift"]["encoder_calls"]}), flush=True)
"""


@pytest.fixture(scope="module")
def long_clip(tmp_path_factory):
    """120 s at 448x252 with a tone: 60 units, each a few tens of ms on the tiny model."""
    return write_clip(tmp_path_factory.mktemp("interrupt") / "long.mp4", 240, fps=2, size=(448, 252),
                      audio_seconds=120)


def _env():
    return {**os.environ, "PYTHONUNBUFFERED": "1"}


def _default_sigint():
    """In the child before exec: SIGINT at its default disposition, as under a terminal. A test run
    started in the background by a non-interactive shell (`cmd &`) inherits SIGINT ignored, and a
    Python started so keeps it ignored (no KeyboardInterrupt to test)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def test_api_stops_within_one_unit_and_the_next_request_is_fresh(tiny_model, long_clip, tmp_path):
    llm, mmproj = tiny_model
    log = tmp_path / "stderr.txt"   # verbose: llama.cpp's and clip's log, through the Python callback
    with open(log, "w") as errf:
        child = subprocess.Popen([sys.executable, "-P", "-c", CHILD, str(llm), str(mmproj), str(long_clip)],
                                 stdout=subprocess.PIPE, stderr=errf, text=True, env=_env(),
                                     preexec_fn=_default_sigint)
        lines = []
        try:
            for line in child.stdout:
                lines.append(json.loads(line))
                if lines[-1].get("unit") == 2:
                    child.send_signal(signal.SIGINT)   # while unit 3 is in C
            child.wait(timeout=300)
        finally:
            child.kill()
    err = log.read_text()
    assert child.returncode == 0, err[-2000:]
    result = [x for x in lines if "interrupted" in x][0]
    total = lines[0]["total"]
    assert result["interrupted"] and total >= 50
    # the unit that was running when the signal came finishes; the loop stops after it (one more
    # may have started before the signal was delivered)
    assert 2 <= result["units"] <= 4, lines
    assert "Exception ignored" not in err and "Traceback" not in err, err[-2000:]
    final = lines[-1]
    assert final["same"] and final["reused"] == 0 and final["calls"]["vision"] == total * 2


def test_cli_ends_with_status_130(tiny_model, long_clip):
    llm, mmproj = tiny_model
    cmd = [sys.executable, "-P", "-m", "pyomnisift", "chat", "-m", str(llm), "--mmproj", str(mmproj),
           "--video", str(long_clip), "-p", "What happens?", "-n", "4", "-c", "16384", "-t", "2"]
    child = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_env(),
                             preexec_fn=_default_sigint)
    time.sleep(4.0)   # loaded and encoding (60 units take far longer than the load)
    t0 = time.perf_counter()
    child.send_signal(signal.SIGINT)
    out, err = child.communicate(timeout=120)
    waited = time.perf_counter() - t0
    assert child.returncode == 130, (out, err[-2000:])
    assert err.strip().splitlines()[-1] == "interrupted" and "Traceback" not in err and "Exception ignored" not in err
    assert out == ""   # no answer was printed
    assert waited < 5.0   # one unit of the tiny model, not the rest of the clip
