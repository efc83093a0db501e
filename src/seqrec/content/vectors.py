"""Item vectors from a user file (image embeddings, or any other precomputed vectors).

Accepted files:

- ``vectors.npy`` (a 2-D numeric array ``[m, d]``, read with ``allow_pickle=False``) plus an id
  list with one id per row: ``ids_path`` when given, else the first of ``vectors.ids.json``,
  ``vectors.ids.txt``, ``vectors.json``, ``vectors.txt`` beside it. A ``.json`` id list is a JSON
  array; a ``.txt`` one has one id per line.
- ``vectors.parquet``: an id column (``item_id`` unless told) and either one list / fixed-size
  array column of numbers (found automatically when it is the only other column, or named), or
  several numeric columns (one per dimension, in file order).

Checks, each a :class:`~seqrec.errors.DataError` naming the file and the row or id: not a 2-D
numeric array, an id list whose length differs from the rows, duplicate ids, rows of different
lengths, a dimension other than ``expected_dim``, NaN / inf / null values (or, with
``nonfinite="missing"``, those rows are dropped and counted, and their items treated as missing).

Aligning to the model's items (:func:`align_item_vectors`): ids are matched in the vocabulary's
type (``"42"`` in a text id list matches item 42). Items without a vector get the zero vector and a
``missing`` flag of 1 (``missing="zero"``, the default, counted as ``missing_items``), or raise
(``missing="error"``). Ids in the file that are not items of the model are counted
(``unknown_ids``, with a few examples) and ignored: they may be items to add later.
"""

from __future__ import annotations

import difflib
import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from seqrec.data.vocab import Vocab
from seqrec.errors import ConfigError, DataError

logger = logging.getLogger(__name__)

_EXAMPLES = 5


@dataclass
class ItemVectors:
    """Vectors read from a file: row ``r`` of ``vectors`` belongs to ``ids[r]``."""

    ids: list[Any]
    vectors: np.ndarray
    """``[m, d]`` float32, all finite."""
    path: str
    report: dict[str, Any] = field(default_factory=dict)
    """``rows`` read, ``dim``, ``nonfinite_rows`` dropped (with ``nonfinite="missing"``)."""

    @property
    def dim(self) -> int:
        return int(self.vectors.shape[1])


def _default_ids_path(path: Path) -> Path | None:
    stem = path.with_suffix("")
    for cand in (stem.with_name(stem.name + ".ids.json"), stem.with_name(stem.name + ".ids.txt"),
                 stem.with_suffix(".json"), stem.with_suffix(".txt")):
        if cand.exists():
            return cand
    return None


def _read_id_list(path: Path) -> list[Any]:
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise DataError(f"id list is not UTF-8 text ({e.reason})", path=path) from None
    if path.suffix == ".json":
        try:
            ids = json.loads(text)
        except json.JSONDecodeError as e:
            raise DataError(f"invalid JSON: {e.msg}", path=path, line=e.lineno) from None
        if not isinstance(ids, list):
            raise DataError("expected a JSON array of item ids", path=path)
        for r, i in enumerate(ids):
            if not isinstance(i, (int, str)) or isinstance(i, bool):
                raise DataError(f"entry {r} is {i!r}: item ids must be integers or strings",
                                path=path)
        return ids
    ids = []
    lines = text.splitlines()
    while lines and not lines[-1].strip():
        lines.pop()  # a trailing newline is not an id
    for line_no, line in enumerate(lines, 1):
        s = line.strip()
        if not s:
            raise DataError("empty line in the id list (one item id per line)", path=path,
                            line=line_no)
        ids.append(s)
    return ids


def _check_unique(ids: list[Any], path: Path) -> None:
    seen: dict[Any, int] = {}
    for r, i in enumerate(ids):
        if i in seen:
            raise DataError(f"item {i!r} appears twice (rows {seen[i]} and {r})", path=path)
        seen[i] = r


