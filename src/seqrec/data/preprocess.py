"""Clean an :class:`InteractionLog` and turn it into per-user, time-ordered index sequences.

Order of operations (each optional step is off unless configured):
rating threshold -> stable time sort (ties keep file order) -> de-duplication (keep the first
(user, item) in time) -> iterative k-core -> vocabularies -> CSR sequences.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import polars as pl

from seqrec.config import DataConfig
from seqrec.data.log import InteractionLog
from seqrec.data.vocab import Vocab
from seqrec.errors import DataError


@dataclass
class Sequences:
    """Every user's interactions in time order, stored flat (CSR).

    User ``u`` (0-based row, external id ``users.ids[u]``) owns ``items[offsets[u]:offsets[u+1]]``:
    item indices (1-based, 0 = padding never appears here), with ``times`` (or None) alongside.
    """

    users: Vocab
    items_vocab: Vocab
    offsets: np.ndarray
    items: np.ndarray
    times: np.ndarray | None = None
    ratings: np.ndarray | None = None
    report: dict[str, Any] = field(default_factory=dict)
    labels: np.ndarray | None = None
    """Per-event binary labels (float 0/1) for binary tasks, derived from ``ratings``."""

    @property
    def n_users(self) -> int:
        return len(self.users)

    @property
    def n_items(self) -> int:
        return len(self.items_vocab)

    @property
    def n_events(self) -> int:
        return len(self.items)

    @property
    def lengths(self) -> np.ndarray:
        return np.diff(self.offsets)

    def user_items(self, u: int) -> np.ndarray:
        return self.items[self.offsets[u] : self.offsets[u + 1]]

    def to_frame(self) -> pl.DataFrame:
        """One row per event: ``user_id``, ``item_id`` (external), ``timestamp`` (may be null)."""
        counts = self.lengths
        user_col = pl.Series("user_id", self.users.ids).gather(
            np.repeat(np.arange(self.n_users), counts)
        )
        item_col = pl.Series("item_id", self.items_vocab.ids).gather(self.items - 1)
        ts = pl.Series("timestamp", self.times, dtype=pl.Int64) if self.times is not None else \
            pl.Series("timestamp", [None] * self.n_events, dtype=pl.Int64)
        return pl.DataFrame([user_col, item_col, ts])


def sort_log(df: pl.DataFrame, has_time: bool) -> pl.DataFrame:
    """Stable time sort: by timestamp, ties (and time-less sources) in file order."""
    return df.sort(["timestamp", "row"] if has_time else ["row"], maintain_order=True)


def kcore(df: pl.DataFrame, min_user: int, min_item: int) -> tuple[pl.DataFrame, int]:
    """Drop users/items below the thresholds repeatedly until none remains. Returns rounds taken."""
    rounds = 0
    while True:
        before = df.height
        if min_item > 0:
            counts = df.group_by("item_id").len()
            keep = counts.filter(pl.col("len") >= min_item)["item_id"]
            df = df.filter(pl.col("item_id").is_in(keep.implode()))
        if min_user > 0:
            counts = df.group_by("user_id").len()
            keep = counts.filter(pl.col("len") >= min_user)["user_id"]
            df = df.filter(pl.col("user_id").is_in(keep.implode()))
        rounds += 1
        if df.height == before:
            return df, rounds


def preprocess(log: InteractionLog, cfg: DataConfig) -> Sequences:
    """Apply ``cfg``'s cleaning steps and build :class:`Sequences`; the report counts what each step did."""
    df = log.df
    report: dict[str, Any] = {"source": log.source, "raw_events": df.height,
                              "has_timestamps": log.has_time}
    if df.height == 0:
        raise DataError("no interactions", path=log.source)
    if cfg.min_rating is not None:
        if df["rating"].null_count() == df.height:
            raise DataError("min_rating is set but this data has no ratings", path=log.source)
        df = df.filter(pl.col("rating") >= cfg.min_rating)
        report["dropped_below_min_rating"] = report["raw_events"] - df.height
    df = sort_log(df, log.has_time)
    if cfg.dedupe:
        n = df.height
        df = df.unique(subset=["user_id", "item_id"], keep="first", maintain_order=True)
        report["dropped_duplicates"] = n - df.height
    if cfg.min_user_events > 0 or cfg.min_item_events > 0:
        n = df.height
        df, rounds = kcore(df, cfg.min_user_events, cfg.min_item_events)
        report["kcore"] = {"min_user_events": cfg.min_user_events,
                           "min_item_events": cfg.min_item_events,
                           "dropped_events": n - df.height, "rounds": rounds}
    if df.height == 0:
        raise DataError("no interactions left after preprocessing (check min_rating / k-core)",
                        path=log.source)
    # vocabularies in order of first appearance in the source file
    by_row = df.sort("row")
    users = Vocab(by_row["user_id"].unique(maintain_order=True).to_list())
    items = Vocab(by_row["item_id"].unique(maintain_order=True).to_list())
    user_idx = pl.DataFrame({"user_id": users.ids, "u": np.arange(len(users), dtype=np.int64)},
                            schema={"user_id": df.schema["user_id"], "u": pl.Int64})
    item_idx = pl.DataFrame({"item_id": items.ids, "i": np.arange(1, len(items) + 1, dtype=np.int64)},
                            schema={"item_id": df.schema["item_id"], "i": pl.Int64})
    df = (df.with_row_index("order")
            .join(user_idx, on="user_id").join(item_idx, on="item_id")
            .sort(["u", "order"]))
    counts = np.bincount(df["u"].to_numpy(), minlength=len(users))
    offsets = np.zeros(len(users) + 1, dtype=np.int64)
    np.cumsum(counts, out=offsets[1:])
    lengths = counts
    report.update(
        users=len(users), items=len(items), events=int(df.height),
        single_event_users=int((lengths == 1).sum()),
    )
    return Sequences(
        users=users,
        items_vocab=items,
        offsets=offsets,
        items=df["i"].to_numpy().astype(np.int64),
        times=df["timestamp"].to_numpy().astype(np.int64) if log.has_time else None,
        ratings=df["rating"].to_numpy().astype(np.float32) if df["rating"].null_count() == 0 else None,
        report=report,
    )


def sequences_from_lists(
    histories: list[list[Any]], user_ids: list[Any] | None = None, times: list[list[int]] | None = None
) -> Sequences:
    """:class:`Sequences` straight from per-user item lists (oldest first), for tests and small data.

    Item ids keep their form; the item vocabulary is in order of first appearance.
    """
    if user_ids is None:
        user_ids = list(range(1, len(histories) + 1))
    items = Vocab(list(dict.fromkeys(i for h in histories for i in h)))
    flat = np.array([items.index(i) for h in histories for i in h], dtype=np.int64)
    lengths = np.array([len(h) for h in histories], dtype=np.int64)
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    t = None if times is None else np.array([x for ts in times for x in ts], dtype=np.int64)
    return Sequences(users=Vocab(user_ids), items_vocab=items, offsets=offsets, items=flat, times=t,
                     report={"source": "lists", "users": len(histories), "items": len(items),
                             "events": int(len(flat))})
