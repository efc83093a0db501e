"""The command line end to end on a slice of the real ML-100K."""

import json
import subprocess
import sys

import numpy as np
import polars as pl
import pytest

from seqrec.cli import main
from seqrec.data.split import make_split
from seqrec.evaluate.protocol import evaluate
from seqrec.recommend import Recommender


@pytest.fixture(scope="module")
def artifact(ml100k_slice, tmp_path_factory):
    out = tmp_path_factory.mktemp("cli") / "sasrec"
    rc = main(["train", "--data", str(ml100k_slice), "--model", "sasrec", "--output", str(out),
               "--epochs", "2", "--seed", "7", "--no-progress", "--set", "model.d_model=32"])
    assert rc == 0
    return out


def run_json(capsys, args):
    capsys.readouterr()
    assert main(args) == 0
    return json.loads(capsys.readouterr().out)


def test_train_writes_a_complete_artifact(artifact):
    cfg = json.loads((artifact / "config.json").read_text())
    assert cfg["model"]["name"] == "sasrec" and cfg["model"]["d_model"] == 32
    assert cfg["run"]["train"]["seed"] == 7
    hist = json.loads((artifact / "history.json").read_text())
    assert [h["epoch"] for h in hist] == [1, 2] and all("valid" in h for h in hist)
    assert not (artifact.parent / "sasrec.checkpoints").exists()  # removed after success


def test_every_epoch_reports_its_flops_against_the_measured_matmul_rate(artifact, capsys):
    from seqrec.cli.train import _epoch_line

    hist = json.loads((artifact / "history.json").read_text())
    metrics = json.loads((artifact / "metrics.json").read_text())
    ceiling = metrics["matmul_gflops"]
    assert metrics["processor"]  # which CPU that ceiling was measured on
    assert metrics["matmul_products"] in ("oneDNN", "torch.mm")  # and which products trained
    assert metrics["heap"] in ("glibc mmap 32 MiB, trim 512 MiB", "default")  # freed memory kept?
    for h in hist:
        assert h["flops"] > 0 and h["matmul_gflops"] == ceiling > 0
        assert h["floor_seconds"] == pytest.approx(h["flops"] / (ceiling * 1e9))
        assert h["gflops_per_second"] == pytest.approx(h["flops"] / h["train_seconds"] / 1e9)
    capsys.readouterr()
    _epoch_line(hist[0])  # the line `seqrec train` prints after each epoch
    err = capsys.readouterr().err
    ratio = hist[0]["train_seconds"] / hist[0]["floor_seconds"]
    assert (f"{hist[0]['gflops_per_second']:.1f} GFLOP/s of a measured {ceiling:.0f}: "
            f"{ratio:.2f}x the FLOP floor") in err
    _epoch_line({"epoch": 1, "train_seconds": 0.1, "valid": {"NDCG@10": 0.1}})  # counts: no FLOPs
    assert "GFLOP" not in capsys.readouterr().err


def test_evaluate_json_reproduces_training_metrics(artifact, capsys):
    out = run_json(capsys, ["evaluate", str(artifact), "--split", "test", "--json"])
    stored = json.loads((artifact / "metrics.json").read_text())["test"]
    for key in ("HR@10", "NDCG@10", "MRR@10", "Recall@10", "Coverage@10"):
        assert out[key] == pytest.approx(stored[key], abs=1e-12)
    assert out["protocol"]["mask_seen"] is True and out["protocol"]["users"] == 120
    valid = run_json(capsys, ["evaluate", str(artifact), "--split", "valid", "--json"])
    assert valid["protocol"]["split"] == "valid"


def test_evaluate_json_stdout_is_pure_json_in_a_real_process(artifact):
    proc = subprocess.run([sys.executable, "-m", "seqrec", "evaluate", str(artifact), "--split",
                           "test", "--json"], capture_output=True, text=True, check=True)
    assert "NDCG@10" in json.loads(proc.stdout)


