"""``seqrec profile DIR --user ID``: a readable interest profile from an ``interest`` artifact."""

from __future__ import annotations

import argparse
from pathlib import Path

from seqrec.cli.common import print_json
from seqrec.errors import SeqrecError


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("profile", help="a user's predicted interests (artifact of --task interest)")
    p.add_argument("artifact", type=Path)
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--user", help="a user of the training data (their stored history)")
    src.add_argument("--history", help="comma-separated item ids, oldest first")
    p.add_argument("--top", type=int, default=8, help="categories shown")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_profile)


def bar(share: float, width: int = 30) -> str:
    return "█" * int(round(share * width))


def cmd_profile(args: argparse.Namespace) -> int:
    import numpy as np
    import torch

    from seqrec.evaluate.ranking import history_batch
    from seqrec.recommend import Recommender
    from seqrec.tasks.interest import InterestModel

    rec = Recommender.load(args.artifact)
    model = rec.model
    if not isinstance(model, InterestModel):
        raise SeqrecError(f"{args.artifact} is not an interest-profile artifact (train it with --task interest)")
    history = rec.user_history(args.user) if args.user is not None else \
        [h.strip() for h in args.history.split(",") if h.strip()]
    idx, unknown = rec.items.lookup(history)
    if len(idx) == 0:
        raise SeqrecError("no known item in the history: nothing to profile")
    hist, _ = history_batch(idx, np.array([0]), np.array([len(idx)]), model.max_len, "cpu", False)
    with torch.no_grad():
        p = model.profile(hist)[0].numpy()
    order = p.argsort()[::-1][: args.top]
    rows = [{"category": model.names[j], "share": float(p[j])} for j in order]
    if args.json:
        print_json({"user_id": args.user, "horizon": model.horizon, "profile": rows,
                    **({"unknown_items": unknown} if unknown else {})})
        return 0
    who = f"user {args.user}" if args.user is not None else "this history"
    print(f"{who}: expected interests over the next {model.horizon} items ({len(idx)} known events)")
    width = max(len(r["category"]) for r in rows)
    for r in rows:
        print(f"  {r['category'].ljust(width)}  {r['share'] * 100:5.1f}%  {bar(r['share'])}")
    return 0
