"""A picture of what OmniSIFT kept: sampled frame pairs in a grid with the pruned patches dimmed, the
audio waveform under them with the kept audio tokens marked, and per-chunk counts.

    pyomnisift viz -m LLM.gguf --mmproj MMPROJ.gguf --video clip.mp4 -o kept.png

or from Python:

    from pyomnisift import viz
    result = viz.visualize(llm, "clip.mp4", kind="video", output="kept.png", video_retention=0.25)
    result.image            # a PIL image
    result.grids[g]         # bool [grid_h, grid_w]: the keep mask of frame grid g (frames 2g, 2g+1)
    result.audio_keep       # bool [audio rows]: the keep mask of the audio tokens (25 a second)

The masks come from the model's own run: `create_chat_completion(..., on_unit=...)` reports every
compression unit (a 2-s chunk: its frame grids and its audio) as a `pyomnisift.UnitRecord`; a grid
is row-major, grid_h x grid_w merged 28x28-pixel patches of the resized frame, and covers a pair of
frames. `render(path, kind, records)` draws records you already have.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any, Callable, Optional, Sequence

import numpy as np

PATCH = 28                      # pixels of a merged patch (vision patch 14 x spatial merge 2; Qwen3's: 32)
AUDIO_TOKENS_PER_S = 25
VIDEO, AUDIO, IMAGE = 1, 2, 3
DIM = 0.22                      # brightness of a pruned patch
HATCH = (235, 64, 64)           # its diagonal lines: a pruned patch of a dark frame stays visible
HATCH_PERIOD = 5                # pixels between two lines
KEPT_AUDIO = (46, 160, 67)
PRUNED_AUDIO = (70, 70, 70)
BG, FG, MUTED = (255, 255, 255), (20, 20, 20), (110, 110, 110)


@dataclasses.dataclass
class VizResult:
    image: Any                                  # PIL.Image.Image
    kind: str
    grids: dict                                 # grid index -> bool [gh, gw]   (video; image: {0: mask})
    audio_keep: Optional[np.ndarray]            # bool [audio rows], or None
    chunks: list                                # per unit: {"video": (kept, in), "audio": (kept, in)}
    shown: list                                 # grid indices drawn, in order
    cells: dict                                 # grid index -> (x, y) of its first frame's thumbnail
    thumb: tuple                                # (width, height) of one frame's thumbnail
    gap: int                                    # pixels between the two frames of a pair
    title: str = ""                             # the line drawn at the top

    def patch_center(self, grid: int, row: int, col: int, frame: int = 0) -> tuple:
        """Pixel (x, y) at the centre of patch (row, col) of `grid` in frame 0 or 1 of its pair."""
        gh, gw = self.grids[grid].shape
        x0, y0 = self.cells[grid]
        tw, th = self.thumb
        x0 += frame * (tw + self.gap)
        return int(x0 + (col + 0.5) * tw / gw), int(y0 + (row + 0.5) * th / gh)

    def summary(self) -> str:
        parts = []
        for kind in ("video", "audio", "image"):
            kept = sum(c.get(kind, (0, 0))[0] for c in self.chunks)
            total = sum(c.get(kind, (0, 0))[1] for c in self.chunks)
            if total:
                parts.append(f"{kind} {total} -> {kept} tokens ({kept / total:.0%})")
        return ", ".join(parts) or "no media tokens"


def _field(record, name):
    value = record[name] if isinstance(record, dict) else getattr(record, name)
    return np.asarray(value)


def _collect(records: Sequence, item: int = 0):
    """Keep masks per grid, per audio row, and per-unit counts, from on_unit records."""
    grids: dict = {}
    audio: dict = {}
    chunks = []
    for rec in records:
        rec_item = rec["item"] if isinstance(rec, dict) else getattr(rec, "item", 0)
        if rec_item != item:
            continue
        mod = _field(rec, "modality").astype(np.int32)
        src = _field(rec, "source_index").astype(np.int64)
        pos = _field(rec, "positions").astype(np.int64).reshape(3, -1)
        keep = _field(rec, "keep").astype(bool)
        counts = {}
        for m, name in ((VIDEO, "video"), (AUDIO, "audio"), (IMAGE, "image")):
            sel = mod == m
            if sel.any():
                counts[name] = (int(keep[sel].sum()), int(sel.sum()))
        chunks.append(counts)
        for m in (VIDEO, IMAGE):
            for g in np.unique(src[mod == m]):
                sel = (mod == m) & (src == g)
                grids.setdefault(int(g), []).append((pos[1][sel], pos[2][sel], keep[sel]))
        sel = mod == AUDIO
        for i, k in zip(src[sel], keep[sel]):
            audio[int(i)] = bool(k)
    masks = {}
    for g, parts in grids.items():
        h = np.concatenate([p[0] for p in parts])
        w = np.concatenate([p[1] for p in parts])
        k = np.concatenate([p[2] for p in parts])
        r, c = h - h.min(), w - w.min()
        mask = np.zeros((int(r.max()) + 1, int(c.max()) + 1), bool)
        mask[r, c] = k
        masks[g] = mask
    audio_keep = None
    if audio:
        audio_keep = np.zeros(max(audio) + 1, bool)
        for i, k in audio.items():
            audio_keep[i] = k
    return masks, audio_keep, chunks


def _pruned_look(pixels: np.ndarray) -> np.ndarray:
    """Pixels [h, w, 3] as a pruned patch shows them: darkened and hatched. Darkening alone would
    leave a dark frame's pruned patches as dark as its kept ones."""
    yy, xx = np.mgrid[0:pixels.shape[0], 0:pixels.shape[1]]
    lines = ((xx + yy) % HATCH_PERIOD == 0)[..., None]
    return np.where(lines, np.asarray(HATCH, np.float32), pixels * DIM)


