"""Train / validation / test splits that never show a target in the input used to predict it.

Every range below indexes ``Sequences.items``; a user's events are contiguous and time-ordered, so a
history is always a prefix ``[offset, hist_end)`` and targets come strictly after it.

- **leave-one-out**: per user with >= 3 events, the last event is the test target (input: all
  earlier events), the second-to-last the validation target (input: the events before it), and
  training sees only the events before the validation target. Users with 1 or 2 events are used
  for training only and are not evaluated (counted in ``protocol['train_only_users']``).
- **temporal**: two global cut times from event-time quantiles. Training sees events before the
  validation cut; validation targets are a user's events in ``[valid_cut, test_cut)`` with input
  the events before ``valid_cut``; test targets are events at or after ``test_cut`` with input all
  events before it. Users with no event before a cut have no input there and are not evaluated
  for that period (counted).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from seqrec.config import DataConfig
from seqrec.data.preprocess import Sequences
from seqrec.errors import DataError


@dataclass
class EvalSet:
    """Users to evaluate, each with an input history range and a target range."""

    users: np.ndarray
    hist_start: np.ndarray
    hist_end: np.ndarray
    tgt_start: np.ndarray
    tgt_end: np.ndarray

    def __len__(self) -> int:
        return len(self.users)

    def subset(self, mask_or_idx: np.ndarray) -> EvalSet:
        return EvalSet(*(a[mask_or_idx] for a in (self.users, self.hist_start, self.hist_end,
                                                   self.tgt_start, self.tgt_end)))


@dataclass
class Split:
    seqs: Sequences
    train_start: np.ndarray
    """Per user: the training range ``[train_start, train_end)`` (may be empty)."""
    train_end: np.ndarray
    valid: EvalSet
    test: EvalSet
    protocol: dict[str, Any] = field(default_factory=dict)

    def eval_set(self, which: str) -> EvalSet:
        if which not in ("valid", "test"):
            raise ValueError(f"split must be 'valid' or 'test', got {which!r}")
        return self.valid if which == "valid" else self.test

    def train_mask(self) -> np.ndarray:
        """Boolean over ``seqs.items``: True for events inside a user's training range."""
        seqs = self.seqs
        pos = np.arange(seqs.n_events)
        user_of = np.repeat(np.arange(seqs.n_users), seqs.lengths)
        return (pos >= self.train_start[user_of]) & (pos < self.train_end[user_of])

    def train_item_counts(self) -> np.ndarray:
        """``[N+1]`` training interactions per item (index 0, padding, is 0)."""
        return np.bincount(self.seqs.items[self.train_mask()], minlength=self.seqs.n_items + 1)

    def check_no_leakage(self) -> None:
        """Assert the split's invariants (targets after inputs, training before validation)."""
        for name, es in (("valid", self.valid), ("test", self.test)):
            starts = self.seqs.offsets[es.users]
            assert np.all(es.hist_start == starts), f"{name}: history does not start at the user"
            assert np.all(es.hist_end <= es.tgt_start), f"{name}: a target is inside its input"
            assert np.all(es.tgt_start < es.tgt_end), f"{name}: a user has no target"
            assert np.all(self.train_end[es.users] <= es.tgt_start), f"{name}: training sees a target"


def leave_one_out(seqs: Sequences) -> Split:
    start, end = seqs.offsets[:-1], seqs.offsets[1:]
    n = end - start
    ev = n >= 3
    train_end = np.where(ev, end - 2, end)
    users = np.flatnonzero(ev)
    valid = EvalSet(users, start[ev], end[ev] - 2, end[ev] - 2, end[ev] - 1)
    test = EvalSet(users, start[ev], end[ev] - 1, end[ev] - 1, end[ev])
    protocol = {
        "split": "leave-one-out",
        "evaluated_users": int(ev.sum()),
        "train_only_users": int((~ev).sum()),
        "rule": "last event = test target, second-to-last = validation target; users with < 3 "
                "events train only",
    }
    return Split(seqs, start.copy(), train_end, valid, test, protocol)


def temporal(seqs: Sequences, valid_fraction: float, test_fraction: float) -> Split:
    if seqs.times is None:
        raise DataError("the temporal split needs timestamps, and this data has only an order; "
                        "use split = \"leave-one-out\"", path=seqs.report.get("source"))
    if not (0 < test_fraction < 1 and 0 < valid_fraction < 1 and valid_fraction + test_fraction < 1):
        raise DataError(f"temporal split fractions must be in (0, 1) and sum below 1, got "
                        f"valid={valid_fraction}, test={test_fraction}")
    t = seqs.times
    test_cut = int(np.quantile(t, 1 - test_fraction, method="higher"))
    valid_cut = int(np.quantile(t, 1 - test_fraction - valid_fraction, method="higher"))
    if not valid_cut < test_cut:
        raise DataError("the validation and test cut times coincide (too many equal timestamps); "
                        "change valid_fraction / test_fraction")
    start, end = seqs.offsets[:-1], seqs.offsets[1:]
    user_of = np.repeat(np.arange(seqs.n_users), seqs.lengths)
    before_v = np.bincount(user_of, weights=(t < valid_cut), minlength=seqs.n_users).astype(np.int64)
    before_t = np.bincount(user_of, weights=(t < test_cut), minlength=seqs.n_users).astype(np.int64)
    v_end, t_end = start + before_v, start + before_t

    def eval_set(hist_end: np.ndarray, tgt_end: np.ndarray) -> tuple[EvalSet, int]:
        has_target = tgt_end > hist_end
        ok = has_target & (hist_end > start)
        users = np.flatnonzero(ok)
        return EvalSet(users, start[ok], hist_end[ok], hist_end[ok], tgt_end[ok]), int(
            (has_target & ~ok).sum())

    valid, v_cold = eval_set(v_end, t_end)
    test, t_cold = eval_set(t_end, end)
    protocol = {
        "split": "temporal",
        "valid_cut": valid_cut,
        "test_cut": test_cut,
        "train_events": int(before_v.sum()),
        "valid_users": len(valid),
        "test_users": len(test),
        "valid_users_without_history": v_cold,
        "test_users_without_history": t_cold,
        "rule": "train: t < valid_cut; valid targets: valid_cut <= t < test_cut (input t < "
                "valid_cut); test targets: t >= test_cut (input t < test_cut)",
    }
    return Split(seqs, start.copy(), v_end, valid, test, protocol)


def make_split(seqs: Sequences, cfg: DataConfig) -> Split:
    if cfg.split == "leave-one-out":
        split = leave_one_out(seqs)
    elif cfg.split == "temporal":
        split = temporal(seqs, cfg.valid_fraction, cfg.test_fraction)
    else:
        raise DataError(f"unknown split {cfg.split!r}; choose leave-one-out or temporal")
    if len(split.valid) == 0 or len(split.test) == 0:
        raise DataError(f"the {cfg.split} split leaves no user to evaluate "
                        f"({len(split.valid)} validation, {len(split.test)} test users)")
    split.check_no_leakage()
    return split
