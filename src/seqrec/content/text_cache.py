"""The on-disk cache of text vectors: one folder per model identity, one ``.npy`` shard per flush.

Each text is keyed by the SHA-256 of its UTF-8 bytes (:func:`text_key`). Vectors are ``.npy``
shards (float32, loaded with ``allow_pickle=False``) beside ``.keys.npy`` lists of hashes; every
file is written atomically and the keys file last, so a process killed mid-way leaves only
complete shards. The root is :func:`default_cache_dir` unless a caller names another.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import logging
import os
import secrets
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from seqrec.fsutil import atomic_write_bytes, atomic_write_text

logger = logging.getLogger(__name__)


def text_key(text: str) -> str:
    """Cache key of one text: SHA-256 hex of its UTF-8 bytes."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def default_cache_dir() -> Path:
    """``$SEQREC_CACHE_DIR/text-vectors`` when the variable is set, else ``~/.cache/seqrec/text-vectors``.

    Read when called (never at import); entry points may pass an explicit ``cache_dir`` instead.
    """
    root = os.environ.get("SEQREC_CACHE_DIR")
    base = Path(root).expanduser() if root else Path.home() / ".cache" / "seqrec"
    return base / "text-vectors"


def _npy_bytes(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, array, allow_pickle=False)
    return buf.getvalue()


class VectorCache:
    """Text vectors of one model, keyed by text hash, in ``folder`` (see the module docstring).

    Files: ``meta.json`` (model, dimension, format), and per shard ``<id>.vectors.npy`` ([m, d]
    float32) and ``<id>.keys.npy`` ([m] hex hashes, written last: a shard without it is ignored).
    Several processes may add shards at once; shards are merged when there are more than
    ``max_shards``.
    """

    def __init__(self, folder: str | Path, max_shards: int = 8) -> None:
        self.folder = Path(folder)
        self.max_shards = max_shards

    def meta(self) -> dict[str, Any] | None:
        path = self.folder / "meta.json"
        if not path.exists():
            return None
        try:
            return json.loads(path.read_text())
        except (OSError, json.JSONDecodeError):
            logger.warning("ignoring unreadable %s", path)
            return None

    def write_meta(self, meta: dict[str, Any]) -> None:
        atomic_write_text(self.folder / "meta.json", json.dumps(meta, indent=2))

    def _shards(self) -> list[str]:
        if not self.folder.is_dir():
            return []
        return sorted(p.name[: -len(".keys.npy")] for p in self.folder.glob("*.keys.npy"))

    def _write_shard(self, keys: Sequence[str], vectors: np.ndarray) -> None:
        """A new shard under a fresh name: vectors first, keys last (a shard is complete once its
        keys file exists)."""
        shard = f"{time.strftime('%Y%m%d%H%M%S')}-{secrets.token_hex(4)}"
        atomic_write_bytes(self.folder / f"{shard}.vectors.npy", _npy_bytes(vectors))
        atomic_write_bytes(self.folder / f"{shard}.keys.npy",
                           _npy_bytes(np.asarray(list(keys), dtype="<U64")))

    def _read_shard(self, shard: str) -> tuple[np.ndarray, np.ndarray] | None:
        try:
            keys = np.load(self.folder / f"{shard}.keys.npy", allow_pickle=False)
            vecs = np.load(self.folder / f"{shard}.vectors.npy", allow_pickle=False, mmap_mode="r")
        except (OSError, ValueError) as e:  # removed by a concurrent merge, or damaged
            logger.warning("skipping cache shard %s/%s: %s", self.folder, shard, e)
            return None
        if vecs.ndim != 2 or keys.ndim != 1 or len(keys) != len(vecs):
            logger.warning("skipping inconsistent cache shard %s/%s", self.folder, shard)
            return None
        return keys, vecs

    def lookup(self, keys: Sequence[str], dim: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """``(found [n] bool, vectors [n, d] float32)`` for ``keys``; rows not found are zeros.

        With no shard at all, ``d`` is ``dim`` (or 0 when unknown)."""
        wanted = {k: i for i, k in enumerate(keys)}
        found = np.zeros(len(keys), dtype=bool)
        out: np.ndarray | None = None
        for shard in self._shards():
            if found.all():
                break
            read = self._read_shard(shard)
            if read is None:
                continue
            skeys, svecs = read
            if out is None:
                out = np.zeros((len(keys), svecs.shape[1]), dtype=np.float32)
            elif svecs.shape[1] != out.shape[1]:
                logger.warning("skipping cache shard %s/%s of another dimension", self.folder, shard)
                continue
            rows, src = [], []
            for j, k in enumerate(skeys.tolist()):
                i = wanted.get(k)
                if i is not None and not found[i]:
                    rows.append(i)
                    src.append(j)
            if rows:
                out[rows] = svecs[src]
                found[rows] = True
        if out is None:
            out = np.zeros((len(keys), dim or 0), dtype=np.float32)
        return found, out

    def add(self, keys: Sequence[str], vectors: np.ndarray) -> None:
        """Store one shard (vectors first, keys last), then merge shards if there are too many."""
        if len(keys) == 0:
            return
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        if vectors.shape[0] != len(keys):
            raise ValueError(f"{len(keys)} keys for {vectors.shape[0]} vectors")
        self._write_shard(keys, vectors)
        if len(self._shards()) > self.max_shards:
            self.compact()

    def compact(self) -> None:
        """Merge every shard into one (new shard written before the old ones are removed)."""
        shards = self._shards()
        keys: list[str] = []
        parts: list[np.ndarray] = []
        seen: set[str] = set()
        for shard in shards:
            read = self._read_shard(shard)
            if read is None:
                continue
            skeys, svecs = read
            keep = [j for j, k in enumerate(skeys.tolist()) if k not in seen]
            seen.update(skeys.tolist())
            keys.extend(skeys[keep].tolist())
            parts.append(np.asarray(svecs[keep], dtype=np.float32))
        if len(parts) < 2 or len({p.shape[1] for p in parts}) != 1:
            return
        self._write_shard(keys, np.concatenate(parts))
        for shard in shards:  # keys first: a reader never sees keys without their vectors
            for suffix in (".keys.npy", ".vectors.npy"):
                with contextlib.suppress(FileNotFoundError):
                    (self.folder / f"{shard}{suffix}").unlink()

    def __len__(self) -> int:
        n = 0
        for shard in self._shards():
            read = self._read_shard(shard)
            n += 0 if read is None else len(read[0])
        return n
