"""RecentPopular: popularity within a recent window of the training data.

With timestamps the window is the latest ``window_fraction`` of training events (by time). Without
timestamps there is no global clock, so the window is each user's last ``last_per_user`` training
events. Ties in the window count are broken by overall training popularity.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch

from seqrec.models.popularity import MostPopular, PopConfig

if TYPE_CHECKING:
    from seqrec.data.split import Split


@dataclass
class RecentPopConfig(PopConfig):
    window_fraction: float = 0.1
    """With timestamps: the share of training events, the latest ones, that count."""
    last_per_user: int = 3
    """Without timestamps: how many of each user's last training events count."""


class RecentPopular(MostPopular):
    name = "recent-pop"
    config_class = RecentPopConfig

    def fit_counts(self, split: Split) -> None:
        cfg: RecentPopConfig = self.config  # type: ignore[assignment]
        seqs = split.seqs
        in_train = split.train_mask()
        if seqs.times is not None:
            t = seqs.times[in_train]
            cut = np.quantile(t, 1 - cfg.window_fraction, method="higher") if len(t) else 0
            recent = in_train & (seqs.times >= cut)
        else:
            pos = np.arange(seqs.n_events)
            user_of = np.repeat(np.arange(seqs.n_users), seqs.lengths)
            recent = in_train & (pos >= split.train_end[user_of] - cfg.last_per_user)
        n = self.n_items + 1
        window = np.bincount(seqs.items[recent], minlength=n).astype(np.float64)
        overall = np.bincount(seqs.items[in_train], minlength=n).astype(np.float64)
        # lexicographic (window count, overall count); exact in float32 below 2**24
        score = window * (overall.max() + 1.0) + overall
        score[0] = 0.0
        self.counts.copy_(torch.from_numpy(score.astype(np.float32)))
