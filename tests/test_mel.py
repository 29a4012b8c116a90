"""Log-mel features against transformers' WhisperFeatureExtractor(feature_size=128), the
extractor Qwen2.5-Omni's processor uses, on real speech and on clip lengths at the edges."""

from __future__ import annotations

import numpy as np
import pytest

from pyomnisift import _audio, _mel
from pyomnisift.media import decode


@pytest.fixture(scope="module")
def extractor():
    import transformers  # the reference: a missing one fails, never skips
    return transformers.WhisperFeatureExtractor(feature_size=128)


def reference(extractor, pcm: np.ndarray) -> np.ndarray:
    """The frames the processor marks valid, transposed to [n_frames, 128]. truncation=False keeps
    clips over 30 s whole, as the audio tower takes them."""
    out = extractor(pcm, sampling_rate=16000, return_attention_mask=True, truncation=False,
                    return_tensors="np")
    n = int(out["attention_mask"].sum())
    return out["input_features"][0][:, :n].T


@pytest.mark.parametrize("name", ["test-2.mp3", "test-3.mp4"])
def test_real_audio_matches_whisper_extractor(assets, extractor, name):
    pytest.importorskip("av")
    pcm = decode.read_audio(assets[name])
    assert len(pcm) > 5 * 16000
    ours, ref = _mel.log_mel(pcm), reference(extractor, pcm)
    assert ours.shape == ref.shape == (_mel.n_frames(len(pcm)), 128)
    np.testing.assert_allclose(ours, ref, rtol=0, atol=1e-4)


# Around the 30-s padding: frames that see zeros, the end reflection, and no padding at all.
@pytest.mark.parametrize("n_samples", [1, 100, 8000, 8159, 479_700, 479_900, 480_000, 480_100, 496_000])
def test_lengths_match_whisper_extractor(extractor, n_samples):
    pcm = (0.1 * np.random.default_rng(n_samples).standard_normal(n_samples)).astype(np.float32)
    ours, ref = _mel.log_mel(pcm), reference(extractor, pcm)
    assert ours.shape == ref.shape
    np.testing.assert_allclose(ours, ref, rtol=0, atol=1e-4)


def test_silence_is_the_floor(extractor):
    pcm = np.zeros(16000, dtype=np.float32)
    np.testing.assert_array_equal(_mel.log_mel(pcm), reference(extractor, pcm))


@pytest.mark.parametrize("seconds, tokens", [(0.5, 12), (1.0, 25), (2.0, 50), (5.0, 125), (31.0, 775)])
def test_token_counts(seconds, tokens):
    assert _audio.n_tokens(int(seconds * 16000)) == tokens  # the C header's rule, the one source
