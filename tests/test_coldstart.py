"""Cold-start protocols: held-out items and users never reach training; metrics per segment."""

import numpy as np
import pytest

from seqrec.config import DataConfig, RunConfig
from seqrec.data import datasets
from seqrec.data.preprocess import preprocess, sequences_from_lists
from seqrec.data.split import hold_out_items, leave_one_out, make_split
from seqrec.pipeline import run


def real_split(data_dir, **kw):
    cfg = DataConfig(name="ml-100k", **kw)
    log, _, _ = datasets.load(cfg, data_dir)
    return make_split(preprocess(log, cfg), cfg)


def test_cold_items_are_never_trained(data_dir):
    sp = real_split(data_dir, cold_items=0.1, cold_seed=3)
    assert len(sp.cold_items) == round(0.1 * sp.seqs.n_items)
    trained = set(sp.seqs.items[sp.train_positions()].tolist())
    assert not trained & set(sp.cold_items.tolist())
    assert sp.train_item_counts()[sp.cold_items].sum() == 0
    # the test targets still include cold items: that is what the protocol measures
    assert np.isin(sp.seqs.items[sp.test.tgt_start], sp.cold_items).sum() > 0
    sp.check_no_leakage()


def test_training_view_drops_only_cold_events():
    seqs = sequences_from_lists([[1, 2, 3, 4, 5, 6], [2, 3, 4, 5]])
    sp = hold_out_items(leave_one_out(seqs), 0.0, 0)
    sp.cold_items = None
    full = leave_one_out(seqs)
    items, _ = sp.train_arrays()
    assert [items[a:b].tolist() for a, b in zip(sp.train_start, sp.train_end)] == \
           [seqs.items[a:b].tolist() for a, b in zip(full.train_start, full.train_end)]


def test_cold_users_are_held_out_and_evaluated_after_k_events(data_dir):
    sp = real_split(data_dir, cold_users=0.1, cold_seed=1)
    cold = sp.cold_users[1].users
    assert len(cold) == round(0.1 * sp.seqs.n_users)
    assert (sp.train_end[cold] == sp.train_start[cold]).all()
    assert not np.isin(sp.test.users, cold).any() and not np.isin(sp.valid.users, cold).any()
    for k, es in sp.cold_users.items():
        assert (es.hist_end - es.hist_start == k).all() and (es.tgt_end - es.tgt_start == 1).all()
    sp.check_no_leakage()


def test_pipeline_reports_cold_and_warm_segments(ml100k_slice):
    cfg = RunConfig.from_dict({"data": {"name": str(ml100k_slice), "cold_items": 0.2, "cold_users": 0.2},
                               "model": {"name": "gru4rec", "hidden_dim": 16, "embed_dim": 16},
                               "train": {"epochs": 1}})
    res = run(cfg, None, progress=False)
    seg = res.segments
    assert seg["test_cold_items"]["users"] + seg["test_warm_items"]["users"] == len(res.split.test)
    assert set(seg) >= {"cold_users@1", "cold_users@2", "cold_users@3"}
    assert 0 <= seg["cold_users@2"]["NDCG@10"] <= 1



def test_held_out_items_are_unknown_to_training(ml100k_slice):
    """Training leaves held-out items alone: they are never negatives, so their rows of the item
    table get no gradient and keep their initial vectors."""
    import torch

    from seqrec.models import build_model

    cfg = RunConfig.from_dict({"data": {"name": str(ml100k_slice), "cold_items": 0.2},
                               "model": {"name": "sasrec", "d_model": 16, "max_len": 20},
                               "train": {"epochs": 1}})
    res = run(cfg, None, progress=False, with_test=False)
    cold = torch.as_tensor(res.split.cold_items)
    trained = res.model.items.id_emb.weight.detach()
    initial = build_model(cfg.model, res.split.seqs.n_items, cfg.train.seed).items.id_emb.weight
    torch.testing.assert_close(trained[cold], initial.detach()[cold])
    warm = torch.ones(len(trained), dtype=torch.bool)
    warm[cold] = False
    warm[0] = False
    assert (trained[warm] - initial.detach()[warm]).abs().sum(1).gt(0).all()


