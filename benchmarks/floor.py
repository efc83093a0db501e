"""Speed against the FLOP floor: full-softmax SASRec epochs on Beauty, timed against the
matrix-multiply rate measured in the same run.

    python benchmarks/floor.py                                  # d 64 three times, d 256 once, fp32
    python benchmarks/floor.py --widths 64 --runs 5 --epochs 3 --precision bf16
    python benchmarks/floor.py --widths 256 --runs 1 --products torch.mm    # training as before

Each run trains ``configs/sasrec-beauty.toml``'s model (full softmax over 12,101 items, length
50, 2 blocks) at one width for ``--epochs`` epochs. Nothing is evaluated: only the training
loop is timed. Per epoch it records the training seconds, the FLOPs counted (encoder over real
positions, item scoring of every scored position against every item, both passes), the floor
(those FLOPs at the measured rate) and the ratio; a run's figure is the median ratio of its
epochs. The target: an epoch within 2x of its floor.

The rate (the ceiling) is the highest of the readings taken at the start and after every epoch.
On this shared VM one reading taken while the host was briefly slow once put an epoch at 1.07x:
a low reading must not flatter the ratio. Rows before 2026-12-08 03:10 had the start's reading
only; the ceiling column says of how many readings it is the best.

Each reading is the faster of ``torch.mm`` and oneDNN's product (:mod:`seqrec.matmul`). Rows
before 2026-12-08 04:00 timed ``torch.mm`` alone, which on this VM's AVX-512 AMD EPYC is MKL's
AVX2 code at 175-200 GFLOP/s against oneDNN's 360-430: their ratios are about half what the
same epochs measure against the machine's rate. The products column says which products
trained (``--products``: ``onednn``, the default on a CPU, or ``torch.mm``) and which the
ceiling timed. The freed-memory column says whether the run kept freed memory in the process
(:mod:`seqrec.train.heap`; rows before 2026-12-08 06:00 did not: "returned").

Writes ``benchmarks/results/floor.json`` and ``floor.md`` (rows of earlier runs are kept, so
several runs can be compared; ``--fresh`` starts over).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path
from typing import Any

import torch
from accuracy import machine

from seqrec.config import RunConfig, load_run_config
from seqrec.data.datasets import default_data_dir
from seqrec.fsutil import atomic_write_text
from seqrec.matmul import onednn_product, products_name, use_onednn
from seqrec.models import build_model
from seqrec.pipeline import prepare
from seqrec.train.loop import resolve_device, train
from seqrec.train.speed import autocast_dtype, measure_matmul_rate

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
CONFIG = ROOT / "configs" / "sasrec-beauty.toml"


def run_config(width: int, epochs: int, precision: str) -> RunConfig:
    d = load_run_config(CONFIG).to_dict()
    d["model"]["d_model"] = width
    d["train"].update(epochs=epochs, precision=precision, patience=epochs + 1, eval_every=epochs + 1,
                      max_minutes=0.0)
    return RunConfig.from_dict(d)


def table(rows: list[dict[str, Any]]) -> str:
    out = ["| when | cpu | width | precision | products: trained / ceiling | freed memory | "
           "ceiling GFLOP/s | s/epoch | achieved GFLOP/s | x FLOP floor per epoch | "
           "x FLOP floor (median) |",
           "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        eps = r["epochs"]
        out.append(
            f"| {r['when']} | {r['cpu'] or '?'} | {r['width']} | {r['precision']} | "
            f"{r.get('trained_products', 'torch.mm')} / {r.get('ceiling_products', 'torch.mm')} | "
            f"{'kept' if r.get('heap', 'default') != 'default' else 'returned'} | "
            f"{r['ceiling_gflops']:.0f}{_readings(r)} | "
            f"{min(e['seconds'] for e in eps):.1f}-{max(e['seconds'] for e in eps):.1f} | "
            f"{statistics.median(e['gflops'] for e in eps):.0f} | "
            f"{', '.join(format(e['ratio'], '.2f') for e in eps)} | **{r['median_ratio']:.2f}** |")
    return "\n".join(out)


def _readings(row: dict[str, Any]) -> str:
    n = len(row.get("ceiling_readings", [])) or 1
    return "" if n == 1 else f" (best of {n})"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--widths", default="64,256", help="d_model values, comma-separated")
    ap.add_argument("--runs", default="3,1", help="runs per width (one value, or one per width)")
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--precision", default="fp32", help="fp32, bf16 or auto")
    ap.add_argument("--products", choices=["onednn", "torch.mm"], default="onednn",
                    help="the products training uses on a CPU (the ceiling times both either way)")
    ap.add_argument("--data-dir", type=Path)
    ap.add_argument("--fresh", action="store_true", help="drop the rows of earlier runs")
    args = ap.parse_args()
    widths = [int(w) for w in args.widths.split(",")]
    use_onednn(args.products == "onednn")
    runs = [int(n) for n in args.runs.split(",")]
    if len(runs) == 1:
        runs = runs * len(widths)
    if len(runs) != len(widths):
        ap.error(f"--runs gives {len(runs)} counts for {len(widths)} widths")
    path = RESULTS / "floor.json"
    rows: list[dict[str, Any]] = [] if args.fresh or not path.exists() else json.loads(path.read_text())
    prepared = prepare(run_config(widths[0], args.epochs, args.precision), args.data_dir or default_data_dir())
    split = prepared.split
    for width, n_runs in zip(widths, runs):
        for _ in range(n_runs):
            cfg = run_config(width, args.epochs, args.precision)
            model = build_model(cfg.model, split.seqs.n_items, cfg.train.seed)
            device = resolve_device(cfg.train.device)
            readings: list[float] = []
            reread = lambda rec: readings.append(  # noqa: E731 - after each epoch, outside its time
                measure_matmul_rate(device, autocast_dtype(args.precision, device)))
            res = train(model, split, cfg.train, cfg.eval, progress=False, on_epoch=reread,
                        validate=lambda m: {"NDCG@10": 0.0})  # nothing evaluated: training timed alone
            # the loop's own reading: at the start (the higher of start and end after a minute)
            readings.insert(0, res.matmul_gflops)
            ceiling = max(readings)
            eps = [{"seconds": h["train_seconds"], "flops": h["flops"],
                    "floor_seconds": h["flops"] / (ceiling * 1e9), "gflops": h["gflops_per_second"],
                    "ratio": h["train_seconds"] * ceiling * 1e9 / h["flops"]}
                   for h in res.history]
            host = machine()
            row = {"when": time.strftime("%Y-%m-%d %H:%M"), "cpu": host["cpu"], "machine": host,
                   "width": width, "precision": args.precision, "ceiling_gflops": ceiling,
                   "ceiling_readings": readings,
                   "trained_products": products_name(device), "heap": res.heap,
                   "ceiling_products": ("torch.mm, oneDNN" if onednn_product(device, torch.float32)
                                        else "torch.mm"),
                   "epochs": eps, "median_ratio": statistics.median(e["ratio"] for e in eps)}
            rows.append(row)
            RESULTS.mkdir(parents=True, exist_ok=True)
            atomic_write_text(path, json.dumps(rows, indent=2))
            atomic_write_text(RESULTS / "floor.md", table(rows) + "\n")
            print(table([row]).splitlines()[-1], flush=True)
    print(table(rows))


if __name__ == "__main__":
    main()
