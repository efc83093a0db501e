"""External ids <-> contiguous indices. Index 0 is padding and never an id."""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

from seqrec.errors import UnknownIdError


class Vocab:
    """``ids[i - 1]`` is the external id of index ``i``; ids are all ints or all strings."""

    def __init__(self, ids: Sequence[Any]) -> None:
        self.ids: list[Any] = list(ids)
        self.is_int = bool(self.ids) and all(isinstance(i, int) for i in self.ids)
        self._index = {v: i + 1 for i, v in enumerate(self.ids)}
        if len(self._index) != len(self.ids):
            raise ValueError("vocabulary ids must be unique")

    def __len__(self) -> int:
        """Number of real ids (indices run from 1 to ``len(self)``)."""
        return len(self.ids)

    def __contains__(self, external: Any) -> bool:
        return self.get(external) is not None

    def normalise(self, external: Any) -> Any:
        """An id as given by a user (``"42"`` on the command line) in this vocabulary's type."""
        if self.is_int and isinstance(external, str):
            s = external.strip()
            if s.lstrip("-").isdigit():
                return int(s)
        if not self.is_int and isinstance(external, int) and not isinstance(external, bool):
            return str(external)
        return external

    def get(self, external: Any) -> int | None:
        try:
            return self._index.get(self.normalise(external))
        except TypeError:  # unhashable
            return None

    def index(self, external: Any, what: str = "id") -> int:
        i = self.get(external)
        if i is None:
            raise UnknownIdError(f"unknown {what} {external!r}")
        return i

    def lookup(self, externals: Iterable[Any]) -> tuple[np.ndarray, list[Any]]:
        """Indices of the known ids (in order) and the list of unknown ones (never silently dropped)."""
        known, unknown = [], []
        for e in externals:
            i = self.get(e)
            if i is None:
                unknown.append(e)
            else:
                known.append(i)
        return np.asarray(known, dtype=np.int64), unknown

    def external(self, indices: Iterable[int]) -> list[Any]:
        return [self.ids[int(i) - 1] for i in indices]

    def to_json(self) -> str:
        return json.dumps({"ids": self.ids})

    @classmethod
    def from_json(cls, text: str) -> Vocab:
        return cls(json.loads(text)["ids"])
