"""User-interest profile: the category distribution of the user's next ``horizon`` items.

Target at position ``t``: the mean of the (normalised) category rows of the next ``horizon``
items; loss: cross-entropy of the head's softmax against that soft target. Evaluation: mean
KL(target || predicted) and top-category accuracy, next to two frequency baselines (the global
training distribution; the user's own history, smoothed by it).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from seqrec.config import TaskConfig
from seqrec.data.batching import left_pad, pad_ragged
from seqrec.data.log import ItemCatalog
from seqrec.data.split import Split
from seqrec.errors import ConfigError
from seqrec.evaluate.ranking import history_batch
from seqrec.losses import LossFn
from seqrec.models.base import SequenceModel
from seqrec.tasks.base import TaskModel


def category_matrix(item_ids: list[Any], catalog: ItemCatalog, field: str = "categories",
                    level: int | None = None) -> tuple[np.ndarray, list[str], int]:
    """``[N+1, G]`` rows summing to 1 over each item's categories (0 rows: none), the category
    names, and how many items have none. ``level``: use only that position of each category list
    (Amazon's paths: level 1 is 'Makeup', 'Hair Care', ...); ``None``: every value (genres)."""
    if field not in catalog.df.columns:
        raise ConfigError(f"the item catalog has no {field!r} column for the interest task; "
                          f"columns: {catalog.df.columns}")
    rows = catalog.restrict(item_ids).df[field].to_list()
    per_item: list[list[str]] = []
    for v in rows:
        vals = [] if v is None else ([v] if isinstance(v, str) else [str(x) for x in v])
        if level is not None:
            vals = vals[level:level + 1]
        per_item.append(vals)
    names = sorted({c for vals in per_item for c in vals})
    if not names:
        raise ConfigError(f"no item has a value in {field!r}: nothing to profile")
    col = {c: j for j, c in enumerate(names)}
    M = np.zeros((len(item_ids) + 1, len(names)), dtype=np.float32)
    for i, vals in enumerate(per_item, start=1):
        for c in vals:
            M[i, col[c]] = 1.0 / len(vals)
    return M, names, sum(1 for v in per_item if not v)


class InterestModel(TaskModel):
    task = "interest"
    select = "neg_KL"

    def __init__(self, encoder: SequenceModel, categories: np.ndarray, names: list[str],
                 horizon: int = 10) -> None:
        super().__init__(encoder)
        self.names = list(names)
        self.horizon = horizon
        self.register_buffer("cats", torch.as_tensor(categories, dtype=torch.float32))  # [N+1, G]
        self.head = nn.Linear(self.state_width(), len(names))

    @classmethod
    def for_data(cls, encoder: SequenceModel, cfg: TaskConfig, split: Split,
                 catalog: ItemCatalog) -> InterestModel:
        M, names, missing = category_matrix(split.seqs.items_vocab.ids, catalog, cfg.field, cfg.level)
        model = cls(encoder, M, names, cfg.horizon)
        model.report = {"categories": len(names), "items_without_category": missing}
        return model

    @classmethod
    def rebuild(cls, encoder: SequenceModel, state: dict[str, Any], n_items: int) -> InterestModel:
        names = list(state["names"])
        # the category matrix is a buffer: its values come with the weights
        return cls(encoder, np.zeros((n_items + 1, len(names)), dtype=np.float32), names,
                   int(state.get("horizon", 10)))

    def task_state(self) -> dict[str, Any]:
        return {"names": self.names, "horizon": self.horizon}

    def evaluate(self, split: Split, which: str, device: Any = "cpu") -> dict[str, Any]:
        return evaluate_interest(self, split, which, device)

    def profile(self, seq: Tensor, times: Tensor | None = None) -> Tensor:
        """``[B, L] -> [B, G]`` predicted category distribution of the next items."""
        return F.softmax(self.head(self.encoder.query(seq, times)), dim=-1)

    def next_distribution(self, targets: Tensor) -> Tensor:
        """``[B, L] -> [B, L, G]``: at each position, the category distribution of the next
        ``horizon`` real items (zeros where there is none)."""
        C = self.cats[targets]  # [B, L, G] (padding rows are zero)
        cs = F.pad(C.cumsum(1), (0, 0, 1, 0))  # [B, L+1, G]
        L = targets.shape[1]
        ahead = torch.clamp(torch.arange(L, device=targets.device) + self.horizon, max=L)  # [L]
        window = cs[:, ahead] - cs[:, :L]  # [B, L, G]
        mass = window.sum(-1, keepdim=True)
        return torch.where(mass > 0, window / mass.clamp(min=1e-12), torch.zeros_like(window))

    def loss(self, inputs: Tensor, targets: Tensor, loss_fn: LossFn | None = None,
             times: Tensor | None = None, labels: Tensor | None = None) -> Tensor:
        p = self.next_distribution(targets)  # [B, L, G]
        real = (targets > 0) & (p.sum(-1) > 0)  # [B, L]
        logits = self.head(self.encoder.encode(inputs, times)[real])  # [P, G]
        return -(p[real] * F.log_softmax(logits.float(), dim=-1)).sum(-1).mean()


def _kl(p: np.ndarray, q: np.ndarray) -> np.ndarray:
    q = np.clip(q, 1e-9, None)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(p > 0, p * (np.log(p) - np.log(q)), 0.0).sum(-1)


@torch.no_grad()
def evaluate_interest(model: InterestModel, split: Split, which: str, device: Any = "cpu",
                      batch_size: int = 256) -> dict[str, Any]:
    """KL divergence and top-category accuracy on ``which`` users; with the two baselines."""
    es = split.eval_set(which)
    seqs = split.seqs
    model.eval()
    M = model.cats.cpu().numpy()  # [N+1, G]
    tr_counts = split.train_item_counts().astype(np.float64)
    global_dist = (tr_counts[:, None] * M).sum(0)
    global_dist /= max(global_dist.sum(), 1e-12)
    preds, targets, hist_dists = [], [], []
    for pos in range(0, len(es), batch_size):
        sl = slice(pos, pos + batch_size)
        hist, _ = history_batch(seqs.items, es.hist_start[sl], es.hist_end[sl], model.max_len,
                                device, False)
        preds.append(model.profile(hist).float().cpu().numpy())
        tend = np.minimum(es.tgt_end[sl], es.tgt_start[sl] + model.horizon)
        tgt = M[pad_ragged(seqs.items, es.tgt_start[sl], tend)].sum(1)  # [b, G]
        targets.append(tgt / np.clip(tgt.sum(1, keepdims=True), 1e-12, None))
        h = M[pad_ragged(seqs.items, es.hist_start[sl], es.hist_end[sl])].sum(1)  # [b, G]
        hist_dists.append((h + global_dist) / (h.sum(1, keepdims=True) + 1.0))  # smoothed
    pred, tgt, hist_d = (np.concatenate(a) for a in (preds, targets, hist_dists))
    ok = tgt.sum(1) > 0  # users whose next items have a category
    pred, tgt, hist_d = pred[ok], tgt[ok], hist_d[ok]

    def scores(q: np.ndarray) -> dict[str, float]:
        top = q.argmax(1)
        return {"KL": float(_kl(tgt, q).mean()),
                "top1_accuracy": float((tgt[np.arange(len(tgt)), top] >= tgt.max(1) - 1e-9).mean())}

    out = {**scores(pred), "users": int(ok.sum())}
    out["neg_KL"] = -out["KL"]
    out["baseline_global"] = scores(np.broadcast_to(global_dist, tgt.shape))
    out["baseline_user_history"] = scores(hist_d)
    return out


__all__ = ["InterestModel", "category_matrix", "evaluate_interest", "left_pad"]