def test_cold_offset_moves_only_untrained_items_and_is_saved(ml100k_slice, tmp_path):
    """``train.calibrate_cold_items``: the offset is chosen on validation (the best value tried,
    never worse than none), lands on the held-out items' scores only, and the saved artifact
    ranks with it (what is served is what was measured)."""
    import torch

    from seqrec.recommend import Recommender
    from seqrec.train.calibrate import untrained_items

    cfg = RunConfig.from_dict({"data": {"name": str(ml100k_slice), "cold_items": 0.2},
                               "model": {"name": "sasrec", "d_model": 16, "max_len": 20},
                               "train": {"epochs": 2, "calibrate_cold_items": True}})
    res = run(cfg, tmp_path / "art", progress=False)
    cal = res.calibration
    cold = untrained_items(res.split)
    assert cal["items"] == int(cold.sum()) >= len(res.split.cold_items)
    values = {t["fraction"]: t["NDCG@10"] for t in cal["tried"]}
    assert cal["valid NDCG@10"] == max(values.values()) >= cal["valid NDCG@10 without"] == values[0.0]
    assert res.valid["NDCG@10"] == cal["valid NDCG@10"]
    W, b = res.model.item_table()
    W2, b2 = res.model.ranking_table()
    assert torch.equal(W, W2)
    diff = b2 - (torch.zeros_like(b2) if b is None else b)
    assert torch.allclose(diff[torch.from_numpy(cold)], torch.tensor(cal["offset"]))
    assert diff[torch.from_numpy(~cold)].abs().max() == 0  # warm items and padding untouched
    rec = Recommender.load(tmp_path / "art")
    torch.testing.assert_close(rec.model.ranking_table()[1], b2)
    assert (tmp_path / "art" / "metrics.json").read_text().count("cold_item_calibration") == 1


def test_cold_offset_reaches_rows_past_the_trained_catalog():
    """Items added to the catalog after training (rows past the mask) count as untrained."""
    import torch

    from seqrec.models import build_model

    model = build_model({"name": "sasrec", "d_model": 8, "max_len": 5}, 6, 0)
    cold = torch.zeros(5, dtype=torch.bool)  # a mask for a 4-item catalog: rows 5, 6 are "new"
    cold[2] = True
    model.set_cold_offset(cold, 1.5)
    _, b = model.ranking_table()
    assert b.tolist() == [0.0, 0.0, 1.5, 0.0, 0.0, 1.5, 1.5]


def test_cold_offset_and_refit_are_refused(ml100k_slice):

    from seqrec.errors import ConfigError

    cfg = RunConfig.from_dict({"data": {"name": str(ml100k_slice)}, "model": {"name": "gru4rec"},
                               "train": {"refit": True, "calibrate_cold_items": True}})
    with pytest.raises(ConfigError, match="cannot be combined"):
        run(cfg, None, progress=False)


def test_neighbour_rows_are_the_nearest_trained_items_rows():
    """k = 1 copies the most similar trained item's row (and bias); a soft mean of several lies
    between them; an item without a vector keeps its own row; ranking_table applies them."""
    import torch

    from seqrec.models import build_model
    from seqrec.train.calibrate import neighbour_rows

    model = build_model({"name": "sasrec", "d_model": 8, "max_len": 5}, 6, 0)
    cold = np.array([False, False, False, False, True, True, True])  # items 4, 5, 6 untrained
    vectors = np.array([[0, 0], [1, 0], [0, 1], [1, 1], [0.9, 0.1], [0.1, 0.9], [0, 0]], float)
    W, _ = model.item_table()
    index, rows, bias = neighbour_rows(model, vectors, cold, k=1, tau=0.1)
    assert index.tolist() == [4, 5]  # item 6 has no vector: left alone
    torch.testing.assert_close(rows, W[[1, 2]].detach())
    assert bias is None
    _, soft, _ = neighbour_rows(model, vectors, cold, k=3, tau=10.0)  # nearly the plain mean
    torch.testing.assert_close(soft[0], W[[1, 2, 3]].detach().mean(0), atol=0.02, rtol=0)
    model.set_cold_rows(index, rows)
    R, _ = model.ranking_table()
    torch.testing.assert_close(R[[4, 5]], W[[1, 2]].detach())
    torch.testing.assert_close(R[[0, 1, 2, 3, 6]], W[[0, 1, 2, 3, 6]].detach())


