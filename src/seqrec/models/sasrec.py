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

from seqrec.matmul import linear
from seqrec.models.base import (
    Dropout, ModelConfig, SequenceModel, cosine_init_std, cosine_query, cosine_table,
)
from seqrec.nn import Linear, dropout_attention


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
    dropout: float = 0.3
    """Dropout on each residual branch and inside the feed-forward layer."""
    emb_dropout: float | None = None
    """Dropout on the input embeddings (``None``: same as ``dropout``)."""
    attn_dropout: float | None = None
    """Dropout on the attention weights (``None``: same as ``dropout``)."""
    ff_dropout: float | None = None
    """Dropout inside the feed-forward layer, after the activation (``None``: same as
    ``dropout``, as in the original SASRec; ``0``: the residual-branch dropout only, as RecBole)."""
    norm: str = "pre"
    """``pre`` (x + f(LN(x)), stable when deep) or ``post`` (LN(x + f(x)), the original Transformer)."""
    temperature: float | None = None
    """Score by cosine similarity divided by this temperature (``None``: plain dot product)."""
    emb_scale: bool = True
    """Multiply item embeddings by ``sqrt(d_model)`` before adding positions (as in the original
    Transformer and SASRec.pytorch); ``False`` adds them unscaled (RecBole)."""
    emb_norm: bool = False
    """Layer-normalise the summed item and position embeddings before the first block (RecBole)."""
    init_std: float | None = None
    """Draw the blocks' linear weights and the position embeddings from N(0, init_std), biases at
    zero (RecBole: 0.02); ``None``: PyTorch's linear defaults, positions at std d^-0.5. Item rows
    follow ``[model.fusion] init_std``."""


