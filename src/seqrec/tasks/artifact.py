"""Rebuild a task head around a loaded encoder (the weights come from the artifact after)."""

from __future__ import annotations

from typing import Any

import numpy as np

from seqrec.errors import ArtifactError
from seqrec.models.base import SequenceModel
from seqrec.tasks.base import TaskModel
from seqrec.tasks.binary import BinaryModel
from seqrec.tasks.interest import InterestModel


def wrap_task(encoder: SequenceModel, task: dict[str, Any], n_items: int) -> TaskModel:
    name = task.get("name")
    if name == "interest":
        names = list(task["names"])
        # the category matrix is a buffer: its values come with the weights
        return InterestModel(encoder, np.zeros((n_items + 1, len(names)), dtype=np.float32), names,
                             int(task.get("horizon", 10)))
    if name == "binary":
        return BinaryModel(encoder, float(task.get("threshold", 4.0)))
    raise ArtifactError(f"unknown task {name!r} in the artifact")
