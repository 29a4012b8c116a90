"""Each rule in one place: the audio selectors' names, the retention range and the chunking are
defined by cpp/omnisift.h (libomnisift); the library, the command line and the server read them
from there (pyomnisift._settings, pyomnisift._sift.chunks)."""

from __future__ import annotations

import typing

import numpy as np
import pytest

import pyomnisift
import sift_reference as ref
from pyomnisift import _sequence as S, _settings, _sift
from pyomnisift import omnisift_cpp as C


def test_selector_names_and_range_come_from_the_library():
    # the enum values of omnisift.h, in order, under the names the header documents
    assert _settings.AUDIO_SELECTORS == {"none": C.OMNISIFT_AUDIO_SELECTOR_NONE,
                                         "anchor": C.OMNISIFT_AUDIO_SELECTOR_ANCHOR,
                                         "vgas": C.OMNISIFT_AUDIO_SELECTOR_VGAS,
                                         "random": C.OMNISIFT_AUDIO_SELECTOR_RANDOM}
    assert C.omnisift_audio_selector_name(len(_settings.AUDIO_SELECTORS)) is None
    assert (_settings.RETENTION_MIN, _settings.RETENTION_MAX) == (0.0, 1.0)
    # the library's own check agrees with the range Python reads: the bounds pass, beyond them fail
    mod, pos = np.array([1, 1], np.int32), np.zeros((3, 2), np.int32)
    for r in (_settings.RETENTION_MIN, _settings.RETENTION_MAX):
        p = _sift.c_params(r, r, r, "anchor")
        assert C.omnisift_sift_n_kept(mod.ctypes.data, pos.ctypes.data, 2, p) >= 0
    for r in (np.nextafter(_settings.RETENTION_MIN, -1), np.nextafter(_settings.RETENTION_MAX, 2)):
        p = _sift.c_params(r, 1.0, 1.0, "anchor")
        assert C.omnisift_sift_n_kept(mod.ctypes.data, pos.ctypes.data, 2, p) == C.OMNISIFT_ERR_ARGUMENT
        with pytest.raises(ValueError, match="video_retention"):
            _settings.check_retention("video_retention", float(r))


def test_cli_and_server_import_the_rules():
    from pyomnisift import cli
    from pyomnisift.server import settings as server_settings, types as server_types

    ap = cli.build_parser()
    chat = ap._subparsers._group_actions[0].choices["chat"]
    selector = next(a for a in chat._actions if "--audio-selector" in a.option_strings)
    assert list(selector.choices) == list(_settings.AUDIO_SELECTORS)
    for model, field in ((server_settings.ModelSettings, "audio_selector"),
                         (server_types.OmniChatCompletionRequest, "audio_selector")):
        literal = [a for a in typing.get_args(model.model_fields[field].annotation) if a is not type(None)][0]
        assert typing.get_args(literal) == tuple(_settings.AUDIO_SELECTORS)
    req = server_types.OmniChatCompletionRequest
    with pytest.raises(Exception, match="less than or equal to 1"):
        req(messages=[{"role": "user", "content": "hi"}], video_retention=1.01)
    with pytest.raises(Exception, match="greater than or equal to 0"):
        server_settings.ModelSettings(model="m.gguf", audio_retention=-0.01)


def _video_layout(n_grids, fps, n_audio, start=7):
    blocks = (S.video_with_audio_blocks(n_grids, 2, 3, n_audio, start, seconds_per_grid=2.0 / fps) if n_audio
              else S.video_blocks(n_grids, 2, 3, start, seconds_per_grid=2.0 / fps))
    mod = np.concatenate([np.full(b.n_rows, b.modality, np.int32) for b in blocks])
    pos = np.concatenate([b.positions for b in blocks], axis=1)
    return mod, pos


@pytest.mark.parametrize("fps, n_grids, n_audio", [(1, 5, 260), (2, 10, 250), (3, 9, 150), (2, 7, 0)])
def test_chunks_are_the_reference_grouping(fps, n_grids, n_audio):
    """_sift.chunks (the C rule) assigns every row of a real video layout to the chunk the method
    note's grouping (tests/sift_reference.py) puts it in; the pipeline's units are these chunks."""
    mod, pos = _video_layout(n_grids, fps, n_audio)
    got = _sift.chunks(mod, pos)
    want = np.full(len(mod), -1)
    for c, (grids, audio) in enumerate(ref.chunks(mod, pos[0])):
        for g in grids:
            want[g] = c
        want[audio] = c
    np.testing.assert_array_equal(got, want)
    assert got.max() == (n_grids + 1) // 2 - 1 and (got >= 0).all()


def test_chunks_of_text_images_and_lone_audio_are_minus_one():
    mod = np.array([0, 2, 2, 3, 3, 1, 1, 2], np.int32)
    pos = np.tile(np.array([0, 1, 2, 3, 3, 10, 10, 11], np.int32), (3, 1))
    np.testing.assert_array_equal(_sift.chunks(mod, pos), [-1, -1, -1, -1, -1, 0, 0, 0])
    assert (_sift.chunks(np.full(4, 2, np.int32), np.zeros((3, 4), np.int32)) == -1).all()
    with pytest.raises(ValueError, match="modality"):
        _sift.chunks(np.array([5], np.int32), np.zeros((3, 1), np.int32))
    with pytest.raises(ValueError, match="disagree"):
        _sift.chunks(np.array([1, 1], np.int32), np.zeros((3, 1), np.int32))


def test_settings_validate_with_the_library_rules():
    s = pyomnisift.Settings()
    with pytest.raises(ValueError, match=r"audio_retention = 1.5 is not in \[0, 1\]"):
        s.with_overrides({"audio_retention": 1.5})
    with pytest.raises(ValueError, match="expected one of none, anchor, vgas, random"):
        s.with_overrides({"audio_selector": "loud"})
    assert not hasattr(s, "as_dict")
