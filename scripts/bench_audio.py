"""Audio encoding speed: pyomnisift's windowed Qwen2.5-Omni tower against libmtmd's.

libmtmd pads every clip to 30-s windows and runs the tower over 1500 frames per window (750 rows
each); pyomnisift runs the model's own 2-s windows (100 frames, 50 rows each) batched in one
graph. Both read the same mmproj and compute on the same device with the same thread count.

Towers: "tiny" is the converted tiny random Qwen2.5-Omni of make_hf_tiny_omni.py (d_model 64,
2 layers); "whisper-base" is a random tower of Whisper-base size (d_model 512, 6 layers, 8 heads,
FFN 2048) written here with gguf-py in the converter's layout. Timings are the median of --repeat
runs after one warm-up; features (mel) are timed apart from the tower.

Usage: python scripts/bench_audio.py [--seconds 5 30 120] [--threads N] [--repeat 3] 2>/dev/null
(libmtmd logs to stderr; the table goes to stdout)
"""

from __future__ import annotations

import argparse
import ctypes
import statistics
import sys
import time
from pathlib import Path

import numpy as np

from pyomnisift.assets import default_cache_dir
from make_hf_tiny_omni import make_hf_tiny_omni

WHISPER_BASE = dict(n_embd=512, n_layer=6, n_head=8, n_ff=2048)


def write_random_tower(path: Path, n_proj: int, n_embd: int, n_layer: int, n_head: int, n_ff: int,
                       seed: int = 0) -> Path:
    """An audio-only qwen2.5o mmproj with random weights, laid out as the converter writes it."""
    from gguf import GGUFWriter

    rng = np.random.default_rng(seed)
    d, n_mel = n_embd, 128

    def mat(rows, cols):
        return (rng.standard_normal((rows, cols)) / np.sqrt(cols)).astype(np.float32)

    def vec(n, centre=0.0):
        return (centre + 0.1 * rng.standard_normal(n)).astype(np.float32)

    half = d // 2
    inv = np.exp(-np.log(10000.0) / (half - 1) * np.arange(half))
    t = np.arange(1500)[:, None] * inv[None, :]
    tensors = {
        "a.position_embd.weight": np.concatenate([np.sin(t), np.cos(t)], axis=1).astype(np.float32),
        "a.conv1d.1.weight": (rng.standard_normal((d, n_mel, 3)) / np.sqrt(3 * n_mel)).astype(np.float16),
        "a.conv1d.1.bias": vec(d)[:, None],
        "a.conv1d.2.weight": (rng.standard_normal((d, d, 3)) / np.sqrt(3 * d)).astype(np.float16),
        "a.conv1d.2.bias": vec(d)[:, None],
        "a.post_ln.weight": vec(d, 1.0), "a.post_ln.bias": vec(d),
        "mm.a.fc.weight": mat(n_proj, d), "mm.a.fc.bias": vec(n_proj),
    }
    for i in range(n_layer):
        b = f"a.blk.{i}."
        tensors.update({
            b + "ln1.weight": vec(d, 1.0), b + "ln1.bias": vec(d),
            b + "attn_q.weight": mat(d, d), b + "attn_q.bias": vec(d), b + "attn_k.weight": mat(d, d),
            b + "attn_v.weight": mat(d, d), b + "attn_v.bias": vec(d),
            b + "attn_out.weight": mat(d, d), b + "attn_out.bias": vec(d),
            b + "ln2.weight": vec(d, 1.0), b + "ln2.bias": vec(d),
            b + "ffn_up.weight": mat(n_ff, d), b + "ffn_up.bias": vec(n_ff),
            b + "ffn_down.weight": mat(d, n_ff), b + "ffn_down.bias": vec(d),
        })
    writer = GGUFWriter(str(path), "clip")
    writer.add_string("clip.projector_type", "qwen2.5o")
    writer.add_bool("clip.has_vision_encoder", False)
    writer.add_bool("clip.has_audio_encoder", True)
    for key, value in (("embedding_length", d), ("feed_forward_length", n_ff), ("block_count", n_layer),
                       ("attention.head_count", n_head), ("projection_dim", n_proj), ("num_mel_bins", n_mel)):
        writer.add_uint32(f"clip.audio.{key}", value)
    writer.add_float32("clip.audio.attention.layer_norm_epsilon", 1e-5)
    for name, data in tensors.items():
        writer.add_tensor(name, data)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def _median_time(fn, repeat: int):
    fn()  # warm-up: graph allocation, weight upload, first-touch
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), result


