"""Soak the OpenAI-compatible server (issue 13 item 4; not in CI).

Starts `python -m pyomnisift.server` on 127.0.0.1 (a free port) with the tiny model and sends a
bounded, seeded loop of mixed requests for --minutes: text, image, audio, video (with sound),
malformed ones (bad JSON, bad base64, unknown part, remote URL, retention out of range, bytes that
are no media), streaming, and streams the client drops after the first chunks. Traffic goes only to
127.0.0.1. It reports requests served, outcomes by kind, and the server's RSS, open file
descriptors and threads at the start (after one round of every kind) and at the end.

  python scripts/soak_server.py                 # 10 minutes
  python scripts/soak_server.py --minutes 1 --json soak.json
"""

from __future__ import annotations

import argparse
import base64
import collections
import json
import os
import random
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx



def _proc_stats(pid: int) -> dict:
    status = Path(f"/proc/{pid}/status").read_text()
    field = {line.split(":")[0]: line.split(":")[1].strip() for line in status.splitlines() if ":" in line}
    return {"rss_mb": round(int(field["VmRSS"].split()[0]) / 1024, 1), "threads": int(field["Threads"]),
            "fds": len(os.listdir(f"/proc/{pid}/fd"))}


def _media() -> dict:
    """The pinned sample media (pyomnisift/assets.py): a 10-s H.264 + AAC clip, an mp3, a jpeg."""
    from pyomnisift.assets import ensure_assets

    assets = ensure_assets()

    def uri(name, mime):
        return f"data:{mime};base64," + base64.b64encode(assets[name].read_bytes()).decode()
    return {"video": uri("test-3.mp4", "video/mp4"), "image": uri("test-1.jpeg", "image/jpeg"),
            "audio": base64.b64encode(assets["test-2.mp3"].read_bytes()).decode()}


def _bodies(media: dict) -> dict:
    def user(*parts):
        return [{"role": "user", "content": list(parts) + [{"type": "text", "text": "What is it?"}]}]
    nomedia = base64.b64encode(b"this is not a video" * 10).decode()
    return {
        "text": {"messages": [{"role": "user", "content": "Name three colours."}], "max_tokens": 8},
        "image": {"messages": user({"type": "image_url", "image_url": {"url": media["image"]}}), "max_tokens": 8},
        "audio": {"messages": user({"type": "input_audio", "input_audio": {"data": media["audio"], "format": "mp3"}}),
                  "max_tokens": 8},
        "video": {"messages": user({"type": "video_url", "video_url": {"url": media["video"]}}), "max_tokens": 8,
                  "video_retention": 0.25, "audio_retention": 0.5},
        "stream": {"messages": user({"type": "video_url", "video_url": {"url": media["video"]}}), "max_tokens": 16,
                   "stream": True},
        "disconnect": {"messages": [{"role": "user", "content": "Tell a long story."}], "max_tokens": 2000,
                       "stream": True, "temperature": 1.0},
        "bad_json": b'{"messages": [',
        "bad_base64": {"messages": user({"type": "image_url", "image_url": {"url": "data:image/png;base64,@@@"}})},
        "bad_part": {"messages": user({"type": "hologram", "hologram": {}})},
        "remote_url": {"messages": user({"type": "video_url", "video_url": {"url": "http://example.com/a.mp4"}})},
        "bad_retention": {"messages": [{"role": "user", "content": "hi"}], "video_retention": 1.5},
        "not_media": {"messages": user({"type": "video_url", "video_url": {"url": "data:video/mp4;base64," + nomedia}})},
    }


def _send(client: httpx.Client, url: str, kind: str, body) -> str:
    """One request; returns its outcome: the status code, 'stream-ok', 'dropped', or an error name."""
    if isinstance(body, bytes):
        return str(client.post(url, content=body, headers={"content-type": "application/json"}).status_code)
    if not body.get("stream"):
        return str(client.post(url, json=body).status_code)
    # A client that leaves: after 3 chunks, or after 3 s without one (the tiny model's random bytes
    # may not form UTF-8 for many tokens, and llama-cpp-python yields no chunk meanwhile; the
    # server's pings keep a patient client waiting forever).
    timeout = httpx.Timeout(120, read=3) if kind == "disconnect" else None
    try:
        return _stream(client, url, kind, body, timeout)
    except httpx.ReadTimeout:
        if kind == "disconnect":
            return "dropped"
        raise


