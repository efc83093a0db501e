"""Interest profiles and binary prediction on the shared sequence encoder."""

import json

import numpy as np
import pytest
import torch

from seqrec.cli import main
from seqrec.data.log import ItemCatalog
from seqrec.models import build_model
from seqrec.tasks.binary import auc, log_loss, past_rate
from seqrec.tasks.interest import InterestModel, category_matrix
import polars as pl


def test_category_matrix_and_levels():
    cat = ItemCatalog(pl.DataFrame({"item_id": [1, 2, 3], "categories": [["Beauty", "Makeup", "Eyes"],
                                                                        ["Beauty", "Hair"], []]}))
    M, names, missing = category_matrix([1, 2, 3], cat, level=1)
    assert names == ["Hair", "Makeup"] and missing == 1
    assert M[1].tolist() == [0.0, 1.0] and M[2].tolist() == [1.0, 0.0] and M[3].sum() == 0
    M, names, _ = category_matrix([1, 2], cat)
    assert M[1].sum() == pytest.approx(1.0) and M[1, names.index("Eyes")] == pytest.approx(1 / 3)


def test_next_distribution_hand_case():
    enc = build_model({"name": "gru4rec", "embed_dim": 8, "hidden_dim": 8}, 4, 0)
    M = np.array([[0, 0], [1, 0], [0, 1], [0.5, 0.5], [1, 0]], dtype=np.float32)
    m = InterestModel(enc, M, ["a", "b"], horizon=2)
    y = torch.tensor([[0, 1, 2, 3]])
    p = m.next_distribution(y)[0]
    assert p[1].tolist() == [0.5, 0.5]  # the next two targets: items 1, 2
    assert p[2].tolist() == pytest.approx([0.25, 0.75])  # items 2, 3
    assert p[3].tolist() == [0.5, 0.5]  # item 3 only (end of the window)


def test_auc_log_loss_past_rate():
    y = np.array([0, 0, 1, 1])
    assert auc(y, np.array([0.1, 0.4, 0.35, 0.8])) == pytest.approx(0.75)
    assert auc(y, np.array([0.5, 0.5, 0.5, 0.5])) == pytest.approx(0.5)
    assert log_loss(np.array([1.0]), np.array([0.5])) == pytest.approx(np.log(2))
    r = past_rate(torch.tensor([[0.0, 1.0, 1.0]]), torch.tensor([[False, True, True]]), prior=0.5, strength=2)
    assert r[0].tolist() == pytest.approx([0.5, 2 / 3, 3 / 4])


def test_interest_and_binary_end_to_end(ml100k_slice, tmp_path, capsys):
    out = tmp_path / "interest"
    assert main(["train", "--data", str(ml100k_slice), "--model", "sasrec", "--task", "interest",
                 "--output", str(out), "--epochs", "2", "--no-progress", "--set", "model.d_model=16"]) == 0
    text = capsys.readouterr().out
    assert "user history baseline" in text and "global baseline" in text
    assert main(["profile", str(out), "--user", "3", "--json"]) == 0
    prof = json.loads(capsys.readouterr().out)
    shares = [r["share"] for r in prof["profile"]]
    assert prof["horizon"] == 10 and shares == sorted(shares, reverse=True) and sum(shares) <= 1 + 1e-6
    assert main(["evaluate", str(out), "--split", "test", "--json"]) == 0
    ev = json.loads(capsys.readouterr().out)
    stored = json.loads((out / "metrics.json").read_text())["test"]
    assert ev["KL"] == pytest.approx(stored["KL"]) and ev["task"] == "interest"

    out = tmp_path / "binary"
    assert main(["train", "--data", str(ml100k_slice), "--model", "gru4rec", "--task", "binary",
                 "--output", str(out), "--epochs", "2", "--no-progress"]) == 0
    capsys.readouterr()
    assert main(["evaluate", str(out), "--split", "test", "--json"]) == 0
    ev = json.loads(capsys.readouterr().out)
    assert 0 <= ev["AUC"] <= 1 and "baseline_rates" in ev and ev["events"] == 120
    assert main(["profile", str(out), "--user", "3"]) == 2  # not an interest artifact


def test_binary_needs_labels(tmp_path, capsys):
    p = tmp_path / "s.txt"
    p.write_text("\n".join(f"{u} " + " ".join(str(i) for i in range(1, 8)) for u in range(1, 20)))
    assert main(["train", "--data", str(p), "--model", "gru4rec", "--task", "binary",
                 "--output", str(tmp_path / "x"), "--epochs", "1"]) == 2
    assert "needs a rating or label" in capsys.readouterr().err


def test_unknown_task_names(tmp_path, capsys):
    from seqrec.errors import ArtifactError
    from seqrec.tasks import rebuild_task

    cfg = tmp_path / "c.toml"
    cfg.write_text('[model]\nname = "gru4rec"\n[task]\nname = "churn"\n')
    p = tmp_path / "s.txt"
    p.write_text("\n".join(f"{u} " + " ".join(str(i) for i in range(1, 8)) for u in range(1, 20)))
    assert main(["train", "--config", str(cfg), "--data", str(p), "--output",
                 str(tmp_path / "x"), "--epochs", "1"]) == 2
    assert "unknown task 'churn'; choose next-item, interest, binary" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()
    enc = build_model({"name": "gru4rec"}, 7, seed=0)
    with pytest.raises(ArtifactError, match="unknown task 'churn'"):
        rebuild_task(enc, {"name": "churn"}, n_items=7)
    assert rebuild_task(enc, {"name": "binary", "threshold": 3.5}, n_items=7).threshold == 3.5
