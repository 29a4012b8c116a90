"""The Qwen2.5-Omni sequence layout: which media rows go where, and their (t, h, w) positions
(Qwen2.5-VL's is the same without audio, at its own position ids per second; Qwen3-Omni interleaves
a video's audio token by token: video_with_audio_interleaved).

The ground truth is transformers' Qwen2.5-Omni `get_rope_index` (use_audio_in_video=True) and the
processor's placeholder expansion; tests/test_sequence.py checks this module against it.

A video with its sound is laid out per 2-second chunk (50 position ids): the video tokens whose t
falls in the chunk, then the audio tokens whose t falls in it. Grid k of a video has t = k * 25 *
seconds_per_grid (25 position ids per second), token (h, w) of the 2x2-merged patch grid; audio token
j has t = h = w = j. Everything is offset by the position where the media starts.
"""

from __future__ import annotations

import dataclasses

import numpy as np

POSITIONS_PER_SECOND = 25
SECONDS_PER_CHUNK = 2.0
MODALITY_TEXT, MODALITY_VIDEO, MODALITY_AUDIO, MODALITY_IMAGE = 0, 1, 2, 3


@dataclasses.dataclass(frozen=True)
class Block:
    """A run of consecutive sequence rows taken from one media source.

    `source_index` is the grid index for video, the first audio row for audio, 0 for an image.
    `positions` is int32 [3, n_rows] = (t, h, w).
    """

    modality: int
    source_index: int
    positions: np.ndarray

    @property
    def n_rows(self) -> int:
        return self.positions.shape[1]


def grid_positions(grid_h: int, grid_w: int, t: int, start: int) -> np.ndarray:
    """Positions of one merged grid of grid_h x grid_w tokens, row-major, at temporal position t."""
    h, w = np.meshgrid(np.arange(grid_h), np.arange(grid_w), indexing="ij")
    pos = np.stack([np.full(grid_h * grid_w, t), h.reshape(-1), w.reshape(-1)])
    return (pos + start).astype(np.int32)


def audio_positions(n_tokens: int, start: int) -> np.ndarray:
    return np.broadcast_to(np.arange(n_tokens, dtype=np.int32) + start, (3, n_tokens)).copy()


def video_t(n_grids: int, seconds_per_grid: float, positions_per_second: int = POSITIONS_PER_SECOND) -> np.ndarray:
    """t of each grid, relative. Qwen2.5-Omni counts 25 position ids a second
    (position_id_per_seconds), Qwen2.5-VL 2 (vision_config.tokens_per_second)."""
    # The reference truncates (long cast) after multiplying in float32.
    return (np.arange(n_grids, dtype=np.float32) * np.float32(seconds_per_grid)
            * np.float32(positions_per_second)).astype(np.int64)


def image_blocks(grid_h: int, grid_w: int, start: int) -> list[Block]:
    return [Block(MODALITY_IMAGE, 0, grid_positions(grid_h, grid_w, 0, start))]


def video_blocks(n_grids: int, grid_h: int, grid_w: int, start: int,
                 seconds_per_grid: float = 1.0, positions_per_second: int = POSITIONS_PER_SECOND) -> list[Block]:
    """A video without its sound: the grids one after another."""
    return [Block(MODALITY_VIDEO, k, grid_positions(grid_h, grid_w, int(t), start))
            for k, t in enumerate(video_t(n_grids, seconds_per_grid, positions_per_second))]


def _chunk_of(t: np.ndarray, per_chunk: int) -> np.ndarray:
    """Chunk index of each t (relative), as the reference's get_chunked_index assigns it: a new chunk
    starts at the first value >= (chunks so far) * per_chunk, so a gap spanning several chunks
    still advances the chunk counter by one."""
    out = np.empty(len(t), dtype=np.int64)
    chunk = 0
    for i, v in enumerate(t):
        if v >= (chunk + 1) * per_chunk:
            chunk += 1
        out[i] = chunk
    return out


