"""The per-request statistics returned as usage["omnisift"], and the record handed to on_unit."""

from __future__ import annotations

import dataclasses
import time

import numpy as np


class Stats:
    def __init__(self):
        self.timings = {k: 0.0 for k in ("media_decode", "encode_vision", "encode_audio", "compress", "prefill",
                                           "cache")}
        self.warnings: list[str] = []
        self.media_reused = 0        # media items whose KV cells a previous request left in place
        self.media_cells = 0         # KV cells of media this request decoded
        self.encoder_calls = {"vision": 0, "audio": 0}
        self.pairs_reused = 0        # frame pairs identical to the one before: rows reused, not encoded
        self.media_batches = 0       # llama_decode calls that decoded media rows
        self.prefill_from = 0        # the first position this request decodes (before: reused or restored)
        self.media_restored = 0      # media items whose state came from the media cache
        self.cache_bytes_stored = 0  # bytes of state this request put into the media cache

    def timer(self, key: str):
        stats = self

        class _T:
            def __enter__(self):
                self.t0 = time.perf_counter()

            def __exit__(self, *exc):
                stats.timings[key] += (time.perf_counter() - self.t0) * 1000.0

        return _T()

    def as_dict(self, plan) -> dict:
        out = plan.counts()
        t = dict(self.timings)
        t["encode"] = t["encode_vision"] + t["encode_audio"]
        out["timings_ms"] = {k: round(v, 3) for k, v in t.items()}
        out["retention"] = plan.retention_used()
        out["audio_selector"] = plan.settings.audio_selector
        out["prompt_cells"] = plan.n_cells
        out["media_reused"] = self.media_reused
        out["media_restored"] = self.media_restored
        out["cache_bytes_stored"] = self.cache_bytes_stored
        out["media_cells_decoded"] = self.media_cells
        out["encoder_calls"] = dict(self.encoder_calls)
        out["frame_pairs_reused"] = self.pairs_reused
        out["media_batches"] = self.media_batches
        if self.warnings:
            out["warnings"] = list(self.warnings)
        return out


@dataclasses.dataclass(frozen=True)
class UnitRecord:
    """One compression unit (a pair of frame grids with the audio of their seconds, an image, a
    stretch of audio) as it went into the model. Arrays are valid after the callback returns."""
    item: int                  # the media item's index in the prompt
    kind: str                  # "video" | "audio" | "image"
    modality: np.ndarray       # int32 [n]: 1 video, 2 audio, 3 image
    source_index: np.ndarray   # int64 [n]: grid index (video rows), audio row (audio rows), 0 (image)
    positions: np.ndarray      # int32 [3, n]: (t, h, w) in the sequence
    keep: np.ndarray           # bool [n]
    rows: np.ndarray           # float32 [n, n_embd]: the encoder's rows, before compression
    # text decoded inside the unit, among its rows by position (Qwen3-VL: each grid's timestamp and
    # wrappers): token ids and their positions (t = h = w); empty for other families
    text: np.ndarray = dataclasses.field(default_factory=lambda: np.zeros(0, np.int32))
    text_positions: np.ndarray = dataclasses.field(default_factory=lambda: np.zeros(0, np.int32))
