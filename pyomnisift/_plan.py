"""Planning: a prompt (text pieces + media) -> the exact sequence it becomes, before anything is
encoded.

Every media item is probed (frame count and size, audio sample count), laid out as the model's omni
sequence (_sequence.py) and its kept count taken from the C rules (omnisift_sift_n_kept), so the plan
knows every position and every KV cell the prompt will take: an over-long prompt fails here, and a
prompt whose beginning the context already holds is recognised here.

Positions follow llama-cpp-python's convention: `Plan.ids[p]` is what occupies position p (a text
token, or for media a placeholder derived from the item's identity), and a context that holds
positions [0, n) has `llama.n_tokens == n`. Under M-RoPE a media item spans fewer positions than it
has rows (a frame grid shares one t), so `n_cells`, not `len(ids)`, is what the KV cache holds.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import time
from typing import Callable, Optional

import numpy as np

from . import _mel_stream, _sequence as S
from .media import decode, sampling
from ._audio import n_tokens as audio_n_tokens
from ._errors import ModelFileError
from ._families import TEXT_ONLY, Family
from ._prompt import MediaItem, Prompt
from ._settings import Settings
from ._sift import n_kept as sift_n_kept

IMAGE_MIN_TOKENS = 4                 # qwen-omni-utils' fetch_image bounds, in merged tokens of patch x patch
IMAGE_MAX_TOKENS = 1280              # pixels (28 for Qwen2.5, 32 for Qwen3: its image_patch_size 16 x merge 2)
PLACEHOLDER_SPACE = 1 << 30          # placeholders are -1 .. -2**30: never a token id
AUDIO_BLOCK = 32000                  # samples per block read from an audio track (2 s)


@dataclasses.dataclass
class Layout:
    """The rows of one media item in sequence order."""
    blocks: list
    modality: np.ndarray    # int32 [N]
    positions: np.ndarray   # int32 [3, N] (t, h, w), absolute
    source: np.ndarray      # int64 [N]: grid index (video), audio row (audio), 0 (image)

    @staticmethod
    def of(blocks: list) -> "Layout":
        mod = np.concatenate([np.full(b.n_rows, b.modality, np.int32) for b in blocks])
        pos = np.ascontiguousarray(np.concatenate([b.positions for b in blocks], axis=1), dtype=np.int32)
        src = np.concatenate([
            np.full(b.n_rows, b.source_index, np.int64) if b.modality == S.MODALITY_VIDEO
            else np.arange(b.source_index, b.source_index + b.n_rows, dtype=np.int64) if b.modality == S.MODALITY_AUDIO
            else np.zeros(b.n_rows, np.int64) for b in blocks])
        return Layout(blocks, mod, pos, src)

    @property
    def n_rows(self) -> int:
        return len(self.modality)


@dataclasses.dataclass
class Probe:
    """What a media item costs, read from its headers and streams (nothing encoded)."""
    kind: str                                  # "image" | "audio" | "video"
    grid: tuple = (0, 0)                       # merged tokens (h, w) of an image / video frame
    video: Optional[object] = None             # decode.VideoInfo
    n_audio: int = 0                           # audio rows
    n_samples: int = 0                         # 16 kHz samples of the audio
    audio_rows: Optional[np.ndarray] = None    # towers that only encode whole clips (libmtmd's)
    audio_plan: Optional[object] = None        # _mel_stream.AudioPlan: our windowed tower streams
    warnings: tuple = ()
    patch: int = 28                            # pixels per grid token side (the frames are resized to grid * patch)


@dataclasses.dataclass
class TextSegment:
    tokens: list
    start: int

    @property
    def end(self) -> int:
        return self.start + len(self.tokens)


@dataclasses.dataclass
class MediaSegment:
    index: int                  # the item's index in the prompt
    item: MediaItem
    probe: Probe
    layout: Layout
    start: int                  # first position of the span
    end: int                    # one past its last
    rows_start: int             # where the layout's positions start (M-RoPE)
    open_tokens: list           # at position `start` (video with sound: vision_bos, audio_bos)
    close_tokens: list          # at the span's last position (audio_eos, vision_eos)
    n_kept: int                 # rows decoded
    n_kept_video: int
    key: bytes                  # identity: content and every setting that changes its rows
    placeholders: np.ndarray    # int32 [end - start]
    wrappers_apart: bool = False  # open / close tokens at consecutive positions (Qwen3-Omni), not one
    # text inside the span (Qwen3-VL: before each grid its timestamp and wrappers): tokens, their
    # positions, and the grid each comes before
    text_tokens: np.ndarray = dataclasses.field(default_factory=lambda: np.zeros(0, np.int32))
    text_pos: np.ndarray = dataclasses.field(default_factory=lambda: np.zeros(0, np.int32))
    text_grid: np.ndarray = dataclasses.field(default_factory=lambda: np.zeros(0, np.int64))

    @property
    def n_cells(self) -> int:
        return len(self.open_tokens) + self.n_kept + len(self.close_tokens) + len(self.text_tokens)


@dataclasses.dataclass
class Plan:
    segments: list
    ids: list                   # one entry per position (see module docstring)
    n_cells: int                # KV cells the prompt takes
    settings: Settings

    @property
    def media(self) -> list:
        return [s for s in self.segments if isinstance(s, MediaSegment)]

    @property
    def media_end(self) -> int:
        """Position after the last media item (0 without media): decoding beyond it is plain text."""
        media = self.media
        return media[-1].end if media else 0

    def retention_used(self) -> dict:
        """The retentions as they applied. Audio is selected by what is seen (each chunk's audio
        against the video tokens that survived beside it), so audio without a video (an audio file)
        is kept whole: a prompt whose audio is all outside videos used audio retention 1.0."""
        s = self.settings
        out = {k: getattr(s, k) for k in ("video_retention", "audio_retention", "image_retention")}
        audio_kinds = {seg.probe.kind for seg in self.media if seg.probe.n_audio}
        if audio_kinds and "video" not in audio_kinds:
            out["audio_retention"] = 1.0
        return out

    def counts(self) -> dict:
        out = {m: {"tokens_in": 0, "tokens_kept": 0} for m in ("video", "audio", "image")}
        out["audio"]["padding_avoided"] = 0   # rows llama.cpp's 30-s windows would have added
        for seg in self.media:
            if seg.probe.n_samples and seg.probe.audio_rows is None:
                windows = seg.probe.n_samples // (30 * 16000) + 1
                out["audio"]["padding_avoided"] += max(0, windows * 750 - seg.probe.n_audio)
            mod = seg.layout.modality
            n_video, n_audio, n_image = (int((mod == m).sum()) for m in
                                         (S.MODALITY_VIDEO, S.MODALITY_AUDIO, S.MODALITY_IMAGE))
            out["video"]["tokens_in"] += n_video
            out["audio"]["tokens_in"] += n_audio
            out["image"]["tokens_in"] += n_image
            if seg.probe.kind == "image":
                out["image"]["tokens_kept"] += seg.n_kept
            else:
                out["video"]["tokens_kept"] += seg.n_kept_video
                out["audio"]["tokens_kept"] += seg.n_kept - seg.n_kept_video
        return out


class ContextOverflow(ValueError):
    """The prompt needs more KV cells than the context has. Its fields let a front end word the
    advice in its own terms (``advice(...)``: the command line names its flags); ``str()`` names
    the Python arguments."""

    def __init__(self, *, n_cells: int, n_text: int, media_kept: int, media_in: int, reserve: int, n_ctx: int,
                 prunable_in: int, prunable_kept: int):
        self.n_cells, self.n_text, self.media_kept, self.media_in = n_cells, n_text, media_kept, media_in
        self.reserve, self.n_ctx = reserve, n_ctx
        # what video / audio retention would fit: only video and a video's own audio shrink with
        # them (audio outside a video is kept whole, images follow image_retention); 5% below the
        # exact ratio for the rounding per group
        room = n_ctx - reserve - n_text - (media_kept - prunable_kept)
        self.fitting_retention = 0.95 * room / prunable_in if prunable_in and room > 0 else None
        super().__init__(self.advice())

    def advice(self, n_ctx: str = "n_ctx", fit_context: str = "fit_context=True",
               retention: str = "video/audio retention") -> str:
        msg = (f"the prompt needs {self.n_cells} tokens after compression ({self.n_text} text + "
               f"{self.media_kept} of {self.media_in} media tokens)"
               + (f" plus {self.reserve} to generate" if self.reserve else "") + f" but {n_ctx} is {self.n_ctx}")
        if self.fitting_retention is None:
            what = "the text alone does" if not self.media_in else "what no retention shrinks does"
            return msg + f"; {what} not fit: raise {n_ctx}"
        return msg + (f"; a {retention} of about {self.fitting_retention:.2f} would fit, "
                      f"or pass {fit_context}, or raise {n_ctx}")


def placeholders(key: bytes, n: int) -> np.ndarray:
    base = int.from_bytes(hashlib.sha256(key).digest()[:8], "little") % PLACEHOLDER_SPACE
    return (-(1 + (base + np.arange(n, dtype=np.int64)) % PLACEHOLDER_SPACE)).astype(np.int32)


PROBES_KEPT = 64                  # probes remembered by content
PROBE_ROWS_BYTES = 64 << 20       # of which audio rows encoded at planning (libmtmd's), at most


def _rows_bytes(probe: Probe) -> int:
    return np.asarray(probe.audio_rows).nbytes if probe.audio_rows is not None else 0


class Planner:
    """Turns prompts into plans for one model: its tokenizer, RoPE kind and encoders."""

    def __init__(self, *, tokenize: Callable[[str, bool], list], uses_mrope: bool, vision, audio,
                 audio_windowed: bool, family: Family = TEXT_ONLY, head_id: str = ""):
        self.tokenize = tokenize            # (text, add_bos) -> token ids
        self.uses_mrope = uses_mrope
        self.vision = vision                # MtmdEncoder or None
        self.audio = audio                  # AudioTower / MtmdEncoder (encode_audio) or None
        self.audio_windowed = audio_windowed
        self.head_id = head_id              # identity of the learned selector head, part of media keys
        # the family's layout rules: wrappers, video t ids a second, grid patch, how a video's own
        # audio goes with it, timestamps (_families.Family)
        self.family = family
        self.audio_bos = tokenize(family.audio_bos, False)
        self.audio_eos = tokenize(family.audio_eos, False)
        self.vision_bos = tokenize(family.vision_bos, False)
        self.vision_eos = tokenize(family.vision_eos, False)
        self._digests: dict = {}
        self._probes: dict = {}
        # time and calls of towers that encode whole clips while probing (libmtmd's audio): the
        # handler reports them as encoding, not as media decoding
        self.audio_encoded_ms = 0.0
        self.audio_encoder_calls = 0

    # --- probing

    def probe(self, item: MediaItem, settings: Settings) -> Probe:
        """The item's costs; remembered by content, so a follow-up turn does not read the media again."""
        key = (self.digest(item), item.kind, settings.video_fps if item.kind == "video" else None)
        probe = self._probes.get(key)
        if probe is None:
            try:
                probe = self._probe(item, settings)
            except ModelFileError as e:
                if e.path != item.label and not isinstance(item.source, str):
                    raise ModelFileError(item.label, e.problem) from None   # name the part, not "<in-memory media>"
                raise
            # libmtmd's rows are kept too (a follow-up turn would encode the track again), up to a budget;
            # a probe whose rows alone are past it is not kept, and evicts nothing
            size = _rows_bytes(probe)
            if size <= PROBE_ROWS_BYTES:
                held = size + sum(_rows_bytes(p) for p in self._probes.values())
                while self._probes and (len(self._probes) >= PROBES_KEPT or held > PROBE_ROWS_BYTES):
                    held -= _rows_bytes(self._probes.pop(next(iter(self._probes))))
                self._probes[key] = probe
        return probe

    def _probe(self, item: MediaItem, settings: Settings) -> Probe:
        if item.kind == "audio":
            self._require_audio(item)
            n_samples, audio_plan, rows = self._audio_cost(item)
            n_audio = len(rows) if rows is not None else audio_n_tokens(n_samples)
            if n_audio == 0:
                raise ValueError(f"{item.label}: audio of {n_samples / 16000:.3f} s is shorter than one "
                                 "audio token (40 ms)")
            return Probe("audio", n_audio=n_audio, n_samples=n_samples, audio_rows=rows, audio_plan=audio_plan)
        if self.vision is None or not self.vision.supports_vision:
            raise ValueError(f"{item.label}: this model's mmproj has no vision tower")
        patch = self.family.patch
        if item.kind == "image":
            pixels = decode.read_image(item.source, item.budget)
            try:
                h, w = sampling.smart_resize(pixels.shape[0], pixels.shape[1], IMAGE_MIN_TOKENS * patch ** 2,
                                             IMAGE_MAX_TOKENS * patch ** 2, factor=patch)
            except ValueError as e:    # as a video's "cannot be sampled": name the file
                raise ModelFileError(item.label, f"cannot be sized for the model: {e}") from e
            return Probe("image", grid=(h // patch, w // patch), patch=patch)
        min_pixels, max_pixels = sampling.video_pixel_bounds(patch)
        info = decode.probe_video(item.source, settings.video_fps, min_pixels, max_pixels, budget=item.budget,
                                  factor=patch)
        warnings: tuple = ()
        n_samples, rows, audio_plan = 0, None, None
        if info.audio_error is not None:   # no reason to refuse the video: it goes without sound
            warnings = (f"{item.label}: {info.audio_error}; the video is used without sound",)
        elif info.has_audio and self.audio is None:
            warnings = (f"{item.label}: this model's mmproj has no audio tower; the video is used without its sound",)
        elif info.has_audio and self.audio is not None:
            try:
                n_samples, audio_plan, rows = self._audio_cost(item)
            except ModelFileError as e:   # the track breaks past its first packets
                warnings = (f"{item.label}: {e.problem}; the video is used without sound",)
        n_audio = (len(rows) if rows is not None else audio_n_tokens(n_samples)) if n_samples else 0
        return Probe("video", grid=(info.height // patch, info.width // patch), video=info, n_audio=n_audio,
                     n_samples=n_samples, audio_rows=rows, audio_plan=audio_plan, warnings=warnings, patch=patch)

    def _audio_cost(self, item: MediaItem):
        """(16 kHz samples, AudioPlan, rows). Our windowed tower: one streaming pass gives the sample
        count and the log-mel peak, nothing held (rows None). Towers that encode whole clips
        (libmtmd's): the rows, now (plan None)."""
        if self.audio_windowed:
            plan = _mel_stream.scan(decode.iter_audio(item.source, AUDIO_BLOCK, budget=item.budget))
            return plan.n_samples, plan, None
        pcm = decode.read_audio(item.source, budget=item.budget)
        if not len(pcm):
            return 0, None, None
        t0 = time.perf_counter()
        rows = self.audio.encode_audio(pcm)
        self.audio_encoded_ms += (time.perf_counter() - t0) * 1e3
        self.audio_encoder_calls += 1
        return len(pcm), None, rows

    def _require_audio(self, item: MediaItem) -> None:
        if self.audio is None:
            raise ValueError(f"{item.label}: this model's mmproj has no audio tower, it cannot take audio")

    def digest(self, item: MediaItem) -> bytes:
        """Content hash of a media source; files are hashed once per (path, size, mtime)."""
        src = item.source
        if hasattr(src, "getbuffer"):
            return hashlib.sha256(src.getbuffer()).digest()
        st = os.stat(src)
        stamp = (os.path.abspath(src), st.st_size, st.st_mtime_ns)
        if stamp not in self._digests:
            h = hashlib.sha256()
            with open(src, "rb") as f:
                for block in iter(lambda: f.read(1 << 20), b""):
                    h.update(block)
            if len(self._digests) > 256:
                self._digests.clear()
            self._digests[stamp] = h.digest()
        return self._digests[stamp]

    # --- layout

    def _layout(self, probe: Probe, rows_start: int, label: str = "the video") -> Layout:
        gh, gw = probe.grid
        if probe.kind == "image":
            return Layout.of(S.image_blocks(gh, gw, rows_start))
        if probe.kind == "audio":
            return Layout.of(S.audio_blocks(probe.n_audio, rows_start))
        n_grids = probe.video.n_grids
        seconds_per_grid = probe.video.seconds_per_grid   # the reference's second_per_grid_ts: 2 / sample fps
        per_second = self.family.positions_per_second     # video t ids a second
        t = S.video_t(n_grids, seconds_per_grid, per_second)
        if len(np.unique(t)) < n_grids:
            # grids sharing a t: the model cannot tell them apart in time, and the compression groups
            # grids by t (omnisift.h); so few position ids a second (Qwen2.5-VL: 2) need grids >= 0.5 s
            raise ValueError(
                f"{label}: sampled at "
                f"{2 / seconds_per_grid:.3g} frames a second, two frame pairs would share one time position "
                f"of this model ({per_second} a second): lower video_fps to at most "
                f"{2 * per_second} (a clip shorter than {4 / (2 * per_second):g} s "
                "is sampled faster: at least 4 frames)")
        if probe.n_audio and self.family.audio_in_video == "tokens":
            return Layout.of(S.video_with_audio_interleaved(n_grids, gh, gw, probe.n_audio, rows_start,
                                                            seconds_per_grid, per_second))
        if probe.n_audio:
            return Layout.of(S.video_with_audio_blocks(n_grids, gh, gw, probe.n_audio, rows_start, seconds_per_grid))
        return Layout.of(S.video_blocks(n_grids, gh, gw, rows_start, seconds_per_grid, per_second))

    def _kept(self, layout: Layout, s: Settings) -> tuple[int, int]:
        """(rows kept, video rows kept) by the C rules."""
        if s.is_off:
            return layout.n_rows, int((layout.modality == S.MODALITY_VIDEO).sum())
        kw = dict(video_retention=s.video_retention, audio_retention=s.audio_retention,
                  image_retention=s.image_retention, audio_selector=s.audio_selector)
        total = sift_n_kept(layout.modality, layout.positions, **kw)
        video = layout.modality == S.MODALITY_VIDEO
        n_video = sift_n_kept(layout.modality[video], layout.positions[:, video], **kw) if video.any() else 0
        return total, n_video

    def _key(self, item: MediaItem, probe: Probe, s: Settings) -> bytes:
        rows_settings = (s.video_retention, s.audio_retention, s.image_retention, s.audio_selector, s.seed,
                         s.video_fps if item.kind == "video" else None, self.head_id)
        return hashlib.sha256(self.digest(item) + repr((item.kind, probe.grid, probe.n_audio,
                                                        rows_settings)).encode()).digest()

    # --- the plan

    def plan(self, prompt: Prompt, settings: Settings, probes: Optional[list] = None, add_bos: bool = True) -> Plan:
        probes = probes if probes is not None else [self.probe(item, settings) for item in prompt.media]
        texts = [self.tokenize(piece, add_bos and i == 0) for i, piece in enumerate(prompt.pieces)]
        if not texts[-1]:
            raise ValueError("the prompt must end with text (the chat template's assistant turn)")
        segments, ids, pos, cells = [], [], 0, 0

        def text(tokens):
            nonlocal pos, cells
            if tokens:
                segments.append(TextSegment(list(tokens), pos))
                ids.extend(tokens)
                pos += len(tokens)
                cells += len(tokens)

        for i, (item, probe) in enumerate(zip(prompt.media, probes)):
            tokens = texts[i]
            shared = probe.kind == "video" and probe.n_audio > 0
            open_tokens, close_tokens = [], []
            if shared:
                # <|vision_bos|><|audio_bos|> share a position, as do <|audio_eos|><|vision_eos|> (the reference)
                if tokens[-len(self.vision_bos):] != self.vision_bos or texts[i + 1][:len(self.vision_eos)] != self.vision_eos:
                    raise ValueError("the chat template changed the media wrappers; a video cannot be placed")
                open_tokens = list(self.vision_bos) + list(self.audio_bos)
                close_tokens = list(self.audio_eos) + list(self.vision_eos)
                tokens = tokens[:-len(self.vision_bos)]
                texts[i + 1] = texts[i + 1][len(self.vision_eos):]
            if probe.kind == "video" and self.family.timestamps:
                # the template's wrappers stay around the grids' own (transformers 5.23's
                # Qwen3VLProcessor replaces only <|video_pad|>)
                text(tokens)
                seg = self._stamped(i, item, probe, pos, settings)
                segments.append(seg)
                ids.extend(seg.placeholders.tolist())
                pos, cells = seg.end, cells + seg.n_cells
                continue
            text(tokens)
            start = pos
            apart = self.family.audio_in_video == "tokens"
            rows_start = start + (len(open_tokens) if apart else 1 if open_tokens else 0)
            layout = self._layout(probe, rows_start, item.label)
            n_kept, n_kept_video = self._kept(layout, settings)
            if self.uses_mrope:
                end = S.end_position(layout.blocks, rows_start) + (len(close_tokens) if apart else 1 if close_tokens else 0)
            else:  # ordinary RoPE: contiguous positions, one per cell
                end = start + len(open_tokens) + n_kept + len(close_tokens)
            key = self._key(item, probe, settings)
            seg = MediaSegment(i, item, probe, layout, start, end, rows_start, open_tokens, close_tokens,
                               n_kept, n_kept_video, key, placeholders(key, end - start), apart)
            segments.append(seg)
            ids.extend(seg.placeholders.tolist())
            pos, cells = end, cells + seg.n_cells
        text(texts[-1])
        return Plan(segments, ids, cells, settings)

    def _stamped(self, index: int, item: MediaItem, probe: Probe, start: int, settings: Settings) -> MediaSegment:
        """A video as Qwen3-VL's processor and get_rope_index lay it out: per grid k, text
        "<{t:.1f} seconds>" (t: the mean time of its two frames in the source) and <|vision_start|>
        (after the previous grid's <|vision_end|>), then the grid placed as an image; the last
        grid's <|vision_end|> closes the span."""
        info = probe.video
        seconds = info.frame_indices / info.source_fps
        prefixes = []
        for k in range(info.n_grids):
            stamp = self.tokenize(f"<{(seconds[2 * k] + seconds[2 * k + 1]) / 2:.1f} seconds>", False)
            prefixes.append((list(self.vision_eos) if k else []) + stamp + list(self.vision_bos))
        gh, gw = probe.grid
        blocks, text_pos, end = S.stamped_grids(gh, gw, [len(p) for p in prefixes], start)
        layout = Layout.of(blocks)
        n_kept, n_kept_video = self._kept(layout, settings)
        key = self._key(item, probe, settings)
        end += len(self.vision_eos)
        return MediaSegment(index, item, probe, layout, start, end, start, [], list(self.vision_eos), n_kept,
                            n_kept_video, key, placeholders(key, end - start),
                            text_tokens=np.array([t for p in prefixes for t in p], np.int32),
                            text_pos=np.asarray(text_pos, np.int32),
                            text_grid=np.repeat(np.arange(len(prefixes)), [len(p) for p in prefixes]))

    def fit(self, prompt: Prompt, settings: Settings, probes: list, budget: int, add_bos: bool = True) -> Plan:
        """The plan at these settings, or with video, then audio retention lowered in steps of 0.01
        until it takes at most `budget` cells (settings.fit_context)."""
        plan = self.plan(prompt, settings, probes, add_bos)
        steps = [("video_retention", 0.01), ("audio_retention", 0.0)]
        for name, floor in steps:
            while plan.n_cells > budget and getattr(plan.settings, name) > floor + 1e-9:
                value = max(floor, round(getattr(plan.settings, name) - 0.01, 2))
                plan = self.plan(prompt, dataclasses.replace(plan.settings, **{name: value}), probes, add_bos)
        return plan


def overflow(plan: Plan, n_ctx: int, reserve: int) -> ContextOverflow:
    counts = plan.counts()
    media_in = sum(c["tokens_in"] for c in counts.values())
    media_kept = sum(c["tokens_kept"] for c in counts.values())
    videos = [seg for seg in plan.media if seg.probe.kind == "video"]
    return ContextOverflow(n_cells=plan.n_cells, n_text=plan.n_cells - media_kept, media_kept=media_kept,
                           media_in=media_in, reserve=reserve, n_ctx=n_ctx,
                           prunable_in=sum(seg.layout.n_rows for seg in videos),
                           prunable_kept=sum(seg.n_kept for seg in videos))


