"""Train and evaluate a task head (``interest`` or ``binary``) on a sequence encoder."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from seqrec.artifact import save_artifact
from seqrec.config import RunConfig
from seqrec.data.split import Split
from seqrec.errors import ConfigError
from seqrec.models import build_model
from seqrec.pipeline import Prepared, item_features, prepare
from seqrec.tasks.base import TaskModel
from seqrec.tasks.binary import BinaryModel, RateBaseline, evaluate_binary
from seqrec.tasks.interest import InterestModel, category_matrix, evaluate_interest
from seqrec.train.loop import TrainResult, resolve_device, train

SELECT = {"interest": "neg_KL", "binary": "neg_log_loss"}


@dataclass
class TaskResult:
    model: TaskModel
    split: Split
    train: TrainResult
    valid: dict[str, Any]
    test: dict[str, Any]
    artifact: Path | None


def attach_labels(split: Split, threshold: float) -> None:
    """Binary labels of every event: rating (or label column) >= ``threshold``."""
    if split.seqs.ratings is None:
        raise ConfigError("the binary task needs a rating or label per event; this data has none "
                          "(give [data] rating_col for a table)")
    split.seqs.labels = (split.seqs.ratings >= threshold).astype(np.float32)


def build_task_model(cfg: RunConfig, prepared: Prepared, encoder: Any) -> TaskModel:
    t = cfg.task
    if t.name == "interest":
        M, names, missing = category_matrix(prepared.split.seqs.items_vocab.ids, prepared.catalog,
                                            t.field, t.level)
        model: TaskModel = InterestModel(encoder, M, names, t.horizon)
        model.report = {"categories": len(names), "items_without_category": missing}  # type: ignore[attr-defined]
        return model
    if t.name == "binary":
        attach_labels(prepared.split, t.threshold)
        return BinaryModel(encoder, t.threshold)
    raise ConfigError(f"unknown task {t.name!r}; choose next-item, interest or binary")


def task_evaluate(model: TaskModel, split: Split, which: str, device: Any,
                  baseline: Any = None) -> dict[str, Any]:
    if isinstance(model, InterestModel):
        return evaluate_interest(model, split, which, device)
    return evaluate_binary(model, split, which, device, baseline=baseline)


def run_task(cfg: RunConfig, output: Path | None, *, data_dir: Path | None = None,
             prepared: Prepared | None = None, progress: bool = True,
             on_epoch: Callable[[dict[str, Any]], None] | None = None) -> TaskResult:
    """Train ``cfg.task`` on ``cfg.model``'s encoder; select on validation, test once, save."""
    if cfg.task.name not in SELECT:
        raise ConfigError(f"unknown task {cfg.task.name!r}; choose next-item, interest or binary")
    prepared = prepared or prepare(cfg, data_dir)
    split = prepared.split
    encoder = build_model(cfg.model, split.seqs.n_items, cfg.train.seed,
                          content=item_features(cfg, prepared, progress=progress))
    model = build_task_model(cfg, prepared, encoder)
    device = resolve_device(cfg.train.device)
    baseline = RateBaseline(split) if isinstance(model, BinaryModel) else None
    t0 = time.perf_counter()
    result = train(model, split, cfg.train, workdir=None, progress=progress, on_epoch=on_epoch,
                   validate=lambda m: task_evaluate(m, split, "valid", device, baseline),
                   select=SELECT[cfg.task.name])
    valid = task_evaluate(model, split, "valid", device, baseline)
    test = task_evaluate(model, split, "test", device, baseline)  # reported once
    artifact = None
    if output is not None:
        metrics = {"task": cfg.task.name, "valid": valid, "test": test,
                   "best_epoch": result.best_epoch, "stop_reason": result.stop_reason,
                   "train_seconds": time.perf_counter() - t0, "protocol": {"split": split.protocol}}
        report = {"dataset": prepared.name, "preprocess": split.seqs.report, "split": split.protocol,
                  "task": getattr(model, "report", {})}
        artifact = save_artifact(Path(output), model=model.cpu(), run_config=cfg, seqs=split.seqs,
                                 catalog=prepared.catalog, metrics=metrics, history=result.history,
                                 report=report, features=encoder.content,
                                 task={"name": cfg.task.name, **model.task_state()})
    return TaskResult(model, split, result, valid, test, artifact)
