"""Errors that name the problem: which file, which line, which column, which id."""

from __future__ import annotations

from pathlib import Path


class SeqrecError(Exception):
    """Base class of every error seqrec raises on purpose (the CLI prints these without a traceback)."""


class DataError(SeqrecError):
    """Bad input data. Carries the file, 1-based line and column name when they are known."""

    def __init__(
        self,
        message: str,
        *,
        path: str | Path | None = None,
        line: int | None = None,
        column: str | None = None,
    ) -> None:
        self.path = None if path is None else str(path)
        self.line = line
        self.column = column
        where = []
        if self.path is not None:
            where.append(self.path)
        if line is not None:
            where.append(f"line {line}")
        if column is not None:
            where.append(f"column {column!r}")
        self.detail = message
        super().__init__(f"{', '.join(where)}: {message}" if where else message)


class ConfigError(SeqrecError):
    """A configuration value or key that is not valid."""


class ArtifactError(SeqrecError):
    """A missing, incomplete or incompatible artifact directory."""


class UnknownIdError(SeqrecError):
    """An external user or item id that the vocabulary does not know."""
