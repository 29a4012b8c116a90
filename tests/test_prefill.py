"""The prefill queue (C: omnisift_prefill_*): each unit sifted and its kept rows queued in one call,
the kept rows of several units decoded per llama_decode. Checked against llama.cpp decoding the same
rows in one omnisift_decode_embd call, and against the pipeline decoding every unit on its own."""

from __future__ import annotations

import ctypes

import numpy as np
import pytest

from pyomnisift import omnisift_cpp as C
from pyomnisift._prefill import Prefill, sift_params
from pyomnisift._settings import Settings

from decode_helpers import clear, decode_rows, decode_tokens, logits_of, prefill


def _unit(rng, n_embd, t0, n=30):
    """One video grid of n tokens at t0 (rows of a 5-wide grid), as a unit."""
    rows = rng.standard_normal((n, n_embd)).astype(np.float32)
    h, w = np.divmod(np.arange(n), 5)
    pos = np.stack([np.full(n, t0), 10 + h, 10 + w]).astype(np.int32)
    return rows, np.full(n, C.OMNISIFT_MODALITY_VIDEO, np.int32), pos


def _n_queued(pf) -> int:
    return C.omnisift_prefill_n_queued(pf.ptr)


def _logits_after(tiny_omni, decode):
    clear(tiny_omni)
    decode_tokens(tiny_omni, [tiny_omni.token_bos() if tiny_omni.token_bos() >= 0 else 0], [0])
    decode()
    decode_tokens(tiny_omni, [42], [200], logits_last=True)
    return logits_of(tiny_omni)


def test_queue_keeps_units_whole_and_decodes_what_llama_cpp_decodes(tiny_omni):
    rng = np.random.default_rng(0)
    units = [_unit(rng, tiny_omni.n_embd(), t) for t in (25, 50, 75, 100)]
    counts = []

    def queued():
        with Prefill(tiny_omni.ctx, tiny_omni.chat_handler.engine, None, max_rows=50) as pf:
            for rows, mod, pos in units:
                assert pf.add(rows, mod, pos).all()   # params None: every row kept
                counts.append((_n_queued(pf), pf.stats()["n_flushes"]))
            pf.flush()
            assert _n_queued(pf) == 0

    ours = _logits_after(tiny_omni, queued)
    # 30 rows fit; the next 30 would not fit beside them (max 50): the first unit is decoded alone
    assert counts == [(30, 0), (30, 1), (30, 2), (30, 3)]
    every = (np.concatenate([u[0] for u in units]), np.concatenate([u[2] for u in units], axis=1))
    whole = _logits_after(tiny_omni, lambda: decode_rows(tiny_omni, *every))
    np.testing.assert_allclose(ours, whole, atol=2e-3 * np.ptp(whole))


def test_batches_span_units_and_give_the_per_unit_answer(tiny_omni, assets):
    msgs = [{"role": "user", "content": [{"type": "video_url", "video_url": {"url": str(assets["test-3.mp4"])}},
                                         {"type": "text", "text": "What happens?"}]}]
    pipeline = tiny_omni.chat_handler.pipeline
    try:
        pipeline.batch_rows = 1          # every unit decoded on its own
        clear(tiny_omni)
        alone = prefill(tiny_omni, msgs, video_retention=0.25, audio_retention=0.5)
        logits_alone = logits_of(tiny_omni)
    finally:
        pipeline.batch_rows = 0
    clear(tiny_omni)
    batched = prefill(tiny_omni, msgs, video_retention=0.25, audio_retention=0.5)
    logits = logits_of(tiny_omni)
    a, b = alone["omnisift"], batched["omnisift"]
    n_units = 5                           # 10 s: 10 grids, two per unit
    assert a["media_batches"] >= n_units and b["media_batches"] < n_units
    assert a["video"]["tokens_kept"] == b["video"]["tokens_kept"] and alone["prompt_tokens"] == batched["prompt_tokens"]
    # only how the rows are cut into ubatches differs (llama.cpp's CPU attention rounds by split)
    np.testing.assert_allclose(logits, logits_alone, atol=1e-3 * np.ptp(logits_alone))


def _raw_add(pf, rows, mod, pos, params, keep):
    return C.omnisift_prefill_add(pf._ptr, pf.engine.ptr, rows.ctypes.data, rows.shape[0], rows.shape[1],
                                  mod.ctypes.data, pos.ctypes.data, ctypes.byref(params), -1, keep.ctypes.data)


def test_bad_unit_leaves_queue_and_mask_untouched(tiny_omni):
    rng = np.random.default_rng(1)
    rows, mod, pos = _unit(rng, tiny_omni.n_embd(), 25)
    params = sift_params(Settings(video_retention=0.5, audio_retention=0.5))
    with Prefill(tiny_omni.ctx, tiny_omni.chat_handler.engine, params) as pf:
        assert pf.add(rows, mod, pos).sum() == 15
        bad = rows.copy()
        bad[3, 0] = np.nan
        keep = np.full(len(rows), 7, np.uint8)
        assert _raw_add(pf, bad, mod, pos, params, keep) == C.OMNISIFT_ERR_ARGUMENT
        assert b"finite" in C.omnisift_last_error() or b"NaN" in C.omnisift_last_error()
        assert (keep == 7).all() and _n_queued(pf) == 15
        with pytest.raises(ValueError, match="width"):
            pf.add(rows[:, :-1], mod, pos)
        neg = pos.copy()
        neg[0, 2] = -1
        with pytest.raises(ValueError, match="negative position"):
            pf.add(rows, mod, neg)
        assert _n_queued(pf) == 15
    clear(tiny_omni)


def test_init_refuses_bad_arguments():
    p = C.omnisift_prefill_default_params()
    assert not C.omnisift_prefill_init(None, p)
    assert b"NULL" in C.omnisift_last_error()
