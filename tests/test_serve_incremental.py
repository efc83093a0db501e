"""Incremental encoding equals a full re-encode: stepping a recurrent state item by item gives
the model's own query at every prefix, and the served top-k equals the evaluator's path."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from seqrec.models import build_model
from seqrec.recommend import Recommender
from seqrec.serve.engine import Engine, EngineOptions, Query
from seqrec.serve.incremental import RNNStepper, StateCache

from _serve_support import tiny_artifact

RNN_SPECS = [
    {"name": "lstm", "embed_dim": 16, "hidden_dim": 24, "num_layers": 2, "max_len": 30},
    {"name": "gru4rec", "embed_dim": 16, "hidden_dim": 24, "num_layers": 2, "max_len": 30},
    {"name": "gru4rec", "embed_dim": 8, "hidden_dim": 12, "num_layers": 1, "max_len": 30},
]


@pytest.mark.parametrize("spec", RNN_SPECS, ids=lambda s: f"{s['name']}-{s['num_layers']}")
def test_stepping_equals_full_reencode_at_every_prefix(spec):
    model = build_model(spec, n_items=50, seed=3).eval()
    stepper = RNNStepper.for_model(model)
    assert stepper is not None
    rng = np.random.default_rng(0)
    history = torch.from_numpy(rng.integers(1, 51, size=model.max_len))  # up to max_len items
    with torch.no_grad():
        q, state = stepper.encode(history[None, :1])
        for n in range(1, model.max_len + 1):
            full = model.query(history[None, :n])  # [1, D] the evaluator's call
            assert torch.allclose(q, full, atol=1e-6), f"prefix {n}"
            if n < model.max_len:
                q, state = stepper.step(state, history[None, n : n + 1])
        # several items in one step, and a batch of left-padded histories, agree as well
        q3, _ = stepper.step(stepper.encode(history[None, :10])[1], history[None, 10:13])
        assert torch.allclose(q3, model.query(history[None, :13]), atol=1e-6)
        seq = torch.zeros(3, 12, dtype=torch.long)
        for r, n in enumerate((12, 5, 1)):
            seq[r, 12 - n:] = history[:n]
        qb, _ = stepper.encode(seq)
        assert torch.allclose(qb, model.query(seq), atol=1e-6)


def test_sasrec_and_popularity_are_not_incremental():
    assert RNNStepper.for_model(build_model({"name": "sasrec", "d_model": 8}, 20, 0).eval()) is None
    assert RNNStepper.for_model(build_model({"name": "pop"}, 20, 0).eval()) is None
    with pytest.raises(ValueError, match="eval mode"):
        RNNStepper.for_model(build_model({"name": "lstm"}, 20, 0).train())


def test_state_cache_continues_prefixes_and_reencodes_anything_else():
    model = build_model(RNN_SPECS[0], n_items=50, seed=1).eval()
    cache = StateCache(RNNStepper.for_model(model), model.max_len, max_users=2)
    h = np.arange(1, 11, dtype=np.int64)
    (q,) = cache.queries(["u"], [h[:4]])
    assert (cache.hits, cache.misses) == (0, 1)
    qa, qb = cache.queries(["u", "v"], [h[:5], h[:3]])  # u: one step; v: new
    assert (cache.hits, cache.misses) == (1, 2)
    with torch.no_grad():
        assert torch.allclose(qa, model.query(torch.from_numpy(h[None, :5]))[0], atol=1e-6)
        assert torch.allclose(qb, model.query(torch.from_numpy(h[None, :3]))[0], atol=1e-6)
    changed = np.array([9, 9, 9, 9, 9, 9], dtype=np.int64)  # u's history rewritten elsewhere
    (qc,) = cache.queries(["u"], [changed])
    assert cache.misses == 3
    with torch.no_grad():
        assert torch.allclose(qc, model.query(torch.from_numpy(changed[None]))[0], atol=1e-6)
    cache.queries(["w"], [h[:2]])  # a third user evicts the least recently used (v)
    assert len(cache) == 2
    assert not cache.usable(np.zeros(0, dtype=np.int64)) and not cache.usable(np.arange(1, 32))


@pytest.mark.parametrize("model", ["lstm", "gru4rec"])
def test_served_topk_with_the_cache_equals_the_recommender(ml100k_slice, model):
    """Live users clicking one item at a time: the cached path gives the Recommender's (the
    evaluator's) top-k, for histories inside max_len (stepped) and beyond it (re-encoded)."""
    art = tiny_artifact(ml100k_slice, model, "model.max_len=20", "model.hidden_dim=32")
    rec = Recommender.load(art)
    engine = Engine(rec, EngineOptions(incremental=True))
    assert engine.cache is not None
    rng = np.random.default_rng(5)
    items = rec.items.ids
    for user in range(3):
        clicks = [items[int(i)] for i in rng.integers(0, len(items), size=24)]
        for n in range(1, len(clicks) + 1):
            got = engine.recommend([Query(live_items=clicks[:n], k=10, cache_key=f"u{user}")])[0]
            want = rec.recommend(clicks[:n], k=10)
            assert got.items == want.items, (user, n)
            assert np.allclose(got.scores, want.scores, atol=1e-5)
    assert engine.cache.hits >= 3 * 19  # every click inside max_len after the first was a step


def test_served_topk_without_the_cache_is_identical_to_the_recommender(ml100k_slice):
    art = tiny_artifact(ml100k_slice, "sasrec", "model.d_model=16")
    rec = Recommender.load(art)
    engine = Engine(rec)
    for user in rec.users.ids[:30]:
        got = engine.recommend([Query(live_items=[], k=10, user=user)])[0]
        want = rec.recommend_user(user, k=10)
        assert got.items == want.items and got.scores == want.scores  # exactly, same path
