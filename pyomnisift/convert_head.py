"""Converts the learned audio selector (VGAS) of an OmniSIFT checkpoint to the small GGUF that
pyomnisift loads (pyomnisift.SiftHead, omnisift_head_load).

    pyomnisift convert-head INPUT OUTPUT.gguf [--n-head 8]

INPUT: a safetensors file, a PyTorch state dict (.pt / .pth / .bin), or a sharded Hugging Face
checkpoint directory (model.safetensors.index.json or pytorch_model.bin.index.json; only the shards
holding the selector are read). The selector's tensors are taken from under "thinker.compressor."
(as released with OmniSIFT-7B) or, without that prefix, from the top level; they are written as f32
with their dimensions as metadata (see ggml_ext/sift_head.h for the format). The head count is not
in the checkpoint: it is 8 in the paper, --n-head otherwise.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import sys

import numpy as np

PREFIX = "thinker.compressor."
ARCH = "omnisift-head"
NAMES = [
    "v_proj.weight", "v_proj.bias", "a_proj.weight", "a_proj.bias",
    "v_norm.weight", "v_norm.bias", "a_norm.weight", "a_norm.bias",
    "cross_attn.in_proj_weight", "cross_attn.in_proj_bias",
    "cross_attn.out_proj.weight", "cross_attn.out_proj.bias",
    "post_attn_norm.weight", "post_attn_norm.bias",
    "score_head.0.weight", "score_head.0.bias", "score_head.2.weight", "score_head.2.bias",
]
WANTED = {key: name for name in NAMES for key in (PREFIX + name, name)}


class ConversionError(ValueError):
    pass


def _to_numpy(t) -> np.ndarray:
    if isinstance(t, np.ndarray):
        return t.astype(np.float32)
    return t.detach().to("cpu").float().numpy()   # torch tensor, including bf16


def _read_safetensors(path: pathlib.Path, keys=None) -> dict:
    from safetensors import safe_open

    try:
        import torch  # noqa: F401  (bf16 checkpoints cannot be read as numpy)
        framework = "pt"
    except ImportError:
        framework = "numpy"
    out = {}
    with safe_open(str(path), framework=framework) as f:
        for key in f.keys():
            if key in WANTED and (keys is None or key in keys):
                out[key] = _to_numpy(f.get_tensor(key))
    return out


def _read_torch(path: pathlib.Path) -> dict:
    import torch

    obj = torch.load(str(path), map_location="cpu", weights_only=True)
    if isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict):
        raise ConversionError(f"{path}: not a state dict (got {type(obj).__name__})")
    return {k: _to_numpy(v) for k, v in obj.items() if k in WANTED}


def _read_sharded(directory: pathlib.Path) -> dict:
    for index_name in ("model.safetensors.index.json", "pytorch_model.bin.index.json"):
        index = directory / index_name
        if index.is_file():
            break
    else:
        for single in ("model.safetensors", "pytorch_model.bin"):     # an unsharded save_pretrained
            if (directory / single).is_file():
                path = directory / single
                return _read_safetensors(path) if single.endswith(".safetensors") else _read_torch(path)
        raise ConversionError(f"{directory}: no model.safetensors(.index.json) or pytorch_model.bin(.index.json)")
    weight_map = json.loads(index.read_text()).get("weight_map")
    if not isinstance(weight_map, dict):
        raise ConversionError(f"{index}: no weight_map")
    shards = {}
    for key, shard in weight_map.items():
        if key in WANTED:
            shards.setdefault(shard, set()).add(key)
    out = {}
    for shard, keys in sorted(shards.items()):
        path = directory / shard
        if not path.is_file():
            raise ConversionError(f"{index} names the missing shard {shard}")
        part = _read_safetensors(path, keys) if shard.endswith(".safetensors") else \
            {k: v for k, v in _read_torch(path).items() if k in keys}
        out.update(part)
    return out


def read_head(path) -> dict:
    """The selector's tensors of a checkpoint, as float32 arrays keyed by their short names."""
    path = pathlib.Path(path)
    if path.is_dir():
        raw = _read_sharded(path)
    elif not path.is_file():
        raise ConversionError(f"{path}: no such file or directory")
    elif path.suffix == ".safetensors":
        raw = _read_safetensors(path)
    else:
        raw = _read_torch(path)
    out = {}
    for key in sorted(raw, key=lambda k: k.startswith(PREFIX)):   # prefixed last: they win
        out[WANTED[key]] = raw[key]
    missing = [n for n in NAMES if n not in out]
    if missing:
        raise ConversionError(f"{path}: missing selector tensors {', '.join(missing)} "
                              f"(looked under '{PREFIX}' and at the top level)")
    return out


