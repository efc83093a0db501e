"""Peer comparison, side by side in one run: RecBole 1.2.1's SASRec against seqrec's SASRec (or
another seqrec model, ``--seqrec-set model.name=hstu``: the table then names it).

Same data, same split, same machine, same full-ranking protocol. For each dataset the script

1. builds the data with seqrec (``seqrec.pipeline.prepare``, leave-one-out) and writes it as RecBole
   atomic files whose timestamp is each event's *position* in seqrec's time-ordered sequence, so
   RecBole's time-ordered leave-one-out is exactly seqrec's split (checked target by target);
2. trains RecBole's SASRec (RecBole's defaults: CE loss, 2 layers, 2 heads, hidden 64, dropout 0.5,
   max length 50, Adam 1e-3, batch 256, early stop 10) in its own virtualenv, in a subprocess,
   "as shipped" (autograd anomaly detection on, as importing RecBole's models leaves it) and/or with
   anomaly detection switched off;
3. trains seqrec's model with ``seqrec.pipeline.run``, selecting on *unmasked* validation NDCG@10
   (RecBole's protocol: items already in the history stay in the ranking; ``--seqrec-select
   masked`` for seqrec's own), scores every validation the other way too, and evaluates its test
   split both unmasked and masked (seqrec's default);
4. prints per dataset NDCG@10, HR@10, seconds per epoch and the wall time to reach RecBole's best
   validation NDCG@10, unmasked (RecBole's selection) and masked (the driver scores RecBole's
   every validation masked too), with the ratios, and writes ``peer_recbole_<dataset>.json`` and
   ``peer_recbole.md`` into ``--results-dir`` (``benchmarks/results``).

RecBole is a benchmark dependency only: it lives in ``benchmarks/.venv-recbole`` and seqrec never
imports it. The venv is created on first use (``pip install torch==2.13.0``, then ``recbole==1.2.1``,
then ``"numpy<2" "pandas<3"``, because RecBole 1.2.1 uses ``np.float_``).

    python benchmarks/peer_recbole.py --data-dir /work/shared/data            # the full comparison
    python benchmarks/peer_recbole.py --datasets ml-100k --modes no-anomaly \\
        --recbole-max-minutes 1 --seqrec-max-minutes 1                       # a smoke run
    python benchmarks/peer_recbole.py --datasets beauty --check-split-only   # data + split check

Per-epoch times are not comparable between the two (RecBole trains on every prefix of every history
as its own sample; seqrec encodes each user's training sequence once per epoch): the fair figure is
the wall time to a given validation NDCG@10, measured from model construction to the end of the
validation pass of the epoch that first reaches it (data preparation excluded on both sides).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import torch

from seqrec.cli.quickstart import quickstart_config
from seqrec.cli.train import apply_overrides
from seqrec.config import DataConfig, EvalConfig, RunConfig, load_run_config
from seqrec.data.batching import scored_pairs, training_windows
from seqrec.data.datasets import default_data_dir
from seqrec.data.preprocess import Sequences
from seqrec.data.split import Split
from seqrec.errors import ConfigError, SeqrecError
from seqrec.evaluate.protocol import evaluate
from seqrec.fsutil import atomic_write_text
from seqrec.models.base import SequenceModel
from seqrec.pipeline import Prepared, prepare, run
from seqrec.train.loop import resolve_device
from seqrec.train.speed import processor_name

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
DRIVER = HERE / "peer" / "recbole_driver.py"
RECBOLE_CONFIG = HERE / "peer" / "recbole_sasrec.yaml"
DEFAULT_VENV = HERE / ".venv-recbole"
DEFAULT_WORK = HERE / ".peer-recbole-work"

INSTALL_STEPS: list[tuple[str, list[str]]] = [
    ("CPU PyTorch first, so resolving RecBole's torch>=1.10 does not fetch a CUDA build",
     ["torch==2.13.0"]),
    ("RecBole itself (pulls numpy 2 / pandas 3, rolled back next)", ["recbole==1.2.1"]),
    ("RecBole 1.2.1 uses np.float_ (gone in numpy 2); pandas 3 needs numpy 2",
     ["numpy<2", "pandas<3"]),
]
"""What the RecBole virtualenv gets, in this order (one ``pip install`` per step)."""

RECBOLE_NAMES = {"ml-100k": "seqrec_ml100k", "beauty": "seqrec_beauty"}
"""RecBole dataset names. RecBole 1.2.1 reads its bundled copy for the name ``ml-100k`` whatever
``data_path`` says, so our files get names of their own."""

MODES = {"shipped": "RecBole (as shipped)", "no-anomaly": "RecBole (anomaly off)"}


class PeerError(RuntimeError):
    """A step of the comparison failed; the message says which and what to do."""


# ----------------------------------------------------------------------------------------------
# the RecBole virtualenv


def venv_python(venv: Path) -> Path:
    """The interpreter of virtualenv ``venv``."""
    return venv / "bin" / "python"


def _pip(python: Path, packages: list[str], why: str) -> None:
    """``python -m pip install packages``, printing what is installed and why."""
    print(f"[install] pip install {' '.join(repr(p) if '<' in p else p for p in packages)}   # {why}",
          flush=True)
    proc = subprocess.run([str(python), "-m", "pip", "install", *packages], text=True,
                          capture_output=True)
    if proc.returncode != 0:
        raise PeerError(f"pip install {' '.join(packages)} failed in {python.parent.parent} "
                        f"(exit {proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    for line in proc.stdout.splitlines():
        if line.startswith("Successfully installed"):
            print(f"[install]   {line}", flush=True)


def venv_versions(python: Path) -> dict[str, str]:
    """Versions of the packages that matter, as the venv's interpreter reports them."""
    code = ("import json, importlib.metadata as m\n"
            "out = {}\n"
            "for p in ('recbole', 'torch', 'numpy', 'pandas', 'scipy'):\n"
            "    try: out[p] = m.version(p)\n"
            "    except m.PackageNotFoundError: out[p] = None\n"
            "print(json.dumps(out))")
    proc = subprocess.run([str(python), "-c", code], text=True, capture_output=True)
    if proc.returncode != 0:
        raise PeerError(f"cannot run {python}: {proc.stderr.strip()}")
    return json.loads(proc.stdout)


