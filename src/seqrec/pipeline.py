"""Data -> split -> model -> training -> evaluation -> artifact, as one library call.

:func:`run` trains a next-item model, :func:`run_task` a task head (``seqrec.tasks``) on a
sequence encoder. The CLI's ``train`` and ``quickstart`` and the benchmarks are thin layers over
them.
"""

from __future__ import annotations

import dataclasses
import logging
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from seqrec.artifact import save_artifact
from seqrec.config import RunConfig
from seqrec.data import datasets
from seqrec.data.log import ItemCatalog
from seqrec.data.preprocess import preprocess
from seqrec.data.split import Split, make_split
from seqrec.errors import ConfigError
from seqrec.evaluate.protocol import evaluate
from seqrec.matmul import products_name
from seqrec.models import build_model, model_config
from seqrec.models.base import SequenceModel
from seqrec.tasks import task_class
from seqrec.train.calibrate import calibrate_cold_items
from seqrec.train.loop import TrainResult, resolve_device, selection_eval_config, train
from seqrec.train.speed import device_name

log = logging.getLogger(__name__)


@dataclass
class Prepared:
    split: Split
    catalog: ItemCatalog
    name: str
    seconds: float


@dataclass
class RunResult:
    """What :func:`run` and :func:`run_task` return (a task's metrics also hold its baselines)."""

    model: SequenceModel
    split: Split
    train: TrainResult
    valid: dict[str, Any]
    test: dict[str, Any]
    protocol: dict[str, Any]
    artifact: Path | None
    data_seconds: float
    segments: dict[str, Any] = field(default_factory=dict)
    """Cold-start protocol metrics (cold vs. warm items, cold users after k events), if any."""
    calibration: dict[str, Any] | None = None
    """``train.calibrate_cold_items``: the offset chosen on validation and what was tried."""
    refit: dict[str, Any] | None = None
    """``train.refit``: the retrained model's epochs, seconds and per-epoch losses."""


def prepare(cfg: RunConfig, data_dir: Path | None = None) -> Prepared:
    """Read, clean and split the data named by ``cfg.data``."""
    t = time.perf_counter()
    log_, catalog, name = datasets.load(cfg.data, data_dir)
    seqs = preprocess(log_, cfg.data)
    split = make_split(seqs, cfg.data)
    return Prepared(split, catalog, name, time.perf_counter() - t)


def item_features(cfg: RunConfig, prepared: Prepared, progress: bool = True) -> Any:
    """The :class:`~seqrec.content.features.ItemFeatures` that ``cfg.content`` asks for (None for
    ids only), aligned to the split's item indices; checked against ``[model.fusion]``."""
    _, model_cfg = model_config(cfg.model)
    mode = model_cfg.fusion.mode
    if cfg.content is None:
        if mode != "id":
            raise ConfigError(f"[model.fusion] mode {mode!r} needs item content: add a [content] "
                              "table (or --content text|attrs|text+attrs)")
        return None
    if mode == "id" and not cfg.train.cold_item_neighbours:  # ids plus text for neighbours only
        raise ConfigError("[content] is set but [model.fusion] mode is 'id', which ignores it: "
                          "choose content, sigmoid, gated or sum (or set "
                          "train.cold_item_neighbours, which reads the text for cold items)")
    from seqrec.content.features import build_item_features

    feats = build_item_features(prepared.split.seqs.items_vocab.ids, prepared.catalog, cfg.content,
                                progress=progress)
    n = feats.n_items
    if feats.report.get("not_in_catalog", 0) == n:
        raise ConfigError(f"none of the {n} items is in the item catalog of {prepared.name!r}, so "
                          "they have no content; give a dataset with item metadata, or --content none")
    return feats


def cold_start_metrics(model: SequenceModel, split: Split, cfg: RunConfig, test: Any,
                       device: Any) -> dict[str, Any]:
    """Test metrics on cold vs. warm target items, and per ``k`` for held-out (cold) users."""
    out: dict[str, Any] = {}
    if split.cold_items is not None:
        cold = np.isin(test.targets, split.cold_items)
        out["test_cold_items"] = test.segment(cold, cfg.eval.ks)
        out["test_warm_items"] = test.segment(~cold, cfg.eval.ks)
    for k in split.cold_users:
        out[f"cold_users@{k}"] = evaluate(model, split, f"cold-users@{k}", cfg.eval,
                                          device=device).metrics
    return out


