"""Streamed audio (two passes over PCM blocks, 2-s windows at a time) against the whole-clip path:
features against ``_mel.log_mel`` of the whole clip (itself checked against transformers'
WhisperFeatureExtractor in test_mel.py) and rows against ``AudioTower.encode`` of the whole clip
(checked against transformers' audio tower in test_audio_tower.py). Both are expected bitwise equal:
every frame and every window is computed from the same inputs by the same operations."""

from __future__ import annotations

import numpy as np
import pytest

import pyomnisift
from pyomnisift import _audio, _mel, _mel_stream
from pyomnisift.media import decode

SR = 16000
LENGTHS = [0.3, 2.0, 2.01, 29.99, 30.0, 31.0, 95.0]
SIZES = [1, 159, 160, 32000, 100003]


def noise(n: int, seed: int) -> np.ndarray:
    return (0.1 * np.random.default_rng(seed).standard_normal(n)).astype(np.float32)


def sine(n: int, seed: int) -> np.ndarray:
    t = np.arange(n) / SR
    return (0.5 * np.sin(2 * np.pi * (220 + 40 * seed) * t)).astype(np.float32)


def speech_like(n: int, seed: int) -> np.ndarray:
    """Voiced syllables (a harmonic series under a formant-ish envelope, gliding pitch) separated by
    pauses of exact silence: loud and silent frames, so the floor (peak - 8) matters."""
    rng = np.random.default_rng(seed)
    t = np.arange(n) / SR
    f0 = 120 + 30 * np.sin(2 * np.pi * 0.7 * t)
    phase = 2 * np.pi * np.cumsum(f0) / SR
    voiced = sum(np.sin(k * phase) / k for k in range(1, 12))
    syllable = (np.sin(2 * np.pi * 3.1 * t) > 0.2).astype(np.float64)  # on/off about 3 per second
    out = 0.2 * voiced * syllable + 0.005 * rng.standard_normal(n) * syllable
    return out.astype(np.float32)


SIGNALS = {"noise": noise, "sine": sine, "speech": speech_like}


def blocks_of(pcm: np.ndarray, sizes, seed: int = 0):
    """pcm cut into consecutive blocks whose sizes are drawn from sizes."""
    rng = np.random.default_rng(seed)
    i = 0
    while i < len(pcm):
        k = int(rng.choice(sizes))
        yield pcm[i:i + k]
        i += k


def streamed_features(pcm, sizes, windows_per_step=1, seed=0):
    plan = _mel_stream.scan(blocks_of(pcm, sizes, seed))
    steps = list(_mel_stream.iter_window_features(blocks_of(pcm, sizes, seed + 1), plan, windows_per_step))
    return plan, steps


def check_features(pcm, sizes, windows_per_step=1):
    ref = _mel.log_mel(pcm)
    plan, steps = streamed_features(pcm, sizes, windows_per_step)
    assert plan.n_samples == len(pcm) and plan.n_frames == len(ref)
    # steps of whole windows in order, the last one holding what is left
    assert [w for w, _ in steps] == list(range(0, plan.n_windows, windows_per_step))
    assert all(len(f) == 200 * windows_per_step for _, f in steps[:-1])
    got = np.concatenate([f for _, f in steps])
    assert got.shape == ref.shape and got.dtype == np.float32
    diff = float(np.abs(got - ref).max())
    assert diff <= 1e-6, f"max abs diff {diff:.2e}"
    np.testing.assert_array_equal(got, ref)  # the same operations on the same samples


def block_schemes(seconds):
    # fixed sizes, and a random mix of all of them; 1-sample blocks alone only where that is quick
    return [[s] for s in SIZES if s > 1 or seconds <= 2.01] + [SIZES]


@pytest.mark.parametrize("seconds", LENGTHS)
@pytest.mark.parametrize("signal", sorted(SIGNALS))
def test_features_equal_whole_clip(seconds, signal):
    pcm = SIGNALS[signal](int(round(seconds * SR)), seed=int(seconds * 100))
    for sizes in block_schemes(seconds):
        check_features(pcm, sizes)


# The edges of the padding rules: shorter than the start reflection (201 samples), frames that see
# zeros, zeros reached by the end reflection (within 400 samples of 30 s), exactly 30 s, one hop.
@pytest.mark.parametrize("n_samples", [1, 2, 200, 201, 399, 400, 401, 8159, 479_519, 479_520,
                                       479_599, 479_600, 479_999, 480_000, 480_001, 480_159, 480_160])
