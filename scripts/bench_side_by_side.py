#!/usr/bin/env python3
"""Two installs of pyomnisift side by side on one request: TTFT medians and the prompt's logits.

Each repetition runs one fresh child per install (alternating, so drifts of a shared machine fall on
both), which loads the pair (--model / --mmproj), warms the LLM on a short text prompt, then
answers one question about a clip with sound at the given retentions; the child reports TTFT
(usage["omnisift"]["timings_ms"]["ttft"]) and the sha256 of the last prompt position's logits.
Equal digests: the two installs decode the same rows at the same positions.

    python scripts/bench_side_by_side.py --python-a OLD/.venv/bin/python --python-b .venv/bin/python \\
        --model LLM.gguf --mmproj MMPROJ.gguf --video clip.mp4 --reps 3 --retention 1.0 0.25
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess

CHILD = r"""
import hashlib, json, sys
import numpy as np, llama_cpp, pyomnisift
args = json.loads(sys.argv[1])
llm_path, mmproj, clip = args["model"], args["mmproj"], args["video"]
llm = pyomnisift.Llama(llm_path, mmproj, n_ctx=8192, n_threads=args["threads"])
llm.create_chat_completion([{"role": "user", "content": "hi"}], max_tokens=1)
out = {}
for r in args["retention"]:
    llm.reset(); llm._ctx.kv_cache_clear()
    msgs = [{"role": "user", "content": [{"type": "video_url", "video_url": {"url": clip}},
                                         {"type": "text", "text": "What happens?"}]}]
    res = llm.create_chat_completion(msgs, max_tokens=1, temperature=0.0, video_retention=r, audio_retention=r)
    logits = np.ctypeslib.as_array(llama_cpp.llama_get_logits_ith(llm.ctx, -1), shape=(llm.n_vocab(),))
    out[str(r)] = dict(ttft_ms=res["usage"]["omnisift"]["timings_ms"]["ttft"], prompt=res["usage"]["prompt_tokens"],
                       sha=hashlib.sha256(logits.tobytes()).hexdigest()[:16],
                       timings_ms=res["usage"]["omnisift"]["timings_ms"])
print(json.dumps(out))
"""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--python-a", required=True, help="python of install A (the baseline)")
    ap.add_argument("--python-b", required=True, help="python of install B")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--retention", type=float, nargs="+", default=[1.0, 0.25])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--model", required=True)
    ap.add_argument("--mmproj", required=True)
    ap.add_argument("--video", required=True)
    ap.add_argument("--json", help="also write every run (per install, in run order) to this file")
    a = ap.parse_args()
    cfg = json.dumps(dict(model=a.model, mmproj=a.mmproj, video=a.video, retention=a.retention, threads=a.threads))
    runs = {"A": [], "B": []}
    for rep in range(a.reps):
        for name in (("A", "B") if rep % 2 == 0 else ("B", "A")):
            py = a.python_a if name == "A" else a.python_b
            res = subprocess.run([py, "-P", "-c", CHILD, cfg], capture_output=True, text=True, cwd="/")
            if res.returncode != 0:
                raise SystemExit(f"{name} failed:\n{res.stderr[-3000:]}")
            runs[name].append(json.loads(res.stdout.strip().splitlines()[-1]))
            print(f"rep {rep} {name}: " + ", ".join(f"{r}: {v['ttft_ms']:.0f} ms ({v['prompt']} tokens, {v['sha']})"
                                                   for r, v in runs[name][-1].items()), flush=True)
    print(f"{'retention':>9} | {'prompt':>6} | {'TTFT A ms':>9} | {'TTFT B ms':>9} | {'B / A':>6} | logits A == B (n = {a.reps})")
    for r in map(str, a.retention):
        ta = statistics.median(x[r]["ttft_ms"] for x in runs["A"])
        tb = statistics.median(x[r]["ttft_ms"] for x in runs["B"])
        shas = {x[r]["sha"] for x in runs["A"] + runs["B"]}
        print(f"{r:>9} | {runs['B'][0][r]['prompt']:>6} | {ta:>9.0f} | {tb:>9.0f} | {tb / ta:>6.3f} | "
              f"{'yes' if len(shas) == 1 else 'NO: ' + ' '.join(sorted(shas))}")
    if a.json:
        with open(a.json, "w") as f:
            json.dump(dict(args=vars(a), runs=runs), f, indent=1)


if __name__ == "__main__":
    main()
