"""Score every item for a batch of users, in item chunks so memory stays bounded.

One engine serves both the evaluator (ranks of targets) and the recommender (top-k lists), so what
is measured is what is served. Order is by score, ties broken by the lower item index, in both.
"""

from __future__ import annotations

import torch
from torch import Tensor

NEG_INF = float("-inf")


def _count_above(a: Tensor, b: Tensor, out: Tensor) -> Tensor:
    """How many entries of ``a - b`` (broadcast to ``out``'s shape) are > 0, per last-dim row,
    as float (NaN where ``b`` is NaN).

    ``sub`` into a reused buffer, then ``clamp`` + ``sign`` + ``sum``, runs several times faster on
    CPU than summing a boolean comparison (which PyTorch first copies to int64).
    """
    return torch.sub(a, b, out=out).clamp_(min=0).sign_().sum(-1)


def _mask_chunk(s: Tensor, start: int, seen: Tensor | None, seen_bias: float | None = None) -> None:
    """Set padding (index 0) and ``seen`` items (``[B, H]``, 0-padded) to -inf in chunk ``s``;
    with ``seen_bias``, add it to each seen item's score once instead (repeats in ``seen`` too)."""
    if seen is not None:
        local = seen - start  # [B, H]
        ok = (seen > 0) & (local >= 0) & (local < s.shape[1])
        idx = torch.where(ok, local, 0)  # misses land on column 0, restored below
        col0 = s[:, 0].clone()
        if seen_bias is None:
            s.scatter_(1, idx, NEG_INF)
        else:  # values read before any write: an item listed twice gets the bias once
            s.scatter_(1, idx, s.gather(1, idx) + seen_bias)
        shift = NEG_INF if seen_bias is None else seen_bias
        s[:, 0] = torch.where((ok & (local == 0)).any(1), col0 + shift, col0)
    if start == 0:
        s[:, 0] = NEG_INF


def _topk_exact(s: Tensor, k: int) -> tuple[Tensor, Tensor]:
    """Top ``k`` of ``s [B, C]`` by (score desc, column asc): ``(scores, columns)``, both ``[B, k]``.

    ``torch.topk`` alone may pick any of several tied items at the boundary; rows with such ties
    (the ``k+1``-th best score equals the ``k``-th) take the lowest columns, so results do not
    depend on batch shape or chunking.
    """
    C = s.shape[1]
    k = min(k, C)
    vals, pos = torch.topk(s, min(k + 1, C), dim=1)  # [B, k+1]: one more, to see boundary ties
    if vals.shape[1] > k:
        tie_rows = (vals[:, k - 1] == vals[:, k]).nonzero().squeeze(1)
        vals, pos = vals[:, :k], pos[:, :k]
        if len(tie_rows):
            ss, vv = s[tie_rows], vals[tie_rows, k - 1 :]
            tied = ss == vv
            need = k - (ss > vv).sum(1, keepdim=True)
            take = (ss > vv) | (tied & (tied.cumsum(1) <= need))  # exactly k per row
            pos[tie_rows] = take.nonzero()[:, 1].view(-1, k)
            vals[tie_rows] = ss.gather(1, pos[tie_rows])
    if k > 1 and not bool((vals[:, :-1] > vals[:, 1:]).all()):  # ties inside: order them
        o = torch.argsort(pos, dim=1)  # column order first ...
        pos, vals = pos.gather(1, o), vals.gather(1, o)
        o = torch.sort(vals, dim=1, descending=True, stable=True).indices  # ... then by score
        vals, pos = vals.gather(1, o), pos.gather(1, o)
    return vals, pos


def transposed(W: Tensor) -> Tensor:
    """``W [N+1, D]`` as a contiguous ``[D, N+1]`` copy: the ``WT`` of :func:`rank_and_topk`."""
    return W.detach().T.contiguous()


