"""Tasks beyond the next item, trained on the same sequence encoder: a head per task.

- ``interest``: the distribution over item categories (genres, Amazon categories) of the user's
  next ``horizon`` items -- a readable interest profile;
- ``binary``: a yes/no label of the next event (MovieLens: rated >= 4 stars; or a label column).

``seqrec train --task interest|binary`` runs :func:`seqrec.tasks.runner.run_task`.
"""

from seqrec.tasks.base import TaskModel
from seqrec.tasks.binary import BinaryModel
from seqrec.tasks.interest import InterestModel

TASKS: dict[str, type[TaskModel]] = {InterestModel.task: InterestModel, BinaryModel.task: BinaryModel}

__all__ = ["TASKS", "TaskModel", "InterestModel", "BinaryModel"]