def refit_model(cfg: RunConfig, split: Split, content: Any, epochs: int, progress: bool
                ) -> tuple[SequenceModel, dict[str, Any]]:
    """A fresh model trained for ``epochs`` (chosen on validation) on every event before the test
    targets: nothing is selected on the data it trains on (its last epoch is kept). The learning
    rate follows the selection run's schedule (a cosine still spans ``train.epochs``)."""
    if epochs < 1:
        raise ValueError("refit needs a selected epoch: the selection run trained none")
    t0 = time.perf_counter()
    model = build_model(cfg.model, split.seqs.n_items, cfg.train.seed, content=content)
    train_cfg = dataclasses.replace(cfg.train, max_minutes=0.0, patience=epochs + 1,
                                    eval_every=epochs)
    # no validation: its targets are training data now; the one "evaluation" keeps the last epoch
    res = train(model, split.with_test_inputs_trained(), train_cfg, cfg.eval, progress=progress,
                validate=lambda m: {cfg.train.select_metric: 0.0}, stop_after=epochs)
    return model, {"epochs": epochs, "seconds": time.perf_counter() - t0,
                   "history": [{k: h[k] for k in ("epoch", "loss", "train_seconds")}
                               for h in res.trained]}


def fused_content(cfg: RunConfig, features: Any) -> Any:
    """The item features the model itself reads: none for an id-only model, which may still read
    item text (``features``) for the cold-item neighbours alone."""
    return None if model_config(cfg.model)[1].fusion.mode == "id" else features


def protocol_record(cfg: RunConfig, split: Split, test: Any, refit_epochs: int | None = None,
                  selection: str = "the selection run") -> dict[str, Any]:
    """The protocol record of a test evaluation; with ``refit_epochs``, how the refit model it
    tested was made and where the validation metrics (``selection``) come from."""
    protocol = {**test.protocol, "split": split.protocol,
                "select_metric": f"validation {cfg.train.select_metric}"}
    if refit_epochs is not None:
        protocol["refit"] = (
            f"test metrics from a model retrained for the selected {refit_epochs} epochs on every "
            f"event before the test targets (validation targets included); validation metrics "
            f"from {selection}")
    return protocol


def checkpoint_dir(output: Path) -> Path:
    """Where per-epoch checkpoints of a run writing ``output`` live (a sibling folder)."""
    return output.parent / f"{output.name}.checkpoints"


