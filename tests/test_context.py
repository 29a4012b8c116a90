"""The compression context (C: omnisift_context_*): one call per unit encodes, sifts and queues it,
the kept rows of several units are decoded per llama_decode. Checked against llama.cpp decoding the
same rows in one omnisift_decode_embd call, against the context decoding every unit on its own, and
for how often Python crosses into C per unit."""

from __future__ import annotations

import ctypes

import numpy as np
import pytest

from pyomnisift import _context, omnisift_cpp as C
from pyomnisift._settings import Settings

from decode_helpers import clear, decode_rows, decode_tokens, logits_of, prefill


class _Rows:
    """An omnisift_context fed units whose rows are given (no encoder runs)."""

    def __init__(self, llm, params=None, max_rows: int = 0):
        p = C.omnisift_context_default_params()
        p.max_rows = max_rows
        self.ptr = C.check_ptr(C.omnisift_context_init(llm.ctx, None, llm.chat_handler.engine.ptr, None, p), "context")
        self.params = params
        C.check(C.omnisift_context_begin(self.ptr, ctypes.byref(params) if params is not None else None))

    def add_raw(self, rows, mod, pos, keep, n_embd=None):
        u = C.omnisift_unit()
        u.n_rows = len(rows)
        src = np.zeros(len(rows), np.int32)
        u.modality, u.source, u.pos, u.embd = mod.ctypes.data, src.ctypes.data, pos.ctypes.data, rows.ctypes.data
        u.renumber_from = -1
        return C.omnisift_context_add(self.ptr, ctypes.byref(u), keep.ctypes.data)

    def add(self, rows, mod, pos):
        keep = np.ones(len(rows), np.uint8)
        C.check(self.add_raw(np.ascontiguousarray(rows, np.float32), mod, np.ascontiguousarray(pos, np.int32), keep))
        return keep.view(bool)

    @property
    def n_queued(self):
        return int(C.omnisift_context_n_queued(self.ptr))

    def n_flushes(self):
        return C.omnisift_context_get_stats(self.ptr).n_flushes

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        C.omnisift_context_free(self.ptr)


def _unit(rng, n_embd, t0, n=30):
    """One video grid of n tokens at t0 (rows of a 5-wide grid), as a unit."""
    rows = rng.standard_normal((n, n_embd)).astype(np.float32)
    h, w = np.divmod(np.arange(n), 5)
    pos = np.stack([np.full(n, t0), 10 + h, 10 + w]).astype(np.int32)
    return rows, np.full(n, C.OMNISIFT_MODALITY_VIDEO, np.int32), pos


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
        with _Rows(tiny_omni, None, max_rows=50) as oc:
            for rows, mod, pos in units:
                assert oc.add(rows, mod, pos).all()   # params None: every row kept
                counts.append((oc.n_queued, oc.n_flushes()))
            C.check(C.omnisift_context_end(oc.ptr, 0))
            assert oc.n_queued == 0

    ours = _logits_after(tiny_omni, queued)
    # 30 rows fit; the next 30 would not fit beside them (max 50): the first unit is decoded alone
    assert counts == [(30, 0), (30, 1), (30, 2), (30, 3)]
    every = (np.concatenate([u[0] for u in units]), np.concatenate([u[2] for u in units], axis=1))
    whole = _logits_after(tiny_omni, lambda: decode_rows(tiny_omni, *every))
    np.testing.assert_allclose(ours, whole, atol=2e-3 * np.ptp(whole))


def test_batches_span_units_and_give_the_per_unit_answer(tiny_omni, assets):
    msgs = [{"role": "user", "content": [{"type": "video_url", "video_url": {"url": str(assets["test-3.mp4"])}},
                                         {"type": "text", "text": "What happens?"}]}]
    context = tiny_omni.chat_handler.context
    try:
        context.batch_rows = 1          # every unit decoded on its own
        clear(tiny_omni)
        alone = prefill(tiny_omni, msgs, video_retention=0.25, audio_retention=0.5)
        logits_alone = logits_of(tiny_omni)
    finally:
        context.batch_rows = 0
    clear(tiny_omni)
    batched = prefill(tiny_omni, msgs, video_retention=0.25, audio_retention=0.5)
    logits = logits_of(tiny_omni)
    a, b = alone["omnisift"], batched["omnisift"]
    n_units = 5                           # 10 s: 10 grids, two per unit
    assert a["media_batches"] >= n_units and b["media_batches"] < n_units
    assert a["video"]["tokens_kept"] == b["video"]["tokens_kept"] and alone["prompt_tokens"] == batched["prompt_tokens"]
    # only how the rows are cut into ubatches differs (llama.cpp's CPU attention rounds by split)
    np.testing.assert_allclose(logits, logits_alone, atol=1e-3 * np.ptp(logits_alone))


def _crossings(llm, clip, ask_rows: bool) -> tuple:
    """(calls into libmtmd-free libomnisift by name, units) while llm answers about clip: every
    function of omnisift_cpp is wrapped, whoever calls it."""
    import collections

    calls: collections.Counter = collections.Counter()
    originals = {n: getattr(C, n) for n in dir(C) if n.startswith("omnisift_") and callable(getattr(C, n))
                 and not isinstance(getattr(C, n), type)}

    def counting(name, fn):
        def wrapped(*args, **kwargs):
            calls[name] += 1
            return fn(*args, **kwargs)
        return wrapped

    seen = []
    msgs = [{"role": "user", "content": [{"type": "video_url", "video_url": {"url": str(clip)}},
                                         {"type": "text", "text": "What happens?"}]}]
    clear(llm)
    try:
        for n, fn in originals.items():
            setattr(C, n, counting(n, fn))
        st = prefill(llm, msgs, video_retention=0.25, audio_retention=0.5,
                     on_unit=seen.append if ask_rows else None)
    finally:
        for n, fn in originals.items():
            setattr(C, n, fn)
    assert st["omnisift"]["media_cells_decoded"] > 0
    return calls, len(seen)


