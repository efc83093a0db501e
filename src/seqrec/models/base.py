"""What every model is: history in, one query vector out; items in, one table out.

``score(history) = query(history) @ item_table().T (+ bias)``. Evaluation, recommendation, the
HTTP service and the ANN index all use these two pieces, so they agree by construction.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from seqrec.chunked_softmax import full_softmax_ce
from seqrec.config import FusionConfig
from seqrec.losses import LossFn, real_positions, seen_logits, target_seen
from seqrec.nn import Dropout

if TYPE_CHECKING:
    from seqrec.data.split import Split


@dataclass
class ModelConfig:
    """Fields shared by every model config."""

    max_len: int = 50
    """Only the last ``max_len`` items of a history are read."""
    fusion: FusionConfig = field(default_factory=FusionConfig)
    """How items become vectors: ids only (default), content only, or fused (``[model.fusion]``)."""
    repeat_bias: bool = False
    """Learn one score added to every item the user has already had (training: the full softmax
    over every item; ranking: whenever seen items are not masked). Where people never repeat
    (films rated once) it learns a large negative value and unmasked rankings stop offering what
    was already had; where they do (repeat purchases) it learns how much. Causal models only."""


class SequenceModel(nn.Module):
    """Base of every model. ``seq`` tensors are ``[B, L]`` left-padded item indices (0 = padding)."""

    name: ClassVar[str]
    config_class: ClassVar[type[ModelConfig]] = ModelConfig
    trainable: ClassVar[bool] = True
    """False for count-based models, which are fitted by :meth:`fit_counts` instead of gradients."""

    def __init__(self, config: ModelConfig, n_items: int, content: Any = None) -> None:
        super().__init__()
        self.config = config
        self.n_items = n_items
        self.content = content
        """:class:`~seqrec.content.features.ItemFeatures` (or their schema) for content-aware item
        encoders; ``None`` for ids only."""
        repeat = getattr(config, "repeat_bias", False)
        if repeat and not self.trainable:
            raise ValueError(f"model.repeat_bias is learned by gradient training; {self.name} "
                             "is fitted by counting")
        self.repeat_logit = nn.Parameter(torch.zeros(())) if repeat else None
        """The learned score of items already had (:attr:`ModelConfig.repeat_bias`), else ``None``."""

    def seen_bias(self) -> float | None:
        """What ranking adds to the score of each item in the history when it does not mask them:
        the learned repeat score, or ``None`` (no model of repeats: seen items score as any)."""
        return None if self.repeat_logit is None else float(self.repeat_logit.detach())

    def item_encoder(self, dim: int, init_std: float | None = None) -> nn.Module:
        """The model's :class:`~seqrec.content.fusion.ItemEncoder`: ``[...] -> [..., dim]`` item
        vectors and ``table()`` for scoring, from ids, content or both (``config.fusion``).
        ``init_std``: the model's own id-embedding initialisation, unless the config sets one."""
        from seqrec.content.fusion import ItemEncoder

        fusion = self.config.fusion
        if fusion.init_std is None and init_std is not None:
            fusion = dataclasses.replace(fusion, init_std=init_std)
        return ItemEncoder(self.n_items, dim, fusion, self.content)

    @property
    def max_len(self) -> int:
        return self.config.max_len

    uses_time: ClassVar[bool] = False
    """True for models that read event timestamps (``times [B, L]``, seconds) when the data has them."""

    def query(self, seq: Tensor, times: Tensor | None = None) -> Tensor:
        """``[B, L] -> [B, D]``: the representation that is scored against every item."""
        raise NotImplementedError

    def item_table(self) -> tuple[Tensor, Tensor | None]:
        """``W [N+1, D]`` and optional bias ``b [N+1]``; row 0 (padding) is never recommended."""
        raise NotImplementedError

    def ranking_table(self) -> tuple[Tensor, Tensor | None]:
        """What ranking scores against: :meth:`item_table` with the calibrated corrections of
        items that had no training events (:mod:`seqrec.train.calibrate`): rows given by
        :meth:`set_cold_rows` (the nearest trained items' rows), then the offset of
        :meth:`set_cold_offset` (also on any row past the trained catalog: items added later).
        Training uses :meth:`item_table` alone; evaluation, recommendation and serving use this."""
        W, b = self.item_table()
        index: Tensor | None = getattr(self, "cold_index", None)
        if index is not None and len(index):
            index = index.to(W.device)
            W = W.index_copy(0, index, self.cold_rows.to(W.device, W.dtype))
            if b is not None:
                b = b.index_copy(0, index, self.cold_bias.to(b.device, b.dtype))
        mask: Tensor | None = getattr(self, "cold_mask", None)
        if mask is None:
            return W, b
        rows = W.shape[0]
        offset = torch.zeros(rows, dtype=W.dtype, device=W.device)  # [N+1]
        m = mask[:rows].to(W.device)
        offset[: len(m)] = torch.where(m, self.cold_offset.to(W.dtype), 0.0)
        offset[len(m):] = self.cold_offset.to(W.dtype)  # rows past the trained catalog: new items
        offset[0] = 0.0
        return W, offset if b is None else b + offset

    def set_cold_offset(self, cold: Tensor, offset: float) -> None:
        """Add ``offset`` to the ranking score of the items where ``cold [N+1]`` (bool) holds:
        saved with the weights (buffers ``cold_mask``, ``cold_offset``)."""
        self.register_buffer("cold_mask", cold.detach().to(torch.bool).cpu().clone())
        self.register_buffer("cold_offset", torch.tensor(float(offset)))

    def set_cold_rows(self, index: Tensor, rows: Tensor, bias: Tensor | None = None) -> None:
        """Rank items ``index [M]`` with ``rows [M, D]`` (and ``bias [M]``, for tables with a bias)
        in place of their :meth:`item_table` rows: saved with the weights (buffers
        ``cold_index``, ``cold_rows``, ``cold_bias``). An empty ``index`` removes them."""
        if len(index) != len(rows) or (bias is not None and len(bias) != len(index)):
            raise ValueError(f"{len(index)} indices for {len(rows)} rows")
        self.register_buffer("cold_index", index.detach().to(torch.long).cpu().clone())
        self.register_buffer("cold_rows", rows.detach().float().cpu().clone())
        self.register_buffer("cold_bias", (torch.zeros(len(index)) if bias is None
                                           else bias.detach().float().cpu().clone()))

    def scores(self, seq: Tensor, times: Tensor | None = None) -> Tensor:
        """``[B, N+1]`` scores of every item, padding column set to -inf (for small catalogs/tests)."""
        W, b = self.ranking_table()
        s = self.query(seq, times) @ W.T  # [B, N+1]
        if b is not None:
            s = s + b
        s[:, 0] = float("-inf")
        return s

    def encode(self, seq: Tensor, times: Tensor | None = None) -> Tensor:
        """``[B, L] -> [B, L, D]`` states at every position (sequence models)."""
        raise NotImplementedError

    uses_labels: ClassVar[bool] = False
    """True for models trained on a per-event label (binary tasks): ``loss(..., labels=)``."""

    skips_padding: ClassVar[bool] = False
    """True when ``encode`` computes nothing at padding positions (packed RNNs): FLOPs are then
    counted over real items only, not over the padded batch."""

    def loss(self, inputs: Tensor, targets: Tensor, loss_fn: LossFn = full_softmax_ce,
             times: Tensor | None = None, labels: Tensor | None = None) -> Tensor:
        """Next-item loss at every real position (``targets > 0``)."""
        states = self.encode(inputs, times)  # [B, L, D]
        h, t = real_positions(states, targets)  # [P, D], [P]
        W, b = self.item_table()
        repeat = getattr(loss_fn, "uses_repeat", False)
        if repeat != (self.repeat_logit is not None):
            raise ValueError("model.repeat_bias and the loss disagree: build the loss with "
                             "make_loss(..., repeat_bias=True) exactly when the model has one")
        if repeat:
            return loss_fn(h, W, b, t, seen=seen_logits(states, inputs, targets, W, b),
                           target_seen=target_seen(inputs, targets), repeat=self.repeat_logit)
        if getattr(loss_fn, "masks_history", False):
            return loss_fn(h, W, b, t, seen=seen_logits(states, inputs, targets, W, b))
        return loss_fn(h, W, b, t)

    def fit_counts(self, split: Split) -> None:
        """Count-based fitting on the training ranges (only for ``trainable = False``)."""
        raise NotImplementedError

    def extra_state(self) -> dict[str, Any]:
        """JSON-able state beyond the tensors, saved in the artifact (rarely needed)."""
        return {}


