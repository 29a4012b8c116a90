"""Inputs the fuzzers (tests/fuzz/) found, kept as regression tests: each now gets a documented
exception naming the problem instead of an undocumented one (or a crash). Each input is rebuilt here
from a generated file and the fuzzer's mutation (no media file is kept in the repository)."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pyomnisift import ModelFileError
from pyomnisift.media import decode

from media_clips import write_clip


def _broken_png_chunk() -> bytes:
    """A valid PNG whose IDAT length the fuzzer set to 0: its compressed data is then read as the
    next chunk's header, and PIL's decoder raises SyntaxError ("broken PNG file")."""
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (24, 16, 3), np.uint8)).save(buf, "PNG")
    png = bytearray(buf.getvalue())
    at = png.index(b"IDAT") - 4
    png[at:at + 4] = bytes(4)
    return bytes(png)


def _unknown_video_codec(path: Path) -> Path:
    """An mp4 with one byte inserted into its video track's `stbl` box name (the fuzzer's mutation):
    FFmpeg no longer finds the sample description, so the stream has no decoder and PyAV no codec
    context."""
    write_clip(path, 4, fps=4, size=(32, 32))
    data = path.read_bytes()
    at = data.index(b"stbl") + 3
    path.write_bytes(data[:at] + b"3" + data[at:])
    return path


def test_broken_png_chunk_is_a_model_file_error(tmp_path):
    """A PNG whose chunk after IDAT is garbage: PIL raised SyntaxError ("broken PNG file") while
    decoding, which escaped read_image (fuzz_media, mutated seed i.png)."""
    data = _broken_png_chunk()
    with pytest.raises(ModelFileError, match="not an image PIL can read.*broken PNG"):
        decode.read_image(io.BytesIO(data))
    path = tmp_path / "broken-png-chunk.png"
    path.write_bytes(data)
    with pytest.raises(ModelFileError, match="broken-png-chunk.png"):
        decode.read_image(path)


def test_unknown_video_codec_is_a_model_file_error(tmp_path):
    """An mp4 whose video stream has a codec FFmpeg does not know: PyAV gives it no codec context,
    and the frame-size check (issue 17) read its width from None (fuzz_media, mutated seed v.mp4)."""
    path = _unknown_video_codec(tmp_path / "unknown-video-codec.mp4")
    with pytest.raises(ModelFileError, match="unknown-video-codec.mp4: video stream cannot be decoded"):
        decode.probe_video(path)
