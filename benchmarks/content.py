"""Item content benchmark: ids vs. text vs. fused on Amazon Beauty, with cold items and cold
users; and the interest / binary tasks on ML-100K (interest also on ML-1M) against their
baselines.

    python benchmarks/content.py                  # everything (about three hours on 2 CPU cores)
    python benchmarks/content.py --part beauty    # or: tasks
    python benchmarks/content.py --part beauty --protocols standard --variants "fused (text+attrs, gated)"

Beauty: SASRec, leave-one-out, full ranking, seen items masked, selection on validation NDCG@10.
Each item representation is trained on the standard split (overall NDCG@10), and on the
cold-start split where 10% of the items and 5% of the users never reach training (NDCG@10 on test
events whose target is a cold vs. a warm item; held-out users after 1, 2, 3 events).
The fused model with id dropout (trained to score from content alone for part of the time, which
cold items need) runs in both; without id dropout only in the standard split, where no item is
cold. The "+ cold offset" rows add the validation-chosen score offset of the untrained items
(``train.calibrate_cold_items``); the "+ title neighbours" rows also let validation choose to rank
each untrained item with the rows of the trained items whose titles are nearest
(``train.cold_item_neighbours``), chosen for NDCG@10 over all validation targets; the
"cold share >= 0.5" rows take the best offset among those giving cold targets at least half the
validation NDCG@10 of warm ones (``train.cold_item_min_share``). Writes benchmarks/results/content.json and content.md; a run of
some parts or variants replaces their rows and keeps the others.
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
from seqrec.pipeline import prepare, run, run_task

RESULTS = Path(__file__).resolve().parent / "results"
TRAIN = {"epochs": 200, "patience": 4, "batch_size": 256, "lr": 3e-3}
VARIANTS = {
    "id-only": {"model": {"name": "sasrec"}},
    "text-only": {"model": {"name": "sasrec", "fusion": {"mode": "content"}},
                  "content": {"text": True, "attributes": False}},
    # id dropout trains the fused model to score from content alone, which cold items need
    "fused (text+attrs, gated, id dropout 0.3)": {
        "model": {"name": "sasrec", "fusion": {"mode": "gated", "id_dropout": 0.3}},
        "content": {"text": True, "attributes": True}},
    "fused (text+attrs, gated)": {"model": {"name": "sasrec", "fusion": {"mode": "gated"}},
                                  "content": {"text": True, "attributes": True}},
    # cosine scoring: a cold item's vector is not shorter than the trained ones it competes with
    "text-only (cosine, temperature 0.1)": {
        "model": {"name": "sasrec", "temperature": 0.1, "fusion": {"mode": "content"}},
        "content": {"text": True, "attributes": False}},
    "content-only (text+attrs)": {"model": {"name": "sasrec", "fusion": {"mode": "content"}},
                                  "content": {"text": True, "attributes": True}},
    # one score offset for items without training events, chosen on validation NDCG@10
    "text-only (cosine, temperature 0.1) + cold offset": {
        "model": {"name": "sasrec", "temperature": 0.1, "fusion": {"mode": "content"}},
        "content": {"text": True, "attributes": False}, "train": {"calibrate_cold_items": True}},
    "fused (text+attrs, gated, id dropout 0.3) + cold offset": {
        "model": {"name": "sasrec", "fusion": {"mode": "gated", "id_dropout": 0.3}},
        "content": {"text": True, "attributes": True}, "train": {"calibrate_cold_items": True}},
    # each untrained item ranked with the rows of the trained items whose titles are nearest
    # (k and tau chosen on validation, kept only if validation prefers it), then the offset
    "id-only + title neighbours": {
        "model": {"name": "sasrec"}, "content": {"text": True, "attributes": False},
        "train": {"calibrate_cold_items": True, "cold_item_neighbours": True}},
    "text-only (cosine, temperature 0.1) + title neighbours": {
        "model": {"name": "sasrec", "temperature": 0.1, "fusion": {"mode": "content"}},
        "content": {"text": True, "attributes": False},
        "train": {"calibrate_cold_items": True, "cold_item_neighbours": True}},
    "fused (text+attrs, gated, id dropout 0.3) + title neighbours": {
        "model": {"name": "sasrec", "fusion": {"mode": "gated", "id_dropout": 0.3}},
        "content": {"text": True, "attributes": True},
        "train": {"calibrate_cold_items": True, "cold_item_neighbours": True}},
    # the same, with the offset that is best overall among those giving cold targets at least
    # half the NDCG@10 of warm ones on validation (train.cold_item_min_share = 0.5)
    "id-only + title neighbours, cold share >= 0.5": {
        "model": {"name": "sasrec"}, "content": {"text": True, "attributes": False},
        "train": {"calibrate_cold_items": True, "cold_item_neighbours": True,
                  "cold_item_min_share": 0.5}},
    "fused (text+attrs, gated, id dropout 0.3) + title neighbours, cold share >= 0.5": {
        "model": {"name": "sasrec", "fusion": {"mode": "gated", "id_dropout": 0.3}},
        "content": {"text": True, "attributes": True},
        "train": {"calibrate_cold_items": True, "cold_item_neighbours": True,
                  "cold_item_min_share": 0.5}},
}
# which variants each protocol runs: without cold items there is nothing for id dropout to prepare
PROTOCOL_VARIANTS = {
    "standard": ["id-only", "text-only", "fused (text+attrs, gated)",
                 "fused (text+attrs, gated, id dropout 0.3)"],
    "cold-start": ["id-only", "text-only", "text-only (cosine, temperature 0.1)",
                   "content-only (text+attrs)",
                   "fused (text+attrs, gated, id dropout 0.3)",
                   "text-only (cosine, temperature 0.1) + cold offset",
                   "fused (text+attrs, gated, id dropout 0.3) + cold offset",
                   "id-only + title neighbours",
                   "text-only (cosine, temperature 0.1) + title neighbours",
                   "fused (text+attrs, gated, id dropout 0.3) + title neighbours",
                   "id-only + title neighbours, cold share >= 0.5",
                   "fused (text+attrs, gated, id dropout 0.3) + title neighbours, cold share >= 0.5"],
}
COLD = {"cold_items": 0.1, "cold_users": 0.05, "cold_seed": 0}


def beauty(data_dir: Path, minutes: float, rows: list[dict[str, Any]], protocols: list[str],
           variants: list[str] | None) -> None:
    for protocol in protocols:
        data_extra = COLD if protocol == "cold-start" else {}
        prepared = None
        for name in PROTOCOL_VARIANTS[protocol]:
            if variants and name not in variants:
                continue
            spec = VARIANTS[name]
            cfg = RunConfig.from_dict({"data": {"name": "beauty", **data_extra}, **spec,
                                       "train": {**TRAIN, **spec.get("train", {}),
                                                 "max_minutes": minutes}})
            if prepared is None:
                prepared = prepare(cfg, data_dir)
            t = time.perf_counter()
            res = run(cfg, None, prepared=prepared, progress=False,
                      on_epoch=lambda r, n=name: print(f"  {protocol} {n} epoch {r['epoch']} valid "
                                                       f"NDCG@10 {r['valid']['NDCG@10']:.4f}", flush=True))
            row = {"part": "beauty", "protocol": protocol, "variant": name, "test": res.test,
                   "valid": res.valid, "segments": res.segments, "best_epoch": res.train.best_epoch,
                   "epochs": len(res.train.trained), "stop_reason": res.train.stop_reason,
                   "seconds": time.perf_counter() - t, "config": cfg.to_dict()}
            if res.calibration is not None:
                row["cold_item_calibration"] = res.calibration
            merge(rows, row)
            save(rows)
            print(beauty_table([row]).splitlines()[-1], flush=True)


def _key(row: dict[str, Any]) -> tuple:
    return (row["part"], row.get("protocol"), row.get("variant"), row.get("task"), row.get("data"))


def merge(rows: list[dict[str, Any]], row: dict[str, Any]) -> None:
    """Replace the row of the same run (a rerun of one part keeps the others' results)."""
    rows[:] = [r for r in rows if _key(r) != _key(row)] + [row]


# binary needs ratings, which only ML-100K has; the interest profile also runs on ML-1M, whose
# 6,040 test users make its top-category accuracy less noisy than ML-100K's 943
TASKS = [("ml-100k", "interest"), ("ml-100k", "binary"), ("ml-1m", "interest")]


def tasks(data_dir: Path, minutes: float, rows: list[dict[str, Any]], datasets: list[str]) -> None:
    for data, task in TASKS:
        if data not in datasets:
            continue
        cfg = RunConfig.from_dict({"data": {"name": data}, "model": {"name": "sasrec", "max_len": 100},
                                   "task": {"name": task}, "train": {**TRAIN, "max_minutes": minutes}})
        t = time.perf_counter()
        res = run_task(cfg, None, data_dir=data_dir, progress=False)
        merge(rows, {"part": "tasks", "task": task, "data": data, "test": res.test, "valid": res.valid,
                     "best_epoch": res.train.best_epoch, "epochs": len(res.train.trained),
                     "stop_reason": res.train.stop_reason, "seconds": time.perf_counter() - t})
        save(rows)


def beauty_table(rows: list[dict[str, Any]]) -> str:
    out = ["| protocol | item representation | NDCG@10 | HR@10 | valid NDCG@10 | warm NDCG@10 | cold NDCG@10 "
           "| cold / warm | cold users NDCG@10 after 1 / 2 / 3 events | epochs (best) |",
           "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        if r["part"] != "beauty":
            continue
        seg = r["segments"]
        warm = seg.get("test_warm_items", {}).get("NDCG@10")
        cold = seg.get("test_cold_items", {}).get("NDCG@10")
        users = " / ".join(f"{seg[f'cold_users@{k}']['NDCG@10']:.4f}" for k in (1, 2, 3)
                           if f"cold_users@{k}" in seg) or "-"
        f = lambda v: "-" if v is None else f"{v:.4f}"  # noqa: E731
        ratio = "-" if not warm or cold is None else f"{cold / warm:.2f}"
        epochs = f"{r['epochs']} ({r['best_epoch']})" if "epochs" in r else f"({r['best_epoch']})"
        out.append(f"| {r['protocol']} | {r['variant']} | {r['test']['NDCG@10']:.4f} | "
                   f"{r['test']['HR@10']:.4f} | {r['valid']['NDCG@10']:.4f} | {f(warm)} | {f(cold)} | "
                   f"{ratio} | {users} | {epochs} |")
    return "\n".join(out)


def tasks_table(rows: list[dict[str, Any]]) -> str:
    out = ["| data | task (test) | metric | sequence model | baseline(s) | users |", "|---|---|---|---|---|---|"]
    for r in rows:
        if r["part"] != "tasks":
            continue
        t = r["test"]
        data = r["data"]
        n = t.get("users", t.get("events", ""))
        if r["task"] == "interest":
            for m in ("KL", "top1_accuracy"):
                out.append(f"| {data} | interest | {m} | {t[m]:.4f} | global {t['baseline_global'][m]:.4f}; "
                           f"user history {t['baseline_user_history'][m]:.4f} | {n} |")
        else:
            for m in ("AUC", "log_loss"):
                out.append(f"| {data} | binary (>= 4 stars) | {m} | {t[m]:.4f} | rates "
                           f"{t['baseline_rates'][m]:.4f} | {n} |")
    return "\n".join(out)


def save(rows: list[dict[str, Any]]) -> None:
    RESULTS.mkdir(parents=True, exist_ok=True)
    atomic_write_text(RESULTS / "content.json", json.dumps(rows, indent=2, default=str))
    atomic_write_text(RESULTS / "content.md", beauty_table(rows) + "\n\n" + tasks_table(rows) + "\n")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--part", choices=["all", "beauty", "tasks"], default="all")
    ap.add_argument("--data-dir", type=Path)
    ap.add_argument("--max-minutes", type=float, default=12.0, help="training cap per run")
    ap.add_argument("--protocols", default="standard,cold-start")
    ap.add_argument("--variants", action="append", help="run only these (repeat); others keep their rows")
    ap.add_argument("--task-datasets", default="ml-100k,ml-1m", help="data sets of the tasks part")
    args = ap.parse_args()
    data_dir = args.data_dir or default_data_dir()
    old = RESULTS / "content.json"
    rows: list[dict[str, Any]] = json.loads(old.read_text()) if old.exists() else []
    if args.part in ("all", "beauty"):
        beauty(data_dir, args.max_minutes, rows, args.protocols.split(","), args.variants)
    if args.part in ("all", "tasks"):
        tasks(data_dir, args.max_minutes, rows, args.task_datasets.split(","))
    print(beauty_table(rows))
    print()
    print(tasks_table(rows))


if __name__ == "__main__":
    main()
