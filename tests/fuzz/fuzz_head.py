"""Fuzz the VGAS head loader (omnisift_head_load via pyomnisift.SiftHead) with mutated GGUF bytes,
starting from a small head written by pyomnisift.convert_head; a head that loads is then used by
sift(audio_selector="vgas") on a small omni sequence of its width."""

from __future__ import annotations

import os
import tempfile

import numpy as np

from _common import cache_dir, expect, main

import pyomnisift
from make_tiny_head import write_tiny_head

D, HIDDEN, SCORE = 8, 16, 4
PATH = os.path.join(tempfile.mkdtemp(prefix="fuzz-head-"), "head.gguf")


def seed_head(n_head: int = 2) -> bytes:
    """A valid head GGUF (random weights) of width D, via convert_head."""
    return write_tiny_head(cache_dir() / f"head-{n_head}.gguf", D, HIDDEN, SCORE, n_head).read_bytes()


def _omni(d):
    rng = np.random.default_rng(1)
    mod = np.array([1] * 8 + [2] * 10 + [1] * 8 + [2] * 10)
    t = np.array([0] * 8 + list(range(10)) + [10] * 8 + list(range(10, 20)))
    pos = np.stack([t, np.arange(36) % 2, np.arange(36) // 2 % 4])
    return rng.standard_normal((36, d)).astype(np.float32), mod, pos


SEED = None


def _patched(data: bytes) -> bytes:
    """The valid head with 4-byte values written at offsets in its header (dims, counts, types,
    tensor offsets): what random byte flips rarely hit on their own."""
    global SEED
    SEED = SEED or seed_head(2)
    out = bytearray(SEED)
    for k in range(1, len(data) - 5, 6):
        at = int.from_bytes(data[k:k + 2], "little") % 1200
        out[at:at + 4] = data[k + 2:k + 6]
    return bytes(out)


def test_one(data: bytes) -> None:
    if data[:1] == b"P":          # structured: patch the valid head
        data = _patched(data)
    with open(PATH, "wb") as f:
        f.write(data)
    head = expect(pyomnisift.SiftHead, PATH)
    if head is None:
        return
    with head:
        if 1 <= head.n_embd <= 4096:
            expect(pyomnisift.sift, *_omni(head.n_embd), video_retention=0.5, audio_retention=0.5,
                   audio_selector="vgas", sift_head=head)


if __name__ == "__main__":
    main(test_one, seeds=lambda: [seed_head(2), seed_head(8), b"P" + bytes(range(60))])