def _read_npy(path: Path, ids_path: Path | None) -> tuple[list[Any], np.ndarray, Path]:
    try:
        arr = np.load(path, allow_pickle=False)
    except ValueError as e:  # object arrays, or not an .npy file
        raise DataError(f"not a numeric .npy array ({e})", path=path) from None
    except OSError as e:
        raise DataError(f"cannot read: {e}", path=path) from None
    if not isinstance(arr, np.ndarray) or arr.ndim != 2:
        shape = getattr(arr, "shape", None)
        raise DataError(f"expected a 2-D array [items, dim], got shape {shape}", path=path)
    if not (np.issubdtype(arr.dtype, np.floating) or np.issubdtype(arr.dtype, np.integer)):
        raise DataError(f"expected numbers, got dtype {arr.dtype}", path=path)
    ids_path = ids_path or _default_ids_path(path)
    if ids_path is None:
        raise DataError("an .npy file needs its item ids: pass ids_path, or put "
                        f"{path.with_suffix('').name}.ids.json (a JSON array) or .ids.txt (one id "
                        "per line) beside it", path=path)
    ids_path = Path(ids_path)
    if not ids_path.exists():
        raise DataError("id list not found", path=ids_path)
    ids = _read_id_list(ids_path)
    if len(ids) != arr.shape[0]:
        raise DataError(f"{len(ids)} ids for {arr.shape[0]} vectors in {path.name}", path=ids_path)
    _check_unique(ids, ids_path)
    return ids, arr, ids_path


