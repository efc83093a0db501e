"""A loaded artifact ready to serve: histories in, top-k out, through the evaluator's own path.

A history (the artifact's events of a known user, then their live events) is turned into item
indices, read by the model (:func:`history_batch` left-pads its last ``max_len`` items, as in
evaluation; recurrent models continue a cached state instead when the history fits in
``max_len``), and ranked by the index: the ranking engine itself (:func:`rank_and_topk`) for
small catalogs, a faiss ANN index for large ones. Seen items are masked as in evaluation (or,
unmasked, scored with the model's learned repeat score when it has one). For a
single request with the exact index the answer is identical to :class:`seqrec.recommend.Recommender`
(tested).
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from seqrec.errors import SeqrecError
from seqrec.evaluate.ranking import history_batch, rank_and_topk
from seqrec.index import TopKIndex, build_index
from seqrec.recommend import Recommender
from seqrec.serve.incremental import RNNStepper, StateCache

log = logging.getLogger(__name__)


class SimilarUnavailable(Exception):
    """The model has no item vectors to compare (popularity models)."""


@dataclass
class EngineOptions:
    """How an artifact is served."""

    index: str = "auto"
    """``auto`` (ANN from ``ann_threshold`` items on), ``exact`` or ``ann``."""
    ann_threshold: int = 100_000
    """Catalog size from which ``auto`` uses the ANN index."""
    nprobe: int | None = None
    """ANN lists visited per query (default: 1/16 of the lists, at least 32)."""
    index_cache: str | None = None
    """Folder where built ANN indexes are kept between starts (keyed by artifact version)."""
    incremental: bool = True
    """Continue cached recurrent states (lstm, gru4rec) instead of re-encoding."""
    cache_users: int = 20_000
    """How many users' recurrent states are cached."""
    compile: bool = False
    """Compile the model's history -> query call with ``torch.compile`` (dynamic shapes): about
    half the encoding time of small models on CPU, after a start-up compile of tens of seconds;
    needs a C++ compiler. Scores then differ from the evaluator's in the last float digits."""


@dataclass
class Query:
    """One recommendation request, ids external."""

    live_items: Sequence[Any]
    """Item ids after the artifact's history (live events, or an explicit history), oldest first."""
    k: int = 10
    exclude_seen: bool = True
    user: Any | None = None
    """A user id: their history in the artifact comes first (unless ``forgotten``)."""
    forgotten: bool = False
    cache_key: str | None = None
    """Key of the user's recurrent-state cache entry (None: no caching)."""


@dataclass
class Ranked:
    items: list[Any]
    scores: list[float]
    titles: list[str | None]
    history_length: int
    unknown: list[Any] = field(default_factory=list)


def artifact_version(path: Path) -> str:
    """Content hash of the weights and config: changes exactly when the model does."""
    h = hashlib.sha256()
    for name in ("config.json", "vocab.json", "weights.safetensors"):
        with open(path / name, "rb") as f:
            while chunk := f.read(1 << 22):
                h.update(chunk)
    return h.hexdigest()[:12]


def compiled_query(model: torch.nn.Module) -> Any:
    """``model.query`` through ``torch.compile``, compiled now for every shape class a request can
    have (batch and history of one, or more), so no request waits for a compile."""
    fn = torch.compile(model.query, dynamic=True)
    t0 = time.perf_counter()
    try:
        with torch.inference_mode():
            for B, L in ((1, 1), (1, 3), (2, 1), (3, 4)):
                fn(torch.ones(B, L, dtype=torch.long))
    except Exception as e:  # the backend's errors are long; name the usual cause first
        raise SeqrecError(f"--compile failed for the {model.name} model ({type(e).__name__}); it "
                          f"needs a working C++ compiler (g++) for PyTorch's CPU backend: "
                          f"{str(e)[:300]}") from e
    log.info("model compiled", extra={"model": model.name,
                                      "seconds": round(time.perf_counter() - t0, 1)})
    return fn


