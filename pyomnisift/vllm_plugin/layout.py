"""One video with its sound as Qwen2.5-Omni lays it out, and what OmniSIFT keeps of it.

The layout is pyomnisift's (`pyomnisift._sequence.video_with_audio_blocks`, checked against
transformers' `get_rope_index` by tests/test_sequence.py): per 2-second chunk the video grids whose
t falls in it, then the audio tokens whose t falls in it. Positions here start at 0 (the item's own
frame); the model adds where the item starts in the prompt.

How many rows are kept comes from the C rule `omnisift_sift_n_kept` (`pyomnisift.n_kept`), the rule
`omnisift_sift` itself obeys, so the prompt vLLM schedules has exactly as many placeholders as the
encoder will return rows.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from .._sequence import MODALITY_AUDIO, MODALITY_VIDEO, video_with_audio_blocks
from .._settings import Settings
from .._sift import chunks, n_kept


@dataclasses.dataclass(frozen=True)
class ItemLayout:
    """Rows of one video-with-audio item in sequence order."""

    modality: np.ndarray   # int32 [N]: MODALITY_VIDEO / MODALITY_AUDIO
    positions: np.ndarray  # int32 [3, N]: (t, h, w) from 0
    source: np.ndarray     # int64 [N]: row of cat(video_rows, audio_rows) that goes here
    chunk: np.ndarray      # int64 [N]: the compression unit of the row (C: omnisift_sift_chunks)

    @property
    def n_rows(self) -> int:
        return len(self.modality)


def item_layout(n_grids: int, grid_h: int, grid_w: int, n_audio: int, seconds_per_grid: float) -> ItemLayout:
    """grid_h, grid_w: the merged grid (tokens per row / column); n_audio: audio tokens."""
    per_grid = grid_h * grid_w
    n_video = n_grids * per_grid
    modality, positions, source = [], [], []
    for b in video_with_audio_blocks(n_grids, grid_h, grid_w, n_audio, 0, seconds_per_grid):
        n = b.n_rows
        modality.append(np.full(n, b.modality, np.int32))
        positions.append(b.positions)
        first = b.source_index * per_grid if b.modality == MODALITY_VIDEO else n_video + b.source_index
        source.append(np.arange(first, first + n, dtype=np.int64))
    modality, positions = np.concatenate(modality), np.concatenate(positions, axis=1).astype(np.int32)
    return ItemLayout(modality, positions, np.concatenate(source), chunks(modality, positions))


def sift_kwargs(settings: Settings) -> dict:
    return dict(video_retention=settings.video_retention, audio_retention=settings.audio_retention,
                audio_selector=settings.audio_selector)


def n_kept_rows(layout: ItemLayout, settings: Settings) -> int:
    return n_kept(layout.modality, layout.positions, **sift_kwargs(settings))


def placeholder_labels(layout: ItemLayout, settings: Settings, video_token: int, audio_token: int) -> list[int]:
    """The placeholder tokens of the kept rows: per chunk, its kept video then its kept audio.

    Only the count is load-bearing (it is the C rule's, for the whole item): the rows that reach the
    LLM are the encoder's kept rows in sequence order. The split between the labels is exact per
    video grid (a grid is one group of the rule) and per chunk's audio when OmniSIFT's compression
    units coincide with the reference's 2-second chunks (2 grids per chunk, the default 2 fps);
    otherwise the audio labels are moved so that the total is the rule's."""
    total = n_kept_rows(layout, settings)
    per_chunk = []
    for c in np.unique(layout.chunk):
        rows = layout.chunk == c
        video = rows & (layout.modality == MODALITY_VIDEO)
        n_video = sum(n_kept(layout.modality[video & (layout.positions[0] == t)],
                             layout.positions[:, video & (layout.positions[0] == t)], **sift_kwargs(settings))
                      for t in np.unique(layout.positions[0, video]))
        n_both = n_kept(layout.modality[rows], layout.positions[:, rows], **sift_kwargs(settings))
        per_chunk.append([n_video, n_both - n_video])
    excess = sum(v + a for v, a in per_chunk) - total
    for counts in reversed(per_chunk):  # audio labels absorb the difference, last chunks first
        move = min(excess, counts[1]) if excess > 0 else excess
        counts[1] -= move
        excess -= move
        if excess == 0:
            break
    labels = []
    for n_video, n_audio in per_chunk:
        labels += [video_token] * n_video + [audio_token] * n_audio
    assert len(labels) == total, (len(labels), total)
    return labels
