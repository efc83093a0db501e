"""A task head on a next-item sequence encoder."""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from torch import Tensor

from seqrec.models.base import SequenceModel


class TaskModel(SequenceModel):
    """Wraps any neural :class:`SequenceModel` (``encoder``) and adds a head; the encoder's
    ``query``/``item_table`` stay available (so ranking still works), its name and config are the
    encoder's, and the state dict holds ``encoder.*`` plus the head."""

    task: ClassVar[str]

    def __init__(self, encoder: SequenceModel) -> None:
        super().__init__(encoder.config, encoder.n_items, encoder.content)
        if not encoder.trainable:
            raise ValueError(f"the {self.task} task needs a neural sequence encoder, not {encoder.name!r}")
        self.encoder = encoder
        self.name = encoder.name  # type: ignore[misc]  # the artifact rebuilds this encoder
        self.uses_time = encoder.uses_time  # type: ignore[misc]

    @property
    def max_len(self) -> int:
        return self.encoder.max_len

    def encode(self, seq: Tensor, times: Tensor | None = None) -> Tensor:
        return self.encoder.encode(seq, times)

    def query(self, seq: Tensor, times: Tensor | None = None) -> Tensor:
        return self.encoder.query(seq, times)

    def item_table(self) -> tuple[Tensor, Tensor | None]:
        return self.encoder.item_table()

    def state_width(self) -> int:
        """Size of the encoder's per-position state (``encode``/``query`` output)."""
        with torch.no_grad():
            was = self.encoder.training
            self.encoder.eval()
            d = self.encoder.query(torch.ones(1, 1, dtype=torch.long)).shape[-1]
            self.encoder.train(was)
        return int(d)

    def task_state(self) -> dict[str, Any]:
        """JSON-able facts the head needs to be rebuilt (saved in the artifact's config)."""
        return {}
