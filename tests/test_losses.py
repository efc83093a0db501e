"""The chunked full-softmax kernel equals the plain PyTorch reference, values and gradients."""

import pytest
import torch

from seqrec.chunked_softmax import _ChunkedSoftmaxCE, _chunk_size, full_softmax_ce, softmax_ce_reference

from conftest import repeat_window_case, window_positions


@pytest.mark.parametrize("with_bias", [False, True])
@pytest.mark.parametrize("scale", [1.0, 30.0])  # 30: logits hundreds of nats apart
def test_matches_reference(with_bias, scale, product_path):
    g = torch.Generator().manual_seed(0)
    P, N, D = 37, 1000, 16
    h = (torch.randn(P, D, generator=g) * scale).requires_grad_()
    W = torch.randn(N + 1, D, generator=g).requires_grad_()
    b = torch.randn(N + 1, generator=g).requires_grad_() if with_bias else None
    t = torch.randint(1, N + 1, (P,), generator=g)
    ref = softmax_ce_reference(h, W, b, t)
    grads_ref = torch.autograd.grad(ref, [x for x in (h, W, b) if x is not None])
    got = full_softmax_ce(h, W, b, t)
    grads = torch.autograd.grad(got, [x for x in (h, W, b) if x is not None])
    assert got.item() == pytest.approx(ref.item(), rel=1e-5)
    # logits of hundreds of nats: float32 steps by 3e-5 there, and the kernel's base-2 logits
    # (h scaled by log2 e) round differently from the reference's, so p differs by ~1e-4
    rtol = 1e-4 if scale == 1.0 else 3e-4
    for a, r in zip(grads, grads_ref):
        torch.testing.assert_close(a, r, rtol=rtol, atol=1e-6)
    assert grads[1][0].abs().sum() == 0  # the padding row gets no gradient


def test_gradcheck_small_chunks():
    g = torch.Generator().manual_seed(1)
    h = torch.randn(5, 3, dtype=torch.double, generator=g, requires_grad=True)
    W = torch.randn(20, 3, dtype=torch.double, generator=g, requires_grad=True)
    b = torch.randn(20, dtype=torch.double, generator=g, requires_grad=True)
    t = torch.randint(1, 20, (5,), generator=g)
    # stored blocks are consumed by the first backward; a repeated backward recomputes them
    assert torch.autograd.gradcheck(lambda h, W, b: _ChunkedSoftmaxCE.apply(h, W, b, t, 4), (h, W, b),
                                    nondet_tol=1e-10)



def test_two_live_losses_and_row_weights_match_reference(monkeypatch, product_path):
    """Through ``torch.mm``, stored blocks live in pooled buffers: two losses alive at once (both
    forward passes before either backward pass) never share one, a buffer given back is reused;
    through oneDNN, whose products return blocks of their own, the pool is left alone. Either
    way the sum over the blocks that the forward pass already takes (E @ W) is right for any
    per-row upstream weights."""
    import seqrec.chunked_softmax as kernel

    pool = kernel._BlockPool()
    monkeypatch.setattr(kernel, "_POOL", pool)
    g = torch.Generator().manual_seed(5)
    cases = []
    for P in (29, 41):
        h = torch.randn(P, 8, generator=g).requires_grad_()
        W = torch.randn(501, 8, generator=g).requires_grad_()
        t = torch.randint(1, 501, (P,), generator=g)
        w = torch.rand(P, generator=g)  # per-row weights: the upstream gradient is not uniform
        cases.append((h, W, t, w))
    rows = [kernel.softmax_ce_rows(h, W, None, t) for h, W, t, _ in cases]  # both alive
    assert pool.free == []
    for (h, W, t, w), r in reversed(list(zip(cases, rows))):
        grads = torch.autograd.grad((r * w).sum(), [h, W])
        ref_rows = torch.nn.functional.cross_entropy(h @ W[1:].T, t - 1, reduction="none")
        grads_ref = torch.autograd.grad((ref_rows * w).sum(), [h, W])
        torch.testing.assert_close(r.detach(), ref_rows.detach(), rtol=1e-5, atol=1e-5)
        for a, b in zip(grads, grads_ref):
            torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)
    if product_path == "oneDNN":
        assert pool.free == []
        return
    assert [b.numel() for b in pool.free] == [41 * 500, 29 * 500]  # given back
    h, W, t, _ = cases[0]
    r = kernel.softmax_ce_rows(h, W, None, t)  # 29 rows: takes the smaller buffer
    assert [b.numel() for b in pool.free] == [41 * 500]
    r.sum().backward()
    assert len(pool.free) == 2


