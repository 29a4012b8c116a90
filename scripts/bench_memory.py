"""Peak memory of one prompt against the length of its video: 1, 10 and 60 minutes with sound.

    python scripts/bench_memory.py [--minutes 1 10 60] [--retention 0.33 0.6]

Each length runs in a fresh child process (its own peak RSS) on the tiny model pair with flash
attention (without it llama.cpp materialises the attention scores, which grow with the context; the weights'
values do not change memory; small frames keep the 60-minute case to minutes): the model is loaded
and warmed up, the peak RSS is reset (/proc/self/clear_refs), the prompt is prefilled, and the
growth of the peak over the warm RSS is compared with the KV cache the prompt fills (cells x bytes
per cell); the peak of Python and numpy allocations during the prefill (tracemalloc) is what the
pipeline itself holds (frames, rows, layout). What grows beyond both is llama.cpp's own: its KQ mask
is n_kv x batch rows x 4 bytes, so it grows with the context a batch attends to. Clips: a 1-fps 64x48 moving pattern with a tone and noise at 16 kHz (PyAV), generated
and cached.
"""

from __future__ import annotations

import argparse
import fractions
import json
import os
import subprocess
import sys
import tracemalloc
from pathlib import Path

import numpy as np


def _cache() -> Path:
    d = Path(os.environ.get("PYOMNISIFT_CACHE", Path.home() / ".cache" / "pyomnisift")) / "bench-memory"
    d.mkdir(parents=True, exist_ok=True)
    return d


def make_clip(minutes: int) -> Path:
    import av

    out = _cache() / f"clip-{minutes}min-64x48-1fps-v1.mp4"
    if out.is_file():
        return out
    tmp = out.with_suffix(".tmp.mp4")
    seconds = minutes * 60
    rng = np.random.default_rng(minutes)
    with av.open(str(tmp), "w") as c:
        vs = c.add_stream("mpeg4", rate=1)
        vs.width, vs.height, vs.pix_fmt = 64, 48, "yuv420p"
        aus = c.add_stream("aac", rate=16000, layout="mono")
        for i in range(seconds):
            img = np.zeros((48, 64, 3), np.uint8)
            img[8:24, (i * 5) % 48:(i * 5) % 48 + 16] = (i * 37 % 255, 255, 128)
            for p in vs.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                c.mux(p)
        for p in vs.encode():
            c.mux(p)
        t = np.arange(16000) / 16000
        for s in range(seconds):   # one second at a time: the generator's memory stays flat too
            pcm = (0.2 * np.sin(2 * np.pi * (220 + s % 400) * t) + 0.02 * rng.standard_normal(16000))
            frame = av.AudioFrame.from_ndarray(pcm.astype(np.float32)[None], format="flt", layout="mono")
            frame.sample_rate, frame.time_base, frame.pts = 16000, fractions.Fraction(1, 16000), s * 16000
            for p in aus.encode(frame):
                c.mux(p)
        for p in aus.encode():
            c.mux(p)
    os.replace(tmp, out)
    return out


def _kb(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise KeyError(field)


def child(clip: str, video_retention: float, audio_retention: float, n_ubatch: int) -> dict:
    import llama_cpp

    import pyomnisift
    from pyomnisift.assets import default_cache_dir

    model = default_cache_dir() / "tiny-model-0"
    llm = pyomnisift.Llama(str(model / "omni-tiny-llm.gguf"), str(model / "omni-tiny-mmproj.gguf"),
                           n_ctx=131072, n_threads=2, flash_attn=True, n_batch=n_ubatch, n_ubatch=n_ubatch, video_retention=video_retention,
                           audio_retention=audio_retention)
    llm.create_chat_completion([{"role": "user", "content": "Hello"}], max_tokens=1)
    llm.reset()
    llm._ctx.kv_cache_clear()
    warm = _kb("VmRSS")
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")   # resets VmHWM to the current RSS
    tracemalloc.start()
    out = llm.create_chat_completion([{"role": "user", "content": [{"type": "video_url", "video_url": {"url": clip}},
                                                                   {"type": "text", "text": "What happens?"}]}],
                                     max_tokens=1, temperature=0.0)["usage"]
    peak = _kb("VmHWM")
    py_peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    # bytes per KV cell: K and V of every layer, f16
    m = llm.model
    per_cell = 2 * llama_cpp.llama_model_n_layer(m) * 2 * (
        llama_cpp.llama_model_n_embd(m) // llama_cpp.llama_model_n_head(m) * llama_cpp.llama_model_n_head_kv(m))
    st = out["omnisift"]
    return dict(prompt_cells=out["prompt_tokens"], video_in=st["video"]["tokens_in"], audio_in=st["audio"]["tokens_in"],
                warm_mb=warm / 1024, peak_mb=peak / 1024, growth_mb=(peak - warm) / 1024,
                kv_mb=out["prompt_tokens"] * per_cell / 2**20, py_peak_mb=py_peak / 2**20, seconds=sum(st["timings_ms"].values()) / 1e3)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--minutes", type=int, nargs="+", default=[1, 10, 60])
    ap.add_argument("--retention", type=float, nargs=2, default=[0.33, 0.6], metavar=("VIDEO", "AUDIO"))
    ap.add_argument("--n-ubatch", type=int, default=1024, help="llama.cpp's batch (its KQ mask is n_kv x batch)")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        print(json.dumps(child(args.child, *args.retention, args.n_ubatch)))
        return 0
    rows = []
    for minutes in args.minutes:
        clip = make_clip(minutes)
        r = subprocess.run([sys.executable, __file__, "--child", str(clip), "--retention", *map(str, args.retention),
                            "--n-ubatch", str(args.n_ubatch)],
                           capture_output=True, text=True, check=True)
        rows.append((minutes, json.loads(r.stdout.strip().splitlines()[-1])))
    print(f"tiny model pair, 2 threads, n_batch = n_ubatch = {args.n_ubatch}, flash attention, "
          f"retention video {args.retention[0]} / audio {args.retention[1]}, "
          "1-fps 64x48 clips with sound, one child process per length")
    print("| minutes | video in | audio in | prompt cells | warm MB | peak MB | growth MB | KV MB | growth - KV MB "
          "| Python + numpy peak MB | s |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for minutes, r in rows:
        print(f"| {minutes} | {r['video_in']} | {r['audio_in']} | {r['prompt_cells']} | {r['warm_mb']:.0f} | "
              f"{r['peak_mb']:.0f} | {r['growth_mb']:.1f} | {r['kv_mb']:.1f} | {r['growth_mb'] - r['kv_mb']:.1f} | "
              f"{r['py_peak_mb']:.1f} | {r['seconds']:.1f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
