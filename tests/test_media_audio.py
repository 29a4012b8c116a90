"""Streaming audio: iter_audio's blocks concatenated equal read_audio exactly
(same decoder, same resampler), for a video's track and an mp3."""

from __future__ import annotations

import io

import numpy as np
import pytest

from pyomnisift.media import decode


@pytest.mark.parametrize("name", ["test-3.mp4", "test-2.mp3"])
@pytest.mark.parametrize("block", [32000, 4096, 7])
def test_iter_audio_equals_read_audio(assets, name, block):
    whole = decode.read_audio(assets[name])
    blocks = list(decode.iter_audio(assets[name], block))
    assert all(len(b) == block for b in blocks[:-1]) and 0 < len(blocks[-1]) <= block
    assert all(b.dtype == np.float32 and b.ndim == 1 for b in blocks)
    np.testing.assert_array_equal(np.concatenate(blocks), whole)


def test_file_like_source(assets):
    data = open(assets["test-2.mp3"], "rb").read()
    src = io.BytesIO(data)
    whole = decode.read_audio(src)
    np.testing.assert_array_equal(np.concatenate(list(decode.iter_audio(src, 8000))), whole)


def test_block_size_checked(assets):
    with pytest.raises(ValueError, match="block_samples"):
        next(decode.iter_audio(assets["test-2.mp3"], 0))


def test_audio_and_frames_streamed_together_from_one_bytesio(assets):
    """A data: URI is one BytesIO; its audio blocks and its frames can be read interleaved (each
    reader has its own position), giving what the file path gives."""
    from pyomnisift.media import decode as M

    path = assets["test-3.mp4"]
    src = io.BytesIO(open(path, "rb").read())
    info = M.probe_video(src)
    frames, blocks = M.iter_video_frames(src, info=info), M.iter_audio(src, 32000)
    got_frames, got_blocks = [], []
    for _ in range(info.n_grids):
        got_frames += [next(frames), next(frames)]
        got_blocks.append(next(blocks, np.zeros(0, np.float32)))
    got_blocks += list(blocks)
    np.testing.assert_array_equal(np.concatenate(got_blocks), M.read_audio(path))
    want = list(M.iter_video_frames(path))
    assert len(got_frames) == len(want)
    for a, b in zip(got_frames, want):
        np.testing.assert_array_equal(a, b)
