"""The full-softmax cross-entropy over the whole item catalog, in cache-sized item chunks.

:func:`full_softmax_ce` equals :func:`softmax_ce_reference` (plain PyTorch) in value and gradient
without a ``[positions x items]`` tensor: a custom autograd function keeps each chunk's
exponentials and turns them into gradients in the backward pass without a second matrix
product. On a CPU its products go through oneDNN (:mod:`seqrec.matmul`), which returns each
block as a tensor of its own; where they go through ``torch.mm`` (a GPU, or ``SEQREC_ONEDNN=0``)
the blocks are written into a buffer pool reused from step to step. The README's architecture
notes say why each habit (base-2 logits, the pool, the gradient half taken in the forward pass)
makes it faster. The loss menu (:mod:`seqrec.losses`) builds on it.
"""

from __future__ import annotations

import math
import threading

import torch
import torch.nn.functional as F
from torch import Tensor

from seqrec.matmul import mm_nt, onednn_for


def softmax_ce_reference(h: Tensor, W: Tensor, b: Tensor | None, targets: Tensor) -> Tensor:
    """Plain PyTorch full-softmax cross-entropy: the reference the fast kernel is tested against."""
    logits = h @ W[1:].T  # [P, N]
    if b is not None:
        logits = logits + b[1:]
    return F.cross_entropy(logits.float(), targets - 1)


