"""Typed config: typos are errors with a suggestion; TOML round-trips."""

import pytest

from seqrec.config import RunConfig, TrainConfig, from_dict, load_run_config
from seqrec.errors import ConfigError
from seqrec.models import build_model, model_config


def test_typo_is_an_error_with_suggestion():
    with pytest.raises(ConfigError, match="did you mean 'epochs'"):
        from_dict(TrainConfig, {"epoch": 3})


def test_wrong_type_is_an_error():
    with pytest.raises(ConfigError, match="train.lr"):
        RunConfig.from_dict({"train": {"lr": "fast"}})
    assert from_dict(TrainConfig, {"lr": 1}).lr == 1.0  # ints are fine where floats are expected


def test_model_fields_checked():
    with pytest.raises(ConfigError, match="model.d_modle"):
        model_config({"name": "sasrec", "d_modle": 32})
    with pytest.raises(ConfigError, match="unknown model 'sasrek'; choose one of"):
        build_model({"name": "sasrek"}, 10, 0)


def test_toml_roundtrip(tmp_path):
    p = tmp_path / "c.toml"
    p.write_text('[data]\nname = "ml-100k"\nsplit = "temporal"\n[model]\nname = "gru4rec"\nhidden_dim = 32\n'
                 '[train]\nepochs = 3\n[eval]\nks = [5, 10]\n[expected]\ntest_ndcg10 = 0.1\n')
    cfg = load_run_config(p)
    assert cfg.data.split == "temporal" and cfg.model["hidden_dim"] == 32 and cfg.eval.ks == [5, 10]
    assert RunConfig.from_dict(cfg.to_dict()) == cfg
    p.write_text("[trian]\nepochs = 3\n")
    with pytest.raises(ConfigError, match="unknown section"):
        load_run_config(p)
