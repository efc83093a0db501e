"""Matrix products on the CPU through oneDNN where PyTorch's own call is slower.

On a CPU, ``torch.mm`` in float32 calls MKL, and MKL takes its AVX-512 code only on Intel
processors: on an AVX-512 AMD EPYC (Zen 5) of this project's VM a 2,048 product ran at 188-201
GFLOP/s through ``torch.mm`` and at 360-430 through oneDNN, which PyTorch ships as well and
which picks its kernels by instruction set, not by vendor. :func:`mm_nt` is ``a @ b.T`` through
oneDNN where the build has it and the tensors are CPU float32 or bfloat16 (the same values as
``torch.mm`` to float32 rounding, tested), else through ``torch.mm``.

``SEQREC_ONEDNN=0`` in the environment turns the oneDNN path off (every product through
``torch.mm``, as before); :func:`use_onednn` does the same from code.
"""

from __future__ import annotations

import logging
import os

import torch
from torch import Tensor

log = logging.getLogger(__name__)

_DTYPES = (torch.float32, torch.bfloat16)
# a layer's weight gradient goes through oneDNN when both its widths are at least this
_WIDE = 256
# products of fewer multiply-adds stay torch.mm's: a oneDNN call costs 12-15 us before it
# computes anything (against 3-6 us), so one query's [50, 64] x [64, 192] took 18 us against
# 12 us; the two broke even at 1.5-2 M (measured on [M, 64] x [64, 192] and [M, 64] x [64, 64])
_MIN_MACS = 1 << 21


def _checked(op):
    """``op`` if it computes ``a @ b.T + bias`` on a small case with transposed operands, else
    None (with a warning): the operator is one of PyTorch's private ones, whose signature may
    change from one release to the next; a build where it fails trains through ``torch.mm``."""
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(8, 5, generator=g), torch.randn(5, 6, generator=g)
    bias = torch.randn(6, generator=g)
    try:
        got = op(a, b.T, bias, "none", [], "")
        ok = torch.allclose(got, torch.addmm(bias, a, b), rtol=1e-4, atol=1e-5)
    except Exception as e:  # noqa: BLE001 - any failure means: not this operator
        log.warning("oneDNN products are off: the operator failed a check (%s)", e)
        return None
    if not ok:
        log.warning("oneDNN products are off: the operator's result differed from torch.mm's")
        return None
    return op


def _op():
    if not torch.backends.mkldnn.is_available():
        return None
    try:
        op = torch.ops.mkldnn._linear_pointwise.default
    except (AttributeError, RuntimeError):
        return None
    return _checked(op)


_LINEAR = _op()
_enabled = os.environ.get("SEQREC_ONEDNN", "1") != "0"


def _dnnl(a: Tensor, b: Tensor, bias: Tensor | None = None) -> Tensor:
    """``a @ b.T (+ bias)`` by the oneDNN operator itself: no fallback, no size rule."""
    return _LINEAR(a, b, bias, "none", [], "")


def use_onednn(enabled: bool) -> bool:
    """Turn the oneDNN path on or off for this process; returns the previous setting."""
    global _enabled
    before, _enabled = _enabled, enabled
    return before


def onednn_active() -> bool:
    """Whether CPU float32/bfloat16 products go through oneDNN now."""
    return _enabled and _LINEAR is not None


def products_name(device: torch.device) -> str:
    """Which products train on ``device`` now, for the record: ``oneDNN`` or ``torch.mm``."""
    return "oneDNN" if device.type == "cpu" and onednn_active() else "torch.mm"


def onednn_product(device: torch.device, dtype: torch.dtype):
    """``f(a, b) = a @ b.T`` through oneDNN where this build has it for ``device`` and ``dtype``
    (whatever the switch says: the matrix-multiply ceiling is the machine's, so it is timed
    either way), else None."""
    if _LINEAR is None or device.type != "cpu" or dtype not in _DTYPES:
        return None
    return _dnnl


