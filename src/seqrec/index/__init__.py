"""Top-k search over an item table: exact (the evaluator's own engine) for small catalogs, a faiss
ANN index for large ones. Both answer the same question as
:func:`seqrec.evaluate.ranking.rank_and_topk`: the ``k`` best items for query vectors ``q [B, D]``,
seen items masked, ties broken by the lower item index.
"""

from __future__ import annotations

import logging
from pathlib import Path

from torch import Tensor

from seqrec.index.base import TopKIndex, recall_at_k
from seqrec.index.exact import ExactIndex

log = logging.getLogger(__name__)

ANN_THRESHOLD = 100_000
"""Catalogs with at least this many items get the ANN index under ``kind="auto"``."""

INDEX_KINDS = ("auto", "exact", "ann")


def build_index(
    W: Tensor,
    b: Tensor | None,
    kind: str = "auto",
    *,
    ann_threshold: int = ANN_THRESHOLD,
    nprobe: int | None = None,
    cache_dir: str | Path | None = None,
    cache_key: str | None = None,
) -> TopKIndex:
    """An index over the item table ``W [N+1, D]`` (row 0 = padding) and optional bias ``b [N+1]``.

    ``kind``: ``"exact"``, ``"ann"`` (faiss IVF), or ``"auto"`` (ANN from ``ann_threshold`` items
    on). With ``cache_dir`` and ``cache_key`` a built ANN index is written there and read back the
    next time instead of being trained again.
    """
    if kind not in INDEX_KINDS:
        raise ValueError(f"unknown index kind {kind!r}; choose one of {', '.join(INDEX_KINDS)}")
    n_items = W.shape[0] - 1
    if kind == "exact" or (kind == "auto" and n_items < ann_threshold):
        return ExactIndex(W, b)
    from seqrec.index.ann import FaissIndex

    return FaissIndex.build(W, b, nprobe=nprobe, cache_dir=cache_dir, cache_key=cache_key)


__all__ = ["ANN_THRESHOLD", "INDEX_KINDS", "ExactIndex", "TopKIndex", "build_index", "recall_at_k"]
