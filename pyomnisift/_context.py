"""The context: the one writer of llama's KV cache, ``input_ids`` and ``n_tokens``.

It executes a plan (_plan.py) into a llama-cpp-python context: it finds the longest prefix the
context already holds (or restores a longer one, ending with media, from the media cache:
_state_cache.py), trims the rest, decodes text through ``Llama.eval`` (positions ``n_tokens``
onward) and each media item through libomnisift's ``omnisift_context``, one C call per compression
unit (frames and audio features in; vision encoder, audio tower, sift, queue and batched
llama_decode in C; kept rows at their original (t, h, w), or at consecutive positions for models
with ordinary RoPE). ``input_ids`` / ``n_tokens`` stay in llama-cpp-python's convention (one entry
per position, media as placeholders: see _plan.py), so its own ``create_completion`` continues from
them and a follow-up turn reuses what is held.

A failure or a Ctrl-C while the prompt is decoded leaves a fresh context behind (the next request
answers as a fresh model would). Ctrl-C is noted, not raised, while C runs (the log callbacks that
C calls into Python would swallow the KeyboardInterrupt) and raised between units: encoding stops
within one unit.
"""

from __future__ import annotations

import contextlib
import ctypes
import signal
import threading
import warnings
from typing import Callable, Optional

import llama_cpp
import numpy as np

from . import omnisift_cpp as C
from ._pipeline import AudioFeed, Frames, units
from ._plan import MediaSegment, Plan, TextSegment
from ._internals import Handle
from ._sift import c_params
from ._state_cache import PrefixStates
from ._stats import Stats, UnitRecord


def sift_params(settings, head=None) -> Optional[C.omnisift_sift_params]:
    """The C parameters of validated settings; None when nothing is pruned (every row kept)."""
    if settings.is_off:
        return None
    return c_params(settings.video_retention, settings.audio_retention, settings.image_retention,
                    settings.audio_selector, head, settings.seed)