def cosine_query(h: Tensor, temperature: float | None) -> Tensor:
    """Scoring by cosine similarity over a temperature (``temperature`` set): the query's unit
    vector divided by it; with :func:`cosine_table` a score is ``cos(h, w) / temperature``.
    ``None``: ``h`` unchanged (plain dot product)."""
    return h if temperature is None else F.normalize(h, dim=-1) / temperature


def cosine_table(W: Tensor, temperature: float | None) -> Tensor:
    """The item table's side of :func:`cosine_query`: unit rows when ``temperature`` is set."""
    return W if temperature is None else F.normalize(W, dim=-1)


def cosine_init_std(temperature: float | None) -> float | None:
    """The id rows' initial std for cosine scoring (``temperature`` set): 0.02, as the published
    HSTU runs use, unless ``[model.fusion] init_std`` says otherwise; ``None``: the default.

    Only a row's direction is scored, and Adam moves a row by about ``lr`` per step whatever its
    length, so a row turns by about ``lr / |w|`` radians a step: rows of the default std
    ``d**-0.5`` (length 1) turn 7x slower at d 64 than rows of std 0.02 (length 0.16). Measured on
    ML-1M (2-block HSTU, temperature 0.05, lr 1e-3, batch 128): validation NDCG@10 0.018 / 0.022 /
    0.026 after epochs 1-3 with the default, 0.033 / 0.078 / 0.111 with 0.02."""
    return None if temperature is None else 0.02


def left_to_right(seq: Tensor) -> tuple[Tensor, Tensor]:
    """Index map turning a left-padded batch into a right-padded one, and the lengths.

    ``x_right = x.gather(1, idx)`` for ``[B, L]``; for ``[B, L, D]`` expand ``idx`` first.
    """
    B, L = seq.shape
    lengths = (seq > 0).sum(1)  # [B]
    cols = torch.arange(L, device=seq.device)
    idx = (cols[None, :] + (L - lengths)[:, None]) % L  # [B, L]
    return idx, lengths


def right_to_left(lengths: Tensor, L: int) -> Tensor:
    """Index map back from right-padded to left-padded (inverse of :func:`left_to_right`)."""
    cols = torch.arange(L, device=lengths.device)
    return (cols[None, :] - (L - lengths)[:, None]) % L  # [B, L]


def gather_time(x: Tensor, idx: Tensor) -> Tensor:
    """``x [B, L, D]`` reordered along time by ``idx [B, L]``."""
    return x.gather(1, idx[:, :, None].expand(-1, -1, x.shape[-1]))
