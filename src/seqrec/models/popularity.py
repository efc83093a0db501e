"""MostPopular: every user gets the items with the most training interactions."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import Tensor

from seqrec.models.base import ModelConfig, SequenceModel

if TYPE_CHECKING:
    from seqrec.data.split import Split


@dataclass
class PopConfig(ModelConfig):
    max_len: int = 1
    """Popularity ignores the history's content (seen items are still masked by the evaluator)."""


def train_event_mask(split: Split) -> np.ndarray:
    """Boolean over ``split.seqs.items``: True for events inside a user's training range."""
    seqs = split.seqs
    pos = np.arange(seqs.n_events)
    user_of = np.repeat(np.arange(seqs.n_users), seqs.lengths)
    return (pos >= split.train_start[user_of]) & (pos < split.train_end[user_of])


class MostPopular(SequenceModel):
    """Score = number of training interactions; the query is the constant 1 (``D = 1``)."""

    name = "pop"
    config_class = PopConfig
    trainable = False

    def __init__(self, config: PopConfig, n_items: int) -> None:
        super().__init__(config, n_items)
        self.register_buffer("counts", torch.zeros(n_items + 1))

    def query(self, seq: Tensor) -> Tensor:
        return torch.ones(seq.shape[0], 1, device=self.counts.device)  # [B, 1]

    def item_table(self) -> tuple[Tensor, Tensor | None]:
        return self.counts[:, None], None  # [N+1, 1]

    def fit_counts(self, split: Split) -> None:
        items = split.seqs.items[train_event_mask(split)]
        counts = np.bincount(items, minlength=self.n_items + 1).astype(np.float32)
        counts[0] = 0.0
        self.counts.copy_(torch.from_numpy(counts))
