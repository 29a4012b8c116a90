"""pyomnisift.sift against the independent reference (tests/sift_reference.py): keep masks identical,
scores close, over a seeded sweep of omni sequences; the documented rounding and tie rules; bad input."""

from __future__ import annotations

import numpy as np
import pytest

import pyomnisift
import sift_reference as ref

SELECTORS = ("anchor", "random", "none")
RATIOS = (0.0, 0.1, 0.23, 0.25, 0.3, 0.33, 0.5, 0.6, 0.7, 0.77, 1.0)


class Seq:
    """An omni sequence laid out like Qwen2.5-Omni with audio in video: text, images, then per 2-s
    chunk [grid at t, grid at t + 25][audio with t in the chunk's 50 positions], then text."""

    def __init__(self, d: int):
        self.d, self.mod, self.t, self.h, self.w, self.rows = d, [], [], [], [], []

    def add(self, mod, t, h, w, emb):
        self.mod += [mod] * len(t)
        self.t += list(t)
        self.h += list(h)
        self.w += list(w)
        self.rows.append(np.asarray(emb, dtype=np.float32).reshape(len(t), self.d))

    def grid(self, rng, mod, t, gh, gw, base=None):
        base = rng.standard_normal(self.d) if base is None else base
        emb = base * rng.uniform(0.5, 2.0) + rng.standard_normal((gh * gw, self.d))
        hh, ww = np.divmod(np.arange(gh * gw), gw)
        self.add(mod, [t] * (gh * gw), t + hh, t + ww, emb)
        return base

    def arrays(self):
        emb = np.concatenate(self.rows) if self.rows else np.zeros((0, self.d), np.float32)
        return emb, np.array(self.mod, dtype=np.int32), np.array([self.t, self.h, self.w], dtype=np.int32)


def random_sequence(rng: np.random.Generator) -> Seq:
    s = Seq(int(rng.choice([3, 8, 16, 40])))
    pos = 0
    n_text = int(rng.integers(0, 5))
    s.add(0, range(pos, pos + n_text), range(pos, pos + n_text), range(pos, pos + n_text), rng.standard_normal((n_text, s.d)))
    pos += n_text
    for _ in range(int(rng.choice([0, 0, 1, 2]))):
        gh, gw = rng.integers(1, 6, size=2)
        s.grid(rng, 3, pos, gh, gw)
        pos += int(max(gh, gw))
    n_lead = int(rng.choice([0, 0, 3]))          # audio before the first grid: no chunk
    s.add(2, range(pos, pos + n_lead), range(pos, pos + n_lead), range(pos, pos + n_lead), rng.standard_normal((n_lead, s.d)))
    pos += n_lead
    n_chunks = int(rng.choice([0, 1, 2, 3, 5]))
    tail = rng.random() < 0.4
    for c in range(n_chunks):
        t0 = pos + 50 * c
        gh, gw = (int(x) for x in rng.integers(1, 7, size=2))
        base = s.grid(rng, 1, t0, gh, gw)
        if not (tail and c == n_chunks - 1):
            if rng.random() < 0.25:
                gh, gw = (int(x) for x in rng.integers(1, 7, size=2))
            s.grid(rng, 1, t0 + 25, gh, gw, base=base if rng.random() < 0.7 else None)
        n_audio = int(rng.choice([0, 1, 2, 7, 25, 50]))
        at = t0 + np.sort(rng.choice(50, size=n_audio, replace=False))
        s.add(2, at, at, at, rng.standard_normal((n_audio, s.d)) + rng.standard_normal(s.d))
    end = pos + 50 * n_chunks
    n_trail = int(rng.integers(0, 3))
    s.add(0, range(end, end + n_trail), range(end, end + n_trail), range(end, end + n_trail), rng.standard_normal((n_trail, s.d)))
    return s


