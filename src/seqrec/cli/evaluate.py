"""``seqrec evaluate DIR --split valid|test [--json] [--ranks FILE.parquet|.csv]``"""

from __future__ import annotations

import argparse
from pathlib import Path

from seqrec.cli.common import print_json, table
from seqrec.errors import SeqrecError


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("evaluate", help="full-ranking metrics of an artifact on its validation or test users")
    p.add_argument("artifact", type=Path)
    p.add_argument("--split", choices=["valid", "test"], default="test")
    p.add_argument("--json", action="store_true", help="one JSON object on stdout")
    p.add_argument("--ks", help="comma-separated cut-offs (default: the run's, e.g. 1,5,10,20)")
    p.add_argument("--no-mask-seen", action="store_true",
                   help="keep items already in the history in the ranking (not the default)")
    p.add_argument("--ranks", type=Path, help="write per-user target ranks to this .parquet or .csv")
    p.add_argument("--device", default="cpu")
    p.set_defaults(func=cmd_evaluate)


def cmd_evaluate(args: argparse.Namespace) -> int:
    from seqrec.artifact import load_artifact
    from seqrec.data.split import make_split
    from seqrec.evaluate.protocol import evaluate
    from seqrec.fsutil import atomic_write_bytes

    art = load_artifact(args.artifact, args.device)
    if art.run_config.task.name != "next-item":
        return evaluate_task(art, args)
    cfg = art.run_config.eval
    if args.ks:
        cfg.ks = [int(k) for k in args.ks.split(",")]
    if args.no_mask_seen:
        cfg.mask_seen = False
    split = make_split(art.seqs, art.run_config.data)
    res = evaluate(art.model, split, args.split, cfg, device=args.device, progress=not args.json)
    if args.ranks:
        frame = res.ranks_frame(split)
        suffix = args.ranks.suffix.lower()
        import io

        buf = io.BytesIO()
        if suffix == ".parquet":
            frame.write_parquet(buf)
        elif suffix == ".csv":
            frame.write_csv(buf)
        else:
            raise SeqrecError(f"--ranks must end in .parquet or .csv, got {args.ranks}")
        atomic_write_bytes(args.ranks, buf.getvalue())
    if args.json:
        print_json({**res.metrics, "protocol": res.protocol})
        return 0
    ks = cfg.ks
    rows = [{"metric": m, **{f"@{k}": res.metrics[f"{m}@{k}"] for k in ks}}
            for m in ("HR", "NDCG", "MRR", "Recall", "Coverage")]
    print(table(rows))
    p = res.protocol
    print(f"\n{p['split']} users: {p['users']:,}; targets: {p['targets']:,}; items ranked: "
          f"{p['items_ranked']:,}; {p['ranking']}")
    print(f"masking: {p['mask_rule']}")
    if args.ranks:
        print(f"per-user ranks written to {args.ranks}")
    return 0


def evaluate_task(art, args: argparse.Namespace) -> int:
    from seqrec.cli.train import task_rows
    from seqrec.data.split import make_split

    split = make_split(art.seqs, art.run_config.data)
    art.model.prepare(split)
    res = art.model.evaluate(split, args.split, args.device)
    if args.json:
        print_json({**res, "task": art.run_config.task.name, "split": args.split})
        return 0
    print(table(task_rows(res)))
    return 0
