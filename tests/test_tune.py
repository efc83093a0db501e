"""Tuning looks at validation only and writes a frozen config that reads back."""

import pytest

import seqrec.evaluate.protocol as protocol
import seqrec.pipeline as pipeline
from seqrec.config import RunConfig, load_run_config, load_toml
from seqrec.errors import ConfigError
from seqrec.tune import apply, default_space, tune, write_frozen


def test_tune_never_evaluates_test_and_freezes_the_best(ml100k_slice, tmp_path, monkeypatch):
    seen = []
    real = protocol.evaluate

    def spy(model, split, which, *a, **k):
        seen.append(which)
        return real(model, split, which, *a, **k)

    monkeypatch.setattr(pipeline, "evaluate", spy)
    monkeypatch.setattr("seqrec.train.loop.evaluate", spy)
    cfg = RunConfig.from_dict({"data": {"name": str(ml100k_slice)},
                               "model": {"name": "gru4rec", "hidden_dim": 16, "embed_dim": 16},
                               "train": {"epochs": 1}})
    space = {"train.lr": {"low": 1e-3, "high": 1e-2, "log": True}, "model.dropout": [0.0, 0.3]}
    res = tune(cfg, 3, space)
    assert "test" not in seen and seen.count("valid") >= 3
    assert len(res.trials) == 3 and res.best_value == max(t["valid"] for t in res.trials)
    out = tmp_path / "best.toml"
    write_frozen(out, res, "NDCG@10", "x.toml")
    back = load_run_config(out)
    assert back.train.lr == pytest.approx(res.best_params["train.lr"])
    assert back.model["dropout"] == res.best_params["model.dropout"]
    assert load_toml(out)["expected"]["valid_NDCG@10"] == pytest.approx(res.best_value, abs=1e-5)


def test_bad_search_keys():
    with pytest.raises(ConfigError):
        apply(RunConfig(), {"trian.lr": 0.1})
    with pytest.raises(ConfigError):
        apply(RunConfig(), {"model.d_modle": 8})
    assert "model.d_model" in default_space("sasrec") and "model.dropout" in default_space("lstm")
    assert "train.emb_weight_decay" in default_space("sasrec")
    assert default_space("hstu")["model.ffn"][0] == 0 and "model.ffn" not in default_space("sasrec")
