"""Binary sequence prediction: will the next event be positive (MovieLens: rated >= 4 stars;
or any 0/1 label column)? The head reads the encoder's state at the position before the event
and the event's item vector; trained with binary cross-entropy. Evaluation: AUC and log loss,
next to a non-sequential baseline (logistic regression on the user's and the item's training
positive rates)."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from seqrec.config import TaskConfig
from seqrec.data.batching import left_pad
from seqrec.data.log import ItemCatalog
from seqrec.data.split import Split
from seqrec.errors import ConfigError
from seqrec.evaluate.ranking import history_batch
from seqrec.losses import LossFn
from seqrec.models.base import SequenceModel
from seqrec.nn import gather_rows
from seqrec.tasks.base import TaskModel


def past_rate(labels: Tensor, real: Tensor, prior: float = 0.5, strength: float = 2.0) -> Tensor:
    """``[B, L]``: at each position, the smoothed share of positive labels among the real events
    up to and including it (what is known of the user's taste before the next event)."""
    pos = (labels * real).cumsum(1)
    n = real.float().cumsum(1)
    return (pos + strength * prior) / (n + strength)


class BinaryModel(TaskModel):
    """Head input: the encoder's state before the event, the event's item vector, and the user's
    running positive rate over the history; plus a learned per-item bias."""

    task = "binary"
    select = "neg_log_loss"
    uses_labels = True

    def __init__(self, encoder: SequenceModel, threshold: float = 4.0, hidden: int = 64) -> None:
        super().__init__(encoder)
        self.threshold = threshold
        self._baseline: tuple[Split, RateBaseline] | None = None  # fitted once per split
        d_state, d_item = self.state_width(), int(encoder.item_table()[0].shape[1])
        self.head = nn.Sequential(nn.Linear(d_state + d_item + 1, hidden), nn.GELU(),
                                  nn.Linear(hidden, 1))
        self.item_bias = nn.Embedding(encoder.n_items + 1, 1)
        nn.init.zeros_(self.item_bias.weight)

    @classmethod
    def for_data(cls, encoder: SequenceModel, cfg: TaskConfig, split: Split,
                 catalog: ItemCatalog) -> BinaryModel:
        model = cls(encoder, cfg.threshold)
        model.prepare(split)
        return model

    @classmethod
    def rebuild(cls, encoder: SequenceModel, state: dict[str, Any], n_items: int) -> BinaryModel:
        return cls(encoder, float(state.get("threshold", 4.0)))

    def task_state(self) -> dict[str, Any]:
        return {"threshold": self.threshold}

    def prepare(self, split: Split) -> None:
        """Every event's label: its rating (or label column) >= ``threshold``."""
        if split.seqs.ratings is None:
            raise ConfigError("the binary task needs a rating or label per event; this data has "
                              "none (give [data] rating_col for a table)")
        split.seqs.labels = (split.seqs.ratings >= self.threshold).astype(np.float32)

    def evaluate(self, split: Split, which: str, device: Any = "cpu") -> dict[str, Any]:
        if self._baseline is None or self._baseline[0] is not split:
            self._baseline = (split, RateBaseline(split))
        return evaluate_binary(self, split, which, device, baseline=self._baseline[1])

    def logits(self, h: Tensor, items: Tensor, rate: Tensor) -> Tensor:
        """``h [P, Ds]`` states before the events, ``items [P]``, ``rate [P]`` the user's past
        positive rate -> ``[P]`` logits."""
        e = gather_rows(self.encoder.item_table()[0], items)  # [P, Di]
        x = torch.cat([h, e, (rate[:, None] - 0.5) * 4], dim=-1)  # [P, Ds + Di + 1]
        bias = self.item_bias(items.clamp(max=self.n_items)).squeeze(-1)  # cold items: row N
        return self.head(x).squeeze(-1) + bias

    def loss(self, inputs: Tensor, targets: Tensor, loss_fn: LossFn | None = None,
             times: Tensor | None = None, labels: Tensor | None = None) -> Tensor:
        """``labels [B, L+1]``: the window's labels; ``[:, :-1]`` go with the inputs, ``[:, 1:]``
        with the targets."""
        if labels is None:
            raise ValueError("the binary task needs event labels")
        lab_in, lab_out = labels[:, :-1].float(), labels[:, 1:].float()
        rate = past_rate(lab_in, inputs > 0)  # [B, L]
        real = targets > 0  # [B, L]
        z = self.logits(self.encoder.encode(inputs, times)[real], targets[real], rate[real])  # [P]
        return F.binary_cross_entropy_with_logits(z.float(), lab_out[real])


def auc(y: np.ndarray, p: np.ndarray) -> float:
    """Area under the ROC curve (Mann-Whitney U, ties counted half)."""
    pos, neg = y > 0.5, y <= 0.5
    if not pos.any() or not neg.any():
        return float("nan")
    order = np.argsort(p, kind="mergesort")
    ranks = np.empty(len(p))
    sp = p[order]
    # average ranks over ties
    _, first, counts = np.unique(sp, return_index=True, return_counts=True)
    avg = first + (counts - 1) / 2.0 + 1
    ranks[order] = np.repeat(avg, counts)
    return float((ranks[pos].sum() - pos.sum() * (pos.sum() + 1) / 2) / (pos.sum() * neg.sum()))


def log_loss(y: np.ndarray, p: np.ndarray) -> float:
    p = np.clip(p, 1e-7, 1 - 1e-7)
    return float(-(y * np.log(p) + (1 - y) * np.log(1 - p)).mean())


def _rates(keys: np.ndarray, labels: np.ndarray, n: int, prior: float, strength: float = 5.0) -> np.ndarray:
    pos = np.bincount(keys, weights=labels, minlength=n)
    cnt = np.bincount(keys, minlength=n)
    return (pos + strength * prior) / (cnt + strength)


class RateBaseline:
    """Non-sequential baseline: logistic regression on logit(user positive rate), logit(item
    positive rate) from the training events (both smoothed towards the global rate)."""

    def __init__(self, split: Split) -> None:
        seqs = split.seqs
        pos = split.train_positions()
        user_of = np.repeat(np.arange(seqs.n_users), seqs.lengths)
        y = seqs.labels[pos]
        self.prior = float(y.mean())
        self.user_rate = _rates(user_of[pos], y, seqs.n_users, self.prior)
        self.item_rate = _rates(seqs.items[pos], y, seqs.n_items + 1, self.prior)
        X = self.features(user_of[pos], seqs.items[pos])
        w = torch.zeros(3, dtype=torch.float64, requires_grad=True)
        Xt, yt = torch.from_numpy(X), torch.from_numpy(y.astype(np.float64))
        opt = torch.optim.LBFGS([w], max_iter=200, line_search_fn="strong_wolfe")

        def closure() -> Tensor:
            opt.zero_grad()
            loss = F.binary_cross_entropy_with_logits(Xt @ w, yt)
            loss.backward()
            return loss

        opt.step(closure)
        self.w = w.detach().numpy()

    def features(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        lg = lambda r: np.log(np.clip(r, 1e-6, 1 - 1e-6) / np.clip(1 - r, 1e-6, 1))  # noqa: E731
        return np.stack([lg(self.user_rate[users]), lg(self.item_rate[items]), np.ones(len(users))], 1)

    def predict(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        return 1.0 / (1.0 + np.exp(-(self.features(users, items) @ self.w)))


@torch.no_grad()
def evaluate_binary(model: BinaryModel, split: Split, which: str, device: Any = "cpu",
                    batch_size: int = 256, baseline: RateBaseline | None = None) -> dict[str, Any]:
    """AUC, log loss and accuracy of the next event's label on ``which`` users (their first
    target event), with the rate baseline on the same events."""
    es = split.eval_set(which)
    seqs = split.seqs
    model.eval()
    probs = []
    for pos in range(0, len(es), batch_size):
        sl = slice(pos, pos + batch_size)
        hist, _ = history_batch(seqs.items, es.hist_start[sl], es.hist_end[sl], model.max_len,
                                device, False)
        items = torch.from_numpy(seqs.items[es.tgt_start[sl]]).to(device)
        lab = torch.from_numpy(left_pad(seqs.labels, es.hist_start[sl], es.hist_end[sl], model.max_len
                                        ).astype(np.float32)).to(device)
        rate = past_rate(lab, hist > 0)[:, -1]  # [b]: everything known before the event
        probs.append(torch.sigmoid(model.logits(model.encoder.query(hist), items, rate)).float().cpu().numpy())
    p = np.concatenate(probs)
    y = seqs.labels[es.tgt_start]
    out = {"AUC": auc(y, p), "log_loss": log_loss(y, p), "accuracy": float(((p > 0.5) == (y > 0.5)).mean()),
           "events": int(len(y)), "positive_rate": float(y.mean())}
    out["neg_log_loss"] = -out["log_loss"]  # selection key: a proper score, higher is better
    baseline = baseline or RateBaseline(split)
    pb = baseline.predict(es.users, seqs.items[es.tgt_start])
    out["baseline_rates"] = {"AUC": auc(y, pb), "log_loss": log_loss(y, pb),
                             "accuracy": float(((pb > 0.5) == (y > 0.5)).mean())}
    return out
