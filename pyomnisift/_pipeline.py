"""One prompt through the omni pipeline: media -> encoders -> omni sequence -> OmniSIFT -> decode.

Video is streamed one 2-second chunk at a time (two frame grids and the audio of those two
seconds): read, encode, compress, decode, forget. OmniSIFT's chunks are independent, so compressing
chunk by chunk gives the same mask as compressing the whole sequence at once, and memory for media
stays bounded by one chunk whatever the video's length. The audio track itself is decoded whole
(16 kHz float32: 3.8 MB a minute).

Kept rows are decoded at their original (t, h, w) positions (M-RoPE models), or renumbered
consecutively for models with ordinary RoPE; the position counter always advances past the whole
media item, as the reference lays the sequence out.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
import time
from typing import Callable, Optional

import numpy as np

from . import _media, _sequence as S
from ._audio import n_tokens as audio_n_tokens
from ._errors import ModelFileError
from ._prompt import AUDIO_BOS, AUDIO_EOS, MediaItem, Prompt
from ._sift import sift

IMAGE_MIN_PIXELS = 56 * 56          # the Qwen2-VL image processor's bounds
IMAGE_MAX_PIXELS = 28 * 28 * 1280
_DROP_EPS = 1e-9                     # the engine's rounding rule (cpp/chunking.h)


def kept_count(n: int, retention: float) -> int:
    """Tokens a group of n keeps at `retention`, by the engine's rule."""
    drop = math.floor(n * (1.0 - retention) + _DROP_EPS)
    return n - min(max(drop, 0), n)


@dataclasses.dataclass
class CompressionConfig:
    video_retention: float = 1.0
    audio_retention: float = 1.0
    image_retention: float = 1.0
    audio_selector: str = "anchor"
    sift_head: object = None
    seed: int = 0

    @property
    def is_off(self) -> bool:
        return self.video_retention >= 1.0 and self.audio_retention >= 1.0 and self.image_retention >= 1.0


class Stats:
    """The per-prompt statistics returned as usage["omnisift"]."""

    def __init__(self):
        self.counts = {m: {"tokens_in": 0, "tokens_kept": 0} for m in ("video", "audio", "image")}
        self.counts["audio"]["padding_avoided"] = 0
        self.timings = {k: 0.0 for k in ("media_decode", "encode", "compress", "prefill")}

    def add(self, modality: str, n_in: int, n_kept: int) -> None:
        self.counts[modality]["tokens_in"] += int(n_in)
        self.counts[modality]["tokens_kept"] += int(n_kept)

    def timer(self, key: str):
        stats = self

        class _T:
            def __enter__(self):
                self.t0 = time.perf_counter()

            def __exit__(self, *exc):
                stats.timings[key] += (time.perf_counter() - self.t0) * 1000.0

        return _T()

    def as_dict(self) -> dict:
        return {**{k: dict(v) for k, v in self.counts.items()},
                "timings_ms": {k: round(v, 3) for k, v in self.timings.items()}}


@dataclasses.dataclass
class _Planned:
    """A media item, probed: what it will cost before anything is encoded."""
    item: MediaItem
    n_tokens: int
    n_kept: int
    video: Optional[_media.VideoInfo] = None
    grid: tuple = (0, 0)          # (h, w) merged tokens, image / video
    audio_rows: Optional[np.ndarray] = None   # encoded at planning: their count is the cost
    padding_avoided: int = 0


