"""``benchmarks/peer/report.py``, the RecBole comparison's arithmetic and files, on small hand-made
epoch lists and on a committed result: no RecBole, no training."""

from __future__ import annotations

import copy
import importlib.util
import json
import shutil
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
STORED = ROOT / "benchmarks" / "results" / "peer_recbole_ml-100k.json"


def _load_script(name: str, path: Path):
    sys.path.insert(0, str(ROOT / "benchmarks"))  # peer_recbole.py imports its helpers as ``peer``
    try:
        spec = importlib.util.spec_from_file_location(name, path)
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
    finally:
        sys.path.remove(str(ROOT / "benchmarks"))
    return mod


report = _load_script("peer_report", ROOT / "benchmarks" / "peer" / "report.py")


def _epoch(n: int, wall: float, unmasked: float | None, masked: float | None = None) -> dict:
    row: dict = {"epoch": n, "wall_s": wall, "train_s": 1.0}
    if unmasked is not None:
        row["valid_unmasked"] = {"NDCG@10": unmasked}
    if masked is not None:
        row["valid_masked"] = {"NDCG@10": masked}
    return row


EPOCHS = [_epoch(1, 10.0, 0.05, 0.08), _epoch(2, 20.0, None), _epoch(3, 30.0, 0.071, 0.10),
          _epoch(4, 40.0, 0.075, 0.09)]


def _seqrec(epochs: list[dict], test_unmasked: float, test_masked: float = 0.1) -> dict:
    return {"epochs": epochs, "test_unmasked": {"NDCG@10": test_unmasked},
            "test_masked": {"NDCG@10": test_masked}}


def test_reached_compares_at_recbole_precision():
    assert report.reached(0.07316, 0.0732)  # rounds to 0.0732, as RecBole rounds its own
    assert not report.reached(0.07314, 0.0732)
    assert report.reached(0.08, 0.0732)


def test_time_to_is_the_first_epoch_reaching_the_target():
    assert report.time_to(EPOCHS, 0.07) == (30.0, 3)  # epoch 2 has no validation: skipped
    assert report.time_to(EPOCHS, 0.05) == (10.0, 1)
    assert report.time_to(EPOCHS, 0.09, "valid_masked") == (30.0, 3)


def test_time_to_none_reached():
    assert report.time_to(EPOCHS, 0.08) == (None, None)
    assert report.time_to([], 0.01) == (None, None)


def test_crossing_ratio_is_recbole_time_over_seqrec_time():
    row = report.crossing(0.07, 330.0, 11, _seqrec(EPOCHS, 0.06), "unmasked", 0.05)
    assert row["seqrec_s"] == 30.0 and row["seqrec_epoch"] == 3
    assert row["ratio"] == pytest.approx(11.0) and row["seqrec_test_higher"] and row["target_met"]
    slower = report.crossing(0.07, 15.0, 2, _seqrec(EPOCHS, 0.06), "unmasked", 0.05)
    assert slower["ratio"] == pytest.approx(0.5) and not slower["target_met"]  # seqrec 2x slower
    lower = report.crossing(0.07, 330.0, 11, _seqrec(EPOCHS, 0.04), "unmasked", 0.05)
    assert lower["ratio"] == pytest.approx(11.0) and not lower["seqrec_test_higher"]
    assert not lower["target_met"]  # fast enough, but a lower test NDCG@10
    under_ten = report.crossing(0.07, 270.0, 9, _seqrec(EPOCHS, 0.06), "unmasked", 0.05)
    assert under_ten["ratio"] == pytest.approx(9.0) and not under_ten["target_met"]


def test_crossing_not_reached_and_without_seqrec():
    row = report.crossing(0.08, 100.0, 5, _seqrec(EPOCHS, 0.2), "unmasked", 0.05)
    assert row["seqrec_s"] is None and row["ratio"] is None and not row["target_met"]
    masked = report.crossing(0.095, 100.0, 5, _seqrec(EPOCHS, 0.06, 0.2), "masked", 0.1)
    assert masked["seqrec_s"] == 30.0 and masked["seqrec_test_higher"]
    alone = report.crossing(0.08, 100.0, 5, None, "unmasked", 0.05)
    assert alone == {"target_valid_ndcg10": 0.08, "recbole_s": 100.0, "recbole_epoch": 5}