class Block(nn.Module):
    """One transformer block: causal multi-head attention, then a GELU feed-forward layer."""

    def __init__(self, cfg: SASRecConfig) -> None:
        super().__init__()
        self.n_heads = cfg.n_heads
        self.pre = cfg.norm == "pre"
        self.attn_p = cfg.dropout if cfg.attn_dropout is None else cfg.attn_dropout
        self.ln1 = nn.LayerNorm(cfg.d_model)
        self.qkv = Linear(cfg.d_model, 3 * cfg.d_model)
        self.proj = Linear(cfg.d_model, cfg.d_model)
        self.ln2 = nn.LayerNorm(cfg.d_model)
        self.ff = nn.Sequential(
            Linear(cfg.d_model, cfg.d_ff), nn.GELU(),
            Dropout(cfg.dropout if cfg.ff_dropout is None else cfg.ff_dropout),
            Linear(cfg.d_ff, cfg.d_model),
        )
        self.drop = Dropout(cfg.dropout)

    def attention(self, x: Tensor, allowed: Tensor, last: bool = False) -> Tensor:
        B, L, D = x.shape
        if last:  # one query (the last position) against every key: a third of the projection
            w, b = self.qkv.weight, self.qkv.bias
            q = linear(x[:, -1:], w[:D], b[:D])  # [B, 1, D]
            k, v = linear(x, w[D:], b[D:]).split(D, dim=-1)  # 2 x [B, L, D]
            allowed = allowed[:, :, -1:]  # [B, 1, 1, L]
        else:
            q, k, v = self.qkv(x).split(D, dim=-1)  # 3 x [B, L, D]
        Lq = q.shape[1]
        q = q.view(B, Lq, self.n_heads, D // self.n_heads).transpose(1, 2)
        k, v = (t.view(B, L, self.n_heads, D // self.n_heads).transpose(1, 2) for t in (k, v))
        if self.training and self.attn_p > 0.0 and x.device.type == "cpu":
            a = dropout_attention(q, k, v, allowed, self.attn_p)  # [B, H, Lq, D/H]
        else:  # fused kernels (CUDA's keep dropout fused)
            a = F.scaled_dot_product_attention(
                q, k, v, attn_mask=allowed, dropout_p=self.attn_p if self.training else 0.0)
        return self.proj(a.transpose(1, 2).reshape(B, Lq, D))  # [B, Lq, D]

    def forward(self, x: Tensor, allowed: Tensor, last: bool = False) -> Tensor:
        """``[B, L, D] -> [B, L, D]``; with ``last``, only the last position's output ``[B, 1, D]``
        (what ranking reads from the final block): attention still reads every position."""
        r = x[:, -1:] if last else x  # the residual stream of the positions computed
        if self.pre:
            r = r + self.drop(self.attention(self.ln1(x), allowed, last))
            return r + self.drop(self.ff(self.ln2(r)))
        r = self.ln1(r + self.drop(self.attention(x, allowed, last)))
        return self.ln2(r + self.drop(self.ff(r)))


def run_blocks(blocks: nn.ModuleList, x: Tensor, *args: Tensor | None,
               last: bool = False) -> Tensor:
    """``x`` through every block (each also given ``args``); with ``last``, the final block computes
    the last position only (``[B, 1, D]``), the one ranking reads, and the others every position."""
    for i, block in enumerate(blocks):
        x = block(x, *args, last=last and i == len(blocks) - 1)
    return x


def causal_mask(real: Tensor) -> Tensor:
    """``[B, 1, L, L]``: position i may read j <= i when j is a real item; every position reads
    itself, so padding rows never see an empty set (they are never scored)."""
    L = real.shape[1]
    causal = torch.ones(L, L, dtype=torch.bool, device=real.device).tril()  # [L, L]
    eye = torch.eye(L, dtype=torch.bool, device=real.device)
    return ((causal & real[:, None, :]) | eye)[:, None]


def positions_from_end(L: int, max_len: int, device: torch.device) -> Tensor:
    """``[L]``: the last column is position 0, the one before it 1, ..."""
    return torch.arange(L - 1, -1, -1, device=device).clamp(max=max_len - 1)


class SASRec(SequenceModel):
    name = "sasrec"
    config_class = SASRecConfig

    def __init__(self, config: SASRecConfig, n_items: int, content=None) -> None:
        super().__init__(config, n_items, content)
        if config.d_model % config.n_heads:
            raise ValueError(f"d_model={config.d_model} is not divisible by n_heads={config.n_heads}")
        if config.norm not in ("pre", "post"):
            raise ValueError(f"norm must be 'pre' or 'post', got {config.norm!r}")
        self.items = self.item_encoder(config.d_model, init_std=cosine_init_std(config.temperature))
        self.pos_emb = nn.Embedding(config.max_len, config.d_model)
        self.drop = Dropout(config.dropout if config.emb_dropout is None else config.emb_dropout)
        self.blocks = nn.ModuleList(Block(config) for _ in range(config.n_blocks))
        self.ln_f = nn.LayerNorm(config.d_model) if config.norm == "pre" else nn.Identity()
        self.ln_emb = nn.LayerNorm(config.d_model) if config.emb_norm else nn.Identity()
        if config.init_std is not None:
            for m in self.blocks.modules():
                if isinstance(m, nn.Linear):
                    nn.init.normal_(m.weight, std=config.init_std)
                    nn.init.zeros_(m.bias)
        pos_std = config.d_model**-0.5 if config.init_std is None else config.init_std
        nn.init.normal_(self.pos_emb.weight, std=pos_std)

    def encode_states(self, seq: Tensor, last: bool = False) -> Tensor:
        """``[B, L] -> [B, L, D]``: the transformer's output states (``[B, 1, D]``, the last
        position's, with ``last``: the final block then computes nothing else)."""
        B, L = seq.shape
        real = seq > 0  # [B, L]
        pos = positions_from_end(L, self.max_len, seq.device)  # [L]
        x = self.items(seq)  # [B, L, D]
        if self.config.emb_scale:
            x = x * self.config.d_model**0.5
        x = self.drop(self.ln_emb(x + self.pos_emb(pos))) * real[:, :, None]
        allowed = causal_mask(real)  # [B, 1, L, L]
        return self.ln_f(run_blocks(self.blocks, x, allowed, last=last))

    def encode(self, seq: Tensor, times: Tensor | None = None) -> Tensor:
        return cosine_query(self.encode_states(seq), self.config.temperature)  # [B, L, D]

    def query(self, seq: Tensor, times: Tensor | None = None) -> Tensor:
        return cosine_query(self.encode_states(seq, last=True)[:, -1], self.config.temperature)

    def attention_flops(self, width: int) -> float:
        """Per token, forward + backward: scores and weighted sum, 2 x 2 x width x d, per block."""
        return 12.0 * width * self.config.d_model * self.config.n_blocks

    def item_table(self) -> tuple[Tensor, Tensor | None]:
        return cosine_table(self.items.table(), self.config.temperature), None  # [N+1, D]