def test_features_at_padding_edges(n_samples):
    check_features(noise(n_samples, seed=n_samples), SIZES)


@pytest.mark.parametrize("windows_per_step", [2, 3, 16, 100])
def test_windows_per_step(windows_per_step):
    check_features(speech_like(int(61.3 * SR), seed=4), SIZES, windows_per_step)


def test_one_block_and_float64():
    pcm = noise(5 * SR + 7, seed=5)
    check_features(pcm, [len(pcm)])
    plan = _mel_stream.scan([pcm.astype(np.float64)])  # converted to float32, as AudioTower.encode does
    assert plan == _mel_stream.scan([pcm])


@pytest.mark.parametrize("name", ["test-2.mp3", "test-3.mp4"])
def test_real_tracks(assets, name):
    pcm = decode.read_audio(assets[name])
    for sizes in ([159], [32000], [100003], SIZES):
        check_features(pcm, sizes)


def test_silence():
    check_features(np.zeros(3 * SR, np.float32), SIZES)
    assert _mel_stream.scan([np.zeros(SR, np.float32)]).peak == -10.0


# --- the tower ---

@pytest.fixture(scope="module")
def tower(tiny_model):
    llm, mmproj = tiny_model
    return pyomnisift.AudioTower(mmproj, model_path=llm)


# 2.0125 s: a last window of 2 frames, which has no row; 2.06 s: 6 frames, one row.
@pytest.mark.parametrize("seconds", [0.3, 2.0, 2.0125, 2.06, 31.0, 95.0])
def test_rows_equal_whole_clip(tower, seconds):
    pcm = speech_like(int(round(seconds * SR)), seed=6) + noise(int(round(seconds * SR)), seed=7)
    whole = tower.encode(pcm)
    n_tokens = _audio.n_tokens(len(pcm))  # the C header's rule, counted before anything is encoded
    assert len(whole) == n_tokens
    for windows_per_step in (1, 3, 16, 17):
        plan = _mel_stream.scan(blocks_of(pcm, SIZES, seed=1))
        assert _audio.n_tokens(plan.n_samples) == n_tokens
        got = []
        for first, rows in tower.iter_encode(blocks_of(pcm, SIZES, seed=2), plan, windows_per_step):
            start = 50 * first
            assert start == sum(len(r) for r in got)  # rows of window w start at 50 w
            ref = whole[start:start + len(rows)]
            diff = float(np.abs(rows - ref).max()) if len(rows) else 0.0
            assert diff <= 1e-6, f"windows from {first}: max abs diff {diff:.2e}"
            np.testing.assert_array_equal(rows, ref)  # CPU backend: bitwise
            got.append(rows)
        assert sum(len(r) for r in got) == n_tokens


def test_rows_of_real_track(tower, assets):
    pcm = decode.read_audio(assets["test-3.mp4"])
    plan = _mel_stream.scan(blocks_of(pcm, [100003]))
    rows = np.concatenate([r for _, r in tower.iter_encode(blocks_of(pcm, [159]), plan)])
    np.testing.assert_array_equal(rows, tower.encode(pcm))


def test_window_rows_match_steps(tower):
    pcm = noise(int(7.3 * SR), seed=8)
    plan = _mel_stream.scan([pcm])
    ranges = [(50 * w, 50 * w + len(r)) for w, r in tower.iter_encode([pcm], plan)]
    assert ranges == [tuple(r) for r in _audio.window_rows(len(pcm))]


# --- errors ---

@pytest.mark.parametrize("blocks, error, match", [
    ([np.zeros(100, np.float32), np.array([0.0, np.nan], np.float32)], ValueError, r"NaN.*block 1, sample 101"),
    ([np.array([np.inf], np.float32)], ValueError, "NaN or infinite"),
    ([], ValueError, "empty"),
    ([np.zeros(0, np.float32)] * 3, ValueError, "empty"),
    ([np.zeros(160, np.int16)], ValueError, "dtype int16"),
    ([np.zeros((160, 2), np.float32)], ValueError, "1-D mono"),
    ([np.float32(0.5)], ValueError, "1-D mono"),
    (np.zeros(160, np.float32), TypeError, "iterable of PCM blocks"),
])
def test_bad_blocks(blocks, error, match):
    with pytest.raises(error, match=match):
        _mel_stream.scan(blocks)
    if error is ValueError and len(blocks):
        plan = _mel_stream.scan([np.ones(16000, np.float32) * 0.1])
        with pytest.raises(error, match=match):
            list(_mel_stream.iter_window_features(blocks, plan))


