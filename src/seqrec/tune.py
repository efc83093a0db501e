"""Hyper-parameter search with Optuna, on the validation split only.

The search space comes from the config's ``[tune]`` table (``"section.key" = [choices]`` or
``{low = ..., high = ..., log = true}``), or a default per model. Every trial trains with the
usual early stopping and is scored by validation ``select_metric``; the test split is never
evaluated. The best trial is written as a frozen TOML config.
"""

from __future__ import annotations

import copy
import dataclasses
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from seqrec.config import RunConfig, to_toml
from seqrec.errors import ConfigError
from seqrec.fsutil import atomic_write_text
from seqrec.models import model_config

log = logging.getLogger(__name__)


def default_space(model_name: str) -> dict[str, Any]:
    """A sensible search space for ``model_name``: learning rate, batch, the item table's weight
    decay (the regulariser that mattered most on Beauty), and the model's size and dropout."""
    space: dict[str, Any] = {"train.lr": {"low": 3e-4, "high": 1e-2, "log": True},
                             "train.batch_size": [64, 128, 256],
                             "train.emb_weight_decay": [0.0, 0.5, 1.0]}
    cls, cfg = model_config({"name": model_name})
    fields = {f.name for f in dataclasses.fields(cfg)}
    if "dropout" in fields:
        space["model.dropout"] = {"low": 0.0, "high": 0.6}
    for name in ("d_model", "embed_dim", "hidden_dim"):
        if name in fields:
            space[f"model.{name}"] = [32, 64, 128]
    if "n_blocks" in fields:
        space["model.n_blocks"] = [1, 2, 3]
    if "ffn" in fields:  # HSTU's optional feed-forward layer
        space["model.ffn"] = [0, 128, 256]
    return space


def _suggest(trial: Any, key: str, spec: Any) -> Any:
    if isinstance(spec, list):
        return trial.suggest_categorical(key, spec)
    if isinstance(spec, dict) and {"low", "high"} <= set(spec):
        low, high = spec["low"], spec["high"]
        if isinstance(low, int) and isinstance(high, int) and not spec.get("log_float"):
            return trial.suggest_int(key, low, high, log=bool(spec.get("log", False)))
        return trial.suggest_float(key, float(low), float(high), log=bool(spec.get("log", False)))
    raise ConfigError(f"[tune] {key!r}: expected a list of choices or {{low, high[, log]}}, got {spec!r}")


def apply(cfg: RunConfig, params: dict[str, Any]) -> RunConfig:
    """A copy of ``cfg`` with ``{"section.key": value}`` applied (validated by ``from_dict``)."""
    raw = copy.deepcopy(cfg.to_dict())
    for key, value in params.items():
        section, _, name = key.partition(".")
        if section not in raw or not name:
            raise ConfigError(f"[tune] key {key!r} must be section.key with section data, model, "
                              "train or eval")
        raw[section][name] = value
    out = RunConfig.from_dict(raw)
    model_config(out.model)
    return out


@dataclass
class TuneResult:
    best_params: dict[str, Any]
    best_value: float
    best_config: RunConfig
    trials: list[dict[str, Any]]


def tune(
    cfg: RunConfig,
    trials: int,
    space: dict[str, Any] | None = None,
    *,
    data_dir: Path | None = None,
    seed: int = 0,
    on_trial: Callable[[dict[str, Any]], None] | None = None,
) -> TuneResult:
    """Run ``trials`` Optuna trials (TPE sampler, seeded) maximising validation ``select_metric``."""
    import optuna

    from seqrec.pipeline import prepare, run

    space = space or default_space(cfg.model["name"])
    for key in space:  # fail on a bad key before the first trial
        apply(cfg, {key: _suggest(optuna.trial.FixedTrial({key: _first(space[key])}), key, space[key])})
    prepared = prepare(cfg, data_dir)
    log_rows: list[dict[str, Any]] = []

    def objective(trial: Any) -> float:
        params = {k: _suggest(trial, k, v) for k, v in space.items()}
        t = time.perf_counter()
        res = run(apply(cfg, params), None, prepared=prepared, progress=False, with_test=False)
        value = res.valid[cfg.train.select_metric]
        row = {"trial": trial.number, "params": params, "valid": value,
               "best_epoch": res.train.best_epoch, "seconds": time.perf_counter() - t}
        log_rows.append(row)
        if on_trial:
            on_trial(row)
        return value

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.TPESampler(seed=seed))
    study.optimize(objective, n_trials=trials)
    best = study.best_trial
    return TuneResult(best.params, float(best.value), apply(cfg, best.params), log_rows)


def _first(spec: Any) -> Any:
    return spec[0] if isinstance(spec, list) else spec.get("low")


def write_frozen(path: Path, result: TuneResult, metric: str, source: str) -> None:
    """The best config as TOML, with how it was found and the validation score it reached."""
    d = result.best_config.to_dict()
    header = (f"Frozen by `seqrec tune {source}` ({len(result.trials)} trials, validation only).\n"
              f"Best validation {metric}: {result.best_value:.5f}. The test split was not evaluated:\n"
              f"run `seqrec train --config {path.name} --output DIR` and report its test metrics once.")
    tables = {k: d[k] for k in ("data", "model", "train", "eval")}
    if d.get("content") is not None:
        tables["content"] = d["content"]
    tables["task"] = d["task"]
    tables["expected"] = {f"valid_{metric}": round(result.best_value, 5)}
    atomic_write_text(path, to_toml(tables, header))
