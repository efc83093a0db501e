"""Ranking metrics as small pure functions of target ranks.

``ranks`` holds 0-based positions of each target in the user's ranked list (``inf`` = not
rankable, e.g. a target masked because it was already in the history). Users with several targets
(temporal split) are given as flat ``ranks`` with ``offsets`` (user ``u`` owns
``ranks[offsets[u]:offsets[u+1]]``); single-target users simply have ``offsets = arange(n + 1)``.
Every function returns the mean over users.
"""

from __future__ import annotations

import numpy as np


def _per_user(values: np.ndarray, offsets: np.ndarray, reduce: str) -> np.ndarray:
    starts = offsets[:-1]
    if len(values) == 0:
        return np.zeros(len(starts))
    if reduce == "sum":
        return np.add.reduceat(values, starts)
    return np.minimum.reduceat(values, starts)


def _check(ranks: np.ndarray, offsets: np.ndarray) -> None:
    if offsets[0] != 0 or offsets[-1] != len(ranks) or np.any(np.diff(offsets) < 1):
        raise ValueError("offsets must start at 0, end at len(ranks), and give each user >= 1 target")


def hit_rate(ranks: np.ndarray, offsets: np.ndarray, k: int) -> float:
    """HR@k: share of users with at least one target in the top k."""
    _check(ranks, offsets)
    return float(np.mean(_per_user(ranks, offsets, "min") < k))


def recall(ranks: np.ndarray, offsets: np.ndarray, k: int) -> float:
    """Recall@k: per user, the share of their targets in the top k (= HR@k for one target)."""
    _check(ranks, offsets)
    hits = _per_user((ranks < k).astype(np.float64), offsets, "sum")
    return float(np.mean(hits / np.diff(offsets)))


def ndcg(ranks: np.ndarray, offsets: np.ndarray, k: int) -> float:
    """NDCG@k with binary relevance: DCG of the hits over the ideal DCG of min(#targets, k) hits."""
    _check(ranks, offsets)
    gains = np.where(ranks < k, 1.0 / np.log2(np.minimum(ranks, k) + 2.0), 0.0)
    dcg = _per_user(gains, offsets, "sum")
    n_rel = np.minimum(np.diff(offsets), k)
    ideal = np.cumsum(1.0 / np.log2(np.arange(k) + 2.0))[n_rel - 1]
    return float(np.mean(dcg / ideal))


def mrr(ranks: np.ndarray, offsets: np.ndarray, k: int) -> float:
    """MRR@k: reciprocal rank of the first target in the top k (0 if none)."""
    _check(ranks, offsets)
    first = _per_user(ranks, offsets, "min")
    return float(np.mean(np.where(first < k, 1.0 / (np.minimum(first, k) + 1.0), 0.0)))


def coverage(top_items: np.ndarray, n_items: int) -> float:
    """Catalog coverage: share of the ``n_items`` items that appear in any user's list.

    ``top_items [U, k]`` holds item indices (1-based; 0 = an empty slot, ignored).
    """
    seen = np.unique(top_items[top_items > 0])
    return float(len(seen) / n_items) if n_items else 0.0


def all_metrics(ranks: np.ndarray, offsets: np.ndarray, ks: list[int]) -> dict[str, float]:
    out: dict[str, float] = {}
    for k in ks:
        out[f"HR@{k}"] = hit_rate(ranks, offsets, k)
        out[f"NDCG@{k}"] = ndcg(ranks, offsets, k)
        out[f"MRR@{k}"] = mrr(ranks, offsets, k)
        out[f"Recall@{k}"] = recall(ranks, offsets, k)
    return out