def _dimmed(frame: np.ndarray, mask: np.ndarray, size: tuple):
    """The frame as a (w, h) thumbnail with the pruned patches of `mask` darkened and hatched."""
    from PIL import Image

    thumb = np.asarray(Image.fromarray(frame).resize(size, Image.BILINEAR), dtype=np.float32)
    m = np.asarray(Image.fromarray(mask.astype(np.uint8) * 255).resize(size, Image.NEAREST)) > 0
    out = np.where(m[..., None], thumb, _pruned_look(thumb))
    return Image.fromarray(out.clip(0, 255).astype(np.uint8))


def _legend(image, draw, x: int, y: int, with_video: bool, with_audio: bool) -> None:
    """Swatches: a kept and a pruned patch (of a mid-grey frame), a kept and a pruned audio token."""
    from PIL import Image

    items = []
    if with_video:
        grey = np.full((12, 18, 3), 150.0, np.float32)
        items += [(grey, "kept patch"), (_pruned_look(grey), "pruned patch")]
    if with_audio:
        items += [(np.broadcast_to(np.float32(KEPT_AUDIO), (12, 18, 3)), "kept audio token"),
                  (np.broadcast_to(np.float32(PRUNED_AUDIO), (12, 18, 3)), "pruned audio token")]
    for swatch, label in items:
        image.paste(Image.fromarray(swatch.astype(np.uint8)), (x, y))
        draw.rectangle((x, y, x + 17, y + 11), outline=MUTED)
        draw.text((x + 22, y), label, fill=MUTED)
        x += 22 + int(draw.textlength(label)) + 14


def _waveform(draw, pcm: Optional[np.ndarray], keep: Optional[np.ndarray], box: tuple, duration: float) -> None:
    x0, y0, x1, y1 = box
    width, height = x1 - x0, y1 - y0
    wave_h = height - 14
    draw.rectangle(box, fill=(246, 246, 246))
    if keep is not None and len(keep):
        n = len(keep)
        span = n / AUDIO_TOKENS_PER_S if duration <= 0 else duration
        for r in range(n):
            a = x0 + width * (r / AUDIO_TOKENS_PER_S) / span
            b = x0 + width * ((r + 1) / AUDIO_TOKENS_PER_S) / span
            if keep[r]:
                draw.rectangle((a, y0, max(a, b - 0.01), y0 + wave_h), fill=(214, 240, 218))
            draw.rectangle((a, y0 + wave_h + 2, max(a, b - 1), y1), fill=KEPT_AUDIO if keep[r] else PRUNED_AUDIO)
    if pcm is not None and len(pcm):
        mid = y0 + wave_h / 2
        peak = float(np.abs(pcm).max()) or 1.0
        cols = np.array_split(pcm, width)
        for i, c in enumerate(cols):
            if len(c):
                lo, hi = float(c.min()) / peak, float(c.max()) / peak
                draw.line((x0 + i, mid - hi * wave_h / 2, x0 + i, mid - lo * wave_h / 2), fill=(40, 90, 160))