@pytest.mark.parametrize("min_share", [0.0, 0.9])
def test_cold_item_neighbours_are_chosen_on_validation_and_saved(ml100k_slice, tmp_path, min_share):
    """An id-only model with ``cold_item_neighbours``: the titles are read for the neighbours only;
    every (k, tau) tried is recorded, the best on validation is kept (none if nothing beats it);
    the offset is the best overall among those giving cold targets ``min_share`` of the warm
    ones' NDCG@10 (the highest share if none does); the artifact ranks with the chosen rows."""
    import torch

    from seqrec.recommend import Recommender

    cfg = RunConfig.from_dict({"data": {"name": str(ml100k_slice), "cold_items": 0.2},
                               "model": {"name": "sasrec", "d_model": 16, "max_len": 20},
                               "content": {"text": True, "attributes": False},
                               "train": {"epochs": 2, "calibrate_cold_items": True,
                                         "cold_item_neighbours": True,
                                         "cold_item_min_share": min_share}})
    res = run(cfg, tmp_path / "art", progress=False)
    cal = res.calibration
    tried = cal["neighbours_tried"]
    assert [t["neighbours"] for t in tried][:2] == [None, {"k": 1, "tau": 0.02}] and len(tried) == 6
    for t in tried + cal["tried"]:
        warm = t["warm NDCG@10"]
        assert t["cold share"] == pytest.approx(t["cold NDCG@10"] / warm if warm else 0.0)
    best = max(tried, key=lambda t: t["NDCG@10"])
    assert cal["neighbours"] == best["neighbours"] and cal["min_share"] == min_share
    assert cal["valid NDCG@10 without"] == tried[0]["NDCG@10"]
    assert res.valid["NDCG@10"] == pytest.approx(cal["valid NDCG@10"])
    chosen = next(t for t in cal["tried"] if t["offset"] == cal["offset"])
    feasible = [t for t in cal["tried"] if t["cold share"] >= min_share]
    if feasible:
        assert chosen["NDCG@10"] == max(t["NDCG@10"] for t in feasible)
    else:
        assert chosen["cold share"] == max(t["cold share"] for t in cal["tried"])
        assert "no offset tried" in cal["note"]
    if min_share == 0:
        assert cal["valid NDCG@10"] >= best["NDCG@10"] >= tried[0]["NDCG@10"]
    assert res.model.items.uses_content is False  # the model itself reads ids only
    rec = Recommender.load(tmp_path / "art")
    for a, b in zip(rec.model.ranking_table(), res.model.ranking_table()):
        torch.testing.assert_close(a, b)


def test_cold_item_neighbours_need_calibration_and_text(ml100k_slice):

    from seqrec.errors import ConfigError

    cfg = RunConfig.from_dict({"data": {"name": str(ml100k_slice)}, "model": {"name": "sasrec"},
                               "train": {"calibrate_cold_items": True, "cold_item_neighbours": True}})
    with pytest.raises(ConfigError, match="needs train.calibrate_cold_items = true and item text"):
        run(cfg, None, progress=False)
    with pytest.raises(ConfigError, match=r"cold_item_min_share must be in \[0, 1\], got 1.5"):
        RunConfig.from_dict({"train": {"cold_item_min_share": 1.5}})
