"""The main job on the default input: a 10-second clip with sound through pyomnisift.Llama.

Default input: test-3.mp4 (10 s, 720x358, H.264 + AAC) from the pinned llama-cpp-python sdist, and
the tiny random Qwen2.5-Omni-shaped model that pyomnisift.tiny_model generates (no model hub is
reachable). The model's weights are random, so its answer is noise; what the demo shows is the
pipeline: the omni sequence the model would see, how many tokens OmniSIFT keeps of it, and where
the time goes.

Usage: pyomnisift demo [--video PATH] [--model LLM.gguf --mmproj MMPROJ.gguf] [--retention R ...]
(`make demo` runs it; an installed package runs it too: the sdist is fetched from PyPI, sha256-checked,
into ~/.cache/pyomnisift, and the tiny model is generated there.)
"""

from __future__ import annotations

import argparse
import sys
import time


def _default_inputs(video, model):
    """The sdist's test-3.mp4 and the generated tiny model (pyomnisift.assets, pyomnisift.tiny_model)."""
    from .assets import default_cache_dir, ensure_assets
    from . import tiny_model

    assets = ensure_assets()
    video = video or str(assets["test-3.mp4"])
    if model:
        return video, None
    out = default_cache_dir() / "tiny-model-0"
    llm_path, mmproj_path = out / tiny_model.LLM_FILE, out / tiny_model.MMPROJ_FILE
    if not (llm_path.exists() and mmproj_path.exists()):
        tiny_model.make_tiny_model(out, 0, assets["ggml-vocab-qwen2.gguf"])
    return video, (llm_path, mmproj_path)


def add_arguments(ap: argparse.ArgumentParser) -> None:
    ap.add_argument("--video", help="a video file (default: the sdist's test-3.mp4)")
    ap.add_argument("--model", help="LLM GGUF (default: the generated tiny model)")
    ap.add_argument("--mmproj", help="mmproj GGUF matching --model")
    ap.add_argument("--retention", type=float, nargs="+", default=[1.0, 0.35, 0.25],
                    help="video and audio retentions to compare (fractions kept)")
    ap.add_argument("--question", default="What happens in this video, and what is said?")
    ap.add_argument("-t", "--threads", type=int, default=None)


def run(args) -> int:
    import pyomnisift

    if args.video and args.model:
        video, pair = args.video, None
    else:
        video, pair = _default_inputs(args.video, args.model)
    if pair is None:
        llm_path, mmproj_path = args.model, args.mmproj
    else:
        llm_path, mmproj_path = pair
    print(f"pyomnisift {pyomnisift.__version__} (libomnisift {pyomnisift.library_version()}, "
          f"llama-cpp-python {pyomnisift.llama_cpp_python_version()})")
    print(f"model:  {llm_path}\nmmproj: {mmproj_path}\nvideo:  {video}\n")

    t0 = time.perf_counter()
    model = pyomnisift.Llama(str(llm_path), str(mmproj_path), n_ctx=8192, n_threads=args.threads)
    print(f"loaded in {time.perf_counter() - t0:.2f} s; compression graphs on {model.chat_handler.engine.device}\n")
    messages = [{"role": "user", "content": [{"type": "video_url", "video_url": {"url": video}},
                                             {"type": "text", "text": args.question}]}]
    header = (f"{'kept':>5} | {'video in->kept':>15} | {'audio in->kept':>15} | {'prompt':>6} | "
              f"{'decode':>7} {'encode':>7} {'sift':>6} {'prefill':>8} {'TTFT':>8}  (ms)")
    print(header)
    print("-" * len(header))
    answers = {}
    for r in args.retention:
        out = model.create_chat_completion(messages, max_tokens=16, temperature=0,
                                           video_retention=r, audio_retention=r)
        st, t = out["usage"]["omnisift"], out["usage"]["omnisift"]["timings_ms"]
        print(f"{r:>5.0%} | {st['video']['tokens_in']:>6} -> {st['video']['tokens_kept']:<5} | "
              f"{st['audio']['tokens_in']:>6} -> {st['audio']['tokens_kept']:<5} | "
              f"{out['usage']['prompt_tokens']:>6} | {t['media_decode']:>7.0f} {t['encode']:>7.0f} "
              f"{t['compress']:>6.0f} {t['prefill']:>8.0f} {t['ttft']:>8.0f}")
        answers[r] = out["choices"][0]["message"]["content"]
    audio = st["audio"]
    print(f"\naudio encoded on 2-s windows as the model was trained: {audio['tokens_in']} tokens; "
          f"llama.cpp's own path would pad to 30-s windows (+{audio['padding_avoided']} tokens).")
    print("answers (random weights, so noise):")
    for r, a in answers.items():
        print(f"  {r:.0%}: {a!r}")
    model.close()
    return 0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="pyomnisift demo", description=__doc__.splitlines()[0])
    add_arguments(ap)
    return run(ap.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