def _chunk_size(P: int, n: int, device: torch.device | None = None) -> int:
    """Items per ``[P, C]`` block. On a CPU a float32 block near 2 MiB stays in cache between the
    matmul and the exp. A GPU has no such cache to fit and pays a launch for every small product:
    there one block holds up to 2^27 entries (512 MiB in float32), the whole catalog for most
    batches (ML-1M's 64 x 200 positions x 3,706 items is 47M)."""
    budget = 1 << (27 if device is not None and device.type == "cuda" else 19)
    return max(256, min(n, budget // max(P, 1)))


def _logits(h: Tensor, W: Tensor, b: Tensor | None, start: int, stop: int,
            out: Tensor | None = None) -> Tensor:
    """``[P, C]`` logits of items ``start:stop``, in the dtype of ``h``, ``W`` and ``b`` (written
    into ``out`` when given and the product is not oneDNN's, which returns a tensor of its own)."""
    if onednn_for(h):
        return mm_nt(h, W[start:stop], None if b is None else b[start:stop])
    if b is None:
        return torch.mm(h, W[start:stop].T, out=out)
    return torch.addmm(b[start:stop], h, W[start:stop].T, out=out)


def _matmul_dtype(device: torch.device) -> torch.dtype | None:
    """The dtype autocast would give a matrix product on ``device`` now, or None (no autocast)."""
    if torch.is_autocast_enabled(device.type):
        return torch.get_autocast_dtype(device.type)
    return None


def _in_dtype(mm: torch.dtype | None, *xs: Tensor | None) -> tuple[Tensor | None, ...]:
    """``xs`` cast to the matmul dtype ``mm`` (unchanged when None); None entries stay None."""
    if mm is None:
        return xs
    return tuple(None if x is None else x.to(mm) for x in xs)


def _accumulate(acc: Tensor, E: Tensor, W: Tensor, Wm: Tensor, start: int, stop: int) -> None:
    """``acc += E @ W[start:stop]`` in float32, the product in ``E``'s dtype (``Wm``'s: ``W``
    itself without autocast)."""
    if onednn_for(E):
        acc += mm_nt(E, Wm[start:stop].T)
    elif E.dtype == acc.dtype:
        acc.addmm_(E, W[start:stop])
    else:
        acc += (E @ Wm[start:stop]).to(acc.dtype)


def _base2(mm: torch.dtype | None, h: Tensor, W: Tensor, b: Tensor | None
           ) -> tuple[Tensor, Tensor, Tensor | None]:
    """``h log2(e)``, ``W`` and ``b log2(e)`` in the matmul dtype: their products are logits in
    base 2, whose ``exp2`` is the logits' ``exp``. On CPU torch's ``exp2`` is twice as fast as its
    ``exp`` (relative error 3e-6 against 6e-8). The forward and the backward pass both call
    this, so a recomputed block is rounded exactly as the forward pass's was."""
    h2, Wm, b2 = _in_dtype(mm, h * _LOG2E, W, None if b is None else b * _LOG2E)
    return h2, Wm, b2  # type: ignore[return-value]


# A shifted sum below this falls back to the exact maximum: 1 / s must stay finite in float32.
_MIN_SUM = 1e-30
# The shift is never more than this below the rows' logit bound, so no exp overflows: e^60 times
# 10^12 items is still inside float32's range (3.4e38).
_MAX_EXP = 60.0
# Above this many stored probabilities the backward pass recomputes them instead (memory bound).
_STORE_LIMIT = 1 << 27
_LOG2E, _LN2 = 1 / math.log(2), math.log(2)


class _BlockPool:
    """Flat CPU buffers for the stored ``exp`` blocks, handed from one training step to the next
    (when the blocks' products are ``torch.mm``'s, which write into a given buffer; oneDNN's
    return their own, so that path takes no buffer).

    A step's blocks are tens of MiB (Beauty: 750 positions x 12,101 items, 36 MiB). Allocated
    afresh, the allocator returns them to the kernel at each free and every page faults again on
    first touch: measured alone at that shape, the forward pass's products and ``exp`` took 21 ms
    against 13 ms into a reused buffer, and a Beauty run's page faults halve with the pool. A
    buffer is taken by a forward pass and given back by the backward pass that consumed it, so
    two losses alive at once never share one; one dropped without a backward pass is simply
    freed. CUDA's caching allocator already reuses its memory, so only CPU tensors are pooled.
    """

    def __init__(self, keep: int = 2) -> None:
        self.keep = keep
        self.free: list[Tensor] = []
        self.lock = threading.Lock()

    def take(self, numel: int, like: Tensor) -> Tensor:
        if like.device.type != "cpu":
            return torch.empty(numel, dtype=like.dtype, device=like.device)
        with self.lock:  # the smallest that fits (the list runs from largest to smallest)
            for i in reversed(range(len(self.free))):
                if self.free[i].dtype == like.dtype and self.free[i].numel() >= numel:
                    return self.free.pop(i)
        return torch.empty(numel, dtype=like.dtype)

    def give(self, buf: Tensor | None) -> None:
        if buf is None or buf.device.type != "cpu":
            return
        with self.lock:
            self.free.append(buf)
            self.free.sort(key=Tensor.numel, reverse=True)  # the largest kept, the smallest dropped
            del self.free[self.keep:]

    def clear(self) -> None:
        with self.lock:
            self.free.clear()


_POOL = _BlockPool()


def release_buffers() -> None:
    """Free the full-softmax kernel's pooled buffers (the trainer does when it ends): up to two
    blocks' worth of memory, e.g. about 180 MiB each for ML-1M's batches of 64 x 200 positions."""
    _POOL.clear()


class _ChunkedSoftmaxCE(torch.autograd.Function):
    """Full-softmax CE without one ``[P, N]`` tensor: item chunks of cache size.

    Forward shifts each row's logits by one value near its maximum: the largest of the first
    chunk's maximum, the target's logit and ``bound - 60``, where ``bound = |h| * max_j |W_j| +
    max b`` (Cauchy-Schwarz) lies above every logit. So no entry's ``exp`` can overflow, the
    largest are near 1 (where low-precision rounding costs least), and no max pass or rescaling
    is needed. The logits are computed in base 2 (:func:`_base2`), so ``exp2`` gives their
    ``exp``. ``exp`` of the shifted logits is summed and, when gradients are needed and it fits,
    kept per chunk (in a :class:`_BlockPool` buffer) and multiplied by ``W`` while in cache (``E @
    W``, the half of the gradient that needs no ``1 / s``), so the backward pass reads each block
    once, for the item gradient, with neither a second product of logits nor a second ``exp``.
    Should a row's sum underflow, the forward pass falls back to an exact online log-sum-exp for
    the whole batch.

    ``mm`` (None or e.g. ``torch.bfloat16``, the autocast dtype of the caller) is the dtype of the
    matrix products and of the ``[P, C]`` blocks: the products' inputs are cast to it and the
    shift and ``exp`` run on the blocks in place, with no float32 copy of a block (the shift is
    rounded to ``mm`` first; the rounded value is the one the result uses). Sums, the returned
    value and every gradient stay float32. Autocast is off inside, so the forward and the
    backward pass (which autocast never covers) agree on dtypes.
    """

    @staticmethod
    def forward(ctx, h: Tensor, W: Tensor, b: Tensor | None, targets: Tensor, chunk: int,
                mm: torch.dtype | None = None, grad: bool = True) -> Tensor:
        # [P]: each row's lse - s_target
        with torch.autocast(h.device.type, enabled=False):
            P, n = h.shape[0], W.shape[0]
            h2, Wm, b2 = _base2(mm, h, W, b)
            store = grad and P * n <= _STORE_LIMIT
            acc = torch.zeros_like(h) if store else None  # sum over chunks of E @ W
            tgt = (h * W[targets]).sum(1)  # [P]
            if b is not None:
                tgt = tgt + b[targets]
            bound = h.norm(dim=1) * W[1:].norm(dim=1).max()  # [P] >= every logit of the row
            if b is not None:
                bound = bound + b[1:].max()
            s = torch.zeros(P, device=h.device, dtype=h.dtype)
            blocks: list[Tensor] = []
            # oneDNN's products return blocks of their own: no pooled buffer to write into
            buf = _POOL.take(P * (n - 1), h2) if store and not onednn_for(h2) else None
            shift2 = bound * _LOG2E  # in base 2, as the blocks
            for start in range(1, n, chunk):
                stop = min(start + chunk, n)
                out = (None if buf is None
                       else buf[P * (start - 1):P * (stop - 1)].view(P, stop - start))
                E = _logits(h2, Wm, b2, start, stop, out)  # [P, C]
                if start == 1:
                    shift2 = torch.maximum(torch.maximum(E.max(1).values.to(h.dtype), tgt * _LOG2E),
                                           (bound - _MAX_EXP) * _LOG2E).to(E.dtype)
                E.sub_(shift2[:, None]).exp2_()
                s += E.sum(1, dtype=h.dtype)
                if store:  # E @ W while the block is in cache: the backward pass reads it once
                    blocks.append(E)
                    _accumulate(acc, E, W, Wm, start, stop)
            shift2 = shift2.to(h.dtype)
            # underflow (or so near it that 1 / s overflows in the backward pass): shift by the
            # exact running maximum instead
            if not bool((s > _MIN_SUM).all()):
                blocks, store, acc = [], False, None
                _POOL.give(buf)
                buf = None
                m = torch.full((P,), float("-inf"), device=h.device, dtype=h.dtype)
                s = torch.zeros(P, device=h.device, dtype=h.dtype)
                for start in range(1, n, chunk):
                    L = _logits(h2, Wm, b2, start, min(start + chunk, n))  # [P, C]
                    # a maximum of entries of L: exact in L's dtype
                    m_new = torch.maximum(m, L.max(1).values.to(h.dtype))
                    s = s * torch.exp2(m - m_new) + L.sub_(m_new.to(L.dtype)[:, None]).exp2_().sum(
                        1, dtype=h.dtype)
                    m = m_new
                shift2 = m
            lse = shift2 * _LN2 + s.log()  # [P]
        ctx.chunk, ctx.blocks, ctx.buf, ctx.acc, ctx.mm = chunk, blocks, buf, acc, mm
        ctx.save_for_backward(h, W, b, targets, lse, s)
        return lse - tgt

    @staticmethod
    def backward(ctx, scale: Tensor):  # type: ignore[override]
        # d loss / d logit = scale * (p - onehot), p = E / s, scale [P] the rows' upstream
        # gradient. The 1 / s of each row and the one-hot are applied to [P, D] rows, never to
        # the [P, C] blocks: grad_h = ((E @ W) / s - onehot @ W) * scale and grad_W = E^T (h *
        # scale / s) - onehot^T (h * scale); each block is read by its two matrix products only.
        h, W, b, targets, lse, s = ctx.saved_tensors
        n, chunk, blocks, mm = W.shape[0], ctx.chunk, ctx.blocks, ctx.mm
        with torch.autocast(h.device.type, enabled=False):
            h2, Wm, b2 = _base2(mm, h, W, b)
            if blocks:  # stored blocks hold exp(logit - shift): p = E / s
                inv = scale / s  # [P]
            else:  # recomputed ones 2^(logit2 - lse2'), lse2' = lse2 rounded to the blocks' dtype
                lse2 = lse * _LOG2E
                lse2_m = lse2.to(h2.dtype)
                inv = scale * torch.exp2(lse2_m.to(lse.dtype) - lse2)
            hs = h * inv[:, None]  # [P, D]
            hsm = hs if mm is None else hs.to(mm)
            hsT = hsm.T.contiguous() if onednn_for(hsm) else None  # [D, P]
            acc = ctx.acc if blocks else torch.zeros_like(h)  # sum over chunks of E @ W
            grad_W = torch.empty_like(W)  # rows 1.. are written whole below
            grad_W[0] = 0
            grad_b = torch.zeros_like(b) if b is not None else None
            for c, start in enumerate(range(1, n, chunk)):
                stop = min(start + chunk, n)
                if blocks:
                    E = blocks[c]
                else:
                    E = _logits(h2, Wm, b2, start, stop).sub_(lse2_m[:, None]).exp2_()
                    _accumulate(acc, E, W, Wm, start, stop)
                if onednn_for(E):  # (hs^T E)^T: oneDNN reads E transposed as it lies
                    grad_W[start:stop] = mm_nt(hsT, E.T).T
                elif mm is None:
                    torch.mm(E.T, hs, out=grad_W[start:stop])
                else:
                    grad_W[start:stop] = E.T @ hsm
                if grad_b is not None:
                    grad_b[start:stop] = E.T.to(inv.dtype) @ inv
            ctx.blocks, ctx.acc = [], None
            _POOL.give(ctx.buf)
            ctx.buf = None
            grad_h = acc.mul_(inv[:, None]).sub_(W[targets] * scale[:, None])
            grad_W.index_add_(0, targets, h * -scale[:, None])
            if grad_b is not None:
                grad_b.index_add_(0, targets, (-scale).to(grad_b.dtype))
        return grad_h, grad_W, grad_b, None, None, None, None


def softmax_ce_rows(h: Tensor, W: Tensor, b: Tensor | None, targets: Tensor) -> Tensor:
    """``[P]``: each position's full-softmax cross-entropy, ``lse - s_target``, in float32; the
    matrix products in the caller's autocast dtype, if any."""
    mm = _matmul_dtype(h.device)
    grad = torch.is_grad_enabled() and any(x is not None and x.requires_grad for x in (h, W, b))
    h, W = h.float(), W.float()
    b = b.float() if b is not None else None
    return _ChunkedSoftmaxCE.apply(h, W, b, targets, _chunk_size(h.shape[0], W.shape[0], h.device),
                                   mm, grad)


def full_softmax_ce(h: Tensor, W: Tensor, b: Tensor | None, targets: Tensor) -> Tensor:
    """Cross-entropy of a softmax over every item, computed in cache-sized item chunks.

    Equal to :func:`softmax_ce_reference` (tested) at a fraction of its memory and time.
    """
    return softmax_ce_rows(h, W, b, targets).mean()
