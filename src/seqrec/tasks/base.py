"""A task head on a next-item sequence encoder."""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from torch import Tensor

from seqrec.config import TaskConfig
from seqrec.data.log import ItemCatalog
from seqrec.data.split import Split
from seqrec.models.base import SequenceModel


class TaskModel(SequenceModel):
    """Wraps any neural :class:`SequenceModel` (``encoder``) and adds a head; the encoder's
    ``query``/``item_table`` stay available (so ranking still works), its name and config are the
    encoder's, and the state dict holds ``encoder.*`` plus the head."""

    task: ClassVar[str]
    """The name ``[task] name`` (and ``--task``) gives."""
    select: ClassVar[str]
    """The validation key training selects on (higher is better)."""

    @classmethod
    def for_data(cls, encoder: SequenceModel, cfg: TaskConfig, split: Split,
                 catalog: ItemCatalog) -> TaskModel:
        """A new head for training on ``split`` (what it reads is attached to the split)."""
        raise NotImplementedError

    @classmethod
    def rebuild(cls, encoder: SequenceModel, state: dict[str, Any], n_items: int) -> TaskModel:
        """The head around a loaded encoder, from :meth:`task_state` (its weights come after)."""
        raise NotImplementedError

    def prepare(self, split: Split) -> None:
        """Attach to ``split`` what the head reads beyond the items (nothing by default)."""

    def evaluate(self, split: Split, which: str, device: Any = "cpu") -> dict[str, Any]:
        """The task's metrics on ``which`` users, next to its baselines; holds :attr:`select`."""
        raise NotImplementedError

    def __init__(self, encoder: SequenceModel) -> None:
        super().__init__(encoder.config, encoder.n_items, encoder.content)
        if not encoder.trainable:
            raise ValueError(f"the {self.task} task needs a neural sequence encoder, not {encoder.name!r}")
        if encoder.repeat_logit is not None:
            raise ValueError(f"model.repeat_bias scores items for next-item ranking; the {self.task} "
                             "task ranks nothing")
        self.encoder = encoder
        self.name = encoder.name  # type: ignore[misc]  # the artifact rebuilds this encoder
        self.uses_time = encoder.uses_time  # type: ignore[misc]
        self.report: dict[str, Any] = {}
        """What building the head found in the data (saved in the artifact's report)."""

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
