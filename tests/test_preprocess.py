"""Cleaning steps, vocabulary and the stable time sort."""

import polars as pl
import pytest

from seqrec.config import DataConfig
from seqrec.data.log import InteractionLog
from seqrec.data.preprocess import kcore, preprocess
from seqrec.data.vocab import Vocab
from seqrec.errors import UnknownIdError


def make_log(rows, has_time=True):
    u, i, t = zip(*rows)
    n = len(rows)
    return InteractionLog(pl.DataFrame({
        "user_id": list(u), "item_id": list(i), "timestamp": list(t),
        "rating": pl.Series([None] * n, dtype=pl.Float64), "row": list(range(n)),
    }, schema_overrides={"timestamp": pl.Int64}), has_time=has_time, source="test")


def test_stable_time_sort_keeps_file_order_for_ties():
    log = make_log([("a", "x", 5), ("a", "y", 1), ("a", "z", 5), ("a", "w", 5), ("a", "v", 2)])
    seqs = preprocess(log, DataConfig())
    assert seqs.items_vocab.external(seqs.user_items(0)) == ["y", "v", "x", "z", "w"]


def test_dedupe_keeps_first_in_time():
    log = make_log([("a", "x", 3), ("a", "x", 1), ("a", "y", 2), ("b", "x", 1)])
    seqs = preprocess(log, DataConfig(dedupe=True))
    assert seqs.items_vocab.external(seqs.user_items(0)) == ["x", "y"]
    assert seqs.report["dropped_duplicates"] == 1
    no = preprocess(log, DataConfig(dedupe=False))
    assert no.n_events == 4


def test_kcore_is_iterative():
    # item z has 2 users; dropping user c (1 event after z goes) cascades
    rows = [("a", "x", 1), ("a", "y", 2), ("b", "x", 1), ("b", "y", 2), ("c", "z", 1), ("c", "x", 2),
            ("d", "z", 1)]
    df = make_log(rows).df
    out, rounds = kcore(df, min_user=2, min_item=2)
    assert sorted(set(out["user_id"].to_list())) == ["a", "b"]
    assert rounds >= 2
    seqs = preprocess(make_log(rows), DataConfig(min_user_events=2, min_item_events=2))
    assert seqs.n_users == 2 and seqs.n_items == 2


def test_min_rating_needs_ratings():
    with pytest.raises(Exception, match="no ratings"):
        preprocess(make_log([("a", "x", 1)]), DataConfig(min_rating=4))


def test_vocab_roundtrip_and_unknown_ids():
    v = Vocab([10, 20, 30])
    assert v.index(20) == 2 and v.index("20") == 2  # command-line strings are normalised
    idx, unknown = v.lookup([30, "10", 99, "x"])
    assert idx.tolist() == [3, 1] and unknown == [99, "x"]
    assert v.external([1, 3]) == [10, 30]
    with pytest.raises(UnknownIdError, match="99"):
        v.index(99)
    assert Vocab.from_json(v.to_json()).ids == [10, 20, 30]
    s = Vocab(["a", "b"])
    assert s.get(1) is None and s.index("b") == 2
