"""Shared fixtures. Real data comes from the data directory (``SEQREC_DATA_DIR``, else
``../shared/data`` beside the project); tests that need it skip with the reason when it is absent."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]


def find_data_dir() -> Path | None:
    env = os.environ.get("SEQREC_DATA_DIR")
    for cand in ([Path(env)] if env else []) + [ROOT.parent / "shared" / "data"]:
        if (cand / "ml-100k" / "u.data").exists():
            return cand
    return None


DATA_DIR = find_data_dir()
needs_data = pytest.mark.skipif(
    DATA_DIR is None,
    reason="real data not found: set SEQREC_DATA_DIR to a folder holding ml-100k/u.data "
           "(CI uses ../shared/data)",
)


@pytest.fixture(params=["torch.mm", "oneDNN"])
def product_path(request, monkeypatch) -> str:
    """The test runs twice: CPU products through ``torch.mm``, then through oneDNN
    (:mod:`seqrec.matmul`; skipped where this PyTorch build has none)."""
    from seqrec import matmul

    if request.param == "oneDNN" and matmul.onednn_product(torch.device("cpu"), torch.float32) is None:
        pytest.skip("this PyTorch build has no oneDNN product")
    monkeypatch.setattr(matmul, "_enabled", request.param == "oneDNN")
    monkeypatch.setattr(matmul, "_MIN_MACS", 0)  # the tests' small products through oneDNN too
    return request.param


@pytest.fixture(scope="session")
def data_dir() -> Path:
    if DATA_DIR is None:
        pytest.skip("real data not found: set SEQREC_DATA_DIR (CI uses ../shared/data)")
    return DATA_DIR


@pytest.fixture(scope="session")
def ml100k_slice(tmp_path_factory, data_dir) -> Path:
    """The first 120 users of the real ML-100K (all their ratings) with the real u.item/u.genre."""
    out = tmp_path_factory.mktemp("ml100k-slice")
    lines = (data_dir / "ml-100k" / "u.data").read_text().splitlines()
    keep = [line for line in lines if int(line.split("\t")[0]) <= 120]
    (out / "u.data").write_text("\n".join(keep) + "\n")
    for name in ("u.item", "u.genre"):
        (out / name).write_bytes((data_dir / "ml-100k" / name).read_bytes())
    return out


def repeat_window_case(seed: int, with_bias: bool):
    """Training windows with left padding and a repeat that is also a target, over a catalog
    small enough that repeats are frequent, with states and an item table that need gradients:
    ``(x, y, states, W, b, N)``, ``x``/``y`` ``[4, 9]`` inputs and targets."""
    import torch

    g = torch.Generator().manual_seed(seed)
    B, L, N, D = 4, 9, 12, 5
    window = torch.randint(1, N + 1, (B, L + 1), generator=g)
    window[0, :4] = 0  # left padding
    window[1, 3] = window[1, 6] = window[1, 8]  # a repeat that is also a target
    states = torch.randn(B, L, D, generator=g, requires_grad=True)
    W = torch.randn(N + 1, D, generator=g, requires_grad=True)
    b = torch.randn(N + 1, generator=g, requires_grad=True) if with_bias else None
    return window[:, :-1], window[:, 1:], states, W, b, N


def window_positions(x, y, states, W, b, N):
    """Brute force over ``repeat_window_case``'s rows: for each real position (``y > 0``), in row
    order, ``(logits [N + 1], had [N + 1] bool, target)`` where ``had`` marks the distinct items
    read up to and including that position (never the padding index 0)."""
    import torch

    B, L = x.shape
    for i in range(B):
        for j in range(L):
            if y[i, j] == 0:
                continue
            logits = states[i, j] @ W.T + (b if b is not None else 0)  # [N + 1]
            had = torch.zeros(N + 1, dtype=torch.bool)
            had[x[i, : j + 1]] = True
            had[0] = False
            yield logits, had, y[i, j]


def cyclic_histories(n_users: int = 240, n_items: int = 12, seed: int = 0) -> list[list[int]]:
    """Each user walks a fixed cycle of ``n_items`` items from a random start: the next item is a
    deterministic function of the current one, and every item is equally popular."""
    rng = np.random.default_rng(seed)
    perm = rng.permutation(np.arange(1, n_items + 1))
    out = []
    for _ in range(n_users):
        start = int(rng.integers(n_items))
        length = int(rng.integers(4, n_items))  # < n_items: the answer is never already seen
        out.append([int(perm[(start + j) % n_items]) for j in range(length)])
    return out


def prefix_histories(n_users: int = 200, n_items: int = 10, seed: int = 0) -> list[list[int]]:
    """Users hold prefixes 1, 2, ..., k of one fixed order: the next item is both the most popular
    unseen item and the sequence's continuation (a known answer for every model)."""
    rng = np.random.default_rng(seed)
    return [list(range(1, int(rng.integers(3, n_items)) + 1)) for _ in range(n_users)]
