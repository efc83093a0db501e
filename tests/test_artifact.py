"""Artifacts: complete or absent, never half-written; loaded without pickle."""

import json
import os
import subprocess
import sys
import textwrap

import pytest

from seqrec.artifact import load_artifact, save_artifact
from seqrec.config import RunConfig
from seqrec.data.log import ItemCatalog
from seqrec.data.preprocess import sequences_from_lists
from seqrec.data.split import leave_one_out
from seqrec.errors import ArtifactError
from seqrec.fsutil import atomic_directory
from seqrec.models import build_model


def make(tmp_path, name="pop"):
    seqs = sequences_from_lists([[1, 2, 3, 4], [2, 3, 4, 5], [1, 3, 5, 7]])
    model = build_model({"name": name}, seqs.n_items, 0)
    model.fit_counts(leave_one_out(seqs))
    path = tmp_path / "art"
    save_artifact(path, model=model, run_config=RunConfig(model={"name": name}), seqs=seqs,
                  catalog=ItemCatalog.empty(), metrics={"test": {"NDCG@10": 0.5}},
                  history=[{"epoch": 0, "loss": None, "valid": {"NDCG@10": 0.4}}], report={})
    return path, model


def test_roundtrip_and_files(tmp_path):
    path, model = make(tmp_path)
    names = sorted(os.listdir(path))
    assert names == sorted(["weights.safetensors", "config.json", "vocab.json", "catalog.parquet",
                            "interactions.parquet", "metrics.json", "history.json", "history.png",
                            "report.json"])
    art = load_artifact(path)
    assert art.model.counts.tolist() == model.counts.tolist()
    assert art.metrics["test"]["NDCG@10"] == 0.5
    assert (path / "history.png").read_bytes()[:4] == b"\x89PNG"


def test_failure_while_saving_keeps_the_previous_artifact(tmp_path):
    path, _ = make(tmp_path)
    before = {f: (path / f).read_bytes() for f in os.listdir(path)}
    with pytest.raises(RuntimeError):
        with atomic_directory(path) as tmp:
            (tmp / "weights.safetensors").write_bytes(b"half")
            raise RuntimeError("crash mid-save")
    assert {f: (path / f).read_bytes() for f in os.listdir(path)} == before
    assert [p.name for p in tmp_path.iterdir()] == ["art"]  # no temporary folder left behind


def test_killed_while_saving_leaves_no_half_artifact(tmp_path):
    """SIGKILL in the middle of the write: the target never exists half-written."""
    target = tmp_path / "new"
    code = textwrap.dedent(f"""
        import os, signal
        from pathlib import Path
        from seqrec.fsutil import atomic_directory
        with atomic_directory(Path({str(target)!r})) as tmp:
            (tmp / "weights.safetensors").write_bytes(b"x" * 1000)
            os.kill(os.getpid(), signal.SIGKILL)
    """)
    proc = subprocess.run([sys.executable, "-c", code])
    assert proc.returncode != 0
    assert not target.exists()
    with pytest.raises(ArtifactError):
        load_artifact(target)


def test_incomplete_artifact_is_rejected(tmp_path):
    path, _ = make(tmp_path)
    (path / "vocab.json").unlink()
    with pytest.raises(ArtifactError, match="missing vocab.json"):
        load_artifact(path)


def test_no_pickle_anywhere(tmp_path):
    path, _ = make(tmp_path)
    for f in os.listdir(path):
        data = (path / f).read_bytes()
        assert not data.startswith(b"\x80"), f  # pickle protocol header
    json.loads((path / "config.json").read_text())
