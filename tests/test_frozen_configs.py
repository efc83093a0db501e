"""The frozen configs in ``configs/``: each loads, says how to run it and what it must reproduce;
and ``benchmarks/freeze.py`` writes a config that reads back to the run it froze."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import pytest

from seqrec.config import RunConfig, load_run_config, load_toml
from seqrec.models import model_config

ROOT = Path(__file__).resolve().parent.parent
FROZEN = sorted((ROOT / "configs").glob("*.toml"))


def _load_script(name: str):
    spec = importlib.util.spec_from_file_location(name, ROOT / "benchmarks" / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.mark.parametrize("path", FROZEN, ids=[p.stem for p in FROZEN])
def test_frozen_config_is_complete(path):
    cfg = load_run_config(path)
    raw = load_toml(path)
    refit = "-refit" if cfg.train.refit else ""  # tested after a retrain on train + valid
    # <model>[-<variant words>][-refit]-<dataset>, e.g. sasrec-wide-refit-beauty, hstu-deep-mh-ml-1m
    assert re.fullmatch(rf"{cfg.model['name']}(-(?!refit\b)[a-z0-9]+)*{refit}-{cfg.data.name}",
                        path.stem)
    model_config(cfg.model)  # every model field is valid
    assert cfg.train.max_minutes == 0, "a frozen run must not depend on the machine's speed"
    assert "run" in raw["about"] and "check" in raw["about"]
    expected = raw["expected"]
    assert 0 < expected["tolerance"] < 0.05
    assert {"valid_NDCG@10", "test_NDCG@10"} <= set(expected)


def test_freeze_writes_what_reproduce_reads(tmp_path):
    freeze = _load_script("freeze")
    reproduce = _load_script("reproduce")
    cfg = RunConfig.from_dict({"data": {"name": "ml-100k"}, "model": {"name": "sasrec", "dropout": 0.2},
                               "train": {"epochs": 50, "max_minutes": 3.0}})
    row = {"dataset": "ml-100k", "model": "sasrec", "config": cfg.to_dict(), "epochs": 7, "best_epoch": 5,
           "seconds_per_epoch": 2.0, "total_seconds": 20.0, "stop_reason": "time limit: 3.0 minutes",
           "valid": {"NDCG@10": 0.1, "HR@10": 0.2}, "test": {"NDCG@10": 0.09, "HR@10": 0.19}}
    tables = freeze.frozen_tables(row, {"cpu": "x86_64", "threads": 2, "torch": "2"}, "accuracy.json", 0.005)
    from seqrec.config import to_toml

    path = tmp_path / "sasrec-ml-100k.toml"
    path.write_text(to_toml(tables))
    back = load_run_config(path)
    # a time-capped run is frozen at the epochs it completed, with no cap
    assert back.train.epochs == 7 and back.train.max_minutes == 0
    assert back.model["dropout"] == 0.2 and "max_len" in back.model
    expected = load_toml(path)["expected"]
    rows = reproduce.compare(expected, {"NDCG@10": 0.102, "HR@10": 0.2}, {"NDCG@10": 0.08, "HR@10": 0.19})
    ok = {r["metric"]: r["ok"] for r in rows}
    assert ok == {"valid_NDCG@10": True, "valid_HR@10": True, "test_NDCG@10": False, "test_HR@10": True}


def test_accuracy_rerun_replaces_its_row_in_place():
    accuracy = _load_script("accuracy")
    rows = [{"dataset": "a", "model": m, "v": 0} for m in ("x", "y", "z")]
    again = accuracy.replace_row(rows, {"dataset": "a", "model": "y", "v": 1})
    assert [(r["model"], r["v"]) for r in again] == [("x", 0), ("y", 1), ("z", 0)]
    added = accuracy.replace_row(rows, {"dataset": "b", "model": "y", "v": 2})
    assert [(r["dataset"], r["model"]) for r in added][-1] == ("b", "y") and len(added) == 4


def test_a_reused_selection_refits_exactly_what_the_full_refit_run_tests(ml100k_slice):
    """``accuracy.py --refit --reuse-selection`` skips the selection run only: from the stored
    plain row it trains and tests the very model ``train.refit`` would have."""
    from seqrec.pipeline import prepare, run

    accuracy = _load_script("accuracy")
    d = {"data": {"name": str(ml100k_slice)}, "model": {"name": "sasrec", "d_model": 16, "max_len": 20},
         "train": {"epochs": 3, "max_minutes": 5.0}}
    plain_cfg = RunConfig.from_dict(d)
    refit_cfg = RunConfig.from_dict({**d, "train": {**d["train"], "refit": True, "max_minutes": 9.0}})
    prepared = prepare(plain_cfg)
    plain = run(plain_cfg, None, prepared=prepared, progress=False)
    stored = {"dataset": "slice", "model": "sasrec", "config": plain_cfg.to_dict(), "test": plain.test,
              "valid": plain.valid, "epochs": len(plain.train.trained),
              "best_epoch": plain.train.best_epoch, "seconds_per_epoch": 1.0, "total_seconds": 3.0,
              "stop_reason": plain.train.stop_reason, "history": plain.train.history}
    rows = [{**stored, "model": "sasrec-refit"}, stored]
    # found whatever the time cap; not when any other setting differs
    assert accuracy.stored_selection(rows, "slice", "sasrec", refit_cfg) is stored
    other = RunConfig.from_dict({**d, "train": {**d["train"], "lr": 0.01}})
    assert accuracy.stored_selection(rows, "slice", "sasrec", other) is None
    assert accuracy.stored_selection(rows, "other", "sasrec", refit_cfg) is None

    row = accuracy.refit_row(refit_cfg, prepared, stored, "sasrec-refit")
    full = run(refit_cfg, None, prepared=prepared, progress=False)
    assert row["model"] == "sasrec-refit" and row["refit"]["epochs"] == full.refit["epochs"]
    assert row["test"] == full.test and row["valid"] == full.valid == plain.valid
    assert "not repeated" in row["protocol"]["refit"]