class Context:
    """Decodes plans into one llama-cpp-python context with one model's encoders.

    batch_rows: kept rows of consecutive units are decoded together, up to this many per flush
    (0: the context's n_batch; 1: every unit on its own, as before batching across units).
    reuse_identical_pairs: a frame pair pixel-identical to the pair before takes its rows instead
    of being encoded again (the encoder is deterministic, so the rows are the same).
    """

    def __init__(self, *, vision, audio, engine, uses_mrope: bool, batch_rows: int = 0,
                 reuse_identical_pairs: bool = True):
        self.vision = vision           # MtmdEncoder or None
        self.audio = audio             # AudioTower (windowed), libmtmd's audio (rows at planning) or None
        self.engine = engine
        self.uses_mrope = uses_mrope
        self.batch_rows = batch_rows
        self.reuse_identical_pairs = reuse_identical_pairs

    # --- the state llama-cpp-python keeps

    @staticmethod
    def reset(llama) -> None:
        """An empty context: no cells, no bookkeeping."""
        llama.reset()
        llama._ctx.kv_cache_clear()

    @staticmethod
    def reusable_prefix(llama, plan: Plan) -> int:
        """Positions at the start of the plan that the context already holds, never cutting media."""
        held = llama.input_ids[:llama.n_tokens]
        new = np.asarray(plan.ids[:len(held)], dtype=np.int64)
        held = held[:len(new)].astype(np.int64)
        diff = np.flatnonzero(held != new)
        p = int(diff[0]) if len(diff) else len(new)
        for seg in plan.media:
            if seg.start < p < seg.end:
                return seg.start
        return p

    def prefill(self, llama, plan: Plan, stats: Stats, *, sift_head=None, on_unit: Optional[Callable] = None,
                progress: Optional[Callable] = None, states: Optional[PrefixStates] = None) -> None:
        """Makes the context hold the plan up to its last media item (the text after it is left to
        create_completion, which reuses its own prefix): what it holds already is kept, a longer
        prefix ending with media is restored from ``states`` (a media cache), the rest trimmed and
        decoded; the state after every media item decoded goes into ``states``."""
        start = self.reusable_prefix(llama, plan)
        stats.media_reused = sum(1 for seg in plan.media if seg.end <= start)
        if states is not None and start < plan.media_end:
            start = self._restore(llama, plan, states, start, stats)
        stats.prefill_from = start
        if start >= plan.media_end:
            return
        llama._ctx.kv_cache_seq_rm(-1, start, -1)
        llama.n_tokens = start
        try:
            with _interrupt_between_units() as interrupted:
                self._decode(llama, plan, start, plan.media_end, stats, sift_head, on_unit, progress, interrupted,
                             states)
        except BaseException:
            # A half-decoded prompt must not leak into the next request: start it afresh.
            self.reset(llama)
            raise

    # --- the media cache

    def _restore(self, llama, plan: Plan, states: PrefixStates, start: int, stats: Stats) -> int:
        """The longest cached prefix past ``start`` into an emptied context; the position decoding
        goes on from (``start`` when nothing was restored)."""
        with stats.timer("cache"):
            hit = states.longest(plan, after=start)
            if hit is None:
                return start
            end, key, state = hit
            self.reset(llama)
            buf = ctypes.cast(ctypes.c_char_p(state), ctypes.POINTER(ctypes.c_uint8))
            if llama_cpp.llama_state_seq_set_data(llama.ctx, buf, len(state), 0) != len(state):
                # llama.cpp refused it (a state it cannot read): decode from scratch, never this entry again
                states.cache.discard(key)
                self.reset(llama)
                stats.warnings.append("a media cache entry llama.cpp could not restore was removed")
                warnings.warn(stats.warnings[-1], stacklevel=4)
                return 0
        llama.input_ids[:end] = plan.ids[:end]
        llama.n_tokens = end
        stats.media_reused = 0
        stats.media_restored = sum(1 for seg in plan.media if seg.end <= end)
        return end

    @staticmethod
    def _store(llama, plan: Plan, end: int, states: PrefixStates, stats: Stats) -> None:
        """The state of the context, which holds the plan up to ``end``, into the media cache."""
        key = states.key(plan.ids[:end])
        if key in states.cache:
            return
        with stats.timer("cache"):
            n = llama_cpp.llama_state_seq_get_size(llama.ctx, 0)
            buf = (ctypes.c_uint8 * n)()
            written = llama_cpp.llama_state_seq_get_data(llama.ctx, buf, n, 0)
            state = ctypes.string_at(buf, written)
            states.cache.put(key, state)
        stats.cache_bytes_stored += len(state)

    # --- decoding

    def _decode(self, llama, plan: Plan, start: int, stop: int, stats: Stats, sift_head, on_unit, progress,
                interrupted, states: Optional[PrefixStates]) -> None:
        oc = _Handle(llama.ctx, self.vision, self.audio, self.engine, self.batch_rows, self.reuse_identical_pairs)
        try:
            for seg in plan.segments:
                if seg.end <= start or seg.start >= stop:
                    continue
                if isinstance(seg, TextSegment):
                    if llama.n_tokens != max(seg.start, start):
                        raise RuntimeError(f"context at position {llama.n_tokens}, the plan at {max(seg.start, start)}")
                    with stats.timer("prefill"):
                        llama.eval(seg.tokens[max(start - seg.start, 0):])
                    continue
                if seg.start < start:
                    raise RuntimeError("a media item cannot be decoded from its middle")
                self._media(llama, oc, plan, seg, stats, sift_head, on_unit, progress, interrupted)
                if states is not None:
                    self._store(llama, plan, seg.end, states, stats)
                if progress is not None:
                    progress("prefill", seg.end - start, len(plan.ids) - start)
        finally:
            st = oc.stats()
            stats.timings["encode_vision"] += st.t_vision_ms
            stats.timings["encode_audio"] += st.t_audio_ms
            stats.timings["compress"] += st.t_sift_ms
            stats.timings["prefill"] += st.t_decode_ms
            stats.encoder_calls["vision"] += st.n_vision_calls
            stats.encoder_calls["audio"] += st.n_audio_calls
            stats.pairs_reused += st.n_grids_reused
            stats.media_batches += st.n_decode_calls
            oc.close()

    def _media(self, llama, oc: "_Handle", plan: Plan, seg: MediaSegment, stats: Stats, sift_head, on_unit,
               progress, interrupted) -> None:
        ctx = llama.ctx
        nxt = seg.start   # the next position under ordinary RoPE
        if seg.open_tokens:
            nxt = self._tokens(ctx, seg.open_tokens, seg.start, nxt, stats, seg.wrappers_apart)
        lay = seg.layout
        frames = Frames(seg)
        audio = AudioFeed(seg) if seg.probe.n_audio else None
        try:
            oc.begin(sift_params(plan.settings, sift_head))
            all_units = units(seg)
            for done, rows_idx in enumerate(all_units):
                mod = np.ascontiguousarray(lay.modality[rows_idx], dtype=np.int32)
                src = np.ascontiguousarray(lay.source[rows_idx], dtype=np.int32)
                pos = np.ascontiguousarray(lay.positions[:, rows_idx], dtype=np.int32)
                is_audio = mod == C.OMNISIFT_MODALITY_AUDIO
                with stats.timer("media_decode"):
                    pixels = frames.take(len(np.unique(src[~is_audio])))
                new_audio = None
                if is_audio.any():
                    with stats.timer("encode_audio"):
                        new_audio = audio.until(int(src[is_audio].max()) + 1)
                text = text_pos = None
                if len(seg.text_tokens):   # the text before this unit's grids (Qwen3-VL's timestamps)
                    mine = np.isin(seg.text_grid, src[mod == C.OMNISIFT_MODALITY_VIDEO])
                    text = np.ascontiguousarray(seg.text_tokens[mine], dtype=np.int32)
                    text_pos = np.ascontiguousarray(seg.text_pos[mine], dtype=np.int32)
                keep = oc.add(seg.item.label, mod, src, pos, -1 if self.uses_mrope else nxt, pixels,
                              frames.per_grid, new_audio, audio.mel if audio is not None else True, text, text_pos)
                if not self.uses_mrope:
                    nxt += int(keep.sum())
                if on_unit is not None:
                    on_unit(UnitRecord(seg.index, seg.probe.kind, mod, lay.source[rows_idx], pos, keep,
                                       oc.unit_rows(), *(() if text is None else (text, text_pos))))
                if progress is not None:
                    progress("encode", done + 1, len(all_units))
                if interrupted.is_set():
                    raise KeyboardInterrupt
            oc.end()
            if audio is not None:
                audio.finish()
        finally:
            frames.close()
            if audio is not None:
                audio.close()
        if seg.close_tokens:
            first = seg.end - (len(seg.close_tokens) if seg.wrappers_apart else 1)
            nxt = self._tokens(ctx, seg.close_tokens, first, nxt, stats, seg.wrappers_apart)
        if not self.uses_mrope and nxt != seg.end:
            raise RuntimeError(f"decoded up to position {nxt}, the plan expected {seg.end}")
        llama.input_ids[seg.start:seg.end] = seg.placeholders
        llama.n_tokens = seg.end
        stats.media_cells += seg.n_cells

    def _tokens(self, ctx, tokens: list, pos: int, nxt: int, stats: Stats, apart: bool = False) -> int:
        """Decodes tokens that share position pos (M-RoPE; `apart`: at pos, pos + 1, ...), or at nxt,
        nxt + 1, ...; returns the next."""
        toks = np.ascontiguousarray(tokens, dtype=np.int32)
        if self.uses_mrope:
            positions = (np.arange(pos, pos + len(toks), dtype=np.int32) if apart
                         else np.full(len(toks), pos, np.int32))
        else:
            positions = np.arange(nxt, nxt + len(toks), dtype=np.int32)
            nxt += len(toks)
        with stats.timer("prefill"):
            C.check(C.omnisift_decode_tokens(ctx, toks.ctypes.data_as(C._int32_p), len(toks),
                                             positions.ctypes.data_as(C._int32_p), 0, 0), "decode")
        return nxt


