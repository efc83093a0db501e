"""The text of each item, built from its :class:`~seqrec.data.log.ItemCatalog` row.

By default the text is the title alone (``Maybelline Great Lash Waterproof Mascara``,
``Toy Story (1995)``): brand, categories and genres reach the model as learned attribute
embeddings already, and short texts keep encoding fast. Other fields can be asked for; then the
title comes as is and every other field as ``Label: value`` (lists joined with ``", "``,
duplicates dropped), parts joined by ``". "``::

    Great Lash Mascara. Brand: Maybelline. Categories: Beauty, Makeup, Eyes, Mascara

Fallbacks, counted in the report: an item whose text fields are all empty (no title) gets a text
from the fallback fields (default ``brand``, ``categories``: ``Brand: COKA. Categories: Beauty,
Makeup``), counted as ``fallback_text``; an item with none of these fields (or absent from the
catalog) gets the empty string (``empty_text``; the encoder gives it the zero vector);
``not_in_catalog`` counts items the catalog has no row for, ``missing_title`` items without a title.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import polars as pl

from seqrec.data.log import ItemCatalog
from seqrec.errors import ConfigError, DataError

logger = logging.getLogger(__name__)

DEFAULT_TEXT_FIELDS: tuple[str, ...] = ("title",)
"""Fields that make the item text by default (when present in the catalog)."""
DEFAULT_FALLBACK_FIELDS: tuple[str, ...] = ("brand", "categories")
"""Fields used, when present, for items whose text fields are all empty."""


def _render(value: Any) -> str:
    """One field value as text: lists joined (duplicates and blanks dropped), floats trimmed."""
    if value is None:
        return ""
    if isinstance(value, (list, tuple)):
        parts = [_render(v) for v in value]
        return ", ".join(dict.fromkeys(p for p in parts if p))
    if isinstance(value, float):
        return f"{value:g}"
    return str(value).strip()


def _label(field: str) -> str:
    return field.replace("_", " ").capitalize()


def compose_text(row: dict[str, Any], fields: Sequence[str]) -> str:
    """The text of one catalog row (see the module docstring)."""
    parts = []
    for f in fields:
        text = _render(row.get(f))
        if not text:
            continue
        parts.append(text if f == "title" else f"{_label(f)}: {text}")
    return ". ".join(parts)


def check_unique_ids(catalog: ItemCatalog, source: str = "item catalog") -> None:
    """A catalog with the same item twice cannot be aligned to item indices: a DataError names it."""
    ids = catalog.df["item_id"]
    dup = ids.filter(ids.is_duplicated())
    if len(dup):
        raise DataError(f"item {dup[0]!r} appears {int((ids == dup[0]).sum())} times "
                        f"({dup.n_unique()} duplicated ids in all)", path=source, column="item_id")


def aligned_rows(catalog: ItemCatalog, item_ids: Sequence[Any]) -> tuple[pl.DataFrame, list[bool]]:
    """Catalog rows for ``item_ids`` in that order (nulls when absent) and which were present."""
    check_unique_ids(catalog)
    rows = catalog.restrict(list(item_ids)).df
    if not item_ids:
        return rows, []
    dtype = catalog.df.schema["item_id"]
    keys = pl.Series(list(item_ids)).cast(dtype, strict=False)
    present = keys.is_in(catalog.df["item_id"].implode()).fill_null(False).to_list()
    return rows, present


def _choose_fields(catalog: ItemCatalog, fields: Sequence[str] | None,
                   default: Sequence[str], what: str) -> list[str]:
    if fields is None:
        return [f for f in default if f in catalog.df.columns]
    missing = [f for f in fields if f not in catalog.df.columns]
    if missing:
        columns = [c for c in catalog.df.columns if c != "item_id"]
        raise ConfigError(f"{what} field(s) {missing} not in the item catalog; it has "
                          f"{', '.join(columns) or 'no content columns'}")
    return list(fields)


def item_texts(
    catalog: ItemCatalog,
    item_ids: Sequence[Any],
    fields: Sequence[str] | None = None,
    fallback_fields: Sequence[str] | None = None,
) -> tuple[list[str], dict[str, int]]:
    """Text of each item of ``item_ids`` (external ids, in that order) and the fallback counts.

    ``None`` field lists use :data:`DEFAULT_TEXT_FIELDS` / :data:`DEFAULT_FALLBACK_FIELDS` that
    the catalog has; a field named explicitly but absent from the catalog is a ConfigError listing
    the columns. ``fallback_fields=[]`` turns the fallback off.
    """
    fields = _choose_fields(catalog, fields, DEFAULT_TEXT_FIELDS, "text")
    fallback = _choose_fields(catalog, fallback_fields, DEFAULT_FALLBACK_FIELDS, "fallback text")
    rows, present = aligned_rows(catalog, item_ids)
    used = list(dict.fromkeys([*fields, *fallback, *(["title"] if "title" in rows.columns else [])]))
    texts: list[str] = []
    missing_title = fell_back = empty = 0
    for row in rows.select(used).iter_rows(named=True) if used else ({} for _ in item_ids):
        missing_title += not _render(row.get("title"))
        text = compose_text(row, fields)
        if not text and fallback:
            text = compose_text(row, fallback)
            fell_back += bool(text)
        empty += not text
        texts.append(text)
    report = {"items": len(texts), "not_in_catalog": present.count(False),
              "missing_title": missing_title, "fallback_text": fell_back, "empty_text": empty}
    if empty or fell_back:
        logger.info("item text: %d items without %s use %s, %d have no text at all (zero "
                    "vector)", fell_back, "/".join(fields), "/".join(fallback) or "-", empty)
    return texts, report