class Mtmd:
    """libmtmd's audio path through llama-cpp-python's bindings."""

    def __init__(self, llm: Path, mmproj: Path, n_threads: int):
        import llama_cpp
        from llama_cpp import mtmd_cpp as M

        self.M = M
        mparams = llama_cpp.llama_model_default_params()
        self.model = llama_cpp.llama_model_load_from_file(str(llm).encode(), mparams)
        params = M.mtmd_context_params_default()
        params.n_threads = n_threads
        params.print_timings = False
        params.warmup = False
        self.ctx = M.mtmd_init_from_file(str(mmproj).encode(), self.model, params)
        if not self.ctx:
            raise RuntimeError(f"libmtmd cannot load {mmproj}")

    def chunks(self, pcm: np.ndarray):
        M = self.M
        bitmap = M.mtmd_bitmap_init_from_audio(len(pcm), pcm.ctypes.data_as(ctypes.POINTER(ctypes.c_float)))
        chunks = M.mtmd_input_chunks_init()
        text = M.mtmd_input_text(M.mtmd_default_marker(), len(M.mtmd_default_marker()), False, True)
        bitmaps = (M.mtmd_bitmap_p_ctypes * 1)(bitmap)
        if M.mtmd_tokenize(self.ctx, chunks, ctypes.byref(text), bitmaps, 1) != 0:
            raise RuntimeError("mtmd_tokenize failed")
        M.mtmd_bitmap_free(bitmap)
        audio = [M.mtmd_input_chunks_get(chunks, i) for i in range(M.mtmd_input_chunks_size(chunks))]
        return chunks, [c for c in audio if M.mtmd_input_chunk_get_type(c) == M.MTMD_INPUT_CHUNK_TYPE_AUDIO]

    def encode(self, audio_chunks) -> int:
        n = 0
        for chunk in audio_chunks:
            if self.M.mtmd_encode_chunk(self.ctx, chunk) != 0:
                raise RuntimeError("mtmd_encode_chunk failed")
            n += self.M.mtmd_input_chunk_get_n_tokens(chunk)
        return n

    def close(self):
        import llama_cpp

        self.M.mtmd_free(self.ctx)
        llama_cpp.llama_model_free(self.model)


def bench(name: str, llm: Path, mmproj: Path, seconds: list[float], n_threads: int, repeat: int) -> list[dict]:
    import pyomnisift
    from pyomnisift import _mel

    tower = pyomnisift.AudioTower(mmproj, engine=pyomnisift.Engine(n_threads=n_threads))
    mtmd = Mtmd(llm, mmproj, n_threads)
    rows = []
    for sec in seconds:
        pcm = (0.1 * np.random.default_rng(0).standard_normal(int(sec * 16000))).astype(np.float32)
        t_mel, mel = _median_time(lambda: _mel.log_mel(pcm), repeat)
        t_ours, out = _median_time(lambda: tower.encode_features(mel), repeat)
        t_mtmd_pre, (chunks, audio) = _median_time(lambda: mtmd.chunks(pcm), 1)
        t_mtmd, n_mtmd = _median_time(lambda: mtmd.encode(audio), repeat)
        mtmd.M.mtmd_input_chunks_free(chunks)
        rows.append(dict(tower=name, seconds=sec, ours_tokens=len(out), ours_mel_ms=1e3 * t_mel,
                         ours_tower_ms=1e3 * t_ours, mtmd_tokens=n_mtmd, mtmd_mel_ms=1e3 * t_mtmd_pre,
                         mtmd_tower_ms=1e3 * t_mtmd, device=tower._engine.device))
    mtmd.close()
    tower.close()
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, nargs="+", default=[5, 30, 120])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--towers", nargs="+", default=["tiny", "whisper-base"], choices=["tiny", "whisper-base"])
    args = parser.parse_args(argv)

    tiny = make_hf_tiny_omni()
    mmprojs = {"tiny": tiny["mmproj"]}
    if "whisper-base" in args.towers:
        path = default_cache_dir() / "bench" / "whisper-base-qwen2.5o-mmproj.gguf"
        path.parent.mkdir(parents=True, exist_ok=True)
        # projects to the tiny LLM's width so that libmtmd accepts the pair
        mmprojs["whisper-base"] = write_random_tower(path, n_proj=128, **WHISPER_BASE)

    print("| tower | audio s | ours tokens | ours mel ms | ours tower ms | mtmd tokens | mtmd mel ms "
          "| mtmd tower ms | tower speed-up | device |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for name in args.towers:
        for r in bench(name, tiny["llm"], mmprojs[name], args.seconds, args.threads, args.repeat):
            print(f"| {r['tower']} | {r['seconds']:g} | {r['ours_tokens']} | {r['ours_mel_ms']:.1f} "
                  f"| {r['ours_tower_ms']:.1f} | {r['mtmd_tokens']} | {r['mtmd_mel_ms']:.1f} "
                  f"| {r['mtmd_tower_ms']:.1f} | {r['mtmd_tower_ms'] / r['ours_tower_ms']:.1f}x "
                  f"| {r['device']} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