def venv_ready(python: Path) -> bool:
    """True when the venv has recbole 1.2.1, torch 2.13.0 and numpy < 2."""
    if not python.exists():
        return False
    v = venv_versions(python)
    return (v.get("recbole") == "1.2.1" and (v.get("torch") or "").startswith("2.13.0")
            and (v.get("numpy") or "9").split(".")[0] == "1")


def ensure_venv(venv: Path, skip_install: bool) -> Path:
    """Create (or reuse) the RecBole virtualenv; returns its python. Prints what it installs."""
    python = venv_python(venv)
    if venv_ready(python):
        print(f"[install] reusing {venv}: {venv_versions(python)}", flush=True)
        return python
    if skip_install:
        raise PeerError(f"--skip-install, but {venv} has no working RecBole 1.2.1 (needs recbole "
                        "1.2.1, torch 2.13.0, numpy<2); run once without --skip-install")
    if not python.exists():
        print(f"[install] creating virtualenv {venv} with {sys.executable}", flush=True)
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    for why, packages in INSTALL_STEPS:
        _pip(python, packages, why)
    check = subprocess.run([str(python), "-m", "pip", "check"], text=True, capture_output=True)
    print(f"[install] pip check: {check.stdout.strip() or check.stderr.strip()}", flush=True)
    if not venv_ready(python):
        raise PeerError(f"{venv} still lacks a working RecBole after installing: {venv_versions(python)}")
    print(f"[install] done: {venv_versions(python)}", flush=True)
    return python


# ----------------------------------------------------------------------------------------------
# the data: seqrec's split, written as RecBole atomic files


def seqrec_config(dataset: str, max_minutes: float, sets: list[str], select: str = "unmasked",
                  base_file: Path | None = None) -> RunConfig:
    """seqrec's SASRec as the quickstart trains it (d 64, 2 blocks, library defaults, max_len 50),
    or the model and training settings of ``base_file`` (a frozen config), selecting on *unmasked*
    validation NDCG@10 (RecBole's protocol; ``select="masked"``: seqrec's own) and testing the
    selected model itself (no refit: RecBole trains on the training part only), then
    ``--seqrec-set``."""
    base = quickstart_config(fast=False) if base_file is None else load_run_config(base_file)
    cfg = dataclasses.replace(
        base,
        data=DataConfig(name=dataset, split="leave-one-out"),
        model=(dict(base.model) if base_file is not None
               else {"name": "sasrec", "d_model": 64, "n_blocks": 2, "max_len": 50}),
        train=dataclasses.replace(base.train, max_minutes=max_minutes, refit=False),
        eval=EvalConfig(mask_seen=select == "masked"),
    )
    raw = cfg.to_dict()
    for item in sets:
        if item.partition(".")[0].strip() not in raw:
            raise PeerError(f"--seqrec-set expects SECTION.KEY=VALUE with SECTION one of "
                            f"{', '.join(raw)}; got {item!r}")
    try:
        apply_overrides(raw, sets)
    except ConfigError as e:
        raise PeerError(str(e)) from None
    cfg = RunConfig.from_dict(raw)
    if cfg.data.split != "leave-one-out":
        raise PeerError("the comparison needs data.split = leave-one-out (RecBole's LS split)")
    if cfg.model.get("name") != "sasrec":
        print(f"note: comparing RecBole's SASRec with seqrec's {cfg.model.get('name')}", flush=True)
    return cfg


def write_atomic_inter(seqs: Sequences, folder: Path, name: str) -> Path:
    """``folder/name/name.inter`` from seqrec's preprocessed sequences, in seqrec's time order.

    The timestamp column is each event's position in its user's sequence (0, 1, 2, ...), so
    RecBole's time-ordered leave-one-out sees exactly seqrec's order, ties of the source included.
    """
    lengths = seqs.lengths
    users = np.repeat(np.asarray(seqs.users.ids, dtype=object), lengths)
    items = np.asarray(seqs.items_vocab.ids, dtype=object)[seqs.items - 1]
    pos = np.arange(seqs.n_events) - np.repeat(seqs.offsets[:-1], lengths)
    lines = ["user_id:token\titem_id:token\ttimestamp:float"]
    for u, i, t in zip(users.tolist(), items.tolist(), pos.tolist()):
        lines.append(f"{_token(u)}\t{_token(i)}\t{t}")
    path = folder / name / f"{name}.inter"
    atomic_write_text(path, "\n".join(lines) + "\n")
    return path


