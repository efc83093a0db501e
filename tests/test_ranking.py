"""The ranking engine against brute force: ranks, top-k, masking, ties, chunking."""

import numpy as np
import pytest
import torch

from seqrec.evaluate.ranking import rank_and_topk, transposed


def brute(scores: np.ndarray, seen: list[set], targets: list[list[int]], k: int):
    """Sort by (score desc, index asc) after masking; ranks of targets; top-k."""
    B, n = scores.shape
    ranks, tops = [], []
    for b in range(B):
        s = scores[b].astype(np.float64).copy()
        s[0] = -np.inf
        for i in seen[b]:
            s[i] = -np.inf
        order = sorted(range(n), key=lambda i: (-s[i], i))
        pos = {i: r for r, i in enumerate(order)}
        ranks.append([float("inf") if (t in seen[b]) else float(pos[t]) for t in targets[b]])
        tops.append([i for i in order[:k] if np.isfinite(s[i])])
    return ranks, tops


@pytest.mark.parametrize("chunk", [3, 7, 1000])
@pytest.mark.parametrize("with_ties", [False, True])
@pytest.mark.parametrize("table_t", [False, True])
def test_matches_brute_force(chunk, with_ties, table_t):
    """``table_t``: scores from the transposed copy of the table (what every ranking path passes)."""
    rng = np.random.default_rng(chunk + with_ties)
    B, D, n, k = 9, 4, 40, 6
    q = torch.from_numpy(rng.normal(size=(B, D)).astype(np.float32))
    W = torch.from_numpy(rng.normal(size=(n, D)).astype(np.float32))
    b = None
    if with_ties:  # popularity-like: one-dimensional integer scores with many ties
        q = torch.ones(B, 1)
        W = torch.from_numpy(rng.integers(0, 4, size=(n, 1)).astype(np.float32))
    seen_l = [set(rng.choice(np.arange(1, n), size=rng.integers(0, 6), replace=False).tolist()) for _ in range(B)]
    tgt_l = [rng.choice(np.arange(1, n), size=rng.integers(1, 4), replace=False).tolist() for _ in range(B)]
    H = max(1, max(len(s) for s in seen_l))
    T = max(len(t) for t in tgt_l)
    seen = torch.zeros(B, H, dtype=torch.long)
    targets = torch.zeros(B, T, dtype=torch.long)
    for i in range(B):
        seen[i, : len(seen_l[i])] = torch.tensor(sorted(seen_l[i]), dtype=torch.long)
        targets[i, : len(tgt_l[i])] = torch.tensor(tgt_l[i])
    ranks, top_s, top_i = rank_and_topk(q, W, b, seen=seen, targets=targets, k=k, chunk=chunk,
                                        WT=transposed(W) if table_t else None)
    scores = (q @ W.T).numpy()
    exp_ranks, exp_tops = brute(scores, seen_l, tgt_l, k)
    for i in range(B):
        got = ranks[i, : len(tgt_l[i])].tolist()
        assert got == exp_ranks[i]
        assert torch.isinf(ranks[i, len(tgt_l[i]):]).all()
        ids = [int(x) for x in top_i[i] if x > 0]
        assert ids == exp_tops[i]
        assert list(top_s[i][: len(ids)]) == sorted(top_s[i][: len(ids)].tolist(), reverse=True)


def test_fewer_rankable_items_than_k():
    q = torch.ones(1, 1)
    W = torch.tensor([[0.0], [3.0], [2.0], [1.0]])
    _, s, i = rank_and_topk(q, W, None, seen=torch.tensor([[1, 3]]), k=5)
    assert i[0].tolist()[:1] == [2] and (i[0, 1:] == 0).all()
    assert torch.isneginf(s[0, 1:]).all()


def test_bias_is_added():
    q = torch.zeros(1, 2)
    W = torch.zeros(4, 2)
    b = torch.tensor([0.0, 1.0, 5.0, 2.0])
    _, _, i = rank_and_topk(q, W, b, k=3)
    assert i[0].tolist() == [2, 3, 1]


def test_nan_scores_are_never_ranked_above_anything():
    q = torch.ones(2, 1)
    W = torch.tensor([[0.0], [float("nan")], [2.0], [1.0]])
    ranks, s, i = rank_and_topk(q, W, None, targets=torch.tensor([[3], [1]]), k=3)
    assert i[0].tolist()[:2] == [2, 3]
    assert ranks[0, 0] == 1.0 and torch.isinf(ranks[1, 0])  # a NaN-scored target is a miss
