#!/usr/bin/env python3
"""Cost of pyomnisift.sift per audio selector against the LLM prefill it saves.

Input: Qwen2.5-Omni-7B sized sequences (D = 3584) of 10, 60 and 300 s of video with audio: per 2-s
chunk two grids of GRID tokens (256 and 400) and 50 audio tokens, at the paper's 35% setting
(video retention 0.33, audio retention 0.6). For each selector it prints the wall time of sift()
(Python validation included) and its FLOPs (counted from the graphs' shapes), next to the prefill
FLOPs of the removed tokens (2 x 7.6e9 per token for the 7B) and the time those would take at the
prefill throughput (FLOP/s) measured here on Qwen2.5-Coder-0.5B Q4_K_M (scripts/bench_assets.py),
assumed to carry over to the 7B on the same CPU. Targets: selector FLOPs < 0.1% of the saved prefill
FLOPs, selector time < 1% of the saved prefill time.

    python scripts/bench_sift.py [--threads 2] [--seconds 10 60 300] [--grids 256 400]
"""

from __future__ import annotations

import argparse
import pathlib
import sys
import time

import numpy as np

import pyomnisift

HERE = pathlib.Path(__file__).resolve().parent
D = 3584
AUDIO_PER_CHUNK = 50
FLOPS_PER_TOKEN_7B = 2 * 7.6e9
VIDEO_RETENTION, AUDIO_RETENTION = 0.33, 0.6
HIDDEN, N_HEAD, SCORE_HIDDEN = 512, 8, 256


def make_input(rng, seconds: int, grid: int):
    n_chunks = seconds // 2
    per_chunk = 2 * grid + AUDIO_PER_CHUNK
    pool = rng.standard_normal((8192, D), dtype=np.float32)
    emb = np.empty((n_chunks * per_chunk, D), dtype=np.float32)
    mod = np.empty(n_chunks * per_chunk, dtype=np.int32)
    pos = np.empty((3, n_chunks * per_chunk), dtype=np.int32)
    side = int(np.ceil(np.sqrt(grid)))
    hh, ww = np.divmod(np.arange(grid), side)
    for c in range(n_chunks):
        o, t0 = c * per_chunk, 50 * c
        base = pool[rng.integers(8192)] * 2
        f1 = emb[o:o + grid] = base + pool[rng.integers(8192, size=grid)]
        emb[o + grid:o + 2 * grid] = f1 + 0.5 * pool[rng.integers(8192, size=grid)]
        emb[o + 2 * grid:o + per_chunk] = pool[rng.integers(8192, size=AUDIO_PER_CHUNK)] + pool[rng.integers(8192)]
        mod[o:o + 2 * grid] = 1
        mod[o + 2 * grid:o + per_chunk] = 2
        for k, t in enumerate((t0, t0 + 25)):
            sl = slice(o + k * grid, o + (k + 1) * grid)
            pos[0, sl], pos[1, sl], pos[2, sl] = t, t + hh, t + ww
        at = t0 + np.arange(AUDIO_PER_CHUNK)
        pos[:, o + 2 * grid:o + per_chunk] = at
    return emb, mod, pos, n_chunks


def drop_count(n: int, r: float) -> int:
    return min(max(int(np.floor(n * (1.0 - r) + 1e-9)), 0), n)


def selector_flops(selector: str, n_chunks: int, grid: int) -> float:
    """FLOPs of the graphs of one sift() call: multiply-adds count 2, norms and softmax ~5 per element."""
    n_v = 2 * (grid - drop_count(grid, VIDEO_RETENTION))        # surviving anchors per chunk
    n_a = AUDIO_PER_CHUNK
    stvp = 6 * grid * D + 8 * grid * D                          # spatial F1 (mean, norm, dot) + temporal F2
    audio = 0.0
    if selector == "anchor":
        audio = 3 * (n_a + n_v) * D + 2 * n_a * n_v * D + 7 * n_a * n_v
    elif selector == "vgas":
        h, s = HIDDEN, SCORE_HIDDEN
        audio = (2 * (n_a + n_v) * D * h + 10 * (n_a + n_v) * h      # projections + LayerNorms
                 + 2 * h * h * (n_a + 2 * n_v)                       # q, k, v
                 + 4 * n_a * n_v * h + 5 * n_a * n_v * N_HEAD        # scores, softmax, values
                 + 2 * n_a * h * h + 10 * n_a * h                    # out_proj, residual LayerNorm
                 + 2 * n_a * h * s + 2 * n_a * s + 5 * n_a)          # MLP, sigmoid
    return n_chunks * (stvp + audio)