@torch.no_grad()
def rank_and_topk(
    q: Tensor,
    W: Tensor,
    b: Tensor | None,
    *,
    seen: Tensor | None = None,
    targets: Tensor | None = None,
    k: int = 0,
    chunk: int = 262_144,
    WT: Tensor | None = None,
    seen_bias: float | None = None,
) -> tuple[Tensor | None, Tensor | None, Tensor | None]:
    """Ranks of ``targets`` and the top ``k`` items for query vectors ``q [B, D]``.

    ``W [N+1, D]``/``b``: the item table. ``seen [B, H]``: items to mask (0 = none), or, with
    ``seen_bias`` (a model's learned repeat score), to score ``seen_bias`` higher. ``targets
    [B, T]``: 0-padded target indices. Returns ``ranks [B, T]`` (float; ``inf`` for padding and
    masked targets), ``top_scores [B, k]`` and ``top_items [B, k]`` (item index 0 with score -inf
    fills rows that have fewer than ``k`` rankable items). ``WT``: optionally the same table
    transposed and contiguous (``[D, N+1]``, :func:`transposed`), which scores small batches
    several times faster (a matrix-vector product streams rows instead of striding columns);
    evaluation, recommendation and serving all pass it.
    """
    B = q.shape[0]
    n = W.shape[0]
    dev = q.device
    # a [B, C] block of at most 4M scores (16 MiB) reuses freed memory instead of fresh pages
    chunk = max(256, min(chunk, (1 << 22) // max(B, 1)))
    t_score = None
    if targets is not None:
        tgt_scores = (q[:, None, :] * W[targets]).sum(-1)  # [B, T]
        if b is not None:
            tgt_scores = tgt_scores + b[targets]
        rankable = targets > 0
        if seen is not None:
            again = (targets[:, :, None] == seen[:, None, :]).any(-1)  # [B, T]
            if seen_bias is None:
                rankable &= ~again
            else:
                tgt_scores = tgt_scores + again * seen_bias
        t_score = torch.where(rankable, tgt_scores, torch.full_like(tgt_scores, float("nan")))
        counts = torch.zeros(targets.shape, dtype=torch.float64, device=dev)
    if targets is not None:  # reused by every count
        scratch3 = torch.empty(B, targets.shape[1], min(chunk, n), device=dev, dtype=q.dtype)
    scores_buf = torch.empty(B * min(chunk, n), device=dev, dtype=q.dtype)
    best_s = torch.empty(B, 0, device=dev)
    best_i = torch.empty(B, 0, dtype=torch.long, device=dev)
    for start in range(0, n, chunk):
        stop = min(start + chunk, n)
        s = scores_buf[: B * (stop - start)].view(B, stop - start)  # reused: no fresh pages
        Wc = W[start:stop].T if WT is None else WT[:, start:stop]  # [D, C]
        if b is None:
            torch.mm(q, Wc, out=s)  # [B, C]
        else:
            torch.addmm(b[start:stop], q, Wc, out=s)
        s.nan_to_num_(nan=NEG_INF)  # a diverged model's NaN scores are never ranked above anything
        _mask_chunk(s, start, seen, seen_bias)
        if t_score is not None:
            # a target's reference score is its own entry of this very matmul when it lies in the
            # chunk, so rounding can never rank a target above or below itself
            mine = (targets >= start) & (targets < stop) & ~torch.isnan(t_score)
            if mine.any():
                bi, ti = mine.nonzero(as_tuple=True)
                t_score[bi, ti] = s[bi, targets[bi, ti] - start]
            ts = t_score[:, :, None]  # [B, T, 1]
            buf = scratch3[:, :, : s.shape[1]]
            above = _count_above(s[:, None, :], ts, buf)  # [B, T]
            at_least = s.shape[1] - _count_above(ts, s[:, None, :], buf)
            tied = at_least - above  # includes the target itself if it is in this chunk
            in_chunk = (targets >= start) & (targets < stop)
            counts += above
            extra = (tied - in_chunk.double()) > 0  # other items tied with a target: rare
            if extra.any():
                bi, ti = extra.nonzero(as_tuple=True)
                idx = torch.arange(start, stop, device=dev)
                counts[bi, ti] += ((s[bi] == ts[bi, ti]) & (idx < targets[bi, ti, None])).sum(-1).double()
        if k > 0:
            cs, cpos = _topk_exact(s, k)  # this chunk's best k
            ci = cpos + start
            if best_i.shape[1]:
                cand_s, cand_i = torch.cat([best_s, cs], 1), torch.cat([best_i, ci], 1)  # [B, 2k]
                order = torch.argsort(cand_i, dim=1)  # item order, so ties go to lower items
                cand_s, cand_i = cand_s.gather(1, order), cand_i.gather(1, order)
                cs, cpos = _topk_exact(cand_s, k)
                ci = cand_i.gather(1, cpos)
            best_s, best_i = cs, ci
    ranks = None
    if t_score is not None:
        ranks = torch.where(torch.isnan(t_score), torch.full_like(counts, float("inf")), counts)
    if k > 0:
        best_i = torch.where(torch.isneginf(best_s), torch.zeros_like(best_i), best_i)
        return ranks, best_s, best_i
    return ranks, None, None


def history_batch(
    items, starts, ends, max_len: int, device: torch.device | str, mask_seen: bool
) -> tuple[Tensor, Tensor | None]:
    """Model input (the last ``max_len`` items, left-padded) and the items to mask (the whole
    history) for CSR ranges ``[starts, ends)`` of the flat index array ``items``."""
    from seqrec.data.batching import left_pad, pad_ragged

    hist = torch.from_numpy(left_pad(items, starts, ends, max_len)).to(device)
    seen = torch.from_numpy(pad_ragged(items, starts, ends)).to(device) if mask_seen else None
    return hist, seen


def history_times(times, starts, ends, max_len: int, device: torch.device | str) -> Tensor:
    """Timestamps aligned with :func:`history_batch`'s model input (0 where padding)."""
    from seqrec.data.batching import left_pad

    return torch.from_numpy(left_pad(times, starts, ends, max_len)).to(device)
