"""Prefill: sift each compression unit and decode the kept rows of several units per llama_decode
(C: omnisift_prefill_*). One ctypes crossing per unit; the rows are copied once, into the queue."""

from __future__ import annotations

import ctypes
from typing import Optional

import numpy as np

from . import omnisift_cpp as C
from ._engine import Engine
from ._internals import Handle
from ._sift import c_params


def sift_params(settings, head=None) -> Optional[C.omnisift_sift_params]:
    """The C parameters of validated settings; None when nothing is pruned (every row kept)."""
    if settings.is_off:
        return None
    return c_params(settings.video_retention, settings.audio_retention, settings.image_retention,
                    settings.audio_selector, head, settings.seed)


class Prefill(Handle):
    """Owns an ``omnisift_prefill`` queue over one llama context (seq 0)."""

    _free = C.omnisift_prefill_free

    def __init__(self, ctx, engine: Engine, params: Optional[C.omnisift_sift_params], max_rows: int = 0):
        pp = C.omnisift_prefill_default_params()
        pp.max_rows = int(max_rows)
        self._ptr = C.check_ptr(C.omnisift_prefill_init(ctx, pp), "prefill")
        self.engine = engine
        self.params = params
        self._params_ref = ctypes.byref(params) if params is not None else None

    def add(self, rows: np.ndarray, modality: np.ndarray, positions: np.ndarray, renumber_from: int = -1) -> np.ndarray:
        """Sifts one unit and queues its kept rows; returns the keep mask (bool [n])."""
        rows = np.ascontiguousarray(rows, dtype=np.float32)
        mod = np.ascontiguousarray(modality, dtype=np.int32)
        pos = np.ascontiguousarray(positions, dtype=np.int32)
        keep = np.ones(len(rows), np.uint8)
        C.check(C.omnisift_prefill_add(self.ptr, self.engine.ptr, rows.ctypes.data, rows.shape[0], rows.shape[1],
                                       mod.ctypes.data, pos.ctypes.data, self._params_ref, int(renumber_from),
                                       keep.ctypes.data), "prefill")
        return keep.view(bool)

    def flush(self) -> None:
        C.check(C.omnisift_prefill_flush(self.ptr, 0), "prefill")

    def stats(self) -> dict:
        s = C.omnisift_prefill_get_stats(self.ptr)
        return {k: getattr(s, k) for k, _ in C.omnisift_prefill_stats._fields_}