def make_head(cache: pathlib.Path) -> pathlib.Path:
    """A randomly initialised head of OmniSIFT-7B's shapes (4.86M parameters): timing needs no trained weights."""
    out = cache / "bench" / f"sift-head-random-{D}.gguf"
    if out.is_file():
        return out
    from safetensors.numpy import save_file

    rng = np.random.default_rng(0)
    shapes = {"v_proj.weight": (HIDDEN, D), "a_proj.weight": (HIDDEN, D), "cross_attn.in_proj_weight": (3 * HIDDEN, HIDDEN),
              "cross_attn.out_proj.weight": (HIDDEN, HIDDEN), "score_head.0.weight": (SCORE_HIDDEN, HIDDEN),
              "score_head.2.weight": (1, SCORE_HIDDEN)}
    sd = {}
    for name, shape in shapes.items():
        sd[name] = (rng.standard_normal(shape) / np.sqrt(shape[1])).astype(np.float32)
        sd[name.replace("weight", "bias")] = np.zeros(shape[0], np.float32)
    for norm in ("v_norm", "a_norm", "post_attn_norm"):
        sd[f"{norm}.weight"], sd[f"{norm}.bias"] = np.ones(HIDDEN, np.float32), np.zeros(HIDDEN, np.float32)
    out.parent.mkdir(parents=True, exist_ok=True)
    src = out.with_suffix(".safetensors")
    save_file({"thinker.compressor." + k: v for k, v in sd.items()}, str(src))
    from pyomnisift.convert_head import convert

    convert(src, out)
    src.unlink()
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seconds", type=int, nargs="+", default=[10, 60, 300])
    ap.add_argument("--grids", type=int, nargs="+", default=[256, 400])
    ap.add_argument("--selectors", nargs="+", default=["none", "random", "anchor", "vgas"])
    args = ap.parse_args(argv)

    import bench_assets as assets
    prefill = assets.measure_prefill(assets.fetch_bench_model(), n_threads=args.threads, repeats=3)
    flops_per_s = prefill["flops_per_s"]
    print(f"prefill throughput: Qwen2.5-Coder-0.5B Q4_K_M, {prefill['n_prompt']}-token prompt, {args.threads} threads: "
          f"{prefill['tokens_per_s']:.0f} tok/s x {prefill['flops_per_token'] / 1e9:.2f} GFLOP/token = "
          f"{flops_per_s / 1e9:.1f} GFLOP/s -> 7B prefill {FLOPS_PER_TOKEN_7B / flops_per_s * 1e3:.0f} ms/token")

    engine = pyomnisift.Engine(n_threads=args.threads)
    head = pyomnisift.SiftHead(make_head(assets.cache_dir()), engine) if "vgas" in args.selectors else None
    print(f"device {engine.device}; retention video {VIDEO_RETENTION}, audio {AUDIO_RETENTION}\n")
    cols = ("input", "grid", "tokens", "selector", "sift s", "sel GFLOP", "removed", "saved TFLOP",
            "FLOP ratio", "saved prefill s", "time ratio")
    print("| " + " | ".join(cols) + " |")
    print("|" + "---|" * len(cols))
    ok = True
    rng = np.random.default_rng(0)
    for seconds in args.seconds:
        for grid in args.grids:
            emb, mod, pos, n_chunks = make_input(rng, seconds, grid)
            for selector in args.selectors:
                kw = dict(video_retention=VIDEO_RETENTION, audio_retention=AUDIO_RETENTION, audio_selector=selector,
                          sift_head=head if selector == "vgas" else None, engine=engine)
                pyomnisift.sift(emb[: 4 * (2 * grid + 50)], mod[: 4 * (2 * grid + 50)], pos[:, : 4 * (2 * grid + 50)], **kw)
                best = float("inf")
                for _ in range(1 if seconds >= 300 else 3):
                    t0 = time.perf_counter()
                    keep = pyomnisift.sift(emb, mod, pos, **kw)
                    best = min(best, time.perf_counter() - t0)
                removed = int((~keep).sum())
                saved_flops = removed * FLOPS_PER_TOKEN_7B
                flops = selector_flops(selector, n_chunks, grid)
                saved_s = saved_flops / flops_per_s
                f_ratio, t_ratio = flops / saved_flops, best / saved_s
                ok &= f_ratio < 1e-3 and t_ratio < 1e-2
                print(f"| {seconds} s | {grid} | {len(mod)} | {selector} | {best:.3f} | {flops / 1e9:.2f} | {removed} | "
                      f"{saved_flops / 1e12:.1f} | {100 * f_ratio:.4f}% | {saved_s:.0f} | {100 * t_ratio:.3f}% |")
            del emb, mod, pos
    print(f"\ntargets (FLOP ratio < 0.1%, time ratio < 1%): {'met' if ok else 'NOT met'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