def assert_matches_reference(emb, mod, pos, ref_head=None, **kw):
    """ref_head: the torch module the reference evaluates where pyomnisift gets kw["sift_head"]."""
    mask, scores = pyomnisift.sift(emb, mod, pos, return_scores=True, **kw)
    ref_kw = {k: v for k, v in kw.items() if k != "sift_head"}
    want_mask, want_scores = ref.sift(emb, mod, pos, head=ref_head, **ref_kw)
    np.testing.assert_array_equal(np.isnan(scores), np.isnan(want_scores))
    np.testing.assert_allclose(scores, want_scores, atol=2e-5, rtol=0, equal_nan=True)
    np.testing.assert_array_equal(mask, want_mask)
    # the count the planner sizes prompts with, from the layout alone, is the reference's
    count_kw = {k: kw[k] for k in ("video_retention", "audio_retention", "image_retention", "audio_selector") if k in kw}
    assert pyomnisift.n_kept(mod, pos, **count_kw) == int(want_mask.sum())
    return mask


@pytest.mark.parametrize("seed", range(160))
def test_sweep_matches_reference(seed):
    rng = np.random.default_rng(seed)
    emb, mod, pos = random_sequence(rng).arrays()
    kw = dict(video_retention=float(rng.choice(RATIOS)), audio_retention=float(rng.choice(RATIOS)),
              image_retention=float(rng.choice([1.0, 0.5, 0.3, 0.0])), audio_selector=str(rng.choice(SELECTORS)),
              seed=int(rng.integers(0, 2**63)))
    if rng.random() < 0.3:
        kw["video_retention"] = float(rng.random())
        kw["audio_retention"] = float(rng.random())
    assert_matches_reference(emb, mod, pos, **kw)


def test_many_chunks_across_graph_groups():
    # ~70 MB of rows: more than one graph for the video and for the audio (bounded memory per graph).
    rng = np.random.default_rng(7)
    s = Seq(4096)
    for c in range(8):
        base = s.grid(rng, 1, 50 * c, 16, 16)
        s.grid(rng, 1, 50 * c + 25, 16, 16, base=base)
        s.add(2, range(50 * c, 50 * c + 50), range(50 * c, 50 * c + 50), range(50 * c, 50 * c + 50),
              rng.standard_normal((50, s.d)))
    emb, mod, pos = s.arrays()
    for selector in ("anchor", "random"):
        mask = assert_matches_reference(emb, mod, pos, video_retention=0.5, audio_retention=0.7, audio_selector=selector)
        assert mask[mod == 1].sum() == 8 * 2 * 128
        assert mask[mod == 2].sum() == 8 * 35


@pytest.mark.parametrize("selector", SELECTORS)
def test_chunks_are_independent(selector):
    # Compressing chunk by chunk (streaming) gives what one call over the whole sequence gives.
    rng = np.random.default_rng(8)
    s = Seq(16)
    bounds = [0]
    for c in range(4):
        base = s.grid(rng, 1, 50 * c, 3, 4)
        s.grid(rng, 1, 50 * c + 25, 3, 4, base=base)
        s.add(2, range(50 * c, 50 * c + 30), range(50 * c, 50 * c + 30), range(50 * c, 50 * c + 30),
              rng.standard_normal((30, 16)))
        bounds.append(bounds[-1] + 54)
    emb, mod, pos = s.arrays()
    kw = dict(video_retention=0.4, audio_retention=0.5, audio_selector=selector, seed=3)
    parts = [pyomnisift.sift(emb[a:b], mod[a:b], pos[:, a:b], **kw) for a, b in zip(bounds, bounds[1:])]
    np.testing.assert_array_equal(np.concatenate(parts), pyomnisift.sift(emb, mod, pos, **kw))


def test_retention_counts_use_documented_rounding():
    # 90 tokens at retention 0.3: 90 * (1 - 0.3) = 62.99999999999999 in binary; 63 are dropped.
    rng = np.random.default_rng(1)
    s = Seq(8)
    s.grid(rng, 1, 0, 9, 10)
    emb, mod, pos = s.arrays()
    for r, kept in [(0.3, 27), (0.7, 63), (0.0, 0), (1.0, 90), (0.999, 90), (0.011, 1)]:
        assert pyomnisift.sift(emb, mod, pos, video_retention=r).sum() == kept == 90 - ref.drop_count(90, r)


