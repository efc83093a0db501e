"""Approximate top-k for large catalogs: a faiss inverted-file index (IVF, flat vectors) over
inner products, with the candidates re-scored exactly and ordered as the ranking engine orders.

Maximum inner product with a bias is an inner product in one more dimension: item ``[w_i, b_i]``
against query ``[q, 1]``. The index returns ``k`` + (number of seen items) candidates per query,
so masking the history never leaves a list short; candidates are then scored with the model's own
table (``q . w_i + b_i``) and sorted by (score desc, item index asc).
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

log = logging.getLogger(__name__)

NEG_INF = float("-inf")


def default_nlist(n_items: int) -> int:
    """About ``4 * sqrt(N)`` inverted lists, a power of two (1M items -> 4096)."""
    target = max(16, int(4 * np.sqrt(max(n_items, 1))))
    return int(2 ** round(np.log2(target)))


def default_nprobe(nlist: int) -> int:
    """Lists visited per query: 1/16 of them, at least 32. Measured on the 1M-item benchmark
    catalog (recall@10 against exact top-k, seen items masked): 1/64 -> 0.925, 1/32 -> 0.951,
    1/16 -> 0.974 at about 1.6 ms a query on one core."""
    return min(nlist, max(32, nlist // 16))


def _vectors(W: Tensor, b: Tensor | None) -> np.ndarray:
    """``[N, D(+1)]`` float32 rows of the real items (padding row 0 left out)."""
    X = W[1:].detach().float().cpu()
    if b is not None:
        X = torch.cat([X, b[1:].detach().float().cpu()[:, None]], 1)  # [N, D+1]
    return np.ascontiguousarray(X.numpy())


class FaissIndex:
    """IVF-Flat inner-product index over the item table, exact re-scoring of its candidates."""

    kind = "ann"

    def __init__(self, index: Any, W: Tensor, b: Tensor | None, nprobe: int) -> None:
        self.index = index
        self.W = W.detach()  # [N+1, D]
        self.b = None if b is None else b.detach()  # [N+1]
        self.nprobe = nprobe
        self.index.nprobe = nprobe

    @classmethod
    def build(
        cls,
        W: Tensor,
        b: Tensor | None,
        *,
        nlist: int | None = None,
        nprobe: int | None = None,
        train_points: int = 200_000,
        seed: int = 0,
        cache_dir: str | Path | None = None,
        cache_key: str | None = None,
    ) -> FaissIndex:
        """Train (k-means on a sample of at most ``train_points`` items) and fill the index, or
        read it from ``cache_dir/<cache_key>-ivf<nlist>.faiss`` when it was built before."""
        import faiss

        X = _vectors(W, b)
        n, d = X.shape
        nlist = nlist or default_nlist(n)
        nlist = max(1, min(nlist, n))
        nprobe = min(nlist, nprobe or default_nprobe(nlist))
        path = None
        if cache_dir is not None and cache_key:
            path = Path(cache_dir) / f"{cache_key}-ivf{nlist}.faiss"
            if path.exists():
                index = faiss.read_index(str(path))
                if index.ntotal == n and index.d == d:
                    log.info("ANN index read from %s", path)
                    return cls(index, W, b, nprobe)
                log.warning("ignoring %s: it holds %d x %d vectors, the model %d x %d",
                            path, index.ntotal, index.d, n, d)
        t0 = time.perf_counter()
        quantizer = faiss.IndexFlatIP(d)
        index = faiss.IndexIVFFlat(quantizer, d, nlist, faiss.METRIC_INNER_PRODUCT)
        index.cp.seed = seed
        rng = np.random.default_rng(seed)
        sample = X if n <= train_points else X[np.sort(rng.choice(n, train_points, replace=False))]
        index.train(sample)
        index.add(X)  # faiss ids 0..N-1 are item indices 1..N
        log.info("ANN index built: %d items, %d lists, nprobe %d, %.1f s", n, nlist, nprobe,
                 time.perf_counter() - t0)
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
            faiss.write_index(index, str(tmp))
            os.replace(tmp, path)
        return cls(index, W, b, nprobe)

    @property
    def n_items(self) -> int:
        return int(self.W.shape[0] - 1)

    def candidates(self, q: Tensor, n: int) -> Tensor:
        """``[B, n]`` item indices the index proposes for ``q [B, D]`` (0 where it has none)."""
        Q = q.detach().float().cpu()
        if self.b is not None:
            Q = torch.cat([Q, torch.ones(Q.shape[0], 1)], 1)  # [B, D+1]
        _, labels = self.index.search(np.ascontiguousarray(Q.numpy()), n)  # [B, n], -1 = none
        return torch.from_numpy(labels + 1).to(self.W.device)  # [B, n]

    def search(self, q: Tensor, k: int, seen: Tensor | None = None,
               seen_bias: float | None = None) -> tuple[Tensor, Tensor]:
        n_seen = int((seen > 0).sum(1).max()) if seen is not None and seen.numel() else 0
        n_cand = max(1, min(k + n_seen, self.n_items))
        cand = self.candidates(q, n_cand)  # [B, C]
        n_ann = cand.shape[1]
        if n_seen and seen_bias is not None:
            # every seen item is a candidate too, scored exactly with the bias (once each)
            assert seen is not None
            srt = torch.sort(seen, dim=1).values
            srt[:, 1:] = torch.where(srt[:, 1:] == srt[:, :-1], 0, srt[:, 1:])
            cand = torch.cat([cand, srt], 1)  # [B, C + H]
        s = (q[:, None, :] * self.W[cand]).sum(-1)  # [B, C] exact scores of the candidates
        if self.b is not None:
            s = s + self.b[cand]
        drop = cand == 0
        if n_seen:
            assert seen is not None
            in_seen = ((cand[:, :n_ann, None] == seen[:, None, :]) & (seen[:, None, :] > 0)).any(-1)
            drop[:, :n_ann] |= in_seen  # with a bias they come back once, from the seen columns
            if seen_bias is not None:
                s[:, n_ann:] += seen_bias
        s = s.masked_fill(drop, NEG_INF)
        o = torch.argsort(cand, dim=1)  # item order first, so equal scores go to lower items
        cand, s = cand.gather(1, o), s.gather(1, o)
        o = torch.sort(s, dim=1, descending=True, stable=True).indices
        s, cand = s.gather(1, o)[:, :k], cand.gather(1, o)[:, :k]  # [B, <=k]
        if s.shape[1] < k:  # a catalog smaller than k: pad as the engine does
            pad = k - s.shape[1]
            s = torch.cat([s, torch.full((s.shape[0], pad), NEG_INF, dtype=s.dtype)], 1)
            cand = torch.cat([cand, torch.zeros(cand.shape[0], pad, dtype=cand.dtype)], 1)
        cand = torch.where(torch.isneginf(s), torch.zeros_like(cand), cand)
        return s, cand

    def describe(self) -> dict[str, Any]:
        return {"kind": self.kind, "items": self.n_items, "method": "faiss IVF-Flat, inner product",
                "nlist": int(self.index.nlist), "nprobe": self.nprobe}