def check_shapes(t: dict, n_head: int) -> dict:
    """The head's dimensions; raises ConversionError naming every tensor of an unexpected shape."""
    if t["v_proj.weight"].ndim != 2 or t["score_head.0.weight"].ndim != 2:
        raise ConversionError("v_proj.weight and score_head.0.weight must be matrices")
    hidden, d = t["v_proj.weight"].shape
    s = t["score_head.0.weight"].shape[0]
    want = {
        "v_proj.weight": (hidden, d), "v_proj.bias": (hidden,), "a_proj.weight": (hidden, d), "a_proj.bias": (hidden,),
        "v_norm.weight": (hidden,), "v_norm.bias": (hidden,), "a_norm.weight": (hidden,), "a_norm.bias": (hidden,),
        "cross_attn.in_proj_weight": (3 * hidden, hidden), "cross_attn.in_proj_bias": (3 * hidden,),
        "cross_attn.out_proj.weight": (hidden, hidden), "cross_attn.out_proj.bias": (hidden,),
        "post_attn_norm.weight": (hidden,), "post_attn_norm.bias": (hidden,),
        "score_head.0.weight": (s, hidden), "score_head.0.bias": (s,),
        "score_head.2.weight": (1, s), "score_head.2.bias": (1,),
    }
    bad = [f"{n} is {tuple(t[n].shape)}, expected {shape}" for n, shape in want.items() if tuple(t[n].shape) != shape]
    if bad:
        raise ConversionError(f"inconsistent selector shapes (D = {d}, hidden = {hidden}): " + "; ".join(bad))
    if n_head < 1 or hidden % n_head:
        raise ConversionError(f"--n-head {n_head} does not divide the hidden width {hidden}")
    nonfinite = [n for n in NAMES if not np.isfinite(t[n]).all()]
    if nonfinite:
        raise ConversionError(f"non-finite values in {', '.join(nonfinite)}")
    return {"n_embd": d, "hidden": hidden, "n_head": n_head, "score_hidden": s}


def convert(input_path, output_path, n_head: int = 8) -> dict:
    """Writes the head GGUF; returns its dimensions."""
    import gguf

    input_path, output_path = pathlib.Path(input_path), pathlib.Path(output_path)
    if output_path.exists() and (output_path.is_dir() or os.path.samefile(input_path, output_path)):
        raise ConversionError(f"refusing to overwrite {output_path}: it is the input or a directory")
    tensors = read_head(input_path)
    dims = check_shapes(tensors, n_head)
    tmp = output_path.with_name(output_path.name + ".partial")
    try:
        writer = gguf.GGUFWriter(str(tmp), ARCH)
        for key, value in dims.items():
            writer.add_uint32(f"omnisift.{key}", value)
        writer.add_string("omnisift.source", input_path.name)
        for name in NAMES:
            writer.add_tensor(name, np.ascontiguousarray(tensors[name], dtype=np.float32))
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
        writer.close()
        os.replace(tmp, output_path)     # no half-written OUTPUT on failure
    finally:
        tmp.unlink(missing_ok=True)
    return dims


def add_arguments(ap: argparse.ArgumentParser) -> None:
    ap.add_argument("input", help="safetensors file, torch state dict, or sharded HF checkpoint directory")
    ap.add_argument("output", help="the head GGUF to write")
    ap.add_argument("--n-head", type=int, default=8, help="attention heads of the selector (8 in OmniSIFT)")


def run(args) -> int:
    try:
        dims = convert(args.input, args.output, args.n_head)
    except ConversionError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(f"wrote {args.output}: " + ", ".join(f"{k} = {v}" for k, v in dims.items()))
    return 0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="pyomnisift convert-head", description=__doc__.split("\n\n")[0])
    add_arguments(ap)
    return run(ap.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
