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
    train_index: np.ndarray | None = None
    """When set (cold-start protocols remove events from training), training reads
    ``seqs.items[train_index]`` and ``train_start``/``train_end`` index into that array."""
    cold_items: np.ndarray | None = None
    """Item indices held out of training entirely (cold-item protocol)."""
    cold_users: dict[int, EvalSet] = field(default_factory=dict)
    """Cold-user protocol: ``k -> `` users held out of training, their first ``k`` events as input
    and event ``k + 1`` as the target."""

    def eval_set(self, which: str) -> EvalSet:
        """``valid``, ``test``, or ``cold-users@k`` (the cold-user protocol with ``k`` events)."""
        if which == "valid":
            return self.valid
        if which == "test":
            return self.test
        name, _, k = which.partition("@")
        if name == "cold-users" and k.isdigit() and int(k) in self.cold_users:
            return self.cold_users[int(k)]
        raise ValueError(f"unknown evaluation set {which!r}: valid, test"
                         + "".join(f", cold-users@{k}" for k in self.cold_users))

    def train_arrays(self) -> tuple[np.ndarray, np.ndarray | None]:
        """The items (and timestamps) that ``train_start``/``train_end`` index."""
        seqs = self.seqs
        if self.train_index is None:
            return seqs.items, seqs.times
        times = None if seqs.times is None else seqs.times[self.train_index]
        return seqs.items[self.train_index], times

    def train_labels(self) -> np.ndarray:
        """Per-event labels aligned with :meth:`train_arrays` (binary tasks); an error when the
        data has none."""
        if self.seqs.labels is None:
            raise ValueError("this data has no event labels (ratings or a label column)")
        return self.seqs.labels if self.train_index is None else self.seqs.labels[self.train_index]

    def train_positions(self) -> np.ndarray:
        """Positions in ``seqs.items`` of every training event."""
        lengths = self.train_end - self.train_start
        user_start = np.repeat(self.train_start, lengths)
        first = np.repeat(np.cumsum(lengths) - lengths, lengths)
        pos = user_start + np.arange(int(lengths.sum())) - first
        return pos if self.train_index is None else self.train_index[pos]

    def train_item_counts(self) -> np.ndarray:
        """``[N+1]`` training interactions per item (index 0, padding, is 0)."""
        return np.bincount(self.seqs.items[self.train_positions()], minlength=self.seqs.n_items + 1)

    def with_test_inputs_trained(self) -> Split:
        """The split a refit trains on: every test user's training range grows to the end of
        their test input (leave-one-out: the validation target joins training; temporal: the
        validation period's events). Test targets stay out; validation is no longer held out,
        so the result is for training a model that is then tested, never for selecting one."""
        if self.train_index is not None or self.cold_users:
            raise ValueError("refit is not available with the cold-start protocols")
        start, end = self.train_start.copy(), self.train_end.copy()
        users = self.test.users
        start[users] = self.test.hist_start  # a user's first event
        end[users] = np.maximum(end[users], self.test.hist_end)
        protocol = {**self.protocol, "refit": "trained on every event before the test targets"}
        return Split(self.seqs, start, end, self.valid, self.test, protocol)

    def check_no_leakage(self) -> None:
        """Assert the split's invariants: inputs before targets, no target and no held-out user or
        item in training."""
        in_train = np.zeros(self.seqs.n_events, dtype=bool)
        in_train[self.train_positions()] = True
        sets = [("valid", self.valid), ("test", self.test)]
        sets += [(f"cold-users@{k}", es) for k, es in self.cold_users.items()]
        for name, es in sets:
            starts = self.seqs.offsets[es.users]
            assert np.all(es.hist_start == starts), f"{name}: history does not start at the user"
            assert np.all(es.hist_end <= es.tgt_start), f"{name}: a target is inside its input"
            assert np.all(es.tgt_start < es.tgt_end), f"{name}: a user has no target"
            for a, b in zip(es.tgt_start, es.tgt_end):
                assert not in_train[a:b].any(), f"{name}: training sees a target"
        for es in self.cold_users.values():
            for a, b in zip(es.hist_start, es.tgt_end):
                assert not in_train[a:b].any(), "a cold user's events are in training"
        if self.cold_items is not None:
            assert not np.isin(self.seqs.items[in_train], self.cold_items).any(), \
                "a held-out (cold) item is in training"


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


