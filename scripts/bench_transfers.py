#!/usr/bin/env python3
"""Host <-> device bytes and host copies per compression unit (what libomnisift moves, not llama.cpp).

A unit is what the context hands omnisift_context_add: two frame grids of GRID tokens and 50 audio
tokens (2 s of video with sound) at Qwen2.5-Omni-7B's width (D = 3584), sifted at the paper's 35%
setting (anchor selector). Part 1 sifts units one by one on the engine's device and prints its
counters per unit (omnisift_engine_stats); part 2 queues sifted units through omnisift_context into
the tiny test LLM (its own width) and prints the prefill's host copies per kept row. "previous" is
the rule of the code before issue 18 (every graph input staged on the host, then uploaded: the first
grid twice, anchors and audio padded per graph; kept rows copied into the queue, then into each
batch), computed from the same shapes; "now" is measured.

    python scripts/bench_transfers.py [--grid 400] [--units 8] [--rpc HOST:PORT]

--rpc uses a ggml RPC server as the device (scripts/with_rpc_server.py starts one; needs the
-DGGML_RPC=on build of `make test-device`, i.e. .venv-rpc/bin/python). Counters, not timings: the
same on any device except that a CPU device reads rows in place (0 bytes uploaded).
"""

from __future__ import annotations

import argparse
import statistics

import numpy as np

import pyomnisift
from pyomnisift import omnisift_cpp as C

from bench_sift import AUDIO_PER_CHUNK, D, make_input

VIDEO_RETENTION, AUDIO_RETENTION = 0.33, 0.6
F = 4   # bytes per float


def kept(n: int, r: float) -> int:
    return n - int(n * (1 - r) + 1e-9)


def previous_sift_bytes(grid: int) -> dict:
    """Bytes the previous code staged on the host and uploaded per unit: spatial F1, temporal (F1, F2),
    then audio and anchors (padded to the group's largest chunk: here all chunks are equal)."""
    anchors = 2 * kept(grid, VIDEO_RETENTION)
    rows = grid + 2 * grid + AUDIO_PER_CHUNK + anchors
    masks = anchors * AUDIO_PER_CHUNK * F + anchors * F
    return {"host_copied": rows * D * F, "to_device": rows * D * F + masks}


def part1(engine, grid: int, n_units: int) -> None:
    rng = np.random.default_rng(0)
    emb, mod, pos, n_chunks = make_input(rng, 2 * n_units, grid)
    per = 2 * grid + AUDIO_PER_CHUNK
    rows = []
    for u in range(n_chunks):
        sl = slice(u * per, (u + 1) * per)
        engine.reset_stats()
        pyomnisift.sift(emb[sl], mod[sl], pos[:, sl], video_retention=VIDEO_RETENTION,
                        audio_retention=AUDIO_RETENTION, audio_selector="anchor", engine=engine)
        rows.append(engine.stats())
    med = {k: statistics.median(r[k] for r in rows) for k in rows[0]}
    prev = previous_sift_bytes(grid)
    unit_mb = per * D * F / 1e6
    print(f"\n1) sift per unit on {engine.device}: {per} rows x D={D} ({unit_mb:.1f} MB of rows), "
          f"median of n = {len(rows)} units")
    print(f"{'':34} {'previous':>12} {'now':>12} {'now/previous':>13}")
    for label, p, n in (("host copies (MB)", prev["host_copied"], med["bytes_host_copied"]),
                        ("host -> device (MB)", prev["to_device"], med["bytes_to_device"])):
        ratio = f"{n / p:.3f}" if p else "-"
        print(f"{label:34} {p / 1e6:12.2f} {n / 1e6:12.2f} {ratio:>13}")
    print(f"{'device -> host (KB)':34} {'':>12} {med['bytes_from_device'] / 1e3:12.1f}")
    now = f"{med['n_graphs']:.0f} / {med['n_splits']:.0f} / {med['n_nodes_off_device']:.0f}"
    print(f"{'graphs / splits / nodes off device':34} {'2 / - / -':>12} {now:>12}")


