"""``model.repeat_bias``: one learned score for items the user has already had, trained by the
full softmax and added wherever a ranking keeps seen items (evaluation, Recommender, service)."""

import numpy as np
import pytest
import torch

from seqrec.chunked_softmax import full_softmax_ce
from seqrec.config import EvalConfig, TrainConfig
from seqrec.data.preprocess import sequences_from_lists
from seqrec.data.split import leave_one_out
from seqrec.evaluate.protocol import evaluate
from seqrec.evaluate.ranking import history_batch, rank_and_topk
from seqrec.losses import make_loss, real_positions, repeat_softmax_ce, seen_logits, target_seen
from seqrec.models import build_model
from seqrec.recommend import Recommender
from seqrec.serve.engine import Engine, EngineOptions, Query
from seqrec.train.loop import train

from _serve_support import tiny_artifact
from conftest import cyclic_histories, repeat_window_case, window_positions


@pytest.mark.parametrize("with_bias", [False, True])
@pytest.mark.parametrize("r", [-2.0, 0.0, 1.5])
def test_repeat_softmax_is_the_softmax_with_seen_items_shifted(with_bias, r):
    """Value and gradients (the repeat score's too) equal a plain cross-entropy whose logits of
    the distinct items read so far, the target included when it is a repeat, are raised by r."""
    x, y, states, W, b, N = repeat_window_case(4, with_bias)
    rep = torch.tensor(r, requires_grad=True)
    params = [p for p in (states, W, b, rep) if p is not None]
    assert make_loss("softmax", n_items=N, repeat_bias=True) is repeat_softmax_ce

    h, t = real_positions(states, y)
    ts = target_seen(x, y)
    assert bool(ts.any()) and not bool(ts.all())
    got = repeat_softmax_ce(h, W, b, t, seen=seen_logits(states, x, y, W, b), target_seen=ts,
                            repeat=rep)
    grads = torch.autograd.grad(got, params)

    rows = []
    for logits, had, target in window_positions(x, y, states, W, b, N):
        logits = (logits + had * rep).clone()
        logits[0] = float("-inf")
        rows.append(torch.logsumexp(logits, 0) - logits[target])
    ref = torch.stack(rows).mean()
    grads_ref = torch.autograd.grad(ref, params)
    assert got.item() == pytest.approx(ref.item(), rel=1e-5)
    for a, r_ in zip(grads, grads_ref):
        torch.testing.assert_close(a, r_, rtol=1e-4, atol=1e-6)
    if r == 0.0:
        assert got.item() == pytest.approx(full_softmax_ce(h, W, b, t).item(), rel=1e-6)


@pytest.mark.parametrize("bias", [-1.5, 2.0])
def test_ranking_adds_the_repeat_score_to_seen_items_once(bias):
    """Ranks and top-k with ``seen_bias`` are those of the scores with the bias added once to each
    distinct seen item (targets that are repeats included), across item chunks."""
    g = torch.Generator().manual_seed(1)
    B, N, D = 6, 40, 4
    q, W, b = torch.randn(B, D, generator=g), torch.randn(N + 1, D, generator=g), torch.randn(N + 1, generator=g)
    seen = torch.randint(1, N + 1, (B, 7), generator=g)
    seen[0, 3:] = 0  # padding
    seen[1, 1] = seen[1, 0]  # an item listed twice
    seen[2, 0] = 1  # the first chunk's first real item
    targets = torch.randint(1, N + 1, (B, 2), generator=g)
    targets[3, 0] = seen[3, 2]  # a target the user has had
    ranks, top_s, top_i = rank_and_topk(q, W, b, seen=seen, targets=targets, k=10, chunk=256,
                                        seen_bias=bias)
    small = rank_and_topk(q, W, b, seen=seen, targets=targets, k=10, chunk=8, seen_bias=bias)
    full = q @ W.T + b
    for i in range(B):
        had = torch.zeros(N + 1, dtype=torch.bool)
        had[seen[i]] = True
        had[0] = False
        s = full[i] + had * bias
        s[0] = float("-inf")
        order = sorted(range(1, N + 1), key=lambda j: (-float(s[j]), j))
        assert top_i[i].tolist() == order[:10]
        torch.testing.assert_close(top_s[i], s[order[:10]])
        for c, tgt in enumerate(targets[i].tolist()):
            assert ranks[i, c].item() == order.index(tgt)
    for a, b_ in zip((ranks, top_s, top_i), small):
        assert torch.equal(a, b_)


def _no_repeats(n_users=240, n_items=12, seed=0):
    """Each user reads distinct items in a random order: nothing to learn but not to repeat."""
    rng = np.random.default_rng(seed)
    return [[int(i) for i in rng.permutation(np.arange(1, n_items + 1))[: int(rng.integers(4, n_items))]]
            for _ in range(n_users)]


