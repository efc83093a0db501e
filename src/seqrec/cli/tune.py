"""``seqrec tune CONFIG --trials N [--output BEST.toml]``: Optuna on the validation split only."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from seqrec.cli.common import add_data_dir, data_dir, table
from seqrec.config import load_run_config, load_toml
from seqrec.fsutil import atomic_write_text


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("tune", help="search hyper-parameters on the validation split (Optuna)")
    p.add_argument("config", type=Path, help="a run config TOML; its [tune] table is the search space")
    p.add_argument("--trials", type=int, default=20)
    p.add_argument("--output", "-o", type=Path, help="frozen best config (default: CONFIG-best.toml)")
    p.add_argument("--seed", type=int, default=0, help="seed of the search (trials keep the config's)")
    add_data_dir(p)
    p.set_defaults(func=cmd_tune)


def cmd_tune(args: argparse.Namespace) -> int:
    from seqrec.tune import tune, write_frozen

    cfg = load_run_config(args.config)
    space = load_toml(args.config).get("tune")
    out = args.output or args.config.with_name(args.config.stem + "-best.toml")

    def show(row: dict) -> None:
        print(f"trial {row['trial']}: valid {cfg.train.select_metric} {row['valid']:.4f} "
              f"({row['seconds']:.0f}s) {row['params']}", file=sys.stderr, flush=True)

    res = tune(cfg, args.trials, space, data_dir=data_dir(args), seed=args.seed, on_trial=show)
    write_frozen(out, res, cfg.train.select_metric, str(args.config))
    atomic_write_text(out.with_suffix(".trials.json"), json.dumps(res.trials, indent=2))
    rows = sorted(({"trial": r["trial"], "valid": r["valid"], **r["params"]} for r in res.trials),
                  key=lambda r: -r["valid"])
    print(table(rows[:10]))
    print(f"\nbest validation {cfg.train.select_metric} {res.best_value:.4f}; frozen config: {out}")
    return 0