def _token(value: Any) -> str:
    text = str(value)
    if not text or any(c in text for c in "\t\n\r"):
        raise PeerError(f"id {value!r} cannot be written as a RecBole token (empty, tab or newline)")
    return text


def seqrec_split_view(split: Split, max_len: int, windows: str = "all", stride: int = 0
                      ) -> dict[str, Any]:
    """seqrec's split in the shape of the driver's dump: counts and per-user (target, input length)."""
    seqs = split.seqs
    train_len = split.train_end - split.train_start
    w = training_windows(split.train_start, split.train_end, max_len, windows, stride)
    out: dict[str, Any] = {
        "n_users": seqs.n_users, "n_items": seqs.n_items, "n_events": seqs.n_events,
        "n_train_sequences": int(np.maximum(train_len - 1, 0).sum()),
        "train_positions_per_epoch": scored_pairs(*w, max_len),
    }
    for which in ("valid", "test"):
        es = split.eval_set(which)
        users = [str(seqs.users.ids[u]) for u in es.users]
        targets = [str(seqs.items_vocab.ids[i - 1]) for i in seqs.items[es.tgt_start]]
        lengths = np.minimum(es.hist_end - es.hist_start, max_len).tolist()
        out[which] = {u: [t, int(n)] for u, t, n in zip(users, targets, lengths)}
    return out


def check_split(ours: dict[str, Any], theirs: dict[str, Any]) -> dict[str, Any]:
    """Compare seqrec's split with RecBole's: counts, and every evaluated user's target and input."""
    report: dict[str, Any] = {}
    for key in ("n_users", "n_items", "n_train_sequences"):
        report[key] = {"seqrec": ours[key], "recbole": theirs[key], "equal": ours[key] == theirs[key]}
    for which in ("valid", "test"):
        a, b = ours[which], theirs[which]
        missing = sorted(set(a) - set(b))
        extra = sorted(set(b) - set(a))
        differ = [u for u in a if u in b and a[u] != b[u]]
        report[which] = {
            "users_seqrec": len(a), "users_recbole": len(b), "users_equal": len(a) == len(b),
            "only_in_seqrec": len(missing), "only_in_recbole": len(extra),
            "target_or_input_length_differs": len(differ),
            "examples": [{"user": u, "seqrec": a[u], "recbole": b[u]} for u in differ[:5]],
        }
    report["identical"] = all(report[k]["equal"] for k in ("n_users", "n_items", "n_train_sequences")) \
        and all(report[w]["users_equal"] and not report[w]["only_in_seqrec"]
                and not report[w]["only_in_recbole"] and not report[w]["target_or_input_length_differs"]
                for w in ("valid", "test"))
    return report


def print_split_check(dataset: str, rep: dict[str, Any]) -> None:
    """One block of lines: do the two splits agree?"""
    print(f"[split {dataset}] users {rep['n_users']['seqrec']:,} (RecBole {rep['n_users']['recbole']:,}), "
          f"items {rep['n_items']['seqrec']:,} (RecBole {rep['n_items']['recbole']:,}), training "
          f"sequences {rep['n_train_sequences']['seqrec']:,} (RecBole {rep['n_train_sequences']['recbole']:,})",
          flush=True)
    for w in ("valid", "test"):
        r = rep[w]
        print(f"[split {dataset}] {w}: {r['users_seqrec']:,} users evaluated (RecBole {r['users_recbole']:,}); "
              f"only in seqrec {r['only_in_seqrec']}, only in RecBole {r['only_in_recbole']}, "
              f"different target or input length {r['target_or_input_length_differs']}", flush=True)
        for ex in r["examples"]:
            print(f"[split {dataset}]   e.g. user {ex['user']}: seqrec (target, input length) "
                  f"{ex['seqrec']}, RecBole {ex['recbole']}", flush=True)
    verdict = "IDENTICAL" if rep["identical"] else "DIFFERENT (see above; comparisons are not like for like)"
    print(f"[split {dataset}] the two splits are {verdict}", flush=True)


# ----------------------------------------------------------------------------------------------
# RecBole runs (subprocess in the venv)