def test_ties_keep_the_lower_index():
    rng = np.random.default_rng(2)
    s = Seq(8)
    row = rng.standard_normal(8)
    s.add(1, [0] * 6, range(6), range(6), np.tile(row, (6, 1)))          # all equally similar
    s.add(2, range(10), range(10), range(10), np.tile(rng.standard_normal(8), (10, 1)))
    emb, mod, pos = s.arrays()
    mask = pyomnisift.sift(emb, mod, pos, video_retention=0.5, audio_retention=0.3)
    np.testing.assert_array_equal(mask[:6], [1, 1, 1, 0, 0, 0])
    np.testing.assert_array_equal(mask[6:], [1, 1, 1, 0, 0, 0, 0, 0, 0, 0])


def test_chunk_rules():
    rng = np.random.default_rng(3)
    s = Seq(8)
    s.add(2, range(0, 4), range(0, 4), range(0, 4), rng.standard_normal((4, 8)))      # before any grid
    base = s.grid(rng, 1, 10, 2, 2)
    s.grid(rng, 1, 35, 2, 2, base=base)
    s.add(2, range(40, 50), range(40, 50), range(40, 50), rng.standard_normal((10, 8)))
    s.grid(rng, 1, 60, 2, 2)                                                           # tail chunk, 1 audio
    s.add(2, [70], [70], [70], rng.standard_normal((1, 8)))
    emb, mod, pos = s.arrays()
    mask = pyomnisift.sift(emb, mod, pos, video_retention=0.5, audio_retention=0.5)
    assert mask[:4].all() and mask[-1]
    assert mask[12:22].sum() == 5
    # Retention 0 leaves no anchors: the audio is kept.
    mask = pyomnisift.sift(emb, mod, pos, video_retention=0.0, audio_retention=0.5)
    assert not mask[mod == 1].any() and mask[mod == 2].all()


def test_zero_rows_have_cosine_zero():
    rng = np.random.default_rng(5)
    s = Seq(8)
    s.add(1, [0] * 4, range(4), range(4), np.vstack([np.zeros(8), rng.standard_normal((3, 8))]))
    s.add(1, [25] * 4, range(4), range(4), np.vstack([rng.standard_normal((3, 8)), np.zeros(8)]))
    s.add(2, range(6), range(6), range(6), np.vstack([np.zeros((2, 8)), rng.standard_normal((4, 8))]))
    emb, mod, pos = s.arrays()
    mask = assert_matches_reference(emb, mod, pos, video_retention=0.5, audio_retention=0.5)
    _, scores = pyomnisift.sift(emb, mod, pos, return_scores=True)
    assert scores[0] == 0 and scores[7] == 0 and mask.any()


def test_audio_only_and_text_only_are_kept():
    rng = np.random.default_rng(4)
    emb = rng.standard_normal((20, 8)).astype(np.float32)
    t = np.arange(20)
    for modality in (np.full(20, 2), np.zeros(20, int)):
        for selector in SELECTORS:
            assert pyomnisift.sift(emb, modality, np.stack([t, t, t]), video_retention=0.0, audio_retention=0.0,
                                   audio_selector=selector).all()
    assert pyomnisift.sift(np.zeros((0, 8), np.float32), np.zeros(0, int), np.zeros((3, 0), int)).shape == (0,)


def test_random_selector_is_seeded():
    rng = np.random.default_rng(11)
    s = Seq(8)
    for c in range(3):
        s.grid(rng, 1, 50 * c, 3, 3)
        s.add(2, range(50 * c, 50 * c + 20), range(50 * c, 50 * c + 20), range(50 * c, 50 * c + 20),
              rng.standard_normal((20, 8)))
    emb, mod, pos = s.arrays()
    a = pyomnisift.sift(emb, mod, pos, audio_retention=0.5, audio_selector="random", seed=5)
    b = pyomnisift.sift(emb, mod, pos, audio_retention=0.5, audio_selector="random", seed=5)
    np.testing.assert_array_equal(a, b)
    assert a[mod == 2].sum() == 30
    others = [pyomnisift.sift(emb, mod, pos, audio_retention=0.5, audio_selector="random", seed=s) for s in range(6, 12)]
    assert any((o != a).any() for o in others)


