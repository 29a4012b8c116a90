"""Fuzz pyomnisift.sift / n_kept: shapes, lengths, modality codes, positions (int32 extremes),
retentions (NaN, inf, out of range), selectors, embeddings with NaN / inf / huge values.

Besides "result or documented exception", when sift accepts an input n_kept must agree with it
(the README promises n_kept == keep.sum())."""

from __future__ import annotations

import atheris
import numpy as np

from _common import expect, main

import pyomnisift

SELECTORS = ["anchor", "none", "random", "vgas", "best", ""]
SPECIAL = [np.nan, np.inf, -np.inf, 3e38, -3e38, 1e-45, 0.0, 1e30]


def _positions(fdp, n, mode):
    if mode == 0:      # arbitrary int32, extremes included
        return np.resize(np.array(fdp.ConsumeIntListInRange(24, -2**31, 2**31 - 1) or [0], np.int64), (3, n))
    if mode == 1:      # out of int32
        return np.resize(np.array(fdp.ConsumeIntListInRange(8, -2**40, 2**40) or [0], np.int64), (3, n))
    if mode == 2:      # a wrong shape
        return np.zeros((3, max(0, n - 1)) if fdp.ConsumeBool() else (n, 3), np.int32)
    # like real layouts: t non-decreasing in small steps, h and w a small grid, some jumps back
    steps = np.resize(np.array(fdp.ConsumeIntListInRange(32, -1, 3) or [1], np.int64), n)
    t = np.cumsum(steps) if mode == 3 else np.maximum.accumulate(np.cumsum(steps))
    side = fdp.ConsumeIntInRange(1, 6)
    return np.stack([t, np.arange(n) // side % side, np.arange(n) % side])


def _retention(fdp):
    pick = fdp.ConsumeIntInRange(0, 9)
    if pick == 0:
        return fdp.PickValueInList([np.nan, np.inf, -0.1, 1.0000001, 2**70, True, "0.5", None, np.float32(0.3)])
    return fdp.ConsumeIntInRange(0, 100) / 100


def test_one(data: bytes) -> None:
    fdp = atheris.FuzzedDataProvider(data)
    # Structure first (a few bytes), values last: a short input is still a well-formed call.
    n, d = fdp.ConsumeIntInRange(0, 300), fdp.ConsumeIntInRange(1, 24)
    emb_kind, mod_kind, pos_kind = fdp.ConsumeIntInRange(0, 15), fdp.ConsumeIntInRange(0, 7), fdp.ConsumeIntInRange(0, 7)
    kw = dict(video_retention=_retention(fdp), audio_retention=_retention(fdp), image_retention=_retention(fdp),
              audio_selector=fdp.PickValueInList(SELECTORS[:3] * 3 + SELECTORS[3:]))
    seed = fdp.PickValueInList([0, 1, 7, 2**64 - 1] * 3 + [-1, 2**64, 1.5])
    n_special = fdp.ConsumeIntInRange(0, 3) if emb_kind == 1 else 0
    specials = [(fdp.ConsumeIntInRange(0, max(0, n * d - 1)), fdp.PickValueInList(SPECIAL)) for _ in range(n_special)]
    if mod_kind == 0:
        codes = fdp.ConsumeIntListInRange(16, -1, 4)
    elif mod_kind <= 3:          # runs of one modality, as real sequences have
        codes = sum(([c] * fdp.ConsumeIntInRange(1, 60) for c in fdp.ConsumeIntListInRange(8, 0, 3)), [])
    else:
        codes = fdp.ConsumeIntListInRange(16, 0, 3)
    mod = np.resize(np.array(codes or [1], np.int64), n)
    if mod_kind == 1:
        mod = mod[:max(0, n - 1)]
    pos = _positions(fdp, n, min(pos_kind, 4))
    emb = np.resize(np.array(fdp.ConsumeFloatListInRange(64, -4.0, 4.0) or [0.5], np.float32), (n, d))
    for i, v in specials:
        if emb.size:
            emb.flat[i] = v
    if emb_kind == 2:
        emb = emb.reshape(-1)                                  # 1-D
    elif emb_kind == 3:
        emb = emb.astype(np.float64) * 1e300                  # overflows float32
    elif emb_kind == 4:
        emb = emb.astype(fdp.PickValueInList([np.int8, np.float16, np.complex64, bool, object]))
    elif emb_kind == 5:
        emb = emb[:, :0]
    keep = expect(pyomnisift.sift, emb, mod, pos, seed=seed, **kw)
    count = expect(pyomnisift.n_kept, mod, pos, **kw)
    if keep is not None and kw["audio_selector"] in ("anchor", "none", "random"):
        assert count == int(keep.sum()), (count, int(keep.sum()))


if __name__ == "__main__":
    main(test_one, seeds=[b"", bytes(range(256)), b"\x40" * 512, b"\x01\x02" * 700])