def run_recbole(python: Path, data_path: Path, name: str, mode: str, max_minutes: float,
                sets: list[str], workdir: Path, split_only: bool = False) -> tuple[dict[str, Any], dict[str, Any]]:
    """Run the driver for one mode; returns its result and its split dump. Its output goes to
    ``workdir/driver.log`` (progress lines are echoed)."""
    workdir.mkdir(parents=True, exist_ok=True)
    out, split_out, log_path = workdir / "result.json", workdir / "split.json", workdir / "driver.log"
    for f in (out, split_out):
        f.unlink(missing_ok=True)
    cmd = [str(python), str(DRIVER), "--data-path", str(data_path), "--dataset", name,
           "--config", str(RECBOLE_CONFIG), "--mode", mode, "--max-minutes", str(max_minutes),
           "--out", str(out), "--split-out", str(split_out)]
    cmd += [a for s in sets for a in ("--set", s)]
    if split_only:
        cmd.append("--split-only")
    env = {**os.environ, "TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD": "1", "PYTHONUNBUFFERED": "1"}
    env.pop("PYTHONPATH", None)
    tag = f"[recbole {name} {mode}]"
    with open(log_path, "w", encoding="utf-8") as log, subprocess.Popen(
            cmd, cwd=workdir, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) as proc:
        assert proc.stdout is not None
        for line in proc.stdout:
            log.write(line)
            if line.startswith("[driver]"):
                print(f"{tag} {line[len('[driver]'):].strip()}", flush=True)
        rc = proc.wait()
    if rc != 0 or not out.exists():
        tail = "".join(log_path.read_text(encoding="utf-8", errors="replace").splitlines(True)[-30:])
        raise PeerError(f"RecBole ({mode}) failed with exit code {rc}; full log: {log_path}\n{tail}")
    return json.loads(out.read_text()), json.loads(split_out.read_text())


# ----------------------------------------------------------------------------------------------
# the seqrec run


@contextmanager
def capture_model(box: list[SequenceModel]) -> Iterator[None]:
    """Keep the model that ``seqrec.pipeline.run`` builds, so the per-epoch callback can also score
    it masked (``run``'s ``on_epoch`` receives the epoch record only)."""
    import seqrec.pipeline as pipeline

    original = getattr(pipeline, "build_model", None)
    if original is None:
        raise PeerError("seqrec.pipeline no longer calls build_model: update capture_model()")

    def building(*args: Any, **kwargs: Any) -> SequenceModel:
        model = original(*args, **kwargs)
        box.append(model)
        return model

    pipeline.build_model = building
    try:
        yield
    finally:
        pipeline.build_model = original


def run_seqrec(cfg: RunConfig, prepared: Prepared) -> dict[str, Any]:
    """Train with ``seqrec.pipeline.run`` (selection on validation NDCG@10, unmasked unless
    ``cfg.eval.mask_seen``), timing every epoch from model construction; score each epoch's
    validation the other way too (its time is excluded from the wall clock) and the final
    model's test split both ways."""
    split = prepared.split
    masked = dataclasses.replace(cfg.eval, mask_seen=True)
    unmasked = dataclasses.replace(cfg.eval, mask_seen=False)
    sel_key, other_key, other = (("valid_masked", "valid_unmasked", unmasked) if cfg.eval.mask_seen
                                 else ("valid_unmasked", "valid_masked", masked))
    box: list[SequenceModel] = []
    epochs: list[dict[str, Any]] = []
    extra = [0.0]  # seconds spent in the other protocol's validation passes, off the wall clock
    t0 = time.perf_counter()

    def on_epoch(rec: dict[str, Any]) -> None:
        wall = time.perf_counter() - t0 - extra[0]
        valid = rec.get("valid") or {}
        row = {"epoch": rec["epoch"], "loss": rec.get("loss"), "train_s": rec.get("train_seconds"),
               "valid_s": rec.get("eval_seconds"), "wall_s": wall,
               sel_key: {k: valid[k] for k in ("NDCG@10", "HR@10", "MRR@10") if k in valid}}
        if box and valid:
            t = time.perf_counter()
            m = evaluate(box[-1], split, "valid", other, device=resolve_device(cfg.train.device)).metrics
            box[-1].train()
            extra[0] += time.perf_counter() - t
            row[other_key] = {k: m[k] for k in ("NDCG@10", "HR@10", "MRR@10")}
        epochs.append(row)
        print(f"[seqrec {prepared.name}] epoch {row['epoch']} trained in {row['train_s']:.1f} s, valid "
              f"NDCG@10 {row.get('valid_unmasked', {}).get('NDCG@10', float('nan')):.4f} unmasked / "
              f"{row.get('valid_masked', {}).get('NDCG@10', float('nan')):.4f} masked at "
              f"{wall:.1f} s", flush=True)

    with capture_model(box):
        res = run(cfg, None, prepared=prepared, progress=False, on_epoch=on_epoch)
    total = time.perf_counter() - t0 - extra[0]
    device = resolve_device(cfg.train.device)
    test_unmasked = evaluate(res.model, split, "test", unmasked, device=device)
    test_masked = evaluate(res.model, split, "test", masked, device=device)
    best = next((e for e in epochs if e["epoch"] == res.train.best_epoch), None)
    return {
        "config": cfg.to_dict(),
        "n_params": int(sum(p.numel() for p in res.model.parameters())),
        "epochs": epochs, "epochs_run": len(epochs), "best_epoch": res.train.best_epoch,
        "best_valid_ndcg10": best.get("valid_unmasked", {}).get("NDCG@10") if best else None,
        "best_valid_masked_ndcg10": best.get("valid_masked", {}).get("NDCG@10") if best else None,
        "stop_reason": res.train.stop_reason, "total_wall_s": total,
        "other_valid_s_excluded": extra[0],
        "selection": f"validation {cfg.train.select_metric}, mask_seen={cfg.eval.mask_seen}",
        "test_unmasked": test_unmasked.metrics, "test_masked": test_masked.metrics,
        "test_protocol_unmasked": test_unmasked.protocol, "test_protocol_masked": test_masked.protocol,
        "torch_threads": torch.get_num_threads(),
    }