def render(path, kind: str, records: Sequence, video_fps: float = 2.0, max_pairs: int = 16,
           thumb_width: int = 160, pairs_per_row: int = 4, title: Optional[str] = None,
           patch: int = PATCH) -> VizResult:
    """Draws the picture of `records` (UnitRecords of one run on `path`); returns a VizResult.
    `patch`: pixels of the model's merged patch (its family's: 28, Qwen3's 32)."""
    from PIL import Image, ImageDraw

    from .media import decode

    if kind not in ("video", "audio", "image"):
        raise ValueError(f"kind must be video, audio or image, got {kind!r}")
    masks, audio_keep, chunks = _collect(records)
    pcm, duration = None, 0.0
    if kind in ("video", "audio"):
        try:
            pcm = decode.read_audio(path)
            duration = len(pcm) / decode.SAMPLE_RATE
        except Exception:
            pcm = None          # a video without a sound track
    frames_of: dict = {}
    tw = thumb_width
    if kind == "video":
        from .media import sampling

        info = decode.probe_video(path, video_fps, *sampling.video_pixel_bounds(patch), factor=patch)
        th = max(1, round(tw * info.height / info.width))
        duration = duration or info.duration
        order = sorted(masks)
        if len(order) > max_pairs:
            order = [order[i] for i in np.unique(np.round(np.linspace(0, len(order) - 1, max_pairs)).astype(int))]
        wanted = {2 * g + f for g in order for f in (0, 1)}
        for i, frame in enumerate(decode.iter_video_frames(path, info=info)):
            if i in wanted:
                frames_of[i] = frame
        gw_expected, gh_expected = info.width // patch, info.height // patch
        for g in order:
            if masks[g].shape != (gh_expected, gw_expected):
                raise ValueError(f"grid {g} is {masks[g].shape}, but frames of {info.width}x{info.height} make "
                                 f"{gh_expected}x{gw_expected} patches (is video_fps the model's?)")
    elif kind == "image":
        img = decode.read_image(path)
        order = sorted(masks)[:1]
        tw = max(thumb_width, 2 * thumb_width + 6)
        if order:
            gh, gw = masks[order[0]].shape
            th = max(1, round(tw * gh / gw))
            frames_of[0] = np.asarray(Image.fromarray(img).resize((gw * patch, gh * patch), Image.BICUBIC))
        else:
            th = max(1, round(tw * img.shape[0] / img.shape[1]))
    else:
        order, th = [], 0

    margin, gap, caption, header = 10, 4, 16, 40   # header: the title, then the legend
    cell_w = (2 * tw + gap) if kind == "video" else tw
    cols = max(1, min(pairs_per_row, len(order))) if order else 1
    rows = (len(order) + cols - 1) // cols if order else 0
    width = max(2 * margin + cols * cell_w + (cols - 1) * margin, 640)
    grid_h = rows * (caption + th + margin)
    audio_h = 124 if (pcm is not None or audio_keep is not None) else 0
    label_h = 16 if audio_h else 0
    height = margin + header + grid_h + audio_h + label_h + margin
    image = Image.new("RGB", (width, height), BG)
    draw = ImageDraw.Draw(image)
    name = os.path.basename(str(path))
    summary = VizResult(image, kind, masks, audio_keep, chunks, order, {}, (tw, th), gap).summary()
    if kind == "video" and len(order) < len(masks):
        summary += f"; {len(order)} of {len(masks)} pairs shown"
    title = title or f"OmniSIFT kept: {name}: {summary}"
    draw.text((margin, margin), title, fill=FG)
    _legend(image, draw, margin, margin + 18, bool(order), bool(audio_h))

    cells = {}
    y = margin + header
    for idx, g in enumerate(order):
        r, c = divmod(idx, cols)
        x = margin + c * (cell_w + margin)
        cy = y + r * (caption + th + margin)
        mask = masks[g]
        kept, total = int(mask.sum()), mask.size
        if kind == "video":
            t = 2 * g / video_fps
            draw.text((x, cy), f"frames {2 * g}-{2 * g + 1} (t {t:.1f} s): {kept}/{total} kept", fill=MUTED)
            for f in (0, 1):
                frame = frames_of.get(2 * g + f)
                if frame is not None:
                    image.paste(_dimmed(frame, mask, (tw, th)), (x + f * (tw + gap), cy + caption))
        else:
            draw.text((x, cy), f"image: {kept}/{total} patches kept", fill=MUTED)
            image.paste(_dimmed(frames_of[0], mask, (tw, th)), (x, cy + caption))
        cells[g] = (x, cy + caption)

    if audio_h:
        ay = margin + header + grid_h
        draw.text((margin, ay), "audio: waveform; its tokens (25 a second) below it, kept ones green", fill=MUTED)
        box = (margin, ay + 14, width - margin, ay + audio_h - 4)
        if not duration and audio_keep is not None:
            duration = len(audio_keep) / AUDIO_TOKENS_PER_S
        _waveform(draw, pcm, audio_keep, box, duration)
        # per-chunk counts (2-s chunks), where they fit
        n_chunks = len(chunks)
        if n_chunks and duration > 0:
            span = (box[2] - box[0]) / max(duration / 2.0, 1e-9)
            for i, counts in enumerate(chunks):
                cx = box[0] + i * span
                if i:
                    draw.line((cx, box[1], cx, box[3]), fill=(180, 180, 180))
                label = "  ".join(f"{k} {v[0]}/{v[1]}" for k, v in counts.items())
                if span >= 7 * len(label):
                    draw.text((cx + 3, box[3] + 3), label, fill=MUTED)
    return VizResult(image, kind, masks, audio_keep, chunks, order, cells, (tw, th), gap, title)