def test_no_blocks_stored_without_gradients(monkeypatch):
    """Under ``torch.no_grad`` (or for inputs that need no gradient) nothing is kept for a
    backward pass: no pooled buffer is taken, and the value is the reference's."""
    import seqrec.chunked_softmax as kernel

    def fail(*a, **k):
        raise AssertionError("a buffer was taken without gradients")

    monkeypatch.setattr(kernel._POOL, "take", fail)
    g = torch.Generator().manual_seed(6)
    h, W = torch.randn(13, 4, generator=g), torch.randn(101, 4, generator=g)
    t = torch.randint(1, 101, (13,), generator=g)
    with torch.no_grad():
        got = full_softmax_ce(h.requires_grad_(), W, None, t)
    assert got.item() == pytest.approx(softmax_ce_reference(h, W, None, t).item(), rel=1e-5)
    assert full_softmax_ce(h.detach(), W, None, t).item() == pytest.approx(got.item(), rel=1e-6)

def test_label_smoothing_matches_pytorch():
    from seqrec.losses import smoothed_softmax_ce

    g = torch.Generator().manual_seed(2)
    h = torch.randn(11, 8, generator=g, requires_grad=True)
    W = torch.randn(301, 8, generator=g, requires_grad=True)
    t = torch.randint(1, 301, (11,), generator=g)
    got = smoothed_softmax_ce(h, W, None, t, 0.2)
    ref = torch.nn.functional.cross_entropy(h @ W[1:].T, t - 1, label_smoothing=0.2)
    assert got.item() == pytest.approx(ref.item(), rel=1e-5)
    ga = torch.autograd.grad(got, [h, W])
    gr = torch.autograd.grad(ref, [h, W])
    for a, r in zip(ga, gr):
        torch.testing.assert_close(a, r, rtol=1e-4, atol=1e-6)


def test_loose_bound_gives_finite_exact_gradients():
    """The Cauchy-Schwarz bound can sit ~90 nats above every logit (an item vector orthogonal to
    the query but long): the shifted sum is then a denormal, and dividing by it overflowed to
    inf (0 * inf = NaN gradients, the divergence seen when GRU4Rec's norms grew on Beauty)."""
    h = torch.tensor([[10.0, 0.0], [9.0, 0.5]], requires_grad=True)
    W = torch.tensor([[0.0, 0.0], [0.0, 10.0], [1.0, 0.0], [0.5, 0.1]], requires_grad=True)
    targets = torch.tensor([2, 3])
    loss = full_softmax_ce(h, W, None, targets)
    loss.backward()
    gh, gW = h.grad.clone(), W.grad.clone()
    h.grad, W.grad = None, None
    ref = softmax_ce_reference(h, W, None, targets)
    ref.backward()
    assert torch.isfinite(gh).all() and torch.isfinite(gW).all()
    torch.testing.assert_close(loss, ref)
    torch.testing.assert_close(gh, h.grad)
    torch.testing.assert_close(gW, W.grad)