# ----------------------------------------------------------------------------------------------
# comparison, table, files


def reached(value: float, target: float) -> bool:
    """seqrec's validation NDCG@10 reaches RecBole's best. RecBole rounds its validation metrics to 4
    decimals, so seqrec's value is compared at that precision too."""
    return round(value, 4) >= target


def time_to(epochs: list[dict[str, Any]], target: float, key: str = "valid_unmasked"
            ) -> tuple[float | None, int | None]:
    """Wall seconds (and epoch) at which seqrec's validation NDCG@10 (``key``: unmasked or masked)
    first reaches ``target``."""
    for e in epochs:
        v = e.get(key, {}).get("NDCG@10")
        if v is not None and reached(v, target):
            return e["wall_s"], e["epoch"]
    return None, None


def crossing(target: float | None, recbole_s: float | None, recbole_epoch: int | None,
             seqrec: dict[str, Any] | None, scoring: str, recbole_test: float) -> dict[str, Any]:
    """Time-to-quality under one ``scoring`` (``unmasked`` or ``masked``): when seqrec's validation
    first reaches RecBole's best ``target``, the ratio of the two times, and whether the target is
    met (at most 1/10 of RecBole's time, and a higher test NDCG@10 than ``recbole_test``)."""
    row: dict[str, Any] = {"target_valid_ndcg10": target, "recbole_s": recbole_s,
                           "recbole_epoch": recbole_epoch}
    if seqrec is not None and target is not None:
        sq_t, sq_ep = time_to(seqrec["epochs"], target, f"valid_{scoring}")
        ratio = recbole_s / sq_t if sq_t and recbole_s else None
        higher = seqrec[f"test_{scoring}"]["NDCG@10"] > recbole_test
        row.update(seqrec_s=sq_t, seqrec_epoch=sq_ep, ratio=ratio, seqrec_test_higher=higher,
                   target_met=bool(ratio is not None and ratio >= 10 and higher))
    return row


def compare(recbole: dict[str, dict[str, Any]], seqrec: dict[str, Any] | None) -> dict[str, Any]:
    """Per RecBole mode: :func:`crossing` against its best unmasked validation (its own selection),
    and, where the driver scored it, against its best masked validation with the masked test of
    its selected checkpoint (under ``masked``)."""
    out: dict[str, Any] = {}
    for mode, r in recbole.items():
        row = crossing(r.get("best_valid_ndcg10"), r.get("best_wall_s"), r.get("first_best_epoch"),
                       seqrec, "unmasked", r["test"]["ndcg@10"])
        own = r.get("test_own", {}).get("masked", {})
        if seqrec is not None and r.get("best_valid_masked_ndcg10") is not None and own:
            row["masked"] = crossing(r["best_valid_masked_ndcg10"], r.get("best_masked_wall_s"),
                                     r.get("best_masked_epoch"), seqrec, "masked", own["ndcg@10"])
        out[mode] = row
    return out


def _f(v: float | None, fmt: str = ".4f") -> str:
    return "n/a" if v is None else format(v, fmt)


def _median(values: list[float]) -> float | None:
    return statistics.median(values) if values else None


def markdown(result: dict[str, Any]) -> str:
    """The table and notes for one dataset's result."""
    ds, rec, sq, cmp_ = result["dataset"], result.get("recbole", {}), result.get("seqrec"), result.get("comparison", {})
    cols = ["system", "test NDCG@10", "test HR@10", "test NDCG@10 / HR@10 masked", "best valid NDCG@10",
            "best epoch / epochs", "s/epoch (median)", "s to RecBole's best valid NDCG@10",
            "RecBole ÷ seqrec time", "total wall s", "stopped by"]
    lines = [f"### {ds}", "", "| " + " | ".join(cols) + " |", "|" + "|".join("---" for _ in cols) + "|"]
    for mode, r in rec.items():
        own = r.get("test_own", {}).get("masked", {})
        c = cmp_.get(mode, {})
        lines.append("| " + " | ".join([
            MODES[mode], _f(r["test"].get("ndcg@10")), _f(r["test"].get("hit@10")),
            f"{_f(own.get('ndcg@10'))} / {_f(own.get('hit@10'))}", _f(r.get("best_valid_ndcg10")),
            f"{r.get('best_epoch')} / {r.get('epochs_run')}",
            _f(_median([e["train_s"] for e in r["epochs"]]), ".1f"),
            f"{_f(r.get('best_wall_s'), '.1f')} (epoch {r.get('first_best_epoch')})",
            "not reached" if sq is not None and c.get("seqrec_s") is None else
            (f"{c['ratio']:.1f}x" if c.get("ratio") else "n/a"),
            _f(r.get("total_wall_s"), ".0f"), r.get("stop_reason", "")]) + " |")
    if sq is not None:
        tt = []
        for mode in rec:
            c = cmp_.get(mode, {})
            when = "not reached" if c.get("seqrec_s") is None else f"{c['seqrec_s']:.1f} (epoch {c['seqrec_epoch']})"
            tt.append(f"{MODES[mode].split('(')[1].rstrip(')')}: {when}")
        lines.append("| " + " | ".join([
            f"seqrec ({sq['config']['model'].get('name', 'sasrec')})",
            _f(sq["test_unmasked"]["NDCG@10"]), _f(sq["test_unmasked"]["HR@10"]),
            f"{_f(sq['test_masked']['NDCG@10'])} / {_f(sq['test_masked']['HR@10'])}",
            _f(sq.get("best_valid_ndcg10")), f"{sq['best_epoch']} / {sq['epochs_run']}",
            _f(_median([e["train_s"] for e in sq["epochs"] if e.get("train_s") is not None]), ".1f"),
            "; ".join(tt) or "n/a", "", _f(sq["total_wall_s"], ".0f"), sq["stop_reason"]]) + " |")
    lines += ["", *notes(result)]
    return "\n".join(lines)


