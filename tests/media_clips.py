"""Small test videos written with PyAV + numpy (no system tools): each frame is one grey level that
encodes its index, with a white block in its top-left corner (so that orientation shows), and
optionally a tone on an audio track."""

from __future__ import annotations

import fractions
import struct

import numpy as np


def level(i: int) -> int:
    """The grey level of frame i: neighbouring frames differ by 37 levels."""
    return 20 + (i * 37) % 200


def frame_image(i: int, size) -> np.ndarray:
    w, h = size
    img = np.full((h, w, 3), level(i), np.uint8)
    img[:max(2, h // 3), :max(2, w // 3)] = 255
    return img


def write_clip(path, n_frames: int, fps=10, size=(64, 48), *, rotation=None, pts_ms=None,
               fmt=None, audio_seconds=None, codec="mpeg4", options=None, stream_options=None):
    """n_frames frames at `fps` (or at the millisecond timestamps `pts_ms`: variable frame rate),
    `rotation` degrees counter-clockwise in the display matrix, an AAC tone of `audio_seconds`."""
    import av

    with av.open(str(path), "w", format=fmt, options=options or {}) as c:
        vs = c.add_stream(codec, rate=fps, options=stream_options or {})
        vs.width, vs.height, vs.pix_fmt = size[0], size[1], "yuv420p"
        if pts_ms is not None:
            vs.codec_context.time_base = fractions.Fraction(1, 1000)
        if rotation is not None:
            vs.set_display_rotation(rotation)
        aus = c.add_stream("aac", rate=16000, layout="mono") if audio_seconds else None
        for i in range(n_frames):
            frame = av.VideoFrame.from_ndarray(frame_image(i, size), format="rgb24")
            if pts_ms is not None:
                frame.pts, frame.time_base = int(pts_ms[i]), fractions.Fraction(1, 1000)
            for p in vs.encode(frame):
                c.mux(p)
        for p in vs.encode():
            c.mux(p)
        if aus is not None:
            t = np.arange(int(audio_seconds * 16000)) / 16000
            pcm = (0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
            for k in range(0, len(pcm), 1024):
                af = av.AudioFrame.from_ndarray(pcm[None, k:k + 1024], format="flt", layout="mono")
                af.sample_rate, af.pts = 16000, k
                for p in aus.encode(af):
                    c.mux(p)
            for p in aus.encode():
                c.mux(p)
    return path


def patch_mkv_duration(src, dst, seconds: float):
    """A copy of a Matroska file whose Segment Info Duration claims `seconds` (the 8-byte float
    element 0x4489), so its header lies about the length of the stream."""
    data = bytearray(open(src, "rb").read())
    k = data.find(b"\x44\x89\x88")
    assert k >= 0, "no 8-byte Duration element"
    data[k + 3:k + 11] = struct.pack(">d", seconds * 1000.0)   # in TimestampScale units (1 ms)
    open(dst, "wb").write(bytes(data))
    return dst
