"""Catalog attributes as model inputs: categorical and multi-valued fields -> integer ids, numeric
fields -> normalised floats with a missing-value indicator.

Categorical fields (a string like ``brand``, or a list like ``categories``, genres or S3Rec
attribute ids) get a vocabulary fitted once, on the items given to :meth:`AttributeEncoder.fit`:

- id 0 is padding / no value, id 1 is *unknown* (a value seen fewer than ``min_count`` times at
  fit time, or a value first met later, e.g. on a new item); real values are 2, 3, ...
- each item's values become one row of ``max_values`` ids, zero-padded; an item with more values
  keeps the first ``max_values`` (counted as ``truncated``). Duplicates within an item are dropped.

Numeric fields (``price``, ``year``) become ``(x - mean) / std`` (after ``log1p`` for the fields in
``log_scale``: prices are heavy-tailed), clipped to +-5; a missing or non-finite value becomes 0
(the mean) with its indicator set to 1. Mean and std are fitted on the non-missing values.

The fitted encoder is JSON (:meth:`AttributeEncoder.to_dict`), so new items can be encoded later
exactly as the training items were.
"""

from __future__ import annotations

import logging
import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import polars as pl

from seqrec.errors import ConfigError

logger = logging.getLogger(__name__)

PAD = 0
"""Categorical id of padding / no value."""
UNKNOWN = 1
"""Categorical id of a value not in the vocabulary (rare at fit time, or new)."""

_SKIP_COLUMNS = frozenset({"item_id", "item_idx", "title"})
_CLIP = 5.0


def _as_values(v: Any) -> list[str]:
    """A cell as a list of non-empty string values (scalars become one-element lists)."""
    if v is None:
        return []
    if isinstance(v, (list, tuple)):
        return list(dict.fromkeys(s for x in v if x is not None and (s := str(x).strip())))
    s = str(v).strip()
    return [s] if s else []


@dataclass
class CategoricalField:
    """A fitted categorical (single- or multi-valued) field."""

    name: str
    values: list[str]
    """Vocabulary: value ``values[j]`` has id ``j + 2`` (0 = padding, 1 = unknown)."""
    width: int
    """Ids per item (the ``K`` of the ``[n, K]`` id matrix)."""
    multi: bool
    """True when the catalog column is a list."""
    _index: dict[str, int] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        self._index = {v: j + 2 for j, v in enumerate(self.values)}

    @property
    def num_embeddings(self) -> int:
        """Rows an embedding table for this field needs (padding + unknown + values)."""
        return len(self.values) + 2

    def encode(self, cells: Sequence[Any]) -> tuple[np.ndarray, dict[str, int]]:
        """``[n, width]`` int64 ids for ``cells``, and counts of missing / unknown / truncated."""
        ids = np.zeros((len(cells), self.width), dtype=np.int64)
        missing = unknown = truncated = 0
        for r, cell in enumerate(cells):
            vals = _as_values(cell)
            if not vals:
                missing += 1
                continue
            if len(vals) > self.width:
                truncated += 1
                vals = vals[: self.width]
            for c, v in enumerate(vals):
                j = self._index.get(v, UNKNOWN)
                unknown += j == UNKNOWN
                ids[r, c] = j
        return ids, {"missing": missing, "unknown_values": unknown, "truncated": truncated}

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "values": self.values, "width": self.width, "multi": self.multi}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> CategoricalField:
        return cls(name=d["name"], values=list(d["values"]), width=int(d["width"]),
                   multi=bool(d["multi"]))


@dataclass
class NumericField:
    """A fitted numeric field: ``x -> clip(((log1p(x) if log else x) - mean) / std, +-5)``."""

    name: str
    mean: float
    std: float
    log: bool = False

    def encode(self, cells: Sequence[Any]) -> tuple[np.ndarray, np.ndarray, dict[str, int]]:
        """``(x [n] float32, missing [n] float32 (1 = missing), counts)``."""
        raw = np.array([np.nan if c is None else float(c) for c in cells], dtype=np.float64)
        if self.log:
            with np.errstate(invalid="ignore", divide="ignore"):
                raw = np.where(raw > -1, np.log1p(np.where(raw > -1, raw, 0.0)), np.nan)
        missing = ~np.isfinite(raw)
        x = np.where(missing, 0.0, np.clip((raw - self.mean) / self.std, -_CLIP, _CLIP))
        return x.astype(np.float32), missing.astype(np.float32), {"missing": int(missing.sum())}

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "mean": self.mean, "std": self.std, "log": self.log}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> NumericField:
        return cls(name=d["name"], mean=float(d["mean"]), std=float(d["std"]), log=bool(d["log"]))


@dataclass
class AttributeBlock:
    """Encoded attributes of ``n`` items (row order = the order given to ``transform``)."""

    categorical: dict[str, np.ndarray]
    """Field name -> ``[n, K]`` int64 ids (0 = none, 1 = unknown)."""
    numeric: np.ndarray
    """``[n, F]`` float32 normalised values (0 where missing)."""
    numeric_missing: np.ndarray
    """``[n, F]`` float32, 1 where the value was missing."""
    report: dict[str, dict[str, int]]
    """Field name -> counts (missing, unknown_values, truncated)."""


