"""An HSTU-style generative sequence model (Zhai et al., 2024, "Actions Speak Louder than Words").

Each block: ``U, V, Q, K = split(SiLU(f1(LN(x))))``; pointwise aggregated attention
``A = SiLU(Q K^T / sqrt(d) + rab) / max_len`` over causal, real keys (no softmax); output
``x + Dropout(f2(LN(A V) * U))``, the ``U`` gate. ``rab`` is a learned relative-position bias per
head and, when timestamps exist, a learned bias on log-bucketed time gaps. Optionally (``ffn``) a
SwiGLU feed-forward layer follows in each block, as FuXi-alpha (Ye et al., 2025) adds to HSTU.
States are scored against the item embedding table, as in SASRec. Positions count from the end.
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
from seqrec.models.sasrec import causal_mask, run_blocks
from seqrec.nn import Linear


@dataclass
class HSTUConfig(ModelConfig):
    max_len: int = 50
    """Only the last ``max_len`` items are read; also the attention normaliser."""
    d_model: int = 64
    """Embedding and hidden size."""
    n_blocks: int = 2
    """HSTU blocks."""
    n_heads: int = 2
    """Attention heads (must divide ``d_model``)."""
    dropout: float = 0.2
    """Dropout on embeddings and on each block's output."""
    time_buckets: int = 40
    """Log2 buckets of the time gap (seconds) for the time bias; used only with timestamps."""
    temperature: float | None = None
    """Score by cosine similarity divided by this temperature (``None``: plain dot product), as
    the published HSTU runs do (unit user and item vectors, temperature 0.05)."""
    ffn: int = 0
    """Inner size of a SwiGLU feed-forward layer after each block's attention, with its own
    layer norm and residual (as FuXi-alpha adds to HSTU); ``0``: none, as in HSTU."""


class _BucketBias(torch.autograd.Function):
    """``weight[idx]`` laid out ``[B, H, Lq, L]`` for a small table ``weight`` ``[T, H]`` and
    bucket ids ``idx`` ``[B, Lq, L]``. Its backward sums the gradient per bucket with
    ``bincount``; ``nn.Embedding``'s general backward is an order of magnitude slower for
    these ~10^5 lookups into a few dozen rows (36 ms against 2.7 ms at ``[64, 50, 50]`` x 2 heads
    on a CPU), and HSTU runs it once per block and step."""

    @staticmethod
    def forward(ctx, weight: Tensor, idx: Tensor) -> Tensor:
        ctx.save_for_backward(idx)
        ctx.n_rows = weight.shape[0]
        return weight.t()[:, idx].transpose(0, 1)  # [H, B, Lq, L] -> [B, H, Lq, L]

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor, None]:
        (idx,) = ctx.saved_tensors
        flat = idx.reshape(-1)
        cols = [torch.bincount(flat, weights=grad[:, h].reshape(-1).float(), minlength=ctx.n_rows)
                for h in range(grad.shape[1])]
        return torch.stack(cols, dim=1).to(grad.dtype), None  # [T, H]


def bucket_bias(weight: Tensor, idx: Tensor) -> Tensor:
    """``[T, H]`` table, ``[B, Lq, L]`` bucket ids -> ``[B, H, Lq, L]`` bias."""
    return _BucketBias.apply(weight, idx)


def time_buckets(times: Tensor, n: int) -> Tensor:
    """``[B, L] -> [B, L, L]`` bucket of log2(1 + |t_i - t_j|) for every query i and key j."""
    gap = (times[:, :, None] - times[:, None, :]).abs().float()  # [B, L, L]
    return torch.log2(gap + 1).floor().long().clamp(max=n - 1)


