#!/usr/bin/env python3
"""The media cache on the server, measured side by side: TTFT of every turn of two conversations
about two clips, alternating on one server (the context holds one conversation at a time, so each
turn evicts the other's clip), without and with the cache; the first question about a clip after a
restart (disk cache) against a cold one; and the bytes one minute of video costs in the cache.

    python scripts/bench_cache.py --model 3b --clips 10s_448 10s_static --reps 3
    python scripts/bench_cache.py --model 0.5b --clips 10s 30s --reps 3

Each server is a fresh `python -m pyomnisift.server` child on 127.0.0.1 (n_threads 2, flash
attention, n_batch 1024); requests go over HTTP with the OpenAI body; TTFT is the server's own
(usage["omnisift"]["timings_ms"]["ttft"]: media decoding + encoders + compression + prefill + first
token, plus restoring from the cache). The order of the cache-off and cache-on servers alternates per
repetition, so drifts of the shared machine fall on both. Model pairs and clips: scripts/bench.py.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

from bench import MODELS
from bench_inputs import prepare_all

QUESTIONS = ["What happens in this clip?", "And what do you hear?", "Who is in it?"]


def _pair(model: str, mmproj: str) -> tuple[Path, Path]:
    if model == "0.5b":
        a = prepare_all()
        return Path(a["llm"]), Path(a["mmproj"])
    from make_bench_model_3b import make_bench_model_3b

    p = make_bench_model_3b()
    return Path(p["llm"]), Path(p["mmproj"][mmproj])


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    def __init__(self, llm: Path, mmproj: Path, n_ctx: int, threads: int, cache: str | None, cache_dir: str | None):
        self.port = _free_port()
        cmd = [sys.executable, "-m", "pyomnisift.server", "--model", str(llm), "--mmproj", str(mmproj),
               "--host", "127.0.0.1", "--port", str(self.port), "--n_ctx", str(n_ctx), "--n_threads", str(threads),
               "--n_batch", "1024", "--flash_attn", "true", "--allowed_media_dir", "/"]
        if cache:
            cmd += ["--cache", "true", "--cache_type", cache]
            if cache_dir:
                cmd += ["--cache_dir", cache_dir]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, cwd="/")
        self.base = f"http://127.0.0.1:{self.port}"
        deadline = time.time() + 600
        while True:
            if self.proc.poll() is not None:
                raise SystemExit(f"the server exited:\n{self.proc.stderr.read()[-3000:]}")
            try:
                if httpx.get(self.base + "/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.time() > deadline:
                raise SystemExit("the server did not start")
            time.sleep(0.5)

    def ask(self, messages: list, **settings) -> dict:
        r = httpx.post(self.base + "/v1/chat/completions", timeout=3600,
                       json=dict(messages=messages, max_tokens=8, temperature=0.0, **settings))
        if r.status_code != 200:
            raise SystemExit(f"{r.status_code}: {r.text[:2000]}")
        return r.json()

    def close(self) -> None:
        self.proc.terminate()
        self.proc.wait(60)


def _turns(server: Server, clips: list[Path], n_turns: int) -> list[dict]:
    """Turn k of every conversation, then turn k + 1 of every one, ...: each turn finds the other
    conversation in the context."""
    convs = [[] for _ in clips]
    out = []
    for k in range(n_turns):
        for i, clip in enumerate(clips):
            content = ([{"type": "video_url", "video_url": {"url": f"file://{clip}"}}] if k == 0 else []) + \
                      [{"type": "text", "text": QUESTIONS[k % len(QUESTIONS)]}]
            convs[i].append({"role": "user", "content": content})
            res = server.ask(convs[i])
            convs[i].append(res["choices"][0]["message"])
            st = res["usage"]["omnisift"]
            out.append(dict(conv=i, turn=k, ttft=st["timings_ms"]["ttft"], restored=st["media_restored"],
                            reused=st["media_reused"], prompt=res["usage"]["prompt_tokens"]))
    return out


def _duration_s(path: Path) -> float:
    import av

    with av.open(str(path)) as c:
        return float(c.duration) / 1e6


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", choices=sorted(MODELS), default="3b")
    ap.add_argument("--mmproj", choices=["q8_0", "f16"], default="q8_0")
    ap.add_argument("--clips", nargs=2, default=["10s_448", "10s_static"])
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--turns", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--n-ctx", type=int, default=16384)
    ap.add_argument("--out", help="also write the report (markdown) here")
    a = ap.parse_args(argv)
    llm, mmproj = _pair(a.model, a.mmproj)
    media = prepare_all()["clips"]
    clips = [Path(media[c]).resolve() for c in a.clips]
    alternating = {"off": [], "ram": []}
    restart = []
    stored = {}
    for rep in range(a.reps):
        for cache in (("off", "ram") if rep % 2 == 0 else ("ram", "off")):
            s = Server(llm, mmproj, a.n_ctx, a.threads, None if cache == "off" else "ram", None)
            try:
                alternating[cache].append(_turns(s, clips, a.turns))
            finally:
                s.close()
        d = tempfile.mkdtemp(prefix="bench-cache-")
        try:
            msgs = lambda q: [{"role": "user", "content": [{"type": "video_url", "video_url": {"url": f"file://{clips[0]}"}},
                                                          {"type": "text", "text": q}]}]
            s = Server(llm, mmproj, a.n_ctx, a.threads, "disk", d)
            try:
                cold = s.ask(msgs(QUESTIONS[0]))["usage"]["omnisift"]
                if rep == 0:   # the bytes a clip costs, at 25% and at 100% (the first call stored them at 25%)
                    stored["0.25"] = s.ask(msgs(QUESTIONS[0]), video_retention=0.23, audio_retention=0.5)
                    stored["1.0"] = s.ask(msgs(QUESTIONS[0]), video_retention=1.0, audio_retention=1.0)
            finally:
                s.close()
            s = Server(llm, mmproj, a.n_ctx, a.threads, "disk", d)
            try:
                warm = s.ask(msgs(QUESTIONS[1]))["usage"]["omnisift"]
            finally:
                s.close()
            restart.append(dict(cold=cold["timings_ms"]["ttft"], warm=warm["timings_ms"]["ttft"],
                                restored=warm["media_restored"]))
        finally:
            shutil.rmtree(d, ignore_errors=True)
        # a run cut short still leaves its repetitions on record
        print(f"rep {rep}: " + json.dumps(dict(off=alternating["off"][-1], ram=alternating["ram"][-1],
                                               restart=restart[-1])), flush=True)

    lines = [f"Media cache on the server: model {a.model} ({MODELS[a.model].format(mmproj=a.mmproj)}), "
             f"clips {a.clips[0]} and {a.clips[1]}, {a.threads} threads, flash attention, n_batch 1024, "
             f"library default retention (video 0.33, audio 0.6, anchor), max_tokens 8, n = {a.reps} "
             f"(medians); machine: {os.cpu_count()} cores, shared.", "",
             "Two conversations alternating on one server (A1 B1 A2 B2 ...): TTFT ms",
             "", "| turn | conv | no cache | cache (RAM) | media restored | cache / cold first turn |",
             "|---|---|---|---|---|---|"]
    for k in range(a.turns):
        for i in range(2):
            off = statistics.median(r["ttft"] for run in alternating["off"] for r in run if (r["turn"], r["conv"]) == (k, i))
            on = statistics.median(r["ttft"] for run in alternating["ram"] for r in run if (r["turn"], r["conv"]) == (k, i))
            first = statistics.median(r["ttft"] for run in alternating["ram"] for r in run if (r["turn"], r["conv"]) == (0, i))
            restored = [r["restored"] for run in alternating["ram"] for r in run if (r["turn"], r["conv"]) == (k, i)]
            lines.append(f"| {k + 1} | {'AB'[i]} | {off:.0f} | {on:.0f} | {restored} | {on / first:.4f} |")
    cold = statistics.median(r["cold"] for r in restart)
    warm = statistics.median(r["warm"] for r in restart)
    lines += ["", f"After a restart (disk cache), the first question about {a.clips[0]}: cold {cold:.0f} ms, "
              f"restored {warm:.0f} ms, restored / cold = {warm / cold:.4f} (media restored: "
              f"{[r['restored'] for r in restart]})"]
    minutes = _duration_s(clips[0]) / 60
    for r, res in stored.items():
        b = res["usage"]["omnisift"]["cache_bytes_stored"]
        lines.append(f"Bytes stored at retention {r}: {b / 1e6:.1f} MB for {minutes * 60:.1f} s "
                     f"({res['usage']['prompt_tokens']} prompt cells): {b / minutes / 1e6:.1f} MB per minute of video")
    lines.append("")
    lines.append("per repetition: " + json.dumps(dict(alternating=alternating, restart=restart)))
    report = "\n".join(lines)
    print(report)
    if a.out:
        Path(a.out).write_text(report + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
