"""Video sampling against Qwen's own preprocessing, qwen-omni-utils (``qwen_omni_utils.v2_5
.fetch_video`` with its default reader, decord), on clips generated here: the same frame indices,
frame count, frame size and sample fps. The reference runs as published in a child process
(tests/media_reference.py); a reference that fails to import or to read a clip fails the test."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from media_clips import level, patch_mkv_duration, write_clip
from media_reference import reference_env
from pyomnisift.media import decode
from pyomnisift.media.sampling import frame_indices, plan_sampling

HERE = Path(__file__).resolve().parent

# name -> (writer kwargs, fetch_video keys / probe_video keyword arguments)
VFR_MS = np.cumsum([0] + [40] * 20 + [200] * 10 + [40] * 19).tolist()        # 25 fps, 2 s at 5 fps, 25 fps
CLIPS = {
    "fps1": (dict(n_frames=12, fps=1), {}),                          # a 1-fps timelapse, 12 s
    "short": (dict(n_frames=15, fps=10, size=(112, 84)), {}),        # 1.5 s: clamped up to 4 frames
    "long": (dict(n_frames=2400, fps=4), {}),                        # 10 minutes: clamped to 768
    "vfr": (dict(n_frames=50, fps=25, pts_ms=VFR_MS), {}),
    "odd": (dict(n_frames=30, fps=10, size=(333, 187)), {}),
    "rot90": (dict(n_frames=20, fps=10, size=(112, 84), rotation=90), {}),
    "rot270_odd": (dict(n_frames=21, fps=7, size=(333, 187), rotation=-90), {}),
    "rot180": (dict(n_frames=20, fps=10, size=(112, 84), rotation=180), {}),
    "overrides": (dict(n_frames=2400, fps=4), dict(fps=0.5, min_frames=6, max_frames=100,
                                                   min_pixels=16 * 28 * 28, max_pixels=64 * 28 * 28,
                                                   total_pixels=2_000_000)),
}
SAVED = ("short", "vfr", "odd", "rot90", "rot270_odd", "rot180")   # frames compared too


def run_reference(clips: list, tmp: Path, env_extra=None) -> dict:
    request = tmp / f"request-{len(list(tmp.glob('request-*')))}.json"
    request.write_text(json.dumps({"clips": clips}))
    proc = subprocess.run([sys.executable, str(HERE / "media_reference.py"), str(request)],
                          capture_output=True, text=True, env=reference_env(env_extra), timeout=600)
    assert proc.returncode == 0, f"qwen-omni-utils reference failed:\n{proc.stderr[-4000:]}"
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["backend"] == "decord", out["backend"]
    return out


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("media")
    paths = {}
    written = {}
    for name, (writer, _) in CLIPS.items():
        key = json.dumps(writer, default=list, sort_keys=True)
        if key not in written:
            written[key] = write_clip(tmp / f"{name}.mp4", **writer)
        paths[name] = written[key]
    base = write_clip(tmp / "base.mkv", n_frames=40, fps=10, fmt="matroska")
    paths["over_mkv"] = patch_mkv_duration(base, tmp / "over.mkv", 4 * 3600.0)   # claims 4 hours
    paths["under_mkv"] = patch_mkv_duration(base, tmp / "under.mkv", 1.0)       # claims 1 s of 4
    return tmp, paths


@pytest.fixture(scope="module")
def reference(clips):
    tmp, paths = clips
    names = list(CLIPS) + ["over_mkv", "under_mkv"]
    request = []
    for name in names:
        keys = CLIPS[name][1] if name in CLIPS else {}
        entry = {"video": str(paths[name]), **keys}
        if name in SAVED:
            entry["save"] = str(tmp / f"{name}.ref.npy")
        request.append(entry)
    out = run_reference(request, tmp)
    return dict(zip(names, out["clips"]))


def _ours(path, keys):
    return decode.probe_video(path, **keys)


@pytest.mark.parametrize("name", list(CLIPS) + ["over_mkv", "under_mkv"])
def test_sampling_matches_reference(name, clips, reference):
    _, paths = clips
    ref = reference[name]
    keys = CLIPS[name][1] if name in CLIPS else {}
    info = _ours(paths[name], keys)
    got = dict(total_frames=info.n_frames, video_fps=info.source_fps, nframes=info.n_sampled,
               indices=info.frame_indices.tolist(), size=[info.height, info.width],
               sample_fps=info.sample_fps)
    want = {k: ref[k] for k in got}
    assert got == want, f"{name}: ours {got} != reference {want}"
    assert info.seconds_per_grid == 2 / ref["sample_fps"]


def test_reference_numbers(reference):
    """The clamps, as the reference applies them (printed with -s)."""
    long, fps1, short = reference["long"], reference["fps1"], reference["short"]
    print(f"\n10-min clip: {long['total_frames']} frames at {long['video_fps']} fps -> nframes "
          f"{long['nframes']}, sample fps {long['sample_fps']}, size {long['size']}")
    assert (long["nframes"], long["sample_fps"]) == (768, 1.28)
    assert (fps1["nframes"], fps1["sample_fps"]) == (12, 1.0)            # never more than the frames
    assert short["nframes"] == 4 and short["sample_fps"] == pytest.approx(4 / 15 * 10)
    assert reference["over_mkv"]["total_frames"] == reference["under_mkv"]["total_frames"] == 40


@pytest.mark.parametrize("name", SAVED)
def test_frames_match_reference(name, clips, reference):
    """The frames themselves: the same source frames (each has its own grey level), upright as
    the reference reads them (decord applies the display matrix), within resampling noise
    (PIL's bicubic against torch's)."""
    tmp, paths = clips
    ref = np.load(tmp / f"{name}.ref.npy")
    ours = np.stack(list(decode.iter_video_frames(paths[name])))
    assert ours.shape == ref.shape, (ours.shape, ref.shape)
    diff = np.abs(ours.astype(np.int16) - ref.astype(np.int16))
    assert diff.mean() < 3.0, f"{name}: mean abs difference {diff.mean():.2f}"
    # Each frame's grey level is that of the frame the reference picked.
    picked = reference[name]["indices"]
    h, w = ours.shape[1:3]
    for k, i in enumerate(picked):
        assert abs(int(np.median(ours[k, h // 2:, w // 2:, 0])) - level(i)) <= 4


def test_rotation_upright(clips):
    """A 90-degree display matrix: the frame reaches the model rotated as a player shows it
    (counter-clockwise, so the white top-left block of the stored frame is bottom-left)."""
    _, paths = clips
    info = decode.probe_video(paths["rot90"])
    assert info.rotation == 90 and (info.source_height, info.source_width) == (112, 84)
    frame = next(decode.iter_video_frames(paths["rot90"], info=info))
    h, w = frame.shape[:2]
    assert h > w
    assert frame[-h // 8:, : w // 8].mean() > 240 and frame[: h // 8, : w // 8].mean() < 100


def test_pixel_budget_matches_reference(clips, monkeypatch):
    """The per-frame budget (total_pixels / nframes * 2) where it binds, with the reference's own
    knob: MODEL_SEQ_LEN=1600 gives 1,128,960 pixels for the whole clip, so 20 frames of 400x300
    must shrink to 112,896 pixels each."""
    tmp, _ = clips
    path = write_clip(tmp / "budget.mp4", n_frames=20, fps=2, size=(400, 300))
    [ref] = run_reference([{"video": str(path)}], tmp, {"MODEL_SEQ_LEN": "1600"})["clips"]
    monkeypatch.setenv("MODEL_SEQ_LEN", "1600")
    info = decode.probe_video(path)
    assert info.max_pixels == pytest.approx(1600 * 28 * 28 * 0.9 / 20 * 2)
    assert [info.height, info.width] == ref["size"] and info.height * info.width < 400 * 300
    assert info.frame_indices.tolist() == ref["indices"] and info.sample_fps == ref["sample_fps"]


def test_long_720p_budget():
    """The issue's case: 200 s of 1280x720 at 2 fps (400 frames) gets 504x896 frames, 576 tokens
    per grid, 115,200 video tokens (the fixed 768*28*28 bound gave 560x1008, 720 per grid, 144,000)."""
    plan = plan_sampling(400 * 15, 30.0, 720, 1280)
    assert plan.nframes == 400 and plan.sample_fps == 2.0
    assert (plan.height, plan.width) == (504, 896)
    assert plan.nframes // 2 * (plan.height // 28) * (plan.width // 28) == 115_200
    fixed = plan_sampling(400 * 15, 30.0, 720, 1280, total_pixels=1e12)   # the budget never binds
    assert (fixed.height, fixed.width) == (560, 1008)


def test_frame_indices_float32_like_torch():
    """The reference's linspace is float32; long clips round some indices differently from exact
    arithmetic, and frame_indices follows float32 (values recorded from torch 2.13 on AVX512)."""
    idx = frame_indices(18952, 768)
    exact = np.round(np.linspace(0, 18951, 768)).astype(np.int64)
    assert (idx != exact).sum() == 1
    assert idx[0] == 0 and idx[-1] == 18951 and np.all(np.diff(idx) > 0)


def test_iter_frames_count_and_size(clips):
    _, paths = clips
    info = decode.probe_video(paths["long"])
    n = 0
    for frame in decode.iter_video_frames(paths["long"], info=info):
        assert frame.shape == (info.height, info.width, 3)
        n += 1
    assert n == info.n_sampled == 768




@pytest.mark.parametrize("clip", ["x264", "test-3.mp4"])
def test_seeking_gives_the_frames_of_decoding_in_order(clip, clips, assets, monkeypatch):
    """Seeking to key frames (made to happen at every gap here) yields exactly the frames that
    decoding every frame in order yields: H.264 with B-frames and 8-frame GOPs, and test-3.mp4."""
    tmp, _ = clips
    if clip == "x264":
        path = write_clip(tmp / "x264.mp4", 160, 25, size=(96, 64), codec="libx264",
                          stream_options={"g": "8", "bf": "2"})
    else:
        path = assets[clip]
    info = decode.probe_video(path, fps=4.0)
    monkeypatch.setattr(decode, "_SEEK_GAIN", 0)
    seeking = list(decode._iter_seeking(path, str(path), info, decode._frame_converter(info)))
    in_order = list(decode.iter_video_frames(path, info=info, seek=False))
    assert len(seeking) == len(in_order) == info.n_sampled
    for k, (a, b) in enumerate(zip(seeking, in_order)):
        np.testing.assert_array_equal(a, b, err_msg=f"frame {k} (source {info.frame_indices[k]})")


def test_rules_on_many_numbers(tmp_path):
    """The reference's smart_resize and smart_nframes themselves, on a grid of sizes, bounds, frame
    counts and rates (odd sizes, extreme aspect ratios, sources below and above 2 fps, clamps)."""
    from pyomnisift.media.sampling import smart_nframes, smart_resize

    rng = np.random.default_rng(0)
    sizes = [[int(h), int(w), lo, hi] for h, w in rng.integers(1, 4000, (300, 2))
             for lo, hi in [(128 * 784, 768 * 784), (4 * 784, 16384 * 784), (128 * 784, 135000.5)]]
    sizes += [[187, 333, 100352, 235200], [14, 2800, 3136, 602112], [10, 2100, 3136, 3136 * 4]]
    counts = [[{}, int(t), float(f)] for t in rng.integers(4, 200000, 200) for f in (1.0, 2.0, 23.976, 30.0, 60.0)]
    counts += [[{"fps": 0.5, "min_frames": 6, "max_frames": 100}, 2400, 4.0], [{"fps": 4.0}, 15, 10.0],
               [{}, 3, 10.0], [{}, 1, 1.0], [{"min_frames": 7, "max_frames": 9}, 1000, 25.0]]
    request = tmp_path / "rules.json"
    request.write_text(json.dumps({"smart_resize": sizes, "smart_nframes": counts}))
    proc = subprocess.run([sys.executable, str(HERE / "media_reference.py"), str(request)],
                          capture_output=True, text=True, env=reference_env(), timeout=600)
    assert proc.returncode == 0, f"qwen-omni-utils reference failed:\n{proc.stderr[-4000:]}"
    ref = json.loads(proc.stdout.strip().splitlines()[-1])

    def ours_resize(h, w, lo, hi):
        try:
            return list(smart_resize(h, w, lo, hi))
        except ValueError:
            return "ValueError"

    def ours_count(ele, total, video_fps):
        try:
            return smart_nframes(total, video_fps, ele.get("fps", 2.0), ele.get("min_frames", 4),
                                 ele.get("max_frames"))
        except ValueError:
            return "ValueError"

    got = [ours_resize(*a) for a in sizes]
    bad = [(a, g, r) for a, g, r in zip(sizes, got, ref["smart_resize"]) if g != r]
    assert not bad, f"{len(bad)} sizes differ, e.g. {bad[:5]}"
    got = [ours_count(*a) for a in counts]
    bad = [(a, g, r) for a, g, r in zip(counts, got, ref["smart_nframes"]) if g != r]
    assert not bad, f"{len(bad)} counts differ, e.g. {bad[:5]}"


QWEN3_CLIPS = ("fps1", "short", "long", "odd", "rot270_odd")


def test_qwen3_sampling_matches_reference(clips):
    """Qwen3's vision (patch 16, merge 2: a 32-pixel factor; bounds of 128 and 768 tokens of 32 x 32),
    as qwen-omni-utils samples for it (fetch_video's image_patch_size=16)."""
    from pyomnisift.media import sampling

    tmp, paths = clips
    names = QWEN3_CLIPS
    out = run_reference([{"video": str(paths[n]), "image_patch_size": 16} for n in names], tmp)
    lo, hi = sampling.video_pixel_bounds(32)
    for name, ref in zip(names, out["clips"]):
        info = decode.probe_video(paths[name], 2.0, lo, hi, factor=32)
        got = dict(nframes=info.n_sampled, indices=info.frame_indices.tolist(), size=[info.height, info.width],
                   sample_fps=info.sample_fps)
        assert got == {k: ref[k] for k in got}, f"{name}: ours {got} != reference {ref}"
        assert info.height % 32 == 0 and info.width % 32 == 0
