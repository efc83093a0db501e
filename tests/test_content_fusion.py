"""ItemEncoder: every fusion mode's shapes, padding, gradients and table() == forward(arange);
content-only transfer to a catalog it never saw; the cold-item fallback of the fused modes;
state_dict round trips (also into a catalog of another size); and a known-answer test: a
content-only encoder learns which attribute makes an item a target and ranks unseen items by it."""

from __future__ import annotations

import dataclasses

import numpy as np
import polars as pl
import pytest
import torch
from safetensors.torch import load_file, save_file

from seqrec.config import from_dict
from seqrec.content.features import ContentConfig, ItemFeatures, build_item_features
from seqrec.content.fusion import FUSION_MODES, FusionConfig, ItemEncoder
from seqrec.content.vectors import ItemVectors
from seqrec.data.log import ItemCatalog
from seqrec.errors import ConfigError

D = 16
N_OLD, N_NEW = 40, 20
CONTENT_MODES = [m for m in FUSION_MODES if m != "id"]
FUSED_MODES = ["sigmoid", "gated", "sum"]


def synthetic_features(n: int = N_OLD + N_NEW, seed: int = 0) -> ItemFeatures:
    """``n`` items with every kind of block: text (random unit vectors, a few missing), user
    vectors (a few missing), a multi-valued and a single-valued attribute, a numeric one."""
    rng = np.random.default_rng(seed)
    ids = list(range(100, 100 + n))
    tags = [[f"t{j}" for j in rng.choice(6, size=int(rng.integers(0, 4)), replace=False)]
            for _ in range(n)]
    brand = ["good" if i % 2 else "bad" for i in range(n)]
    price = [None if i % 7 == 0 else float(rng.uniform(1, 50)) for i in range(n)]
    catalog = ItemCatalog(pl.DataFrame({"item_id": ids, "tags": tags, "brand": brand,
                                        "price": price}))
    has_vec = [i for i in range(n) if i % 5]
    vectors = ItemVectors(ids=[ids[i] for i in has_vec],
                          vectors=rng.normal(size=(len(has_vec), 5)).astype(np.float32), path="mem")
    feats = build_item_features(ids, catalog, ContentConfig(text=False), vectors=vectors)
    text = rng.normal(size=(n, 8)).astype(np.float32)
    text /= np.linalg.norm(text, axis=1, keepdims=True)
    text[::9] = 0.0  # items without text
    feats.text = np.concatenate([np.zeros((1, 8), np.float32), text])
    feats.text_missing = (np.abs(feats.text).sum(1) == 0).astype(np.float32)
    feats.text_missing[0] = 0.0
    return feats


def head(feats: ItemFeatures, n: int) -> ItemFeatures:
    """The first ``n`` items of ``feats`` (same vocabularies): a smaller catalog."""
    arrays = {k: v[: n + 1] for k, v in feats.arrays().items()}
    return ItemFeatures.from_arrays(arrays, {**feats.metadata(), "item_ids": feats.item_ids[:n]})


@pytest.fixture(scope="module")
def big() -> ItemFeatures:
    return synthetic_features()


@pytest.fixture(scope="module")
def small(big) -> ItemFeatures:
    return head(big, N_OLD)


def make(mode: str, feats: ItemFeatures, **kw) -> ItemEncoder:
    torch.manual_seed(0)
    return ItemEncoder(N_OLD, D, FusionConfig(mode=mode, **kw), None if mode == "id" else feats)


@pytest.mark.parametrize("mode", FUSION_MODES)
def test_shapes_padding_and_table_equals_forward(mode, small):
    enc = make(mode, small).eval()
    T = enc.table()
    assert T.shape == (N_OLD + 1, D) and enc.n_rows == N_OLD + 1
    assert not T[0].any()
    idx = torch.tensor([[0, 0, 3, 7, 1], [5, 40, 2, 0, 9]])
    out = enc(idx)  # [2, 5, D]
    assert out.shape == (2, 5, D)
    assert not out[idx == 0].any()
    torch.testing.assert_close(out, T[idx], rtol=0, atol=1e-6)
    torch.testing.assert_close(enc(torch.arange(N_OLD + 1)), T, rtol=0, atol=1e-6)


