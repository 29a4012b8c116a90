"""Inputs the fuzzers (tests/fuzz/) found, kept as regression tests: each now gets a documented
exception naming the problem instead of an undocumented one (or a crash)."""

from __future__ import annotations

import io
from pathlib import Path

import pytest

from pyomnisift import ModelFileError
from pyomnisift.media import decode

FOUND = Path(__file__).parent / "fuzz" / "regressions"


def test_broken_png_chunk_is_a_model_file_error():
    """A PNG whose chunk after IDAT is garbage: PIL raised SyntaxError ("broken PNG file") while
    decoding, which escaped read_image (fuzz_media, mutated seed i.png)."""
    data = (FOUND / "broken-png-chunk.png").read_bytes()
    with pytest.raises(ModelFileError, match="not an image PIL can read.*broken PNG"):
        decode.read_image(io.BytesIO(data))
    with pytest.raises(ModelFileError, match="broken-png-chunk.png"):
        decode.read_image(FOUND / "broken-png-chunk.png")


def test_unknown_video_codec_is_a_model_file_error():
    """An mp4 whose video stream has a codec FFmpeg does not know: PyAV gives it no codec context,
    and the frame-size check (issue 17) read its width from None (fuzz_media, mutated seed v.mp4)."""
    with pytest.raises(ModelFileError, match="unknown-video-codec.mp4"):
        decode.probe_video(FOUND / "unknown-video-codec.mp4")