def test_ranks_export(artifact, tmp_path, capsys):
    for suffix in ("parquet", "csv"):
        path = tmp_path / f"ranks.{suffix}"
        assert main(["evaluate", str(artifact), "--split", "test", "--ranks", str(path)]) == 0
        df = pl.read_parquet(path) if suffix == "parquet" else pl.read_csv(path)
        assert df.columns == ["user_id", "target_item_id", "rank"] and df.height == 120
    hr10 = (df["rank"] <= 10).mean()
    stored = json.loads((artifact / "metrics.json").read_text())["test"]["HR@10"]
    assert hr10 == pytest.approx(stored)


def test_recommend_user_and_history(artifact, capsys):
    out = run_json(capsys, ["recommend", str(artifact), "--user", "1", "--k", "5", "--json"])
    assert out["user_id"] == 1 and len(out["items"]) == 5 and all(out["titles"])
    rec = Recommender.load(artifact)
    assert not set(out["items"]) & set(rec.user_history(1))  # history excluded by default
    capsys.readouterr()
    assert main(["recommend", str(artifact), "--history", "50,181,999999", "--k", "3", "--json"]) == 0
    cap = capsys.readouterr()
    res = json.loads(cap.out)
    assert res["unknown_items"] == ["999999"] and "999999" in cap.err
    assert 50 not in res["items"] and 181 not in res["items"]
    capsys.readouterr()
    assert main(["recommend", str(artifact), "--user", "1", "--k", "3"]) == 0
    assert "| rank | item_id" in capsys.readouterr().out


def test_recommend_batch_file(artifact, tmp_path, capsys):
    inp = tmp_path / "in.jsonl"
    inp.write_text('{"user_id": "a", "history": [1, 2, 3]}\n\n{"user_id": "b", "history": [50, "nope"]}\n'
                   '{"history": []}\n')
    outp = tmp_path / "out.jsonl"
    assert main(["recommend", str(artifact), "--input", str(inp), "--output", str(outp), "--k", "4"]) == 0
    rows = [json.loads(line) for line in outp.read_text().splitlines()]
    assert [r["user_id"] for r in rows] == ["a", "b", None]
    assert all(len(r["items"]) == 4 and len(r["scores"]) == 4 for r in rows)
    assert rows[1]["unknown_items"] == ["nope"] and "unknown_items" not in rows[0]
    assert not {1, 2, 3} & set(rows[0]["items"])
    assert "1 histories" in capsys.readouterr().err


def test_recommend_bad_input_names_the_line_and_writes_nothing(artifact, tmp_path, capsys):
    inp = tmp_path / "in.jsonl"
    inp.write_text('{"user_id": 1, "history": [1]}\n{"user_id": 2, "history": 5}\n')
    outp = tmp_path / "out.jsonl"
    assert main(["recommend", str(artifact), "--input", str(inp), "--output", str(outp)]) == 2
    err = capsys.readouterr().err
    assert f"{inp}, line 2" in err
    assert not outp.exists()
    assert main(["recommend", str(artifact), "--user", "424242"]) == 2
    assert "unknown user 424242" in capsys.readouterr().err


def test_recommend_agrees_with_the_evaluator(artifact):
    """The served top-k is exactly the evaluator's ranking: a target at evaluator rank r < k sits
    at position r of the recommend output for the same history, and nowhere otherwise."""
    rec = Recommender.load(artifact)
    art = rec.artifact
    split = make_split(art.seqs, art.run_config.data)
    res = evaluate(art.model, split, "test", art.run_config.eval)
    es = split.test
    seqs = art.seqs
    hists = [seqs.items_vocab.external(seqs.items[a:b]) for a, b in zip(es.hist_start, es.hist_end)]
    outs = rec.recommend_many(hists, k=10)
    for j, out in enumerate(outs):
        target = seqs.items_vocab.external([res.targets[j]])[0]
        r = res.ranks[j]
        if r < 10:
            assert out.items[int(r)] == target
        else:
            assert target not in out.items