def run(
    cfg: RunConfig,
    output: Path | None,
    *,
    data_dir: Path | None = None,
    prepared: Prepared | None = None,
    resume: bool = False,
    keep_checkpoints: bool = False,
    progress: bool = True,
    on_epoch: Callable[[dict[str, Any]], None] | None = None,
    with_test: bool = True,
) -> RunResult:
    """Train ``cfg.model`` on ``cfg.data``, select on validation, test once, save to ``output``.

    ``with_test=False`` stops after validation (nothing saved): what tuning uses.
    """
    model_config(cfg.model)  # a bad model name or field fails before any data is read
    if cfg.train.calibrate_cold_items and cfg.train.refit:
        raise ConfigError("train.calibrate_cold_items and train.refit cannot be combined: the "
                          "offset is chosen on validation targets, which a refit trains on")
    if cfg.train.cold_item_neighbours and not (
            cfg.train.calibrate_cold_items and cfg.content is not None and cfg.content.text):
        raise ConfigError("train.cold_item_neighbours needs train.calibrate_cold_items = true and "
                          "item text ([content] text = true, or --content text): the neighbours "
                          "are found by text vector")
    prepared = prepared or prepare(cfg, data_dir)
    split = prepared.split
    features = item_features(cfg, prepared, progress=progress)
    content = fused_content(cfg, features)
    model = build_model(cfg.model, split.seqs.n_items, cfg.train.seed, content=content)
    workdir = None
    if output is not None and model.trainable:
        workdir = checkpoint_dir(Path(output))
        if resume and not workdir.exists():
            raise FileNotFoundError(f"--resume: no checkpoints at {workdir}")
        workdir.mkdir(parents=True, exist_ok=True)
    result = train(model, split, cfg.train, cfg.eval, workdir=workdir, resume=resume,
                   progress=progress, on_epoch=on_epoch)
    device = resolve_device(cfg.train.device)
    calibration = None
    if cfg.train.calibrate_cold_items and model.trainable:
        calibration = calibrate_cold_items(
            model, split, selection_eval_config(cfg.eval, cfg.train.select_metric),
            cfg.train.select_metric, device,
            neighbour_vectors=features.text if cfg.train.cold_item_neighbours else None,
            min_share=cfg.train.cold_item_min_share)
    valid = evaluate(model, split, "valid", cfg.eval, device=device)
    if not with_test:  # model selection (tuning): the test split is never looked at
        return RunResult(model, split, result, valid.metrics, {}, valid.protocol, None, prepared.seconds,
                         calibration=calibration)
    refit = None
    if cfg.train.refit and model.trainable:
        model, refit = refit_model(cfg, split, content, result.best_epoch, progress)
    test = evaluate(model, split, "test", cfg.eval, device=device, progress=progress)  # reported once
    metrics: dict[str, Any] = {
        "valid": valid.metrics,
        "test": test.metrics,
        "best_epoch": result.best_epoch,
        "stop_reason": result.stop_reason,
        "train_seconds": result.seconds,
        "matmul_gflops": result.matmul_gflops,  # 0 for models with nothing to train
        "processor": device_name(device),  # the ceiling differs from one host (or card) to the next
        "matmul_products": products_name(device),  # oneDNN or torch.mm (seqrec.matmul)
        "heap": result.heap,  # freed memory kept in the process on a CPU (seqrec.train.heap)
        "protocol": protocol_record(cfg, split, test, None if refit is None else result.best_epoch),
    }
    if calibration is not None:
        metrics["cold_item_calibration"] = calibration
    if refit is not None:
        metrics["refit"] = refit
    segments = cold_start_metrics(model, split, cfg, test, device)
    metrics.update(segments)
    artifact = None
    if output is not None:
        report = {"dataset": prepared.name, "preprocess": split.seqs.report, "split": split.protocol}
        if features is not None:
            report["content"] = features.report
        artifact = save_artifact(Path(output), model=model.cpu(), run_config=cfg, seqs=split.seqs,
                                 catalog=prepared.catalog, metrics=metrics, history=result.history,
                                 report=report, features=content)
        if workdir is not None and not keep_checkpoints:
            shutil.rmtree(workdir, ignore_errors=True)
    return RunResult(model, split, result, valid.metrics, test.metrics, metrics["protocol"], artifact,
                     prepared.seconds, segments, calibration=calibration, refit=refit)


def run_task(cfg: RunConfig, output: Path | None, *, data_dir: Path | None = None,
             prepared: Prepared | None = None, progress: bool = True,
             on_epoch: Callable[[dict[str, Any]], None] | None = None) -> RunResult:
    """Train ``cfg.task`` on ``cfg.model``'s encoder; select on validation, test once, save."""
    cls = task_class(cfg.task.name)  # a bad task name fails before any data is read
    prepared = prepared or prepare(cfg, data_dir)
    split = prepared.split
    encoder = build_model(cfg.model, split.seqs.n_items, cfg.train.seed,
                          content=item_features(cfg, prepared, progress=progress))
    model = cls.for_data(encoder, cfg.task, split, prepared.catalog)
    device = resolve_device(cfg.train.device)
    t0 = time.perf_counter()
    result = train(model, split, cfg.train, workdir=None, progress=progress, on_epoch=on_epoch,
                   validate=lambda m: model.evaluate(split, "valid", device), select=cls.select)
    valid = model.evaluate(split, "valid", device)
    test = model.evaluate(split, "test", device)  # reported once
    protocol = {"split": split.protocol}
    artifact = None
    if output is not None:
        metrics = {"task": cls.task, "valid": valid, "test": test,
                   "best_epoch": result.best_epoch, "stop_reason": result.stop_reason,
                   "train_seconds": time.perf_counter() - t0, "protocol": protocol}
        report = {"dataset": prepared.name, "preprocess": split.seqs.report, "split": split.protocol,
                  "task": model.report}
        artifact = save_artifact(Path(output), model=model.cpu(), run_config=cfg, seqs=split.seqs,
                                 catalog=prepared.catalog, metrics=metrics, history=result.history,
                                 report=report, features=encoder.content,
                                 task={"name": cls.task, **model.task_state()})
    return RunResult(model, split, result, valid, test, protocol, artifact, prepared.seconds)