@pytest.mark.parametrize("mode", FUSION_MODES)
def test_gradients_reach_every_parameter(mode, small):
    enc = make(mode, small).train()
    q = torch.randn(D)
    idx = torch.tensor([[0, 3, 7, 1], [5, 40, 2, 9]])
    loss = enc(idx).pow(2).sum() + torch.logsumexp(enc.table()[1:] @ q, 0)
    loss.backward()
    for name, p in enc.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name
    if enc.uses_id:
        assert not enc.id_emb.weight.grad[0].any()  # padding row never moves
    for emb in getattr(enc, "attr_emb", []):
        assert not emb.weight.grad[0].any()


def test_content_mode_transfers_to_a_bigger_catalog(small, big):
    enc = make("content", small).eval()
    before = enc.table().detach()
    enc.set_features(big)
    after = enc.table().detach()
    assert after.shape == (N_OLD + N_NEW + 1, D)
    # equal up to float rounding: a matrix product over more rows may block its sums differently
    torch.testing.assert_close(after[: N_OLD + 1], before, rtol=0, atol=1e-6)
    # a new item's vector depends on its content only: same as embedding its blocks directly
    rows = torch.arange(N_OLD + 1, N_OLD + N_NEW + 1)
    direct = enc.encode_content(enc.gather(rows))
    torch.testing.assert_close(after[rows], direct, rtol=0, atol=1e-6)
    # ... and on nothing else: the catalog in another order gives the same vectors, permuted
    perm = np.r_[0, 1 + np.random.default_rng(1).permutation(N_OLD + N_NEW)]
    shuffled = ItemFeatures.from_arrays({k: v[perm] for k, v in big.arrays().items()},
                                        {**big.metadata(),
                                         "item_ids": [big.item_ids[i - 1] for i in perm[1:]]})
    enc.set_features(shuffled)
    torch.testing.assert_close(enc.table().detach(), after[torch.as_tensor(perm)], rtol=0,
                               atol=1e-6)


@pytest.mark.parametrize("mode", FUSED_MODES)
def test_fused_modes_give_new_items_a_zero_id_part(mode, small, big):
    enc = make(mode, small).eval()
    before = enc.table().detach()
    enc.set_features(big)
    after = enc.table().detach()
    # equal up to float rounding: a matrix product over more rows may block its sums differently
    torch.testing.assert_close(after[: N_OLD + 1], before, rtol=0, atol=1e-6)
    rows = torch.arange(N_OLD + 1, N_OLD + N_NEW + 1)
    torch.testing.assert_close(after[rows], enc.encode_content(enc.gather(rows)), rtol=0,
                               atol=1e-6)
    # old items with their id part removed are different: the id embedding matters
    assert not torch.allclose(before[1:], enc.encode_content(enc.gather(torch.arange(1, N_OLD + 1))))


@pytest.mark.parametrize("mode", FUSION_MODES)
def test_forgotten_ids_encode_like_items_without_one(mode, small):
    """The cold-item protocol's held-out items: in fused modes their vector is content only,
    exactly as for an item beyond the catalog; id and content modes are unchanged."""
    enc = make(mode, small).eval()
    before = enc.table().detach()
    enc.forget_ids([2, 4])
    after = enc.table().detach()
    rows = torch.tensor([2, 4])
    if enc.uses_id and enc.uses_content:
        torch.testing.assert_close(after[rows], enc.encode_content(enc.gather(rows)), rtol=0,
                                   atol=1e-6)
    else:
        torch.testing.assert_close(after[rows], before[rows], rtol=0, atol=0)
    others = torch.tensor([i for i in range(len(before)) if i not in (2, 4)])
    torch.testing.assert_close(after[others], before[others], rtol=0, atol=0)


@pytest.mark.parametrize("mode", FUSION_MODES)
def test_state_dict_round_trip_through_safetensors(mode, small, big, tmp_path):
    enc = make(mode, small).eval()
    save_file({k: v.contiguous() for k, v in enc.state_dict().items()}, str(tmp_path / "w.st"))
    # rebuilt from the schema only: the buffers come from the weights file
    schema = None if mode == "id" else small.schema()
    torch.manual_seed(123)
    again = ItemEncoder(N_OLD, D, FusionConfig(mode=mode), schema).eval()
    again.load_state_dict(load_file(str(tmp_path / "w.st")))
    torch.testing.assert_close(again.table(), enc.table(), rtol=0, atol=0)
    if mode == "id":
        return
    # a state saved with a bigger catalog loads into an encoder built for the small one
    enc.set_features(big)
    bigger = make(mode, small).eval()
    bigger.load_state_dict(enc.state_dict())
    assert bigger.n_rows == N_OLD + N_NEW + 1
    torch.testing.assert_close(bigger.table(), enc.table(), rtol=0, atol=0)


