#!/usr/bin/env python3
"""Latency of the user-facing tools on the tiny model (pyomnisift/tiny_model.py): the server through
real HTTP (uvicorn on 127.0.0.1, the openai client), first and follow-up turns about the same clip,
streaming time to first chunk, and the picture (pyomnisift.viz).

    python scripts/bench_tools.py [--clip PATH] [--threads 2] [--reps 3]

Prints medians in ms. The tiny model's weights are random: this times the plumbing (HTTP, JSON,
base64, SSE, media decoding, encoders, compression, prefill of a small LLM), not a real model.
"""

from __future__ import annotations

import argparse
import base64
import socket
import statistics
import sys
import threading
import time

from pyomnisift.assets import default_cache_dir, ensure_assets
from pyomnisift import tiny_model as make_tiny_model


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--clip", help="a video with sound (default: the sdist's test-3.mp4, 10 s)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--reps", type=int, default=3)
    args = ap.parse_args(argv)

    import openai
    import uvicorn

    from pyomnisift import viz
    from pyomnisift.server import ModelSettings, ServerSettings, create_app

    assets = ensure_assets()
    clip = args.clip or str(assets["test-3.mp4"])
    out = default_cache_dir() / "tiny-model-0"
    llm, mmproj = out / make_tiny_model.LLM_FILE, out / make_tiny_model.MMPROJ_FILE
    if not (llm.exists() and mmproj.exists()):
        make_tiny_model.make_tiny_model(out, 0, assets["ggml-vocab-qwen2.gguf"])
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    app = create_app(server_settings=ServerSettings(host="127.0.0.1", port=port),
                     model_settings=ModelSettings(model=str(llm), mmproj=str(mmproj), n_ctx=8192,
                                                  n_threads=args.threads))
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    threading.Thread(target=server.run, daemon=True).start()
    while not server.started:
        time.sleep(0.05)
    client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="unused")
    uri = "data:video/mp4;base64," + base64.b64encode(open(clip, "rb").read()).decode()
    video = {"type": "video_url", "video_url": {"url": uri}}
    times = {k: [] for k in ("text only", "clip, first turn", "clip, follow-up turn", "clip, stream first chunk",
                             "viz (render only)")}
    for rep in range(args.reps):
        t0 = time.perf_counter()
        client.chat.completions.create(model="m", messages=[{"role": "user", "content": f"Hello {rep}"}], max_tokens=4)
        times["text only"].append(time.perf_counter() - t0)
        first = [{"role": "user", "content": [video, {"type": "text", "text": f"What happens? {rep}"}]}]
        # a fresh prompt: a different retention so nothing is reused from the previous repetition
        extra = {"video_retention": 0.3 + 0.01 * rep}
        t0 = time.perf_counter()
        r = client.chat.completions.create(model="m", messages=first, max_tokens=4, temperature=0, extra_body=extra)
        times["clip, first turn"].append(time.perf_counter() - t0)
        follow = first + [{"role": "assistant", "content": r.choices[0].message.content},
                          {"role": "user", "content": "And then?"}]
        t0 = time.perf_counter()
        client.chat.completions.create(model="m", messages=follow, max_tokens=4, temperature=0, extra_body=extra)
        times["clip, follow-up turn"].append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        stream = client.chat.completions.create(model="m", messages=first, max_tokens=4, temperature=0, stream=True,
                                                extra_body={"video_retention": 0.2 + 0.01 * rep})
        next(iter(stream))
        times["clip, stream first chunk"].append(time.perf_counter() - t0)
        for _ in stream:
            pass
    records = []
    model = app.state.model.llama
    model.reset()
    model.create_chat_completion([{"role": "user", "content": [{"type": "video_url", "video_url": {"url": clip}},
                                                               {"type": "text", "text": "?"}]}],
                                 max_tokens=1, video_retention=0.25, on_unit=records.append)
    for _ in range(args.reps):
        t0 = time.perf_counter()
        viz.render(clip, "video", records)
        times["viz (render only)"].append(time.perf_counter() - t0)
    server.should_exit = True
    print(f"tiny model, {args.threads} threads, clip {clip} ({len(uri) // 1024} KiB as a data URI), "
          f"medians of {args.reps}:")
    for k, v in times.items():
        print(f"  {k:28s} {statistics.median(v) * 1000:8.0f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
