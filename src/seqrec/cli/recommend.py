"""``seqrec recommend DIR (--user ID | --history ID,ID,... | --input F.jsonl --output F.jsonl)``"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from seqrec.cli.common import print_json, table
from seqrec.errors import DataError, SeqrecError


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("recommend", help="top-k items for a user, a history, or a file of histories")
    p.add_argument("artifact", type=Path)
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--user", help="a user id of the training data: their stored history is used")
    src.add_argument("--history", help="comma-separated item ids, oldest first")
    src.add_argument("--input", type=Path, help='JSON lines: {"user_id": ..., "history": [...]}')
    src.add_argument("--query", help="free text (e.g. 'waterproof mascara'): items whose text is "
                                     "closest, through the model's language model")
    p.add_argument("--output", type=Path, help="with --input: where to write the JSON lines")
    p.add_argument("--k", type=int, default=10)
    p.add_argument("--include-seen", action="store_true",
                   help="allow items already in the history (excluded by default, as in evaluation)")
    p.add_argument("--json", action="store_true", help="machine-readable output on stdout")
    p.add_argument("--device", default="cpu")
    p.set_defaults(func=cmd_recommend)


def read_histories(path: Path) -> list[dict[str, Any]]:
    """Validate the whole input file before anything is written."""
    from seqrec.data.readers import read_text

    rows = []
    for line_no, line in enumerate(read_text(path).splitlines(), 1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as e:
            raise DataError(f"invalid JSON: {e.msg}", path=path, line=line_no) from None
        if not isinstance(obj, dict) or not isinstance(obj.get("history"), list):
            raise DataError('expected an object with a "history" list, e.g. '
                            '{"user_id": 1, "history": [3, 7]}', path=path, line=line_no)
        rows.append(obj)
    return rows


def cmd_recommend(args: argparse.Namespace) -> int:
    from seqrec.fsutil import atomic_write_text
    from seqrec.recommend import Recommender

    if args.k < 1:
        raise SeqrecError(f"--k must be at least 1, got {args.k}")
    if args.input and not args.output:
        raise SeqrecError("--input needs --output FILE.jsonl")
    rec = Recommender.load(args.artifact, args.device)
    exclude = not args.include_seen
    if args.input:
        rows = read_histories(args.input)
        results = rec.recommend_many([r["history"] for r in rows], args.k, exclude)
        lines = [json.dumps({"user_id": r.get("user_id"), "items": res.items, "scores": res.scores,
                             **({"unknown_items": res.unknown} if res.unknown else {})})
                 for r, res in zip(rows, results)]
        atomic_write_text(args.output, "".join(line + "\n" for line in lines))
        n_unknown = sum(len(res.unknown) for res in results)
        with_unknown = sum(1 for res in results if res.unknown)
        print(f"{len(results)} recommendation lists written to {args.output}", file=sys.stderr)
        if n_unknown:
            print(f"warning: {n_unknown} unknown item ids in {with_unknown} histories "
                  "(listed under \"unknown_items\" in the output)", file=sys.stderr)
        return 0
    if args.query is not None:
        result = rec.search(args.query, args.k)
        if args.json:
            print_json({"query": args.query, **result.to_dict()})
            return 0
        print(table([{"rank": i + 1, "item_id": it, "score": s, "title": t or ""}
                     for i, (it, s, t) in enumerate(zip(result.items, result.scores, result.titles))]))
        return 0
    if args.user is not None:
        user = rec.users.normalise(args.user)
        history = rec.user_history(user)
        result = rec.recommend(history, args.k, exclude)
    else:
        user = None
        history = [h.strip() for h in args.history.split(",") if h.strip()]
        result = rec.recommend(history, args.k, exclude)
    if result.unknown:
        print(f"warning: unknown item ids ignored: {result.unknown}", file=sys.stderr)
    if args.json:
        print_json(result.to_dict(user))
        return 0
    if user is not None:
        print(f"user {user}: {len(history)} events in history")
    print(table([{"rank": i + 1, "item_id": it, "score": s, "title": t or ""}
                 for i, (it, s, t) in enumerate(zip(result.items, result.scores, result.titles))]))
    return 0
