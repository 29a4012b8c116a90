#!/usr/bin/env python3
"""Benchmark: time to first token and memory of pyomnisift against llama-cpp-python's full-token path.

For each clip (video with its sound, tools/bench_media.py) and each configuration:
- A: llama-cpp-python 0.3.36 as a user drives it today: the same frames (PyAV, 2 fps, sized as the
  Qwen processor does) as mergeable bitmaps, one per frame, plus the audio track as one audio bitmap,
  `mtmd_tokenize`, then every chunk evaluated as `mtmd_helper_eval_chunks` does it (text chunks
  through `mtmd_helper_eval_chunk_single`; media chunks `mtmd_encode_chunk` +
  `mtmd_helper_decode_image_chunk`, the two calls eval_chunk_single makes, issued one by one so that
  encoding and LLM prefill are timed apart). libmtmd pads the audio to 30-s windows (750 tokens each)
  and lays video and audio out as separate items.
- B: pyomnisift at retention 1.0 (its own omni sequence: 2-s chunks of two frame grids + their
  audio, 25 audio tokens per second of real audio, nothing pruned).
- 35 / 25: pyomnisift with the paper's settings for 35% and 25% of tokens kept (video retention
  0.33 / 0.23 per grid, audio retention 0.6 / 0.5 per chunk), audio chosen by the `anchor` selector.
- 25_random: the 25% setting with the `random` audio selector.

Every run is a fresh child process (the parent only schedules and records), so that its peak RSS
(the kernel's VmHWM = ru_maxrss of that process) belongs to that run alone; the configurations
alternate within each repetition (A, B, 35, 25, 25_random, then again) so that drifts of the shared
machine fall on all of them alike. Each child loads the model pair, warms the LLM on a short text
prompt (pages in the weights), then times one request: TTFT = media decoding + encoding + compression
+ LLM prefill + first token (argmax of the last logits) + other (tokenization, prompt building).
Model loading is not part of TTFT.

Same settings for every configuration: n_threads = 2 (LLM, vision, audio, compression), n_batch =
n_ubatch = 1024, flash attention on (without it llama.cpp reserves an n_ctx x n_ubatch x n_head f32
score buffer: 1.2 GB at the 120-s clip's n_ctx, for every configuration alike), f16 KV cache, and
n_ctx sized per clip to hold baseline A's prompt. KV-cache bytes of a prompt =
n_tokens x n_layer x 2 (K and V) x n_head_kv x head_dim x 2 bytes (f16).

    python bench/bench.py                         # all clips, 2 repetitions
    python bench/bench.py --clips 10s --reps 1    # a smoke test
    python bench/bench.py --deadline 12:20 --no-a 120s

Writes bench/results.json (after every run), bench/results.md and bench/plot.png.
"""

from __future__ import annotations

import argparse
import datetime as dt
import gc
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent   # bench/: results are written here

N_THREADS = 2
N_BATCH = 1024
QUESTION = "Describe what happens in this video and what is said."
CONFIGS = {
    "A": dict(kind="mtmd"),
    "B": dict(kind="omni", video_retention=1.0, audio_retention=1.0, audio_selector="anchor"),
    "35": dict(kind="omni", video_retention=0.33, audio_retention=0.6, audio_selector="anchor"),
    "25": dict(kind="omni", video_retention=0.23, audio_retention=0.5, audio_selector="anchor"),
    "25_random": dict(kind="omni", video_retention=0.23, audio_retention=0.5, audio_selector="random"),
}
# Prototypes of fixes, measured beside the library's behaviour (never part of the targets): applied
# in the child by patching the pipeline instance, see _apply_prototype.
EXTRA_CONFIGS = {
    "25_coalesced": dict(kind="omni", video_retention=0.23, audio_retention=0.5, audio_selector="anchor",
                         prototype="coalesce"),
    "25_sift1t": dict(kind="omni", video_retention=0.23, audio_retention=0.5, audio_selector="anchor",
                      prototype="sift_1_thread"),
}
CONFIGS_ALL = {**CONFIGS, **EXTRA_CONFIGS}
LABELS = {"A": "A: llama-cpp-python (mtmd, all tokens)", "B": "B: pyomnisift, retention 1.0",
          "35": "pyomnisift 35% (anchor)", "25": "pyomnisift 25% (anchor)",
          "25_random": "pyomnisift 25% (random audio)",
          "25_coalesced": "prototype: 25% with kept rows of several chunks decoded in one batch (<= n_batch)",
          "25_sift1t": "prototype: 25% with the compression graphs on 1 thread"}


# =========================================================================== child side