def _onednn(a: Tensor, b: Tensor) -> bool:
    # under torch.compile the graph's products are the compiler's to lower (its oneDNN lowering
    # expects its own prepacked form of this operator's arguments)
    return (onednn_active() and a.device.type == "cpu" and a.dtype in _DTYPES
            and a.dtype == b.dtype and not torch.compiler.is_compiling())


def mm_nt(a: Tensor, b: Tensor, bias: Tensor | None = None) -> Tensor:
    """``a @ b.T (+ bias)``: ``a [M, K]``, ``b [N, K]``, ``bias [N]`` -> ``[M, N]``, a new tensor
    (through ``torch.mm`` below :data:`_MIN_MACS` multiply-adds).

    Either argument may be a transposed or sliced view. No autograd: callers that need gradients
    compute them with further calls (the full-softmax kernel does)."""
    if (_onednn(a, b) and a.dim() == 2 and b.dim() == 2 and (bias is None or bias.dtype == a.dtype)
            and a.shape[0] * a.shape[1] * b.shape[0] >= _MIN_MACS):
        return _dnnl(a, b, bias)
    if bias is None:
        return torch.mm(a, b.T)
    return torch.addmm(bias, a, b.T)


def onednn_for(a: Tensor) -> bool:
    """Whether :func:`mm_nt` of ``a`` with a matrix of its dtype goes through oneDNN."""
    return _onednn(a, a)


class _Linear(torch.autograd.Function):
    """``x @ W.T + b`` and its gradients, every product through oneDNN (:func:`linear`)."""

    @staticmethod
    def forward(ctx, x: Tensor, W: Tensor, b: Tensor | None) -> Tensor:  # type: ignore[override]
        x2 = x.reshape(-1, x.shape[-1])
        ctx.save_for_backward(x2, W)
        ctx.shape, ctx.has_bias = x.shape, b is not None
        return _dnnl(x2, W, b).view(*x.shape[:-1], W.shape[0])

    @staticmethod
    def backward(ctx, gy: Tensor):  # type: ignore[override]
        x2, W = ctx.saved_tensors
        g2 = gy.reshape(-1, gy.shape[-1])  # [N, out]
        gx = gW = gb = None
        if ctx.needs_input_grad[0]:
            gx = _dnnl(g2, W.T).view(ctx.shape)  # gy @ W
        if ctx.needs_input_grad[1]:
            gW = _weight_grad(g2, x2)
        if ctx.has_bias and ctx.needs_input_grad[2]:
            gb = g2.sum(0)
        return gx, gW, gb


def _weight_grad(g: Tensor, x: Tensor) -> Tensor:
    """``g^T @ x``, ``[out, in]``, from ``g [N, out]`` and ``x [N, in]``: a layer's weight gradient.

    oneDNN reads both operands along the N tokens: it first copies its source (``g``) transposed
    and reorders its weight (``x``) into its own layout. In training that pays for layers at
    least :data:`_WIDE` wide both ways (Beauty d 256 epochs 13.95 s against 15.33 s with MKL's
    product), not for narrower ones, where MKL's transposed read wins
    (d 64 epochs 6.42 against 6.79 s). Which operand oneDNN reads as its source matters in a
    microbenchmark (256 -> 768 at 6,400 tokens: 271 GFLOP/s with the narrower one, 159 with the
    other), yet epochs chosen that way took longer (d 64 7.12 against 6.68 s, d 256 16.0 against
    14.8; alternated in one process), so the source is always ``g``."""
    if min(g.shape[1], x.shape[1]) >= _WIDE:
        return _dnnl(g.T, x.T)
    return torch.mm(g.T, x)


def linear(x: Tensor, W: Tensor, b: Tensor | None = None) -> Tensor:
    """``F.linear(x, W, b)``, its forward and backward products through oneDNN where
    :func:`mm_nt` would take it (under CPU autocast, ``F.linear``: autocast casts, and PyTorch's
    bfloat16 products are oneDNN's already)."""
    if (_onednn(x, W) and x.dim() >= 2 and (b is None or b.dtype == x.dtype)
            and not torch.is_autocast_enabled("cpu") and x.numel() * W.shape[0] >= _MIN_MACS):
        return _Linear.apply(x, W, b)
    return torch.nn.functional.linear(x, W, b)