def visualize(llm, path, kind: str = "video", output=None, prompt: str = "Describe this.",
              video_fps: Optional[float] = None, max_pairs: int = 16, records: Optional[Sequence] = None,
              thumb_width: int = 160, progress: Optional[Callable[[str, int, int], None]] = None,
              **compression) -> VizResult:
    """Runs `llm` (a pyomnisift.Llama) on one media file, recording what OmniSIFT keeps through
    `on_unit`, and draws it (saved to `output` if given). `compression`: video_retention,
    audio_retention, image_retention, audio_selector, fit_context for this run. video_fps must be
    the model's (default: its settings' video_fps). `progress(stage, done, total)` as in
    create_chat_completion. The model's context is reset first, so that every unit is decoded (and
    reported) anew."""
    if not os.path.isfile(os.fspath(path)):
        raise FileNotFoundError(f"{kind} file not found: {path}")
    if video_fps is None:
        video_fps = float(getattr(getattr(llm, "settings", None), "video_fps", 2.0) or 2.0)
    if records is None:
        records = []
        part = {"video": {"type": "video_url", "video_url": {"url": os.path.abspath(path)}},
                "image": {"type": "image_url", "image_url": {"url": os.path.abspath(path)}},
                "audio": {"type": "input_audio", "input_audio": {"data": "file://" + os.path.abspath(path),
                                                                  "format": os.path.splitext(path)[1].lstrip(".")}}}
        if kind not in part:
            raise ValueError(f"kind must be video, audio or image, got {kind!r}")
        messages = [{"role": "user", "content": [part[kind], {"type": "text", "text": prompt}]}]
        if hasattr(llm, "reset"):
            llm.reset()     # on_unit reports what is decoded: media the context still held would not be
        if progress is not None:
            compression["progress"] = progress
        llm.create_chat_completion(messages, max_tokens=1, temperature=0, on_unit=records.append, **compression)
        if not records:
            raise RuntimeError("the model reported no compression units (on_unit was never called)")
    family = getattr(getattr(llm, "chat_handler", None), "family", None)
    result = render(path, kind, records, video_fps=video_fps, max_pairs=max_pairs, thumb_width=thumb_width,
                    patch=getattr(family, "patch", PATCH))
    if output is not None:
        result.image.save(output)
    return result


__all__ = ["VizResult", "render", "visualize"]
