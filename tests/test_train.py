"""The training loop: same seed -> same numbers; resume == uninterrupted; early stopping; selection."""

import dataclasses
import json

import numpy as np
import pytest
import torch

from seqrec.config import EvalConfig, TrainConfig
from seqrec.data.preprocess import sequences_from_lists
from seqrec.data.split import leave_one_out
from seqrec.models import build_model
from seqrec.train.loop import train

from conftest import cyclic_histories

SPEC = {"name": "sasrec", "d_model": 16, "max_len": 12, "dropout": 0.2}


def split():
    return leave_one_out(sequences_from_lists(cyclic_histories(n_users=120)))


def run(epochs, workdir=None, resume=False, seed=0, model=None, sp=None):
    sp = sp or split()
    model = model or build_model(SPEC, sp.seqs.n_items, seed)
    cfg = TrainConfig(epochs=epochs, batch_size=32, lr=5e-3, patience=100, seed=seed, device="cpu")
    res = train(model, sp, cfg, EvalConfig(ks=[10]), workdir=workdir, resume=resume, progress=False)
    return model, res


def losses(res):
    return [h["loss"] for h in res.history]


def test_same_seed_same_numbers():
    from seqrec.chunked_softmax import _POOL

    m1, r1 = run(3)
    assert _POOL.free == []  # the loss kernel's buffers are freed when training ends
    m2, r2 = run(3)
    assert losses(r1) == losses(r2)
    assert [h["valid"] for h in r1.history] == [h["valid"] for h in r2.history]
    for (k, a), (_, b) in zip(m1.state_dict().items(), m2.state_dict().items()):
        assert torch.equal(a, b), k
    _, r3 = run(3, seed=1)
    assert losses(r3) != losses(r1)


def test_resume_equals_uninterrupted(tmp_path):
    _, full = run(4)
    _, first = run(2, workdir=tmp_path)
    assert (tmp_path / "checkpoint.pt").exists()
    model, resumed = run(4, workdir=tmp_path, resume=True)
    assert losses(resumed) == losses(full)
    assert resumed.best_valid == full.best_valid


def test_checkpoint_loads_without_pickle(tmp_path):
    run(1, workdir=tmp_path)
    state = torch.load(tmp_path / "checkpoint.pt", weights_only=True)
    assert state["epoch"] == 1 and json.loads(state["history"])[0]["epoch"] == 1


def test_early_stopping_and_best_epoch_restored():
    sp = split()
    model = build_model(SPEC, sp.seqs.n_items, 0)
    # a learning rate of 0 never improves after the first evaluation
    cfg = TrainConfig(epochs=50, batch_size=32, lr=0.0, patience=2, device="cpu")
    res = train(model, sp, cfg, EvalConfig(ks=[10]), progress=False)
    assert len(res.history) == 3 and res.best_epoch == 1
    assert res.stop_reason.startswith("early stop")


def test_loss_only_at_real_positions():
    sp = split()
    model = build_model(SPEC, sp.seqs.n_items, 0)
    x = torch.tensor([[0, 0, 3, 4], [1, 2, 3, 4]])
    y = torch.tensor([[0, 0, 4, 5], [2, 3, 4, 5]])
    y_garbage = y.clone()
    model.eval()
    base = model.loss(x, y)
    x2 = x.clone()
    x2[0, :2] = 0
    assert torch.allclose(model.loss(x2, y_garbage), base)
    # the padded positions' targets are 0 and never scored: the loss averages 6 real positions
    assert int((y > 0).sum()) == 6


def test_count_models_fit_in_one_pass():
    sp = split()
    model = build_model({"name": "pop"}, sp.seqs.n_items, 0)
    res = train(model, sp, TrainConfig(device="cpu"), EvalConfig(ks=[10]), progress=False)
    assert len(res.history) == 1 and "NDCG@10" in res.best_valid
    counts = np.bincount(np.concatenate([sp.seqs.items[a:b] for a, b in zip(sp.train_start, sp.train_end)]),
                         minlength=sp.seqs.n_items + 1)
    assert model.counts[1:].tolist() == counts[1:].astype(float).tolist()


def test_no_training_pairs_is_an_error():
    sp = leave_one_out(sequences_from_lists([[1, 2, 3], [4, 5, 6]]))  # each user: 1 training event
    model = build_model(SPEC, sp.seqs.n_items, 0)
    with pytest.raises(ValueError, match="nothing to learn"):
        train(model, sp, TrainConfig(device="cpu"), progress=False)


def test_lr_schedule():
    from seqrec.train.loop import lr_factor

    cfg = TrainConfig(epochs=10, lr_schedule="cosine", warmup_epochs=1)
    assert lr_factor(cfg, 0, 10) == pytest.approx(0.1)
    assert lr_factor(cfg, 9, 10) == pytest.approx(1.0)
    assert lr_factor(cfg, 10 + 45, 10) == pytest.approx(0.5)
    assert lr_factor(cfg, 99, 10) < 0.01
    assert lr_factor(TrainConfig(), 1234, 10) == 1.0


def _count_batches(sp):
    counter, counted = build_model(SPEC, sp.seqs.n_items, 0), {"n": 0}
    real = counter.loss

    def count(*a, **kw):
        counted["n"] += 1
        return real(*a, **kw)

    counter.loss = count
    run(1, model=counter, sp=sp)
    return counted["n"]


