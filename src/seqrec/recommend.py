"""The one history -> top-k API. The evaluator, the CLI and the HTTP service all end here, through
the same ranking engine (:func:`seqrec.evaluate.ranking.rank_and_topk`)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from seqrec.artifact import Artifact, load_artifact
from seqrec.errors import SeqrecError
from seqrec.evaluate.ranking import history_batch, rank_and_topk, transposed


@dataclass
class Recommendation:
    items: list[Any]
    """External item ids, best first."""
    scores: list[float]
    titles: list[str | None]
    unknown: list[Any] = field(default_factory=list)
    """History ids the model does not know (reported, never silently dropped)."""

    def to_dict(self, user_id: Any = None) -> dict[str, Any]:
        out: dict[str, Any] = {} if user_id is None else {"user_id": user_id}
        out.update(items=self.items, scores=self.scores, titles=self.titles)
        if self.unknown:
            out["unknown_items"] = self.unknown
        return out


class Recommender:
    """Top-k recommendations from a trained artifact, for any history of external item ids."""

    def __init__(self, artifact: Artifact, device: str | torch.device = "cpu") -> None:
        self.artifact = artifact
        self.device = torch.device(device)
        self.model = artifact.model.to(self.device).eval()
        self.items = artifact.items
        self.users = artifact.users
        self._titles: list[str | None] = artifact.catalog.df["title"].to_list()
        with torch.no_grad():
            W, b = self.model.ranking_table()
        self.W = W.detach()  # [N+1, D]: what every ranking of this artifact scores against
        self.b = None if b is None else b.detach()  # [N+1]
        self._WT: torch.Tensor | None = None

    @property
    def WT(self) -> torch.Tensor:
        """``W`` transposed (``[D, N+1]``), made on first use: the service ranks through its own
        index and never needs this copy."""
        if self._WT is None:
            self._WT = transposed(self.W)
        return self._WT

    @classmethod
    def load(cls, path: str | Path, device: str | torch.device = "cpu") -> Recommender:
        return cls(load_artifact(path, device), device)

    def title(self, item_idx: int) -> str | None:
        return self._titles[item_idx - 1] if 0 < item_idx <= len(self._titles) else None

    def user_history(self, user_id: Any) -> list[Any]:
        """The user's known events (oldest first) as external item ids; unknown user -> error."""
        u = self.users.index(user_id, "user") - 1
        return self.items.external(self.artifact.seqs.user_items(u))

    def recommend(self, history: Sequence[Any], k: int = 10, exclude_seen: bool = True) -> Recommendation:
        return self.recommend_many([history], k, exclude_seen)[0]

    def recommend_user(self, user_id: Any, k: int = 10, exclude_seen: bool = True) -> Recommendation:
        return self.recommend(self.user_history(user_id), k, exclude_seen)

    def search(self, text: str, k: int = 10) -> Recommendation:
        """Items whose text is closest to ``text`` (cosine in the language model's space): the
        onboarding step, before a user has any history. Needs an artifact trained with text."""
        feats = self.artifact.features
        if feats is None or feats.text is None:
            raise SeqrecError("this artifact has no item text vectors: train it with --content text "
                              "(or text+attrs) to search by text")
        if not text.strip():
            raise SeqrecError("the query text is empty")
        from seqrec.content.text import TextEncoder

        q = TextEncoder(feats.text_model["name"], progress=False).encode([text]).vectors  # [1, d]
        W = torch.from_numpy(feats.text)  # [N+1, d], L2-normalised rows (padding row zero)
        _, top_s, top_i = rank_and_topk(torch.from_numpy(q), W, None, k=k)
        keep = top_i[0] > 0
        ids = top_i[0][keep].tolist()
        return Recommendation(items=self.items.external(ids),
                              scores=[float(x) for x in top_s[0][keep]],
                              titles=[self.title(i) for i in ids])

    @torch.no_grad()
    def recommend_many(
        self,
        histories: Sequence[Sequence[Any]],
        k: int = 10,
        exclude_seen: bool = True,
        batch_size: int = 256,
    ) -> list[Recommendation]:
        """One :class:`Recommendation` per history (external ids, oldest first)."""
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        encoded = [self.items.lookup(h) for h in histories]
        out: list[Recommendation] = []
        for pos in range(0, len(encoded), batch_size):
            part = encoded[pos : pos + batch_size]
            lengths = np.array([len(idx) for idx, _ in part], dtype=np.int64)
            flat = np.concatenate([idx for idx, _ in part] + [np.zeros(0, dtype=np.int64)])
            ends = np.cumsum(lengths)
            bias = None if exclude_seen else self.model.seen_bias()  # learned repeat score
            hist, seen = history_batch(flat, ends - lengths, ends, self.model.max_len, self.device,
                                       exclude_seen or bias is not None)
            _, top_s, top_i = rank_and_topk(self.model.query(hist), self.W, self.b, seen=seen, k=k,
                                              WT=self.WT, seen_bias=bias)
            for (_, unknown), s_row, i_row in zip(part, top_s.cpu().numpy(), top_i.cpu().numpy()):
                keep = i_row > 0  # fewer than k rankable items leave empty slots
                ids = i_row[keep]
                out.append(Recommendation(
                    items=self.items.external(ids),
                    scores=[float(x) for x in s_row[keep]],
                    titles=[self.title(int(i)) for i in ids],
                    unknown=unknown,
                ))
        return out
