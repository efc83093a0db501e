"""Scaling table: SASRec from small to large on Beauty and ML-1M.

    python benchmarks/scaling.py [--datasets beauty,ml-1m] [--sizes S,M,L] [--max-minutes 20]

Sizes: S (d 64, 2 blocks, length 50), M (d 128, 4 blocks, length 100), L (d 256, 8 blocks,
length 200). Beauty trains with the full softmax; ML-1M with sampled softmax (1,024 in-batch
negatives, logQ-corrected), which is what makes the large model practical on a CPU. Every run is
capped at ``--max-minutes`` of training: larger models on 2 CPU cores do not reach convergence in
that time, and the table says how many epochs they had. Leave-one-out, full ranking over all
items, seen items masked, selection on validation NDCG@10, test reported once. Writes
benchmarks/results/scaling.json and scaling.md.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

from seqrec.config import RunConfig
from seqrec.data.datasets import default_data_dir
from seqrec.fsutil import atomic_write_text
from seqrec.pipeline import prepare, run

RESULTS = Path(__file__).resolve().parent / "results"
SIZES = {
    "S": {"d_model": 64, "n_blocks": 2, "n_heads": 1, "d_ff": 256, "max_len": 50},
    "M": {"d_model": 128, "n_blocks": 4, "n_heads": 2, "d_ff": 512, "max_len": 100},
    "L": {"d_model": 256, "n_blocks": 8, "n_heads": 4, "d_ff": 1024, "max_len": 200},
}
DATA = {
    "beauty": {"model": {"dropout": 0.5}, "train": {"batch_size": 256, "lr": 2e-3}},
    "ml-1m": {"model": {"dropout": 0.2},
              "train": {"batch_size": 64, "lr": 1e-3, "loss": "sampled", "negatives": 1024,
                        "sampler": "in-batch"}},
}


def settings(dataset: str, size: str, max_minutes: float) -> dict[str, Any]:
    """The run config (as a dict) of one row of the table: ``size`` on ``dataset``, capped."""
    spec = DATA[dataset]
    return {
        "data": {"name": dataset},
        "model": {"name": "sasrec", **SIZES[size], **spec["model"]},
        "train": {"epochs": 500, "patience": 5, **spec["train"], "max_minutes": max_minutes},
    }


def n_params(model: Any) -> int:
    return sum(p.numel() for p in model.parameters())


def table(rows: list[dict[str, Any]]) -> str:
    out = [("| dataset | size | d / blocks / length | parameters | loss | valid NDCG@10 | test NDCG@10 | "
            "test HR@10 | epochs (best) | s/epoch | training s | stopped by |"),
           "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        m = r["config"]["model"]
        out.append(f"| {r['dataset']} | {r['size']} | {m['d_model']} / {m['n_blocks']} / {m['max_len']} | "
                   f"{r['params']:,} | {r['config']['train']['loss']} | {r['valid']['NDCG@10']:.4f} | "
                   f"{r['test']['NDCG@10']:.4f} | "
                   f"{r['test']['HR@10']:.4f} | {r['epochs']} ({r['best_epoch']}) | "
                   f"{r['seconds_per_epoch']:.1f} | {r['train_seconds']:.0f} | {r['stop_reason']} |")
    return "\n".join(out)


def save(rows: list[dict[str, Any]], quiet: bool = False) -> None:
    RESULTS.mkdir(parents=True, exist_ok=True)
    atomic_write_text(RESULTS / "scaling.json", json.dumps(rows, indent=2))
    atomic_write_text(RESULTS / "scaling.md", table(rows) + "\n")
    if not quiet:
        print(table(rows))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--datasets", default="beauty,ml-1m")
    ap.add_argument("--sizes", default="S,M,L")
    ap.add_argument("--max-minutes", type=float, default=20.0)
    ap.add_argument("--data-dir", type=Path)
    ap.add_argument("--table-only", action="store_true", help="rewrite scaling.md from the JSON")
    args = ap.parse_args()
    if args.table_only:
        save(json.loads((RESULTS / "scaling.json").read_text()))
        return
    data_dir = args.data_dir or default_data_dir()
    path = RESULTS / "scaling.json"
    rows: list[dict[str, Any]] = json.loads(path.read_text()) if path.exists() else []
    for dataset in args.datasets.split(","):
        prepared = None
        for size in args.sizes.split(","):
            cfg = RunConfig.from_dict(settings(dataset, size, args.max_minutes))
            if prepared is None:
                prepared = prepare(cfg, data_dir)
            t = time.perf_counter()
            res = run(cfg, None, prepared=prepared, progress=False,
                      on_epoch=lambda r, d=dataset, s=size: print(
                          f"  {d} {s} epoch {r['epoch']} {r['train_seconds']:.0f}s valid NDCG@10 "
                          f"{r['valid']['NDCG@10']:.4f}", flush=True))
            row = {"dataset": dataset, "size": size, "config": cfg.to_dict(), "params": n_params(res.model),
                   "test": res.test, "valid": res.valid, "epochs": len(res.train.trained), "best_epoch": res.train.best_epoch,
                   "seconds_per_epoch": res.train.seconds_per_epoch,
                   "train_seconds": res.train.seconds, "stop_reason": res.train.stop_reason,
                   "total_seconds": time.perf_counter() - t}
            rows = [r for r in rows if (r["dataset"], r["size"]) != (dataset, size)] + [row]
            save(rows, quiet=True)
            print(table([row]).splitlines()[-1], flush=True)
    print(table(rows))


if __name__ == "__main__":
    main()
