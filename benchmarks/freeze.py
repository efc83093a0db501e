"""Freeze measured benchmark runs as configs ``configs/<model>-<dataset>.toml``.

    python benchmarks/freeze.py benchmarks/results/accuracy.json            # every run in the file
    python benchmarks/freeze.py benchmarks/results/accuracy.json --only sasrec:beauty

Each config is the run's exact configuration plus an ``[about]`` table (how to run it, where the
numbers come from, on what machine, how long it took) and an ``[expected]`` table with the
validation and test metrics it reached and an absolute tolerance, which ``benchmarks/reproduce.py``
checks. A run that stopped at its time cap is frozen with ``epochs`` set to the epochs it completed
and no time cap, so a reproduction does not depend on the speed of the machine.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path
from typing import Any

from seqrec.config import RunConfig, to_toml
from seqrec.fsutil import atomic_write_text
from seqrec.models import model_config

CONFIGS = Path(__file__).resolve().parent.parent / "configs"
METRICS = ("NDCG@10", "HR@10", "MRR@10")


def frozen_tables(row: dict[str, Any], machine: dict[str, Any], source: str,
                  tolerance: float) -> dict[str, dict[str, Any]]:
    cfg = RunConfig.from_dict(row["config"]).to_dict()  # validates and fills every default
    train = cfg["train"]
    _, mcfg = model_config(cfg["model"])  # every model setting written out, not left to defaults
    cfg["model"] = {"name": cfg["model"]["name"], **dataclasses.asdict(mcfg)}
    if str(row.get("stop_reason", "")).startswith("time limit"):
        train["epochs"] = int(row["epochs"])
    train["max_minutes"] = 0.0
    name = f"{row['model']}-{row['dataset']}.toml"
    refit = row.get("refit")
    refit_note = "" if not refit else (
        f"then a refit of {refit['epochs']} epochs in {refit['seconds']:.0f} s"
        + (f" (the selection from the {refit['selection']})" if refit.get("selection") else "") + ", ")
    tables: dict[str, dict[str, Any]] = {
        "about": {
            "run": f"seqrec train --config configs/{name} --output runs/{name[:-5]}",
            "check": f"python benchmarks/reproduce.py configs/{name}",
            "source": f"{source} (selection on validation NDCG@10, test evaluated once)",
            "machine": f"{machine.get('cpu')}, {machine.get('threads')} threads, torch {machine.get('torch')}"
                       + (f", {machine['cuda']}" if machine.get("cuda") else ""),
            "measured": f"{row['epochs']} epochs (best {row['best_epoch']}), "
                        f"{row['seconds_per_epoch']:.1f} s/epoch, {refit_note}"
                        f"{row['total_seconds']:.0f} s in all",
        },
        "data": cfg["data"], "model": cfg["model"], "train": train, "eval": cfg["eval"],
    }
    if cfg.get("content") is not None:
        tables["content"] = cfg["content"]
    expected: dict[str, Any] = {}
    for split in ("valid", "test"):
        for m in METRICS:
            if m in (row.get(split) or {}):
                expected[f"{split}_{m}"] = round(float(row[split][m]), 5)
    expected["tolerance"] = tolerance
    tables["expected"] = expected
    return tables


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("results", type=Path, help="a results JSON written by benchmarks/accuracy.py")
    ap.add_argument("--only", action="append", default=[], metavar="MODEL:DATASET")
    ap.add_argument("--tolerance", type=float, default=0.005, help="absolute, on every metric")
    ap.add_argument("--out", type=Path, default=CONFIGS)
    args = ap.parse_args()
    data = json.loads(args.results.read_text())
    want = {tuple(s.split(":")) for s in args.only}
    args.out.mkdir(parents=True, exist_ok=True)
    for row in data["runs"]:
        if want and (row["model"], row["dataset"]) not in want:
            continue
        tables = frozen_tables(row, data.get("machine", {}), f"benchmarks/{args.results.name}", args.tolerance)
        path = args.out / f"{row['model']}-{row['dataset']}.toml"
        header = (f"{row['model']} on {row['dataset']}: leave-one-out, full ranking, seen items masked.\n"
                  "Frozen from a measured run; [expected] is what it reached, [about] how to rerun it.")
        atomic_write_text(path, to_toml(tables, header))
        print(f"wrote {path}")


if __name__ == "__main__":
    main()