def _status_kb(key: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    return 0


def _reset_peak() -> bool:
    """Resets VmHWM to the current RSS (Linux >= 4.0), so the peak is the request's."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def _kv_geometry(model_path: str) -> dict:
    from make_tiny_model import read_gguf_kv

    kv = read_gguf_kv(Path(model_path))
    gc.collect()   # read_gguf_kv's recursive closure keeps the file's bytes alive until collected
    arch = kv["general.architecture"]
    n_head = kv[f"{arch}.attention.head_count"]
    return dict(n_layer=kv[f"{arch}.block_count"], n_head_kv=kv[f"{arch}.attention.head_count_kv"],
                head_dim=kv[f"{arch}.embedding_length"] // n_head, bytes_per_elem=2)


def kv_bytes(n_tokens: int, g: dict) -> int:
    return n_tokens * g["n_layer"] * 2 * g["n_head_kv"] * g["head_dim"] * g["bytes_per_elem"]


def _template(source: str):
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    return ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True).from_string(source)


def _argmax_last(ctx, n_vocab: int) -> tuple[int, float]:
    import llama_cpp
    import numpy as np

    t0 = time.perf_counter()
    logits = np.ctypeslib.as_array(llama_cpp.llama_get_logits_ith(ctx, -1), shape=(n_vocab,))
    tok = int(np.argmax(logits))
    return tok, (time.perf_counter() - t0) * 1e3


def child_mtmd(spec: dict) -> dict:
    """Baseline A: llama-cpp-python + libmtmd's own path."""
    import ctypes

    import llama_cpp
    import numpy as np
    from llama_cpp import mtmd_cpp as M
    from llama_cpp._logger import llama_log_callback

    from pyomnisift import _media

    M.mtmd_log_set(llama_log_callback, None)
    M.mtmd_helper_log_set(llama_log_callback, None)
    llm = llama_cpp.Llama(spec["llm"], n_ctx=spec["n_ctx"], n_batch=N_BATCH, n_ubatch=N_BATCH,
                          n_threads=N_THREADS, n_threads_batch=N_THREADS, flash_attn=True,
                          verbose=bool(os.environ.get("BENCH_VERBOSE")))
    stages = {"llm_loaded": _status_kb("VmRSS")}
    params = M.mtmd_context_params_default()
    params.use_gpu = False
    params.n_threads = N_THREADS
    params.print_timings = False
    params.warmup = False
    # The frames come already sized by the Qwen rule (as in pyomnisift): libmtmd must not resize
    # them again, so both paths encode the same pixels into the same grids.
    params.image_min_tokens = 1
    params.image_max_tokens = 16384
    mctx = M.mtmd_init_from_file(spec["mmproj"].encode(), llm.model, params)
    if not mctx:
        raise RuntimeError("libmtmd could not load the mmproj")
    ctx = llm.ctx
    mem = llama_cpp.llama_get_memory(ctx)
    stages["mtmd_loaded"] = _status_kb("VmRSS")
    llm.eval(llm.tokenize(b"Hello, warm-up.", add_bos=False))   # page in the weights, build the graph
    llama_cpp.llama_memory_clear(mem, True)
    stages["warm"] = _status_kb("VmRSS")
    template = _template(llm.metadata["tokenizer.chat_template"])
    gc.collect()
    rss_loaded = _status_kb("VmRSS")
    reset_ok = _reset_peak()

    t = dict(media_decode=0.0, encode=0.0, compress=0.0, prefill=0.0, first_token=0.0)
    t0 = time.perf_counter()
    # --- media decoding: all frames and the audio track, as the full-token path needs them at once
    a = time.perf_counter()
    frames = list(_media.iter_video_frames(spec["clip"]))
    pcm = _media.read_audio(spec["clip"])
    t["media_decode"] = (time.perf_counter() - a) * 1e3
    stages["media_decoded"] = _status_kb("VmRSS")
    # --- prompt: one marker per frame (adjacent mergeable frames pair into one chunk), one for audio
    marker = M.mtmd_default_marker().decode()
    content = marker * len(frames) + marker + QUESTION
    text = template.render(messages=[{"role": "user", "content": content}], add_generation_prompt=True,
                           bos_token="", eos_token="").encode()
    a = time.perf_counter()
    bitmaps = []
    for f in frames:
        data = np.ascontiguousarray(f)
        bm = M.mtmd_bitmap_init(f.shape[1], f.shape[0], data.ctypes.data_as(ctypes.POINTER(ctypes.c_uint8)))
        M.mtmd_bitmap_set_mergeable(bm, True)
        bitmaps.append(bm)
    bitmaps.append(M.mtmd_bitmap_init_from_audio(len(pcm), pcm.ctypes.data_as(ctypes.POINTER(ctypes.c_float))))
    del frames
    chunks = M.mtmd_input_chunks_init()
    inp = M.mtmd_input_text(text=text, text_len=len(text), add_special=True, parse_special=True)
    arr = (M.mtmd_bitmap_p_ctypes * len(bitmaps))(*bitmaps)
    if M.mtmd_tokenize(mctx, chunks, ctypes.byref(inp), arr, len(bitmaps)) != 0:
        raise RuntimeError("mtmd_tokenize failed")
    for bm in bitmaps:
        M.mtmd_bitmap_free(bm)
    tokenize_ms = (time.perf_counter() - a) * 1e3   # image normalisation + log-mel: encoder preprocessing
    stages["tokenized"] = _status_kb("VmRSS")
    t["encode"] += tokenize_ms
    # --- evaluation, chunk by chunk, as mtmd_helper_eval_chunks
    n_chunks = M.mtmd_input_chunks_size(chunks)
    n_past = llama_cpp.llama_pos(0)
    counts = {"text": 0, "video": 0, "audio": 0}
    n_video_chunks = n_audio_chunks = 0
    for i in range(n_chunks):
        chunk = M.mtmd_input_chunks_get(chunks, i)
        kind = M.mtmd_input_chunk_get_type(chunk)
        n = M.mtmd_input_chunk_get_n_tokens(chunk)
        new_n_past = llama_cpp.llama_pos(n_past.value)   # the text path adds to it
        last = i == n_chunks - 1
        if kind == M.MTMD_INPUT_CHUNK_TYPE_TEXT:
            a = time.perf_counter()
            if M.mtmd_helper_eval_chunk_single(mctx, ctx, chunk, n_past, 0, N_BATCH, last,
                                               ctypes.byref(new_n_past)) != 0:
                raise RuntimeError("text chunk decode failed")
            t["prefill"] += (time.perf_counter() - a) * 1e3
            counts["text"] += n
        else:
            a = time.perf_counter()
            if M.mtmd_encode_chunk(mctx, chunk) != 0:
                raise RuntimeError("mtmd_encode_chunk failed")
            embd = M.mtmd_get_output_embd(mctx)
            b = time.perf_counter()
            if M.mtmd_helper_decode_image_chunk(mctx, ctx, chunk, embd, n_past, 0, N_BATCH,
                                                ctypes.byref(new_n_past),
                                                M.mtmd_helper_post_decode_callback(), None) != 0:
                raise RuntimeError("media chunk decode failed")
            c = time.perf_counter()
            t["encode"] += (b - a) * 1e3
            t["prefill"] += (c - b) * 1e3
            if kind == M.MTMD_INPUT_CHUNK_TYPE_AUDIO:
                counts["audio"] += n
                n_audio_chunks += 1
            else:
                counts["video"] += n
                n_video_chunks += 1
        n_past = new_n_past
    tok, t["first_token"] = _argmax_last(ctx, llm.n_vocab())
    ttft = (time.perf_counter() - t0) * 1e3
    M.mtmd_input_chunks_free(chunks)
    prompt_tokens = sum(counts.values())
    peak = _status_kb("VmHWM")
    out = dict(prompt_tokens=prompt_tokens, media_tokens=counts["video"] + counts["audio"],
               video_tokens=counts["video"], audio_tokens=counts["audio"], text_tokens=counts["text"],
               media_tokens_in=counts["video"] + counts["audio"],
               n_video_chunks=n_video_chunks, n_audio_chunks=n_audio_chunks,
               timings_ms=t, tokenize_ms=tokenize_ms, ttft_ms=ttft, first_token_id=tok,
               rss_loaded_bytes=rss_loaded * 1024, peak_rss_bytes=peak * 1024, peak_reset=reset_ok,
               rss_stages_kb=stages)
    M.mtmd_free(mctx)
    llm.close()
    return out


def _apply_prototype(llm, name: str) -> None:
    """Fix prototypes, on this Llama's pipeline only (the library is unchanged)."""
    if name == "sift_1_thread":
        # The compression graphs are tiny (a few MFLOP per chunk): on 2 threads their cost is mostly
        # thread hand-offs, which the frame-reading thread and any other load make expensive.
        from pyomnisift._engine import Engine

        llm.chat_handler.pipeline.engine = Engine(n_threads=1, device="CPU")
        return
    # "coalesce" (kept rows of several chunks in one llama_decode) was a prototype of the previous
    # pipeline; it is to become the pipeline's own batching.
    raise ValueError(f"prototype {name!r} is not available")


def child_omni(spec: dict) -> dict:
    import llama_cpp
    import numpy as np

    import pyomnisift

    cfg = CONFIGS_ALL[spec["config"]]
    llm = pyomnisift.Llama(spec["llm"], spec["mmproj"], n_ctx=spec["n_ctx"], n_batch=N_BATCH,
                           n_threads=N_THREADS, n_threads_batch=N_THREADS, flash_attn=True, verbose=False)
    if cfg.get("prototype"):
        _apply_prototype(llm, cfg["prototype"])
    stages = {"loaded": _status_kb("VmRSS")}
    llm.prefill([{"role": "user", "content": "Hello, warm-up."}])
    gc.collect()
    rss_loaded = stages["warm"] = _status_kb("VmRSS")
    reset_ok = _reset_peak()
    messages = [{"role": "user", "content": [{"type": "video_url", "video_url": {"url": spec["clip"]}},
                                             {"type": "text", "text": QUESTION}]}]
    t0 = time.perf_counter()
    r = llm.prefill(messages, video_retention=cfg["video_retention"], audio_retention=cfg["audio_retention"],
                    audio_selector=cfg["audio_selector"])
    tok, first = _argmax_last(llm.ctx, llm.n_vocab())
    ttft = (time.perf_counter() - t0) * 1e3
    peak = _status_kb("VmHWM")
    s = r["omnisift"]
    t = {k: float(s["timings_ms"][k]) for k in ("media_decode", "encode", "compress", "prefill")}
    t["first_token"] = first
    media_kept = s["video"]["tokens_kept"] + s["audio"]["tokens_kept"]
    out = dict(prompt_tokens=r["prompt_tokens"], media_tokens=media_kept,
               video_tokens=s["video"]["tokens_kept"], audio_tokens=s["audio"]["tokens_kept"],
               text_tokens=r["prompt_tokens"] - media_kept,
               media_tokens_in=s["video"]["tokens_in"] + s["audio"]["tokens_in"],
               video_tokens_in=s["video"]["tokens_in"], audio_tokens_in=s["audio"]["tokens_in"],
               audio_padding_avoided=s["audio"]["padding_avoided"],
               timings_ms=t, ttft_ms=ttft, first_token_id=tok,
               rss_loaded_bytes=rss_loaded * 1024, peak_rss_bytes=peak * 1024, peak_reset=reset_ok,
               rss_stages_kb=stages)
    llm.close()
    return out


def child_main(spec: dict) -> int:
    out = child_mtmd(spec) if CONFIGS_ALL[spec["config"]]["kind"] == "mtmd" else child_omni(spec)
    print("RESULT " + json.dumps(out), flush=True)
    return 0


# =========================================================================== parent side

def plan_clip(path: Path) -> dict:
    """Token counts known before running: sizes n_ctx to hold baseline A's prompt."""
    from pyomnisift import _media
    from pyomnisift._audio import n_tokens as audio_token_count

    info = _media.probe_video(path)
    gh, gw = info.height // 28, info.width // 28
    n_grids = info.n_sampled // 2
    pcm = _media.read_audio(path)
    n_audio = audio_token_count(len(pcm))
    a_audio = 750 * math.ceil(len(pcm) / (30 * 16000) + 1e-9)     # libmtmd: whole 30-s windows
    a_text = 16 * n_grids + 64        # "<|vision_start|>"/"<|vision_end|>" as plain text per chunk + template
    need = max(n_grids * gh * gw + a_audio + a_text, n_grids * gh * gw + n_audio + 64)
    return dict(duration_s=round(info.duration, 3), frames=info.n_sampled, grids=n_grids, grid=[gh, gw],
                frame_size=[info.width, info.height], audio_s=round(len(pcm) / 16000, 3),
                audio_tokens_real=n_audio, n_ctx=int(math.ceil((need + 256) / 256) * 256))


def run_child(spec: dict, timeout: float) -> dict:
    env = dict(os.environ, OMP_NUM_THREADS=str(N_THREADS))
    t0 = time.time()
    try:
        p = subprocess.run([sys.executable, str(Path(__file__).resolve()), "--child", json.dumps(spec)],
                           capture_output=True, text=True, timeout=max(timeout, 1), env=env)
    except subprocess.TimeoutExpired:
        return dict(error=f"timed out after {timeout:.0f} s", wall_s=time.time() - t0)
    lines = [ln for ln in p.stdout.splitlines() if ln.startswith("RESULT ")]
    if p.returncode != 0 or not lines:
        return dict(error=f"exit {p.returncode}: {p.stderr[-2000:]}", wall_s=time.time() - t0)
    out = json.loads(lines[-1][7:])
    out["wall_s"] = round(time.time() - t0, 2)
    return out


def _median(runs, f):
    vals = [f(r) for r in runs]
    return statistics.median(vals) if vals else None


def summarize(runs: list, geom: dict) -> tuple[dict, dict]:
    """Per clip and config: medians over repetitions; then the derived ratios."""
    ok = [r for r in runs if "error" not in r and not r.get("skipped") and not r.get("excluded")]
    med = {}
    for r in ok:
        med.setdefault(r["clip"], {}).setdefault(r["config"], []).append(r)
    table = {}
    for clip, by_cfg in med.items():
        table[clip] = {}
        for cfg, rs in by_cfg.items():
            row = dict(n=len(rs), reps=sorted({str(r["rep"]) for r in rs}), prompt_tokens=rs[0]["prompt_tokens"], media_tokens=rs[0]["media_tokens"],
                       video_tokens=rs[0]["video_tokens"], audio_tokens=rs[0]["audio_tokens"],
                       ttft_ms=_median(rs, lambda r: r["ttft_ms"]),
                       peak_rss_bytes=_median(rs, lambda r: r["peak_rss_bytes"]),
                       rss_loaded_bytes=_median(rs, lambda r: r["rss_loaded_bytes"]),
                       request_rss_growth_bytes=_median(rs, lambda r: r["peak_rss_bytes"] - r["rss_loaded_bytes"]),
                       kv_bytes=kv_bytes(rs[0]["prompt_tokens"], geom),
                       kv_alloc_bytes=kv_bytes(rs[0]["n_ctx"], geom))
            for k in ("media_decode", "encode", "compress", "prefill", "first_token"):
                row[k + "_ms"] = _median(rs, lambda r: r["timings_ms"][k])
            row["other_ms"] = row["ttft_ms"] - sum(row[k + "_ms"] for k in
                                                   ("media_decode", "encode", "compress", "prefill", "first_token"))
            row["prefill_tok_s"] = row["prompt_tokens"] / (row["prefill_ms"] / 1e3)
            row["encode_share_of_ttft"] = row["encode_ms"] / row["ttft_ms"]
            row["ttft_spread_ms"] = [min(r["ttft_ms"] for r in rs), max(r["ttft_ms"] for r in rs)]
            table[clip][cfg] = row
    summary = {}
    for clip, rows in table.items():
        A, B = rows.get("A"), rows.get("B")
        summary[clip] = {}
        for cfg, row in rows.items():
            key = {"B": "100"}.get(cfg, cfg)
            if cfg == "A":
                continue
            s = dict(config=cfg, prompt_tokens=row["prompt_tokens"], media_tokens=row["media_tokens"],
                     compress_share_of_ttft=row["compress_ms"] / row["ttft_ms"],
                     encode_share_of_ttft=row["encode_share_of_ttft"],
                     peak_rss_bytes=row["peak_rss_bytes"], request_rss_growth_bytes=row["request_rss_growth_bytes"],
                     kv_bytes=row["kv_bytes"], kv_alloc_bytes=row["kv_alloc_bytes"])
            if B:
                s["token_reduction_vs_B"] = B["prompt_tokens"] / row["prompt_tokens"]
                s["prefill_speedup_vs_B"] = B["prefill_ms"] / row["prefill_ms"]
                s["prefill_efficiency"] = s["prefill_speedup_vs_B"] / s["token_reduction_vs_B"]
                s["ttft_speedup_vs_B"] = B["ttft_ms"] / row["ttft_ms"]
            if A:
                s["ttft_speedup_vs_A"] = A["ttft_ms"] / row["ttft_ms"]
                s["prefill_speedup_vs_A"] = A["prefill_ms"] / row["prefill_ms"]
                s["token_reduction_vs_A"] = A["prompt_tokens"] / row["prompt_tokens"]
                s["kv_bytes_ratio_vs_A"] = row["kv_bytes"] / A["kv_bytes"]
                s["peak_rss_ratio_vs_A"] = row["peak_rss_bytes"] / A["peak_rss_bytes"]
            summary[clip][key] = s
    return table, summary


def evaluate_targets(table: dict, summary: dict, clip: str = "60s", cfg: str = "25") -> list:
    """The issue's targets (2-core CPU, bench model, 25% retention, 60-s clip; memory on 30/60/120 s)."""
    out = []
    s = summary.get(clip, {}).get(cfg, {})

    def add(name, key, op, threshold):
        v = s.get(key)
        out.append(dict(target=name, key=key, clip=clip, config=cfg, value=v, threshold=threshold,
                        met=None if v is None else (v >= threshold if op == ">=" else v <= threshold)))

    add("LLM prefill >= 3.5x faster than B", "prefill_speedup_vs_B", ">=", 3.5)
    add("prefill efficiency >= 0.9", "prefill_efficiency", ">=", 0.9)
    add("TTFT >= 2.5x faster than A", "ttft_speedup_vs_A", ">=", 2.5)
    add("compression < 1% of TTFT", "compress_share_of_ttft", "<=", 0.01)
    add("prompt KV bytes <= 30% of A's", "kv_bytes_ratio_vs_A", "<=", 0.30)
    # Streaming: what the process holds beyond the KV cache must not grow with the clip's length.
    # excess = peak RSS - KV-cache allocation (n_ctx is sized per clip); compared 30 s -> 120 s.
    for c in ("25", "B"):
        ex = {k: table[k][c]["peak_rss_bytes"] - table[k][c]["kv_alloc_bytes"]
              for k in ("30s", "60s", "120s") if k in table and c in table[k]}
        growth = ex["120s"] - ex["30s"] if "120s" in ex and "30s" in ex else None
        out.append(dict(target="peak RSS beyond the KV cache flat from 30 s to 120 s (growth <= 5%)",
                        config=c, value=growth, excess_bytes=ex,
                        request_growth_bytes={k: table[k][c]["request_rss_growth_bytes"]
                                              for k in ("30s", "60s", "120s") if k in table and c in table[k]},
                        threshold=None if "30s" not in ex else 0.05 * ex["30s"],
                        met=None if growth is None else growth <= 0.05 * ex["30s"]))
    return out


def _mb(b):
    return b / 2**20


def write_markdown(path: Path, table: dict, summary: dict, meta: dict) -> None:
    lines = [f"# pyomnisift benchmark ({meta['date']})", "",
             *([meta["note"], ""] if meta.get("note") else []),
             f"{meta['machine']}; n_threads={N_THREADS}; model: {meta['model']}; "
             f"audio tower: {meta['audio_weights']}. Medians of {meta['reps']} repetition(s), each run in a "
             "fresh process. Times in seconds; TTFT = media decoding + encoding + compression + LLM prefill + "
             "first token + other. Peak RSS of the whole process (model weights mmapped, KV cache of n_ctx "
             "allocated and cleared at load); in parentheses what the request adds above the loaded state. "
             "KV MiB = the prompt's share of the KV cache.", "",
             "| clip | config | prompt tokens (media) | TTFT s | decode s | encode s | compress s | prefill s "
             "| prefill tok/s | peak RSS MiB (request) | KV MiB | TTFT vs A | TTFT vs B | prefill vs B | prefill eff. "
             "| KV vs A |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for clip, rows in table.items():
        for cfg in CONFIGS_ALL:
            if cfg not in rows:
                continue
            r = rows[cfg]
            s = summary.get(clip, {}).get({"B": "100"}.get(cfg, cfg), {})

            def x(key, fmt="{:.2f}x"):
                return fmt.format(s[key]) if key in s else "-"

            lines.append(
                f"| {clip} | {cfg} | {r['prompt_tokens']} ({r['media_tokens']}) | {r['ttft_ms'] / 1e3:.2f} "
                f"| {r['media_decode_ms'] / 1e3:.2f} | {r['encode_ms'] / 1e3:.2f} | {r['compress_ms'] / 1e3:.3f} "
                f"| {r['prefill_ms'] / 1e3:.2f} | {r['prefill_tok_s']:.0f} | {_mb(r['peak_rss_bytes']):.0f} ({_mb(r['request_rss_growth_bytes']):.0f}) "
                f"| {_mb(r['kv_bytes']):.1f} | {x('ttft_speedup_vs_A')} | {x('ttft_speedup_vs_B')} "
                f"| {x('prefill_speedup_vs_B')} | {x('prefill_efficiency', '{:.2f}')} "
                f"| {x('kv_bytes_ratio_vs_A', '{:.0%}')} |")
    lines += ["", "Configs: " + "; ".join(f"{k} = {v}" for k, v in LABELS.items()) + ".", "",
              "| target (60-s clip, 25%) | measured | met |", "|---|---|---|"]
    for t in evaluate_targets(table, summary):
        v = t["value"]
        if v is None:
            shown = "not measured"
        elif "RSS" in t["target"]:
            shown = f"{t['config']}: {v / 2**20:+.0f} MB (" + ", ".join(
                f"{k} {e / 2**20:.0f}" for k, e in t["excess_bytes"].items()) + " MB beyond KV)"
        elif t.get("key") in ("compress_share_of_ttft", "kv_bytes_ratio_vs_A"):
            shown = f"{v:.2%}"
        else:
            shown = f"{v:.2f}"
        lines.append(f"| {t['target']} | {shown} | {'-' if t['met'] is None else ('yes' if t['met'] else 'NO')} |")
    lines.append("")
    path.write_text("\n".join(lines))


def write_plot(path: Path, table: dict, plans: dict) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4.2))
    colors = {"A": "tab:red", "B": "tab:gray", "35": "tab:blue", "25": "tab:green", "25_random": "tab:olive"}
    built = [c for c in ("30s", "60s", "120s") if c in table]
    native = [c for c in ("bbb", "10s") if c in table]
    for cfg in CONFIGS:
        for ax, key, scale in ((ax1, "ttft_ms", 1e-3), (ax2, "peak_rss_bytes", 2**-20)):
            xs = [plans[c]["duration_s"] for c in built if cfg in table[c]]
            ys = [table[c][cfg][key] * scale for c in built if cfg in table[c]]
            if xs:
                ax.plot(xs, ys, "o-", color=colors[cfg], label=LABELS[cfg])
            xs = [plans[c]["duration_s"] for c in native if cfg in table[c]]
            ys = [table[c][cfg][key] * scale for c in native if cfg in table[c]]
            if xs:
                ax.plot(xs, ys, "s", mfc="none", color=colors[cfg])
    ax1.set(xlabel="clip length (s)", ylabel="time to first token (s)", title="TTFT (2 CPU threads)")
    ax2.set(xlabel="clip length (s)", ylabel="peak RSS (MiB)", title="peak memory of the process")
    for ax in (ax1, ax2):
        ax.grid(alpha=0.3)
    ax1.legend(fontsize=7)
    fig.text(0.5, 0.005, "lines: built clips 448x252 (30/60/120 s); hollow squares: native test-3 (10 s, "
             "728x364) and Big Buck Bunny (5.3 s, 1008x560)", ha="center", fontsize=7)
    fig.tight_layout(rect=(0, 0.03, 1, 1))
    fig.savefig(path, dpi=110)
    plt.close(fig)