def video_with_audio_blocks(n_grids: int, grid_h: int, grid_w: int, n_audio: int, start: int,
                            seconds_per_grid: float = 1.0) -> list[Block]:
    """A video with its audio track, interleaved per 2-second chunk as the reference does."""
    per_chunk = int(POSITIONS_PER_SECOND * SECONDS_PER_CHUNK)
    vt = video_t(n_grids, seconds_per_grid)
    v_chunk = _chunk_of(vt, per_chunk)
    a_chunk = _chunk_of(np.arange(n_audio), per_chunk)
    n_chunks = max(int(v_chunk.max(initial=-1)), int(a_chunk.max(initial=-1))) + 1
    blocks = []
    for c in range(n_chunks):
        for k in np.flatnonzero(v_chunk == c):
            blocks.append(Block(MODALITY_VIDEO, int(k), grid_positions(grid_h, grid_w, int(vt[k]), start)))
        rows = np.flatnonzero(a_chunk == c)
        if len(rows):
            blocks.append(Block(MODALITY_AUDIO, int(rows[0]), audio_positions(len(rows), start + int(rows[0]))))
    return blocks


def audio_blocks(n_audio: int, start: int) -> list[Block]:
    return [Block(MODALITY_AUDIO, 0, audio_positions(n_audio, start))]


def end_position(blocks: list[Block], start: int) -> int:
    """The position of whatever follows the blocks: one past the largest position of the LAST block.

    That is the reference's rule, and it is not always the global maximum: when audio ends the
    sequence but a grid's (h, w) reach higher (a short clip of a large frame), the text after the
    media gets positions that the grid's spatial positions already used.
    """
    rows = [b for b in blocks if b.n_rows]
    return int(rows[-1].positions.max()) + 1 if rows else start


def video_with_audio_interleaved(n_grids: int, grid_h: int, grid_w: int, n_audio: int, start: int,
                                 seconds_per_grid: float, positions_per_second: int) -> list[Block]:
    """A video with its audio track as Qwen3-Omni lays it out (its processor's
    replace_video_with_audio_token and get_rope_index): audio token j at t = j, grid k at t = k *
    seconds_per_grid * positions_per_second (13 a second), merged by t one token at a time with a
    grid first on a tie, so each grid is followed by the audio tokens before the next grid's t.

    The reference keeps a grid's t as a float; llama.cpp's positions are integers: t is truncated
    (integral at the default 2 frames a second: 13 per grid), the order still compares the float.
    """
    vt = np.arange(n_grids, dtype=np.float32) * np.float32(seconds_per_grid) * np.float32(positions_per_second)
    blocks, a = [], 0
    for k in range(n_grids):
        first = a
        while a < n_audio and a < vt[k]:    # video first when vt[k] <= a
            a += 1
        if a > first:
            blocks.append(Block(MODALITY_AUDIO, first, audio_positions(a - first, start + first)))
        blocks.append(Block(MODALITY_VIDEO, k, grid_positions(grid_h, grid_w, int(vt[k]), start)))
    if a < n_audio:
        blocks.append(Block(MODALITY_AUDIO, a, audio_positions(n_audio - a, start + a)))
    return blocks


def stamped_grids(grid_h: int, grid_w: int, prefix_lengths: list, start: int) -> tuple[list, list, int]:
    """Qwen3-VL's video (its get_rope_index): grid k after prefix_lengths[k] text tokens (its
    timestamp and wrappers), placed as an image at its own position p: rows (p, p + row, p + col),
    and what follows it at p + max(grid_h, grid_w). Returns (blocks, the text's positions, the
    position after the last grid)."""
    blocks, text_pos, p = [], [], start
    for k, n in enumerate(prefix_lengths):
        text_pos.extend(range(p, p + n))
        p += n
        blocks.append(Block(MODALITY_VIDEO, k, grid_positions(grid_h, grid_w, 0, p)))
        p += max(grid_h, grid_w)
    return blocks, text_pos, p
