"""BERT4Rec (Sun et al., 2019): a bidirectional transformer trained to fill in masked items.

Training masks a random share of the items of each window (at least one per row) with a
``[MASK]`` token and predicts them from both sides; at inference a ``[MASK]`` is appended after the
history and its state is scored against every item. Positions count from the end, as in SASRec.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from seqrec.chunked_softmax import full_softmax_ce
from seqrec.losses import LossFn
from seqrec.models.base import Dropout, ModelConfig, SequenceModel
from seqrec.models.sasrec import Block, SASRecConfig, positions_from_end, run_blocks
from seqrec.nn import Linear


MASK = -1
"""The ``[MASK]`` token in an input sequence (real items are >= 1, padding 0)."""


@dataclass
class BERT4RecConfig(ModelConfig):
    max_len: int = 50
    """Window length including the appended ``[MASK]`` (the history read is ``max_len - 1``)."""
    d_model: int = 64
    """Embedding and hidden size."""
    n_blocks: int = 2
    """Transformer blocks."""
    n_heads: int = 2
    """Attention heads (must divide ``d_model``)."""
    d_ff: int = 256
    """Feed-forward inner size."""
    dropout: float = 0.2
    """Dropout on embeddings, attention weights and residual branches."""
    mask_prob: float = 0.2
    """Share of a training window's items replaced by ``[MASK]`` (at least one per window)."""


class BERT4Rec(SequenceModel):
    name = "bert4rec"
    config_class = BERT4RecConfig

    def __init__(self, config: BERT4RecConfig, n_items: int, content=None) -> None:
        super().__init__(config, n_items, content)
        if config.max_len < 2:
            raise ValueError("BERT4Rec needs max_len >= 2 (history plus the [MASK])")
        if config.repeat_bias:
            raise ValueError("model.repeat_bias is for causal models: BERT4Rec reads items on both "
                             "sides of a masked position, so what it 'has already had' is not the past")
        d = config.d_model
        self.items = self.item_encoder(d)
        self.mask_emb = nn.Parameter(torch.randn(d) * d**-0.5)  # the [MASK] token's vector
        self.pos_emb = nn.Embedding(config.max_len, d)
        self.drop = Dropout(config.dropout)
        block_cfg = SASRecConfig(max_len=config.max_len, d_model=d, n_heads=config.n_heads,
                                 d_ff=config.d_ff, dropout=config.dropout)
        self.blocks = nn.ModuleList(Block(block_cfg) for _ in range(config.n_blocks))
        self.ln_f = nn.LayerNorm(d)
        self.head = nn.Sequential(Linear(d, d), nn.GELU(), nn.LayerNorm(d))
        self.out_bias = nn.Parameter(torch.zeros(n_items + 1))
        nn.init.normal_(self.pos_emb.weight, std=d**-0.5)

    def encode(self, seq: Tensor, times: Tensor | None = None, *, last: bool = False) -> Tensor:
        """``seq [B, L]``: item indices, 0 padding, ``MASK`` (-1) for the positions to predict.
        ``[B, L, D]``, or only the last position's state ``[B, 1, D]`` with ``last``."""
        B, L = seq.shape
        real = seq != 0  # [B, L]
        is_mask = (seq == MASK)[:, :, None]  # [B, L, 1]
        e = torch.where(is_mask, self.mask_emb, self.items(seq.clamp(min=0)))  # [B, L, D]
        pos = positions_from_end(L, self.max_len, seq.device)  # [L]
        x = e * self.config.d_model**0.5 + self.pos_emb(pos)  # [B, L, D]
        x = self.drop(x) * real[:, :, None]
        eye = torch.eye(L, dtype=torch.bool, device=seq.device)
        allowed = (real[:, None, :] | eye)[:, None]  # [B, 1, L, L]: every real item, both sides
        return self.ln_f(run_blocks(self.blocks, x, allowed, last=last))

    def query(self, seq: Tensor, times: Tensor | None = None) -> Tensor:
        mask_col = torch.full((seq.shape[0], 1), MASK, dtype=seq.dtype, device=seq.device)
        x = torch.cat([seq, mask_col], 1)[:, -self.max_len :]  # [B, <= max_len]
        return self.head(self.encode(x, last=True)[:, -1])  # [B, D]

    def attention_flops(self, width: int) -> float:
        """Per token, forward + backward: scores and weighted sum, 2 x 2 x width x d, per block."""
        return 12.0 * width * self.config.d_model * self.config.n_blocks

    def item_table(self) -> tuple[Tensor, Tensor | None]:
        W = self.items.table()  # [N+1 (+ cold items), D]
        return W, F.pad(self.out_bias, (0, W.shape[0] - self.out_bias.shape[0]))  # cold: no bias

    def loss(self, inputs: Tensor, targets: Tensor, loss_fn: LossFn = full_softmax_ce,
             times: Tensor | None = None, labels: Tensor | None = None) -> Tensor:
        if getattr(loss_fn, "masks_history", False):
            raise ValueError("train.mask_history is for causal models: BERT4Rec reads items on "
                             "both sides of a masked position, so its 'history' is not the past")
        # the whole window: inputs plus the last target (targets are inputs shifted by one)
        w = torch.cat([inputs, targets[:, -1:]], 1)[:, -self.max_len :]  # [B, L]
        real = w > 0
        masked = (torch.rand(w.shape, device=w.device) < self.config.mask_prob) & real
        # every window predicts at least its last item, the case inference asks for
        none = ~masked.any(1)
        masked[none, -1] = True
        x = w.masked_fill(masked, MASK)
        h = self.head(self.encode(x)[masked])  # [P, D]
        W, b = self.item_table()
        return loss_fn(h, W, b, w[masked])