class HSTUBlock(nn.Module):
    def __init__(self, cfg: HSTUConfig) -> None:
        super().__init__()
        d, self.h = cfg.d_model, cfg.n_heads
        self.scale = (d // cfg.n_heads) ** -0.5
        self.ln_in = nn.LayerNorm(d)
        self.f1 = Linear(d, 4 * d)
        self.ln_attn = nn.LayerNorm(d)
        self.f2 = Linear(d, d)
        self.rel_pos = nn.Embedding(cfg.max_len, cfg.n_heads)  # bias by distance i - j
        self.rel_time = nn.Embedding(cfg.time_buckets, cfg.n_heads)
        nn.init.zeros_(self.rel_pos.weight)
        nn.init.zeros_(self.rel_time.weight)
        self.drop = Dropout(cfg.dropout)
        if cfg.ffn:
            self.ln_ff = nn.LayerNorm(d)
            self.ff_in = Linear(d, 2 * cfg.ffn)  # value and gate
            self.ff_out = Linear(cfg.ffn, d)
        self.ffn = cfg.ffn

    def forward(self, x: Tensor, allowed: Tensor, dist: Tensor, tb: Tensor | None,
                last: bool = False) -> Tensor:
        """``[B, L, D] -> [B, L, D]``; with ``last``, only the last position's output ``[B, 1, D]``
        (what ranking reads from the final block): keys and values still cover every position."""
        B, L, D = x.shape
        h = self.ln_in(x)
        w, b = self.f1.weight, self.f1.bias  # rows: u, v, q, k
        if last:  # u and q of the last position only; v and k of every position
            hl = h[:, -1:]
            u, q = (F.silu(linear(hl, w[i * D:(i + 1) * D], b[i * D:(i + 1) * D])) for i in (0, 2))
            v, k = (F.silu(linear(h, w[i * D:(i + 1) * D], b[i * D:(i + 1) * D])) for i in (1, 3))
        else:
            u, v, q, k = F.silu(self.f1(h)).split(D, dim=-1)  # 4 x [B, L, D]
        Lq = q.shape[1]
        q = q.view(B, Lq, self.h, D // self.h).transpose(1, 2)  # [B, H, Lq, d]
        k, v = (t.view(B, L, self.h, D // self.h).transpose(1, 2) for t in (k, v))  # [B, H, L, d]
        logits = (q @ k.transpose(-1, -2)) * self.scale  # [B, H, Lq, L]
        logits = logits + self.rel_pos(dist[-Lq:]).permute(2, 0, 1)[None]  # + [1, H, Lq, L]
        if tb is not None:
            logits = logits + bucket_bias(self.rel_time.weight, tb[:, -Lq:])  # + [B, H, Lq, L]
        a = F.silu(logits) * allowed[:, :, -Lq:]  # pointwise, no softmax (allowed holds 1/max_len)
        out = (a @ v).transpose(1, 2).reshape(B, Lq, D)  # [B, Lq, D]
        y = x[:, -Lq:] + self.drop(self.f2(self.ln_attn(out) * u))
        if not self.ffn:
            return y
        val, gate = self.ff_in(self.ln_ff(y)).chunk(2, dim=-1)  # 2 x [B, Lq, ffn]
        return y + self.drop(self.ff_out(val * F.silu(gate)))


class HSTU(SequenceModel):
    name = "hstu"
    config_class = HSTUConfig
    uses_time = True

    def __init__(self, config: HSTUConfig, n_items: int, content=None) -> None:
        super().__init__(config, n_items, content)
        if config.d_model % config.n_heads:
            raise ValueError(f"d_model={config.d_model} is not divisible by n_heads={config.n_heads}")
        d = config.d_model
        self.items = self.item_encoder(d, init_std=cosine_init_std(config.temperature))
        self.pos_emb = nn.Embedding(config.max_len, d)
        self.drop = Dropout(config.dropout)
        self.blocks = nn.ModuleList(HSTUBlock(config) for _ in range(config.n_blocks))
        self.ln_f = nn.LayerNorm(d)
        nn.init.normal_(self.pos_emb.weight, std=d**-0.5)

    def encode(self, seq: Tensor, times: Tensor | None = None, *, last: bool = False) -> Tensor:
        """``[B, L, D]`` states, or only the last position's ``[B, 1, D]`` with ``last``."""
        B, L = seq.shape
        real = seq > 0  # [B, L]
        cols = torch.arange(L, device=seq.device)
        pos = (L - 1 - cols).clamp(max=self.max_len - 1)  # [L] from the end
        x = self.items(seq) * self.config.d_model**0.5 + self.pos_emb(pos)  # [B, L, D]
        x = self.drop(x) * real[:, :, None]
        allowed = causal_mask(real).float() / self.max_len  # [B, 1, L, L]: 1/max_len or 0
        dist = (cols[:, None] - cols[None, :]).clamp(0, self.max_len - 1)  # [L, L]
        tb = time_buckets(times, self.config.time_buckets) if times is not None else None
        states = self.ln_f(run_blocks(self.blocks, x, allowed, dist, tb, last=last))
        return cosine_query(states, self.config.temperature)

    def query(self, seq: Tensor, times: Tensor | None = None) -> Tensor:
        return self.encode(seq, times, last=True)[:, -1]  # [B, D]

    def attention_flops(self, width: int) -> float:
        """Per token, forward + backward: scores and weighted sum, 2 x 2 x width x d, per block."""
        return 12.0 * width * self.config.d_model * self.config.n_blocks

    def item_table(self) -> tuple[Tensor, Tensor | None]:
        return cosine_table(self.items.table(), self.config.temperature), None  # [N+1, D]