def _far_bound_case(g: torch.Generator) -> tuple[torch.Tensor, ...]:
    """Queries along the first axis and one long item along the second: the Cauchy-Schwarz
    bound sits ~1,000 nats above every logit, so even the shift floor (bound - 60) underflows."""
    P, N, D = 23, 300, 8
    h = torch.randn(P, D, generator=g)
    h[:, 0] = 5.0
    h[:, 1] = 0.0
    W = torch.randn(N + 1, D, generator=g)
    W[:, 1] = 0.0
    W[7] = 0.0
    W[7, 1] = 200.0
    return h.requires_grad_(), W.requires_grad_(), torch.randint(1, N + 1, (P,), generator=g)


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
@pytest.mark.parametrize("path", ["fallback", "recompute"])
def test_fallback_and_recomputed_blocks_match_reference(precision, path, monkeypatch):
    """The exact online log-sum-exp (a shift that underflows) and the backward pass that
    recomputes blocks instead of storing them (too many to keep) give the reference's value and
    gradients; in bf16 the recomputed blocks are shifted by the rounded lse and corrected."""
    import seqrec.chunked_softmax as kernel

    g = torch.Generator().manual_seed(4)
    if path == "fallback":
        h, W, t = _far_bound_case(g)
    else:
        monkeypatch.setattr(kernel, "_STORE_LIMIT", 0)
        # lse 23-41, where bf16 steps by 0.125-0.25: uncorrected, p would be off by up to 13%
        h = (torch.randn(23, 8, generator=g) * 4).requires_grad_()
        W = torch.randn(301, 8, generator=g).requires_grad_()
        t = torch.randint(1, 301, (23,), generator=g)
    ref = softmax_ce_reference(h, W, None, t)
    grads_ref = torch.autograd.grad(ref, [h, W])
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16"):
        # item chunks of 16: the first chunk's maximum is not the row's
        got = _ChunkedSoftmaxCE.apply(h, W, None, t, 16, kernel._matmul_dtype(h.device)).mean()
    grads = torch.autograd.grad(got, [h, W])
    tol = 1e-5 if precision == "fp32" else 2e-2
    assert got.item() == pytest.approx(ref.item(), rel=tol)
    for a, r in zip(grads, grads_ref):
        assert torch.isfinite(a).all()
        assert (a - r).norm() <= tol * r.norm()


def test_far_bound_takes_the_exact_fallback():
    """The case above really underflows the shifted sum (so the fallback is what is tested)."""
    from seqrec.chunked_softmax import _MAX_EXP

    h, W, t = _far_bound_case(torch.Generator().manual_seed(4))
    with torch.no_grad():
        bound = h.norm(dim=1) * W[1:].norm(dim=1).max()
        top = (h @ W[1:].T).max(1).values
    assert bool(((bound - _MAX_EXP) - top > 120).all())


@pytest.mark.parametrize("kind", ["softmax", "smoothed", "sampled", "bce"])
def test_excluded_items_are_no_candidates(kind):
    """The cold-item protocol's loss: held-out rows neither count as negatives nor get gradient;
    for the full softmax it equals the loss over the catalog without them."""
    from seqrec.losses import excluding, make_loss

    g = torch.Generator().manual_seed(2)
    P, N, D = 23, 300, 8
    h = torch.randn(P, D, generator=g, requires_grad=True)
    W = torch.randn(N + 1, D, generator=g, requires_grad=True)
    held = torch.arange(5, N + 1, 7)  # every 7th item from 5 on
    keep = torch.ones(N + 1, dtype=torch.bool)
    keep[held] = False
    t = torch.randint(1, N + 1, (4 * P,), generator=g)
    t = t[keep[t]][:P]  # training targets are never held-out items
    torch.manual_seed(0)
    smoothing = 0.1 if kind == "smoothed" else 0.0
    base = make_loss("softmax" if kind == "smoothed" else kind, n_items=N, negatives=64,
                     label_smoothing=smoothing)
    loss = excluding(base, held)(h, W, None, t)
    (gW,) = torch.autograd.grad(loss, [W])
    assert gW[held].abs().sum() == 0
    assert gW[keep].abs().sum() > 0
    if kind in ("softmax", "smoothed"):  # equal to the loss over the catalog without them
        new_index = torch.cumsum(keep.long(), 0) - 1  # row -> row in the reduced table
        ref = make_loss("softmax", n_items=N, label_smoothing=smoothing)(h, W[keep], None,
                                                                          new_index[t])
        assert loss.item() == pytest.approx(ref.item(), rel=1e-5)