class Pipeline:
    """Builds and decodes one prompt into a llama context. Owned by pyomnisift.Llama."""

    def __init__(self, *, tokenize: Callable[[str], list], n_ctx: int, n_embd: int, uses_mrope: bool,
                 vision, encode_audio: Optional[Callable], audio_windowed: bool,
                 decode_rows: Callable, decode_tokens: Callable,
                 config: CompressionConfig, engine, fps: float = 2.0,
                 video_min_pixels: int = _media.VIDEO_MIN_PIXELS, video_max_pixels: int = _media.VIDEO_MAX_PIXELS,
                 image_min_pixels: int = IMAGE_MIN_PIXELS, image_max_pixels: int = IMAGE_MAX_PIXELS):
        self.tokenize = tokenize
        self.n_ctx = n_ctx
        self.n_embd = n_embd
        self.uses_mrope = uses_mrope
        self.vision = vision
        self.encode_audio = encode_audio        # 16 kHz PCM -> rows; None without an audio tower
        self.audio_windowed = audio_windowed    # True: our 2-s-window tower (no 30-s padding)
        self.decode_rows = decode_rows
        self.decode_tokens = decode_tokens
        self.config = config
        self.engine = engine
        self.fps = fps
        self.video_bounds = (video_min_pixels, video_max_pixels)
        self.image_bounds = (image_min_pixels, image_max_pixels)
        self.audio_bos = tokenize(AUDIO_BOS)
        self.audio_eos = tokenize(AUDIO_EOS)
        # Test hook: called per compression unit with (kept rows, their decode positions, all rows,
        # all positions, modality, keep mask).
        self.on_rows = None

    # --- planning: sizes before work, so that an over-long prompt fails before anything is decoded

    def _plan(self, item: MediaItem, stats: Stats) -> _Planned:
        cfg = self.config
        if item.kind == "audio":
            self._require_audio(item)
            with stats.timer("media_decode"):
                pcm = _media.read_audio(item.source)
            rows, avoided = self._encode_audio(pcm, stats)
            if rows is None:
                raise ValueError(f"{item.label}: audio of {len(pcm) / 16000:.3f} s is shorter than one "
                                 "audio token (40 ms)")
            return _Planned(item, len(rows), len(rows), audio_rows=rows, padding_avoided=avoided)
        if self.vision is None or not self.vision.supports_vision:
            raise ValueError(f"{item.label}: this model's mmproj has no vision tower")
        if item.kind == "image":
            with stats.timer("media_decode"):
                pixels = _media.read_image(item.source)
            h, w = _media.smart_resize(pixels.shape[0], pixels.shape[1], *self.image_bounds)
            n = (h // 28) * (w // 28)
            return _Planned(item, n, kept_count(n, cfg.image_retention), grid=(h // 28, w // 28))
        with stats.timer("media_decode"):
            info = _media.probe_video(item.source, self.fps, *self.video_bounds)
            # A track that cannot be decoded is no reason to refuse the video: it goes without sound.
            pcm = _read_track(item.source) if info.has_audio and self.encode_audio is not None else None
        rows, avoided = self._encode_audio(pcm, stats) if pcm is not None else (None, 0)
        gh, gw = info.height // 28, info.width // 28
        n_grids = info.n_sampled // 2
        n_audio = len(rows) if rows is not None else 0
        kept = n_grids * kept_count(gh * gw, cfg.video_retention) + self._audio_kept_estimate(n_audio, n_grids)
        return _Planned(item, n_grids * gh * gw + n_audio, kept, video=info, grid=(gh, gw), audio_rows=rows,
                        padding_avoided=avoided)

    def _encode_audio(self, pcm: np.ndarray, stats: Stats):
        """(rows, padding avoided) of a clip, or (None, 0) when it is shorter than one token."""
        if len(pcm) == 0 or (self.audio_windowed and audio_n_tokens(len(pcm)) == 0):
            return None, 0
        with stats.timer("encode"):
            rows = self.encode_audio(pcm)
        if len(rows) == 0:
            return None, 0
        avoided = _padding_avoided(len(pcm), len(rows)) if self.audio_windowed else 0
        return rows, avoided

    def _audio_kept_estimate(self, n_audio: int, n_grids: int) -> int:
        if self.config.audio_selector == "none":
            return n_audio
        per_chunk = int(S.POSITIONS_PER_SECOND * S.SECONDS_PER_CHUNK)
        kept, n_chunks_with_video = 0, (n_grids + 1) // 2
        for c in range(math.ceil(n_audio / per_chunk)):
            n = min(per_chunk, n_audio - c * per_chunk)
            compressible = c < n_chunks_with_video and n >= 2 and self.config.video_retention > 0
            kept += kept_count(n, self.config.audio_retention) if compressible else n
        return kept

    def _require_audio(self, item: MediaItem) -> None:
        if self.encode_audio is None:
            raise ValueError(f"{item.label}: this model's mmproj has no audio tower, it cannot take audio")

    # --- running

    def run(self, prompt: Prompt) -> tuple[int, Stats]:
        """Decodes the whole prompt (logits of its last token ready). Returns (tokens decoded, stats)."""
        stats = Stats()
        planned = [self._plan(item, stats) for item in prompt.media]
        texts = [self.tokenize(piece) for piece in prompt.pieces]
        n_text = sum(len(t) for t in texts) + sum(2 for p in planned if p.video is not None and p.audio_rows is not None)
        needed = n_text + sum(p.n_kept for p in planned)
        if needed > self.n_ctx:
            raise ValueError(self._too_long_message(needed, n_text, planned))
        if not texts[-1]:
            raise ValueError("the prompt must end with text (the chat template's assistant turn)")

        self._counter = 0  # next position for models with ordinary RoPE (contiguous positions)
        pos, decoded = 0, 0
        for i, plan in enumerate(planned):
            tokens = texts[i]
            with_audio = plan.video is not None and plan.audio_rows is not None
            if with_audio:  # <|audio_bos|> shares <|vision_bos|>'s position, as in the reference
                decoded += self._tokens(tokens[:-1], np.arange(pos, pos + len(tokens) - 1), stats)
                pos += len(tokens) - 1
                decoded += self._tokens(tokens[-1:] + self.audio_bos, np.array([pos, pos]), stats)
                pos += 1
            else:
                decoded += self._tokens(tokens, np.arange(pos, pos + len(tokens)), stats)
                pos += len(tokens)
            pos, n = self._media(plan, pos, stats)
            decoded += n
            if with_audio:  # <|audio_eos|> shares <|vision_eos|>'s position
                nxt = texts[i + 1]
                decoded += self._tokens(self.audio_eos + nxt[:1], np.array([pos, pos]), stats)
                pos += 1
                texts[i + 1] = nxt[1:]
        last = texts[-1]
        decoded += self._tokens(last, np.arange(pos, pos + len(last)), stats, logits_last=True)
        self.next_pos = pos + len(last) if self.uses_mrope else self._counter
        return decoded, stats

    def _too_long_message(self, needed: int, n_text: int, planned: list) -> str:
        media_in = sum(p.n_tokens for p in planned)
        room = self.n_ctx - n_text
        msg = (f"the prompt needs {needed} tokens after compression ({n_text} text + "
               f"{needed - n_text} of {media_in} media tokens) but n_ctx is {self.n_ctx}")
        if media_in and room > 0:
            msg += (f"; a video/audio retention of about {0.95 * room / media_in:.2f} would fit, "
                    "or raise n_ctx")
        else:
            msg += "; the text alone does not fit: raise n_ctx"
        return msg

    def _decode_positions(self, layout: np.ndarray) -> np.ndarray:
        """M-RoPE models decode at the layout's positions; others at the next contiguous ones."""
        if self.uses_mrope:
            return layout
        n = layout.shape[-1]
        out = np.arange(self._counter, self._counter + n, dtype=np.int32)
        self._counter += n
        return np.broadcast_to(out, layout.shape).copy() if layout.ndim == 2 else out

    def _tokens(self, tokens: list, layout: np.ndarray, stats: Stats, logits_last: bool = False) -> int:
        if not tokens:
            return 0
        positions = self._decode_positions(np.asarray(layout, dtype=np.int32))
        with stats.timer("prefill"):
            self.decode_tokens(tokens, positions, logits_last)
        return len(tokens)

    def _media(self, plan: _Planned, pos: int, stats: Stats) -> tuple[int, int]:
        """Encodes, compresses and decodes one media item starting at position pos.

        Returns (the position after the item, rows decoded)."""
        if plan.item.kind == "image":
            with stats.timer("media_decode"):
                pixels = _resize(_media.read_image(plan.item.source), plan.grid[0] * 28, plan.grid[1] * 28)
            with stats.timer("encode"):
                rows, gh, gw = self.vision.encode([pixels])
            blocks = S.image_blocks(gh, gw, pos)
            return S.end_position(blocks, pos), self._compress_decode(rows, blocks, stats)
        if plan.item.kind == "audio":
            rows = plan.audio_rows
            stats.counts["audio"]["padding_avoided"] += plan.padding_avoided
            blocks = S.audio_blocks(len(rows), pos)
            return S.end_position(blocks, pos), self._compress_decode(rows, blocks, stats)
        return self._video(plan, pos, stats)

    def _video(self, plan: _Planned, pos: int, stats: Stats) -> tuple[int, int]:
        gh, gw = plan.grid
        n_grids = plan.video.n_sampled // 2
        seconds_per_grid = _media.FRAME_FACTOR / self.fps  # the reference's video_second_per_grid
        audio_rows = plan.audio_rows
        if audio_rows is not None:
            stats.counts["audio"]["padding_avoided"] += plan.padding_avoided
            blocks = S.video_with_audio_blocks(n_grids, gh, gw, len(audio_rows), pos, seconds_per_grid)
        else:
            blocks = S.video_blocks(n_grids, gh, gw, pos, seconds_per_grid)
        # Frames are read and resized on a thread (PyAV and PIL release the GIL) while the previous
        # chunk is encoded and decoded; the queue bounds what is held to two chunks of frames.
        frames = _prefetch(_media.iter_video_frames(plan.item.source, self.fps, *self.video_bounds), depth=4)
        decoded = 0
        for _, chunk in itertools.groupby(blocks, key=lambda b: b.chunk):
            chunk = list(chunk)
            rows = []
            for block in chunk:
                if block.modality == S.MODALITY_AUDIO:
                    rows.append(audio_rows[block.source_index:block.source_index + block.n_rows])
                    continue
                with stats.timer("media_decode"):
                    pair = [next(frames, None), next(frames, None)]
                if pair[1] is None:
                    raise ModelFileError(plan.item.label, "the video stream ended before its announced length")
                with stats.timer("encode"):
                    grid, rh, rw = self.vision.encode(pair)
                if (rh, rw) != (gh, gw):
                    raise ModelFileError(plan.item.label, f"libmtmd made a {rh}x{rw} grid of frames sized for {gh}x{gw}")
                rows.append(grid)
            decoded += self._compress_decode(np.concatenate(rows), chunk, stats)
        return S.end_position(blocks, pos), decoded

    def _compress_decode(self, rows: np.ndarray, blocks: list, stats: Stats) -> int:
        modality = np.concatenate([np.full(b.n_rows, b.modality, np.int32) for b in blocks])
        positions = np.concatenate([b.positions for b in blocks], axis=1)
        if rows.shape != (len(modality), self.n_embd):
            raise RuntimeError(f"encoder gave rows {rows.shape}, the layout expects {(len(modality), self.n_embd)}")
        cfg = self.config
        if cfg.is_off:
            keep = np.ones(len(modality), bool)
        else:
            with stats.timer("compress"):
                keep = sift(rows, modality, positions, video_retention=cfg.video_retention,
                            audio_retention=cfg.audio_retention, image_retention=cfg.image_retention,
                            audio_selector=cfg.audio_selector, sift_head=cfg.sift_head, seed=cfg.seed,
                            engine=self.engine)
        for m, name in ((S.MODALITY_VIDEO, "video"), (S.MODALITY_AUDIO, "audio"), (S.MODALITY_IMAGE, "image")):
            sel = modality == m
            if sel.any():
                stats.add(name, sel.sum(), (sel & keep).sum())
        if not keep.any():
            return 0
        kept_rows = np.ascontiguousarray(rows[keep], dtype=np.float32)
        kept_pos = self._decode_positions(np.ascontiguousarray(positions[:, keep], dtype=np.int32))
        with stats.timer("prefill"):
            self.decode_rows(kept_rows, kept_pos)
        if self.on_rows is not None:
            self.on_rows(kept_rows, kept_pos, rows, positions, modality, keep)
        return len(kept_rows)


def _read_track(source) -> Optional[np.ndarray]:
    try:
        return _media.read_audio(source)
    except ModelFileError:
        return None


def _prefetch(iterator, depth: int):
    """Runs `iterator` on a thread, `depth` items ahead; re-raises its exceptions in the consumer."""
    import queue
    import threading

    q: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()
    done = object()

    def produce():
        try:
            for item in iterator:
                while not stop.is_set():
                    try:
                        q.put(item, timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if stop.is_set():
                    return
            q.put(done)
        except BaseException as e:  # handed to the consumer, which raises it
            q.put(e)

    thread = threading.Thread(target=produce, name="pyomnisift-frames", daemon=True)
    thread.start()
    try:
        while True:
            item = q.get()
            if item is done:
                return
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        while thread.is_alive():  # unblock a producer waiting on a full queue
            try:
                q.get_nowait()
            except queue.Empty:
                thread.join(timeout=0.1)


def _padding_avoided(n_samples: int, n_rows: int) -> int:
    """Rows llama.cpp's own path would have made by padding the audio to whole 30-s windows."""
    windows = n_samples // (30 * 16000) + 1
    return max(0, windows * 750 - n_rows)


def _resize(pixels: np.ndarray, height: int, width: int) -> np.ndarray:
    if pixels.shape[:2] == (height, width):
        return pixels
    from PIL import Image

    return np.asarray(Image.fromarray(pixels).resize((width, height), Image.BICUBIC), dtype=np.uint8)
