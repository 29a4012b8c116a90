"""The vLLM plugin's layout and placeholder counts (pyomnisift/vllm_plugin/layout.py, settings.py),
which import nothing of vLLM: checked here against pyomnisift's own sequence layout and sift. The
plugin inside vLLM is tested by tests/vllm (`make test-vllm`)."""

from __future__ import annotations

import numpy as np
import pytest

import pyomnisift
from pyomnisift._sequence import video_with_audio_blocks
from pyomnisift._settings import Settings
from pyomnisift.vllm_plugin import settings as S
from pyomnisift.vllm_plugin.layout import item_layout, n_kept_rows, placeholder_labels

V, A = 1, 2


@pytest.mark.parametrize("n_grids, n_audio, spg", [(4, 100, 1.0), (5, 130, 1.0), (4, 110, 2.0), (6, 75, 0.5)])
@pytest.mark.parametrize("video_retention, audio_retention", [(1.0, 1.0), (0.33, 0.6), (0.5, 0.4), (0.0, 0.0)])
def test_labels_count_is_the_c_rule_and_rows_follow_the_sequence(n_grids, n_audio, spg, video_retention,
                                                                  audio_retention):
    layout = item_layout(n_grids, 3, 4, n_audio, spg)
    blocks = video_with_audio_blocks(n_grids, 3, 4, n_audio, 0, spg)
    np.testing.assert_array_equal(layout.positions, np.concatenate([b.positions for b in blocks], axis=1))
    # source: video rows grid-major first, then audio rows in time order
    assert sorted(layout.source.tolist()) == list(range(n_grids * 12 + n_audio))
    assert (layout.source[layout.modality == A] >= n_grids * 12).all()
    settings = Settings(video_retention=video_retention, audio_retention=audio_retention)
    rng = np.random.default_rng(n_grids * 1000 + n_audio)
    rows = rng.standard_normal((layout.n_rows, 16)).astype(np.float32)
    keep = pyomnisift.sift(rows, layout.modality, layout.positions, video_retention=video_retention,
                           audio_retention=audio_retention, audio_selector="anchor")
    labels = placeholder_labels(layout, settings, V, A)
    assert len(labels) == n_kept_rows(layout, settings) == keep.sum()
    assert labels.count(V) == (keep & (layout.modality == V)).sum()  # per grid: exact
    if spg == 1.0:  # 2 grids per 2-s chunk: the units coincide, so the labels are the kept rows' own
        assert labels == [V if m == V else A for m in layout.modality[keep]]


def test_settings_from_mm_processor_kwargs():
    assert S.settings_from({}) == Settings()  # pyomnisift's defaults
    s = S.settings_from({"video_retention": 0.25, "audio_retention": 0.5, "audio_selector": "random",
                         "sift_seed": 3, "use_audio_in_video": True, "fps": 2})
    assert (s.video_retention, s.audio_retention, s.audio_selector, s.seed) == (0.25, 0.5, "random", 3)
    assert S.decode(S.encode(s)) == dict(video_retention=0.25, audio_retention=0.5, audio_selector="random", seed=3)
    assert S.without_settings({"video_retention": 0.2, "fps": 2}) == {"fps": 2}
    with pytest.raises(ValueError, match="video_retention"):
        S.settings_from({"video_retention": 1.5})
    with pytest.raises(ValueError, match="vgas"):
        S.settings_from({"audio_selector": "vgas"})
    with pytest.raises(ValueError, match="audio_selector"):
        S.settings_from({"audio_selector": "loudest"})
