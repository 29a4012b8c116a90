"""``sift()``: OmniSIFT token compression of one omni sequence to a keep mask (C: omnisift_sift)."""

from __future__ import annotations

import ctypes
import numbers
import os
from typing import Optional, Union

import numpy as np

from . import omnisift_cpp as C
from ._engine import Engine, default_engine
from ._errors import ModelFileError
from ._internals import Handle
from ._settings import AUDIO_SELECTORS, check_audio_selector, check_retention as _retention


class SiftHead(Handle):
    """The learned audio selector (VGAS) loaded from a GGUF written by ``pyomnisift convert-head``.

    Its weights live on ``engine``'s device; it can only be used with that engine.
    """

    _free = C.omnisift_head_free

    def __init__(self, path: Union[str, os.PathLike], engine: Optional[Engine] = None):
        self.path = os.fspath(path)
        self.engine = engine or default_engine()
        if not os.path.isfile(self.path):
            raise ModelFileError(self.path, "no such file")
        ptr = C.omnisift_head_load(self.engine.ptr, os.fsencode(self.path))
        if not ptr:
            problem = C.omnisift_last_error().decode("utf-8", "replace")
            raise ModelFileError(self.path, problem.removeprefix(self.path + ": "))
        self._ptr = ptr

    @property
    def n_embd(self) -> int:
        """Embedding width D the head expects (the LLM's n_embd)."""
        return C.omnisift_head_n_embd(self.ptr)

    @property
    def n_hidden(self) -> int:
        """Attention width of the head (512 in OmniSIFT-7B)."""
        return C.omnisift_head_n_hidden(self.ptr)


def c_params(video_retention: float, audio_retention: float, image_retention: float, audio_selector: str,
             head: Optional[SiftHead] = None, seed: int = 0) -> C.omnisift_sift_params:
    """The C parameters of already validated settings (the head is passed only to the "vgas" selector)."""
    p = C.omnisift_sift_default_params()
    p.video_retention = video_retention
    p.audio_retention = audio_retention
    p.image_retention = image_retention
    p.audio_selector = AUDIO_SELECTORS[audio_selector]
    p.head = head.ptr if head is not None and audio_selector == "vgas" else None
    p.seed = int(seed)
    return p


def _int_array(name: str, value) -> np.ndarray:
    arr = np.asarray(value)
    if arr.dtype == bool or not np.issubdtype(arr.dtype, np.integer):
        raise TypeError(f"{name} must hold integers, got dtype {arr.dtype}")
    info = np.iinfo(np.int32)
    if arr.size and (arr.min() < info.min or arr.max() > info.max):
        raise ValueError(f"{name} values must fit in int32")
    return arr


def _check_inputs(embeddings, modality, positions):
    emb = np.asarray(embeddings)
    if not (np.issubdtype(emb.dtype, np.floating) or np.issubdtype(emb.dtype, np.integer)) or emb.dtype == bool:
        raise TypeError(f"embeddings must be real numbers (float32 [N, D]), got dtype {emb.dtype}")
    if emb.ndim != 2 or emb.shape[1] < 1:
        raise ValueError(f"embeddings must have shape [N, D] with D >= 1, got {emb.shape}")
    n = emb.shape[0]
    emb = np.ascontiguousarray(emb, dtype=np.float32)
    for start in range(0, n, 4096):             # in blocks: no N x D temporary for long inputs
        bad = ~np.isfinite(emb[start:start + 4096]).all(axis=1)
        if bad.any():
            row = start + int(np.flatnonzero(bad)[0])
            raise ValueError(f"embeddings hold NaN or inf (or values overflowing float32), first at row {row}")

    mod = _int_array("modality", modality)
    if mod.ndim != 1 or mod.shape[0] != n:
        raise ValueError(f"modality must have shape [{n}] (one per embedding row), got {mod.shape}")
    unknown = ~np.isin(mod, (0, 1, 2, 3))
    if unknown.any():
        i = int(np.flatnonzero(unknown)[0])
        raise ValueError(f"modality[{i}] = {mod[i]} is not 0 (text), 1 (video), 2 (audio) or 3 (image)")

    pos = _int_array("positions", positions)
    if pos.shape != (3, n):
        raise ValueError(f"positions must have shape [3, {n}] (t, h, w per token), got {pos.shape}")
    return emb, np.ascontiguousarray(mod, dtype=np.int32), np.ascontiguousarray(pos, dtype=np.int32)