def notes(result: dict[str, Any]) -> list[str]:
    """What a reader of the table must know, all from the measured result."""
    rec, sq, cmp_, sp = result.get("recbole", {}), result.get("seqrec"), result.get("comparison", {}), \
        result.get("split_check", {})
    out = []
    if sp:
        v = sp["valid"]
        out.append(f"- Split: seqrec's leave-one-out, written for RecBole with each event's position as "
                   f"its timestamp; {sp['n_users']['seqrec']:,} users, {sp['n_items']['seqrec']:,} items, "
                   f"{v['users_seqrec']:,} users evaluated, {sp['n_train_sequences']['seqrec']:,} training "
                   f"(context, next item) pairs; RecBole's split is "
                   f"{'identical, target by target' if sp['identical'] else 'DIFFERENT (see JSON split_check)'}.")
    masked_sel = bool(sq and sq["config"]["eval"].get("mask_seen"))
    out.append("- Test NDCG@10 / HR@10: RecBole's protocol, full ranking, items already in the history "
               "NOT masked (RecBole does not mask them for sequential models); seqrec selected its epoch on "
               + ("its own masked validation NDCG@10 (`--seqrec-select masked`)" if masked_sel else
                  "the same unmasked validation NDCG@10")
               + ". The masked column (seqrec's default: history items "
               "removed, a target in the history is a miss) is seqrec's evaluator for seqrec and our own "
               "recomputation from the same checkpoint's scores for RecBole.")
    for mode, r in rec.items():
        own = r.get("test_own", {}).get("unmasked", {})
        if own:
            out.append(f"- {MODES[mode]}: our unmasked recomputation of its test NDCG@10 gives "
                       f"{own['ndcg@10']:.4f} (RecBole's own: {r['test']['ndcg@10']:.4f}); anomaly "
                       f"detection during training: {'on' if r['anomaly_detection']['during_training'] else 'off'}; "
                       f"{r['torch_threads']} torch threads.")
        if r.get("stopped_by_wall_cap"):
            out.append(f"- {MODES[mode]} was stopped by the {r['max_minutes']:g}-minute wall-time cap after "
                       f"epoch {r['epochs_run']} (of up to {r['settings']['epochs']}; early stop "
                       f"{r['settings']['stopping_step']}); its best checkpoint so far (epoch {r['best_epoch']}) "
                       "was tested, as RecBole does after early stopping: its numbers are lower bounds of "
                       "converged RecBole and its best validation NDCG@10 is the target seqrec had to reach.")
    if rec and sq is not None:
        r0 = next(iter(rec.values()))
        per_epoch = result.get("split_check", {}).get("seqrec_train_positions_per_epoch")
        length = sq["config"]["model"].get("max_len")
        stride = sq["config"]["train"].get("window_stride") or 0
        cut = (f"windows of {length} events" if not stride or stride >= length else
               f"windows of {length} events starting every {stride} events (each target with at "
               f"least {length - stride} events of context when the history has them)")
        out.append(f"- Per-epoch work differs, so s/epoch is not comparable: RecBole trains "
                   f"{r0['n_train_sequences']:,} prefix samples per epoch, each re-encoded and scored at "
                   f"its last position; seqrec cuts each user's training sequence into {cut}, "
                   f"encodes each window once and scores its positions not scored by an earlier "
                   f"window ({per_epoch if per_epoch is None else f'{per_epoch:,}'} "
                   "scored positions per epoch, each target once, with the events before it in its "
                   "window as context). The fair figure is wall "
                   "time to a validation NDCG@10, counted from model construction to the end of the "
                   "validation pass that first reaches it (data preparation excluded on both sides; "
                   "seqrec's extra validation passes in the protocol it does not select on excluded too).")
        out.append("- Total wall s: model construction to the end of the test pass, on each side.")
        out.append("- seqrec reaches RecBole's best when its validation NDCG@10, rounded to 4 decimals as "
                   "RecBole rounds its own, is at least as high.")
        for mode, c in cmp_.items():
            if "target_met" in c:
                out.append(f"- Target vs {MODES[mode]} (seqrec reaches its best validation NDCG@10 in at most "
                           f"1/10 of its wall time and ends with a higher test NDCG@10): "
                           f"{'MET' if c['target_met'] else 'NOT MET'} (time ratio "
                           f"{'not reached' if c.get('ratio') is None else format(c['ratio'], '.1f') + 'x'}, "
                           f"seqrec test NDCG@10 higher: {'yes' if c['seqrec_test_higher'] else 'no'}).")
            if "masked" in c:
                m = c["masked"]
                when = ("not reached" if m["seqrec_s"] is None
                        else f"at {m['seqrec_s']:.1f} s (epoch {m['seqrec_epoch']})")
                out.append(f"- The same with history items masked on both sides vs {MODES[mode]}: its best "
                           f"masked validation NDCG@10 {m['target_valid_ndcg10']:.4f} at "
                           f"{_f(m['recbole_s'], '.1f')} s (epoch {m['recbole_epoch']}; our "
                           f"recomputation each epoch, its seconds off the clock); seqrec {when}; "
                           f"{'MET' if m['target_met'] else 'NOT MET'} (time ratio "
                           f"{'not reached' if m['ratio'] is None else format(m['ratio'], '.1f') + 'x'}, "
                           f"seqrec masked test NDCG@10 higher than RecBole's selected checkpoint's: "
                           f"{'yes' if m['seqrec_test_higher'] else 'no'}).")
    if sq is not None:
        name = sq["config"]["model"].get("name", "sasrec")
        if name != "sasrec":
            out.append(f"- seqrec's model here is its {name}, not SASRec: this compares the "
                       "model seqrec would pick for the task with RecBole's SASRec."
                       + (" HSTU also reads the gaps between events' timestamps where the data has "
                          "them (ML-100K does); RecBole's SASRec uses only their order."
                          if name == "hstu" else ""))
        tr = sq["config"]["train"]
        keys = ("batch_size", "lr", "lr_schedule", "epochs", "patience", "max_minutes", "loss",
                "window_stride", "emb_weight_decay", "precision", "eval_every", "seed")
        out.append(f"- seqrec settings: model {json.dumps(sq['config']['model'])}, train "
                   f"{json.dumps({k: tr[k] for k in keys if k in tr})}.")
        if tr.get("eval_every", 1) > 1:
            out.append(f"- seqrec validates every {tr['eval_every']} epochs and after the last "
                       "(RecBole after every epoch, as shipped): less validation time, and a "
                       "crossing of RecBole's best is seen only at a validated epoch (up to "
                       f"{tr['eval_every'] - 1} epoch(s) late), never early.")
    m = result.get("machine", {})
    if m:
        out.append(f"- Machine: {m.get('cpus')} CPUs, {m.get('platform')}, load average at start "
                   f"{m.get('loadavg_start')}, at end {m.get('loadavg_end')} (other processes slow both sides).")
    return out


