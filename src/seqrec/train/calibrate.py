"""Cold-item calibration: how items that had no training events are ranked.

A model trained on a log ranks the items it saw with everything it learned about them, their
popularity included; an item it never saw (held out, or new in the catalog) is scored from its
content alone and lands below warm items of equal relevance. One additive offset for those items
corrects the scale. It is chosen on the validation split (the selection metric over *all*
validation targets, so it trades warm accuracy for cold only where that pays overall), saved with
the model, and applied wherever the model ranks (evaluation, recommendation, serving), so the
test split and the served lists see exactly what validation chose.

With item vectors from content (``neighbour_vectors``, e.g. the title embeddings), each untrained
item may first take the similarity-weighted mean of the ranking rows of its ``k`` most similar
trained items (softmax of cosine / ``tau``), instead of the row the model computes for it: a
shade of a lipstick the log never saw is ranked like the shades it did see. Whether to, and
which ``k``/``tau``, is chosen on validation the same way, before the offset.
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

NEIGHBOURS = ((1, 0.02), (3, 0.02), (3, 0.1), (10, 0.02), (10, 0.1))
"""``(k, tau)`` tried for neighbour rows: one nearest item, or a sharp or soft mean of a few."""

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


def neighbour_rows(model: SequenceModel, vectors: np.ndarray, cold: np.ndarray, k: int, tau: float,
                   chunk: int = 4096) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """``(index, rows, bias)`` for :meth:`~seqrec.models.base.SequenceModel.set_cold_rows`: each
    item where ``cold`` holds gets the softmax(cosine / ``tau``)-weighted mean of the
    :meth:`~seqrec.models.base.SequenceModel.item_table` rows (and biases) of the ``k`` trained
    items whose ``vectors [N+1, E]`` are most similar. Items without a vector (all zeros: no
    text) keep their own row, and are never anyone's neighbour."""
    W, b = model.item_table()
    W = W.detach().float().cpu()
    b = None if b is None else b.detach().float().cpu()
    V = torch.as_tensor(vectors, dtype=torch.float32)
    has = (V.norm(dim=1) > 0).numpy()
    V = torch.nn.functional.normalize(V, dim=1)
    ci = torch.from_numpy(np.flatnonzero(cold & has))
    warm = ~cold & has
    warm[0] = False
    wi = torch.from_numpy(np.flatnonzero(warm))
    k = min(k, len(wi))
    rows = torch.empty(len(ci), W.shape[1])
    bias = None if b is None else torch.empty(len(ci))
    for s in range(0, len(ci), chunk):
        sim, j = (V[ci[s:s + chunk]] @ V[wi].T).topk(k, dim=1)  # [c, k]
        w = torch.softmax(sim / tau, dim=1)
        rows[s:s + chunk] = (w[:, :, None] * W[wi[j]]).sum(1)
        if b is not None and bias is not None:
            bias[s:s + chunk] = (w * b[wi[j]]).sum(1)
    return ci, rows, bias