def hold_out_items(split: Split, fraction: float, seed: int) -> Split:
    """Cold-item protocol: a random ``fraction`` of the items never appears in training (their
    events are removed from every training range; inputs and targets keep them)."""
    seqs = split.seqs
    rng = np.random.default_rng(seed)
    k = int(round(fraction * seqs.n_items))
    cold = np.sort(rng.choice(np.arange(1, seqs.n_items + 1), size=k, replace=False))
    is_cold = np.zeros(seqs.n_items + 1, dtype=bool)
    is_cold[cold] = True
    pos = split.train_positions()
    lengths = split.train_end - split.train_start
    user_of = np.repeat(np.arange(seqs.n_users), lengths)
    keep = ~is_cold[seqs.items[pos]]
    counts = np.bincount(user_of[keep], minlength=seqs.n_users)
    end = np.cumsum(counts)
    split.train_index, split.train_start, split.train_end = pos[keep], end - counts, end
    split.cold_items = cold
    split.protocol["cold_items"] = {
        "fraction": fraction, "items": int(k), "seed": seed,
        "train_events_removed": int((~keep).sum()),
        "rule": "held-out items are absent from training; histories and targets keep them",
    }
    return split


def hold_out_users(split: Split, fraction: float, seed: int, ks: tuple[int, ...] = (1, 2, 3)) -> Split:
    """Cold-user protocol: a random ``fraction`` of the users with more than ``max(ks)`` events is
    left out of training and of the usual validation/test sets; for each ``k`` they are evaluated
    with their first ``k`` events as input and event ``k + 1`` as target."""
    seqs = split.seqs
    rng = np.random.default_rng(seed + 1)
    eligible = np.flatnonzero(seqs.lengths > max(ks))
    cold = np.sort(rng.choice(eligible, size=int(round(fraction * len(eligible))), replace=False))
    split.train_end = split.train_end.copy()
    split.train_end[cold] = split.train_start[cold]  # nothing of theirs is trained on
    keep = lambda es: es.subset(~np.isin(es.users, cold))  # noqa: E731
    split.valid, split.test = keep(split.valid), keep(split.test)
    start = seqs.offsets[cold]
    split.cold_users = {k: EvalSet(cold, start, start + k, start + k, start + k + 1) for k in ks}
    split.protocol["cold_users"] = {
        "fraction": fraction, "users": int(len(cold)), "seed": seed, "ks": list(ks),
        "rule": "held-out users are absent from training and from the usual sets; evaluated "
                "with their first k events as input and event k+1 as target",
    }
    return split


def make_split(seqs: Sequences, cfg: DataConfig) -> Split:
    if cfg.split == "leave-one-out":
        split = leave_one_out(seqs)
    elif cfg.split == "temporal":
        split = temporal(seqs, cfg.valid_fraction, cfg.test_fraction)
    else:
        raise DataError(f"unknown split {cfg.split!r}; choose leave-one-out or temporal")
    if cfg.cold_items > 0:
        split = hold_out_items(split, cfg.cold_items, cfg.cold_seed)
    if cfg.cold_users > 0:
        split = hold_out_users(split, cfg.cold_users, cfg.cold_seed)
    if len(split.valid) == 0 or len(split.test) == 0:
        raise DataError(f"the {cfg.split} split leaves no user to evaluate "
                        f"({len(split.valid)} validation, {len(split.test)} test users)")
    split.check_no_leakage()
    return split
