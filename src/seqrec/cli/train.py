"""``seqrec train --data NAME|PATH --model NAME --output DIR [--config FILE.toml] ...``"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from seqrec.cli.common import add_data_dir, data_dir, table
from seqrec.config import SECTIONS, RunConfig, load_run_config, load_toml, tomllib
from seqrec.errors import ConfigError
from seqrec.models import MODELS
from seqrec.tasks import TASKS


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="train a model and write an artifact directory")
    p.add_argument("--data", help="registered dataset name or a file/folder path")
    p.add_argument("--model", help=f"one of: {', '.join(MODELS)}")
    p.add_argument("--output", "-o", type=Path, required=True, help="artifact directory to write")
    p.add_argument("--config", type=Path, help="TOML with [data], [model], [train], [eval] tables")
    p.add_argument("--epochs", type=int)
    p.add_argument("--seed", type=int)
    p.add_argument("--device", help="auto, cpu, cuda, cuda:N")
    p.add_argument("--split", choices=["leave-one-out", "temporal"])
    p.add_argument("--format", help="data format: auto, ml-100k, ml-1m, sequences, table")
    p.add_argument("--user-col")
    p.add_argument("--item-col")
    p.add_argument("--time-col")
    p.add_argument("--content", choices=["none", "text", "attrs", "text+attrs"],
                   help="item content fused with the ids: item text through the language model, "
                        "catalog attributes, or both (default: none, or the config's [content])")
    p.add_argument("--vectors", type=Path, help="extra item vectors (.npy with an id list, or "
                                                ".parquet item_id -> vector), e.g. image embeddings")
    p.add_argument("--content-only", action="store_true",
                   help="no id embeddings at all: items are their content (transfers to new items)")
    p.add_argument("--fusion", choices=["sigmoid", "gated", "sum"],
                   help="how content and ids are combined (default: gated)")
    p.add_argument("--task", choices=["next-item", *TASKS],
                   help="what to learn on the sequence encoder (default next-item)")
    p.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE",
                   help="override any config value, e.g. --set train.lr=0.003 (repeatable)")
    p.add_argument("--resume", action="store_true", help="continue from the last epoch checkpoint")
    p.add_argument("--keep-checkpoints", action="store_true",
                   help="keep OUTPUT.checkpoints/ after a successful run")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    add_data_dir(p)
    p.set_defaults(func=cmd_train)


def parse_value(text: str) -> Any:
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


def apply_overrides(raw: dict[str, Any], sets: list[str]) -> None:
    """``SECTION.KEY=VALUE`` into ``raw``; deeper keys name sub-tables (``model.fusion.mode=id``)."""
    for item in sets:
        key, eq, value = item.partition("=")
        *tables, name = key.strip().split(".")
        if not eq or not tables or not all(tables) or not name:
            raise ConfigError(f"--set expects SECTION.KEY=VALUE, got {item!r}")
        table = raw
        for i, t in enumerate(tables):
            table = table.setdefault(t, {})
            if not isinstance(table, dict):
                raise ConfigError(f"--set {item!r}: {'.'.join(tables[: i + 1])} is a value, not a "
                                  "table")
        table[name] = parse_value(value.strip())


def apply_content_flags(raw: dict[str, Any], args: argparse.Namespace) -> None:
    """``--content / --vectors / --content-only / --fusion`` -> ``[content]`` and ``[model.fusion]``."""
    if args.content is None and args.vectors is None and not args.content_only and not args.fusion:
        return
    kind = args.content or ("none" if args.vectors else "text+attrs")
    fusion = raw.setdefault("model", {}).setdefault("fusion", {})
    if kind == "none" and args.vectors is None:
        if args.content_only or args.fusion:
            raise ConfigError("--content-only / --fusion need item content (--content or --vectors)")
        raw.pop("content", None)
        fusion["mode"] = "id"
        return
    content = raw.setdefault("content", {})
    content["text"] = "text" in kind
    content["attributes"] = "attrs" in kind
    if args.vectors is not None:
        content["vectors"] = str(args.vectors)
    if args.content_only and args.fusion:
        raise ConfigError("--content-only and --fusion exclude each other")
    fusion["mode"] = "content" if args.content_only else (args.fusion or fusion.get("mode", "gated"))
    if fusion["mode"] == "id":
        fusion["mode"] = "gated"


def build_config(args: argparse.Namespace) -> RunConfig:
    raw: dict[str, Any] = {}
    if args.config:
        load_run_config(args.config)  # validates the whole file first
        raw = {k: v for k, v in load_toml(args.config).items() if k in SECTIONS}
    data = raw.setdefault("data", {})
    for key, value in (("name", args.data), ("split", args.split), ("format", args.format),
                       ("user_col", args.user_col), ("item_col", args.item_col),
                       ("time_col", args.time_col)):
        if value is not None:
            data[key] = value
    if args.model is not None:
        model = raw.get("model", {})
        raw["model"] = model if model.get("name") == args.model else {"name": args.model}
    train = raw.setdefault("train", {})
    for key, value in (("epochs", args.epochs), ("seed", args.seed), ("device", args.device)):
        if value is not None:
            train[key] = value
    if args.task is not None:
        raw.setdefault("task", {})["name"] = args.task
    apply_content_flags(raw, args)
    apply_overrides(raw, args.set)
    if "name" not in raw["data"]:
        raise ConfigError("no dataset: give --data NAME|PATH or [data] name in --config")
    return RunConfig.from_dict(raw)


def print_result(result: Any, output: Path, cfg: RunConfig) -> None:
    from seqrec.pipeline import RunResult

    assert isinstance(result, RunResult)
    rows = []
    for split_name, m in (("valid", result.valid), ("test", result.test)):
        rows.append({"split": split_name, **{k: m[k] for k in ("HR@10", "NDCG@10", "MRR@10", "Coverage@10")}})
    print(table(rows))
    print(f"\nbest epoch {result.train.best_epoch} ({result.train.stop_reason}); "
          f"{result.train.seconds:.0f} s training")
    print(f"artifact: {output}")
    print_next_steps(output, cfg)


def print_next_steps(output: Path, cfg: RunConfig) -> None:
    out = str(output)
    print("\nnext:")
    print(f"  seqrec evaluate {out} --split test --json")
    print(f"  seqrec recommend {out} --user <USER_ID> --k 10")
    print(f"  seqrec recommend {out} --history <ITEM_ID>,<ITEM_ID> --k 10")
    print(f"  seqrec recommend {out} --input histories.jsonl --output recs.jsonl --k 10")


def cmd_train(args: argparse.Namespace) -> int:
    from seqrec.pipeline import run

    cfg = build_config(args)
    if cfg.task.name != "next-item":
        return train_task(cfg, args)
    print(f"training {cfg.model['name']} on {cfg.data.name}", file=sys.stderr)
    result = run(cfg, args.output, data_dir=data_dir(args), resume=args.resume,
                 keep_checkpoints=args.keep_checkpoints, progress=not args.no_progress,
                 on_epoch=_epoch_line)
    print_result(result, args.output, cfg)
    return 0


def _epoch_line(rec: dict[str, Any]) -> None:
    valid = rec.get("valid") or {}
    loss = "" if rec.get("loss") is None else f" loss {rec['loss']:.4f}"
    if rec.get("repeat_score") is not None:
        loss += f" repeat score {rec['repeat_score']:+.2f}"
    shown = [k for k in ("NDCG@10", "HR@10", "KL", "top1_accuracy", "AUC", "log_loss") if k in valid]
    print(f"epoch {rec['epoch']}:{loss} {rec['train_seconds']:.1f}s{_speed(rec)} valid "
          + " ".join(f"{k} {valid[k]:.4f}" for k in shown), file=sys.stderr, flush=True)


def _speed(rec: dict[str, Any]) -> str:
    """`` (132 GFLOP, 32.9 GFLOP/s of a measured 68: 2.08x the FLOP floor)``; empty for epochs
    that count no FLOPs (models with nothing to train)."""
    if not rec.get("flops") or not rec.get("floor_seconds"):
        return ""
    return (f" ({rec['flops'] / 1e9:,.0f} GFLOP, {rec['gflops_per_second']:.1f} GFLOP/s of a measured "
            f"{rec['matmul_gflops']:.0f}: {rec['train_seconds'] / rec['floor_seconds']:.2f}x the FLOP floor)")


def task_rows(metrics: dict[str, Any]) -> list[dict[str, Any]]:
    """Model vs. baselines, one row each, from a task's evaluation dict."""
    keys = [k for k, v in metrics.items() if isinstance(v, float) and not k.startswith("neg_")]
    rows = [{"model": "sequence model", **{k: metrics[k] for k in keys}}]
    for name, v in metrics.items():
        if name.startswith("baseline_"):
            rows.append({"model": name.removeprefix("baseline_").replace("_", " ") + " baseline",
                         **{k: v.get(k) for k in keys}})
    return rows


def train_task(cfg: RunConfig, args: argparse.Namespace) -> int:
    from seqrec.pipeline import run_task

    print(f"training the {cfg.task.name} task on a {cfg.model['name']} encoder, {cfg.data.name}",
          file=sys.stderr)
    res = run_task(cfg, args.output, data_dir=data_dir(args), progress=not args.no_progress,
                   on_epoch=_epoch_line)
    print(f"test ({res.test.get('users', res.test.get('events'))} users):")
    print(table(task_rows(res.test)))
    print(f"\nbest epoch {res.train.best_epoch} ({res.train.stop_reason}); artifact: {args.output}")
    if cfg.task.name == "interest":
        print(f"  seqrec profile {args.output} --user <USER_ID>")
    print(f"  seqrec evaluate {args.output} --split test --json")
    return 0