class Engine:
    """Everything one artifact needs to answer requests. ``recommend`` belongs to one inference
    thread (the state cache is not shared); ``similar`` and lookups may run anywhere."""

    def __init__(self, rec: Recommender, options: EngineOptions | None = None,
                 version: str | None = None) -> None:
        self.options = options or EngineOptions()
        self.rec = rec
        self.model = rec.model.eval()
        self.items = rec.items
        self.users = rec.users
        self.seqs = rec.artifact.seqs
        self.version = version or artifact_version(rec.artifact.path)
        self.loaded_at = time.time()
        self.W, self.b = rec.W, rec.b  # [N+1, D], [N+1]: the Recommender's ranking table
        self.index: TopKIndex = build_index(
            self.W, self.b, self.options.index, ann_threshold=self.options.ann_threshold,
            nprobe=self.options.nprobe, cache_dir=self.options.index_cache, cache_key=self.version)
        stepper = RNNStepper.for_model(self.model) if self.options.incremental else None
        self.cache = None if stepper is None else StateCache(stepper, self.model.max_len,
                                                             self.options.cache_users)
        self._unit_W: Tensor | None = None
        self.query = compiled_query(self.model) if self.options.compile else self.model.query

    @classmethod
    def load(cls, path: str | Path, options: EngineOptions | None = None) -> Engine:
        t0 = time.perf_counter()
        path = Path(path)
        rec = Recommender.load(path)  # checks the directory first: errors name what is missing
        engine = cls(rec, options, artifact_version(path))
        log.info("artifact loaded", extra={"artifact": str(path), "version": engine.version,
                                           "model": engine.model.name, "items": len(engine.items),
                                           "index": engine.index.kind,
                                           "seconds": round(time.perf_counter() - t0, 3)})
        return engine

    # -- ids -----------------------------------------------------------------------------------

    @property
    def n_items(self) -> int:
        return len(self.items)

    def title(self, item_idx: int) -> str | None:
        return self.rec.title(item_idx)

    def item_index(self, item_id: Any) -> int | None:
        return self.items.get(item_id)

    def base_history(self, user: Any) -> np.ndarray:
        """The user's events in the artifact (item indices, oldest first); empty if unknown."""
        u = self.users.get(user)
        return self.seqs.user_items(u - 1) if u is not None else np.zeros(0, dtype=np.int64)

    def history_of(self, q: Query) -> tuple[np.ndarray, list[Any]]:
        base = (self.base_history(q.user) if q.user is not None and not q.forgotten
                else np.zeros(0, dtype=np.int64))
        live, unknown = self.items.lookup(q.live_items)
        return np.concatenate([base, live]).astype(np.int64, copy=False), unknown

    # -- ranking -------------------------------------------------------------------------------

    @torch.inference_mode()
    def recommend(self, queries: Sequence[Query]) -> list[Ranked]:
        """One :class:`Ranked` per query, computed as one batch."""
        if not queries:
            return []
        hists, unknowns = zip(*(self.history_of(q) for q in queries))
        B = len(queries)
        lengths = np.array([len(h) for h in hists], dtype=np.int64)
        # a trailing 0 that no range covers: lets an all-empty batch be padded like any other
        flat = np.concatenate(list(hists) + [np.zeros(1, dtype=np.int64)])
        ends = np.cumsum(lengths)
        starts = ends - lengths
        cached = [j for j, q in enumerate(queries)
                  if self.cache is not None and q.cache_key is not None and self.cache.usable(hists[j])]
        if cached:
            assert self.cache is not None
            cq = self.cache.queries([queries[j].cache_key for j in cached],  # type: ignore[misc]
                                    [hists[j] for j in cached])
        full = [j for j in range(B) if j not in set(cached)]
        if not cached:
            hist, _ = history_batch(flat, starts, ends, self.model.max_len, "cpu", False)
            q = self.query(hist)  # [B, D]: the evaluator's and the Recommender's call
        else:
            q = torch.empty(B, self.W.shape[1], dtype=self.W.dtype)  # [B, D]
            for j, v in zip(cached, cq):
                q[j] = v
            if full:
                rows = np.array(full)
                hist, _ = history_batch(flat, starts[rows], ends[rows], self.model.max_len, "cpu",
                                        False)
                q[rows] = self.query(hist)
        k = max(q_.k for q_ in queries)
        excl = np.array([q_.exclude_seen for q_ in queries])
        bias = self.model.seen_bias()  # a learned repeat score, for rows that keep seen items
        seen = None
        if excl.any() or bias is not None:
            _, seen = history_batch(flat, starts, ends, self.model.max_len, "cpu", True)
            assert seen is not None
        if bias is None or excl.all():
            if seen is not None and not excl.all():
                seen[torch.from_numpy(~excl)] = 0  # [B, H]; rows that keep seen items
            top_s, top_i = self.index.search(q, k, seen)
        else:
            assert seen is not None
            top_s = torch.empty(B, k, dtype=self.W.dtype)
            top_i = torch.empty(B, k, dtype=torch.long)
            for rows, b_ in ((np.flatnonzero(excl), None), (np.flatnonzero(~excl), bias)):
                if len(rows):
                    r = torch.from_numpy(rows)
                    top_s[r], top_i[r] = self.index.search(q[r], k, seen[r], b_)
        out = []
        for j, query in enumerate(queries):
            s_row = top_s[j, : query.k].tolist()
            i_row = top_i[j, : query.k].tolist()
            keep = [n for n, i in enumerate(i_row) if i > 0]  # fewer rankable items than k
            ids = [i_row[n] for n in keep]
            out.append(Ranked(items=self.items.external(ids), scores=[float(s_row[n]) for n in keep],
                              titles=[self.title(i) for i in ids], history_length=int(lengths[j]),
                              unknown=list(unknowns[j])))
        return out

    @torch.inference_mode()
    def similar(self, item_idx: int, k: int) -> Ranked:
        """The ``k`` items whose vectors are closest to the item's by cosine (exact; the item
        itself left out)."""
        if self.W.shape[1] < 2:
            raise SimilarUnavailable(
                f"the {self.model.name} model has no item vectors to compare (it scores items by "
                "counts); similar items need a sequence model such as sasrec or gru4rec")
        if self._unit_W is None:
            self._unit_W = torch.nn.functional.normalize(self.W, dim=1)  # [N+1, D]
        Wn = self._unit_W
        _, s, i = rank_and_topk(Wn[item_idx][None], Wn, None,
                                seen=torch.tensor([[item_idx]]), k=k)
        assert s is not None and i is not None
        pairs = [(int(x), float(y)) for x, y in zip(i[0].tolist(), s[0].tolist()) if x > 0]
        return Ranked(items=self.items.external([p[0] for p in pairs]),
                      scores=[p[1] for p in pairs], titles=[self.title(p[0]) for p in pairs],
                      history_length=0)

    def describe(self) -> dict[str, Any]:
        return {
            "artifact": str(self.rec.artifact.path),
            "version": self.version,
            "model": self.model.name,
            "max_len": self.model.max_len,
            "items": self.n_items,
            "users": len(self.users),
            "index": self.index.describe(),
            "incremental": self.cache is not None,
            "compiled": self.options.compile,
            "loaded_at": self.loaded_at,
        }
