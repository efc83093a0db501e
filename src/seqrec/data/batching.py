"""Turn CSR ranges into left-padded index batches (0 = padding).

Left padding keeps the most recent item in the last column, so every model reads its prediction
from position ``-1`` whatever the batch's width.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np


def left_pad(items: np.ndarray, starts: np.ndarray, ends: np.ndarray, max_len: int) -> np.ndarray:
    """``[B, L]`` int64: the last ``max_len`` items of each range, left-padded; ``L`` = longest row."""
    lengths = np.minimum(ends - starts, max_len)
    width = max(int(lengths.max(initial=0)), 1)
    cols = np.arange(width)
    if len(items) == 0:  # only empty histories
        return np.zeros((len(starts), width), dtype=np.int64)
    src = ends[:, None] - width + cols[None, :]  # [B, L]
    real = cols[None, :] >= width - lengths[:, None]
    return np.where(real, items[np.clip(src, 0, len(items) - 1)], 0)


def train_pairs(
    items: np.ndarray, starts: np.ndarray, ends: np.ndarray, max_len: int,
    n_score: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Inputs and next-item targets ``[B, L]`` from the last ``max_len + 1`` items of each range.

    A target whose input position is padding (the first item of a short range) is set to 0, so
    ``targets > 0`` marks exactly the positions with a real (context, next item) pair. With
    ``n_score``, only each row's last ``n_score`` targets are kept (overlapping windows).
    """
    window = left_pad(items, starts, ends, max_len + 1)
    inputs, targets = window[:, :-1], window[:, 1:]
    real = inputs > 0
    if n_score is not None:
        width = inputs.shape[1]
        real &= np.arange(width)[None, :] >= width - n_score[:, None]
    return inputs, np.where(real, targets, 0)


def train_times(times: np.ndarray, starts: np.ndarray, ends: np.ndarray, max_len: int) -> np.ndarray:
    """Timestamps aligned with the inputs of :func:`train_pairs` (0 where padding)."""
    return left_pad(times, starts, ends, max_len + 1)[:, :-1]


def pad_ragged(items: np.ndarray, starts: np.ndarray, ends: np.ndarray) -> np.ndarray:
    """Whole ranges, right-padded with 0 (for masks and target sets; order does not matter)."""
    lengths = ends - starts
    width = max(int(lengths.max(initial=0)), 1)
    cols = np.arange(width)
    if len(items) == 0:
        return np.zeros((len(starts), width), dtype=np.int64)
    src = starts[:, None] + cols[None, :]
    real = cols[None, :] < lengths[:, None]
    return np.where(real, items[np.clip(src, 0, len(items) - 1)], 0)


def training_windows(starts: np.ndarray, ends: np.ndarray, max_len: int, mode: str = "all",
                     stride: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Ranges of at most ``max_len + 1`` events that training reads, and how many targets of each
    (counted from its end) are scored.

    ``last``: each user's last ``max_len + 1`` events (the original SASRec). ``all``: long ranges
    are cut from the end into windows that end ``stride`` events apart (``0`` = ``max_len``: no
    overlap), so every (context, next item) pair is trained on exactly once per epoch: a window
    scores only its last ``stride`` targets, where they see the longest context, except the first
    window of a range, which scores every target the later ones did not. A stride below
    ``max_len`` gives each target up to ``max_len - stride`` more events of context at
    ``max_len / stride`` times the encoder work (RecBole's every-prefix training is stride 1).
    Ranges with fewer than 2 events are dropped.
    """
    n = ends - starts
    keep = n >= 2
    s, e = starts[keep], ends[keep]
    if mode == "last":
        return s, e, np.full(len(s), max_len, dtype=np.int64)
    if mode != "all":
        raise ValueError(f"windows must be 'all' or 'last', got {mode!r}")
    step = max_len if stride <= 0 else stride
    if step > max_len:
        raise ValueError(f"window stride {stride} is larger than max_len {max_len}")
    # windows per range: the last ends at e, each earlier one `step` sooner, until one starts at s
    per = 1 + np.ceil(np.maximum(e - s - 1 - max_len, 0) / step).astype(np.int64)
    k = np.arange(int(per.sum())) - np.repeat(np.cumsum(per) - per, per)  # 0, 1, ... per range
    w_end = np.repeat(e, per) - k * step
    w_start = np.maximum(np.repeat(s, per), w_end - max_len - 1)
    first = k == np.repeat(per, per) - 1  # the range's earliest window scores all its targets
    n_score = np.where(first, max_len, step).astype(np.int64)
    return w_start, w_end, n_score


def scored_pairs(starts: np.ndarray, ends: np.ndarray, n_score: np.ndarray, max_len: int) -> int:
    """How many (context, next item) pairs the windows of :func:`training_windows` score."""
    return int(np.minimum(np.minimum(ends - starts - 1, max_len), n_score).sum())


def length_bucketed_batches(
    lengths: np.ndarray, batch_size: int, rng: np.random.Generator, bucket_batches: int = 32
) -> Iterator[np.ndarray]:
    """Shuffled batches of row indices where rows of similar length travel together.

    Rows are shuffled, cut into pools of ``bucket_batches`` batches, sorted by length inside each
    pool, batched, and the batches shuffled: little padding, still a random order every epoch.
    """
    order = rng.permutation(len(lengths))
    pool = batch_size * bucket_batches
    batches = []
    for p in range(0, len(order), pool):
        chunk = order[p : p + pool]
        chunk = chunk[np.argsort(lengths[chunk], kind="stable")]
        batches.extend(chunk[i : i + batch_size] for i in range(0, len(chunk), batch_size))
    for b in rng.permutation(len(batches)):
        yield batches[b]
