"""Small neural-network layers shared by models and item encoders."""

from __future__ import annotations

import torch
from torch import Tensor, nn

_LEVELS = 1 << 16
"""Dropout draws one 16-bit random number per element: ``p`` is applied in steps of 1/65536."""


def keep_mask(x: Tensor, p: float) -> Tensor:
    """Bool tensor shaped like ``x``, each element True with probability ``1 - p'`` where ``p'``
    is ``p`` rounded to a multiple of 1/65536 (exact for 0.5, 0.25, ...).

    The bits come from 64-bit draws split four ways: a quarter of the generator calls of
    ``rand_like``, and no float conversion (``rand_like`` is the slow part of dropout on CPU).
    """
    n = x.numel()
    words = torch.empty((n + 3) // 4, dtype=torch.int64, device=x.device)
    words.random_(-(1 << 63), (1 << 63) - 1)  # all 64 bits (random_() alone leaves the sign bit 0)
    r = words.view(torch.int16)[:n].view(x.shape)  # uniform on [-32768, 32767]
    return r >= _dropped_levels(p) - _LEVELS // 2


def _dropped_levels(p: float) -> int:
    """``p`` in 1/65536 steps; at most 65535 of them, so something is always kept."""
    return min(round(p * _LEVELS), _LEVELS - 1)


class Dropout(nn.Module):
    """Inverted dropout with the semantics of ``nn.Dropout`` (``p`` to 1/65536); forward and
    backward about 2.5x faster on CPU than with a ``rand_like`` mask (measured on [128, 50, 256]
    bf16 and fp32 activations): see :func:`keep_mask`. Kept elements are scaled by
    ``1 / (1 - p')``, so the expectation is unchanged exactly."""

    def __init__(self, p: float) -> None:
        super().__init__()
        if not 0.0 <= p < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {p}")
        self.p = p
        self.scale = _LEVELS / (_LEVELS - _dropped_levels(p))

    def forward(self, x: Tensor) -> Tensor:
        if not self.training or self.p == 0.0:
            return x
        # one multiply by a mask in x's dtype: the backward pass reuses it as is
        return x * (keep_mask(x, self.p).to(x.dtype) * self.scale)

    def extra_repr(self) -> str:
        return f"p={self.p}"
