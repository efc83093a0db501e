"""Training losses over the item catalog, computed only at real (non-padding) positions.

Each takes ``h [P, D]`` (sequence states at the P real positions), the item table ``W [N+1, D]`` with
optional bias ``b [N+1]``, and ``targets [P]`` (item indices >= 1). Row 0 of ``W`` is padding and is
never a candidate.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable
from functools import partial

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor


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
    into ``out`` when given)."""
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
    """``acc += E @ W[start:stop]`` in float32, the product in ``E``'s dtype."""
    if E.dtype == acc.dtype:
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
    """Flat CPU buffers for the stored ``exp`` blocks, handed from one training step to the next.

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
            buf = _POOL.take(P * (n - 1), h2) if store else None
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
                if mm is None:
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


def _softmax_ce_rows(h: Tensor, W: Tensor, b: Tensor | None, targets: Tensor) -> Tensor:
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
    return _softmax_ce_rows(h, W, b, targets).mean()


def seen_logits(states: Tensor, inputs: Tensor, targets: Tensor, W: Tensor, b: Tensor | None
                ) -> Tensor:
    """``[P, L]``: at each real position (``targets > 0``) the logits of the distinct items read
    so far in its row, ``-inf`` where there is none (later columns, padding, repeats of an
    earlier column, the position's own target). ``states [B, L, D]``, ``inputs`` and ``targets``
    ``[B, L]``: a ``[B, L, L]`` product, small next to the softmax over the catalog."""
    L = inputs.shape[1]
    S = torch.bmm(states.float(), W.float()[inputs].transpose(1, 2))  # [B, L(pos), L(item)]
    if b is not None:
        S = S + b.float()[inputs][:, None, :]
    upto = torch.ones(L, L, dtype=torch.bool, device=inputs.device).tril()  # [i, j]: j <= i
    earlier = upto & ~torch.eye(L, dtype=torch.bool, device=inputs.device)  # [i, j]: j < i
    first = ~((inputs[:, :, None] == inputs[:, None, :]) & earlier).any(-1)  # [B, L]
    keep = (first & (inputs > 0))[:, None, :] & upto  # [B, L(pos), L(item)]
    keep = keep & (inputs[:, None, :] != targets[:, :, None])
    real = targets > 0  # [B, L]
    return S[real].masked_fill(~keep[real], float("-inf"))  # [P, L]


def history_masked_softmax_ce(h: Tensor, W: Tensor, b: Tensor | None, targets: Tensor,
                              seen: Tensor) -> Tensor:
    """Full-softmax cross-entropy over the items not in ``seen`` (:func:`seen_logits`), the
    candidates a ranking with seen items masked leaves. ``lse_unseen = lse + log(1 - p_seen)``,
    so the catalog pass is :func:`full_softmax_ce`'s; ``1 - p_seen`` is floored at ``1e-6``."""
    rows = _softmax_ce_rows(h, W, b, targets)  # [P] lse - s_t
    s_t = (h.float() * W.float()[targets]).sum(1)  # [P]
    if b is not None:
        s_t = s_t + b.float()[targets]
    p_seen = torch.exp(seen - (rows + s_t)[:, None]).sum(1)  # [P]
    return (rows + torch.log1p(-p_seen.clamp(max=1 - 1e-6))).mean()


history_masked_softmax_ce.masks_history = True  # type: ignore[attr-defined]


class NegativeSampler:
    """Negatives shared by every position of a batch: the cost grows with their number, not with
    batch x number. ``uniform`` draws item indices 1..N evenly; ``in-batch`` draws from the batch's
    own targets, so each item appears in proportion to its popularity ``q``.
    """

    def __init__(self, kind: str, n_items: int, item_counts: Tensor | None = None) -> None:
        if kind not in ("uniform", "in-batch"):
            raise ValueError(f"unknown sampler {kind!r}; choose uniform or in-batch")
        self.kind, self.n_items = kind, n_items
        if kind == "uniform":
            self.log_q = torch.full((n_items + 1,), -math.log(n_items))
        else:
            if item_counts is None:
                raise ValueError("the in-batch sampler needs training item counts")
            q = item_counts.double() / item_counts.double()[1:].sum()
            self.log_q = q.clamp(min=1e-12).log().float()  # items never drawn keep a finite value
        self.log_q[0] = float("-inf")

    def sample(self, targets: Tensor, n: int) -> tuple[Tensor, Tensor]:
        """``n`` negative item indices and their log sampling probabilities."""
        dev = targets.device
        if self.kind == "uniform":
            neg = torch.randint(1, self.n_items + 1, (n,), device=dev)
        else:
            neg = targets[torch.randint(0, targets.shape[0], (n,), device=dev)]
        return neg, self.log_q.to(dev)[neg]


def _pos_neg_logits(h: Tensor, W: Tensor, b: Tensor | None, targets: Tensor, neg: Tensor
                    ) -> tuple[Tensor, Tensor]:
    pos = (h * W[targets]).sum(-1)  # [P]
    negl = h @ W[neg].T  # [P, n]
    if b is not None:
        pos, negl = pos + b[targets], negl + b[neg]
    hit = neg[None, :] == targets[:, None]  # [P, n] a "negative" that is the answer
    return pos, negl.masked_fill(hit, float("-inf"))


def sampled_softmax(h, W, b, targets, sampler: NegativeSampler, n: int, logq: bool) -> Tensor:
    """Softmax over the target and ``n`` shared negatives; with ``logq``, every logit is corrected
    by ``-log q(item)`` (Bengio & Senecal; Yi et al. 2019), which removes the sampler's bias."""
    neg, lq = sampler.sample(targets, n)
    pos, negl = _pos_neg_logits(h.float(), W.float(), None if b is None else b.float(), targets, neg)
    if logq:
        pos = pos - sampler.log_q.to(h.device)[targets]
        negl = negl - lq[None, :]
    logits = torch.cat([pos[:, None], negl], 1)  # [P, 1 + n], the answer in column 0
    return F.cross_entropy(logits, torch.zeros_like(targets))


def bce(h, W, b, targets, sampler: NegativeSampler, n: int, beta: float = 1.0) -> Tensor:
    """Binary cross-entropy: the target against ``n`` shared negatives (original SASRec with
    ``beta = 1``); ``beta`` < 1 is gSASRec's calibrated positive term ``-log sigmoid(s)^beta``."""
    neg, _ = sampler.sample(targets, n)
    pos, negl = _pos_neg_logits(h.float(), W.float(), None if b is None else b.float(), targets, neg)
    pos_term = beta * F.softplus(-pos)  # -log sigmoid(pos)^beta
    neg_term = F.softplus(negl).sum(1)  # -sum log(1 - sigmoid(neg)); masked hits give 0
    return (pos_term + neg_term).mean()


def gbce_beta(n_neg: int, n_items: int, t: float) -> float:
    """gSASRec (Petrov & Macdonald, 2023): beta = alpha (t (1 - 1/alpha) + 1/alpha), alpha = the
    negative sampling rate n / (N - 1)."""
    alpha = n_neg / max(n_items - 1, 1)
    return alpha * (t * (1 - 1 / alpha) + 1 / alpha)


LossFn = Callable[[Tensor, Tensor, "Tensor | None", Tensor], Tensor]


def smoothed_softmax_ce(h: Tensor, W: Tensor, b: Tensor | None, targets: Tensor, eps: float) -> Tensor:
    """Full-softmax cross-entropy with label smoothing ``eps``: the target gets ``1 - eps`` and every
    item ``eps / N``. ``-sum_j q_j log p_j = lse - (1 - eps) s_t - eps mean_j s_j``, so the smoothing
    costs one mean of the item table on top of :func:`full_softmax_ce`. Items :func:`excluding`
    takes out of the candidates are left out of the mean too."""
    ce = full_softmax_ce(h, W, b, targets)  # mean of lse - s_t
    s_t = (h * W[targets]).sum(1)  # [P]
    if b is None:
        s_mean = h @ W[1:].mean(0)  # [P]
    else:  # a mean over the live items, weighted 1 / 0 (no copy of the table)
        live = (b[1:] > _EXCLUDED / 2).to(W.dtype)  # [N]
        live = live / live.sum()
        s_t = s_t + b[targets]
        s_mean = h @ (live @ W[1:]) + live @ b[1:]
    return ce + eps * (s_t - s_mean).float().mean()


def make_loss(name: str, *, n_items: int, negatives: int = 256, sampler: str = "uniform",
              logq: bool = True, gbce_t: float = 0.75, item_counts: Tensor | None = None,
              label_smoothing: float = 0.0, mask_history: bool = False) -> LossFn:
    """The loss menu behind one switch: ``softmax``, ``sampled``, ``bce`` or ``gbce``.

    A loss with ``masks_history`` set takes the ``seen`` logits of :func:`seen_logits` too."""
    if name == "softmax":
        if mask_history:
            return history_masked_softmax_ce
        if label_smoothing > 0:
            return partial(smoothed_softmax_ce, eps=label_smoothing)
        return full_softmax_ce
    if name not in ("sampled", "bce", "gbce"):
        raise ValueError(f"unknown loss {name!r}; choose one of softmax, sampled, bce, gbce")
    if negatives < 1:
        raise ValueError(f"negatives must be >= 1, got {negatives}")
    s = NegativeSampler(sampler, n_items, item_counts)
    if name == "sampled":
        return partial(sampled_softmax, sampler=s, n=negatives, logq=logq)
    beta = 1.0 if name == "bce" else gbce_beta(negatives, n_items, gbce_t)
    return partial(bce, sampler=s, n=negatives, beta=beta)


# a logit this far below the rest has probability exactly 0 in float32 (and in bf16)
_EXCLUDED = -1e4


def excluding(loss_fn: LossFn, items: Tensor | np.ndarray) -> LossFn:
    """``loss_fn`` whose candidate set leaves ``items`` out: their logits get ``-1e4`` (added to the
    model's bias), so they are never negatives and receive no gradient through the scores.

    The cold-item protocol needs it: held-out items must be as unknown to training as items
    released after it, yet their rows exist in the table (content models give them vectors), and
    a softmax over every row would push exactly those never-positive items down.
    """
    idx = torch.as_tensor(np.asarray(items), dtype=torch.long)
    cache: dict[tuple[int, torch.device, torch.dtype], Tensor] = {}

    def bias(W: Tensor, b: Tensor | None) -> Tensor:
        key = (W.shape[0], W.device, W.dtype)
        if key not in cache:
            m = torch.zeros(W.shape[0], device=W.device, dtype=W.dtype)
            m[idx[idx < W.shape[0]].to(W.device)] = _EXCLUDED
            cache[key] = m
        return cache[key] if b is None else b + cache[key]

    def loss(h: Tensor, W: Tensor, b: Tensor | None, targets: Tensor, **kw) -> Tensor:
        return loss_fn(h, W, bias(W, b), targets, **kw)

    loss.masks_history = getattr(loss_fn, "masks_history", False)  # type: ignore[attr-defined]
    return loss


def real_positions(states: Tensor, targets: Tensor) -> tuple[Tensor, Tensor]:
    """Gather ``[P, D]`` states and ``[P]`` targets where the target is real (> 0)."""
    mask = targets > 0  # [B, L]
    return states[mask], targets[mask]
