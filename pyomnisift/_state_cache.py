"""What a cached prompt state is keyed by, so that one is restored only where it is what a fresh
context would have decoded.

A key is the sha256 of the identity of everything that shapes the KV cells (the LLM and mmproj
files, the llama.cpp and libomnisift builds, the KV cache's types and layout, the batch sizes and
devices that decoded it) and of the exact prompt prefix it holds: ``Plan.ids`` up to the end of a
media item, where media are placeholders derived from their content and every setting that changes
their rows (_plan.py). The value is llama.cpp's state of sequence 0 (``llama_state_seq_get_data``),
written and read by the context (_context.py).
"""

from __future__ import annotations

import functools
import hashlib
import os
from typing import Optional

import numpy as np

from .cache import MediaCache

_HEAD_BYTES = 1 << 20     # a model file is known by its size, mtime and the digest of its first MiB


@functools.lru_cache(maxsize=64)
def _file_digest(path: str, size: int, mtime_ns: int, whole: bool) -> bytes:
    h = hashlib.sha256(f"{size}:{mtime_ns}:".encode())
    with open(path, "rb") as f:
        if whole:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
        else:
            h.update(f.read(_HEAD_BYTES))
    return h.digest()


def file_identity(path: Optional[str], whole: bool = False) -> bytes:
    """A file by size + mtime + the digest of its head (its whole content for the shared libraries,
    a few MB, where two builds of one version differ)."""
    if path is None:
        return b"-"
    st = os.stat(path)
    return _file_digest(os.path.realpath(path), st.st_size, st.st_mtime_ns, whole)


def identity(llama, mmproj_path: Optional[str], extra: tuple = ()) -> bytes:
    """Everything besides the prompt that the KV cells of a decoded prompt depend on."""
    import llama_cpp

    from . import __version__, omnisift_cpp

    cp, mp = llama.context_params, llama.model_params
    parts = (
        "pyomnisift", __version__, file_identity(omnisift_cpp._lib._name, whole=True),
        "llama_cpp", llama_cpp.__version__, file_identity(llama_cpp.llama_cpp._lib._name, whole=True),
        llama_cpp.llama_print_system_info(),
        file_identity(llama.model_path), file_identity(mmproj_path),
        # the KV cache's types and layout (flash attention stores V untransposed), batching and devices
        cp.type_k, cp.type_v, getattr(cp, "flash_attn_type", None), getattr(cp, "flash_attn", None),
        getattr(cp, "swa_full", None), cp.n_batch, cp.n_ubatch, mp.n_gpu_layers, mp.split_mode, mp.main_gpu,
    ) + tuple(extra)
    return hashlib.sha256(repr(parts).encode()).digest()


class PrefixStates:
    """A media cache seen through one model's identity: prompt prefixes in, states out."""

    def __init__(self, cache: MediaCache, model_identity: bytes):
        self.cache = cache
        self.model_identity = model_identity

    def key(self, ids) -> bytes:
        h = hashlib.sha256(self.model_identity)
        h.update(np.asarray(ids, dtype=np.int64).tobytes())
        return h.digest()

    def longest(self, plan, after: int) -> Optional[tuple]:
        """(end, key, state) of the longest cached prefix of the plan that ends with a media item past
        position ``after``; None when there is none."""
        for seg in reversed(plan.media):
            if seg.end <= after:
                return None
            key = self.key(plan.ids[:seg.end])
            state = self.cache.get(key)
            if state is not None:
                return seg.end, key, state
        return None