def part2(engine, grid: int, n_units: int) -> None:
    import ctypes

    import llama_cpp

    from pyomnisift import assets, omnisift_cpp as C, tiny_model
    from pyomnisift._context import sift_params
    from pyomnisift._settings import Settings

    out = assets.default_cache_dir() / "tiny-model-0"
    llm_path = out / tiny_model.LLM_FILE
    if not llm_path.is_file():
        tiny_model.make_tiny_model(out, 0, assets.ensure_assets()["ggml-vocab-qwen2.gguf"])
    gpu = engine.device != "CPU"
    llm = llama_cpp.Llama(str(llm_path), n_ctx=8192, n_batch=1024, n_ubatch=1024, verbose=False,
                          n_gpu_layers=-1 if gpu else 0)
    d = llama_cpp.llama_model_n_embd_inp(llm.model)
    rng = np.random.default_rng(1)
    emb, mod, pos, n_chunks = make_input(rng, 2 * n_units, grid)
    emb = np.ascontiguousarray(emb[:, :d])
    per = 2 * grid + AUDIO_PER_CHUNK
    params = sift_params(Settings(VIDEO_RETENTION, AUDIO_RETENTION, 1.0, "anchor", 0, 2.0, False))
    # the compression context fed each unit's rows (as omnisift_context_add takes them when given)
    oc = C.check_ptr(C.omnisift_context_init(llm.ctx, None, engine.ptr, None, C.omnisift_context_default_params()),
                     "context")
    try:
        C.check(C.omnisift_context_begin(oc, ctypes.byref(params)))
        n_kept = 0
        for u in range(n_chunks):
            sl = slice(u * per, (u + 1) * per)
            rows = np.ascontiguousarray(emb[sl], dtype=np.float32)
            m = np.ascontiguousarray(mod[sl], dtype=np.int32)
            p = np.ascontiguousarray(pos[:, sl], dtype=np.int32)
            src = np.zeros(len(m), np.int32)
            unit = C.omnisift_unit(n_rows=len(m), modality=m.ctypes.data, source=src.ctypes.data, pos=p.ctypes.data,
                                   renumber_from=-1, embd=rows.ctypes.data)
            keep = np.ones(len(m), np.uint8)
            C.check(C.omnisift_context_add(oc, ctypes.byref(unit), keep.ctypes.data))
            n_kept += int(keep.sum())
        C.check(C.omnisift_context_end(oc, 0))
        s = C.omnisift_context_get_stats(oc)
        st = {k: getattr(s, k) for k, _ in C.omnisift_context_stats._fields_}
    finally:
        C.omnisift_context_free(oc)
    llm.close()
    row = d * F
    print(f"\n2) prefill queue into the tiny LLM (width {d}, {'offloaded' if gpu else 'CPU'}): "
          f"{n_chunks} units, {n_kept} kept rows, {st['n_decode_calls']} llama_decode calls")
    print(f"{'':34} {'previous':>12} {'now':>12} {'now/previous':>13}")
    prev = 2 * n_kept * row
    print(f"{'host copies per kept row (rows)':34} {2.0:12.2f} {st['bytes_host_copied'] / (n_kept * row):12.2f} "
          f"{st['bytes_host_copied'] / prev:13.3f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--grid", type=int, default=400, help="tokens per frame grid (default 400)")
    ap.add_argument("--units", type=int, default=8, help="units measured (default 8)")
    ap.add_argument("--rpc", help="a ggml RPC server HOST:PORT to use as the device")
    args = ap.parse_args()
    if args.rpc:
        pyomnisift.add_rpc_servers(args.rpc)
    engine = pyomnisift.Engine(n_threads=2)
    part1(engine, args.grid, args.units)
    part2(engine, args.grid, args.units)


if __name__ == "__main__":
    main()
