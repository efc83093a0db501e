"""A trained model as one self-describing directory, written atomically and loaded without pickle.

    weights.safetensors   model tensors
    config.json           model name + config, the whole run config, format version
    vocab.json            item and user ids (index i <-> ids[i - 1]; 0 = padding)
    catalog.parquet       display fields of every item, in index order
    interactions.parquet  the preprocessed events (user_idx, item_idx, timestamp): histories for
                          ``recommend --user`` and the exact split for ``evaluate``
    metrics.json          validation (selected epoch) and test metrics, with the protocol
    history.json          per epoch: loss, validation metrics, seconds
    history.png           the same as a plot
    report.json           what preprocessing and splitting did
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import torch
from safetensors.torch import load_file, save_file

import seqrec
from seqrec.config import RunConfig, from_dict
from seqrec.data.log import ItemCatalog
from seqrec.data.preprocess import Sequences
from seqrec.data.vocab import Vocab
from seqrec.errors import ArtifactError
from seqrec.fsutil import atomic_directory
from seqrec.models import config_dict, model_class
from seqrec.models.base import SequenceModel
from seqrec.plots import plot_history
from seqrec.tasks import rebuild_task

FORMAT_VERSION = 1
REQUIRED = ("weights.safetensors", "config.json", "vocab.json", "catalog.parquet",
            "interactions.parquet", "metrics.json", "history.json")


@dataclass
class Artifact:
    path: Path
    model: SequenceModel
    run_config: RunConfig
    seqs: Sequences
    catalog: ItemCatalog
    """Display fields, one row per item index 1..N in order."""
    metrics: dict[str, Any] = field(default_factory=dict)
    history: list[dict[str, Any]] = field(default_factory=list)
    report: dict[str, Any] = field(default_factory=dict)
    features: Any = None
    """:class:`~seqrec.content.features.ItemFeatures` of content-aware models, else None."""

    @property
    def items(self) -> Vocab:
        return self.seqs.items_vocab

    @property
    def users(self) -> Vocab:
        return self.seqs.users


def _write_json(path: Path, obj: Any) -> None:
    path.write_text(json.dumps(obj, indent=2, default=_json_default))


def _json_default(o: Any) -> Any:
    if isinstance(o, (np.integer,)):
        return int(o)
    if isinstance(o, (np.floating,)):
        return float(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def save_artifact(
    path: str | Path,
    *,
    model: SequenceModel,
    run_config: RunConfig,
    seqs: Sequences,
    catalog: ItemCatalog,
    metrics: dict[str, Any],
    history: list[dict[str, Any]],
    report: dict[str, Any],
    features: Any = None,
    task: dict[str, Any] | None = None,
) -> Path:
    """Write the artifact to ``path`` as a whole: a crash leaves the previous one (or none).

    ``features``: the model's :class:`~seqrec.content.features.ItemFeatures`, saved beside the
    weights (``item_features.*``) for text queries and for growing the catalog later.
    """
    path = Path(path)
    with atomic_directory(path) as tmp:
        if features is not None:
            features.save(tmp)
        state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
        save_file(state, str(tmp / "weights.safetensors"), metadata={"model": model.name})
        _write_json(tmp / "config.json", {
            "format_version": FORMAT_VERSION,
            "seqrec_version": seqrec.__version__,
            "model": config_dict(model),
            "n_items": model.n_items,
            "run": run_config.to_dict(),
            **({"task": task} if task else {}),
        })
        items = features.item_ids if features is not None else seqs.items_vocab.ids  # + cold items
        _write_json(tmp / "vocab.json", {"items": items, "users": seqs.users.ids})
        cat = catalog.restrict(items).df
        cat.with_columns(pl.Series("item_idx", np.arange(1, len(cat) + 1))).write_parquet(
            tmp / "catalog.parquet")
        user_idx = np.repeat(np.arange(seqs.n_users), seqs.lengths)
        pl.DataFrame({
            "user_idx": user_idx,
            "item_idx": seqs.items,
            "timestamp": pl.Series(seqs.times, dtype=pl.Int64) if seqs.times is not None
            else pl.Series([None] * seqs.n_events, dtype=pl.Int64),
            "rating": pl.Series(seqs.ratings, dtype=pl.Float64) if seqs.ratings is not None
            else pl.Series([None] * seqs.n_events, dtype=pl.Float64),
        }).write_parquet(tmp / "interactions.parquet")
        _write_json(tmp / "metrics.json", metrics)
        _write_json(tmp / "history.json", history)
        _write_json(tmp / "report.json", report)
        plot_history(history, tmp / "history.png", title=f"{model.name}: {run_config.data.name}",
                     metric=run_config.train.select_metric)
    return path


def load_features(path: Path) -> Any:
    """The artifact's item features, or None for an ids-only model."""
    if not (path / "item_features.json").exists():
        return None
    from seqrec.content.features import ItemFeatures

    return ItemFeatures.load(path)