def test_divergence_keeps_the_best_epoch():
    """A loss that turns NaN after epoch 2 stops training with advice; epoch 2's weights are kept."""
    sp = split()
    n_batches = _count_batches(sp)
    model = build_model(SPEC, sp.seqs.n_items, 0)
    real_loss, calls = model.loss, {"n": 0}

    def loss(*a, **kw):
        calls["n"] += 1
        out = real_loss(*a, **kw)
        return out * float("nan") if calls["n"] > 2 * n_batches else out

    model.loss = loss
    _, res = run(5, model=model, sp=sp)
    assert res.stop_reason.startswith("diverged") and "lower the learning rate" in res.stop_reason
    assert res.best_epoch == 2 and len(res.history) == 2
    assert all(torch.isfinite(p).all() for p in model.parameters())


def test_nan_gradient_with_finite_loss_is_skipped():
    sp = split()
    model = build_model(SPEC, sp.seqs.n_items, 0)
    real_loss, calls = model.loss, {"n": 0}

    def loss(*a, **kw):
        calls["n"] += 1
        out = real_loss(*a, **kw)
        if calls["n"] == 2:  # finite value, NaN gradient
            out.register_hook(lambda g: g * float("nan"))
        return out

    model.loss = loss
    _, res = run(1, model=model, sp=sp)
    assert res.history[0]["skipped_batches"] == 1
    assert all(torch.isfinite(p).all() for p in model.parameters())


def test_divergence_before_any_evaluation_raises():
    sp = split()
    model = build_model(SPEC, sp.seqs.n_items, 0)
    real_loss = model.loss
    model.loss = lambda *a, **kw: real_loss(*a, **kw) * float("nan")
    with pytest.raises(FloatingPointError, match="lower the learning rate"):
        run(2, model=model, sp=sp)


def test_refit_retrains_for_the_selected_epochs_and_tests_that_model(ml100k_slice, tmp_path):
    from seqrec.config import RunConfig
    from seqrec.pipeline import run

    cfg = RunConfig.from_dict({"data": {"name": str(ml100k_slice)},
                               "model": {"name": "sasrec", "d_model": 16, "max_len": 20},
                               "train": {"epochs": 3, "refit": True}})
    res = run(cfg, tmp_path / "art", progress=False)
    metrics = json.loads((tmp_path / "art" / "metrics.json").read_text())
    refit = metrics["refit"]
    assert refit["epochs"] == res.train.best_epoch >= 1
    assert [h["epoch"] for h in refit["history"]] == list(range(1, refit["epochs"] + 1))
    assert "refit" in metrics["protocol"] and metrics["valid"] == res.valid
    # the model tested (and saved) is the refit one, not the selected one
    plain = run(RunConfig.from_dict({**cfg.to_dict(), "train": {**cfg.to_dict()["train"],
                                                                  "refit": False}}),
                None, progress=False)
    assert plain.valid == res.valid and plain.test != res.test


def test_stopping_early_keeps_the_schedule_of_the_full_run():
    """A refit stops at the selected epoch but retraces the selection run's learning rates: with
    a cosine over 4 epochs, stopping after 2 gives the first two epochs of the 4-epoch run."""
    split = leave_one_out(sequences_from_lists(cyclic_histories()))
    cfg = TrainConfig(epochs=4, batch_size=64, lr=1e-2, lr_schedule="cosine", patience=10,
                      device="cpu", eval_every=4)

    def losses(**kw):
        model = build_model({"name": "sasrec", "d_model": 16, "max_len": 20}, split.seqs.n_items, 0)
        res = train(model, split, cfg, EvalConfig(ks=[1]), progress=False, **kw)
        return [h["loss"] for h in res.history]

    full, stopped = losses(), losses(stop_after=2)
    assert len(full) == 4 and stopped == full[:2]
    model = build_model({"name": "sasrec", "d_model": 16, "max_len": 20}, split.seqs.n_items, 0)
    two = train(model, split, dataclasses.replace(cfg, epochs=2), EvalConfig(ks=[1]),
                progress=False)
    assert two.history[1]["loss"] != full[1]  # a cosine over 2 epochs is another schedule


def test_item_table_decay_is_its_own_group():
    """``emb_weight_decay`` shrinks the item id table, and only it: with every gradient zero an
    AdamW step changes nothing but the decay, so each group's factor can be read exactly."""
    from seqrec.errors import ConfigError
    from seqrec.train.loop import _optimizer

    model = build_model(SPEC, 30, 0)
    cfg = TrainConfig(lr=0.1, weight_decay=0.5, emb_weight_decay=2.0)
    opt = _optimizer(model, cfg)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    for p in model.parameters():
        p.grad = torch.zeros_like(p)
    opt.step()
    after = dict(model.named_parameters())
    factor = {"items.id_emb.weight": 1 - 0.1 * 2.0, "blocks.0.qkv.weight": 1 - 0.1 * 0.5,
              "pos_emb.weight": 1.0, "blocks.0.ln1.weight": 1.0, "blocks.0.qkv.bias": 1.0}
    for name, f in factor.items():
        torch.testing.assert_close(after[name].detach(), before[name] * f)
    assert sum(len(g["params"]) for g in opt.param_groups) == len(before)  # each exactly once
    with pytest.raises(ConfigError, match="emb_weight_decay"):
        TrainConfig(emb_weight_decay=-1.0)


def test_item_table_decay_reaches_training():
    """The option travels from the config through the loop: trained with the item table
    decayed, its rows end shorter than without."""
    sp = split()
    cfg = TrainConfig(epochs=3, batch_size=32, lr=5e-3, patience=100, device="cpu")

    def norms(decay):
        model = build_model(SPEC, sp.seqs.n_items, 0)
        train(model, sp, dataclasses.replace(cfg, emb_weight_decay=decay), EvalConfig(ks=[10]),
              progress=False)
        return model.items.id_emb.weight.detach()[1:].norm(dim=1)

    plain, decayed = norms(0.0), norms(5.0)
    assert decayed.mean() < plain.mean()
