"""What is particular to BERT4Rec, HSTU and the SASRec options."""

import pytest
import torch

from seqrec.config import EvalConfig, TrainConfig
from seqrec.data.preprocess import sequences_from_lists
from seqrec.data.split import leave_one_out
from seqrec.evaluate.protocol import evaluate
from seqrec.models import build_model
from seqrec.nn import Dropout, dropout_attention, gather_rows
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


def test_sasrec_ff_dropout_sets_only_the_inner_feed_forward_rate():
    def inner_rates(model):  # the dropout inside each block's feed-forward layer
        return [mod.p for blk in model.blocks for mod in blk.ff.modules() if isinstance(mod, Dropout)]

    m = build_model({"name": "sasrec", "dropout": 0.5, "ff_dropout": 0.0}, 10, 0)
    assert inner_rates(m) == [0.0, 0.0]
    assert all(blk.drop.p == 0.5 and blk.attn_p == 0.5 for blk in m.blocks)
    default = build_model({"name": "sasrec", "dropout": 0.5}, 10, 0)  # None: the same as dropout
    assert inner_rates(default) == [0.5, 0.5]


def test_dropout_attention_is_sdpa_with_dropout_on_the_weights():
    """The CPU training path of SASRec's attention: without dropout it is SDPA to rounding; with
    dropout each weight is kept with probability 1 - p and scaled by 1 / (1 - p), so the
    expectation is SDPA's output, padding keys are never read, and training stays causal."""
    torch.manual_seed(0)
    q, k, v = (torch.randn(3, 2, 6, 8) for _ in range(3))
    real = torch.tensor([[1] * 6, [0, 0, 1, 1, 1, 1], [0] * 5 + [1]]).bool()
    causal, eye = torch.ones(6, 6, dtype=torch.bool).tril(), torch.eye(6, dtype=torch.bool)
    allowed = ((causal & real[:, None, :]) | eye)[:, None]
    exact = torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=allowed)
    torch.testing.assert_close(dropout_attention(q, k, v, allowed, 0.0), exact)
    draws = torch.stack([dropout_attention(q, k, v, allowed, 0.5) for _ in range(3000)])
    stderr = draws.std(0) / 3000**0.5 + 1e-6  # each entry's standard error of the mean
    assert ((draws.mean(0) - exact).abs() / stderr).max() < 5  # 288 entries: about 3.5 expected
    v2 = v.clone()
    v2[1, :, :2] = 100.0  # the padding keys' values: never read
    torch.manual_seed(1)
    a = dropout_attention(q, k, v, allowed, 0.5)
    torch.manual_seed(1)
    torch.testing.assert_close(dropout_attention(q, k, v2, allowed, 0.5)[1, :, 2:], a[1, :, 2:])

    m = build_model({"name": "sasrec", "dropout": 0.5, "n_heads": 2}, 10, 0).train()
    x, y = torch.tensor([[1, 2, 3, 4]]), torch.tensor([[1, 2, 3, 9]])
    torch.manual_seed(2)
    a = m.encode(x)
    torch.manual_seed(2)
    torch.testing.assert_close(m.encode(y)[0, :3], a[0, :3])  # causal with dropout drawn


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


def test_hstu_time_bias_gradient_matches_an_embedding_lookup():
    """The time-gap bias's bincount backward gives the gradient ``nn.Embedding`` would."""
    from seqrec.models.hstu import bucket_bias

    g = torch.Generator().manual_seed(0)
    idx = torch.randint(0, 6, (3, 5, 6), generator=g)  # bucket 6 unused
    table = torch.randn(7, 2, generator=g)
    up = torch.randn(3, 2, 5, 6, generator=g)  # [B, H, Lq, L]
    w1, w2 = table.clone().requires_grad_(), table.clone().requires_grad_()
    out = bucket_bias(w1, idx)
    ref = torch.nn.functional.embedding(idx, w2).permute(0, 3, 1, 2)
    torch.testing.assert_close(out, ref)
    (out * up).sum().backward()
    (ref * up).sum().backward()
    torch.testing.assert_close(w1.grad, w2.grad)
    assert w1.grad[6].abs().sum() == 0


def cycle_hit_rate(spec: dict, split) -> float:
    """Test HR@1 of a small model built from ``spec`` after 40 epochs on the cycle toy ``split``."""
    model = build_model({"d_model": 32, "dropout": 0.1, "max_len": 20, **spec}, split.seqs.n_items, 0)
    cfg = TrainConfig(epochs=40, batch_size=64, lr=1e-2, patience=40, device="cpu", eval_every=10)
    train(model, split, cfg, EvalConfig(ks=[1]), progress=False)
    return evaluate(model, split, "test", EvalConfig(ks=[1])).metrics["HR@1"]