def load_model(path: Path, config: dict[str, Any], features: Any = None) -> SequenceModel:
    spec = dict(config["model"])
    cls = model_class(spec.pop("name"))
    model = cls(from_dict(cls.config_class, spec, where="model"), config["n_items"], features)
    task = config.get("task")
    if task:  # a task head on the encoder (seqrec.tasks)
        model = rebuild_task(model, task, n_items=config["n_items"])
    state = load_file(str(path / "weights.safetensors"))
    if "cold_mask" in state:  # a calibrated cold-item offset (SequenceModel.set_cold_offset)
        model.set_cold_offset(state["cold_mask"], float(state["cold_offset"]))
    if "cold_index" in state:  # calibrated rows of untrained items (SequenceModel.set_cold_rows)
        model.set_cold_rows(state["cold_index"], state["cold_rows"], state["cold_bias"])
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise ArtifactError(f"{path}: weights do not match the model (missing {missing}, "
                            f"unexpected {unexpected})")
    return model.eval()


def load_artifact(path: str | Path, device: str | torch.device = "cpu") -> Artifact:
    path = Path(path)
    if not path.is_dir():
        raise ArtifactError(f"no artifact directory at {path}")
    missing = [f for f in REQUIRED if not (path / f).exists()]
    if missing:
        raise ArtifactError(f"{path} is not a complete artifact: missing {', '.join(missing)}")
    config = json.loads((path / "config.json").read_text())
    if config.get("format_version") != FORMAT_VERSION:
        raise ArtifactError(f"{path}: artifact format {config.get('format_version')} is not "
                            f"supported (expected {FORMAT_VERSION})")
    vocab = json.loads((path / "vocab.json").read_text())
    items, users = Vocab(vocab["items"]), Vocab(vocab["users"])
    features = load_features(path)
    if features is not None:
        features.check_aligned(items.ids)
    inter = pl.read_parquet(path / "interactions.parquet")
    counts = np.bincount(inter["user_idx"].to_numpy(), minlength=len(users))
    offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    ts = inter["timestamp"]
    ratings = inter["rating"] if "rating" in inter.columns else None
    report = json.loads((path / "report.json").read_text()) if (path / "report.json").exists() else {}
    seqs = Sequences(users=users, items_vocab=items, offsets=offsets,
                     items=inter["item_idx"].to_numpy().astype(np.int64),
                     times=None if ts.null_count() == len(ts) else ts.to_numpy().astype(np.int64),
                     ratings=None if ratings is None or ratings.null_count() == len(ratings)
                     else ratings.to_numpy().astype(np.float32),
                     report=report.get("preprocess", {}))
    catalog = ItemCatalog(pl.read_parquet(path / "catalog.parquet").sort("item_idx"))
    return Artifact(
        path=path,
        model=load_model(path, config, features).to(device),
        run_config=RunConfig.from_dict(config["run"]),
        seqs=seqs,
        catalog=catalog,
        metrics=json.loads((path / "metrics.json").read_text()),
        history=json.loads((path / "history.json").read_text()),
        report=report,
        features=features,
    )
