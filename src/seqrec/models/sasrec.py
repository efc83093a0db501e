"""SASRec (Kang and McAuley, 2018): causal self-attention over the history; the state at each
position is scored against the item embedding table.

Positions are counted from the end of the history (the latest item is position 0), which is what
the original's fixed-length left padding amounts to, and makes scores independent of the padding
width. Attention never reads padding keys.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from seqrec.models.base import Dropout, ModelConfig, SequenceModel


@dataclass
class SASRecConfig(ModelConfig):
    max_len: int = 50
    """Only the last ``max_len`` items are read (the number of learned positions)."""
    d_model: int = 64
    """Embedding and hidden size."""
    n_blocks: int = 2
    """Transformer blocks."""
    n_heads: int = 1
    """Attention heads (must divide ``d_model``)."""
    d_ff: int = 256
    """Feed-forward inner size."""
    dropout: float = 0.5
    """Dropout on embeddings, attention weights, and each residual branch."""


class Block(nn.Module):
    """Pre-norm transformer block: x + Attn(LN(x)), then x + FFN(LN(x))."""

    def __init__(self, cfg: SASRecConfig) -> None:
        super().__init__()
        self.n_heads = cfg.n_heads
        self.dropout = cfg.dropout
        self.ln1 = nn.LayerNorm(cfg.d_model)
        self.qkv = nn.Linear(cfg.d_model, 3 * cfg.d_model)
        self.proj = nn.Linear(cfg.d_model, cfg.d_model)
        self.ln2 = nn.LayerNorm(cfg.d_model)
        self.ff = nn.Sequential(
            nn.Linear(cfg.d_model, cfg.d_ff), nn.GELU(), Dropout(cfg.dropout),
            nn.Linear(cfg.d_ff, cfg.d_model),
        )
        self.drop = Dropout(cfg.dropout)

    def forward(self, x: Tensor, allowed: Tensor) -> Tensor:
        B, L, D = x.shape
        q, k, v = self.qkv(self.ln1(x)).split(D, dim=-1)  # 3 x [B, L, D]
        q, k, v = (t.view(B, L, self.n_heads, D // self.n_heads).transpose(1, 2) for t in (q, k, v))
        a = F.scaled_dot_product_attention(  # [B, H, L, D/H]
            q, k, v, attn_mask=allowed, dropout_p=self.dropout if self.training else 0.0
        )
        x = x + self.drop(self.proj(a.transpose(1, 2).reshape(B, L, D)))
        return x + self.drop(self.ff(self.ln2(x)))


class SASRec(SequenceModel):
    name = "sasrec"
    config_class = SASRecConfig

    def __init__(self, config: SASRecConfig, n_items: int) -> None:
        super().__init__(config, n_items)
        if config.d_model % config.n_heads:
            raise ValueError(f"d_model={config.d_model} is not divisible by n_heads={config.n_heads}")
        self.item_emb = nn.Embedding(n_items + 1, config.d_model, padding_idx=0)
        self.pos_emb = nn.Embedding(config.max_len, config.d_model)
        self.drop = Dropout(config.dropout)
        self.blocks = nn.ModuleList(Block(config) for _ in range(config.n_blocks))
        self.ln_f = nn.LayerNorm(config.d_model)
        nn.init.normal_(self.item_emb.weight, std=config.d_model**-0.5)
        nn.init.normal_(self.pos_emb.weight, std=config.d_model**-0.5)
        with torch.no_grad():
            self.item_emb.weight[0].zero_()

    def encode(self, seq: Tensor) -> Tensor:
        B, L = seq.shape
        real = seq > 0  # [B, L]
        pos = torch.arange(L - 1, -1, -1, device=seq.device).clamp(max=self.max_len - 1)  # [L]
        x = self.item_emb(seq) * self.config.d_model**0.5 + self.pos_emb(pos)  # [B, L, D]
        x = self.drop(x) * real[:, :, None]
        causal = torch.ones(L, L, dtype=torch.bool, device=seq.device).tril()  # [L, L]
        eye = torch.eye(L, dtype=torch.bool, device=seq.device)
        allowed = ((causal & real[:, None, :]) | eye)[:, None]  # [B, 1, L, L]
        for block in self.blocks:
            x = block(x, allowed)
        return self.ln_f(x)  # [B, L, D]

    def query(self, seq: Tensor) -> Tensor:
        return self.encode(seq)[:, -1]  # [B, D]

    def item_table(self) -> tuple[Tensor, Tensor | None]:
        return self.item_emb.weight, None  # [N+1, D]