@pytest.mark.parametrize("ask_rows", [False, True])
def test_one_crossing_per_unit_and_one_more_for_its_rows(tiny_omni, tmp_path, ask_rows):
    """Each unit is one omnisift_context_add (frames and audio features in, nothing back but the
    mask); its rows cross back only when on_unit asks for them. Counted over every call into
    libomnisift from anywhere (planning included): a clip twice as long (twice the units) costs one
    call more per unit, two when the rows are asked for."""
    from media_clips import write_clip

    short = write_clip(tmp_path / "10s.mp4", 20, fps=2, size=(112, 84), audio_seconds=10)
    long = write_clip(tmp_path / "20s.mp4", 40, fps=2, size=(112, 84), audio_seconds=20)
    c10, seen10 = _crossings(tiny_omni, short, ask_rows)
    c20, seen20 = _crossings(tiny_omni, long, ask_rows)
    assert (c10["omnisift_context_add"], c20["omnisift_context_add"]) == (5, 10)
    assert c20.get("omnisift_context_unit_rows", 0) == (10 if ask_rows else 0)
    per_unit = (sum(c20.values()) - sum(c10.values())) / 5
    assert per_unit == (2 if ask_rows else 1), (c10, c20)
    if ask_rows:
        assert seen20 == 10


def test_bad_unit_leaves_queue_and_mask_untouched(tiny_omni):
    rng = np.random.default_rng(1)
    rows, mod, pos = _unit(rng, tiny_omni.n_embd(), 25)
    params = _context.sift_params(Settings(video_retention=0.5, audio_retention=0.5))
    with _Rows(tiny_omni, params) as oc:
        assert oc.add(rows, mod, pos).sum() == 15
        bad = rows.copy()
        bad[3, 0] = np.nan
        keep = np.full(len(rows), 7, np.uint8)
        assert oc.add_raw(bad, mod, pos, keep) == C.OMNISIFT_ERR_ARGUMENT
        assert b"finite" in C.omnisift_last_error() or b"NaN" in C.omnisift_last_error()
        assert (keep == 7).all() and oc.n_queued == 15
        neg = pos.copy()
        neg[0, 2] = -1
        with pytest.raises(ValueError, match="negative position"):
            oc.add(rows, mod, neg)
        with pytest.raises(ValueError, match="no vision encoder"):   # video rows, no rows given, no encoder
            u = C.omnisift_unit()
            src = np.zeros(len(rows), np.int32)
            u.n_rows, u.modality, u.source, u.pos, u.renumber_from = len(rows), mod.ctypes.data, src.ctypes.data, pos.ctypes.data, -1
            C.check(C.omnisift_context_add(oc.ptr, ctypes.byref(u), None))
        assert oc.n_queued == 15
    clear(tiny_omni)


def test_init_refuses_bad_arguments(tiny_omni):
    p = C.omnisift_context_default_params()
    assert not C.omnisift_context_init(None, None, None, None, p)
    assert b"NULL" in C.omnisift_last_error()
    p.max_rows = -1
    assert not C.omnisift_context_init(tiny_omni.ctx, None, None, None, p)
    assert b"max_rows" in C.omnisift_last_error()


def test_text_inside_a_unit_is_decoded_in_position_order(tiny_omni):
    """Qwen3-VL's timestamps: a unit's text tokens are decoded among its kept rows by position
    (the queue first), which is what llama.cpp gets from decoding rows, tokens and rows one after
    another; bad text is refused before anything is decoded."""
    rng = np.random.default_rng(4)
    n_embd = tiny_omni.n_embd()
    (r0, m0, p0), (r1, m1, p1) = _unit(rng, n_embd, 25), _unit(rng, n_embd, 60)
    rows, mod, pos = np.concatenate([r0, r1]), np.concatenate([m0, m1]), np.concatenate([p0, p1], axis=1)
    text = np.array([11, 12, 13], np.int32)
    text_pos = np.array([20, 40, 41], np.int32)     # one before the first grid, two between the grids

    def with_text(text_pos=text_pos, text=text):
        u = C.omnisift_unit()
        u.n_rows, u.renumber_from = len(rows), -1
        src = np.zeros(len(rows), np.int32)
        u.modality, u.source, u.pos, u.embd = mod.ctypes.data, src.ctypes.data, pos.ctypes.data, rows.ctypes.data
        u.text, u.text_pos, u.n_text = text.ctypes.data, text_pos.ctypes.data, len(text)
        keep = np.ones(len(rows), np.uint8)
        return C.omnisift_context_add(oc.ptr, ctypes.byref(u), keep.ctypes.data)

    def inside():
        C.check(with_text())
        C.check(C.omnisift_context_end(oc.ptr, 0))

    def apart():
        decode_tokens(tiny_omni, [11], [20])
        decode_rows(tiny_omni, r0, p0)
        decode_tokens(tiny_omni, [12, 13], [40, 41])
        decode_rows(tiny_omni, r1, p1)

    with _Rows(tiny_omni, None, max_rows=512) as oc:
        ours = _logits_after(tiny_omni, inside)
        for bad in (dict(text_pos=np.array([20, 41, 40], np.int32)), dict(text=np.array([11, -1, 13], np.int32))):
            assert with_text(**bad) == C.OMNISIFT_ERR_ARGUMENT and oc.n_queued == 0
    reference = _logits_after(tiny_omni, apart)
    np.testing.assert_allclose(ours, reference, atol=1e-5 * np.ptp(reference))