def calibrate_cold_items(model: SequenceModel, split: Split, eval_cfg: EvalConfig, metric: str,
                         device: Any = "cpu", neighbour_vectors: np.ndarray | None = None,
                         min_share: float = 0.0) -> dict[str, Any]:
    """Choose, on validation ``metric``, how :func:`untrained_items` are ranked, set it on
    ``model`` and return what was tried: with ``neighbour_vectors [N+1, E]``, first whether
    they take :func:`neighbour_rows` (and which ``k``/``tau``), then one score offset
    (:meth:`~seqrec.models.base.SequenceModel.set_cold_offset`). With ``min_share`` > 0 the
    offset is the best among those where targets that are untrained items reach at least that
    share of the others' ``metric`` (the highest share if none does); the rows are always chosen
    for ``metric`` over all targets.

    Ties go to the simpler choice (no neighbour rows; the offset nearest 0); with no untrained
    item nothing is set.
    """
    cold = untrained_items(split)
    if not cold.any():
        return {"items": 0, "offset": 0.0, "note": "every item has training events: nothing to calibrate"}
    if neighbour_vectors is not None and len(neighbour_vectors) != len(cold):
        raise ValueError(f"neighbour_vectors has {len(neighbour_vectors)} rows for {len(cold)} "
                         "items + padding")
    was_training = model.training
    model.eval()
    cold_t = torch.from_numpy(cold)

    def validate() -> dict[str, float]:
        res = evaluate(model, split, "valid", eval_cfg, device=device)
        c = cold[res.targets]  # per target: is it an untrained item
        row = {metric: res.metrics[metric],
               f"cold {metric}": res.segment(c, eval_cfg.ks).get(metric, 0.0),
               f"warm {metric}": res.segment(~c, eval_cfg.ks).get(metric, 0.0)}
        warm_value = row[f"warm {metric}"]
        row["cold share"] = row[f"cold {metric}"] / warm_value if warm_value > 0 else 0.0
        return row

    model.set_cold_offset(cold_t, 0.0)
    out: dict[str, Any] = {"items": int(cold.sum())}
    chosen_rows = None
    if neighbour_vectors is not None:
        none = (torch.zeros(0, dtype=torch.long), torch.zeros(0, 1), None)
        candidates = [(None, none)] + [
            ({"k": k, "tau": tau}, neighbour_rows(model, neighbour_vectors, cold, k, tau))
            for k, tau in NEIGHBOURS]
        tried_rows = []
        for setting, rows in candidates:
            model.set_cold_rows(*rows)
            tried_rows.append({"neighbours": setting, **validate()})
        pick = max(range(len(tried_rows)), key=lambda i: tried_rows[i][metric])  # first among equals
        chosen_rows, rows = candidates[pick]
        model.set_cold_rows(*rows)
        out.update(neighbours=chosen_rows, neighbours_tried=tried_rows)
    warm = np.flatnonzero(~cold)[1:]  # index 0 is padding
    unit = score_unit(model, split, warm, device)
    tried: list[dict[str, Any]] = []
    for f in FRACTIONS:
        model.set_cold_offset(cold_t, f * unit)
        tried.append({"offset": f * unit, "fraction": f, **validate()})
    # "without" means without any correction: no neighbour rows, no offset
    without = (tried_rows[0] if neighbour_vectors is not None
               else next(t for t in tried if t["fraction"] == 0.0))
    # the best value; among equals the smallest offset (0 first)
    feasible = [t for t in tried if t["cold share"] >= min_share]
    if feasible:
        top = max(feasible, key=lambda t: (t[metric], -abs(t["fraction"])))
    else:
        top = max(tried, key=lambda t: (t["cold share"], -abs(t["fraction"])))
    best = (top[metric], top["offset"])
    model.set_cold_offset(cold_t, best[1])
    model.train(was_training)
    out.update({"offset": best[1], "unit": unit, f"valid {metric}": best[0],
                f"valid {metric} without": without[metric], "tried": tried,
                f"valid cold {metric}": top[f"cold {metric}"],
                f"valid warm {metric}": top[f"warm {metric}"],
                "min_share": min_share, "valid cold share": top["cold share"],
                "rule": f"{'neighbour rows (k, tau), then ' if chosen_rows is not None else ''}"
                        f"offset added to the score of items with no training event, chosen on "
                        f"validation {metric} over all targets"
                        + (f" among offsets that give cold targets >= {min_share:g} of the warm "
                           "targets' value" if min_share > 0 else "")})
    if not feasible:
        out["note"] = (f"no offset tried gives cold targets {min_share:g} of the warm targets' "
                       f"{metric}: the one with the highest share was kept")
    elif top["fraction"] in (FRACTIONS[0], FRACTIONS[-1]):
        out["note"] = "the best offset is at the end of the range tried: one further out might be better"
    log.info("cold items (%d): neighbours %s, offset %.4g: validation %s %.4f -> %.4f",
             out["items"], chosen_rows, best[1], metric, without[metric], best[0])
    return out