def sift(embeddings, modality, positions, *, video_retention: float = 1.0, audio_retention: float = 1.0,
         image_retention: float = 1.0, audio_selector: str = "anchor",
         sift_head: Union[None, str, os.PathLike, SiftHead] = None, seed: int = 0,
         engine: Optional[Engine] = None, return_scores: bool = False):
    """Which tokens of one omni sequence OmniSIFT keeps.

    embeddings: float32 [N, D] projector outputs; modality: int [N] (0 text, 1 video, 2 audio,
    3 image); positions: int [3, N] M-RoPE (t, h, w). Retentions are the kept fractions, per video
    grid, per chunk's audio and per image: a group of n tokens drops floor(n * (1 - r) + 1e-9).
    audio_selector: "anchor" (training-free), "vgas" (learned; needs sift_head, a head GGUF path or
    a SiftHead), "random" (seeded) or "none". Text is always kept. See omnisift.h for the full rules.

    Returns the bool keep mask [N], or (mask, scores) with ``return_scores``: float32 [N], the score
    that ranked each token (video/image: cosine similarity, dropped when high; audio: selector score,
    kept when high), NaN where none.
    """
    emb, mod, pos = _check_inputs(embeddings, modality, positions)
    video_retention = _retention("video_retention", video_retention)
    audio_retention = _retention("audio_retention", audio_retention)
    image_retention = _retention("image_retention", image_retention)
    check_audio_selector(audio_selector)
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral):
        raise TypeError(f"seed must be an int, got {type(seed).__name__}")
    if not 0 <= int(seed) < 2**64:
        raise ValueError(f"seed = {seed} is not in [0, 2**64)")
    if sift_head is not None and not isinstance(sift_head, (str, os.PathLike, SiftHead)):
        raise TypeError(f"sift_head must be a path or a SiftHead, got {type(sift_head).__name__}")
    if audio_selector == "vgas" and sift_head is None:
        raise ValueError('audio_selector="vgas" needs sift_head (a head GGUF from pyomnisift convert-head)')

    head = None
    if audio_selector == "vgas":
        if isinstance(sift_head, SiftHead):
            if engine is not None and engine is not sift_head.engine:
                raise ValueError("sift_head was loaded with another engine: load it with the engine passed to sift()")
            engine = sift_head.engine
        engine = engine or default_engine()
        head = sift_head if isinstance(sift_head, SiftHead) else SiftHead(sift_head, engine)
        if head.n_embd != emb.shape[1]:
            raise ValueError(f"the sift head {head.path} expects embeddings of width {head.n_embd}, "
                             f"got width {emb.shape[1]} (a head for another model?)")

    engine = engine or default_engine()
    params = c_params(video_retention, audio_retention, image_retention, audio_selector, head, seed)

    n = emb.shape[0]
    keep = np.ones(n, dtype=np.uint8)
    scores = np.full(n, np.nan, dtype=np.float32)
    status = C.omnisift_sift(engine.ptr, emb.ctypes.data, n, emb.shape[1], mod.ctypes.data, pos.ctypes.data,
                             ctypes.byref(params), keep.ctypes.data, scores.ctypes.data if return_scores else None)
    C.check(status, "sift")
    mask = keep.astype(bool)
    return (mask, scores) if return_scores else mask


def n_kept(modality, positions, *, video_retention: float = 1.0, audio_retention: float = 1.0,
           image_retention: float = 1.0, audio_selector: str = "anchor") -> int:
    """How many tokens ``sift`` keeps for this layout (C: omnisift_sift_n_kept), without embeddings:
    the count follows from the grouping and the retentions alone, so a prompt can be sized before
    anything is encoded."""
    mod = np.ascontiguousarray(_int_array("modality", modality), dtype=np.int32)
    pos = np.ascontiguousarray(_int_array("positions", positions), dtype=np.int32)
    if mod.ndim != 1 or pos.shape != (3, mod.shape[0]):
        raise ValueError(f"modality [N] and positions [3, N] disagree: {mod.shape} vs {pos.shape}")
    check_audio_selector(audio_selector)
    params = c_params(_retention("video_retention", video_retention), _retention("audio_retention", audio_retention),
                      _retention("image_retention", image_retention), audio_selector)
    out = C.omnisift_sift_n_kept(mod.ctypes.data, pos.ctypes.data, mod.shape[0], ctypes.byref(params))
    if out < 0:
        C.check(int(out), "sift_n_kept")
    return int(out)


def chunks(modality, positions) -> np.ndarray:
    """The chunk of every token as ``sift`` groups them (C: omnisift_sift_chunks): int64 [N], c for
    the tokens of video grids 2c and 2c + 1 and the audio of their seconds, -1 for tokens in no chunk
    (text, images, audio without video before it). Compressing chunk by chunk gives ``sift``'s mask."""
    mod = np.ascontiguousarray(_int_array("modality", modality), dtype=np.int32)
    pos = np.ascontiguousarray(_int_array("positions", positions), dtype=np.int32)
    if mod.ndim != 1 or pos.shape != (3, mod.shape[0]):
        raise ValueError(f"modality [N] and positions [3, N] disagree: {mod.shape} vs {pos.shape}")
    out = np.empty(mod.shape[0], np.int64)
    n = C.omnisift_sift_chunks(mod.ctypes.data, pos.ctypes.data, mod.shape[0], out.ctypes.data)
    if n < 0:
        C.check(int(n), "sift_chunks")
    return out
