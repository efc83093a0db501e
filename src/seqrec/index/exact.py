"""Exact top-k: the evaluator's ranking engine itself, so small catalogs are served exactly as
they were measured."""

from __future__ import annotations

from typing import Any

from torch import Tensor

from seqrec.evaluate.ranking import rank_and_topk, transposed


class ExactIndex:
    """Every item scored, in cache-sized chunks (:func:`rank_and_topk`)."""

    kind = "exact"

    def __init__(self, W: Tensor, b: Tensor | None) -> None:
        self.W = W.detach()  # [N+1, D]
        self.b = None if b is None else b.detach()  # [N+1]
        self.WT = transposed(self.W)  # [D, N+1]

    def search(self, q: Tensor, k: int, seen: Tensor | None = None,
               seen_bias: float | None = None) -> tuple[Tensor, Tensor]:
        _, scores, items = rank_and_topk(q, self.W, self.b, seen=seen, k=k, WT=self.WT,
                                         seen_bias=seen_bias)
        assert scores is not None and items is not None
        return scores, items  # [B, k], [B, k]

    def describe(self) -> dict[str, Any]:
        return {"kind": self.kind, "items": int(self.W.shape[0] - 1)}
