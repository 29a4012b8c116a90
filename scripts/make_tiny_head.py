"""A small VGAS head GGUF with random weights, written by pyomnisift.convert_head (development only:
the fuzz harness seeds the head loader with it; the bad-input suite uses one of the wrong width)."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def write_tiny_head(out: Path, n_embd: int = 8, hidden: int = 16, score: int = 4, n_head: int = 2,
                    seed: int = 0) -> Path:
    from safetensors.numpy import save_file

    from pyomnisift import convert_head

    out = Path(out)
    rng = np.random.default_rng(seed)
    shapes = {"v_proj.weight": (hidden, n_embd), "a_proj.weight": (hidden, n_embd),
              "cross_attn.in_proj_weight": (3 * hidden, hidden), "cross_attn.in_proj_bias": (3 * hidden,),
              "cross_attn.out_proj.weight": (hidden, hidden), "score_head.0.weight": (score, hidden),
              "score_head.0.bias": (score,), "score_head.2.weight": (1, score), "score_head.2.bias": (1,)}
    tensors = {convert_head.PREFIX + n: rng.standard_normal(shapes.get(n, (hidden,))).astype(np.float32)
               for n in convert_head.NAMES}
    ckpt = out.with_suffix(".safetensors")
    save_file(tensors, str(ckpt))
    convert_head.convert(ckpt, out, n_head=n_head)
    ckpt.unlink()
    return out
