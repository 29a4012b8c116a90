"""Small generated clips for the tool tests (CLI, server, picture)."""

from __future__ import annotations

import fractions
import wave
from pathlib import Path

import numpy as np


def write_clip(path: Path, seconds: float = 2.0, fps: int = 8, size=(112, 84), with_audio: bool = True,
               color=None) -> Path:
    """An mpeg4 clip (+ an AAC chirp); frames are a moving pattern, or one solid `color` (RGB)."""
    import av

    width, height = size
    yy, xx = np.mgrid[0:height, 0:width]
    with av.open(str(path), "w") as c:
        vs = c.add_stream("mpeg4", rate=fps)
        vs.width, vs.height, vs.pix_fmt, vs.bit_rate = width, height, "yuv420p", 2_000_000
        aus = c.add_stream("aac", rate=16000, layout="mono") if with_audio else None
        for i in range(int(seconds * fps)):
            if color is not None:
                img = np.empty((height, width, 3), np.uint8)
                img[:] = color
            else:
                img = np.stack([(xx * 255 // width + 9 * i) % 256, (yy * 255 // height) % 256,
                                ((xx + yy + 13 * i) % 64) * 4], axis=-1).astype(np.uint8)
            for p in vs.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                c.mux(p)
        for p in vs.encode():
            c.mux(p)
        if with_audio:
            t = np.arange(int(seconds * 16000)) / 16000
            pcm = (0.3 * np.sin(2 * np.pi * (200 + 150 * t) * t)).astype(np.float32)
            frame = av.AudioFrame.from_ndarray(pcm[None], format="flt", layout="mono")
            frame.sample_rate = 16000
            frame.time_base = fractions.Fraction(1, 16000)
            for p in aus.encode(frame):
                c.mux(p)
            for p in aus.encode():
                c.mux(p)
    return path


def write_wav(path: Path, seconds: float = 2.0) -> Path:
    t = np.arange(int(seconds * 16000)) / 16000
    pcm = 0.3 * np.sin(2 * np.pi * 300 * t) * (t % 0.5 < 0.25)
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(16000)
        w.writeframes((pcm * 32767).astype("<i2").tobytes())
    return path
