"""Bad media: every failure is a pyomnisift.ModelFileError naming the file (never a raw PyAV or PIL
exception), and what can still be used is (a video whose sound is broken)."""

from __future__ import annotations

import re

import av
import numpy as np
import pytest

from media_clips import level, patch_mkv_duration, write_clip
from pyomnisift import ModelFileError
from pyomnisift.media import decode


def _packet_spans(path, kind):
    with av.open(str(path)) as c:
        stream = c.streams.video[0] if kind == "video" else c.streams.audio[0]
        return [(p.pos, p.size) for p in c.demux(stream) if p.size]


def _scramble(src, dst, spans):
    data = bytearray(open(src, "rb").read())
    rng = np.random.default_rng(0)
    for pos, size in spans:
        data[pos:pos + size] = rng.integers(0, 256, size, dtype=np.uint8).tobytes()
    open(dst, "wb").write(bytes(data))
    return dst


def _raises_naming(path, fn, *args, match=""):
    with pytest.raises(ModelFileError, match=re.escape(str(path)) + ".*" + match) as e:
        fn(*args)
    assert type(e.value) is ModelFileError
    return e.value


def test_corrupt_video_packets(tmp_path):
    """Frames 6 on scrambled: probing works (it decodes the first frame), decoding fails naming the
    file (it used to escape as av.InvalidDataError)."""
    good = write_clip(tmp_path / "good.mp4", 30, 10, size=(112, 84))
    bad = _scramble(good, tmp_path / "corrupt.mp4", _packet_spans(good, "video")[6:])
    info = decode.probe_video(bad)
    err = _raises_naming(bad, lambda: list(decode.iter_video_frames(bad, info=info)), match="cannot be decoded")
    assert "frame" in err.problem


def test_truncated_mp4_index_first(tmp_path):
    """moov first (faststart, a web download cut short): the index lists 40 frames, the file holds
    fewer; an error, not a clip padded with its last frame."""
    full = write_clip(tmp_path / "full.mp4", 40, 10, options={"movflags": "faststart"})
    data = open(full, "rb").read()
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(data[:len(data) * 2 // 3])
    _raises_naming(cut, decode.probe_video, cut, match="truncated: its index lists 40 video frames")


def test_truncated_mp4_index_last(tmp_path):
    full = write_clip(tmp_path / "full.mp4", 40, 10)
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(open(full, "rb").read()[:-200])
    _raises_naming(cut, decode.probe_video, cut, match="cannot be decoded as video")


@pytest.mark.parametrize("claim", [4 * 3600.0, 1.0])
def test_lying_header_uses_the_stream(tmp_path, claim):
    """A Matroska header claiming 4 hours (or 1 s) of a 4-s clip: 40 frames counted, 8 sampled,
    each a distinct source frame (no last frame repeated, no tail dropped)."""
    base = write_clip(tmp_path / "base.mkv", 40, 10, fmt="matroska")
    lying = patch_mkv_duration(base, tmp_path / "lying.mkv", claim)
    info = decode.probe_video(lying)
    assert (info.n_frames, info.n_sampled) == (40, 8)
    assert info.duration == pytest.approx(4.0, abs=0.15)
    frames = list(decode.iter_video_frames(lying, info=info))
    h, w = frames[0].shape[:2]
    got = [int(np.median(f[h // 2:, w // 2:, 0])) for f in frames]
    assert all(abs(g - level(i)) <= 4 for g, i in zip(got, info.frame_indices)), got
    assert info.frame_indices[-1] == 39


def test_undecodable_audio_track(tmp_path):
    """The video plays, its sound does not: probe_video says so (has_audio False, audio_error), and
    reading the track raises ModelFileError naming the file."""
    good = write_clip(tmp_path / "good.mp4", 30, 10, audio_seconds=3)
    assert decode.probe_video(good).has_audio and decode.probe_video(good).audio_error is None
    bad = _scramble(good, tmp_path / "bad_audio.mp4", _packet_spans(good, "audio"))
    info = decode.probe_video(bad)
    assert not info.has_audio and "audio" in info.audio_error
    assert len(list(decode.iter_video_frames(bad, info=info))) == info.n_sampled
    _raises_naming(bad, decode.read_audio, bad, match="audio cannot be decoded")
    _raises_naming(bad, lambda p: list(decode.iter_audio(p, 16000)), bad, match="audio cannot be decoded")


def test_audio_only_given_as_video(tmp_path, assets):
    m4a = tmp_path / "voice.m4a"
    with av.open(str(m4a), "w") as c:
        s = c.add_stream("aac", rate=16000, layout="mono")
        for k in range(0, 16000, 1024):
            f = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.float32), format="flt", layout="mono")
            f.sample_rate, f.pts = 16000, k
            for p in s.encode(f):
                c.mux(p)
        for p in s.encode():
            c.mux(p)
    _raises_naming(m4a, decode.probe_video, m4a, match="has no video stream; pass it as input_audio")
    mp3 = assets["test-2.mp3"]
    _raises_naming(mp3, decode.probe_video, mp3, match="has no video stream")


@pytest.mark.parametrize("reader", [decode.probe_video, decode.read_audio, decode.read_image,
                                    lambda p: list(decode.iter_audio(p, 16000))])
def test_empty_file(tmp_path, reader):
    empty = tmp_path / "empty.mp4"
    empty.write_bytes(b"")
    _raises_naming(empty, reader, empty, match=r"is empty \(0 bytes\)")


def test_not_media(tmp_path):
    junk = tmp_path / "notes.mp4"
    junk.write_bytes(b"this is not a video\n" * 50)
    _raises_naming(junk, decode.probe_video, junk, match="cannot be decoded as video")
    _raises_naming(junk, decode.read_image, junk, match="not an image")


def test_decompression_bomb(tmp_path, monkeypatch):
    """PIL refuses images over 2 x MAX_IMAGE_PIXELS before decoding them: a ModelFileError naming the
    file and its pixel count (the limit lowered here so that the test image is small)."""
    from PIL import Image

    path = tmp_path / "bomb.png"
    Image.new("RGB", (100, 100)).save(path)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)
    _raises_naming(path, decode.read_image, path, match="10,000 pixels.*decompression-bomb limit of 2,000")
