"""The two tables everything starts from: who interacted with what and when, and what the items are."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import polars as pl

# Columns of InteractionLog.df (see InteractionLog).
LOG_COLUMNS = ("user_id", "item_id", "timestamp", "rating", "row")


@dataclass
class InteractionLog:
    """One row per interaction.

    ``df`` columns: ``user_id`` and ``item_id`` (Int64 when every id in the file is an integer,
    else String: the data set's own ids), ``timestamp`` (Int64 seconds, null when the source has
    only an order), ``rating`` (Float64, null when absent) and ``row`` (the position in the source,
    which keeps file order for ties and for sources without timestamps).
    """

    df: pl.DataFrame
    has_time: bool
    source: str
    notes: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        missing = [c for c in LOG_COLUMNS if c not in self.df.columns]
        if missing:  # a programming error, not a data error
            raise ValueError(f"InteractionLog.df lacks columns {missing}")

    def __len__(self) -> int:
        return self.df.height

    @property
    def n_users(self) -> int:
        return self.df["user_id"].n_unique()

    @property
    def n_items(self) -> int:
        return self.df["item_id"].n_unique()


def id_dtype_for(values: list[str]) -> pl.DataType:
    """Int64 when every id looks like an integer (``"42"``), else String."""
    if values and all(v.isdigit() or (v[:1] == "-" and v[1:].isdigit()) for v in values):
        return pl.Int64()
    return pl.String()


def cast_ids(s: pl.Series) -> pl.Series:
    """Give an id column its natural type: Int64 if all values are integers, else String."""
    if s.dtype.is_integer():
        return s.cast(pl.Int64)
    s = s.cast(pl.String)
    ints = s.str.strip_chars().cast(pl.Int64, strict=False)
    if ints.null_count() == s.null_count() and (ints.cast(pl.String) == s.str.strip_chars()).all():
        return ints
    return s


@dataclass
class ItemCatalog:
    """What the items are: ``df`` has ``item_id`` (same type as the log's), ``title`` (nullable String),
    ``categories`` (List[String]) and any further content columns (brand, price, year, attributes).

    Kept for display now and for content features later. Items may be in the catalog without any
    interaction, and vice versa.
    """

    df: pl.DataFrame

    def __post_init__(self) -> None:
        for col, dtype in (("title", pl.String), ("categories", pl.List(pl.String))):
            if col not in self.df.columns:
                self.df = self.df.with_columns(pl.lit(None, dtype=dtype).alias(col))

    @classmethod
    def empty(cls) -> ItemCatalog:
        return cls(pl.DataFrame({"item_id": pl.Series([], dtype=pl.Int64)}))

    def __len__(self) -> int:
        return self.df.height

    def restrict(self, item_ids: list[Any]) -> ItemCatalog:
        """The catalog rows of ``item_ids`` in that order (missing items get null fields)."""
        if not item_ids:
            return ItemCatalog(self.df.head(0))
        dtype = self.df.schema["item_id"]
        keys = pl.DataFrame({"item_id": pl.Series(item_ids).cast(dtype, strict=False)})
        return ItemCatalog(keys.join(self.df, on="item_id", how="left", maintain_order="left"))

    def titles(self) -> dict[Any, str | None]:
        return dict(zip(self.df["item_id"].to_list(), self.df["title"].to_list()))
