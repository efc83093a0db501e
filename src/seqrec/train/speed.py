"""What makes training fast and how fast it is: precision, compilation, batch prefetching, and
FLOP accounting against the machine's measured matrix-multiply rate."""

from __future__ import annotations

import contextlib
import platform
import queue
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import torch
from torch import nn

from seqrec.matmul import onednn_product

T = TypeVar("T")


def autocast_dtype(precision: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype for ``precision`` (``auto``/``fp32``/``bf16``) on ``device``, or None.

    ``auto`` uses bf16 only on CUDA devices that support it, so a CPU run's numbers never depend on
    which CPU it landed on. CPUs without native bf16 matrix units run bf16 matmuls several times
    slower than fp32; CPUs with them (AVX512-BF16, AMX) run them faster: choose ``bf16`` there
    (measured on a 2-core AMD EPYC with AVX512-BF16: matmuls 2.8x, a Beauty SASRec epoch 1.5x,
    the same validation curve).
    """
    if precision == "fp32":
        return None
    if precision == "bf16":
        return torch.bfloat16
    if precision != "auto":
        raise ValueError(f"precision must be auto, fp32 or bf16, got {precision!r}")
    if device.type == "cuda" and torch.cuda.is_bf16_supported():
        return torch.bfloat16
    return None


def autocast(device: torch.device, dtype: torch.dtype | None) -> contextlib.AbstractContextManager:
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


def maybe_compile(model: nn.Module, enabled: bool) -> None:
    """Compile the model's ``encode`` in place (weights and state_dict keys stay as they are)."""
    if enabled:
        model.encode = torch.compile(model.encode, dynamic=True)  # type: ignore[method-assign]


def processor_name() -> str:
    """The processor's model name as the kernel reports it (``platform`` only says ``x86_64``):
    the matrix-multiply ceiling below differs from one host of a cloud VM to the next."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def device_name(device: torch.device) -> str:
    """What a run's ceiling was measured on: the card's name on CUDA, else :func:`processor_name`."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return processor_name()


def measure_matmul_rate(device: torch.device, dtype: torch.dtype | None = None, n: int | None = None,
                        max_product_s: float = 0.25) -> float:
    """Best-of-4 GFLOP/s of an ``n x n`` matrix product on ``device``, the faster of ``torch.mm``
    (into one output allocated beforehand, so no page fault is timed) and, on a CPU, oneDNN's
    product (see :func:`_best_product_seconds`): the ceiling FLOPs are compared with.

    ``n`` defaults to 2,048 on a CPU and 8,192 on CUDA, where a 2,048 product lasts tens of
    microseconds and times the launch and the synchronisation more than the card's rate.

    A ``256 x 256`` product first estimates the rate; where an ``n x n`` one would take over a
    second, the size shrinks to one that takes about ``max_product_s``. bf16 on a CPU without bf16
    units ran at 0.9-1.4 GFLOP/s (a 2-core AVX2 EPYC): there the five products of 2,048 (one
    untimed) took one to one and a half minutes at the start of every run."""
    dtype = dtype or torch.float32
    n = n or (8192 if device.type == "cuda" else 2048)
    probe = _best_product_seconds(256, device, dtype, repeats=2)
    rate = 2 * 256**3 / probe
    if 2 * n**3 / rate > 1.0:
        n = max(256, int((rate * max_product_s / 2) ** (1 / 3)) // 64 * 64)
    return 2 * n**3 / _best_product_seconds(n, device, dtype) / 1e9


def _best_product_seconds(n: int, device: torch.device, dtype: torch.dtype, repeats: int = 4) -> float:
    """The fastest of ``repeats`` timed ``n x n`` products (after one untimed), the best over
    ``torch.mm`` and, on a CPU, oneDNN's product (:mod:`seqrec.matmul`), which on an AVX-512 AMD
    processor runs twice as fast as ``torch.mm``'s MKL: a ceiling from ``torch.mm`` alone would
    put every epoch twice as near its floor as it is."""
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    c = torch.mm(a, b)
    products = [lambda: torch.mm(a, b, out=c)]
    onednn = onednn_product(device, dtype)
    if onednn is not None:
        products.append(lambda: onednn(a, b))
    best = float("inf")
    for product in products:
        product()
        for _ in range(repeats):
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            t = time.perf_counter()
            out = product()
            (c if out is None else out)[0, 0].item()
            best = min(best, time.perf_counter() - t)
    return best


def dense_params(model: nn.Module) -> int:
    """Parameters outside embedding tables (those are looked up, not multiplied)."""
    emb = {id(p) for m in model.modules() if isinstance(m, nn.Embedding) for p in m.parameters()}
    return sum(p.numel() for p in model.parameters() if id(p) not in emb)


def encoder_flops(model: nn.Module, tokens: int, width: int) -> float:
    """Forward + backward FLOPs of the sequence encoder over ``tokens`` (padded) positions:
    6 x dense parameters per token, plus the model's attention term (``attention_flops``)."""
    extra = getattr(model, "attention_flops", None)
    per_token = 6 * dense_params(model) + (extra(width) if extra else 0)
    return float(per_token) * tokens


def loss_flops(loss: str, positions: int, n_items: int, dim: int, negatives: int) -> float:
    """Forward + backward matmul FLOPs of the loss: scores (2PKD), their gradient with respect to
    the states (2PKD) and to the item vectors (2PKD), with K = every item or the negatives."""
    k = n_items if loss == "softmax" else negatives + 1
    return 6.0 * positions * k * dim


def prefetch(items: Iterable[T], make: Callable[[T], Any], depth: int = 2) -> Iterator[Any]:
    """``make(item)`` for each item, computed ``depth`` ahead in a background thread, so batch
    preparation overlaps the model's work (numpy and copies release the GIL). Order is kept;
    an exception in ``make`` is raised in the consumer."""
    q: queue.Queue = queue.Queue(maxsize=depth)
    done = object()
    stop = threading.Event()

    def worker() -> None:
        try:
            for it in items:
                if stop.is_set():
                    return
                q.put((True, make(it)))
        except BaseException as e:  # noqa: BLE001 - handed to the consumer
            q.put((False, e))
        q.put((True, done))

    th = threading.Thread(target=worker, daemon=True)
    th.start()
    try:
        while True:
            ok, value = q.get()
            if not ok:
                raise value
            if value is done:
                return
            yield value
    finally:
        stop.set()
        while th.is_alive():  # unblock a worker waiting on a full queue
            try:
                q.get_nowait()
            except queue.Empty:
                pass
            th.join(timeout=0.01)