def machine() -> dict[str, Any]:
    return {"python": platform.python_version(), "torch": torch.__version__,
            "torch_threads": torch.get_num_threads(), "cpus": os.cpu_count(),
            "platform": platform.platform(), "processor": processor_name(),
            "loadavg_start": [round(x, 2) for x in os.getloadavg()]}


def save(result: dict[str, Any], results_dir: Path) -> None:
    """Write this dataset's JSON, then the Markdown file from every dataset's JSON present."""
    result["machine"]["loadavg_end"] = [round(x, 2) for x in os.getloadavg()]
    atomic_write_text(results_dir / f"peer_recbole_{result['dataset']}.json",
                      json.dumps(result, indent=1, default=str))
    write_markdown(results_dir)


def write_markdown(results_dir: Path) -> None:
    """``peer_recbole.md`` from every dataset's JSON in ``results_dir``."""
    parts = ["# RecBole 1.2.1's SASRec vs seqrec, same split, same machine", "",
             "Written by `benchmarks/peer_recbole.py`; every number below is measured by it.", ""]
    for f in sorted(results_dir.glob("peer_recbole_*.json")):
        parts += [markdown(json.loads(f.read_text())), ""]
    atomic_write_text(results_dir / "peer_recbole.md", "\n".join(parts))


# ----------------------------------------------------------------------------------------------
# main


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--datasets", default="ml-100k,beauty",
                    help=f"comma-separated, of: {', '.join(RECBOLE_NAMES)}")
    ap.add_argument("--modes", default="shipped,no-anomaly",
                    help="RecBole modes, comma-separated: shipped (anomaly detection on, as RecBole "
                         "leaves it) and/or no-anomaly")
    ap.add_argument("--recbole-max-minutes", type=float, default=30.0,
                    help="wall-time cap per RecBole run: training stops at the end of the epoch that "
                         "passes it and the best checkpoint so far is tested (0 = none)")
    ap.add_argument("--seqrec-max-minutes", type=float, default=30.0,
                    help="wall-time cap for seqrec's training (early stopping usually ends it sooner)")
    ap.add_argument("--seqrec-select", choices=["unmasked", "masked"], default="unmasked",
                    help="the validation seqrec selects its epoch on: RecBole's protocol (unmasked, "
                         "the default) or seqrec's own (history items masked)")
    ap.add_argument("--seqrec-config", type=Path, default=None,
                    help="take seqrec's model and training settings from this TOML (e.g. a frozen "
                         "config) instead of the quickstart's; data, split, refit and the cap stay "
                         "the comparison's")
    ap.add_argument("--seqrec-set", action="append", default=[], metavar="SECTION.KEY=VALUE",
                    help="override seqrec's settings, e.g. --seqrec-set train.lr=0.001 (repeatable)")
    ap.add_argument("--recbole-set", action="append", default=[], metavar="KEY=VALUE",
                    help="override a RecBole setting, e.g. --recbole-set epochs=1 (repeatable)")
    ap.add_argument("--data-dir", type=Path, default=None,
                    help="seqrec's data folder (default: $SEQREC_DATA_DIR, else ~/.cache/seqrec/data)")
    ap.add_argument("--venv", type=Path, default=DEFAULT_VENV, help="RecBole's virtualenv")
    ap.add_argument("--skip-install", action="store_true",
                    help="use the venv as it is; fail if it lacks RecBole 1.2.1")
    ap.add_argument("--install-only", action="store_true", help="create the venv and stop")
    ap.add_argument("--check-split-only", action="store_true",
                    help="write the data, build RecBole's split, compare it with seqrec's, stop")
    ap.add_argument("--skip-seqrec", action="store_true", help="run the RecBole side only")
    ap.add_argument("--work-dir", type=Path, default=DEFAULT_WORK,
                    help="atomic files and RecBole's log/, log_tensorboard/, saved/ (git-ignored)")
    ap.add_argument("--results-dir", type=Path, default=RESULTS)
    args = ap.parse_args(argv)
    args.datasets = [d.strip() for d in args.datasets.split(",") if d.strip()]
    args.modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    for d in args.datasets:
        if d not in RECBOLE_NAMES:
            ap.error(f"unknown dataset {d!r}; choose from {', '.join(RECBOLE_NAMES)}")
    for m in args.modes:
        if m not in MODES:
            ap.error(f"unknown mode {m!r}; choose from {', '.join(MODES)}")
    return args