def rewrite(out_dir: Path, extra: list) -> int:
    data = json.loads((out_dir / "results.json").read_text())
    for path in extra:
        more = json.loads(path.read_text())
        data["runs"] += [dict(r, added_from=str(path)) for r in more["runs"]]
        data["clips"].update({c: v for c, v in more["clips"].items() if c not in data["clips"]})
    geom = data["meta"]["kv_geometry"]
    table, summary = summarize(data["runs"], geom)
    data.update(table=table, summary=summary, targets=evaluate_targets(table, summary))
    (out_dir / "results.json").write_text(json.dumps(data, indent=1))
    write_markdown(out_dir / "results.md", table, summary, data["meta"])
    write_plot(out_dir / "plot.png", table, data["clips"])
    print((out_dir / "results.md").read_text())
    return 0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--child", help=argparse.SUPPRESS)
    ap.add_argument("--clips", nargs="+", default=["60s", "120s", "30s", "10s", "bbb"])
    ap.add_argument("--configs", nargs="+", default=list(CONFIGS), choices=list(CONFIGS))
    ap.add_argument("--reps", type=int, default=2)
    ap.add_argument("--no-a", nargs="*", default=[], metavar="CLIP", help="clips to measure without baseline A")
    ap.add_argument("--extra", nargs="*", metavar="CLIP:CFG,CFG",
                    default=[],
                    help="fix prototypes to measure after the main configurations, per clip")
    ap.add_argument("--deadline", help="HH:MM local time: no run starts that would not end by then")
    ap.add_argument("--max-run-s", type=float, default=480, help="a run longer than this is stopped and recorded")
    ap.add_argument("--out", default=str(HERE))
    ap.add_argument("--rewrite", action="store_true",
                    help="no measurement: re-summarise OUT/results.json (runs marked 'excluded' are kept but "
                         "left out of the medians), adding the runs of --add, and rewrite the md and plot")
    ap.add_argument("--add", nargs="*", default=[], help="results.json files whose runs --rewrite adds")
    args = ap.parse_args(argv)
    if args.child:
        return child_main(json.loads(args.child))
    if args.rewrite:
        return rewrite(Path(args.out), [Path(a) for a in args.add])

    from bench_inputs import prepare_all   # model pair + clips, built once into the cache (tools/)

    assets = prepare_all()
    clips = assets["clips"]
    llm, mmproj = str(assets["llm"]), str(assets["mmproj"])
    geom = _kv_geometry(llm)
    deadline = None
    if args.deadline:
        hh, mm = map(int, args.deadline.split(":"))
        deadline = dt.datetime.now().replace(hour=hh, minute=mm, second=0, microsecond=0).timestamp()
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    import llama_cpp

    meta = dict(date=dt.datetime.now().isoformat(timespec="seconds"),
                machine=f"{platform.machine()}, {os.cpu_count()} CPUs ({platform.processor() or 'cpu'}), "
                        f"Linux {platform.release()}",
                llama_cpp_python=llama_cpp.__version__, n_threads=N_THREADS, n_batch=N_BATCH, flash_attn=True,
                reps=args.reps, model="Qwen2.5-Coder-0.5B-Instruct Q4_K_M relabelled qwen2vl (M-RoPE 8/12/12/0)",
                mmproj="qwen2.5o: random Qwen2.5-VL-geometry vision tower (384 wide, 6 layers) + audio tower",
                audio_weights=assets["audio_weights"], kv_geometry=geom, question=QUESTION,
                configs={k: v for k, v in CONFIGS_ALL.items()}, clips_no_a=args.no_a,
                order_note="rep 0 in the order given; later reps keep the first clip first, then cheapest first")
    plans = {c: plan_clip(clips[c]) for c in args.clips}
    extra = {}
    for item in args.extra:
        c, _, names = item.partition(":")
        extra[c] = [n for n in names.split(",") if n]
        unknown = set(extra[c]) - set(EXTRA_CONFIGS)
        if unknown:
            ap.error(f"unknown prototype(s) {sorted(unknown)}")
    runs: list = []
    est: dict = {}

    def save():
        table, summary = summarize(runs, geom)
        (out_dir / "results.json").write_text(json.dumps(
            dict(meta=meta, clips={c: dict(plans[c], path=str(clips[c])) for c in plans}, runs=runs,
                 table=table, summary=summary, targets=evaluate_targets(table, summary)), indent=1))
        return table, summary

    for rep in range(args.reps):
        order = list(args.clips)
        if rep > 0:   # the first clip stays first (the targets' clip); the rest cheapest first
            cost = {c: sum(r.get("wall_s", 0) for r in runs if r["clip"] == c and r["rep"] == 0) for c in order}
            order = order[:1] + sorted(order[1:], key=lambda c: cost[c])
        for clip in order:
            cfgs = list(args.configs) + extra.get(clip, [])
            for cfg in cfgs:
                if cfg == "A" and clip in args.no_a:
                    continue
                spec = dict(config=cfg, clip=str(clips[clip]), llm=llm, mmproj=mmproj, n_ctx=plans[clip]["n_ctx"])
                record = dict(clip=clip, config=cfg, rep=rep, n_ctx=plans[clip]["n_ctx"])
                if deadline is not None:
                    left = deadline - time.time()
                    guess = est.get((clip, cfg))
                    if guess is None:   # scale a run of this config on another clip by prompt size
                        other = [(c, w) for (c, k), w in est.items() if k == cfg]
                        guess = max((w * (plans[clip]["n_ctx"] / plans[c]["n_ctx"]) ** 1.3 for c, w in other),
                                    default=0)
                    if left < guess * 1.1 + 5:
                        record.update(skipped=True, reason=f"deadline: {left:.0f} s left, run takes ~{guess:.0f} s")
                        runs.append(record)
                        print(f"[{time.strftime('%H:%M:%S')}] skip {clip} {cfg} rep {rep}: {record['reason']}",
                              flush=True)
                        save()
                        continue
                    timeout = max(min(left, args.max_run_s), 1)
                else:
                    timeout = args.max_run_s
                print(f"[{time.strftime('%H:%M:%S')}] {clip} {cfg} rep {rep} (n_ctx {plans[clip]['n_ctx']})",
                      flush=True)
                record.update(run_child(spec, timeout))
                runs.append(record)
                if "error" in record:
                    print("   ERROR", record["error"][-800:], flush=True)
                else:
                    est[(clip, cfg)] = record["wall_s"]
                    t = record["timings_ms"]
                    print(f"   tokens {record['prompt_tokens']} (media {record['media_tokens']}) "
                          f"ttft {record['ttft_ms'] / 1e3:.2f}s = decode {t['media_decode'] / 1e3:.2f} + encode "
                          f"{t['encode'] / 1e3:.2f} + compress {t['compress'] / 1e3:.3f} + prefill "
                          f"{t['prefill'] / 1e3:.2f} + first {t['first_token']:.1f}ms; peak RSS "
                          f"{_mb(record['peak_rss_bytes']):.0f} MB; wall {record['wall_s']:.0f}s", flush=True)
                table, summary = save()
                write_markdown(out_dir / "results.md", table, summary, meta)
            try:   # after each clip: a run cut short by the deadline still leaves a plot
                write_plot(out_dir / "plot.png", table, plans)
            except Exception as e:  # noqa: BLE001
                print(f"no plot yet ({e})", file=sys.stderr)
    table, summary = save()
    write_markdown(out_dir / "results.md", table, summary, meta)
    try:
        write_plot(out_dir / "plot.png", table, plans)
    except ImportError as e:
        print(f"no plot ({e}): pip install matplotlib", file=sys.stderr)
    print((out_dir / "results.md").read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