def detect_fields(df: pl.DataFrame, max_unique_share: float = 0.5) -> tuple[list[str], list[str]]:
    """``(categorical, numeric)`` column names of a catalog frame, by type.

    Lists and booleans are categorical; strings too unless nearly every item has its own value
    (more than ``max_unique_share`` of the rows and over 50 values: free text, not a category);
    numbers are numeric. ``item_id``, ``item_idx`` and ``title`` are never attributes.
    """
    categorical, numeric = [], []
    for name, dtype in df.schema.items():
        if name in _SKIP_COLUMNS:
            continue
        if isinstance(dtype, (pl.List, pl.Array)) or dtype == pl.Boolean:
            categorical.append(name)
        elif dtype == pl.String or dtype == pl.Categorical:
            n_unique = df[name].drop_nulls().n_unique()
            if n_unique > max(50, max_unique_share * df.height):
                logger.info("attribute %r skipped: %d distinct values in %d items looks like free "
                            "text", name, n_unique, df.height)
                continue
            categorical.append(name)
        elif dtype.is_numeric():
            numeric.append(name)
    return categorical, numeric


@dataclass
class AttributeEncoder:
    """Fitted vocabularies and statistics of the catalog attributes (see the module docstring)."""

    categorical: list[CategoricalField]
    numeric: list[NumericField]

    @classmethod
    def fit(
        cls,
        df: pl.DataFrame,
        *,
        categorical: Sequence[str] | None = None,
        numeric: Sequence[str] | None = None,
        log_scale: Sequence[str] = ("price",),
        min_count: int = 1,
        max_values: int = 16,
    ) -> AttributeEncoder:
        """Fit on catalog rows ``df`` (one per item). ``None`` field lists are detected by type
        (:func:`detect_fields`); named fields must exist."""
        if min_count < 1 or max_values < 1:
            raise ConfigError(f"min_count and max_values must be >= 1 (got {min_count}, "
                              f"{max_values})")
        auto_cat, auto_num = detect_fields(df)
        if categorical is None:  # a detected column without any value carries nothing
            categorical = [c for c in auto_cat if df[c].drop_nulls().len() and
                           (not isinstance(df.schema[c], pl.List) or df[c].list.len().sum())]
        if numeric is None:
            numeric = [c for c in auto_num if df[c].drop_nulls().len()]
        categorical, numeric = list(categorical), list(numeric)
        missing = [c for c in [*categorical, *numeric] if c not in df.columns]
        if missing:
            others = [c for c in df.columns if c not in _SKIP_COLUMNS]
            raise ConfigError(f"attribute(s) {missing} not in the item catalog; it has "
                              f"{', '.join(others) or 'no attribute columns'}")
        cat_fields = []
        for name in categorical:
            cells = [_as_values(v) for v in df[name].to_list()]
            counts = Counter(v for vals in cells for v in vals)
            # most frequent first, ties in order of first appearance (Counter keeps insertion order)
            values = [v for v, c in sorted(counts.items(), key=lambda kv: -kv[1]) if c >= min_count]
            width = max(1, min(max_values, max((len(v) for v in cells), default=1)))
            multi = isinstance(df.schema[name], (pl.List, pl.Array))
            cat_fields.append(CategoricalField(name, values, width, multi))
        num_fields = []
        for name in numeric:
            if not df.schema[name].is_numeric():
                raise ConfigError(f"attribute {name!r} is {df.schema[name]}, not numeric")
            x = df[name].cast(pl.Float64).to_numpy()
            log = name in log_scale
            if log:
                with np.errstate(invalid="ignore", divide="ignore"):
                    x = np.where(x > -1, np.log1p(np.where(x > -1, x, 0.0)), np.nan)
            x = x[np.isfinite(x)]
            mean = float(x.mean()) if len(x) else 0.0
            std = float(x.std()) if len(x) > 1 else 0.0
            num_fields.append(NumericField(name, mean, std if std > 0 and math.isfinite(std)
                                           else 1.0, log))
        return cls(cat_fields, num_fields)

    @property
    def names(self) -> list[str]:
        return [f.name for f in self.categorical] + [f.name for f in self.numeric]

    def transform(self, df: pl.DataFrame) -> AttributeBlock:
        """Encode catalog rows ``df`` (columns absent from ``df`` count as missing everywhere)."""
        n = df.height
        report: dict[str, dict[str, int]] = {}
        cat: dict[str, np.ndarray] = {}
        for f in self.categorical:
            cells = df[f.name].to_list() if f.name in df.columns else [None] * n
            cat[f.name], report[f.name] = f.encode(cells)
        num = np.zeros((n, len(self.numeric)), dtype=np.float32)
        miss = np.zeros((n, len(self.numeric)), dtype=np.float32)
        for j, f in enumerate(self.numeric):
            cells = df[f.name].to_list() if f.name in df.columns else [None] * n
            num[:, j], miss[:, j], report[f.name] = f.encode(cells)
        return AttributeBlock(categorical=cat, numeric=num, numeric_missing=miss, report=report)

    def to_dict(self) -> dict[str, Any]:
        return {"categorical": [f.to_dict() for f in self.categorical],
                "numeric": [f.to_dict() for f in self.numeric]}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> AttributeEncoder:
        return cls([CategoricalField.from_dict(x) for x in d["categorical"]],
                   [NumericField.from_dict(x) for x in d["numeric"]])