def test_hstu_trains_with_timestamps():
    hists = cyclic_histories(n_users=200)
    times = [[1000 * u + 60 * j for j in range(len(h))] for u, h in enumerate(hists)]
    split = leave_one_out(sequences_from_lists(hists, times=times))
    assert cycle_hit_rate({"name": "hstu"}, split) >= 0.95


def test_hstu_feed_forward_is_optional_and_learns():
    """``ffn`` adds a SwiGLU feed-forward layer (own layer norm, residual) to every block; 0, the
    default, is HSTU as published, with no extra parameters."""
    plain = build_model({"name": "hstu", "d_model": 32}, 10, 0)
    with_ff = build_model({"name": "hstu", "d_model": 32, "ffn": 48}, 10, 0)
    extra = sum(p.numel() for p in with_ff.parameters()) - sum(p.numel() for p in plain.parameters())
    per_block = 2 * 32 + (32 * 96 + 96) + (48 * 32 + 32)  # layer norm, value+gate in, out
    assert extra == per_block * plain.config.n_blocks
    assert not any("ff" in name for name, _ in plain.named_parameters())
    split = leave_one_out(sequences_from_lists(cyclic_histories(n_users=200)))
    assert cycle_hit_rate({"name": "hstu", "ffn": 64}, split) >= 0.95


@pytest.mark.parametrize("name", ["sasrec", "hstu"])
def test_cosine_scores_are_bounded_by_the_temperature(name):
    m = build_model({"name": name, "temperature": 0.1, "dropout": 0.0}, 20, 0).eval()
    s = m.scores(torch.tensor([[1, 2, 3]]))[0, 1:]
    assert s.abs().max() <= 10.0 + 1e-4
    assert s.abs().max() > 1.0  # cosines over 0.1, not raw dot products of unit-scale vectors
    W, _ = m.item_table()
    torch.testing.assert_close(W[1:].norm(dim=-1), torch.ones(len(W) - 1))  # row 0: padding


@pytest.mark.parametrize("name", ["sasrec", "hstu"])
def test_cosine_scoring_starts_item_rows_small_unless_the_config_says(name):
    """Only a row's direction is scored, so rows start at std 0.02 (short rows turn faster under
    Adam); dot-product models keep the d^-0.5 default, and ``fusion.init_std`` wins over both."""
    def row_std(**model):
        m = build_model({"name": name, "d_model": 64, **model}, 2000, 0)
        return m.items.id_emb.weight[1:].std().item()

    assert abs(row_std(temperature=0.05) - 0.02) < 0.002
    assert abs(row_std() - 64**-0.5) < 0.01
    assert abs(row_std(temperature=0.05, fusion={"init_std": 0.1}) - 0.1) < 0.01


def test_sasrec_init_std_draws_linear_layers_and_positions_as_recbole():
    """``model.init_std`` (RecBole's 0.02): every linear weight of the blocks and the positions
    at that std, biases zero; unset, PyTorch's defaults (uniform, bound d^-0.5) and positions at
    d^-0.5; item rows stay with ``fusion.init_std``."""
    set_ = build_model({"name": "sasrec", "d_model": 64, "init_std": 0.02}, 2000, 0)
    default = build_model({"name": "sasrec", "d_model": 64}, 2000, 0)
    for m in (set_, default):
        linears = [x for x in m.blocks.modules() if isinstance(x, torch.nn.Linear)]
        assert len(linears) == 4 * 2  # qkv, proj and two feed-forward layers per block
        qkv = linears[0]
        if m is set_:
            assert abs(qkv.weight.std().item() - 0.02) < 0.002
            assert all(bool((x.bias == 0).all()) for x in linears)
            assert abs(m.pos_emb.weight.std().item() - 0.02) < 0.004
        else:
            assert abs(qkv.weight.std().item() - 64**-0.5 / 3**0.5) < 0.005  # uniform(-b, b)
            assert abs(m.pos_emb.weight.std().item() - 64**-0.5) < 0.02
        assert abs(m.items.id_emb.weight[1:].std().item() - 64**-0.5) < 0.01


