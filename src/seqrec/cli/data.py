"""``seqrec data list | stats | download | verify``."""

from __future__ import annotations

import argparse

import numpy as np

from seqrec.cli.common import add_data_dir, data_dir, print_json, table
from seqrec.config import DataConfig
from seqrec.data import datasets
from seqrec.data.preprocess import preprocess


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("data", help="list, describe, download and verify datasets")
    dsub = p.add_subparsers(dest="data_command", required=True, metavar="ACTION")
    q = dsub.add_parser("list", help="registered datasets and whether they are in the data directory")
    add_data_dir(q)
    q.set_defaults(func=cmd_list)
    q = dsub.add_parser("stats", help="users, items, interactions, density, sequence lengths")
    q.add_argument("name", metavar="NAME|PATH")
    q.add_argument("--format", default="auto", help="auto, ml-100k, ml-1m, sequences or table")
    for col in ("user", "item", "time"):
        q.add_argument(f"--{col}-col", default=f"{col}_id" if col != "time" else "timestamp")
    q.add_argument("--encoding", default="utf-8")
    q.add_argument("--json", action="store_true", help="one JSON object on stdout")
    add_data_dir(q)
    q.set_defaults(func=cmd_stats)
    q = dsub.add_parser("download", help="fetch a public dataset and check its checksums")
    q.add_argument("name", choices=sorted(datasets.DATASETS))
    add_data_dir(q)
    q.set_defaults(func=cmd_download)
    q = dsub.add_parser("verify", help="check the files of a dataset against the published checksums")
    q.add_argument("name", choices=sorted(datasets.DATASETS))
    add_data_dir(q)
    q.set_defaults(func=cmd_verify)


def cmd_list(args: argparse.Namespace) -> int:
    root = data_dir(args)
    rows = [{"name": s.name, "available": "yes" if s.available(root) else "no",
             "folder": str(s.path(root)), "description": s.description}
            for s in datasets.DATASETS.values()]
    print(f"data directory: {root}")
    print(table(rows))
    return 0


def sequence_stats(name: str, cfg: DataConfig, root) -> dict:
    log, catalog, label = datasets.load(cfg, root)
    seqs = preprocess(log, cfg)
    lengths = seqs.lengths
    pct = {f"p{q}": float(np.percentile(lengths, q)) for q in (5, 25, 50, 75, 95)}
    return {
        "dataset": label,
        "users": seqs.n_users,
        "items": seqs.n_items,
        "interactions": seqs.n_events,
        "density": seqs.n_events / (seqs.n_users * seqs.n_items),
        "timestamps": seqs.times is not None,
        "sequence_length": {"min": int(lengths.min()), **pct, "max": int(lengths.max()),
                            "mean": float(lengths.mean())},
        "catalog_items": len(catalog),
        "items_with_title": int(catalog.df["title"].is_not_null().sum()) if len(catalog) else 0,
    }


def cmd_stats(args: argparse.Namespace) -> int:
    cfg = DataConfig(name=args.name, format=args.format, user_col=args.user_col,
                     item_col=args.item_col, time_col=args.time_col, encoding=args.encoding)
    st = sequence_stats(args.name, cfg, data_dir(args))
    if args.json:
        print_json(st)
        return 0
    sl = st.pop("sequence_length")
    print(table([{"statistic": k, "value": v} for k, v in st.items()]))
    print()
    print("sequence length:")
    print(table([sl]))
    return 0


def cmd_download(args: argparse.Namespace) -> int:
    folder = datasets.download(args.name, data_dir(args))
    print(f"{args.name}: files in {folder}, checksums verified")
    return 0


def cmd_verify(args: argparse.Namespace) -> int:
    spec = datasets.DATASETS[args.name]
    rows = [{"file": f, "status": s} for f, s in datasets.verify(spec, data_dir(args))]
    print(table(rows))
    return 1 if any(r["status"] == "MISMATCH" for r in rows) else 0
