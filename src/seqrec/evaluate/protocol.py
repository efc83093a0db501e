"""Evaluate a model on the validation or test users of a split: full ranking, one pass."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import polars as pl
import torch
from tqdm.auto import tqdm

from seqrec.config import EvalConfig
from seqrec.data.batching import pad_ragged
from seqrec.data.split import Split
from seqrec.evaluate.metrics import all_metrics, coverage
from seqrec.evaluate.ranking import history_batch, history_times, rank_and_topk, transposed
from seqrec.models.base import SequenceModel

MASK_RULE = ("items in the user's input history are excluded from the ranking; a target that is "
             "itself in the history counts as a miss")


@dataclass
class EvalResult:
    metrics: dict[str, float]
    protocol: dict[str, Any]
    users: np.ndarray = field(repr=False)
    """User rows (into ``split.seqs.users``), one per target in ``targets``."""
    targets: np.ndarray = field(repr=False)
    """Target item indices, flat; ``offsets`` says which belong to which evaluated user."""
    ranks: np.ndarray = field(repr=False)
    """0-based rank of each target among all items (``inf`` = masked, not rankable)."""
    offsets: np.ndarray = field(repr=False)

    def segment(self, keep: np.ndarray, ks: list[int]) -> dict[str, float]:
        """Metrics over the targets where ``keep`` (bool per target) holds; users keep only those
        targets, and users with none drop out. Adds ``users`` and ``targets`` counts."""
        user_of = np.repeat(np.arange(len(self.offsets) - 1), np.diff(self.offsets))[keep]
        if not keep.any():
            return {"users": 0, "targets": 0}
        counts = np.bincount(user_of, minlength=len(self.offsets) - 1)
        counts = counts[counts > 0]
        offsets = np.concatenate([[0], np.cumsum(counts)])
        out: dict[str, float] = all_metrics(self.ranks[keep], offsets, ks)
        out.update(users=int(len(counts)), targets=int(keep.sum()))
        return out

    def ranks_frame(self, split: Split) -> pl.DataFrame:
        """One row per (user, target): external ids and the 1-based rank (null if masked)."""
        seqs = split.seqs
        finite = np.isfinite(self.ranks)
        return pl.DataFrame({
            "user_id": pl.Series(seqs.users.ids).gather(self.users),
            "target_item_id": pl.Series(seqs.items_vocab.ids).gather(self.targets - 1),
            "rank": pl.Series(np.where(finite, self.ranks + 1, 0).astype(np.int64)).set(
                pl.Series(~finite), None),
        })


def _dedupe_rows(t: np.ndarray) -> np.ndarray:
    """Zero out repeated items within each row of a 0-padded target matrix (keeps one of each)."""
    s = np.sort(t, axis=1)
    dup = np.zeros_like(s, dtype=bool)
    dup[:, 1:] = (s[:, 1:] == s[:, :-1]) & (s[:, 1:] > 0)
    return np.where(dup, 0, s)


@torch.no_grad()
def evaluate(
    model: SequenceModel,
    split: Split,
    which: str,
    cfg: EvalConfig | None = None,
    *,
    device: torch.device | str = "cpu",
    progress: bool = False,
) -> EvalResult:
    """Rank every item for each evaluated user and compute HR/NDCG/MRR/Recall/coverage at ``cfg.ks``."""
    cfg = cfg or EvalConfig()
    es_orig = split.eval_set(which)
    # users of similar history length share a batch: little padding for the model to encode
    order = np.argsort(np.minimum(es_orig.hist_end - es_orig.hist_start, model.max_len), kind="stable")
    es = es_orig.subset(order)
    seqs = split.seqs
    model.eval()
    W, b = model.ranking_table()
    WT = transposed(W)
    # unmasked, a model that learned a repeat score adds it to the items it has already had
    seen_bias = None if cfg.mask_seen else model.seen_bias()
    k_max = max(cfg.ks)
    all_ranks, all_targets, all_users, counts, tops = [], [], [], [], []
    n_cols = min(W.shape[0], cfg.item_chunk)
    bar = tqdm(total=len(es), desc=f"evaluate {which}", unit="user", disable=not progress, leave=False)
    pos = 0
    while pos < len(es):
        # several targets per user multiply the comparison work: shrink the batch to match
        max_t = int((es.tgt_end[pos:pos + cfg.batch_size] - es.tgt_start[pos:pos + cfg.batch_size]).max())
        bs = max(1, min(cfg.batch_size, (1 << 26) // max(1, max_t * n_cols)))
        sl = slice(pos, pos + bs)
        hist, seen = history_batch(seqs.items, es.hist_start[sl], es.hist_end[sl], model.max_len,
                                   device, cfg.mask_seen or seen_bias is not None)
        times = None
        if model.uses_time and seqs.times is not None:
            times = history_times(seqs.times, es.hist_start[sl], es.hist_end[sl], model.max_len, device)
        tgt_np = _dedupe_rows(pad_ragged(seqs.items, es.tgt_start[sl], es.tgt_end[sl]))
        targets = torch.from_numpy(tgt_np).to(device)
        ranks, _, top = rank_and_topk(model.query(hist, times), W, b, seen=seen, targets=targets,
                                      k=k_max, chunk=cfg.item_chunk, WT=WT, seen_bias=seen_bias)
        real = tgt_np > 0
        all_ranks.append(ranks.cpu().numpy()[real])
        all_targets.append(tgt_np[real])
        n_real = real.sum(1)
        counts.append(n_real)
        all_users.append(np.repeat(order[sl], n_real))  # position in the original eval set
        tops.append(top.cpu().numpy())
        bar.update(len(tgt_np))
        pos += bs
    bar.close()
    # back to the eval set's own user order
    pos_of = np.concatenate(all_users)
    back = np.argsort(pos_of, kind="stable")
    ranks = np.concatenate(all_ranks)[back]
    targets = np.concatenate(all_targets)[back]
    users = es_orig.users[pos_of[back]]
    per_user = np.empty(len(es), dtype=np.int64)
    per_user[order] = np.concatenate(counts)
    offsets = np.concatenate([[0], np.cumsum(per_user)])
    metrics = all_metrics(ranks, offsets, cfg.ks)
    top_all = np.concatenate(tops)
    for k in cfg.ks:
        metrics[f"Coverage@{k}"] = coverage(top_all[:, :k], seqs.n_items)
    protocol = {
        "split": which,
        "split_rule": split.protocol.get("split"),
        "users": int(len(es)),
        "targets": int(len(ranks)),
        "items_ranked": int(seqs.n_items),
        "ranking": "full: every catalog item is a candidate (no sampled negatives)",
        "mask_seen": cfg.mask_seen,
        "mask_rule": MASK_RULE if cfg.mask_seen else (
            "no masking: seen items stay in the ranking" + (
                "" if seen_bias is None else
                f", each scored {seen_bias:+.4g} by the model's learned repeat score")),
        "targets_masked": int(np.isinf(ranks).sum()),
        "ties": "equal scores are ordered by item index (lower first)",
    }
    return EvalResult(metrics, protocol, users, targets, ranks, offsets)
