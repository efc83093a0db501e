"""The model registry: ``MODELS`` maps each command-line name to its class."""

from __future__ import annotations

import dataclasses
from typing import Any

import torch

from seqrec.config import from_dict
from seqrec.errors import ConfigError
from seqrec.models.base import ModelConfig, SequenceModel
from seqrec.models.bert4rec import BERT4Rec
from seqrec.models.gru4rec import GRU4Rec
from seqrec.models.hstu import HSTU
from seqrec.models.lstm import LSTMRec
from seqrec.models.popularity import MostPopular
from seqrec.models.recent_popularity import RecentPopular
from seqrec.models.sasrec import SASRec

MODELS: dict[str, type[SequenceModel]] = {
    m.name: m for m in (MostPopular, RecentPopular, LSTMRec, GRU4Rec, SASRec, BERT4Rec, HSTU)
}


def model_class(name: str) -> type[SequenceModel]:
    try:
        return MODELS[name]
    except KeyError:
        raise ConfigError(f"unknown model {name!r}; choose one of {', '.join(MODELS)}") from None


def model_config(spec: dict[str, Any]) -> tuple[type[SequenceModel], ModelConfig]:
    """``{"name": ..., **fields}`` -> (class, typed config); unknown fields are errors."""
    spec = dict(spec)
    cls = model_class(spec.pop("name", "sasrec"))
    return cls, from_dict(cls.config_class, spec, where="model")


def build_model(spec: dict[str, Any], n_items: int, seed: int, content: Any = None) -> SequenceModel:
    """A freshly initialised model; the seed makes initialisation reproducible. ``content``:
    :class:`~seqrec.content.features.ItemFeatures` for content-aware item encoders."""
    cls, cfg = model_config(spec)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return cls(cfg, n_items, content)


def config_dict(model: SequenceModel) -> dict[str, Any]:
    return {"name": model.name, **dataclasses.asdict(model.config)}


__all__ = ["MODELS", "SequenceModel", "ModelConfig", "build_model", "model_config", "model_class",
           "config_dict"]
