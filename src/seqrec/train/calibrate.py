"""Cold-item calibration: one score offset for items that had no training events.

A model trained on a log ranks the items it saw with everything it learned about them, their
popularity included; an item it never saw (held out, or new in the catalog) is scored from its
content alone and lands below warm items of equal relevance. One additive offset for those items
corrects the scale. It is chosen on the validation split (the selection metric over *all*
validation targets, so it trades warm accuracy for cold only where that pays overall), saved with
the model, and applied wherever the model ranks (evaluation, recommendation, serving), so the
test split and the served lists see exactly what validation chose.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import torch

from seqrec.config import EvalConfig
from seqrec.data.split import Split
from seqrec.evaluate.protocol import evaluate
from seqrec.evaluate.ranking import history_batch
from seqrec.models.base import SequenceModel

log = logging.getLogger(__name__)

FRACTIONS = (-0.2, -0.1, -0.05, 0.0, 0.02, 0.05, 0.1, 0.2, 0.3, 0.5, 1.0)
"""Offsets tried, in units of :func:`score_unit`: fine near 0, where the best one lies when the
untrained items are a small share of the targets (every cold item lifted displaces warm ones
from many lists), and negative ones for models that over-score what they never saw."""


def untrained_items(split: Split) -> np.ndarray:
    """``[N+1]`` bool: items with no training event (index 0, padding, is False)."""
    cold = split.train_item_counts() == 0
    cold[0] = False
    return cold


@torch.no_grad()
def score_unit(model: SequenceModel, split: Split, warm: np.ndarray, device: Any,
               users: int = 1024, k: int = 10) -> float:
    """How far apart a user's ``k``-th best and median warm item scores are, averaged over up to
    ``users`` validation users: an offset of one unit lifts a median item into the top ``k``."""
    es = split.valid
    n = min(users, len(es))
    hist, _ = history_batch(split.seqs.items, es.hist_start[:n], es.hist_end[:n], model.max_len,
                            device, False)
    s = model.scores(hist)[:, torch.from_numpy(warm).to(hist.device)]  # [n, warm items]
    kth = s.topk(min(k, s.shape[1]), dim=1).values[:, -1]
    return float((kth - s.median(dim=1).values).mean())


def calibrate_cold_items(model: SequenceModel, split: Split, eval_cfg: EvalConfig, metric: str,
                         device: Any = "cpu") -> dict[str, Any]:
    """Choose the offset of :func:`untrained_items` on validation ``metric``, set it on ``model``
    (:meth:`~seqrec.models.base.SequenceModel.set_cold_offset`) and return what was tried.

    Ties go to the offset nearest 0; with no untrained item nothing is set.
    """
    cold = untrained_items(split)
    if not cold.any():
        return {"items": 0, "offset": 0.0, "note": "every item has training events: nothing to calibrate"}
    was_training = model.training
    model.eval()
    warm = np.flatnonzero(~cold)[1:]  # index 0 is padding
    unit = score_unit(model, split, warm, device)
    mask = torch.from_numpy(cold)
    tried: list[dict[str, float]] = []
    for f in FRACTIONS:
        model.set_cold_offset(mask, f * unit)
        value = evaluate(model, split, "valid", eval_cfg, device=device).metrics[metric]
        tried.append({"offset": f * unit, "fraction": f, metric: value})
    without = next(t for t in tried if t["fraction"] == 0.0)
    # the best value; among equals the smallest offset (0 first)
    top = max(tried, key=lambda t: (t[metric], -abs(t["fraction"])))
    best = (top[metric], top["offset"])
    model.set_cold_offset(mask, best[1])
    model.train(was_training)
    out = {"items": int(cold.sum()), "offset": best[1], "unit": unit,
           f"valid {metric}": best[0], f"valid {metric} without": without[metric], "tried": tried,
           "rule": f"offset added to the score of items with no training event, chosen on "
                   f"validation {metric} over all targets"}
    if top["fraction"] in (FRACTIONS[0], FRACTIONS[-1]):
        out["note"] = "the best offset is at the end of the range tried: one further out might be better"
    log.info("cold-item offset %.4g (%d items): validation %s %.4f -> %.4f", best[1],
             out["items"], metric, without[metric], best[0])
    return out