def _stream(client, url, kind, body, timeout) -> str:
    with client.stream("POST", url, json=body, **({"timeout": timeout} if timeout else {})) as r:
        if r.status_code != 200:
            r.read()
            return str(r.status_code)
        n = 0
        for line in r.iter_lines():
            if line.startswith("data: "):
                n += 1
                if kind == "disconnect" and n == 3:
                    return "dropped"           # leaving the block closes the connection mid-stream
                if line == "data: [DONE]":
                    return "stream-ok"
    return "stream-truncated"


EXPECTED = {"text": "200", "image": "200", "audio": "200", "video": "200", "stream": "stream-ok",
            "disconnect": "dropped", "bad_json": "400", "bad_base64": "400", "bad_part": "400",
            "remote_url": "400", "bad_retention": "400", "not_media": "400"}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--minutes", type=float, default=10.0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--json", type=Path, help="also write the report here")
    args = ap.parse_args()

    import tempfile
    from pyomnisift.assets import default_cache_dir, ensure_assets
    from pyomnisift import tiny_model as make_tiny_model

    out = default_cache_dir() / "tiny-model-0"
    llm, mmproj = out / make_tiny_model.LLM_FILE, out / make_tiny_model.MMPROJ_FILE
    if not (llm.is_file() and mmproj.is_file()):
        make_tiny_model.make_tiny_model(out, 0, ensure_assets()["ggml-vocab-qwen2.gguf"])
    tmp = Path(tempfile.mkdtemp(prefix="omnisift-soak-"))
    bodies = _bodies(_media())
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = subprocess.Popen([sys.executable, "-m", "pyomnisift.server", "--model", str(llm), "--mmproj", str(mmproj),
                               "--host", "127.0.0.1", "--port", str(port), "--n_ctx", "4096",
                               "--n_threads", str(args.threads)], stderr=subprocess.PIPE, text=True,
                              cwd=tmp)   # not the source tree: the installed package (its libomnisift)
    base = f"http://127.0.0.1:{port}"
    url = base + "/v1/chat/completions"
    outcomes: dict = collections.defaultdict(collections.Counter)
    try:
        with httpx.Client(timeout=120) as client:
            deadline = time.time() + 120
            while True:
                try:
                    if client.get(base + "/health").status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                if time.time() > deadline or server.poll() is not None:
                    raise RuntimeError("the server did not start: " + (server.stderr.read() if server.poll() else ""))
                time.sleep(0.2)
            for kind, body in bodies.items():       # warm-up: every kind once, so buffers exist
                _send(client, url, kind, body)
            start, t0 = _proc_stats(server.pid), time.time()
            rng, kinds, samples = random.Random(args.seed), list(bodies), []
            while time.time() - t0 < args.minutes * 60:
                kind = rng.choice(kinds)
                try:
                    outcomes[kind][_send(client, url, kind, bodies[kind])] += 1
                except httpx.HTTPError as e:
                    outcomes[kind][type(e).__name__] += 1
                if server.poll() is not None:
                    raise RuntimeError(f"the server died (status {server.returncode})")
                if not samples or time.time() - t0 - samples[-1]["t"] >= 60:
                    samples.append(dict(_proc_stats(server.pid), t=round(time.time() - t0)))
            end = _proc_stats(server.pid)
    finally:
        server.terminate()
        try:
            server.wait(30)
        except subprocess.TimeoutExpired:     # uvicorn waits for a request in flight
            server.kill()
    served = sum(sum(c.values()) for c in outcomes.values())
    unexpected = {k: {o: n for o, n in c.items() if o != EXPECTED[k]} for k, c in outcomes.items()}
    report = {"minutes": args.minutes, "requests": served, "per_second": round(served / (time.time() - t0), 2),
              "outcomes": {k: dict(c) for k, c in sorted(outcomes.items())},
              "unexpected": {k: v for k, v in unexpected.items() if v}, "start": start, "end": end,
              "samples": samples}
    print(json.dumps(report, indent=1))
    if args.json:
        args.json.write_text(json.dumps(report, indent=1))
    return 1 if report["unexpected"] else 0


if __name__ == "__main__":
    sys.exit(main())
