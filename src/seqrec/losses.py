"""Training losses over the item catalog, computed only at real (non-padding) positions.

Each takes ``h [P, D]`` (sequence states at the P real positions), the item table ``W [N+1, D]`` with
optional bias ``b [N+1]``, and ``targets [P]`` (item indices >= 1). Row 0 of ``W`` is padding and is
never a candidate. The full softmax is :mod:`seqrec.chunked_softmax`'s kernel; the rest of the
menu (sampled softmax, BCE, gBCE, label smoothing, history masking, the repeat bias, excluded
items) lives here.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from functools import partial

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from seqrec.chunked_softmax import full_softmax_ce, softmax_ce_rows
from seqrec.nn import gather_rows


def seen_logits(states: Tensor, inputs: Tensor, targets: Tensor, W: Tensor, b: Tensor | None
                ) -> Tensor:
    """``[P, L]``: at each real position (``targets > 0``) the logits of the distinct items read
    so far in its row, ``-inf`` where there is none (later columns, padding, repeats of an
    earlier column, the position's own target). ``states [B, L, D]``, ``inputs`` and ``targets``
    ``[B, L]``: a ``[B, L, L]`` product, small next to the softmax over the catalog."""
    L = inputs.shape[1]
    S = torch.bmm(states.float(), gather_rows(W.float(), inputs).transpose(1, 2))  # [B, L(pos), L(item)]
    if b is not None:
        S = S + gather_rows(b.float(), inputs)[:, None, :]
    upto = torch.ones(L, L, dtype=torch.bool, device=inputs.device).tril()  # [i, j]: j <= i
    earlier = upto & ~torch.eye(L, dtype=torch.bool, device=inputs.device)  # [i, j]: j < i
    first = ~((inputs[:, :, None] == inputs[:, None, :]) & earlier).any(-1)  # [B, L]
    keep = (first & (inputs > 0))[:, None, :] & upto  # [B, L(pos), L(item)]
    keep = keep & (inputs[:, None, :] != targets[:, :, None])
    real = targets > 0  # [B, L]
    return S[real].masked_fill(~keep[real], float("-inf"))  # [P, L]


def _rows_and_lse(h: Tensor, W: Tensor, b: Tensor | None, targets: Tensor) -> tuple[Tensor, Tensor]:
    """``[P]`` each position's full-softmax loss ``lse - s_t`` (:func:`softmax_ce_rows`) and
    its ``lse``, in float32: what the losses that reweigh the items already read start from."""
    rows = softmax_ce_rows(h, W, b, targets)  # [P] lse - s_t
    s_t = (h.float() * gather_rows(W.float(), targets)).sum(1)  # [P]
    if b is not None:
        s_t = s_t + gather_rows(b.float(), targets)
    return rows, rows + s_t


def history_masked_softmax_ce(h: Tensor, W: Tensor, b: Tensor | None, targets: Tensor,
                              seen: Tensor) -> Tensor:
    """Full-softmax cross-entropy over the items not in ``seen`` (:func:`seen_logits`), the
    candidates a ranking with seen items masked leaves. ``lse_unseen = lse + log(1 - p_seen)``,
    so the catalog pass is :func:`full_softmax_ce`'s; ``1 - p_seen`` is floored at ``1e-6``."""
    rows, lse = _rows_and_lse(h, W, b, targets)
    p_seen = torch.exp(seen - lse[:, None]).sum(1)  # [P]
    return (rows + torch.log1p(-p_seen.clamp(max=1 - 1e-6))).mean()


history_masked_softmax_ce.masks_history = True  # type: ignore[attr-defined]


def target_seen(inputs: Tensor, targets: Tensor) -> Tensor:
    """``[P]`` bool: at each real position (``targets > 0``), whether its target is an item the
    row has already read (a repeat)."""
    L = inputs.shape[1]
    upto = torch.ones(L, L, dtype=torch.bool, device=inputs.device).tril()  # [i, j]: j <= i
    hit = (inputs[:, None, :] == targets[:, :, None]) & (inputs > 0)[:, None, :] & upto
    return hit.any(-1)[targets > 0]


def repeat_softmax_ce(h: Tensor, W: Tensor, b: Tensor | None, targets: Tensor, seen: Tensor,
                      target_seen: Tensor, repeat: Tensor) -> Tensor:
    """Full-softmax cross-entropy where every item already read (:func:`seen_logits`, and the
    target when ``target_seen``) has the learned scalar ``repeat`` added to its logit.

    With ``Z`` the catalog's partition function and ``p`` the probability the plain softmax gives
    the items read, the biased one is ``Z (1 - p + e^repeat p)``, so the catalog pass is
    :func:`full_softmax_ce`'s and the bias costs a ``[P, L]`` sum. As ``repeat -> -inf`` this is
    :func:`history_masked_softmax_ce`; at 0, the plain softmax. Data where people never repeat
    drive it down, data of repeat purchases up."""
    rows, lse = _rows_and_lse(h, W, b, targets)
    ts = target_seen.float()
    p = torch.exp(seen - lse[:, None]).sum(1) + ts * torch.exp(-rows)  # [P]
    r = repeat.float()
    return (rows + torch.log((1 - p).clamp(min=0) + torch.exp(r) * p) - r * ts).mean()


repeat_softmax_ce.masks_history = True  # type: ignore[attr-defined]
repeat_softmax_ce.uses_repeat = True  # type: ignore[attr-defined]


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
    pos = (h * gather_rows(W, targets)).sum(-1)  # [P]
    negl = h @ gather_rows(W, neg).T  # [P, n]
    if b is not None:
        pos, negl = pos + gather_rows(b, targets), negl + gather_rows(b, neg)
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
    s_t = (h * gather_rows(W, targets)).sum(1)  # [P]
    if b is None:
        s_mean = h @ W[1:].mean(0)  # [P]
    else:  # a mean over the live items, weighted 1 / 0 (no copy of the table)
        live = (b[1:] > _EXCLUDED / 2).to(W.dtype)  # [N]
        live = live / live.sum()
        s_t = s_t + gather_rows(b, targets)
        s_mean = h @ (live @ W[1:]) + live @ b[1:]
    return ce + eps * (s_t - s_mean).float().mean()


def make_loss(name: str, *, n_items: int, negatives: int = 256, sampler: str = "uniform",
              logq: bool = True, gbce_t: float = 0.75, item_counts: Tensor | None = None,
              label_smoothing: float = 0.0, mask_history: bool = False,
              repeat_bias: bool = False) -> LossFn:
    """The loss menu behind one switch: ``softmax``, ``sampled``, ``bce`` or ``gbce``.

    A loss with ``masks_history`` set takes the ``seen`` logits of :func:`seen_logits` too; one
    with ``uses_repeat`` (``repeat_bias``: the model learns a score for items already read) also
    ``target_seen`` and the model's ``repeat`` logit."""
    if repeat_bias and (name != "softmax" or label_smoothing > 0 or mask_history):
        raise ValueError("model.repeat_bias is learned by the full softmax (train.loss = 'softmax') "
                         "without label_smoothing or train.mask_history (the mask is its -inf "
                         f"limit); got loss = {name!r}, label_smoothing = {label_smoothing}, "
                         f"mask_history = {mask_history}")
    if name == "softmax":
        if repeat_bias:
            return repeat_softmax_ce
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
    loss.uses_repeat = getattr(loss_fn, "uses_repeat", False)  # type: ignore[attr-defined]
    return loss


def real_positions(states: Tensor, targets: Tensor) -> tuple[Tensor, Tensor]:
    """Gather ``[P, D]`` states and ``[P]`` targets where the target is real (> 0)."""
    mask = targets > 0  # [B, L]
    return states[mask], targets[mask]
