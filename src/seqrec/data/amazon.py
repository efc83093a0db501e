"""The S3Rec sequence format (Amazon Beauty/Sports/Toys, Yelp, LastFM) and the Beauty item text.

``<Name>.txt`` holds ``user item item ...`` lines; ``<Name>_item2attributes.json`` the attribute
ids of each item. For Beauty, titles, categories, brand and price come from ``Amazon_Beauty.item``
(a RecBole atomic file) through the id -> ASIN map ``Beauty_item_id2asin.tsv``; when the map is
absent it is derived from ``user_sequence.txt`` (the same sequences at ASIN level, line by line).
"""

from __future__ import annotations

import ast
import csv
import html
import io
import json
from pathlib import Path

import polars as pl

from seqrec.data.log import InteractionLog, ItemCatalog
from seqrec.data.readers import read_sequences, read_text
from seqrec.errors import DataError


def read_s3rec(folder: str | Path, stem: str) -> tuple[InteractionLog, ItemCatalog]:
    """``<stem>.txt`` sequences plus whatever item metadata the folder holds."""
    folder = Path(folder)
    log = read_sequences(folder / f"{stem}.txt")
    catalog = read_attributes(folder / f"{stem}_item2attributes.json")
    if stem == "Beauty":
        text = read_beauty_text(folder)
        if text is not None:
            catalog = ItemCatalog(text.df.join(catalog.df.select("item_id", "attributes"),
                                               on="item_id", how="full", coalesce=True))
    return log, catalog


def read_attributes(path: Path) -> ItemCatalog:
    if not path.exists():
        return ItemCatalog.empty()
    try:
        raw = json.loads(read_text(path))
    except json.JSONDecodeError as e:
        raise DataError(f"invalid JSON: {e.msg}", path=path, line=e.lineno) from None
    if not isinstance(raw, dict):
        raise DataError("expected an object {item_id: [attribute ids]}", path=path)
    ids, attrs = [], []
    for k, v in raw.items():
        if not k.lstrip("-").isdigit() or not isinstance(v, list):
            raise DataError(f"item {k!r}: expected an integer id and a list of attribute ids",
                            path=path)
        ids.append(int(k))
        attrs.append([int(a) for a in v])
    return ItemCatalog(
        pl.DataFrame({"item_id": ids, "attributes": attrs},
                     schema={"item_id": pl.Int64, "attributes": pl.List(pl.Int64)})
    )


def derive_id2asin(folder: Path) -> dict[int, str]:
    """Zip ``Beauty.txt`` with ``user_sequence.txt`` token by token: S3Rec item id -> ASIN."""
    ids_path, asin_path = folder / "Beauty.txt", folder / "user_sequence.txt"
    mapping: dict[int, str] = {}
    a_lines = read_text(asin_path).splitlines()
    b_lines = read_text(ids_path).splitlines()
    if len(a_lines) != len(b_lines):
        raise DataError(f"has {len(a_lines)} lines but {ids_path.name} has {len(b_lines)}",
                        path=asin_path)
    for line_no, (a, b) in enumerate(zip(a_lines, b_lines), 1):
        ta, tb = a.split()[1:], b.split()[1:]
        if len(ta) != len(tb):
            raise DataError(f"sequence length differs from {ids_path.name}", path=asin_path,
                            line=line_no)
        for asin, item in zip(ta, tb):
            if mapping.setdefault(int(item), asin) != asin:
                raise DataError(f"item {item} maps to two ASINs", path=asin_path, line=line_no)
    return mapping


def read_beauty_text(folder: Path) -> ItemCatalog | None:
    item_path = folder / "Amazon_Beauty.item"
    map_path = folder / "Beauty_item_id2asin.tsv"
    if not item_path.exists():
        return None
    if map_path.exists():
        id2asin = {}
        for line_no, line in enumerate(read_text(map_path).splitlines()[1:], 2):
            f = line.split("\t")
            if len(f) != 2 or not f[0].isdigit():
                raise DataError("expected 'item_id<TAB>asin'", path=map_path, line=line_no)
            id2asin[int(f[0])] = f[1]
    elif (folder / "user_sequence.txt").exists():
        id2asin = derive_id2asin(folder)
    else:
        return None
    reader = csv.reader(io.StringIO(read_text(item_path)), delimiter="\t")
    header = next(reader)
    col = {name.split(":")[0]: i for i, name in enumerate(header)}
    for need in ("item_id", "title", "categories"):
        if need not in col:
            raise DataError(f"no {need!r} column; header is {header}", path=item_path)
    by_asin: dict[str, list[str]] = {row[col["item_id"]]: row for row in reader if row}

    def field(row: list[str], name: str) -> str | None:
        i = col.get(name)
        v = row[i].strip() if i is not None and i < len(row) else ""
        return v or None

    ids, titles, cats, brands, prices = [], [], [], [], []
    for item, asin in sorted(id2asin.items()):
        row = by_asin.get(asin, [])
        ids.append(item)
        t = field(row, "title")
        titles.append(html.unescape(t) if t else None)
        cats.append(_parse_categories(field(row, "categories")))
        brands.append(field(row, "brand"))
        prices.append(_to_float(field(row, "price")))
    return ItemCatalog(
        pl.DataFrame(
            {"item_id": ids, "title": titles, "categories": cats, "brand": brands, "price": prices},
            schema={"item_id": pl.Int64, "title": pl.String, "categories": pl.List(pl.String),
                    "brand": pl.String, "price": pl.Float64},
        )
    )


def _parse_categories(text: str | None) -> list[str]:
    """``'Beauty', 'Makeup', "Women's"`` (a Python-list-like token_seq) -> list of strings."""
    if not text:
        return []
    try:
        values = ast.literal_eval(f"[{text}]")
    except (ValueError, SyntaxError):
        values = [v.strip().strip("'\"") for v in text.split(",")]
    return [html.unescape(str(v)) for v in values if str(v).strip()]


def _to_float(text: str | None) -> float | None:
    try:
        return float(text) if text else None
    except ValueError:
        return None
