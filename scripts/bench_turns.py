"""Multi-turn chat about one clip: time to first token of the first question (everything encoded,
compressed and prefilled) and of a follow-up (the clip's KV cells reused: only the new text is
prefilled), measured side by side in one process, and regenerating the last answer.

    python scripts/bench_turns.py [--clip 60s] [--repeat 3] [--threads 2]

Model: the bench pair (scripts/bench_inputs.py: Qwen2.5-Coder-0.5B-Instruct Q4_K_M relabelled
qwen2vl, a Whisper-base audio tower and a random Qwen2.5-VL-geometry vision tower), at the library's
default retention (video 0.33, audio 0.6, anchor). Each repetition starts from a cleared context.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

from bench_inputs import prepare_all


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--clip", default="60s")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args(argv)

    import pyomnisift

    assets = prepare_all()
    clip = assets["clips"][args.clip]
    llm = pyomnisift.Llama(str(assets["llm"]), str(assets["mmproj"]), n_ctx=16384, n_threads=args.threads,
                           n_threads_batch=args.threads, flash_attn=True)
    q1 = [{"role": "user", "content": [{"type": "video_url", "video_url": {"url": str(clip)}},
                                       {"type": "text", "text": "What happens in this clip?"}]}]
    rows = []
    for _ in range(args.repeat):
        llm.reset()
        llm._ctx.kv_cache_clear()
        t = time.perf_counter()
        a1 = llm.create_chat_completion(q1, max_tokens=16, temperature=0.0)
        first = a1["usage"]["omnisift"]["timings_ms"]["ttft"]
        wall1 = (time.perf_counter() - t) * 1e3
        q2 = q1 + [a1["choices"][0]["message"], {"role": "user", "content": "And what do you hear?"}]
        a2 = llm.create_chat_completion(q2, max_tokens=16, temperature=0.0)
        a3 = llm.create_chat_completion(q2, max_tokens=16, temperature=0.0)   # regenerate
        rows.append((first, a2["usage"]["omnisift"]["timings_ms"]["ttft"], a3["usage"]["omnisift"]["timings_ms"]["ttft"],
                     a1["usage"]["prompt_tokens"], a2["usage"]["omnisift"]["media_reused"], wall1))
    med = [statistics.median(r[i] for r in rows) for i in range(3)]
    print(f"clip {args.clip} ({clip.name}), bench pair (0.5B Q4_K_M LLM, Whisper-base audio, random "
          f"Qwen2.5-VL-geometry vision), {args.threads} threads, default retention, n = {args.repeat}")
    print(f"prompt {rows[0][3]} KV cells; media reused on turn 2: {rows[0][4]}")
    print(f"TTFT ms (median): turn 1 {med[0]:.0f}, follow-up {med[1]:.1f}, regenerate {med[2]:.1f}")
    print(f"follow-up / turn 1 = {med[1] / med[0]:.4f}; regenerate / turn 1 = {med[2] / med[0]:.4f}")
    print("per repetition (turn 1, follow-up, regenerate):", [(round(r[0]), round(r[1], 1), round(r[2], 1)) for r in rows])
    llm.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
