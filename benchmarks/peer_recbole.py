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

Files: this script (data and split check, both runs, the command line);
``benchmarks/peer/recbole_venv.py`` (RecBole's virtualenv); ``benchmarks/peer/report.py`` (time to
quality, the Markdown and JSON files); ``benchmarks/peer/recbole_driver.py`` (the RecBole side, run
in its venv). ``benchmarks/peer`` is imported as the package ``peer``: run as a script, this file
has ``benchmarks/`` first on ``sys.path``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
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

from peer import PeerError
from peer.recbole_venv import DEFAULT_VENV, ensure_venv
from peer.report import MODES, compare, markdown, save

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
DRIVER = HERE / "peer" / "recbole_driver.py"
RECBOLE_CONFIG = HERE / "peer" / "recbole_sasrec.yaml"
DEFAULT_WORK = HERE / ".peer-recbole-work"

RECBOLE_NAMES = {"ml-100k": "seqrec_ml100k", "beauty": "seqrec_beauty"}
"""RecBole dataset names. RecBole 1.2.1 reads its bundled copy for the name ``ml-100k`` whatever
``data_path`` says, so our files get names of their own."""


# ----------------------------------------------------------------------------------------------
# the data: seqrec's split, written as RecBole atomic files


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
        if rec.get("repeat_score") is not None:  # model.repeat_bias: the score learned so far
            row["repeat_score"] = rec["repeat_score"]
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
# main


def machine() -> dict[str, Any]:
    """The machine this run is on, and its load average at the start."""
    return {"python": platform.python_version(), "torch": torch.__version__,
            "torch_threads": torch.get_num_threads(), "cpus": os.cpu_count(),
            "platform": platform.platform(), "processor": processor_name(),
            "loadavg_start": [round(x, 2) for x in os.getloadavg()]}


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
