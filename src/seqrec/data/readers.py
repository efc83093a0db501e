"""Generic readers: user-sequence text files and CSV/TSV/Parquet tables with named columns.

Every reader checks before it trusts: an empty file, bytes that are not in the declared encoding,
a malformed line or a missing column raise :class:`~seqrec.errors.DataError` naming the file, the
line and the column. Nothing is written by a reader.
"""

from __future__ import annotations

import difflib
from datetime import datetime, timezone
import io
from pathlib import Path

import polars as pl

from seqrec.data.log import InteractionLog, cast_ids, id_dtype_for
from seqrec.errors import DataError


def read_text(path: str | Path, encoding: str = "utf-8") -> str:
    """The whole file decoded; an empty file or an undecodable byte is a :class:`DataError`."""
    path = Path(path)
    if not path.exists():
        raise DataError("file not found", path=path)
    data = path.read_bytes()
    if not data.strip():
        raise DataError("file is empty", path=path)
    try:
        return data.decode(encoding)
    except UnicodeDecodeError as e:
        line = data.count(b"\n", 0, e.start) + 1
        col = e.start - (data.rfind(b"\n", 0, e.start) + 1) + 1
        raise DataError(
            f"byte 0x{data[e.start]:02x} at character {col} is not valid {encoding}; "
            f"give the file's encoding (for example --encoding latin-1 or [data] encoding = \"latin-1\")",
            path=path,
            line=line,
        ) from None


def read_sequences(path: str | Path, encoding: str = "utf-8") -> InteractionLog:
    """``user item item ...`` per line, items in time order (the S3Rec / ``Beauty.txt`` format).

    Blank lines are skipped. A line with a user and no item, or a user on two lines, is an error.
    There are no timestamps: the order within a line is the time order.
    """
    path = Path(path)
    text = read_text(path, encoding)
    users: list[str] = []
    items: list[str] = []
    first_line: dict[str, int] = {}
    for line_no, line in enumerate(text.splitlines(), 1):
        tokens = line.split()
        if not tokens:
            continue
        user = tokens[0]
        if len(tokens) < 2:
            raise DataError(
                f"user {user!r} has no items (expected 'user item item ...')", path=path, line=line_no
            )
        if user in first_line:
            raise DataError(
                f"user {user!r} appears again (first on line {first_line[user]}); "
                "each user must be on one line",
                path=path,
                line=line_no,
            )
        first_line[user] = line_no
        users.extend([user] * (len(tokens) - 1))
        items.extend(tokens[1:])
    n = len(items)
    df = pl.DataFrame(
        {
            "user_id": pl.Series(users, dtype=pl.String).cast(id_dtype_for(list(first_line))),
            "item_id": cast_ids(pl.Series(items, dtype=pl.String)),
            "timestamp": pl.Series([None] * n, dtype=pl.Int64),
            "rating": pl.Series([None] * n, dtype=pl.Float64),
            "row": pl.Series(range(n), dtype=pl.Int64),
        }
    )
    return InteractionLog(df, has_time=False, source=str(path))


def _suggest(name: str, columns: list[str]) -> str:
    close = difflib.get_close_matches(name, columns, n=1, cutoff=0.5)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _check_columns(path: Path, columns: list[str], wanted: dict[str, str | None]) -> None:
    for role, col in wanted.items():
        if col is not None and col not in columns:
            raise DataError(
                f"no {role} column {col!r}{_suggest(col, columns)}; the file has columns {columns}",
                path=path,
            )


def _parse_time(s: pl.Series, path: Path, col: str, line_offset: int) -> pl.Series:
    """Numbers as they are (seconds); otherwise ISO dates/date-times -> epoch seconds."""
    s = s.cast(pl.String).str.strip_chars()
    _check_no_nulls(s, path, col, line_offset)
    nums = s.cast(pl.Float64, strict=False)
    if nums.null_count() == 0:
        return nums.cast(pl.Int64)
    dates = _parse_dates(s)
    if dates.null_count() == 0:
        return dates
    bad = nums.is_null() & dates.is_null()
    # the first value that is neither a number nor a date; else (a mix of both) the first date
    i = int(bad.arg_true()[0]) if bad.any() else int(nums.is_null().arg_true()[0])
    raise DataError(
        f"value {s[i]!r} is not a number or an ISO date-time", path=path, line=i + line_offset, column=col
    )


def _parse_dates(s: pl.Series) -> pl.Series:
    """ISO dates / date-times -> Int64 epoch seconds (null where a value does not parse)."""
    try:
        return s.str.to_datetime(strict=False, time_unit="us").dt.epoch("s").cast(pl.Int64)
    except pl.exceptions.ComputeError:  # no single format fits: parse value by value
        out = []
        for v in s.to_list():
            try:
                d = datetime.fromisoformat(v)
                if d.tzinfo is None:
                    d = d.replace(tzinfo=timezone.utc)
                out.append(int(d.timestamp()))
            except (TypeError, ValueError):
                out.append(None)
        return pl.Series(out, dtype=pl.Int64)


def _check_no_nulls(s: pl.Series, path: Path, col: str, line_offset: int) -> None:
    empty = s.is_null()
    if s.dtype == pl.String:
        empty = empty | (s.str.strip_chars() == "")
    if empty.any():
        i = int(empty.arg_true()[0])
        raise DataError("empty value", path=path, line=i + line_offset, column=col)


