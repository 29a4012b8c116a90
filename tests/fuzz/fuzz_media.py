"""Fuzz media ingestion (media.decode.probe_video + iter_video_frames, read_audio, read_image) with
mutated and truncated bytes. The first byte picks the reader; the rest is the file. Seeds: small
generated mp4 / webm / mkv / mp3 / wav / png / jpeg / gif / tiff / bmp / webp files, and the pinned test-1.jpeg cut down."""

from __future__ import annotations

import io

import numpy as np

from _common import cache_dir, expect, main

from pyomnisift.media import decode

READERS = ["video", "audio", "image"]


def _video(fmt, codec, audio):
    import av

    buf = io.BytesIO()
    with av.open(buf, "w", format=fmt) as c:
        vs = c.add_stream(codec, rate=4)
        vs.width, vs.height, vs.pix_fmt = 32, 32, "yuv420p"
        aus = c.add_stream(audio, rate=16000, layout="mono") if audio else None
        for i in range(6):
            img = np.full((32, 32, 3), 40 * i, np.uint8)
            for p in vs.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                c.mux(p)
        for p in vs.encode():
            c.mux(p)
        if aus is not None:
            frame = av.AudioFrame.from_ndarray(np.zeros((1, 4000), np.float32) + 0.1, format="fltp", layout="mono")
            frame.sample_rate = 16000
            for p in list(aus.encode(frame)) + list(aus.encode()):
                c.mux(p)
    return buf.getvalue()


def _audio(fmt, codec):
    import av

    buf = io.BytesIO()
    with av.open(buf, "w", format=fmt) as c:
        aus = c.add_stream(codec, rate=16000, layout="mono")
        t = np.arange(8000) / 16000
        frame = av.AudioFrame.from_ndarray((0.3 * np.sin(2000 * t)).astype(np.float32)[None],
                                           format="fltp" if codec != "pcm_s16le" else "flt", layout="mono")
        frame.sample_rate = 16000
        for p in list(aus.encode(frame)) + list(aus.encode()):
            c.mux(p)
    return buf.getvalue()


def _image(fmt, size=(24, 16)):
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, size + (3,), np.uint8)).save(buf, fmt)
    return buf.getvalue()


def seeds():
    out = cache_dir() / "media-seeds"
    if not out.is_dir():
        out.mkdir()
        files = {"v.mp4": _video("mp4", "mpeg4", "aac"), "v.webm": _video("webm", "libvpx", "libopus"),
                 "v.mkv": _video("matroska", "mpeg4", None), "a.mp3": _audio("mp3", "mp3"),
                 "a.wav": _audio("wav", "pcm_s16le"), "i.png": _image("PNG"), "i.jpg": _image("JPEG"),
                 "tall.png": _image("PNG", (400, 2)), "i.gif": _image("GIF"), "i.tiff": _image("TIFF"),
                 "i.bmp": _image("BMP"), "i.webp": _image("WEBP")}
        for name, data in files.items():
            (out / name).write_bytes(data)
    kind = {"mp4": 0, "webm": 0, "mkv": 0, "mp3": 1, "wav": 1, "png": 2, "jpg": 2, "jpeg": 2, "gif": 2, "tiff": 2,
            "bmp": 2, "webp": 2}
    found = [bytes([kind[p.suffix[1:]]]) + p.read_bytes() for p in sorted(out.iterdir())]
    # the pinned assets, cut to their first 16 KiB (a truncated download; libFuzzer's inputs stay small)
    from pyomnisift.assets import ensure_assets

    assets = ensure_assets()
    return found + [bytes([k]) + assets[name].read_bytes()[:16384]
                    for k, name in ((0, "test-3.mp4"), (1, "test-2.mp3"), (2, "test-1.jpeg"))]


def test_one(data: bytes) -> None:
    if not data:
        return
    reader, src = READERS[data[0] % 3], io.BytesIO(data[1:])
    if reader == "video":
        info = expect(decode.probe_video, src)
        if info is not None:
            expect(lambda: sum(1 for _ in decode.iter_video_frames(src, info=info)))
    elif reader == "audio":
        expect(decode.read_audio, src)
    else:
        expect(decode.read_image, src)


if __name__ == "__main__":
    main(test_one, seeds=seeds)
