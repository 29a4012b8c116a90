"""Direct access to a pyomnisift.Llama's llama.cpp context for tests that drive decoding by hand:
the two libomnisift decode calls, a clear that leaves no trace, and a prompt prefilled through the
public API with the logits of its last position."""

from __future__ import annotations

import llama_cpp
import numpy as np

from pyomnisift import omnisift_cpp as C


def prefill(llm, messages: list, **settings) -> dict:
    """Decodes the prompt of `messages` through create_chat_completion (reusing what the context
    holds), leaving the logits of its last position for `logits_of(llm)`: one token is sampled and not
    decoded. Returns {"prompt_tokens": KV cells, "omnisift": usage["omnisift"]}."""
    out = llm.create_chat_completion(messages, max_tokens=1, temperature=0.0, **settings)
    return {"prompt_tokens": out["usage"]["prompt_tokens"], "omnisift": out["usage"]["omnisift"]}


def logits_of(llm) -> np.ndarray:
    """The last decoded position's logits (float32 [n_vocab])."""
    ptr = llama_cpp.llama_get_logits_ith(llm.ctx, -1)
    return np.ctypeslib.as_array(ptr, shape=(llm.n_vocab(),)).copy()


def clear(llm) -> None:
    llm.reset()
    llm._ctx.kv_cache_clear()


def decode_tokens(llm, tokens, positions, logits_last: bool = False) -> None:
    toks = np.ascontiguousarray(tokens, dtype=np.int32)
    pos = np.ascontiguousarray(positions, dtype=np.int32)
    C.check(C.omnisift_decode_tokens(llm.ctx, toks.ctypes.data_as(C._int32_p), len(toks),
                                     pos.ctypes.data_as(C._int32_p), 0, int(logits_last)), "decode")


def decode_rows(llm, rows, positions) -> None:
    rows = np.ascontiguousarray(rows, dtype=np.float32)
    pos = np.ascontiguousarray(positions, dtype=np.int32)
    C.check(C.omnisift_decode_embd(llm.ctx, rows.ctypes.data_as(C._float_p), len(rows), rows.shape[1],
                                   pos.ctypes.data_as(C._int32_p), 0, 0), "decode")


def collect_units(call, *args, **kwargs):
    """(result of call(..., on_unit=...), the UnitRecords it reported, concatenated:
    rows, modality, positions, keep)."""
    seen = []
    out = call(*args, on_unit=seen.append, **kwargs)
    if not seen:
        return out, None
    rows = np.concatenate([u.rows for u in seen])
    modality = np.concatenate([u.modality for u in seen])
    positions = np.concatenate([u.positions for u in seen], axis=1)
    keep = np.concatenate([u.keep for u in seen])
    return out, (rows, modality, positions, keep)
