#!/usr/bin/env python3
"""LLM prefill and generation speed by how llama.cpp's CPU weight buffers are chosen, side by side.

- default: llama.cpp's own choice (extra buffer types on: CPU_REPACK, and AMX where the CPU has it);
- no_extra: `use_extra_bufts=False` (the AMX-safe load without repacking);
- repack: `use_extra_bufts=False, cpu_repack=True` (the AMX-safe load that keeps CPU_REPACK: what
  pyomnisift does by default on AMX CPUs).
On a CPU without AMX, default and repack place the same weights in the same buffers, so their
difference is noise; the repack / no_extra ratio is what AMX machines gain over the plain safe load.
Each measurement is a fresh child process (load, 16-token warm-up, an n-token prefill, then tokens
decoded one at a time as generation does);
modes alternate, repetitions in a shuffled order; medians with their n.

    python scripts/bench_repack.py [--models 0.5b 3b] [--reps 3] [--n-prompt 512]
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import subprocess
import sys
import time
from pathlib import Path

MODES = {"default": dict(use_extra_bufts=True), "no_extra": dict(use_extra_bufts=False),
         "repack": dict(use_extra_bufts=False, cpu_repack=True)}


def child(spec: dict) -> dict:
    import pyomnisift

    t0 = time.perf_counter()
    llm = pyomnisift.Llama(spec["model"], n_ctx=spec["n_prompt"] + spec["n_gen"] + 32, n_batch=spec["n_prompt"], n_threads=2,
                           n_threads_batch=2, flash_attn=True, **MODES[spec["mode"]])
    load_s = time.perf_counter() - t0
    tokens = [(i * 7919) % 20000 + 100 for i in range(spec["n_prompt"])]   # ordinary-vocabulary ids
    llm.eval(tokens[:16])
    llm.reset()
    t0 = time.perf_counter()
    llm.eval(tokens)
    prefill_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    for tok in tokens[:spec["n_gen"]]:   # token by token, as generation decodes
        llm.eval([tok])
    gen_s = time.perf_counter() - t0
    llm.close()
    return dict(load_s=load_s, prefill_s=prefill_s, tok_s=spec["n_prompt"] / prefill_s, gen_tok_s=spec["n_gen"] / gen_s)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--child", help=argparse.SUPPRESS)
    ap.add_argument("--models", nargs="+", default=["0.5b", "3b"])
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--n-prompt", type=int, default=512)
    ap.add_argument("--n-gen", type=int, default=32, help="tokens decoded one at a time after the prefill")
    ap.add_argument("--out", default=str(Path(__file__).resolve().parent / "results" / "repack_results.json"))
    args = ap.parse_args(argv)
    if args.child:
        print("RESULT " + json.dumps(child(json.loads(args.child))), flush=True)
        return 0
    from make_bench_model import make_bench_model
    from make_bench_model_3b import make_bench_model_3b

    paths = {"0.5b": lambda: str(make_bench_model()["llm"]), "3b": lambda: str(make_bench_model_3b()["llm"])}
    runs = []
    for rep in range(args.reps):
        order = [(m, k) for m in args.models for k in random.Random(rep).sample(list(MODES), len(MODES))]
        for model, mode in order:
            spec = dict(model=paths[model](), mode=mode, n_prompt=args.n_prompt, n_gen=args.n_gen)
            p = subprocess.run([sys.executable, __file__, "--child", json.dumps(spec)], capture_output=True, text=True)
            line = [ln for ln in p.stdout.splitlines() if ln.startswith("RESULT ")]
            if p.returncode or not line:
                raise RuntimeError(f"{model} {mode}: exit {p.returncode}\n{p.stderr[-2000:]}")
            r = dict(json.loads(line[-1][7:]), model=model, mode=mode, rep=rep)
            runs.append(r)
            print(f"{model:5} {mode:9} rep {rep}: prefill {r['tok_s']:.1f} tok/s, generation {r['gen_tok_s']:.1f} tok/s, "
                  f"load {r['load_s']:.1f} s", flush=True)
    summary = {}
    for model in args.models:
        def med(key):
            return {k: statistics.median(r[key] for r in runs if r["model"] == model and r["mode"] == k) for k in MODES}

        pre, gen = med("tok_s"), med("gen_tok_s")
        summary[model] = dict(n=args.reps, prefill_tok_s=pre, gen_tok_s=gen,
                              prefill_repack_vs_no_extra=pre["repack"] / pre["no_extra"],
                              gen_repack_vs_no_extra=gen["repack"] / gen["no_extra"],
                              prefill_repack_vs_default=pre["repack"] / pre["default"])
        print(f"{model} (medians of {args.reps}): prefill tok/s default {pre['default']:.1f}, no_extra "
              f"{pre['no_extra']:.1f}, repack {pre['repack']:.1f} (repack / no_extra {pre['repack'] / pre['no_extra']:.2f}x); "
              f"generation tok/s default {gen['default']:.1f}, no_extra {gen['no_extra']:.1f}, repack "
              f"{gen['repack']:.1f} (repack / no_extra {gen['repack'] / gen['no_extra']:.2f}x)")
    Path(args.out).write_text(json.dumps(dict(n_prompt=args.n_prompt, runs=runs, summary=summary), indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
