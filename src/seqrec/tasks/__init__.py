"""Tasks beyond the next item, trained on the same sequence encoder: a head per task.

- ``interest``: the distribution over item categories (genres, Amazon categories) of the user's
  next ``horizon`` items -- a readable interest profile;
- ``binary``: a yes/no label of the next event (MovieLens: rated >= 4 stars; or a label column).

``TASKS`` maps each name to its class; ``seqrec train --task interest|binary`` runs
:func:`seqrec.pipeline.run_task`, and an artifact's head is rebuilt with :func:`rebuild_task`.
"""

from __future__ import annotations

from typing import Any

from seqrec.errors import ArtifactError, ConfigError
from seqrec.models.base import SequenceModel
from seqrec.tasks.base import TaskModel
from seqrec.tasks.binary import BinaryModel
from seqrec.tasks.interest import InterestModel

TASKS: dict[str, type[TaskModel]] = {InterestModel.task: InterestModel, BinaryModel.task: BinaryModel}


def task_class(name: str) -> type[TaskModel]:
    try:
        return TASKS[name]
    except KeyError:
        raise ConfigError(f"unknown task {name!r}; choose next-item, {', '.join(TASKS)}") from None


def rebuild_task(encoder: SequenceModel, state: dict[str, Any], n_items: int) -> TaskModel:
    """The head an artifact's ``config.json`` names (``{"name": ..., **task_state}``)."""
    cls = TASKS.get(state.get("name", ""))
    if cls is None:
        raise ArtifactError(f"unknown task {state.get('name')!r} in the artifact")
    return cls.rebuild(encoder, state, n_items)


__all__ = ["TASKS", "TaskModel", "InterestModel", "BinaryModel", "task_class", "rebuild_task"]