def test_query_computes_only_the_last_position_and_matches_the_full_encoder():
    """Ranking reads one state per user: SASRec, BERT4Rec and HSTU skip the final block's other
    positions, with the same result as encoding every position and taking the last."""
    from seqrec.models.bert4rec import MASK

    seq = torch.tensor([[0, 0, 0, 4, 9, 2], [3, 1, 4, 1, 5, 9], [0, 0, 0, 0, 0, 7]])
    times = torch.tensor([[0, 0, 0, 10, 500, 90_000], [1, 2, 3, 4, 5, 6], [0, 0, 0, 0, 0, 3]]) * (seq > 0)
    for spec in ({"name": "sasrec", "n_heads": 2}, {"name": "sasrec", "norm": "post", "n_blocks": 3},
                 {"name": "sasrec", "temperature": 0.1}, {"name": "bert4rec", "n_heads": 2},
                 {"name": "hstu", "n_heads": 2}, {"name": "hstu", "temperature": 0.05},
                 {"name": "hstu", "ffn": 48}):
        m = build_model(spec, 10, 0).eval()
        for blk in m.blocks if spec["name"] == "hstu" else []:  # both biases start at zero
            torch.nn.init.normal_(blk.rel_pos.weight)
            torch.nn.init.normal_(blk.rel_time.weight)
        with torch.no_grad():
            if spec["name"] == "bert4rec":
                full = m.head(m.encode(torch.cat([seq, torch.full((3, 1), MASK)], 1))[:, -1])
            else:
                full = m.encode(seq)[:, -1]
            torch.testing.assert_close(m.query(seq), full, rtol=1e-5, atol=1e-5)
            if spec["name"] == "hstu":  # the time-gap bias, sliced to the last row too
                torch.testing.assert_close(m.query(seq, times), m.encode(seq, times)[:, -1],
                                           rtol=1e-5, atol=1e-5)
                assert not torch.allclose(m.query(seq, times), m.query(seq))
    m = build_model({"name": "sasrec"}, 10, 0).eval()
    calls = []
    m.blocks[-1].ff.register_forward_hook(lambda mod, inp, out: calls.append(out.shape))
    m.query(seq)
    assert calls == [torch.Size([3, 1, m.config.d_model])]  # the feed-forward saw one position


def test_dropout_keeps_the_expectation_and_the_rate():
    from seqrec.nn import Dropout, keep_mask

    torch.manual_seed(0)
    x = torch.ones(400, 1000)
    for p in (0.1, 0.3, 0.5):
        assert abs(1 - keep_mask(x, p).float().mean().item() - p) < 3e-3  # 400k draws: sd 1e-3
        d = Dropout(p).train()
        y = d(x)
        assert abs(y.mean().item() - 1.0) < 1e-2
        kept = torch.unique(y)
        assert kept[0] == 0.0 and len(kept) == 2 and abs(kept[1].item() - d.scale) < 1e-6
    d = Dropout(0.5).eval()
    assert d(x) is x
    assert Dropout(0.999999).scale == 65536  # p rounds to 1: one level in 65536 is kept
    m = keep_mask(torch.ones(1_000_001), 0.5)  # an odd count: the last 64-bit word is cut
    assert m.shape == (1_000_001,)
    cols = keep_mask(torch.ones(250_000, 4), 0.5).float()  # the four draws cut from one word
    assert (cols.mean(0) - 0.5).abs().max() < 5e-3
    assert (torch.corrcoef(cols.T) - torch.eye(4)).abs().max() < 1e-2


def test_gather_rows_is_indexing_with_a_backward_that_repeats_bit_for_bit():
    """``gather_rows`` reads what ``table[index]`` reads, and its gradient, summed over many
    repeated indices with two threads and arriving non-contiguous (the rows used transposed in a
    batched product, as the history mask's loss uses them), is the same on every run; advanced
    indexing's was not (its float sums varied from run to run)."""
    g = torch.Generator().manual_seed(0)
    old = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        table = torch.randn(500, 32, generator=g, requires_grad=True)
        index = torch.randint(0, 500, (64, 50), generator=g)
        states = torch.randn(64, 50, 32, generator=g)
        up = torch.randn(64, 50, 50, generator=g)

        def grad(rows):  # the rows used transposed, as in the history mask's [B, L, L] product
            (out,) = torch.autograd.grad((torch.bmm(states, rows.transpose(1, 2)) * up).sum(), table)
            return out

        assert torch.equal(gather_rows(table, index), table[index])
        grads = [grad(gather_rows(table, index)) for _ in range(10)]
        assert torch.allclose(grads[0], grad(table[index]), rtol=1e-5, atol=1e-4)
        assert all(torch.equal(grads[0], x) for x in grads[1:])
        bias = torch.randn(500, generator=g)
        assert torch.equal(gather_rows(bias, index), bias[index])  # 1-D tables too
    finally:
        torch.set_num_threads(old)
