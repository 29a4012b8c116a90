"""AudioRows: the rows of a streamed clip handed out by row range, in order, as the omni layout asks
for them (each 2-s chunk's audio is a range of rows next to that chunk's frames).

The clip is encoded a step of windows at a time, only when a range needs it, and rows are dropped
once handed out, so what is held is one step plus the range asked for, whatever the clip's length.
"""

from __future__ import annotations

from typing import Iterable

import numpy as np

from . import _mel_stream
from ._audio import ROWS_PER_WINDOW, AudioTower, n_tokens


class AudioRows:
    """``AudioRows(tower, blocks, plan)``: ``plan = _mel_stream.scan(...)`` from a first pass over
    the clip; ``blocks`` is a second pass over the same PCM. ``take(start, n)`` returns rows
    [start, start + n) of ``tower.encode(whole clip)``; ranges must come in increasing order."""

    def __init__(self, tower: AudioTower, blocks: Iterable, plan: _mel_stream.AudioPlan,
                 windows_per_step: int = 1):
        self.n_rows = n_tokens(plan.n_samples)  # the C header's rule, known before any encoding
        self._steps = tower.iter_encode(blocks, plan, windows_per_step)
        self._held = np.zeros((0, tower.n_embd), np.float32)  # rows from self._start on
        self._start = 0

    def take(self, start: int, n: int) -> np.ndarray:
        if start < self._start or n < 0 or start + n > self.n_rows:
            raise ValueError(f"rows [{start}, {start + n}) asked; this stream holds rows from {self._start} "
                             f"of {self.n_rows}, handed out in increasing order (earlier rows are dropped)")
        while self._start + len(self._held) < start + n:
            first_window, rows = next(self._steps)
            assert ROWS_PER_WINDOW * first_window == self._start + len(self._held), "steps out of order"
            self._held = np.concatenate([self._held, rows]) if len(self._held) else rows
        out = self._held[start - self._start:start - self._start + n]
        self._held, self._start = self._held[start - self._start + n:], start + n
        if self._start == self.n_rows:
            # The last row is out: run the stream to its end (at most a last window of 1 or 2
            # frames, which has no row), where it is checked against the plan.
            for _ in self._steps:
                pass
        return out

    def close(self) -> None:
        """Stops the second pass (closes the PCM iterator through the generators)."""
        self._steps.close()
