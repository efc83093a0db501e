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


class MostPopular(SequenceModel):
    """Score = number of training interactions; the query is the constant 1 (``D = 1``)."""

    name = "pop"
    config_class = PopConfig
    trainable = False

    def __init__(self, config: PopConfig, n_items: int, content=None) -> None:
        super().__init__(config, n_items, content)
        self.register_buffer("counts", torch.zeros(n_items + 1))

    def query(self, seq: Tensor, times: Tensor | None = None) -> Tensor:
        return torch.ones(seq.shape[0], 1, device=self.counts.device)  # [B, 1]

    def item_table(self) -> tuple[Tensor, Tensor | None]:
        return self.counts[:, None], None  # [N+1, 1]

    def fit_counts(self, split: Split) -> None:
        counts = split.train_item_counts().astype(np.float32)
        self.counts.copy_(torch.from_numpy(counts))