def _good():
    rng = np.random.default_rng(0)
    s = Seq(8)
    base = s.grid(rng, 1, 0, 2, 3)
    s.grid(rng, 1, 25, 2, 3, base=base)
    s.add(2, range(5), range(5), range(5), rng.standard_normal((5, 8)))
    return s.arrays()


@pytest.mark.parametrize("change, exc, match", [
    (lambda e, m, p, kw: e.__setitem__((7, 2), np.nan), ValueError, "row 7"),
    (lambda e, m, p, kw: e.__setitem__((0, 0), np.inf), ValueError, "row 0"),
    (lambda e, m, p, kw: kw.update(video_retention=1.5), ValueError, "video_retention"),
    (lambda e, m, p, kw: kw.update(audio_retention=-0.1), ValueError, "audio_retention"),
    (lambda e, m, p, kw: kw.update(image_retention=float("nan")), ValueError, "image_retention"),
    (lambda e, m, p, kw: kw.update(audio_retention="0.5"), TypeError, "audio_retention"),
    (lambda e, m, p, kw: kw.update(audio_selector="vgass"), ValueError, "unknown audio_selector"),
    (lambda e, m, p, kw: kw.update(audio_selector=2), TypeError, "audio_selector"),
    (lambda e, m, p, kw: kw.update(audio_selector="vgas"), ValueError, "sift_head"),
    (lambda e, m, p, kw: kw.update(sift_head=3), TypeError, "sift_head"),
    (lambda e, m, p, kw: kw.update(seed=-1), ValueError, "seed"),
    (lambda e, m, p, kw: m.__setitem__(3, 5), ValueError, r"modality\[3\] = 5"),
])
def test_bad_input_raises(change, exc, match):
    emb, mod, pos = _good()
    kw = {}
    change(emb, mod, pos, kw)
    with pytest.raises(exc, match=match):
        pyomnisift.sift(emb, mod, pos, **kw)


def test_bad_shapes_raise():
    emb, mod, pos = _good()
    with pytest.raises(ValueError, match="modality must have shape"):
        pyomnisift.sift(emb, mod[:-1], pos)
    with pytest.raises(ValueError, match=r"positions must have shape \[3, 17\]"):
        pyomnisift.sift(emb, mod, pos[:2])
    with pytest.raises(ValueError, match="positions must have shape"):
        pyomnisift.sift(emb, mod, pos.T)
    with pytest.raises(ValueError, match="embeddings must have shape"):
        pyomnisift.sift(emb[0], mod, pos)
    with pytest.raises(TypeError, match="modality must hold integers"):
        pyomnisift.sift(emb, mod.astype(float), pos)
    with pytest.raises(TypeError, match="embeddings must be real"):
        pyomnisift.sift(emb.astype(complex), mod, pos)


def test_c_api_rejects_bad_arguments_without_writing():
    # Bypasses the Python checks: the C library must refuse on its own and leave keep untouched.
    import ctypes

    from pyomnisift import omnisift_cpp as C

    emb, mod, pos = _good()
    emb[4, 1] = np.nan
    keep = np.full(len(mod), 7, dtype=np.uint8)
    params = C.omnisift_sift_default_params()
    params.video_retention = 0.5
    engine = pyomnisift.default_engine()
    status = C.omnisift_sift(engine.ptr, emb.ctypes.data, len(mod), emb.shape[1], mod.ctypes.data, pos.ctypes.data,
                             ctypes.byref(params), keep.ctypes.data, None)
    assert status == C.OMNISIFT_ERR_ARGUMENT and b"row 4" in C.omnisift_last_error()
    assert (keep == 7).all()
    emb[4, 1] = 0
    params.audio_selector = C.OMNISIFT_AUDIO_SELECTOR_VGAS
    status = C.omnisift_sift(engine.ptr, emb.ctypes.data, len(mod), emb.shape[1], mod.ctypes.data, pos.ctypes.data,
                             ctypes.byref(params), keep.ctypes.data, None)
    assert status == C.OMNISIFT_ERR_ARGUMENT and b"head" in C.omnisift_last_error()
    assert (keep == 7).all()
