"""The picture of what was kept (pyomnisift.viz): its size, and dimmed patches exactly where the
keep mask says, from synthetic UnitRecords (runs anywhere) and from the model's own on_unit (the
chat API contract)."""

from __future__ import annotations

import subprocess
import sys
import time
import types

import numpy as np
import pytest

import pyomnisift
from pyomnisift import viz
from pyomnisift.media import decode
from tool_clips import write_clip

HAS_ON_UNIT = hasattr(pyomnisift, "UnitRecord")
needs_on_unit = pytest.mark.skipif(not HAS_ON_UNIT, reason="create_chat_completion(on_unit=...) is not on this branch yet")
WHITE = (255, 255, 255)


@pytest.fixture(scope="module")
def white_clip(tmp_path_factory):
    return write_clip(tmp_path_factory.mktemp("viz") / "white.mp4", seconds=2.0, color=WHITE)


def synthetic_records(info, n_grids, seed=0):
    """One unit per 2 grids (2 fps: a 2-s chunk), as on_unit reports them: video rows row-major
    at M-RoPE positions, then the chunk's 50 audio rows."""
    rng = np.random.default_rng(seed)
    gh, gw = info.height // 28, info.width // 28
    recs = []
    for c in range(0, n_grids, 2):
        mods, srcs, pos, keep = [], [], [], []
        for g in range(c, min(c + 2, n_grids)):
            rr, cc = np.divmod(np.arange(gh * gw), gw)
            mods.append(np.full(gh * gw, 1)); srcs.append(np.full(gh * gw, g))
            pos.append(np.stack([np.full(gh * gw, 3 + 25 * g), 3 + rr, 3 + cc]))
            keep.append(rng.random(gh * gw) < 0.4)
        n_a = 50
        mods.append(np.full(n_a, 2)); srcs.append(np.arange(c // 2 * n_a, c // 2 * n_a + n_a))
        pos.append(np.tile(np.arange(n_a) + 3 + 50 * c, (3, 1)))
        keep.append(rng.random(n_a) < 0.6)
        recs.append(types.SimpleNamespace(item=0, kind="video", modality=np.concatenate(mods).astype(np.int32),
                                          source_index=np.concatenate(srcs).astype(np.int32),
                                          positions=np.concatenate(pos, axis=1).astype(np.int32),
                                          keep=np.concatenate(keep)))
    return recs


def patch_pixels(result, g, r, c, f, px):
    """The pixels of patch (r, c) of grid g in frame f, less a 3-pixel border (bilinear edges)."""
    gh, gw = result.grids[g].shape
    x0, y0 = result.cells[g]
    tw, th = result.thumb
    x0 += f * (tw + result.gap)
    xa, xb = int(x0 + c * tw / gw) + 3, int(x0 + (c + 1) * tw / gw) - 3
    ya, yb = int(y0 + r * th / gh) + 3, int(y0 + (r + 1) * th / gh) - 3
    return px[ya:yb, xa:xb].reshape(-1, 3).astype(int)


def check_dimming(result, frame_ok=lambda p: p.mean() > 200, dim_ok=lambda p: p.mean() < 100):
    px = np.asarray(result.image.convert("RGB"))
    for g in result.shown:
        mask = result.grids[g]
        for r in range(mask.shape[0]):
            for c in range(mask.shape[1]):
                for f in (0, 1):
                    p = patch_pixels(result, g, r, c, f, px)
                    assert (frame_ok(p) if mask[r, c] else dim_ok(p)), (g, r, c, f, p.mean(), mask[r, c])


def test_render_size_and_dimmed_patches_match_the_mask(white_clip):
    info = decode.probe_video(white_clip, 2.0)
    n_grids = info.n_sampled // 2
    recs = synthetic_records(info, n_grids)
    t0 = time.perf_counter()
    result = viz.render(white_clip, "video", recs, video_fps=2.0)
    elapsed = time.perf_counter() - t0
    tw = 160
    th = round(tw * info.height / info.width)
    assert result.thumb == (tw, th)
    cols = min(4, n_grids)
    rows = -(-n_grids // cols)
    assert result.image.size == (max(20 + cols * (2 * tw + 4) + (cols - 1) * 10, 640),
                                 10 + 40 + rows * (16 + th + 10) + 124 + 16 + 10)
    for g in range(n_grids):
        want = np.concatenate([r.keep[(r.modality == 1) & (r.source_index == g)] for r in recs])
        np.testing.assert_array_equal(result.grids[g].reshape(-1), want)
    assert result.audio_keep is not None and len(result.audio_keep) == 50 * len(recs)
    check_dimming(result)
    assert "video" in result.summary() and "audio" in result.summary()
    print(f"\nviz.render of {n_grids} grids ({info.width}x{info.height} frames): {elapsed * 1000:.0f} ms")


def test_render_samples_at_most_max_pairs(white_clip, tmp_path):
    clip = write_clip(tmp_path / "long.mp4", seconds=6.0, color=WHITE)
    info = decode.probe_video(clip, 2.0)
    result = viz.render(clip, "video", synthetic_records(info, info.n_sampled // 2), max_pairs=3)
    assert len(result.shown) == 3 and result.shown[0] == 0 and result.shown[-1] == info.n_sampled // 2 - 1
    assert f"3 of {info.n_sampled // 2} pairs shown" in result.title
    everything = viz.render(clip, "video", synthetic_records(info, info.n_sampled // 2), max_pairs=16)
    assert len(everything.shown) == info.n_sampled // 2 and "pairs shown" not in everything.title


def test_pruned_patches_stay_visible_on_a_dark_clip(tmp_path):
    """On a black clip, darkening alone would leave pruned and kept patches equally black: every
    pruned patch carries the hatch's bright lines, no kept patch has any."""
    clip = write_clip(tmp_path / "dark.mp4", seconds=2.0, color=(0, 0, 0))
    info = decode.probe_video(clip, 2.0)
    result = viz.render(clip, "video", synthetic_records(info, info.n_sampled // 2, seed=3))
    px = np.asarray(result.image.convert("RGB"))
    n_pruned = 0
    for g in result.shown:
        mask = result.grids[g]
        for (r, c), kept in np.ndenumerate(mask):
            for f in (0, 1):
                p = patch_pixels(result, g, r, c, f, px)
                bright = (p.max(axis=1) > 150).mean()
                if kept:
                    assert p.max() < 40, (g, r, c, f)            # the black frame itself
                else:
                    n_pruned += 1
                    assert 0.1 < bright < 0.4, (g, r, c, f, bright)   # the hatch, one pixel in five
    assert n_pruned > 0


def test_the_legend_shows_each_mark(white_clip):
    """The legend (under the title) holds a kept and a pruned patch and a kept and a pruned audio
    token, drawn as the picture draws them."""
    info = decode.probe_video(white_clip, 2.0)
    result = viz.render(white_clip, "video", synthetic_records(info, info.n_sampled // 2))
    band = np.asarray(result.image.convert("RGB"))[10 + 18:10 + 30].reshape(-1, 3)
    colours = {tuple(c) for c in band}
    assert viz.HATCH in colours and viz.KEPT_AUDIO in colours and viz.PRUNED_AUDIO in colours
    assert (150, 150, 150) in colours and (33, 33, 33) in colours   # a grey patch kept and dimmed


@needs_on_unit
def test_visualize_masks_are_the_models(tiny_omni, white_clip, tmp_path):
    records = []
    tiny_omni.create_chat_completion([{"role": "user", "content": [
        {"type": "video_url", "video_url": {"url": str(white_clip)}}, {"type": "text", "text": "?"}]}],
        max_tokens=1, video_retention=0.3, audio_retention=0.5, on_unit=records.append)
    assert records and all(isinstance(r, pyomnisift.UnitRecord) for r in records)
    out = tmp_path / "kept.png"
    result = viz.visualize(tiny_omni, white_clip, "video", output=out, video_retention=0.3, audio_retention=0.5)
    assert out.is_file()
    for g, mask in result.grids.items():
        rows = [(r.positions[:, (r.modality == 1) & (r.source_index == g)], r.keep[(r.modality == 1) & (r.source_index == g)])
                for r in records if ((r.modality == 1) & (r.source_index == g)).any()]
        keep = np.concatenate([k for _, k in rows])
        assert mask.sum() == keep.sum() and mask.size == keep.size
        assert 0 < mask.mean() < 0.5          # 30% of each grid kept
    check_dimming(result)


@needs_on_unit
def test_viz_cli(tiny_model, white_clip, tmp_path):
    llm, mmproj = tiny_model
    out = tmp_path / "cli.png"
    p = subprocess.run([sys.executable, "-m", "pyomnisift", "viz", "-m", str(llm), "--mmproj", str(mmproj),
                        "--video", str(white_clip), "--video-retention", "0.25", "-t", "2", "-o", str(out)],
                       capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr
    assert out.is_file() and "wrote" in p.stdout
