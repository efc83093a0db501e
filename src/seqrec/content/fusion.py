"""The item encoder: item index -> vector, from an id embedding, from content, or from both.

Every model can use one :class:`ItemEncoder` for both ends: ``forward(idx)`` embeds the items of a
history (``[B, L] -> [B, L, D]``) and ``table()`` gives the output table ``[N+1, D]`` scored
against the query. Row 0 (padding) is always the zero vector.

Content input ``x`` of an item (only the blocks its :class:`~seqrec.content.features.ItemFeatures`
has, concatenated in this order)::

    x = [ LN(x_text), text_missing,            # d_t + 1   (LN: layer norm without parameters;
          LN(x_vec),  vectors_missing,         # d_v + 1    a zero row stays zero)
          mean_k E_f[a_fk]  for each field f,  # attr_dim each: mean of the embeddings of the
                                               #   item's values (padding ignored; learned)
          numeric, numeric_missing ]           # 2F

followed by dropout (``FusionConfig.dropout``, training only). With ``e`` the id embedding and
``c = W2 GELU(W1 x + b1) + b2`` (the content tower, ``hidden`` units):

=============  =============================================  ===================================
mode           item vector ``h``                              items without an id embedding
=============  =============================================  ===================================
``id``         ``e`` (a plain embedding table)                not possible (no content)
``content``    ``c`` (no id embeddings at all)                same formula: content only
``sigmoid``    ``σ(W [e; x] + b)``: the original design's     ``e = 0``
               ``σ(W[x_text, x_image, x_attr] + b)`` with
               the id embedding as one more input block
``gated``      ``g ⊙ e + (1 - g) ⊙ c``, ``g = σ(W_g [e; c] + b_g)``  ``e = 0``: ``(1 - g) ⊙ c``
``sum``        ``e + c``                                      ``e = 0``: ``c``
=============  =============================================  ===================================

"Items without an id embedding" are rows beyond the ``n_items`` the encoder was built for: after
:meth:`ItemEncoder.set_features` with a larger catalog (cold items). In ``content`` mode they are
scored exactly like trained items; in fused modes their id part is zero, which is what the model
sees in training for a fraction ``id_dropout`` of item occurrences (set it > 0 to prepare a fused
model for cold items).

The content blocks are buffers (saved in ``state_dict``; a loaded state may have a different number
of rows than the encoder was built with: the buffers take its size). The attribute embeddings,
tower, gate and id table are parameters.
"""

from __future__ import annotations

import logging
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from seqrec.content.features import ContentSchema, ItemFeatures
from seqrec.errors import ConfigError
from seqrec.config import FUSION_MODES, FusionConfig
from seqrec.nn import Dropout

logger = logging.getLogger(__name__)

_DENSE = ("text", "vectors")
_TABLE_CHUNK = 65536


def _schema_of(content: ItemFeatures | ContentSchema | None) -> ContentSchema | None:
    if content is None or isinstance(content, ContentSchema):
        return content
    return content.schema()


def _buffers_of(features: ItemFeatures) -> dict[str, Tensor]:
    """Buffer name -> tensor for every block of ``features`` (categorical fields as ``cat_<j>``)."""
    out: dict[str, Tensor] = {}
    for name in ("text", "text_missing", "vectors", "vectors_missing", "numeric",
                 "numeric_missing"):
        arr = getattr(features, name)
        if arr is not None:
            out[name] = torch.as_tensor(arr, dtype=torch.float32)
    for j, (fname, _, _) in enumerate(features.schema().categorical):
        out[f"cat_{j}"] = torch.as_tensor(features.categorical[fname], dtype=torch.int64)
    return out


def _empty_buffers(schema: ContentSchema) -> dict[str, Tensor]:
    """One all-padding row of each block: placeholders until ``load_state_dict`` fills them."""
    out: dict[str, Tensor] = {}
    for name, d in (("text", schema.text_dim), ("vectors", schema.vectors_dim)):
        if d is not None:
            out[name] = torch.zeros(1, d)
            out[f"{name}_missing"] = torch.zeros(1)
    if schema.numeric:
        out["numeric"] = torch.zeros(1, len(schema.numeric))
        out["numeric_missing"] = torch.zeros(1, len(schema.numeric))
    for j, (_, _, width) in enumerate(schema.categorical):
        out[f"cat_{j}"] = torch.zeros(1, width, dtype=torch.int64)
    return out


