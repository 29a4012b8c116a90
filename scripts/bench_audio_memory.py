"""Peak memory of encoding long audio: the streamed path (two passes over PCM blocks, one 2-s window
encoded at a time, its rows dropped) against the whole-clip path (PCM, log-mel and rows of the whole
clip in memory), for 1, 10 and 60 minutes of generated audio.

Each (length, path) runs in a child process of its own, so each peak RSS (the kernel's high-water
mark, VmHWM) is that run's alone; "growth" is the peak minus the high-water mark just before the
audio (libraries loaded, tower loaded and warmed up on 2 s). The rows of both paths are hashed
(sha256 of their float32 bytes, window by window): equal hashes mean bitwise equal rows.

Tower: the tiny random Qwen2.5-Omni audio tower (d_model 32, 2 layers, as make_tiny_model.py's) with
its projector to --width (default 3584, Qwen2.5-Omni-7B's LLM width: the rows are what grows with
the clip); --width 64 is the tiny test model's. Audio: deterministic noise and tones generated in
2-s blocks from the block index, so both passes of the stream read the same samples.

Usage: python scripts/bench_audio_memory.py [--minutes 1 10 60] [--width 3584] [--threads 2]
       [--windows-per-step 1]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

SR = 16000
BLOCK = 32000  # samples per generated block (what a media reader's iter_audio would hand out)


def hwm_mb() -> float:
    """The process's peak resident set so far (VmHWM), in MB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM in /proc/self/status")


def blocks(n_samples: int):
    """Noise plus a tone that changes every block, seeded by the block index: reproducible."""
    for i, start in enumerate(range(0, n_samples, BLOCK)):
        n = min(BLOCK, n_samples - start)
        rng = np.random.default_rng(i)
        t = (start + np.arange(n)) / SR
        tone = 0.3 * np.sin(2 * np.pi * (100 + 37 * (i % 50)) * t)
        yield (0.05 * rng.standard_normal(n) + tone).astype(np.float32)


def child(mode: str, minutes: float, mmproj: str, threads: int, windows_per_step: int) -> dict:
    import pyomnisift
    from pyomnisift import _audio, _mel_stream
    from pyomnisift._audio_stream import AudioRows

    tower = pyomnisift.AudioTower(mmproj, n_threads=threads)
    tower.encode(next(blocks(BLOCK)))  # warm-up: graph allocations happen before the baseline
    before = hwm_mb()
    n_samples = int(minutes * 60 * SR)
    digest, n_rows, t0 = hashlib.sha256(), 0, time.perf_counter()
    if mode == "stream":
        # as the pipeline does: count, then take each 2-s chunk's rows next to its frames
        plan = _mel_stream.scan(blocks(n_samples))
        n_planned = _audio.n_tokens(plan.n_samples)  # known before anything is encoded
        source = AudioRows(tower, blocks(n_samples), plan, windows_per_step)
        for start in range(0, n_planned, 50):
            rows = source.take(start, min(50, n_planned - start))
            digest.update(rows.tobytes())
            n_rows += len(rows)  # the rows are dropped here: the pipeline would compress and decode them
        assert n_rows == n_planned
    else:
        pcm = np.concatenate(list(blocks(n_samples)))
        rows = tower.encode(pcm)
        for start in range(0, len(rows), 50):
            digest.update(rows[start:start + 50].tobytes())
        n_rows = len(rows)
    return {"mode": mode, "minutes": minutes, "rows": n_rows, "seconds": time.perf_counter() - t0,
            "before_mb": before, "peak_mb": hwm_mb(), "sha256": digest.hexdigest()[:16]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--minutes", type=float, nargs="+", default=[1, 10, 60])
    ap.add_argument("--width", type=int, default=3584, help="projector output width (LLM n_embd)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--windows-per-step", type=int, default=1, 
                    help="2-s windows encoded per graph when streamed")
    ap.add_argument("--child", nargs=3, metavar=("MODE", "MINUTES", "MMPROJ"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        mode, minutes, mmproj = args.child
        print(json.dumps(child(mode, float(minutes), mmproj, args.threads, args.windows_per_step)))
        return

    from bench_audio import write_random_tower
    from pyomnisift.tiny_model import AUDIO

    with tempfile.TemporaryDirectory() as tmp:
        mmproj = write_random_tower(Path(tmp) / "tower.gguf", n_proj=args.width, n_embd=AUDIO["n_embd"],
                                    n_layer=AUDIO["n_layer"], n_head=AUDIO["n_head"], n_ff=AUDIO["n_ff"])
        results = {}
        for minutes in args.minutes:
            for mode in ("stream", "whole"):
                out = subprocess.run([sys.executable, __file__, "--threads", str(args.threads),
                                      "--windows-per-step", str(args.windows_per_step),
                                      "--child", mode, str(minutes), str(mmproj)],
                                     check=True, capture_output=True, text=True)
                results[minutes, mode] = json.loads(out.stdout.strip().splitlines()[-1])

    print(f"tiny audio tower, rows of width {args.width} (float32: {args.width * 4 / 1024:.1f} KiB per row), "
          f"{args.threads} threads, {args.windows_per_step} window(s) per streamed step; "
          "peak RSS in MB (growth over the loaded, warmed-up tower)")
    print("| audio | rows | streamed: peak (growth) | s | whole clip: peak (growth) | s | rows identical |")
    print("|---|---|---|---|---|---|---|")
    for minutes in args.minutes:
        s, w = results[minutes, "stream"], results[minutes, "whole"]
        assert s["rows"] == w["rows"]
        print(f"| {minutes:g} min | {s['rows']} | {s['peak_mb']:.0f} ({s['peak_mb'] - s['before_mb']:+.0f}) "
              f"| {s['seconds']:.1f} | {w['peak_mb']:.0f} ({w['peak_mb'] - w['before_mb']:+.0f}) "
              f"| {w['seconds']:.1f} | {'yes' if s['sha256'] == w['sha256'] else 'NO'} |")


if __name__ == "__main__":
    main()
