"""What is particular to BERT4Rec, HSTU and the SASRec options."""

import torch

from seqrec.config import EvalConfig, TrainConfig
from seqrec.data.preprocess import sequences_from_lists
from seqrec.data.split import leave_one_out
from seqrec.evaluate.protocol import evaluate
from seqrec.models import build_model
from seqrec.train.loop import train

from conftest import cyclic_histories


def test_bert4rec_masks_and_appends_a_mask_token():
    m = build_model({"name": "bert4rec", "max_len": 6}, 10, 0).eval()
    assert m.items.id_emb.weight.shape[0] == 11 and m.mask_emb.shape == (m.config.d_model,)
    W, b = m.item_table()
    assert W.shape[0] == 11 and b.shape == (11,)  # [MASK] is never a candidate
    seq = torch.tensor([[1, 2, 3, 4, 5, 6, 7]])
    # the history read is max_len - 1 items: the oldest beyond that does not matter
    torch.testing.assert_close(m.query(seq), m.query(torch.tensor([[9, 3, 4, 5, 6, 7]])[:, 1:]))


def test_bert4rec_is_bidirectional_in_training():
    m = build_model({"name": "bert4rec", "dropout": 0.0}, 10, 0).eval()
    a = m.encode(torch.tensor([[1, 2, -1, 4]]))  # -1: [MASK]
    b = m.encode(torch.tensor([[1, 2, -1, 5]]))
    assert not torch.allclose(a[0, 2], b[0, 2])  # the masked position reads the item after it


def test_sasrec_is_causal_and_post_norm_works():
    for norm in ("pre", "post"):
        m = build_model({"name": "sasrec", "norm": norm, "dropout": 0.0, "n_heads": 2, "n_blocks": 3},
                        10, 0).eval()
        a = m.encode(torch.tensor([[1, 2, 3, 4]]))
        b = m.encode(torch.tensor([[1, 2, 3, 9]]))
        torch.testing.assert_close(a[0, :3], b[0, :3])  # earlier states never see later items


def test_hstu_reads_time_gaps():
    m = build_model({"name": "hstu", "dropout": 0.0}, 10, 0).eval()
    with torch.no_grad():
        for blk in m.blocks:
            blk.rel_time.weight.normal_()
    seq = torch.tensor([[1, 2, 3, 4]])
    t1 = torch.tensor([[0, 10, 20, 30]])
    t2 = torch.tensor([[0, 10, 20, 100000]])
    q0, q1, q2 = m.query(seq), m.query(seq, t1), m.query(seq, t2)
    assert not torch.allclose(q1, q2) and not torch.allclose(q0, q1)
    # causal: a later event's time never changes an earlier state
    torch.testing.assert_close(m.encode(seq, t1)[0, :3], m.encode(seq, t2)[0, :3])


def test_hstu_trains_with_timestamps():
    hists = cyclic_histories(n_users=200)
    times = [[1000 * u + 60 * j for j in range(len(h))] for u, h in enumerate(hists)]
    split = leave_one_out(sequences_from_lists(hists, times=times))
    model = build_model({"name": "hstu", "d_model": 32, "dropout": 0.1, "max_len": 20}, split.seqs.n_items, 0)
    cfg = TrainConfig(epochs=40, batch_size=64, lr=1e-2, patience=40, device="cpu", eval_every=10)
    train(model, split, cfg, EvalConfig(ks=[1]), progress=False)
    assert evaluate(model, split, "test", EvalConfig(ks=[1])).metrics["HR@1"] >= 0.95


def test_sasrec_cosine_scores_are_bounded_by_the_temperature():
    m = build_model({"name": "sasrec", "temperature": 0.1, "dropout": 0.0}, 20, 0).eval()
    s = m.scores(torch.tensor([[1, 2, 3]]))[0, 1:]
    assert s.abs().max() <= 10.0 + 1e-4