def test_second_pass_must_read_the_same_audio():
    pcm = noise(5 * SR, seed=9)
    plan = _mel_stream.scan([pcm])
    with pytest.raises(ValueError, match="longer than"):
        next(_mel_stream.iter_window_features([pcm, pcm], plan))  # raised before anything is handed out
    with pytest.raises(ValueError, match="has 79999 samples"):
        list(_mel_stream.iter_window_features([pcm[:-1]], plan))
    with pytest.raises(ValueError, match="peak"):
        list(_mel_stream.iter_window_features([2 * pcm], plan))
    # a short stream is found before its last window is handed out
    steps = _mel_stream.iter_window_features(blocks_of(pcm[:3 * SR], [159]), plan)
    assert next(steps)[0] == 0
    with pytest.raises(ValueError, match="samples"):
        list(steps)


@pytest.mark.parametrize("value", [0, -1, 1.5, True, None])
def test_bad_windows_per_step(value):
    plan = _mel_stream.scan([noise(SR, 0)])
    with pytest.raises(ValueError, match="windows_per_step"):
        next(_mel_stream.iter_window_features([noise(SR, 0)], plan, value))


def test_bad_plan_and_window(tower):
    with pytest.raises(TypeError, match="AudioPlan"):
        next(_mel_stream.iter_window_features([noise(SR, 0)], (16000, 0.0)))
    with pytest.raises(ValueError, match="first_window"):
        tower.encode_windows(np.zeros((200, 128), np.float32), -1)
    with pytest.raises(ValueError, match="features must be"):
        tower.encode_windows(np.zeros((200, 80), np.float32), 0)


def test_memory_does_not_grow_with_the_clip():
    """Both passes over 5 minutes generated block by block allocate a bounded few MB (numpy's
    allocations, traced: about 5 MB, one FFT batch), where the whole clip's PCM alone is 19 MB and
    its features 15 MB. Peak RSS over 1-60 minutes: scripts/bench_audio_memory.py."""
    import tracemalloc

    def generated():
        for i in range(150):
            yield noise(32000, seed=i)

    tracemalloc.start()
    try:
        plan = _mel_stream.scan(generated())
        scan_peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.reset_peak()
        n_frames = sum(len(f) for _, f in _mel_stream.iter_window_features(generated(), plan))
        stream_peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert n_frames == plan.n_frames == 30000
    assert scan_peak < 8e6 and stream_peak < 8e6, (scan_peak, stream_peak)


def test_rows_by_range(tower):
    """AudioRows hands out the rows of the whole clip by increasing ranges (a chunk's audio each),
    encoding a step only when a range needs it."""
    from pyomnisift._audio_stream import AudioRows

    pcm = speech_like(int(9.3 * SR), seed=10)
    whole = tower.encode(pcm)
    plan = _mel_stream.scan(blocks_of(pcm, SIZES))
    for ranges in ([(0, 50), (50, 50), (100, 50), (150, 50), (200, 32)], [(0, 37), (37, 113), (160, 0), (180, 52)]):
        rows = AudioRows(tower, blocks_of(pcm, SIZES, seed=3), plan)
        assert rows.n_rows == len(whole) == 232
        for start, n in ranges:
            np.testing.assert_array_equal(rows.take(start, n), whole[start:start + n])
        with pytest.raises(ValueError, match="increasing order"):
            rows.take(0, 1)
    rows = AudioRows(tower, blocks_of(pcm, SIZES), plan, windows_per_step=2)
    with pytest.raises(ValueError, match="of 232"):
        rows.take(200, 33)
    rows.close()


def test_rows_by_range_checks_the_end():
    """A last window of 2 frames has no row: taking the last row still reads the stream to its end
    and checks it against the plan."""
    from pyomnisift._audio_stream import AudioRows

    class FakeTower:
        n_embd = 4

        def iter_encode(self, blocks, plan, windows_per_step):
            for first, features in _mel_stream.iter_window_features(blocks, plan, windows_per_step):
                yield first, np.zeros((_audio.n_tokens(len(features) * 160), 4), np.float32)

    pcm = noise(32000 + 320, seed=11)  # 202 frames: 50 rows, then a window with none
    plan = _mel_stream.scan([pcm])
    assert AudioRows(FakeTower(), [pcm], plan).take(0, 50).shape == (50, 4)
    with pytest.raises(ValueError, match="samples"):
        AudioRows(FakeTower(), blocks_of(pcm[:-100], [160]), plan).take(0, 50)