def _read_parquet(path: Path, id_column: str, vector_column: str | None) -> tuple[list[Any], np.ndarray]:
    try:
        df = pl.read_parquet(path)
    except Exception as e:  # polars raises several types for a damaged or non-Parquet file
        raise DataError(f"cannot read as Parquet: {e}", path=path) from None
    if id_column not in df.columns:
        close = difflib.get_close_matches(id_column, df.columns, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise DataError(f"no id column {id_column!r}{hint}; columns are {df.columns}", path=path)
    ids_s = df[id_column]
    if ids_s.null_count():
        r = int(ids_s.is_null().arg_max())  # type: ignore[arg-type]
        raise DataError(f"row {r} has no item id", path=path, column=id_column)
    ids = ids_s.to_list()
    _check_unique(ids, path)
    others = [c for c in df.columns if c != id_column]
    if vector_column is None:
        lists = [c for c in others if isinstance(df.schema[c], (pl.List, pl.Array))]
        if len(lists) == 1:
            vector_column = lists[0]
        elif not lists and others and all(df.schema[c].is_numeric() for c in others):
            mat = df.select(others).cast(pl.Float64).to_numpy()  # wide: one column per dimension
            return ids, mat
        else:
            raise DataError(f"cannot tell which column holds the vectors among {others}: name it "
                            "(vector_column)", path=path)
    if vector_column not in df.columns:
        close = difflib.get_close_matches(vector_column, others, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise DataError(f"no vector column {vector_column!r}{hint}; columns are {df.columns}",
                        path=path)
    col = df[vector_column]
    if not isinstance(col.dtype, (pl.List, pl.Array)):
        raise DataError(f"expected a list of numbers per row, got {col.dtype}", path=path,
                        column=vector_column)
    inner = col.dtype.inner  # type: ignore[union-attr]
    if inner is None or not inner.is_numeric():
        raise DataError(f"expected numbers, got {col.dtype}", path=path, column=vector_column)
    lengths = col.list.len() if isinstance(col.dtype, pl.List) else None
    if lengths is not None:
        if col.null_count():
            r = int(col.is_null().arg_max())  # type: ignore[arg-type]
            raise DataError(f"row {r} (item {ids[r]!r}) has no vector", path=path,
                            column=vector_column)
        dims = lengths.unique().sort().to_list()
        if len(dims) > 1:
            first = lengths[0]
            r = int((lengths != first).arg_max())  # type: ignore[arg-type]
            raise DataError(f"vectors of different lengths ({', '.join(map(str, dims))}): row {r} "
                            f"(item {ids[r]!r}) has {lengths[r]}, row 0 has {first}", path=path,
                            column=vector_column)
    flat = col.explode() if lengths is not None else col.arr.explode()
    dim = int(lengths[0]) if lengths is not None and len(lengths) else int(col.dtype.size)  # type: ignore[union-attr]
    mat = flat.cast(pl.Float64).to_numpy().reshape(len(ids), dim)  # [m, d]; nulls -> NaN
    return ids, mat


def read_item_vectors(
    path: str | Path,
    *,
    ids_path: str | Path | None = None,
    id_column: str = "item_id",
    vector_column: str | None = None,
    expected_dim: int | None = None,
    nonfinite: str = "error",
) -> ItemVectors:
    """Read and check a vector file (see the module docstring).

    Args:
        path: ``.npy`` or ``.parquet``.
        ids_path: the id list of an ``.npy`` file (default: found beside it).
        id_column, vector_column: Parquet columns (the vector column is found when unambiguous).
        expected_dim: when given, any other dimension is an error.
        nonfinite: ``"error"`` (default): a row with NaN, inf or null is a DataError naming it;
            ``"missing"``: such rows are dropped (counted), their items become missing.
    """
    if nonfinite not in ("error", "missing"):
        raise ConfigError(f"nonfinite must be 'error' or 'missing', got {nonfinite!r}")
    path = Path(path)
    if not path.exists():
        raise DataError("vector file not found", path=path)
    suffix = path.suffix.lower()
    if suffix == ".npy":
        ids, mat, _ = _read_npy(path, None if ids_path is None else Path(ids_path))
    elif suffix in (".parquet", ".pq"):
        ids, mat = _read_parquet(path, id_column, vector_column)
    else:
        raise DataError("unsupported vector file: use .npy (with an id list) or .parquet", path=path)
    if mat.shape[0] == 0:
        raise DataError("no vectors in the file", path=path)
    if mat.shape[1] == 0:
        raise DataError("vectors have dimension 0", path=path)
    if expected_dim is not None and mat.shape[1] != expected_dim:
        raise DataError(f"vectors have dimension {mat.shape[1]}, expected {expected_dim}", path=path)
    with np.errstate(over="ignore"):
        vecs = mat.astype(np.float32)  # values beyond float32 become inf and are caught below
    bad = ~np.isfinite(vecs).all(axis=1)
    report: dict[str, Any] = {"rows": int(len(ids)), "dim": int(vecs.shape[1]),
                              "nonfinite_rows": int(bad.sum())}
    if bad.any():
        r = int(np.flatnonzero(bad)[0])
        what = f"{int(bad.sum())} row(s) with NaN, inf or missing values, first row {r} " \
               f"(item {ids[r]!r})"
        if nonfinite == "error":
            raise DataError(f"{what}; fix them, or read with nonfinite='missing' to treat those "
                            "items as having no vector", path=path)
        logger.warning("%s: %s dropped", path, what)
        report["nonfinite_examples"] = [ids[i] for i in np.flatnonzero(bad)[:_EXAMPLES].tolist()]
        keep = np.flatnonzero(~bad)
        ids = [ids[i] for i in keep.tolist()]
        vecs = vecs[keep]
    return ItemVectors(ids=list(ids), vectors=np.ascontiguousarray(vecs), path=str(path),
                       report=report)


def align_item_vectors(
    vectors: ItemVectors,
    item_ids: Sequence[Any],
    *,
    missing: str = "zero",
) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """Vectors aligned to item indices: ``(V [N+1, d] float32, missing [N+1] float32, report)``.

    Row ``i`` (1..N) belongs to ``item_ids[i - 1]``; row 0 (padding) is zero with missing = 0.
    ``missing="zero"`` gives items without a vector the zero vector and missing = 1 (counted);
    ``missing="error"`` raises a DataError naming the first few.
    """
    if missing not in ("zero", "error"):
        raise ConfigError(f"missing must be 'zero' or 'error', got {missing!r}")
    vocab = Vocab(list(item_ids))
    n = len(vocab)
    out = np.zeros((n + 1, vectors.dim), dtype=np.float32)
    has = np.zeros(n + 1, dtype=bool)
    unknown: list[Any] = []
    for r, ext in enumerate(vectors.ids):
        i = vocab.get(ext)
        if i is None:
            unknown.append(ext)
            continue
        out[i] = vectors.vectors[r]
        has[i] = True
    flag = (~has).astype(np.float32)
    flag[0] = 0.0
    absent = [vocab.ids[i - 1] for i in np.flatnonzero(~has[1:]) + 1] if n else []
    report: dict[str, Any] = {
        "file": vectors.path, "dim": vectors.dim, "items": n, "with_vector": int(has[1:].sum()),
        "missing_items": len(absent), "unknown_ids": len(unknown),
        "nonfinite_rows": vectors.report.get("nonfinite_rows", 0),
    }
    if absent:
        report["missing_examples"] = absent[:_EXAMPLES]
        if missing == "error":
            raise DataError(f"{len(absent)} of {n} items have no vector, e.g. "
                            f"{', '.join(map(repr, absent[:_EXAMPLES]))} (missing='zero' gives them "
                            "the zero vector)", path=vectors.path)
        logger.warning("%s: %d of %d items have no vector: zero vectors", vectors.path,
                       len(absent), n)
    if unknown:
        report["unknown_examples"] = unknown[:_EXAMPLES]
        logger.info("%s: %d ids are not items of the model (ignored)", vectors.path, len(unknown))
    return out, flag, report
