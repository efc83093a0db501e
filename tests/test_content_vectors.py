"""User vector files (.npy + id list, Parquet): every accepted form, and bad input that gets a
clear error naming the file and the row or id, or the documented fallback, counted."""

from __future__ import annotations

import json

import numpy as np
import polars as pl
import pytest

from seqrec.content.vectors import align_item_vectors, read_item_vectors
from seqrec.errors import ConfigError, DataError

RNG = np.random.default_rng(0)
VECS = RNG.normal(size=(4, 3)).astype(np.float32)
IDS = [10, 11, 12, 13]


def write_npy(tmp_path, vecs=VECS, ids=IDS, ids_name="img.ids.json"):
    np.save(tmp_path / "img.npy", vecs)
    if ids_name.endswith(".json"):
        (tmp_path / ids_name).write_text(json.dumps(ids))
    else:
        (tmp_path / ids_name).write_text("".join(f"{i}\n" for i in ids))
    return tmp_path / "img.npy"


@pytest.mark.parametrize("ids_name", ["img.ids.json", "img.ids.txt", "img.json", "img.txt"])
def test_npy_with_id_list_beside_it(tmp_path, ids_name):
    iv = read_item_vectors(write_npy(tmp_path, ids_name=ids_name))
    assert iv.dim == 3 and len(iv.ids) == 4
    np.testing.assert_array_equal(iv.vectors, VECS)
    # ids from a text file are strings; they match integer item ids
    V, missing, report = align_item_vectors(iv, [13, 10, 99])
    np.testing.assert_array_equal(V[1], VECS[3])
    np.testing.assert_array_equal(V[2], VECS[0])
    assert not V[0].any() and not V[3].any()  # padding, and the item without a vector
    assert missing.tolist() == [0.0, 0.0, 0.0, 1.0]
    assert report["missing_items"] == 1 and report["missing_examples"] == [99]
    assert report["unknown_ids"] == 2 and report["with_vector"] == 2


def test_parquet_list_array_and_wide(tmp_path):
    lists = pl.DataFrame({"item_id": IDS, "emb": VECS.tolist()})
    lists.write_parquet(tmp_path / "l.parquet")
    arr = lists.with_columns(pl.col("emb").cast(pl.Array(pl.Float32, 3)))
    arr.write_parquet(tmp_path / "a.parquet")
    wide = pl.DataFrame({"item_id": IDS, **{f"d{j}": VECS[:, j] for j in range(3)}})
    wide.write_parquet(tmp_path / "w.parquet")
    for name in ("l", "a", "w"):
        iv = read_item_vectors(tmp_path / f"{name}.parquet")
        assert iv.ids == IDS
        np.testing.assert_allclose(iv.vectors, VECS, rtol=1e-6)
    renamed = lists.rename({"item_id": "sku"})
    renamed.write_parquet(tmp_path / "r.parquet")
    assert read_item_vectors(tmp_path / "r.parquet", id_column="sku").ids == IDS
    with pytest.raises(DataError, match=r"no id column 'item_id'.*columns are \['sku', 'emb'\]"):
        read_item_vectors(tmp_path / "r.parquet")


def test_wrong_dimension(tmp_path):
    path = write_npy(tmp_path)
    with pytest.raises(DataError, match=r"img\.npy: vectors have dimension 3, expected 8"):
        read_item_vectors(path, expected_dim=8)


def test_ragged_parquet_names_the_row_and_item(tmp_path):
    df = pl.DataFrame({"item_id": ["a", "b", "c"], "v": [[1.0, 2.0], [1.0, 2.0], [1.0]]})
    df.write_parquet(tmp_path / "v.parquet")
    with pytest.raises(DataError, match=r"v\.parquet, column 'v': vectors of different lengths "
                                        r"\(1, 2\): row 2 \(item 'c'\) has 1"):
        read_item_vectors(tmp_path / "v.parquet")


def test_nan_is_an_error_or_a_counted_missing_item(tmp_path):
    bad = VECS.copy()
    bad[2, 1] = np.nan
    bad[3, 0] = np.inf
    path = write_npy(tmp_path, vecs=bad)
    with pytest.raises(DataError, match=r"img\.npy: 2 row\(s\) with NaN.*first row 2 \(item 12\)"):
        read_item_vectors(path)
    iv = read_item_vectors(path, nonfinite="missing")
    assert iv.ids == [10, 11] and iv.report["nonfinite_rows"] == 2
    V, missing, report = align_item_vectors(iv, IDS)
    assert missing.tolist() == [0, 0, 0, 1, 1] and report["nonfinite_rows"] == 2
    assert np.isfinite(V).all()


