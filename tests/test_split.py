"""Splits never show a target in the input used to predict it; batching pads on the left."""

import numpy as np
import pytest

from seqrec.config import DataConfig
from seqrec.data import datasets
from seqrec.data.batching import left_pad, length_bucketed_batches, pad_ragged, train_pairs
from seqrec.data.preprocess import preprocess, sequences_from_lists
from seqrec.data.split import leave_one_out, make_split, temporal
from seqrec.errors import DataError


def assert_no_leak(split):
    seqs = split.seqs
    split.check_no_leakage()
    for name in ("valid", "test"):
        es = split.eval_set(name)
        for j in range(len(es)):
            u = es.users[j]
            hist_pos = set(range(es.hist_start[j], es.hist_end[j]))
            tgt_pos = set(range(es.tgt_start[j], es.tgt_end[j]))
            train_pos = set(range(split.train_start[u], split.train_end[u]))
            assert not hist_pos & tgt_pos
            assert not train_pos & tgt_pos
            if seqs.times is not None:  # every input event happened before every target event
                assert seqs.times[list(hist_pos)].max() <= seqs.times[list(tgt_pos)].min()


def test_leave_one_out_hand_case():
    seqs = sequences_from_lists([[1, 2, 3, 4], [5, 6, 7], [8, 9], [10]])
    sp = leave_one_out(seqs)
    assert sp.protocol["train_only_users"] == 2
    assert sp.valid.users.tolist() == [0, 1]
    it = seqs.items_vocab
    # user 0: train [1, 2], valid target 3 with input [1, 2], test target 4 with input [1, 2, 3]
    u0 = seqs.items[sp.train_start[0]:sp.train_end[0]]
    assert it.external(u0) == [1, 2]
    assert it.external(seqs.items[sp.valid.tgt_start[0]:sp.valid.tgt_end[0]]) == [3]
    assert it.external(seqs.items[sp.test.hist_start[0]:sp.test.hist_end[0]]) == [1, 2, 3]
    assert it.external(seqs.items[sp.test.tgt_start[0]:sp.test.tgt_end[0]]) == [4]
    # short users train on everything they have and are never evaluated
    assert it.external(seqs.items[sp.train_start[2]:sp.train_end[2]]) == [8, 9]
    assert_no_leak(sp)


def test_temporal_hand_case():
    hist = [[1, 2, 3, 4, 5], [6, 7, 8], [9, 10]]
    times = [[1, 2, 3, 8, 10], [4, 7, 9], [9, 10]]
    seqs = sequences_from_lists(hist, times=times)
    sp = temporal(seqs, valid_fraction=0.2, test_fraction=0.2)
    vc, tc = sp.protocol["valid_cut"], sp.protocol["test_cut"]
    assert vc < tc
    for j in range(len(sp.test)):
        s, e = sp.test.hist_start[j], sp.test.hist_end[j]
        assert (seqs.times[s:e] < tc).all()
        assert (seqs.times[sp.test.tgt_start[j]:sp.test.tgt_end[j]] >= tc).all()
    assert (seqs.times[np.concatenate([np.arange(a, b) for a, b in zip(sp.train_start, sp.train_end)])] < vc).all()
    assert_no_leak(sp)


def test_temporal_needs_timestamps():
    seqs = sequences_from_lists([[1, 2, 3]])
    with pytest.raises(DataError, match="needs timestamps"):
        temporal(seqs, 0.1, 0.1)


@pytest.mark.parametrize("split", ["leave-one-out", "temporal"])
def test_real_data_never_leaks(data_dir, split):
    cfg = DataConfig(name="ml-100k", split=split)
    log, _, _ = datasets.load(cfg, data_dir)
    sp = make_split(preprocess(log, cfg), cfg)
    assert len(sp.test) > 0
    assert_no_leak(sp)