def test_data_commands(data_dir, ml100k_slice, capsys):
    st = run_json(capsys, ["data", "stats", str(ml100k_slice), "--json"])
    assert st["users"] == 120 and st["timestamps"] is True and st["items_with_title"] > 1000
    capsys.readouterr()
    assert main(["data", "list", "--data-dir", str(data_dir)]) == 0
    out = capsys.readouterr().out
    assert "beauty" in out and "ml-1m" in out
    assert main(["data", "verify", "beauty", "--data-dir", str(data_dir)]) == 0


def test_train_from_toml_with_temporal_split(ml100k_slice, tmp_path, capsys):
    cfg = tmp_path / "run.toml"
    cfg.write_text(f'[data]\nname = "{ml100k_slice}"\nsplit = "temporal"\n'
                   '[model]\nname = "gru4rec"\nhidden_dim = 32\n[train]\nepochs = 1\n')
    out = tmp_path / "gru"
    assert main(["train", "--config", str(cfg), "--output", str(out), "--no-progress"]) == 0
    res = run_json(capsys, ["evaluate", str(out), "--split", "test", "--json"])
    assert res["protocol"]["split_rule"] == "temporal"
    assert res["protocol"]["targets"] > res["protocol"]["users"]  # several targets per user


def test_bad_config_and_data_errors(tmp_path, capsys):
    assert main(["train", "--data", "ml-100k", "--model", "sasrek", "--output", str(tmp_path / "x"),
                 "--data-dir", str(tmp_path)]) == 2
    assert "unknown model 'sasrek'" in capsys.readouterr().err
    bad = tmp_path / "e.csv"
    bad.write_text("user_id,item_id,timestamp\n1,2,3\n1,2\n")
    assert main(["train", "--data", str(bad), "--model", "pop", "--output", str(tmp_path / "y")]) == 2
    err = capsys.readouterr().err
    assert "line 3" in err and str(bad) in err
    assert not (tmp_path / "y").exists()


def test_quickstart_offline_without_data_says_what_to_put_where(tmp_path, monkeypatch, capsys):
    import urllib.request

    def offline(*a, **k):
        raise OSError("network is unreachable")

    monkeypatch.setattr(urllib.request, "urlopen", offline)  # simulate a machine without internet
    assert main(["quickstart", "--fast", "--data-dir", str(tmp_path), "--output", str(tmp_path / "q")]) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert str(tmp_path / "amazon_beauty" / "Beauty.txt") in err and "seqrec data download beauty" in err
    assert not (tmp_path / "amazon_beauty" / "Beauty.txt").exists()


def test_temporal_users_without_history_are_counted(ml100k_slice):
    from seqrec.config import DataConfig
    from seqrec.data import datasets
    from seqrec.data.preprocess import preprocess

    cfg = DataConfig(name=str(ml100k_slice), split="temporal")
    log, _, _ = datasets.load(cfg)
    sp = make_split(preprocess(log, cfg), cfg)
    assert sp.protocol["test_users"] == len(sp.test)
    assert np.all(sp.test.hist_end > sp.test.hist_start)


def test_set_reaches_sub_tables_and_names_bad_keys():
    from seqrec.cli.train import apply_overrides
    from seqrec.errors import ConfigError

    raw = {"model": {"name": "sasrec", "fusion": {"mode": "id"}}}
    apply_overrides(raw, ["model.fusion.init_std=0.02", "train.lr=0.002", "model.norm=post"])
    assert raw == {"model": {"name": "sasrec", "norm": "post",
                             "fusion": {"mode": "id", "init_std": 0.02}}, "train": {"lr": 0.002}}
    for bad in ["lr=0.1", "train.=1", "model..mode=id", "train.lr"]:
        with pytest.raises(ConfigError, match="SECTION.KEY=VALUE"):
            apply_overrides(raw, [bad])
    with pytest.raises(ConfigError, match="model.norm is a value, not a table"):
        apply_overrides(raw, ["model.norm.x=1"])