@pytest.mark.parametrize("with_bias", [False, True])
def test_history_masked_softmax_equals_softmax_without_seen_items(with_bias):
    """``train.mask_history``: at each real position the candidates are the catalog less the
    distinct items read so far in the row (the target stays one); values and gradients equal a
    plain cross-entropy with those logits set to -inf. Rows hold left padding and repeats."""
    from seqrec.losses import (
        history_masked_softmax_ce,
        make_loss,
        real_positions,
        seen_logits,
    )

    x, y, states, W, b, N = repeat_window_case(3, with_bias)
    params = [p for p in (states, W, b) if p is not None]
    assert make_loss("softmax", n_items=N, mask_history=True) is history_masked_softmax_ce

    h, t = real_positions(states, y)
    got = history_masked_softmax_ce(h, W, b, t, seen=seen_logits(states, x, y, W, b))
    grads = torch.autograd.grad(got, params)

    rows = []
    for logits, had, target in window_positions(x, y, states, W, b, N):
        out = had.clone()
        out[0] = True
        out[target] = False
        rows.append(torch.logsumexp(logits.masked_fill(out, float("-inf")), 0) - logits[target])
    ref = torch.stack(rows).mean()
    grads_ref = torch.autograd.grad(ref, params)
    assert got.item() == pytest.approx(ref.item(), rel=1e-5)
    for a, r in zip(grads, grads_ref):
        torch.testing.assert_close(a, r, rtol=1e-4, atol=1e-6)
    assert got.item() < full_softmax_ce(h, W, b, t).item()  # fewer candidates, smaller loss


@pytest.mark.parametrize("with_bias", [False, True])
@pytest.mark.parametrize("scale", [1.0, 30.0])
def test_bf16_autocast_matches_reference(with_bias, scale, product_path):
    """Under bf16 autocast (``train.precision = bf16``) only the matrix products run in bf16:
    value and gradients come back float32 and close to the float32 reference. The backward
    pass, which autocast does not cover, once mixed a stored bf16 block with a float32 table."""
    g = torch.Generator().manual_seed(3)
    P, N, D = 37, 1000, 16
    h = (torch.randn(P, D, generator=g) * scale / 4).requires_grad_()
    W = torch.randn(N + 1, D, generator=g).requires_grad_()
    b = torch.randn(N + 1, generator=g).requires_grad_() if with_bias else None
    t = torch.randint(1, N + 1, (P,), generator=g)
    params = [x for x in (h, W, b) if x is not None]
    ref = softmax_ce_reference(h, W, b, t)
    grads_ref = torch.autograd.grad(ref, params)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = full_softmax_ce(h, W, b, t)
    grads = torch.autograd.grad(got, params)
    assert got.dtype == torch.float32 and all(g_.dtype == torch.float32 for g_ in grads)
    # bf16 keeps 8 significant bits, so a logit near 50 (scale 30) is off by ~0.2: compare
    # against the gradient's own size
    tol = 2e-2 if scale == 1.0 else 5e-2
    assert got.item() == pytest.approx(ref.item(), rel=tol)
    for a, r in zip(grads, grads_ref):
        assert (a - r).norm() <= tol * r.norm()
    assert grads[1][0].abs().sum() == 0


def test_chunks_are_cache_sized_on_cpu_and_whole_catalogs_on_cuda():
    """A CPU keeps each [P, C] block near 2 MiB; a GPU, with no such cache and a launch per
    product, takes ML-1M's catalog in one block (64 x 200 positions x 3,706 items)."""
    P, n = 64 * 200, 3707
    assert _chunk_size(P, n) == 256 and _chunk_size(P, n, torch.device("cpu")) == 256
    assert _chunk_size(P, n, torch.device("cuda")) == n
    assert _chunk_size(750, 12102) * 750 * 4 <= 2 * 2**20 + 256 * 750 * 4
    assert _chunk_size(2**17, 10**6, torch.device("cuda")) == 1024  # 2^27 entries a block
    assert _chunk_size(10**6, 10**6, torch.device("cuda")) == 256  # never fewer items than this
