"""``seqrec quickstart [--fast] [--output DIR]``: Amazon Beauty, SASRec vs. popularity, one table."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from seqrec.cli.common import add_data_dir, data_dir, table
from seqrec.cli.train import _epoch_line, print_next_steps
from seqrec.config import DataConfig, RunConfig, TrainConfig
from seqrec.data import datasets
from seqrec.errors import DataError

DATASET = "beauty"


def quickstart_config(fast: bool) -> RunConfig:
    """SASRec defaults tuned on Beauty's validation split; ``fast`` caps training at ~1 minute.

    The full run selects the epoch on validation within 4 minutes, then refits: a fresh model
    trained that many epochs on every event before the test targets (what a deployed model would
    be trained on) is the one tested and saved. ``fast`` skips the refit."""
    if fast:  # a higher rate and larger batches get furthest in the minute
        train = TrainConfig(epochs=200, batch_size=256, lr=3e-3, patience=3, max_minutes=0.75)
    else:
        train = TrainConfig(epochs=200, batch_size=128, lr=1e-3, patience=4, max_minutes=4.0,
                            refit=True)
    return RunConfig(data=DataConfig(name=DATASET), model={"name": "sasrec"}, train=train)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("quickstart", help="train SASRec on Amazon Beauty and compare with popularity")
    p.add_argument("--fast", action="store_true",
                   help="about one minute instead of about nine (no refit)")
    p.add_argument("--output", "-o", type=Path, default=Path("artifacts/quickstart-beauty"))
    p.add_argument("--no-progress", action="store_true")
    add_data_dir(p)
    p.set_defaults(func=cmd_quickstart)


def ensure_dataset(root: Path) -> None:
    spec = datasets.DATASETS[DATASET]
    if spec.available(root):
        return
    print(f"{DATASET} is not in {root}; trying to download it ...", file=sys.stderr)
    try:
        datasets.download(DATASET, root, timeout=15)
    except DataError:
        raise DataError(datasets.missing_message(spec, root)) from None


def cmd_quickstart(args: argparse.Namespace) -> int:
    from seqrec.pipeline import prepare, run

    root = data_dir(args)
    ensure_dataset(root)
    cfg = quickstart_config(args.fast)
    prepared = prepare(cfg, root)
    seqs = prepared.split.seqs
    print(f"Amazon Beauty: {seqs.n_users:,} users, {seqs.n_items:,} items, {seqs.n_events:,} "
          f"interactions; leave-one-out, full ranking over all items, seen items masked",
          file=sys.stderr)
    pop_cfg = RunConfig(data=cfg.data, model={"name": "pop"}, train=cfg.train, eval=cfg.eval)
    pop = run(pop_cfg, None, prepared=prepared, progress=False)
    refit = (" then the same number of epochs again on training + validation events (refit)"
             if cfg.train.refit else "")
    print(f"training SASRec (up to {cfg.train.max_minutes:g} minutes, early stopping on "
          f"validation NDCG@10){refit} ...", file=sys.stderr)
    sas = run(cfg, args.output, prepared=prepared, progress=not args.no_progress, on_epoch=_epoch_line)
    rows = []
    for name, r in (("MostPopular", pop), ("SASRec", sas)):
        rows.append({
            "model": name,
            "valid NDCG@10": r.valid["NDCG@10"],
            "test HR@10": r.test["HR@10"],
            "test NDCG@10": r.test["NDCG@10"],
            "test MRR@10": r.test["MRR@10"],
            "epochs": len(r.train.trained),
            "s/epoch": r.train.seconds_per_epoch,
            "train s": r.train.seconds + (r.refit["seconds"] if r.refit else 0.0),
        })
    print()
    print(table(rows))
    how = (f"; the tested model was then retrained for {sas.train.best_epoch} epochs on every event "
           "before the test targets (refit; validation is from the selection run)"
           if sas.refit else "")
    print(f"\nselected on validation NDCG@10 (best epoch {sas.train.best_epoch}){how}; "
          "test reported once.")
    print(f"artifact: {args.output}")
    print_next_steps(args.output, cfg)
    return 0