def test_markdown_renders_a_stored_result():
    result = json.loads(STORED.read_text())
    assert report.compare(result["recbole"], result["seqrec"]) == result["comparison"]
    md = report.markdown(result)
    rec, sq = result["recbole"]["no-anomaly"], result["seqrec"]
    assert md.startswith("### ml-100k\n")
    table = [line for line in md.splitlines() if line.startswith("| ")]
    assert table[1].startswith("| RecBole (anomaly off) | ") and table[2].startswith("| seqrec (sasrec) | ")
    for figure in (f"{rec['test']['ndcg@10']:.4f}", f"{rec['test']['hit@10']:.4f}",
                   f"{rec['best_valid_ndcg10']:.4f}", f"{rec['best_wall_s']:.1f} (epoch {rec['first_best_epoch']})",
                   "not reached"):
        assert figure in table[1]
    for figure in (f"{sq['test_unmasked']['NDCG@10']:.4f}", f"{sq['test_masked']['NDCG@10']:.4f}",
                   f"{sq['best_epoch']} / {sq['epochs_run']}", "anomaly off: not reached"):
        assert figure in table[2]
    assert "RecBole's split is identical, target by target." in md
    assert "NOT MET (time ratio not reached" in md


def test_markdown_renders_the_ratio_once_seqrec_reaches_the_target():
    result = copy.deepcopy(json.loads(STORED.read_text()))
    rec = result["recbole"]["no-anomaly"]
    result["seqrec"]["epochs"][5]["valid_unmasked"]["NDCG@10"] = rec["best_valid_ndcg10"]
    result["comparison"] = report.compare(result["recbole"], result["seqrec"])
    c = result["comparison"]["no-anomaly"]
    assert c["seqrec_epoch"] == result["seqrec"]["epochs"][5]["epoch"]
    assert c["ratio"] == pytest.approx(rec["best_wall_s"] / c["seqrec_s"])
    md = report.markdown(result)
    assert f"| {c['ratio']:.1f}x |" in md and f"{c['seqrec_s']:.1f} (epoch {c['seqrec_epoch']})" in md


def test_write_markdown_joins_every_stored_result(tmp_path):
    shutil.copy(STORED, tmp_path / STORED.name)
    report.write_markdown(tmp_path)
    text = (tmp_path / "peer_recbole.md").read_text()
    assert text.startswith("# RecBole 1.2.1's SASRec vs seqrec, same split, same machine\n")
    assert report.markdown(json.loads(STORED.read_text())) + "\n" in text


def test_the_script_takes_its_modes_and_report_from_the_helpers():
    script = _load_script("peer_recbole", ROOT / "benchmarks" / "peer_recbole.py")
    args = script.parse_args(["--datasets", "ml-100k", "--modes", "no-anomaly"])
    assert args.datasets == ["ml-100k"] and args.modes == ["no-anomaly"]
    assert set(script.MODES) == set(report.MODES) and script.markdown.__name__ == "markdown"
    assert args.venv == ROOT / "benchmarks" / ".venv-recbole"


def test_markdown_says_when_seqrec_learns_a_repeat_score():
    """A seqrec side with ``model.repeat_bias`` is named as such, with the last learned value."""
    stored = ROOT / "benchmarks" / "results" / "peer-sasrec-repeat" / "peer_recbole_ml-100k.json"
    result = copy.deepcopy(json.loads(stored.read_text()))
    assert result["seqrec"]["config"]["model"]["repeat_bias"] is True
    md = report.markdown(result)
    assert "(`model.repeat_bias`), in training and in every unmasked ranking." in md
    assert "MET (time ratio" in md and "NOT MET" not in md
    result["seqrec"]["epochs"][-1]["repeat_score"] = -2.6917
    assert "it learned -2.69 by its last epoch" in report.markdown(result)
    result["seqrec"]["config"]["model"]["repeat_bias"] = False
    assert "learns one score added" not in report.markdown(result)
