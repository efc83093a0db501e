"""Text encoding benchmark: all 12,101 Amazon Beauty item texts (the titles, through the catalog),
cold (empty cache: model load + encoding) and cached (a second run that encodes nothing).

Targets (issue 4): cold <= 120 s, cached rerun <= 5 s on 2 CPU cores. The cached rerun is timed
twice: the ``encode`` call alone, and a whole fresh process (interpreter start, imports, reading
the catalog, building the texts, encoding through the cache), which is what a user waits for.

    python benchmarks/text_encoding.py                       # default model, torch's threads
    python benchmarks/text_encoding.py --threads 1 --batch-size 64 --limit 2000

Prints a table and writes ``benchmarks/results/text_encoding.json``. Other processes on the
machine slow the cold run down a lot (the load average before and after is recorded): with two
torch threads, one descheduled thread stalls the other at every operation. The CPU time of the
encoding (``--threads 1``: pure compute, no waiting) tells what an idle machine would take.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

T_START = time.perf_counter()

RESULTS = Path(__file__).resolve().parent / "results"


def beauty_texts(data_dir: Path, limit: int | None) -> tuple[list[str], dict[str, Any]]:
    from seqrec.content.item_text import item_texts
    from seqrec.data.amazon import read_s3rec

    _, catalog = read_s3rec(data_dir / "amazon_beauty", "Beauty")
    ids = catalog.df["item_id"].to_list()
    if limit:
        ids = ids[:limit]
    return item_texts(catalog, ids)


def cached_child(args: argparse.Namespace) -> None:
    """A fresh process that reruns through the cache; prints its timings as JSON."""
    from seqrec.content.text import TextEncoder

    texts, _ = beauty_texts(args.data_dir, args.limit)
    t0 = time.perf_counter()
    res = TextEncoder(args.model, cache_dir=args.cache_dir, progress=False).encode(texts)
    t1 = time.perf_counter()
    print(json.dumps({"encode_s": t1 - t0, "process_s": t1 - T_START, "report": res.report}))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data-dir", type=Path, default=None)
    p.add_argument("--model", default="all-MiniLM-L6-v2")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    p.add_argument("--limit", type=int, default=None, help="only the first N items")
    p.add_argument("--cache-dir", type=Path, default=None, help=argparse.SUPPRESS)
    p.add_argument("--cached-child", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--output", type=Path, default=RESULTS / "text_encoding.json")
    p.add_argument("--no-write", action="store_true", help="do not write the JSON")
    args = p.parse_args()
    if args.data_dir is None:
        from seqrec.data.datasets import default_data_dir

        args.data_dir = default_data_dir()
    if args.cached_child:
        cached_child(args)
        return

    import torch

    from seqrec.content.text import TextEncoder

    load_before = os.getloadavg()
    texts, text_report = beauty_texts(args.data_dir, args.limit)
    n_tokens_chars = sum(len(t) for t in texts)
    with tempfile.TemporaryDirectory(prefix="seqrec-bench-") as cache_dir:
        enc = TextEncoder(args.model, cache_dir=cache_dir, batch_size=args.batch_size,
                          num_threads=args.threads, progress=True)
        t0 = time.perf_counter()
        enc.load()
        t_load = time.perf_counter() - t0
        t1, c1 = time.perf_counter(), time.process_time()
        cold = enc.encode(texts)
        t_encode, cpu_encode = time.perf_counter() - t1, time.process_time() - c1
        t_cold = time.perf_counter() - t0
        load_mid = os.getloadavg()

        t2 = time.perf_counter()
        warm = TextEncoder(args.model, cache_dir=cache_dir, progress=False).encode(texts)
        t_cached = time.perf_counter() - t2
        assert warm.report["encoded"] == 0, warm.report
        assert (warm.vectors == cold.vectors).all()

        child = subprocess.run(
            [sys.executable, __file__, "--cached-child", "--cache-dir", cache_dir, "--data-dir",
             str(args.data_dir), "--model", args.model]
            + (["--limit", str(args.limit)] if args.limit else []),
            check=True, capture_output=True, text=True)
        rerun = json.loads(child.stdout.strip().splitlines()[-1])
        assert rerun["report"]["encoded"] == 0, rerun
    load_after = os.getloadavg()

    rows = [
        ("model load (import + weights)", t_load, None),
        (f"encode {cold.report['encoded']:,} texts (cold)", t_encode, None),
        ("  CPU time of that encoding (all threads)", cpu_encode, None),
        ("cold total: load + encode", t_cold, 120.0),
        ("cached: encode call", t_cached, 5.0),
        ("cached: whole fresh process", rerun["process_s"], 5.0),
    ]
    print(f"\nAmazon Beauty item texts: {len(texts):,} items, {cold.report['unique_texts']:,} "
          f"unique, {n_tokens_chars / max(len(texts), 1):.0f} characters on average; "
          f"model {enc.model.name}, batch {args.batch_size}, torch threads "
          f"{args.threads or torch.get_num_threads()}, {os.cpu_count()} CPUs\n")
    print("| step | seconds | target |\n|---|---:|---:|")
    for name, secs, target in rows:
        mark = "" if target is None else f"<= {target:g} s {'ok' if secs <= target else 'MISSED'}"
        print(f"| {name} | {secs:.1f} | {mark} |")
    print(f"\nload average (1 min) before / after cold / end: {load_before[0]:.2f} / "
          f"{load_mid[0]:.2f} / {load_after[0]:.2f} (other processes share the CPUs)")
    result = {
        "dataset": "amazon_beauty", "items": len(texts), "text_report": text_report,
        "encode_report": cold.report, "model": enc.model.name, "model_source": enc.model.source,
        "batch_size": args.batch_size, "torch_threads": args.threads or torch.get_num_threads(),
        "seconds": {"model_load": t_load, "encode_cold": t_encode, "encode_cold_cpu": cpu_encode,
                    "cold_total": t_cold,
                    "cached_encode": t_cached, "cached_process": rerun["process_s"]},
        "targets": {"cold_total": 120.0, "cached": 5.0},
        "texts_per_second_cold": cold.report["encoded"] / t_encode if t_encode else None,
        "load_average_1min": {"before": load_before[0], "after_cold": load_mid[0],
                              "end": load_after[0]},
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                    "torch": torch.__version__, "platform": platform.platform()},
        "date": time.strftime("%Y-%m-%d %H:%M:%S"),
    }
    if not args.no_write:
        from seqrec.fsutil import atomic_write_text

        atomic_write_text(args.output, json.dumps(result, indent=2))
        print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
