"""``benchmarks/gpu.py`` runs only when a GPU is lent, which may be months apart, so its parts are
checked here on the CPU: every run it would start is a valid ``seqrec train`` command, and its
parity checks pass with the CPU standing in for the card."""

from __future__ import annotations

import argparse
import importlib.util
import sys
from pathlib import Path

import pytest
import torch

from seqrec.cli import train as train_cli
from seqrec.config import RunConfig
from seqrec.models import build_model
from seqrec.pipeline import prepare

ROOT = Path(__file__).resolve().parent.parent


def _gpu_script():
    sys.path.insert(0, str(ROOT / "benchmarks"))  # it takes the scaling table's sizes from there
    try:
        spec = importlib.util.spec_from_file_location("gpu_script", ROOT / "benchmarks" / "gpu.py")
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
    finally:
        sys.path.remove(str(ROOT / "benchmarks"))
    return mod


gpu = _gpu_script()


@pytest.mark.parametrize("name", sorted(gpu.RUNS))
def test_every_gpu_run_is_a_valid_train_command(name, tmp_path):
    argv = gpu.run_argv(name, gpu.RUNS[name], "cuda", 4.5, 2, tmp_path / name)
    assert argv[1:4] == ["-m", "seqrec", "train"]
    parser = argparse.ArgumentParser()
    train_cli.register(parser.add_subparsers())
    cfg = train_cli.build_config(parser.parse_args(argv[3:]))
    assert cfg.train.device == "cuda" and cfg.train.max_minutes == 4.5 and cfg.train.threads == 2
    assert build_model(cfg.model, 100, seed=0).trainable
    for runs in gpu.RUN_SETS.values():
        assert set(runs) <= set(gpu.RUNS)


def test_the_large_runs_are_large():
    """The issue's large size: d >= 256, 8+ blocks, length 200+."""
    for name in ("hstu-large-ml-1m", "sasrec-large-ml-1m", "scaling-L-beauty", "scaling-L-ml-1m"):
        s = gpu.RUNS[name]["set"]
        assert s["model.d_model"] >= 256 and s.get("model.n_blocks", 8) >= 8
        assert s.get("model.max_len", 200) >= 200


@pytest.mark.parametrize("name", gpu.PARITY_MODELS)
def test_parity_checks_pass_with_the_cpu_as_the_device(name, data_dir):
    split = prepare(RunConfig.from_dict({"data": {"name": "ml-100k"}}), data_dir).split
    r = gpu.check_model(name, split, torch.device("cpu"), rtol=1e-4)
    assert r["ok"], r
    assert r["query_rel_diff"] == 0 and r["worst_grad_rel_diff"] == 0
    assert r["loss_deterministic"] == (name != "bert4rec")  # BERT4Rec draws its masks
    assert r["ranks_equal_share"] == 1.0
