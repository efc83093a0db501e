"""CPU products through oneDNN (seqrec.matmul): the same values and gradients as PyTorch's own,
taken where they should be, and left where they should not."""

import pytest
import torch
import torch.nn.functional as F

from seqrec import matmul
from seqrec.nn import Linear
from seqrec.train import speed

pytestmark = pytest.mark.skipif(matmul.onednn_product(torch.device("cpu"), torch.float32) is None,
                                reason="this PyTorch build has no oneDNN product")


@pytest.fixture
def calls(monkeypatch):
    """Counts the oneDNN products taken (the operator wrapped, its results unchanged)."""
    n = []
    op = matmul._LINEAR

    def counted(*args):
        n.append(args[0].shape)
        return op(*args)
    monkeypatch.setattr(matmul, "_LINEAR", counted)
    monkeypatch.setattr(matmul, "_enabled", True)
    return n


@pytest.mark.parametrize("with_bias", [False, True])
def test_mm_nt_equals_torch_product(calls, with_bias):
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(300, 64, generator=g), torch.randn(700, 64, generator=g)
    bias = torch.randn(700, generator=g) if with_bias else None
    ref = a @ b.T + (0 if bias is None else bias)
    torch.testing.assert_close(matmul.mm_nt(a, b, bias), ref, rtol=1e-5, atol=1e-5)
    # transposed and sliced views, as the full-softmax kernel passes them
    big = torch.randn(500, 300, generator=g)
    torch.testing.assert_close(matmul.mm_nt(big[:, :64].T.contiguous().T[:, :64], b[100:600]),
                               big[:, :64] @ b[100:600].T, rtol=1e-5, atol=1e-5)
    e = torch.rand(200, 700, generator=g)
    torch.testing.assert_close(matmul.mm_nt(a.T.contiguous()[:, :200], e.T), (e.T @ a[:200]).T,
                               rtol=1e-5, atol=1e-4)
    assert len(calls) == 3


def test_bf16_and_the_switch(calls):
    g = torch.Generator().manual_seed(1)
    a, b = torch.randn(128, 256, generator=g), torch.randn(512, 256, generator=g)
    got = matmul.mm_nt(a.bfloat16(), b.bfloat16())
    assert got.dtype == torch.bfloat16 and len(calls) == 1
    torch.testing.assert_close(got.float(), a.bfloat16().float() @ b.bfloat16().float().T,
                               rtol=2e-2, atol=0.5)
    before = matmul.use_onednn(False)
    try:
        assert not matmul.onednn_active()
        assert torch.equal(matmul.mm_nt(a, b), torch.mm(a, b.T))  # torch.mm itself
        assert len(calls) == 1
    finally:
        matmul.use_onednn(before)
    assert matmul.onednn_active()
    matmul.mm_nt(a.double(), b.double())  # float64: never oneDNN's
    assert len(calls) == 1


@pytest.mark.parametrize("d_in, d_out", [(64, 64), (64, 192), (256, 1024), (1024, 256)])
@pytest.mark.parametrize("with_bias", [False, True])
def test_linear_matches_nn_linear(calls, d_in, d_out, with_bias):
    """Forward and every gradient equal ``F.linear``'s, on 3-D inputs, for narrow layers (whose
    weight gradient stays MKL's) and wide ones."""
    torch.manual_seed(2)
    layer = Linear(d_in, d_out, bias=with_bias)
    x = torch.randn(8, 80, d_in, requires_grad=True)
    y = layer(x)
    g = torch.randn_like(y)
    params = [x, layer.weight] + ([layer.bias] if with_bias else [])
    grads = torch.autograd.grad(y, params, g)
    assert len(calls) == (3 if min(d_in, d_out) >= 256 else 2)  # forward, d x, and d W if wide
    y_ref = F.linear(x, layer.weight, layer.bias)
    grads_ref = torch.autograd.grad(y_ref, params, g)
    torch.testing.assert_close(y, y_ref, rtol=1e-5, atol=1e-5)
    for got, ref in zip(grads, grads_ref):
        torch.testing.assert_close(got, ref, rtol=1e-4, atol=1e-4)
    # the same module as nn.Linear for everything else: parameters, state-dict keys
    assert isinstance(layer, torch.nn.Linear)
    assert list(layer.state_dict()) == list(torch.nn.Linear(d_in, d_out, bias=with_bias).state_dict())


def test_small_products_stay_pytorch(calls):
    """Below about 2 M multiply-adds a oneDNN call's fixed cost outweighs its speed: one served
    query's layers ([50 positions, 64] -> 192) and its scores go through PyTorch's own call."""
    layer = Linear(64, 192)
    x = torch.randn(1, 50, 64)
    torch.testing.assert_close(layer(x), F.linear(x, layer.weight, layer.bias))
    torch.testing.assert_close(matmul.mm_nt(x[0], layer.weight), x[0] @ layer.weight.T)
    assert calls == []
    layer(torch.randn(4, 50, 64))  # 2.5 M
    assert len(calls) == 1


def test_linear_leaves_autocast_to_pytorch(calls):
    layer = Linear(64, 64)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = layer(torch.randn(10, 64))
    assert y.dtype == torch.bfloat16 and calls == []


def test_ceiling_is_the_faster_of_torch_mm_and_onednn(monkeypatch):
    """The matmul ceiling times oneDNN's product as well as ``torch.mm`` and keeps the faster,
    whether or not training uses oneDNN: a ceiling from the slower path would flatter the
    ratio."""
    timed = []
    real = matmul.onednn_product(torch.device("cpu"), torch.float32)

    def product(device, dtype):
        def f(a, b):
            timed.append(a.shape)
            return real(a, b)
        return f
    monkeypatch.setattr(speed, "onednn_product", product)
    monkeypatch.setattr(matmul, "_enabled", False)
    speed._best_product_seconds(128, torch.device("cpu"), torch.float32, repeats=3)
    assert len(timed) == 4  # one untimed, three timed
    assert speed.measure_matmul_rate(torch.device("cpu"), n=256) > 0.1


def test_an_operator_that_fails_its_check_is_not_used(caplog):
    """The oneDNN operator is private to PyTorch: one that raises or computes something else on
    the import-time check is dropped (training then goes through ``torch.mm``), with a warning."""
    def raises(*args):
        raise RuntimeError("unknown overload")

    def wrong(a, b, bias, *rest):
        return a @ b.T  # no bias

    assert matmul._checked(raises) is None
    assert matmul._checked(wrong) is None
    assert sum("oneDNN products are off" in r.message for r in caplog.records) == 2
    assert matmul._checked(matmul._LINEAR) is matmul._LINEAR
