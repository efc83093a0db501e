"""The main job: ``seqrec quickstart --fast`` on the real Amazon Beauty (about a minute)."""

import json


from seqrec.cli import main
from seqrec.cli.quickstart import quickstart_config


def test_quickstart_fast(data_dir, tmp_path, capsys):
    out = tmp_path / "qs"
    assert main(["quickstart", "--fast", "--no-progress", "--data-dir", str(data_dir),
                 "--output", str(out)]) == 0
    text = capsys.readouterr().out
    assert "MostPopular" in text and "SASRec" in text and "seqrec recommend" in text
    metrics = json.loads((out / "metrics.json").read_text())
    pop_line = next(line for line in text.splitlines() if "MostPopular" in line)
    pop_ndcg = float(pop_line.split("|")[4])
    # a minute of SASRec already beats popularity by a wide margin on the held-out test users
    assert metrics["test"]["NDCG@10"] > 2 * pop_ndcg
    assert metrics["protocol"]["users"] == 22_363 and metrics["protocol"]["items_ranked"] == 12_101


def test_quickstart_config_is_bounded():
    assert quickstart_config(fast=True).train.max_minutes <= 1.0
    full = quickstart_config(fast=False).train
    assert full.max_minutes <= 4.5 and full.refit  # selection + an equally long refit < 10 min
    assert not quickstart_config(fast=True).train.refit