def test_text_only_query_through_the_content_path(small):
    enc = make("gated", small).eval()
    q = torch.nn.functional.normalize(torch.randn(3, 8), dim=-1)
    out = enc.encode_content({"text": q})  # [3, D]: other blocks count as missing
    assert out.shape == (3, D) and torch.isfinite(out).all()
    row = enc.gather(torch.tensor([5]))  # every block of item 5
    text_only = enc.encode_content({"text": row["text"]})
    assert not torch.allclose(text_only, enc.encode_content(row))  # the other blocks count


def test_id_dropout_zeroes_the_id_part_of_some_occurrences(small):
    enc = make("sum", small, dropout=0.0, id_dropout=0.5)
    idx = torch.randint(1, N_OLD + 1, (400,))
    with torch.no_grad():
        content_only = enc.encode_content(enc.gather(idx))
        enc.train()
        out = enc(idx)
    dropped = (out - content_only).abs().amax(-1) < 1e-6
    assert 0.35 < dropped.float().mean() < 0.65
    enc.eval()
    with torch.no_grad():
        assert not ((enc(idx) - content_only).abs().amax(-1) < 1e-6).any()


def test_bad_configs(small, big):
    with pytest.raises(ConfigError, match="unknown fusion mode 'mean'; choose one of id, content"):
        FusionConfig(mode="mean")
    with pytest.raises(ConfigError, match="did you mean 'hidden'"):
        from_dict(FusionConfig, {"mode": "gated", "hiden": 64})
    assert from_dict(FusionConfig, {"mode": "sum", "id_dropout": 0.2}).id_dropout == 0.2
    with pytest.raises(ConfigError, match="needs item content"):
        ItemEncoder(N_OLD, D, FusionConfig(mode="content"))
    with pytest.raises(ConfigError, match="fewer than"):
        ItemEncoder(N_OLD + N_NEW + 5, D, FusionConfig(mode="sum"), big)
    enc = make("gated", small)
    other = dataclasses.replace(small, text=None, text_missing=None)
    with pytest.raises(ConfigError, match="do not match the encoder"):
        enc.set_features(other)


def test_content_only_model_learns_an_attribute_and_ranks_unseen_items(small, big):
    """Known answer: the targets are the 'good'-brand items. Trained on the first 40 items only,
    the content-only encoder must rank the 20 unseen items good-first."""
    torch.manual_seed(0)
    enc = ItemEncoder(N_OLD, D, FusionConfig(mode="content", hidden=32, dropout=0.0), small)
    q = torch.nn.Parameter(torch.randn(D) * 0.1)
    opt = torch.optim.Adam([*enc.parameters(), q], lr=0.02)
    brand = small.categorical["brand"][:, 0]
    good_ids = small.attributes.categorical[1].values.index("good") + 2
    targets = torch.as_tensor(np.flatnonzero(brand == good_ids))
    for _ in range(150):
        opt.zero_grad()
        scores = enc.table()[1:] @ q  # [N]
        loss = torch.nn.functional.cross_entropy(scores.expand(len(targets), -1), targets - 1)
        loss.backward()
        opt.step()
    enc.eval()
    enc.set_features(big)
    with torch.no_grad():
        scores = (enc.table() @ q)[N_OLD + 1 :]  # the unseen items
    new_brand = big.categorical["brand"][N_OLD + 1 :, 0]
    good, bad = scores[new_brand == good_ids], scores[new_brand != good_ids]
    assert len(good) and len(bad)
    auc = (good[:, None] > bad[None, :]).float().mean()
    assert auc == 1.0, auc


def test_real_ml100k_attributes(data_dir):
    from seqrec.data.movielens import read_ml100k_items

    cat = read_ml100k_items(data_dir / "ml-100k")
    feats = build_item_features(cat.df["item_id"].to_list(), cat, ContentConfig(text=False))
    for mode in FUSED_MODES:
        enc = ItemEncoder(feats.n_items, D, FusionConfig(mode=mode), feats).eval()
        T = enc.table()
        assert T.shape == (1683, D) and torch.isfinite(T).all() and not T[0].any()