def test_null_vector_in_parquet(tmp_path):
    df = pl.DataFrame({"item_id": [1, 2], "v": [[1.0, 2.0], None]})
    df.write_parquet(tmp_path / "v.parquet")
    with pytest.raises(DataError, match=r"row 1 \(item 2\) has no vector"):
        read_item_vectors(tmp_path / "v.parquet")
    df = pl.DataFrame({"item_id": [1, 2], "v": [[1.0, 2.0], [None, 1.0]]})
    df.write_parquet(tmp_path / "n.parquet")
    with pytest.raises(DataError, match=r"first row 1 \(item 2\)"):
        read_item_vectors(tmp_path / "n.parquet")


def test_missing_items_policy(tmp_path):
    iv = read_item_vectors(write_npy(tmp_path))
    with pytest.raises(DataError, match=r"img\.npy: 2 of 3 items have no vector, e\.g\. 7, 8"):
        align_item_vectors(iv, [10, 7, 8], missing="error")
    with pytest.raises(ConfigError):
        align_item_vectors(iv, [10], missing="mean")


def test_malformed_files(tmp_path):
    (tmp_path / "junk.npy").write_text("this is not numpy")
    with pytest.raises(DataError, match=r"junk\.npy: not a numeric \.npy array"):
        read_item_vectors(tmp_path / "junk.npy", ids_path=tmp_path / "x.json")
    np.save(tmp_path / "obj.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(DataError, match=r"obj\.npy: not a numeric"):
        read_item_vectors(tmp_path / "obj.npy")
    np.save(tmp_path / "flat.npy", np.zeros(4))
    with pytest.raises(DataError, match="expected a 2-D array"):
        read_item_vectors(tmp_path / "flat.npy")
    np.save(tmp_path / "lonely.npy", VECS)
    with pytest.raises(DataError, match=r"lonely\.npy: an \.npy file needs its item ids"):
        read_item_vectors(tmp_path / "lonely.npy")
    (tmp_path / "junk.parquet").write_text("not parquet")
    with pytest.raises(DataError, match=r"junk\.parquet: cannot read as Parquet"):
        read_item_vectors(tmp_path / "junk.parquet")
    (tmp_path / "v.csv").write_text("1,2\n")
    with pytest.raises(DataError, match="unsupported vector file"):
        read_item_vectors(tmp_path / "v.csv")
    with pytest.raises(DataError, match="not found"):
        read_item_vectors(tmp_path / "absent.npy")


def test_id_list_problems(tmp_path):
    path = write_npy(tmp_path, ids=IDS[:3])
    with pytest.raises(DataError, match=r"img\.ids\.json: 3 ids for 4 vectors"):
        read_item_vectors(path)
    path = write_npy(tmp_path, ids=[10, 11, 10, 13])
    with pytest.raises(DataError, match=r"item 10 appears twice \(rows 0 and 2\)"):
        read_item_vectors(path)
    (tmp_path / "img.ids.json").unlink()
    (tmp_path / "ids.txt").write_text("10\n\n12\n13\n")
    with pytest.raises(DataError, match=r"ids\.txt, line 2: empty line"):
        read_item_vectors(path, ids_path=tmp_path / "ids.txt")
    (tmp_path / "ids.json").write_text('{"a": 1}')
    with pytest.raises(DataError, match="expected a JSON array"):
        read_item_vectors(path, ids_path=tmp_path / "ids.json")


def test_ambiguous_parquet_needs_a_vector_column(tmp_path):
    df = pl.DataFrame({"item_id": [1], "a": [[1.0]], "b": [[2.0]]})
    df.write_parquet(tmp_path / "v.parquet")
    with pytest.raises(DataError, match="cannot tell which column"):
        read_item_vectors(tmp_path / "v.parquet")
    assert read_item_vectors(tmp_path / "v.parquet", vector_column="b").vectors.tolist() == [[2.0]]
    with pytest.raises(DataError, match="did you mean 'b'"):
        read_item_vectors(tmp_path / "v.parquet", vector_column="bb")