def test_left_pad_and_train_pairs():
    items = np.array([1, 2, 3, 4, 5, 6, 7], dtype=np.int64)
    starts, ends = np.array([0, 4]), np.array([4, 6])
    assert left_pad(items, starts, ends, 3).tolist() == [[2, 3, 4], [0, 5, 6]]
    assert left_pad(items, starts, ends, 10).tolist() == [[1, 2, 3, 4], [0, 0, 5, 6]]
    x, y = train_pairs(items, starts, ends, 10)
    assert x.tolist() == [[1, 2, 3], [0, 0, 5]]
    assert y.tolist() == [[2, 3, 4], [0, 0, 6]]  # no target where the input is padding
    x, y = train_pairs(items, starts, ends, 2)
    assert x.tolist() == [[2, 3], [0, 5]] and y.tolist() == [[3, 4], [0, 6]]
    assert pad_ragged(items, starts, ends).tolist() == [[1, 2, 3, 4], [5, 6, 0, 0]]
    empty = np.zeros(0, dtype=np.int64)
    assert left_pad(empty, np.array([0, 0]), np.array([0, 0]), 5).tolist() == [[0], [0]]
    assert pad_ragged(empty, np.array([0]), np.array([0])).tolist() == [[0]]


def test_bucketed_batches_cover_every_row_once():
    lengths = np.random.default_rng(0).integers(1, 50, size=1000)
    batches = list(length_bucketed_batches(lengths, 64, np.random.default_rng(1), bucket_batches=4))
    allrows = np.concatenate(batches)
    assert sorted(allrows.tolist()) == list(range(1000))
    again = list(length_bucketed_batches(lengths, 64, np.random.default_rng(1), bucket_batches=4))
    assert all((a == b).all() for a, b in zip(batches, again))  # same seed, same batches


def test_training_windows_cover_every_pair_once():
    from seqrec.data.batching import scored_pairs, training_windows

    starts, ends = np.array([0, 10, 30, 31]), np.array([10, 30, 31, 33])
    s, e, n = training_windows(starts, ends, 4, "last")
    assert s.tolist() == [0, 10, 31] and e.tolist() == [10, 30, 33]  # the 1-event range drops
    items = np.arange(1, 41)  # position p holds item p + 1 (0 is padding)
    expected = {(i + 1, i + 2) for a, b in zip(starts, ends) for i in range(a, b - 1)}
    for stride, n_windows in [(0, 3 + 5 + 1), (4, 3 + 5 + 1), (2, 4 + 9 + 1), (1, 6 + 16 + 1)]:
        s, e, n = training_windows(starts, ends, 4, "all", stride)
        assert len(s) == n_windows
        pairs: list[tuple[int, int]] = []
        for a, b, k in zip(s, e, n):
            assert b - a <= 5
            x, y = train_pairs(items, np.array([a]), np.array([b]), 4, np.array([k]))
            for col in np.flatnonzero(y[0] > 0):
                pairs.append((int(x[0, col]), int(y[0, col])))
                # an overlapping window scores only targets that see >= max_len - stride context
                context = int((x[0, : col + 1] > 0).sum())
                start_of_range = int(x[0, col]) - context in {int(v) for v in starts}
                assert context >= 4 - (stride or 4) + 1 or start_of_range
        assert set(pairs) == expected and len(pairs) == len(expected)
        assert scored_pairs(s, e, n, 4) == len(pairs)
    with pytest.raises(ValueError, match="stride"):
        training_windows(starts, ends, 4, "all", 5)


def test_refit_view_trains_on_everything_before_the_test_targets():
    seqs = sequences_from_lists([[1, 2, 3, 4, 5, 6], [2, 3, 4, 5], [7, 8]])
    sp = leave_one_out(seqs)
    r = sp.with_test_inputs_trained()
    items, _ = r.train_arrays()
    ranges = [items[a:b].tolist() for a, b in zip(r.train_start, r.train_end)]
    assert ranges == [[1, 2, 3, 4, 5], [2, 3, 4], [7, 8]]  # validation targets joined training
    # test targets stay out of training
    test_targets = {int(seqs.items[t]) for t in r.test.tgt_start}
    assert all(r.train_end[u] <= t for u, t in zip(r.test.users, r.test.tgt_start))
    assert test_targets == {6, 5}
    with pytest.raises(ValueError, match="cold-start"):
        from seqrec.data.split import hold_out_items

        hold_out_items(leave_one_out(seqs), 0.2, 0).with_test_inputs_trained()


def test_refit_view_of_the_temporal_split():
    seqs = sequences_from_lists([[1, 2, 3, 4, 5, 6], [2, 3, 4, 5]], times=[[1, 2, 3, 4, 5, 6],
                                                                        [1, 2, 5, 6]])
    sp = temporal(seqs, 0.34, 0.34)
    r = sp.with_test_inputs_trained()
    for u, h_end, t in zip(r.test.users, r.test.hist_end, r.test.tgt_start):
        assert r.train_end[u] == h_end <= t