def run_dataset(dataset: str, args: argparse.Namespace, python: Path, data_dir: Path) -> dict[str, Any]:
    """Everything for one dataset; the JSON is rewritten after each stage."""
    cfg = seqrec_config(dataset, args.seqrec_max_minutes, args.seqrec_set, args.seqrec_select,
                        args.seqrec_config)
    prepared = prepare(cfg, data_dir)
    seqs = prepared.split.seqs
    name = RECBOLE_NAMES[dataset]
    work = args.work_dir.resolve() / dataset
    inter = write_atomic_inter(seqs, work / "data", name)
    print(f"[data {dataset}] {seqs.n_users:,} users, {seqs.n_items:,} items, {seqs.n_events:,} events "
          f"({prepared.seconds:.1f} s) -> {inter}", flush=True)
    result: dict[str, Any] = {"dataset": dataset, "recbole_dataset_name": name, "machine": machine(),
                              "argv": sys.argv[1:], "recbole": {}, "seqrec": None}
    ours = seqrec_split_view(prepared.split, int(cfg.model.get("max_len", 50)), cfg.train.windows,
                             cfg.train.window_stride)
    modes = args.modes or ["no-anomaly"]
    checked = False
    for mode in (modes[:1] if args.check_split_only else modes):
        res, dump = run_recbole(python, work / "data", name, mode, args.recbole_max_minutes,
                                args.recbole_set, work / f"recbole-{mode}", split_only=args.check_split_only)
        if not checked:
            rep = check_split(ours, dump)
            rep["seqrec_train_positions_per_epoch"] = ours["train_positions_per_epoch"]
            result["split_check"] = rep
            print_split_check(dataset, rep)
            checked = True
        if not args.check_split_only:
            result["recbole"][mode] = res
            save(result, args.results_dir)
    if args.check_split_only:
        return result
    if not args.skip_seqrec:
        print(f"[seqrec {dataset}] training {cfg.model.get('name')} (cap "
              f"{args.seqrec_max_minutes:g} min), selecting on {args.seqrec_select} validation "
              "NDCG@10", flush=True)
        result["seqrec"] = run_seqrec(cfg, prepared)
    result["comparison"] = compare(result["recbole"], result["seqrec"])
    save(result, args.results_dir)
    return result


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        python = ensure_venv(args.venv, args.skip_install)
        if args.install_only:
            return 0
        data_dir = (args.data_dir or default_data_dir()).expanduser()
        for dataset in args.datasets:
            result = run_dataset(dataset, args, python, data_dir)
            if not args.check_split_only:
                print("\n" + markdown(result) + "\n", flush=True)
    except (PeerError, SeqrecError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    if not args.check_split_only:
        print(f"written: {args.results_dir / 'peer_recbole.md'} and "
              f"{', '.join(str(args.results_dir / f'peer_recbole_{d}.json') for d in args.datasets)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