class _Handle(Handle):
    """Owns one ``omnisift_context`` (C) for a request: one ctypes crossing per unit, a second only
    when the unit's rows are asked for."""

    _free = C.omnisift_context_free

    def __init__(self, lctx, vision, audio, engine, batch_rows: int, reuse: bool):
        p = C.omnisift_context_default_params()
        p.max_rows = int(batch_rows)
        p.reuse_identical = int(bool(reuse))
        mctx = vision.ptr if vision is not None else None
        tower = audio.ptr if audio is not None and hasattr(audio, "ptr") else None
        self.engine = engine
        self._ptr = C.check_ptr(C.omnisift_context_init(lctx, mctx, engine.ptr if engine is not None else None,
                                                        tower, p), "context")

    def begin(self, params: Optional[C.omnisift_sift_params]) -> None:
        C.check(C.omnisift_context_begin(self.ptr, ctypes.byref(params) if params is not None else None), "context")

    def add(self, label: str, mod: np.ndarray, src: np.ndarray, pos: np.ndarray, renumber_from: int,
            frames: list, frames_per_grid: int, audio: Optional[np.ndarray], audio_is_mel: bool,
            text: Optional[np.ndarray] = None, text_pos: Optional[np.ndarray] = None) -> np.ndarray:
        u = C.omnisift_unit()
        u.n_rows = len(mod)
        u.modality, u.source, u.pos = mod.ctypes.data, src.ctypes.data, pos.ctypes.data
        u.renumber_from = int(renumber_from)
        ptrs = (ctypes.c_void_p * max(len(frames), 1))(*[f.ctypes.data for f in frames])
        if frames:
            u.frames, u.n_frames, u.frames_per_grid = ctypes.addressof(ptrs), len(frames), frames_per_grid
            u.height, u.width = frames[0].shape[:2]
        if audio is not None:
            if audio_is_mel:
                u.mel, u.n_mel_frames = audio.ctypes.data, audio.shape[0]
            else:
                u.audio_rows, u.n_audio_rows = audio.ctypes.data, audio.shape[0]
        if text is not None and len(text):
            u.text, u.text_pos, u.n_text = text.ctypes.data, text_pos.ctypes.data, len(text)
        keep = np.ones(len(mod), np.uint8)
        status = C.omnisift_context_add(self.ptr, ctypes.byref(u), keep.ctypes.data)
        C.check(status, label if status == C.OMNISIFT_ERR_FILE else "context")
        return keep.view(bool)

    def unit_rows(self) -> np.ndarray:
        n, d = ctypes.c_int64(), ctypes.c_int64()
        ptr = C.omnisift_context_unit_rows(self.ptr, ctypes.byref(n), ctypes.byref(d))
        return np.ctypeslib.as_array(ptr, shape=(n.value, d.value)).copy()

    def end(self) -> None:
        C.check(C.omnisift_context_end(self.ptr, 0), "context")

    def stats(self) -> C.omnisift_context_stats:
        return C.omnisift_context_get_stats(self.ptr)


@contextlib.contextmanager
def _interrupt_between_units():
    """While C encodes, a Ctrl-C (SIGINT) only sets the yielded event; the loop raises
    KeyboardInterrupt after the unit. Python's default handler would raise wherever the next Python
    code runs, and when that is a ctypes callback (llama.cpp's and clip's log go through
    llama-cpp-python's Python log callback) the exception is printed as "ignored" and lost. Only in
    the main thread and only over Python's default handler: a handler of the application's stays."""
    event = threading.Event()
    if (threading.current_thread() is not threading.main_thread()
            or signal.getsignal(signal.SIGINT) is not signal.default_int_handler):
        yield event
        return
    previous = signal.signal(signal.SIGINT, lambda signum, frame: event.set())
    try:
        yield event
    finally:
        signal.signal(signal.SIGINT, previous)
    if event.is_set():   # a Ctrl-C after the last unit's check
        raise KeyboardInterrupt