def _repeating_histories(n_users=240, n_items=12, seed=0):
    """Each user goes round three items of their own: every next item is one already had."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n_users):
        loop = [int(i) for i in rng.choice(np.arange(1, n_items + 1), 3, replace=False)]
        out.append([loop[j % 3] for j in range(int(rng.integers(6, 12)))])
    return out


@pytest.mark.parametrize("histories,epochs,sign", [(_no_repeats, 10, -1), (_repeating_histories, 20, 1)])
def test_the_repeat_score_is_learned_from_the_data(histories, epochs, sign):
    """Where no one repeats the score goes negative, and an unmasked ranking then scores as the
    masked one; where everyone repeats it goes positive, and the unmasked test is solved."""
    split = leave_one_out(sequences_from_lists(histories()))
    model = build_model({"name": "sasrec", "d_model": 32, "dropout": 0.1, "max_len": 20,
                         "repeat_bias": True}, split.seqs.n_items, 0)
    cfg = TrainConfig(epochs=epochs, batch_size=16, lr=1e-2, patience=epochs, device="cpu",
                      eval_every=epochs)
    unmasked = EvalConfig(ks=[1, 10], mask_seen=False)
    res = train(model, split, cfg, unmasked, progress=False)
    assert sign * model.seen_bias() > 0.5
    assert res.history[-1]["repeat_score"] == model.seen_bias()
    out = evaluate(model, split, "test", unmasked)
    assert "learned repeat score" in out.protocol["mask_rule"]
    if sign < 0:
        masked = evaluate(model, split, "test", EvalConfig(ks=[1, 10])).metrics["NDCG@10"]
        assert out.metrics["NDCG@10"] >= 0.97 * masked
    else:
        assert out.metrics["HR@1"] >= 0.9


def test_served_and_recommended_lists_add_the_repeat_score(ml100k_slice, tmp_path):
    """The Recommender, the service's exact index and its ANN index (mixed batches of requests
    that mask and keep seen items) all rank as the brute-force scores with the repeat score."""
    art = tiny_artifact(ml100k_slice, "sasrec", "model.d_model=16", "model.repeat_bias=true")
    rec = Recommender.load(art)
    assert rec.model.seen_bias() is not None  # saved and loaded with the weights
    with torch.no_grad():
        rec.model.repeat_logit.fill_(2.5)  # large enough to lift seen items into the top ten
    exact = Engine(rec, EngineOptions(index="exact"))
    ann = Engine(rec, EngineOptions(index="ann", nprobe=10_000))  # every list: exact candidates
    users = rec.users.ids[:12]
    for user in users:
        hist = rec.user_history(user)
        idx, _ = rec.items.lookup(hist)
        with torch.no_grad():
            h, _ = history_batch(idx, np.array([0]), np.array([len(idx)]), rec.model.max_len, "cpu", False)
            s = (rec.model.query(h) @ rec.W.T)[0] + (0 if rec.b is None else rec.b)
        s[torch.from_numpy(np.unique(idx))] += 2.5
        s[0] = float("-inf")
        want = [int(j) for j in torch.sort(s, descending=True, stable=True).indices[:10]]
        got = rec.recommend(hist, k=10, exclude_seen=False)
        assert got.items == rec.items.external(np.array(want))
        assert set(want) & set(idx.tolist())  # seen items do come back
        masked = rec.recommend(hist, k=10)
        assert not set(rec.items.lookup(masked.items)[0].tolist()) & set(idx.tolist())
    queries = [Query(live_items=[], k=10, user=u, exclude_seen=bool(n % 2)) for n, u in enumerate(users)]
    for engine in (exact, ann):
        out = engine.recommend(queries)
        for qy, r in zip(queries, out):
            want = rec.recommend_user(qy.user, k=10, exclude_seen=qy.exclude_seen)
            assert r.items == want.items
            assert np.allclose(r.scores, want.scores, atol=1e-5)


def test_repeat_bias_is_refused_where_it_has_no_meaning():
    split = leave_one_out(sequences_from_lists(cyclic_histories()))
    n = split.seqs.n_items
    with pytest.raises(ValueError, match="repeat_bias is learned by the full softmax"):
        make_loss("sampled", n_items=n, repeat_bias=True)
    with pytest.raises(ValueError, match="mask_history"):
        make_loss("softmax", n_items=n, repeat_bias=True, mask_history=True)
    model = build_model({"name": "sasrec", "d_model": 16, "repeat_bias": True}, n, 0)
    with pytest.raises(ValueError, match="repeat_bias is learned by the full softmax"):
        train(model, split, TrainConfig(epochs=1, loss="bce", device="cpu"), EvalConfig(),
              progress=False)
    with pytest.raises(ValueError, match="repeat_bias is for causal models"):
        build_model({"name": "bert4rec", "d_model": 16, "repeat_bias": True}, n, 0)
    with pytest.raises(ValueError, match="fitted by counting"):
        build_model({"name": "pop", "repeat_bias": True}, n, 0)
    from seqrec.tasks import rebuild_task

    with pytest.raises(ValueError, match="the binary task ranks nothing"):
        rebuild_task(model, {"name": "binary", "threshold": 4.0}, n_items=n)
    with pytest.raises(ValueError, match="disagree"):
        model.loss(torch.ones(1, 3, dtype=torch.long), torch.ones(1, 3, dtype=torch.long))


@pytest.mark.parametrize("spec", [{"name": "hstu", "d_model": 16},
                                  {"name": "gru4rec", "embed_dim": 16, "hidden_dim": 16},
                                  {"name": "lstm", "embed_dim": 16, "hidden_dim": 16}])
def test_every_causal_model_learns_a_repeat_score(spec):
    """The option lives in the base model: HSTU and the recurrent models learn it too, and what
    they save and load holds it."""
    split = leave_one_out(sequences_from_lists(_no_repeats()))
    model = build_model({**spec, "max_len": 20, "repeat_bias": True}, split.seqs.n_items, 0)
    train(model, split, TrainConfig(epochs=2, batch_size=16, lr=1e-2, device="cpu"),
          EvalConfig(ks=[10], mask_seen=False), progress=False)
    assert model.seen_bias() < -0.1
    again = build_model({**spec, "max_len": 20, "repeat_bias": True}, split.seqs.n_items, 1)
    again.load_state_dict(model.state_dict())
    assert again.seen_bias() == model.seen_bias()
