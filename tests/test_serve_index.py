"""Top-k indexes: the exact one is the ranking engine; the faiss ANN one comes close to it
(recall measured) and masks, biases and orders as the engine does."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from seqrec.evaluate.ranking import rank_and_topk
from seqrec.index import ExactIndex, build_index, recall_at_k

pytest.importorskip("faiss")
from seqrec.index.ann import FaissIndex, default_nlist  # noqa: E402


def clustered_table(n: int, d: int, seed: int = 0, bias: bool = False):
    """Item vectors around a few hundred topics (as trained embeddings are), row 0 = padding,
    and queries that lean towards some topics."""
    g = torch.Generator().manual_seed(seed)
    topics = torch.randn(300, d, generator=g)
    which = torch.randint(0, 300, (n,), generator=g)
    W = topics[which] + 0.5 * torch.randn(n, d, generator=g)
    W = torch.cat([torch.zeros(1, d), W])  # [N+1, D]
    b = 0.3 * torch.randn(n + 1, generator=g) if bias else None
    q = 2 * topics[torch.randint(0, 300, (64,), generator=g)] + torch.randn(64, d, generator=g)
    return W, b, q


def test_exact_index_is_the_ranking_engine():
    W, b, q = clustered_table(5000, 16, bias=True)
    seen = torch.randint(1, 5001, (64, 7))
    s, i = ExactIndex(W, b).search(q, 10, seen)
    _, s2, i2 = rank_and_topk(q, W, b, seen=seen, k=10)
    assert torch.equal(i, i2) and torch.equal(s, s2)


def test_auto_picks_exact_below_the_threshold_and_ann_above():
    W, b, _ = clustered_table(3000, 8)
    assert build_index(W, b).kind == "exact"
    assert build_index(W, b, ann_threshold=1000).kind == "ann"
    assert build_index(W, b, "exact", ann_threshold=10).kind == "exact"
    with pytest.raises(ValueError, match="unknown index kind 'hnsw'"):
        build_index(W, b, "hnsw")


@pytest.mark.parametrize("bias", [False, True])
def test_ann_recall_against_exact_topk(bias):
    W, b, q = clustered_table(60_000, 32, bias=bias)
    ann = build_index(W, b, "ann")
    assert isinstance(ann, FaissIndex) and ann.describe()["nlist"] == default_nlist(60_000)
    _, exact = ExactIndex(W, b).search(q, 10)
    scores, approx = ann.search(q, 10)
    recall = recall_at_k(approx, exact)
    assert recall >= 0.95, f"ANN recall@10 {recall:.3f} against exact top-k"
    # the scores of what it returns are the model's exact scores, best first
    ref = (q[:, None, :] * W[approx]).sum(-1) + (b[approx] if b is not None else 0)
    assert torch.allclose(scores, ref, atol=1e-5)
    assert bool((scores[:, :-1] >= scores[:, 1:]).all())


def test_ann_masks_seen_items_and_never_returns_padding():
    W, b, q = clustered_table(20_000, 16)
    ann = FaissIndex.build(W, b, nprobe=64)
    _, first = ann.search(q, 10)
    seen = first[:, :5]  # the five best: masking them must bring the next five up
    _, masked = ann.search(q, 10, seen)
    for row_seen, row in zip(seen.tolist(), masked.tolist()):
        assert not set(row_seen) & set(row)
        assert 0 not in row
    _, exact = ExactIndex(W, b).search(q, 10, seen)
    assert recall_at_k(masked, exact) >= 0.95


def test_ann_pads_like_the_engine_when_k_exceeds_the_catalog():
    W, b, q = clustered_table(40, 8)
    ann = FaissIndex.build(W, b, nlist=4)
    s, i = ann.search(q[:2], 50)
    assert i.shape == (2, 50) and bool((i[:, 40:] == 0).all()) and bool(torch.isneginf(s[:, 40:]).all())
    assert sorted(i[0, :40].tolist()) == list(range(1, 41))


def test_ann_index_cache_round_trip(tmp_path):
    W, b, q = clustered_table(5000, 8)
    a = FaissIndex.build(W, b, cache_dir=tmp_path, cache_key="v1")
    files = list(tmp_path.glob("v1-ivf*.faiss"))
    assert len(files) == 1
    c = FaissIndex.build(W, b, cache_dir=tmp_path, cache_key="v1")  # read back, not retrained
    assert torch.equal(a.search(q, 10)[1], c.search(q, 10)[1])


def test_recall_at_k_on_a_hand_computed_case():
    assert recall_at_k(np.array([[1, 2, 3], [4, 5, 6]]), np.array([[3, 2, 9], [7, 8, 0]])) == \
        pytest.approx((2 / 3 + 0 / 2) / 2)
