"""Check a run against a frozen config's expected metrics.

    python benchmarks/reproduce.py configs/sasrec-beauty.toml [--data-dir DIR] [--output DIR]

The config's ``[expected]`` table lists metrics as ``"valid_NDCG@10"`` / ``"test_HR@10"`` ... and an
absolute ``tolerance``. The run trains exactly as configured (same seed), evaluates validation and
then test once, prints expected vs. measured, and exits 1 when any metric is outside the tolerance.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

from seqrec.config import load_run_config, load_toml
from seqrec.pipeline import run


def compare(expected: dict, valid: dict, test: dict) -> list[dict]:
    tol = float(expected.get("tolerance", 0.005))
    rows = []
    for key, want in expected.items():
        if key == "tolerance":
            continue
        split, _, metric = key.partition("_")
        got = (valid if split == "valid" else test).get(metric)
        ok = got is not None and abs(got - want) <= tol
        rows.append({"metric": key, "expected": want, "measured": got, "tolerance": tol, "ok": ok})
    return rows


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("config", type=Path)
    ap.add_argument("--data-dir", type=Path)
    ap.add_argument("--output", type=Path, help="keep the artifact here (default: a temporary folder)")
    args = ap.parse_args()
    cfg = load_run_config(args.config)
    expected = load_toml(args.config).get("expected", {})
    if not expected:
        print(f"{args.config} has no [expected] table", file=sys.stderr)
        return 2
    t = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        res = run(cfg, args.output or Path(tmp) / "artifact", data_dir=args.data_dir,
                  on_epoch=lambda r: print(f"epoch {r['epoch']} valid NDCG@10 "
                                           f"{r.get('valid', {}).get('NDCG@10', float('nan')):.4f}",
                                           file=sys.stderr, flush=True))
    rows = compare(expected, res.valid, res.test)
    print(f"{args.config}: {time.perf_counter() - t:.0f} s, best epoch {res.train.best_epoch}")
    print("| metric | expected | measured | tolerance | ok |\n|---|---|---|---|---|")
    for r in rows:
        got = "missing" if r["measured"] is None else f"{r['measured']:.4f}"
        print(f"| {r['metric']} | {r['expected']:.4f} | {got} | {r['tolerance']} | {'yes' if r['ok'] else 'NO'} |")
    return 0 if all(r["ok"] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
