"""Independent reference of OmniSIFT's keep decision, written from shared/notes/method.md and the
rules documented in cpp/omnisift.h (rounding, ties, chunking, the anchor and random selectors), in
float64 numpy; the learned selector is a PyTorch module with nn.MultiheadAttention.

Nothing here calls pyomnisift: the tests compare the two.
"""

from __future__ import annotations

import math

import numpy as np

TEXT, VIDEO, AUDIO, IMAGE = 0, 1, 2, 3
COS_EPS = 1e-12
ANCHOR_TEMPERATURE = 0.1
MASK64 = (1 << 64) - 1


def drop_count(n: int, retention: float) -> int:
    return min(max(int(math.floor(n * (1.0 - retention) + 1e-9)), 0), n)


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), COS_EPS)


def spatial_scores(x: np.ndarray) -> np.ndarray:
    return _unit(x) @ _unit(x.mean(axis=0))


def temporal_scores(f1: np.ndarray, f2: np.ndarray) -> np.ndarray:
    return (_unit(f1) * _unit(f2)).sum(axis=1)


def anchor_scores(a: np.ndarray, v: np.ndarray) -> np.ndarray:
    logits = (_unit(v) @ _unit(a).T) / ANCHOR_TEMPERATURE          # [n_v, n_a]
    p = np.exp(logits - logits.max(axis=1, keepdims=True))
    p /= p.sum(axis=1, keepdims=True)
    return p.mean(axis=0)


def splitmix64(x: int) -> int:
    z = (x + 0x9E3779B97F4A7C15) & MASK64
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & MASK64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & MASK64
    return z ^ (z >> 31)


def random_score(seed: int, t: int) -> float:
    h = splitmix64((splitmix64(seed) + t) & MASK64)
    return (h >> 11) * 2.0**-53


def select(rows, scores, n_keep: int, lower_is_better: bool, keep: np.ndarray) -> None:
    """The n_keep best rows are kept; among equal scores the lower row index ranks first."""
    key = [(s if lower_is_better else -s, r) for s, r in zip(scores, rows)]
    order = sorted(range(len(rows)), key=lambda i: key[i])
    for rank, i in enumerate(order):
        keep[rows[i]] = rank < n_keep


def grids(modality: np.ndarray, t: np.ndarray, which: int) -> list[np.ndarray]:
    """Rows of each distinct t of one modality, t ascending, rows in sequence order."""
    rows = np.flatnonzero(modality == which)
    return [rows[t[rows] == tv] for tv in np.unique(t[rows])]


def chunks(modality: np.ndarray, t: np.ndarray):
    """(video grids of the chunk, audio rows of the chunk), two grids per chunk."""
    video = grids(modality, t, VIDEO)
    groups = [video[i:i + 2] for i in range(0, len(video), 2)]
    starts = [int(t[g[0][0]]) for g in groups]
    audio = np.flatnonzero(modality == AUDIO)
    out = []
    for c, g in enumerate(groups):
        end = starts[c + 1] if c + 1 < len(groups) else math.inf
        out.append((g, audio[(t[audio] >= starts[c]) & (t[audio] < end)]))
    return out


def sift(emb, modality, positions, *, video_retention=1.0, audio_retention=1.0, image_retention=1.0,
         audio_selector="anchor", head=None, seed=0):
    """Returns (keep bool [N], scores float64 [N] with NaN where none). head: a torch VGAS module."""
    emb = np.asarray(emb, dtype=np.float64)
    modality = np.asarray(modality)
    t = np.asarray(positions)[0]
    n = len(modality)
    keep = np.ones(n, dtype=bool)
    scores = np.full(n, np.nan)

    plan = chunks(modality, t)
    for g, _ in plan:
        scores[g[0]] = spatial_scores(emb[g[0]])
        if len(g) == 2:
            same = len(g[1]) == len(g[0])
            scores[g[1]] = temporal_scores(emb[g[0]], emb[g[1]]) if same else spatial_scores(emb[g[1]])
        for rows in g:
            select(rows, scores[rows], len(rows) - drop_count(len(rows), video_retention), True, keep)
    if image_retention < 1.0:
        for rows in grids(modality, t, IMAGE):
            scores[rows] = spatial_scores(emb[rows])
            select(rows, scores[rows], len(rows) - drop_count(len(rows), image_retention), True, keep)

    if audio_selector == "none":
        return keep, scores
    for g, audio in plan:
        anchors = np.concatenate([rows[keep[rows]] for rows in g])
        if len(anchors) == 0 or len(audio) < 2:
            continue
        if audio_selector == "anchor":
            s = anchor_scores(emb[audio], emb[anchors])
        elif audio_selector == "random":
            s = np.array([random_score(seed, int(t[i])) for i in audio])
        elif audio_selector == "vgas":
            s = vgas_scores(head, emb[audio], emb[anchors])
        else:
            raise ValueError(audio_selector)
        scores[audio] = s
        select(audio, s, len(audio) - drop_count(len(audio), audio_retention), False, keep)
    return keep, scores


def make_vgas_module(n_embd: int, hidden: int = 512, n_head: int = 8, score_hidden: int = 256, seed: int = 0):
    """The paper's selector, float32, with random weights (LayerNorm weights and biases randomised
    too). Evaluate a float64 copy (copy.deepcopy(m).double()) for reference scores."""
    import torch
    from torch import nn

    class Compressor(nn.Module):
        def __init__(self):
            super().__init__()
            self.v_proj = nn.Linear(n_embd, hidden)
            self.a_proj = nn.Linear(n_embd, hidden)
            self.v_norm = nn.LayerNorm(hidden, eps=1e-5)
            self.a_norm = nn.LayerNorm(hidden, eps=1e-5)
            self.cross_attn = nn.MultiheadAttention(hidden, n_head, batch_first=True)
            self.post_attn_norm = nn.LayerNorm(hidden, eps=1e-5)
            self.score_head = nn.Sequential(nn.Linear(hidden, score_hidden), nn.SiLU(), nn.Linear(score_hidden, 1))

        def forward(self, a, v):
            v = self.v_norm(self.v_proj(v))
            a = self.a_norm(self.a_proj(a))
            x, _ = self.cross_attn(a, v, v, need_weights=False)
            x = self.post_attn_norm(x + a)
            return torch.sigmoid(self.score_head(x)).squeeze(-1)

    torch.manual_seed(seed)
    m = Compressor()
    with torch.no_grad():
        for name, p in m.named_parameters():
            if "norm" in name:
                p.copy_(torch.randn_like(p) * 0.3 + (1.0 if name.endswith("weight") else 0.0))
            elif name.endswith("bias"):
                p.copy_(torch.randn_like(p) * 0.1)
    return m.eval()


def vgas_scores(module, a: np.ndarray, v: np.ndarray) -> np.ndarray:
    import torch

    dtype = next(module.parameters()).dtype
    with torch.no_grad():
        out = module(torch.from_numpy(a)[None].to(dtype), torch.from_numpy(v)[None].to(dtype))
    return out[0].numpy()
