"""MovieLens readers: 100K raw files and 1M (``ml-1m_seq.txt`` export or the official ``ratings.dat``)."""

from __future__ import annotations

import re
from pathlib import Path

import polars as pl

from seqrec.data.log import InteractionLog, ItemCatalog
from seqrec.data.readers import read_delimited_rows, read_sequences, read_text
from seqrec.errors import DataError

_YEAR = re.compile(r"\((\d{4})\)\s*$")


def _log_from_rows(df: pl.DataFrame, source: str) -> InteractionLog:
    n = df.height
    return InteractionLog(
        pl.DataFrame(
            {
                "user_id": df["user_id"],
                "item_id": df["item_id"],
                "timestamp": df["timestamp"],
                "rating": df["rating"].cast(pl.Float64),
                "row": pl.Series(range(n), dtype=pl.Int64),
            }
        ),
        has_time=True,
        source=source,
    )


def read_ml100k(folder: str | Path) -> tuple[InteractionLog, ItemCatalog]:
    """``u.data`` (tab: user, item, rating, unix time) and ``u.item`` / ``u.genre`` (pipe, Latin-1)."""
    folder = Path(folder)
    rows = read_delimited_rows(
        folder / "u.data",
        "\t",
        ["user_id", "item_id", "rating", "timestamp"],
        int_columns=["user_id", "item_id", "rating", "timestamp"],
    )
    log = _log_from_rows(rows, str(folder / "u.data"))
    return log, read_ml100k_items(folder)


def read_ml100k_items(folder: Path) -> ItemCatalog:
    item_path, genre_path = folder / "u.item", folder / "u.genre"
    if not item_path.exists():
        return ItemCatalog.empty()
    genres: list[str] = []
    if genre_path.exists():
        for line in read_text(genre_path, "latin-1").splitlines():
            if "|" in line:
                name, _, _ = line.partition("|")
                genres.append(name)
    ids, titles, years, cats = [], [], [], []
    for line_no, line in enumerate(read_text(item_path, "latin-1").splitlines(), 1):
        if not line.strip():
            continue
        f = line.split("|")
        if len(f) < 5 or not f[0].isdigit():
            raise DataError("expected 'id|title|release date|video date|url|genre flags...'",
                            path=item_path, line=line_no)
        ids.append(int(f[0]))
        titles.append(f[1] or None)
        m = re.search(r"(\d{4})$", f[2])
        years.append(int(m.group(1)) if m else None)
        flags = f[5:]
        cats.append([g for g, flag in zip(genres, flags) if flag.strip() == "1"])
    return ItemCatalog(
        pl.DataFrame(
            {"item_id": ids, "title": titles, "categories": cats, "year": years},
            schema={"item_id": pl.Int64, "title": pl.String, "categories": pl.List(pl.String),
                    "year": pl.Int64},
        )
    )


def read_ml1m(folder: str | Path) -> tuple[InteractionLog, ItemCatalog]:
    """The official ``ratings.dat`` (``::``, with ratings and timestamps) when present, else the
    ``ml-1m_seq.txt`` export (time-ordered sequences, no timestamps); titles and genres from
    ``movies.dat`` (Latin-1)."""
    folder = Path(folder)
    ratings = folder / "ratings.dat"
    if ratings.exists():
        rows = read_delimited_rows(
            ratings, "::", ["user_id", "item_id", "rating", "timestamp"],
            int_columns=["user_id", "item_id", "rating", "timestamp"],
        )
        log = _log_from_rows(rows, str(ratings))
    else:
        seq = folder / "ml-1m_seq.txt"
        if not seq.exists():
            raise DataError(
                "neither ratings.dat nor ml-1m_seq.txt found (run 'seqrec data download ml-1m')",
                path=folder,
            )
        log = read_sequences(seq)
    return log, read_ml1m_items(folder)


def read_ml1m_items(folder: Path) -> ItemCatalog:
    path = folder / "movies.dat"
    if not path.exists():
        return ItemCatalog.empty()
    ids, titles, years, cats = [], [], [], []
    for line_no, line in enumerate(read_text(path, "latin-1").splitlines(), 1):
        if not line.strip():
            continue
        f = line.split("::")
        if len(f) != 3 or not f[0].isdigit():
            raise DataError("expected 'MovieID::Title::Genres'", path=path, line=line_no)
        ids.append(int(f[0]))
        titles.append(f[1])
        m = _YEAR.search(f[1])
        years.append(int(m.group(1)) if m else None)
        cats.append([g for g in f[2].split("|") if g])
    return ItemCatalog(
        pl.DataFrame(
            {"item_id": ids, "title": titles, "categories": cats, "year": years},
            schema={"item_id": pl.Int64, "title": pl.String, "categories": pl.List(pl.String),
                    "year": pl.Int64},
        )
    )