def read_table(
    path: str | Path,
    *,
    user_col: str = "user_id",
    item_col: str = "item_id",
    time_col: str | None = "timestamp",
    rating_col: str | None = None,
    separator: str | None = None,
    encoding: str = "utf-8",
) -> InteractionLog:
    """Interactions from a CSV, TSV or Parquet file whose columns the caller names.

    CSV/TSV need a header line. Ids keep their form (integers stay integers). Time may be numeric
    (seconds, or any increasing number) or ISO dates; ``time_col=None`` keeps file order.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix == ".parquet":
        if not path.exists():
            raise DataError("file not found", path=path)
        try:
            df = pl.read_parquet(path)
        except Exception as e:  # noqa: BLE001 - polars raises several kinds
            raise DataError(f"not a readable Parquet file: {e}", path=path) from None
        line_offset = 1  # "line" = 1-based row for Parquet
        if df.height == 0:
            raise DataError("file has no rows", path=path)
    else:
        text = read_text(path, encoding)
        sep = separator or ("\t" if suffix in (".tsv", ".tab") else ",")
        try:
            df = pl.read_csv(
                io.StringIO(text), separator=sep, infer_schema=False, truncate_ragged_lines=False
            )
        except Exception as e:  # noqa: BLE001
            raise DataError(_csv_error(text, sep, str(e)), path=path) from None
        line_offset = 2  # header is line 1
        if df.height == 0:
            raise DataError("file has a header but no rows", path=path)
        _check_field_counts(text, sep, path, len(df.columns))
    columns = df.columns
    _check_columns(
        path, columns, {"user": user_col, "item": item_col, "time": time_col, "rating": rating_col}
    )
    for col in (user_col, item_col):
        _check_no_nulls(df[col], path, col, line_offset)
    n = df.height
    out = {
        "user_id": cast_ids(df[user_col]),
        "item_id": cast_ids(df[item_col]),
        "timestamp": (
            _parse_time(df[time_col], path, time_col, line_offset)
            if time_col
            else pl.Series([None] * n, dtype=pl.Int64)
        ),
    }
    if rating_col:
        r = df[rating_col].cast(pl.String).str.strip_chars().cast(pl.Float64, strict=False)
        if r.null_count():
            i = int(r.is_null().arg_true()[0])
            raise DataError(
                f"rating {df[rating_col][i]!r} is not a number", path=path, line=i + line_offset,
                column=rating_col,
            )
        out["rating"] = r
    else:
        out["rating"] = pl.Series([None] * n, dtype=pl.Float64)
    out["row"] = pl.Series(range(n), dtype=pl.Int64)
    return InteractionLog(pl.DataFrame(out), has_time=time_col is not None, source=str(path))


def _check_field_counts(text: str, sep: str, path: Path, n_cols: int) -> None:
    """Name the first line whose number of fields differs from the header's (ignores quoting)."""
    if '"' in text:
        return  # quoted fields may hold separators or newlines; polars already parsed them
    for line_no, line in enumerate(text.splitlines(), 1):
        if line.strip() and line.count(sep) + 1 != n_cols:
            raise DataError(
                f"expected {n_cols} fields separated by {sep!r}, found {line.count(sep) + 1}",
                path=path,
                line=line_no,
            )


def _csv_error(text: str, sep: str, message: str) -> str:
    lines = text.splitlines()
    if lines:
        n = lines[0].count(sep) + 1
        for i, line in enumerate(lines[1:], 2):
            if line.strip() and line.count(sep) + 1 != n:
                return f"line {i}: expected {n} fields separated by {sep!r}, found {line.count(sep) + 1}"
    return f"could not parse as a {sep!r}-separated table: {message.splitlines()[0]}"


def read_delimited_rows(
    path: str | Path,
    separator: str,
    columns: list[str],
    int_columns: list[str],
    encoding: str = "utf-8",
) -> pl.DataFrame:
    """A header-less delimited file (``u.data``, ``ratings.dat``) with a fixed number of fields.

    ``separator`` may be several characters (``::``). Each line must have exactly ``len(columns)``
    fields and the ``int_columns`` must be integers; otherwise the error names the line and column.
    """
    path = Path(path)
    text = read_text(path, encoding)
    lines = text.splitlines()
    rows: list[list[str]] = []
    for line_no, line in enumerate(lines, 1):
        if not line.strip():
            continue
        parts = line.split(separator)
        if len(parts) != len(columns):
            raise DataError(
                f"expected {len(columns)} fields ({', '.join(columns)}) separated by {separator!r}, "
                f"found {len(parts)}",
                path=path,
                line=line_no,
            )
        rows.append(parts)
    cols = list(zip(*rows)) if rows else [[] for _ in columns]
    data: dict[str, pl.Series] = {}
    line_of = [i for i, line in enumerate(lines, 1) if line.strip()]
    for name, values in zip(columns, cols):
        s = pl.Series(name, list(values), dtype=pl.String).str.strip_chars()
        if name in int_columns:
            ints = s.cast(pl.Int64, strict=False)
            if ints.null_count():
                i = int(ints.is_null().arg_true()[0])
                raise DataError(
                    f"{s[i]!r} is not an integer", path=path, line=line_of[i], column=name
                )
            s = ints
        data[name] = s
    return pl.DataFrame(data)
