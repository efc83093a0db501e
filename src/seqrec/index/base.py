"""What every top-k index answers, and how close an approximate one comes to the exact answer."""

from __future__ import annotations

from typing import Any, Protocol

import numpy as np
from torch import Tensor


class TopKIndex(Protocol):
    """``search(q [B, D], k, seen [B, H] | None, seen_bias) -> (scores [B, k], items [B, k])``.

    Items are 1-based indices, best first, ties by the lower index; rows with fewer than ``k``
    rankable items end in item 0 with score ``-inf`` (as in the ranking engine). ``seen`` items
    are left out, or with ``seen_bias`` (a model's learned repeat score) scored that much higher.
    """

    kind: str

    def search(self, q: Tensor, k: int, seen: Tensor | None = None,
               seen_bias: float | None = None) -> tuple[Tensor, Tensor]: ...

    def describe(self) -> dict[str, Any]:
        """JSON-able facts about the index (kind, size, parameters)."""
        ...


def recall_at_k(approx: np.ndarray | Tensor, exact: np.ndarray | Tensor) -> float:
    """Mean share of the exact top-k (``[B, k]`` item indices, 0 = empty slot) that the
    approximate top-k ``[B, k]`` also holds."""
    a = np.asarray(approx)
    e = np.asarray(exact)
    shares = []
    for a_row, e_row in zip(a, e):
        want = {int(i) for i in e_row if i > 0}
        if want:
            shares.append(len(want & {int(i) for i in a_row if i > 0}) / len(want))
    return float(np.mean(shares)) if shares else 1.0
