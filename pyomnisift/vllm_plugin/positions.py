"""M-RoPE positions of the compressed sequence: kept rows keep their original (t, h, w).

Which rows survive is known only once the encoder has run, after vLLM computed the prompt's
positions. So, as vLLM's EVS does for Qwen2.5-VL (vllm/multimodal/video_prune/evs.py), each kept row
leaves the encoder with its position appended, and the model runner's pruning hook
(`recompute_mrope_positions`, called with the rows of each prefill step) writes them into the
request's positions before the rows reach the LLM. Unlike EVS the appended values are exact for
any dtype: four int32 (t, h, w from the item's start, and the row's index among the item's rows)
reinterpreted as the embedding dtype's bytes, not converted to it (bf16 holds integers exactly only
up to 256).

Everything that does not depend on the selection is final from the start: the text around each
item, and what follows it, take the positions of the uncompressed sequence (transformers'
`get_rope_index`), so the LLM sees the kept rows exactly where the full sequence had them.
"""

from __future__ import annotations

import numpy as np
import torch

N_CHANNELS = 4  # t, h, w, row index within the item


def append_positions(rows: torch.Tensor, positions: np.ndarray) -> torch.Tensor:
    """rows [K, D] and their positions int [3, K] (from the item's start) -> [K, D + extra]."""
    k = rows.shape[0]
    packed = np.concatenate([positions.T, np.arange(k)[:, None]], axis=1).astype(np.int32)
    channels = torch.from_numpy(np.ascontiguousarray(packed)).to(rows.device)
    return torch.cat([rows, channels.view(rows.dtype)], dim=1)


def split_positions(rows: torch.Tensor, width: int) -> tuple[torch.Tensor, torch.Tensor]:
    """append_positions undone: (rows [K, width], int64 [K, 4] = t, h, w, row index)."""
    return rows[:, :width], rows[:, width:].contiguous().view(torch.int32).long().cpu()


def recompute(input_ids, embeddings, mrope_positions: torch.Tensor, num_computed_tokens: int,
              width: int, media_token_ids: list[int]):
    """The runner's hook. `embeddings` are the request's rows of this prefill step, in prompt order:
    they fill, one by one, the media placeholders from `num_computed_tokens` on. Rows wider than
    `width` carry their positions (the compressed items); the others are vLLM's own and keep
    theirs. A compressed item's positions are relative to its start, one past the position of the
    token before its first row (its <|audio_bos|>), which is text and therefore already exact."""
    ids = torch.as_tensor(input_ids).to("cpu", torch.long)
    slots = torch.nonzero(torch.isin(ids, torch.tensor(media_token_ids)), as_tuple=True)[0]
    slots = slots[slots >= num_computed_tokens]
    positions = mrope_positions.clone()
    out, row = [], 0
    for emb in embeddings:
        n = emb.shape[0]
        if emb.shape[1] > width:
            emb, channels = split_positions(emb, width)
            at = slots[row:row + n]
            if len(at) != n:
                raise RuntimeError(f"OmniSIFT: {n} rows for {len(at)} placeholders left in the prompt")
            first = at - channels[:, 3]
            base = positions[0, (first - 1).to(positions.device)].long().cpu() + 1
            new = (channels[:, :3] + base[:, None]).T
            positions[:, at.to(positions.device)] = new.to(positions.device, positions.dtype)
        out.append(emb)
        row += n
    delta = int(positions.max()) + 1 - len(ids)
    return out, positions, delta