class ItemEncoder(nn.Module):
    """Item indices -> vectors ``[..., D]`` (see the module docstring for the modes).

    Args:
        n_items: items with an id embedding (the training vocabulary; indices 1..n_items).
        dim: output size D (the model's hidden size).
        config: a :class:`FusionConfig` (default: mode 'id').
        content: the item features (needed for every mode but 'id'), or only their
            :class:`ContentSchema` when the buffers will come from ``load_state_dict``.
    """

    def __init__(
        self,
        n_items: int,
        dim: int,
        config: FusionConfig | None = None,
        content: ItemFeatures | ContentSchema | None = None,
    ) -> None:
        super().__init__()
        self.config = config = config or FusionConfig()
        self.n_items = n_items
        self.dim = dim
        self.mode = config.mode
        self.uses_id = config.mode != "content"
        self.uses_content = config.mode != "id"
        if self.uses_id:
            self.id_emb = nn.Embedding(n_items + 1, dim, padding_idx=0)
            nn.init.normal_(self.id_emb.weight, std=config.init_std or dim**-0.5)
            with torch.no_grad():
                self.id_emb.weight[0].zero_()
        self.schema = _schema_of(content) if self.uses_content else None
        if not self.uses_content:
            return
        if self.schema is None or self.schema.empty:
            raise ConfigError(f"fusion mode {config.mode!r} needs item content (text, attributes or "
                              "vectors); mode 'id' needs none")
        if isinstance(content, ItemFeatures):
            if content.n_items < n_items:
                raise ConfigError(f"the item features cover {content.n_items} items, fewer than "
                                  f"the {n_items} of the model")
            buffers = _buffers_of(content)
        else:
            buffers = _empty_buffers(self.schema)
        self._buffer_names = tuple(buffers)
        for name, t in buffers.items():
            self.register_buffer(name, t)
        self.attr_emb = nn.ModuleList(
            nn.Embedding(num, config.attr_dim, padding_idx=0) for _, num, _ in self.schema.categorical
        )
        self.in_dim = self._input_dim()
        self.drop = Dropout(config.dropout)
        if config.mode == "sigmoid":
            self.fuse = nn.Linear(dim + self.in_dim, dim)
        else:
            self.tower = nn.Sequential(nn.Linear(self.in_dim, config.hidden), nn.GELU(),
                                       nn.Linear(config.hidden, dim))
        if config.mode == "gated":
            self.gate = nn.Linear(2 * dim, dim)

    # ------------------------------------------------------------------ sizes

    def _input_dim(self) -> int:
        s = self.schema
        assert s is not None
        return ((s.text_dim + 1 if s.text_dim is not None else 0)
                + (s.vectors_dim + 1 if s.vectors_dim is not None else 0)
                + len(s.categorical) * self.config.attr_dim + 2 * len(s.numeric))

    @property
    def n_rows(self) -> int:
        """Rows of :meth:`table`: 1 + the items covered (content rows, or id rows in mode 'id')."""
        if self.uses_content:
            return int(getattr(self, self._buffer_names[0]).shape[0])
        return self.n_items + 1

    # ------------------------------------------------------------------ content

    def set_features(self, features: ItemFeatures) -> None:
        """Swap the content buffers for ``features`` (e.g. a larger catalog: extended features).

        The schema (dimensions, attribute fields and vocabulary sizes) must be the one the encoder
        was built with; the number of items may differ. Rows beyond ``n_items`` have no id
        embedding (see the module docstring)."""
        if not self.uses_content:
            raise ConfigError("fusion mode 'id' has no content to swap")
        if features.n_items < self.n_items:
            raise ConfigError(f"the item features cover {features.n_items} items, fewer than "
                              f"the {self.n_items} of the model")
        schema = features.schema()
        if schema != self.schema:
            raise ConfigError(f"item features do not match the encoder: built for {self.schema}, "
                              f"got {schema}")
        device = next(self.parameters()).device
        for name, t in _buffers_of(features).items():
            setattr(self, name, t.to(device))

    def _load_from_state_dict(self, state_dict: dict[str, Any], prefix: str, *args: Any,
                              **kwargs: Any) -> None:
        # content buffers take the row count of the loaded state (a catalog of another size)
        for name in getattr(self, "_buffer_names", ()):
            incoming = state_dict.get(prefix + name)
            current = getattr(self, name)
            if isinstance(incoming, Tensor) and incoming.shape[1:] == current.shape[1:] \
                    and incoming.shape[0] != current.shape[0]:
                setattr(self, name, current.new_empty((incoming.shape[0], *current.shape[1:])))
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def gather(self, idx: Tensor) -> dict[str, Tensor]:
        """The content blocks of items ``idx [...]``: name -> ``[..., *block]``."""
        return {name: getattr(self, name)[idx] for name in self._buffer_names}

    def content_input(self, blocks: dict[str, Tensor]) -> Tensor:
        """``x [..., C]`` from content blocks (see the module docstring); blocks absent from
        ``blocks`` count as missing (e.g. a text query has only ``text``)."""
        s = self.schema
        assert s is not None
        if not blocks:
            raise ValueError("content_input needs at least one block")
        name, ref = next(iter(blocks.items()))
        lead = ref.shape if name in ("text_missing", "vectors_missing") else ref.shape[:-1]
        dev = ref.device
        parts: list[Tensor] = []
        for name, d in (("text", s.text_dim), ("vectors", s.vectors_dim)):
            if d is None:
                continue
            v = blocks.get(name)
            if v is None:
                parts += [torch.zeros(*lead, d, device=dev), torch.ones(*lead, 1, device=dev)]
                continue
            miss = blocks.get(f"{name}_missing")
            if miss is None:
                miss = (v.abs().sum(-1) == 0).float()  # [...]
            parts += [F.layer_norm(v, (d,)), miss.unsqueeze(-1)]  # [..., d], [..., 1]
        for j, emb in enumerate(self.attr_emb):
            ids = blocks.get(f"cat_{j}")
            if ids is None:
                parts.append(torch.zeros(*lead, self.config.attr_dim, device=dev))
                continue
            e = emb(ids)  # [..., K, E]
            real = (ids > 0).unsqueeze(-1).to(e.dtype)  # [..., K, 1]
            parts.append((e * real).sum(-2) / real.sum(-2).clamp(min=1.0))  # [..., E]
        if s.numeric:
            num = blocks.get("numeric")
            if num is None:
                parts += [torch.zeros(*lead, len(s.numeric), device=dev),
                          torch.ones(*lead, len(s.numeric), device=dev)]
            else:
                parts += [num, blocks["numeric_missing"]]  # [..., F] each
        return self.drop(torch.cat(parts, dim=-1))  # [..., C]

    # ------------------------------------------------------------------ fusion

    def _id_part(self, idx: Tensor) -> Tensor:
        """Id embeddings ``[..., D]``; zero for items beyond ``n_items`` and, while training, for a
        fraction ``id_dropout`` of occurrences."""
        known = (idx <= self.n_items) & (idx >= 0)  # [...]
        e = self.id_emb(torch.where(known, idx, torch.zeros_like(idx)))  # [..., D]
        if self.training and self.config.id_dropout > 0:
            known = known & (torch.rand(idx.shape, device=idx.device) >= self.config.id_dropout)
        return e * known.unsqueeze(-1).to(e.dtype)

    @torch.no_grad()
    def forget_ids(self, items: Tensor | Any) -> None:
        """Fused modes: zero the id embeddings of ``items``, so they are encoded as items without
        one (content only, as the id dropout trains for). The cold-item protocol calls it: a
        held-out item must not carry a random, never-trained id vector into its fused one."""
        if self.uses_id and self.uses_content:
            idx = torch.as_tensor(items, dtype=torch.long, device=self.id_emb.weight.device)
            self.id_emb.weight[idx[(idx > 0) & (idx <= self.n_items)]] = 0.0

    def _fuse(self, e: Tensor | None, x: Tensor) -> Tensor:
        """Item vectors from the id part ``e [..., D]`` (None: zero) and content input ``x``."""
        if self.mode == "content":
            return self.tower(x)  # [..., D]
        if e is None:
            e = x.new_zeros(*x.shape[:-1], self.dim)
        if self.mode == "sigmoid":
            return torch.sigmoid(self.fuse(torch.cat([e, x], dim=-1)))  # [..., D]
        c = self.tower(x)  # [..., D]
        if self.mode == "sum":
            return e + c
        g = torch.sigmoid(self.gate(torch.cat([e, c], dim=-1)))  # [..., D]
        return g * e + (1.0 - g) * c

    def forward(self, idx: Tensor) -> Tensor:
        """``idx [...]`` (int64 item indices, 0 = padding) -> ``[..., D]``; padding rows are zero."""
        if not self.uses_content:
            return self.id_emb(idx)  # [..., D]; row 0 is zero (padding_idx)
        x = self.content_input(self.gather(idx))  # [..., C]
        e = self._id_part(idx) if self.uses_id else None
        return self._fuse(e, x) * (idx != 0).unsqueeze(-1).to(x.dtype)  # [..., D]

    def table(self) -> Tensor:
        """All items' vectors ``[n_rows, D]`` (row 0 zero): the output table to score against.

        Equal to ``forward(torch.arange(n_rows))`` (in eval mode; while training, dropout draws
        differ). In a training step, call it once and index it (``table()[seq]``) for the inputs."""
        if not self.uses_content:
            return self.id_emb.weight  # [N+1, D]
        dev = next(self.parameters()).device
        n = self.n_rows
        parts = [self(torch.arange(s, min(s + _TABLE_CHUNK, n), device=dev))
                 for s in range(0, n, _TABLE_CHUNK)]
        return parts[0] if len(parts) == 1 else torch.cat(parts)  # [N+1, D]

    def encode_content(self, blocks: dict[str, Tensor]) -> Tensor:
        """Vectors ``[..., D]`` of items given only by content (no id): e.g. a text query
        ``{"text": q [B, d_t]}``, or new items' blocks. Same as a row beyond ``n_items``."""
        if not self.uses_content:
            raise ConfigError("fusion mode 'id' cannot embed content")
        return self._fuse(None, self.content_input(blocks))

    def extra_repr(self) -> str:
        return (f"mode={self.mode}, n_items={self.n_items}, dim={self.dim}, "
                f"rows={self.n_rows if self.uses_content else self.n_items + 1}")
