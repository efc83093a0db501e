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
        items, times = split.train_arrays()
        lengths = split.train_end - split.train_start
        pos = np.concatenate([np.arange(a, b) for a, b in zip(split.train_start, split.train_end)]
                             + [np.zeros(0, dtype=np.int64)])
        if times is not None:
            t = times[pos]
            cut = np.quantile(t, 1 - cfg.window_fraction, method="higher") if len(t) else 0
            recent = pos[t >= cut]
        else:
            end = np.repeat(split.train_end, lengths)
            recent = pos[pos >= end - cfg.last_per_user]
        n = self.n_items + 1
        window = np.bincount(items[recent], minlength=n).astype(np.float64)
        overall = np.bincount(items[pos], minlength=n).astype(np.float64)
        # lexicographic (window count, overall count); exact in float32 below 2**24
        score = window * (overall.max() + 1.0) + overall
        score[0] = 0.0
        self.counts.copy_(torch.from_numpy(score.astype(np.float32)))
