"""Metrics on hand-computed cases."""

import math

import numpy as np
import pytest

from seqrec.evaluate import metrics as M

INF = float("inf")


def one_target(ranks):
    r = np.asarray(ranks, dtype=float)
    return r, np.arange(len(r) + 1)


def test_single_target_hand_cases():
    # ranks (0-based): 0 -> first place, 2 -> third, 10 -> eleventh, inf -> masked
    ranks, off = one_target([0, 2, 10, INF])
    assert M.hit_rate(ranks, off, 10) == pytest.approx(2 / 4)
    assert M.hit_rate(ranks, off, 11) == pytest.approx(3 / 4)
    assert M.ndcg(ranks, off, 10) == pytest.approx((1.0 + 1 / math.log2(4)) / 4)
    assert M.mrr(ranks, off, 10) == pytest.approx((1.0 + 1 / 3) / 4)
    assert M.recall(ranks, off, 10) == M.hit_rate(ranks, off, 10)
    assert M.hit_rate(ranks, off, 1) == pytest.approx(0.25)
    assert M.ndcg(ranks, off, 1) == pytest.approx(0.25)


def test_multi_target_hand_cases():
    # user A: targets at ranks 1 and 5; user B: one target at rank 0; user C: targets at 3, 30, inf
    ranks = np.array([1, 5, 0, 3, 30, INF], dtype=float)
    off = np.array([0, 2, 3, 6])
    k = 5
    assert M.hit_rate(ranks, off, k) == pytest.approx(1.0)
    assert M.recall(ranks, off, k) == pytest.approx((1 / 2 + 1 + 1 / 3) / 3)
    ideal2 = 1 + 1 / math.log2(3)
    ideal3 = ideal2 + 1 / math.log2(4)
    ndcg_a = (1 / math.log2(3)) / ideal2
    ndcg_c = (1 / math.log2(5)) / ideal3
    assert M.ndcg(ranks, off, k) == pytest.approx((ndcg_a + 1 + ndcg_c) / 3)
    assert M.mrr(ranks, off, k) == pytest.approx((1 / 2 + 1 + 1 / 4) / 3)


def test_perfect_ranking_scores_one():
    ranks = np.array([0, 1, 2, 0], dtype=float)
    off = np.array([0, 3, 4])
    for f in (M.hit_rate, M.recall, M.ndcg, M.mrr):
        assert f(ranks, off, 3) == pytest.approx(1.0)


def test_coverage():
    top = np.array([[1, 2, 3], [1, 2, 4], [0, 0, 0]])
    assert M.coverage(top, 10) == pytest.approx(0.4)


def test_bad_offsets_rejected():
    with pytest.raises(ValueError):
        M.hit_rate(np.array([1.0, 2.0]), np.array([0, 1]), 10)
    with pytest.raises(ValueError):
        M.hit_rate(np.array([1.0]), np.array([0, 1, 1]), 10)  # a user without targets


def test_all_metrics_keys():
    ranks, off = one_target([0, 3])
    out = M.all_metrics(ranks, off, [1, 10])
    assert set(out) == {f"{m}@{k}" for m in ("HR", "NDCG", "MRR", "Recall") for k in (1, 10)}
