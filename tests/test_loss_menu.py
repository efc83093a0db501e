"""The loss menu: sampled softmax (logQ), BCE and gBCE on hand cases, and each one trains."""

import math

import pytest
import torch
import torch.nn.functional as F

from seqrec.config import EvalConfig, TrainConfig
from seqrec.data.preprocess import sequences_from_lists
from seqrec.data.split import leave_one_out
from seqrec.evaluate.protocol import evaluate
from seqrec.losses import NegativeSampler, bce, gbce_beta, make_loss, sampled_softmax
from seqrec.models import build_model
from seqrec.train.loop import train

from conftest import cyclic_histories


class FixedSampler(NegativeSampler):
    def __init__(self, neg, log_q):
        self.kind, self.n_items = "fixed", len(log_q) - 1
        self.neg, self.log_q, self.calls = torch.tensor(neg), torch.tensor(log_q), 0

    def sample(self, targets, n):
        self.calls += 1
        return self.neg[:n], self.log_q[self.neg[:n]]


def setup():
    h = torch.tensor([[1.0, 0.0], [0.0, 2.0]])
    W = torch.tensor([[0.0, 0.0], [1.0, 1.0], [2.0, 0.0], [0.0, -1.0], [0.5, 0.5]])
    t = torch.tensor([1, 2])
    return h, W, t


def test_gbce_beta():
    assert gbce_beta(10, 101, 0.0) == pytest.approx(1.0)
    assert gbce_beta(10, 101, 1.0) == pytest.approx(0.1)
    assert 0.1 < gbce_beta(10, 101, 0.75) < 1.0


def test_sampled_softmax_hand_case_with_logq_and_accidental_hits():
    h, W, t = setup()
    log_q = [float("-inf"), math.log(0.1), math.log(0.2), math.log(0.3), math.log(0.4)]
    s = FixedSampler([2, 3], log_q)
    loss = sampled_softmax(h, W, None, t, s, 2, logq=True)
    # row 0: target 1 (logit 1), negatives 2 (2), 3 (0); row 1: target 2 (0); negative 2 is a hit
    r0 = torch.tensor([1 - math.log(0.1), 2 - math.log(0.2), 0 - math.log(0.3)])
    r1 = torch.tensor([0 - math.log(0.2), float("-inf"), -2 - math.log(0.3)])
    expected = (F.cross_entropy(r0[None], torch.tensor([0])) + F.cross_entropy(r1[None], torch.tensor([0]))) / 2
    assert loss.item() == pytest.approx(expected.item(), rel=1e-6)
    assert s.calls == 1  # one draw shared by every position of the batch
    no_q = sampled_softmax(h, W, None, t, s, 2, logq=False)
    assert no_q.item() != pytest.approx(loss.item())


def test_bce_and_gbce_hand_case():
    h, W, t = setup()
    s = FixedSampler([3, 4], [0.0] * 5)
    got = bce(h, W, None, t, s, 2, beta=1.0)
    sp = F.softplus
    row0 = sp(torch.tensor(-1.0)) + sp(torch.tensor(0.0)) + sp(torch.tensor(0.5))
    row1 = sp(torch.tensor(-0.0)) + sp(torch.tensor(-2.0)) + sp(torch.tensor(1.0))
    assert got.item() == pytest.approx(((row0 + row1) / 2).item(), rel=1e-6)
    beta = 0.3
    got_g = bce(h, W, None, t, s, 2, beta=beta)
    row0g = beta * sp(torch.tensor(-1.0)) + sp(torch.tensor(0.0)) + sp(torch.tensor(0.5))
    row1g = beta * sp(torch.tensor(-0.0)) + sp(torch.tensor(-2.0)) + sp(torch.tensor(1.0))
    assert got_g.item() == pytest.approx(((row0g + row1g) / 2).item(), rel=1e-6)


def test_in_batch_sampler_draws_from_targets_in_proportion_to_popularity():
    counts = torch.tensor([0, 90, 10, 0])
    s = NegativeSampler("in-batch", 3, counts)
    targets = torch.tensor([1] * 9 + [2])
    torch.manual_seed(0)
    neg, lq = s.sample(targets, 5000)
    assert set(neg.tolist()) <= {1, 2}
    assert (neg == 1).float().mean().item() == pytest.approx(0.9, abs=0.03)
    assert lq[neg == 1][0].item() == pytest.approx(math.log(0.9), rel=1e-5)


def test_unknown_loss_and_sampler():
    with pytest.raises(ValueError, match="unknown loss"):
        make_loss("hinge", n_items=10)
    with pytest.raises(ValueError, match="unknown sampler"):
        make_loss("sampled", n_items=10, sampler="zipf")


@pytest.mark.parametrize("loss,sampler", [("sampled", "uniform"), ("sampled", "in-batch"),
                                          ("bce", "uniform"), ("gbce", "uniform")])
def test_every_loss_learns_the_cycle(loss, sampler):
    split = leave_one_out(sequences_from_lists(cyclic_histories()))
    model = build_model({"name": "sasrec", "d_model": 32, "dropout": 0.1, "max_len": 20},
                        split.seqs.n_items, 0)
    cfg = TrainConfig(epochs=40, batch_size=64, lr=1e-2, patience=40, loss=loss, sampler=sampler,
                      negatives=4, device="cpu", eval_every=10)
    train(model, split, cfg, EvalConfig(ks=[1]), progress=False)
    assert evaluate(model, split, "test", EvalConfig(ks=[1])).metrics["HR@1"] >= 0.9


@pytest.mark.parametrize("spec", [{"name": "sasrec", "d_model": 32, "dropout": 0.1},
                                  {"name": "gru4rec", "embed_dim": 32, "hidden_dim": 32}])
def test_history_masked_softmax_learns_the_cycle(spec):
    """``train.mask_history`` trains causal models (here no target was seen before, so the
    masked candidates are exactly those the masked evaluation leaves)."""
    split = leave_one_out(sequences_from_lists(cyclic_histories()))
    model = build_model({**spec, "max_len": 20}, split.seqs.n_items, 0)
    cfg = TrainConfig(epochs=40, batch_size=64, lr=1e-2, patience=40, mask_history=True,
                      device="cpu", eval_every=10)
    train(model, split, cfg, EvalConfig(ks=[1]), progress=False)
    assert evaluate(model, split, "test", EvalConfig(ks=[1])).metrics["HR@1"] >= 0.9


def test_history_mask_is_refused_where_it_has_no_meaning():
    from seqrec.errors import ConfigError

    with pytest.raises(ConfigError, match="mask_history needs loss = 'softmax'"):
        TrainConfig(mask_history=True, loss="sampled")
    with pytest.raises(ConfigError, match="without label_smoothing"):
        TrainConfig(mask_history=True, label_smoothing=0.1)
    split = leave_one_out(sequences_from_lists(cyclic_histories()))
    model = build_model({"name": "bert4rec", "d_model": 16, "max_len": 20}, split.seqs.n_items, 0)
    with pytest.raises(ValueError, match="mask_history is for causal models"):
        train(model, split, TrainConfig(epochs=1, mask_history=True, device="cpu"), EvalConfig(),
              progress=False)
