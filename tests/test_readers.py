"""Readers: real formats, and bad input that gets a clear error naming file, line and column."""

import polars as pl
import pytest

from seqrec.config import DataConfig
from seqrec.data import datasets
from seqrec.data.amazon import derive_id2asin, read_s3rec
from seqrec.data.movielens import read_ml1m, read_ml100k
from seqrec.data.readers import read_delimited_rows, read_sequences, read_table
from seqrec.errors import DataError


# ---------------------------------------------------------------- real files


def test_ml100k(data_dir):
    log, cat = read_ml100k(data_dir / "ml-100k")
    assert len(log) == 100_000 and log.n_users == 943 and log.n_items == 1682
    assert log.has_time and log.df["timestamp"].null_count() == 0
    row = cat.df.filter(pl.col("item_id") == 1).row(0, named=True)
    assert row["title"] == "Toy Story (1995)"
    assert row["categories"] == ["Animation", "Children's", "Comedy"]


def test_ml1m_sequences_and_latin1_titles(data_dir):
    log, cat = read_ml1m(data_dir / "ml-1m")
    assert len(log) == 1_000_209 and log.n_users == 6040 and log.n_items == 3706
    assert not log.has_time
    titles = cat.titles()
    assert len(cat) == 3883
    assert any("é" in (t or "") for t in titles.values())  # Latin-1 decoded, not mojibake


def test_ml1m_ratings_dat_format(tmp_path):
    (tmp_path / "ratings.dat").write_text("1::1193::5::978300760\n1::661::3::978302109\n2::1193::4::978298413\n")
    (tmp_path / "movies.dat").write_bytes("1193::Am\xe9lie (2001)::Comedy|Romance\n661::X (1996)::Drama\n".encode("latin-1"))
    log, cat = read_ml1m(tmp_path)
    assert log.has_time and len(log) == 3
    assert log.df["rating"].to_list() == [5.0, 3.0, 4.0]
    assert cat.titles()[1193] == "Amélie (2001)"


def test_beauty_with_titles(data_dir):
    log, cat = read_s3rec(data_dir / "amazon_beauty", "Beauty")
    assert len(log) == 198_502 and log.n_users == 22_363 and log.n_items == 12_101
    assert cat.df.height == 12_101
    assert cat.df["title"].null_count() == 7  # the seven items with empty titles
    r = cat.df.filter(pl.col("item_id") == 165).row(0, named=True)
    assert r["categories"] == ["Beauty", "Fragrance", "Women's", "Eau de Parfum"]
    assert r["attributes"] == [7, 8, 9, 10]


def test_id2asin_derivation_matches_shipped_map(data_dir, tmp_path):
    folder = data_dir / "amazon_beauty"
    derived = derive_id2asin(folder)
    shipped = dict(line.split("\t") for line in (folder / "Beauty_item_id2asin.tsv").read_text().splitlines()[1:])
    assert {str(k): v for k, v in derived.items()} == shipped


@pytest.mark.parametrize("name", sorted(datasets.DATASETS))
def test_every_registered_dataset_loads(data_dir, name):
    log, _, label = datasets.load(DataConfig(name=name), data_dir)
    assert len(log) > 10_000 and label == name


def test_checksums_of_shared_files(data_dir):
    for name in ("beauty", "ml-100k", "lastfm"):
        status = dict(datasets.verify(datasets.DATASETS[name], data_dir))
        assert all(s in ("ok", "missing") for s in status.values()), status
        assert "MISMATCH" not in status.values()
    assert dict(datasets.verify(datasets.DATASETS["beauty"], data_dir))["Beauty.txt"] == "ok"


def test_missing_dataset_message_says_what_to_put_where(tmp_path):
    with pytest.raises(DataError) as e:
        datasets.load(DataConfig(name="beauty"), tmp_path)
    msg = str(e.value)
    assert str(tmp_path / "amazon_beauty" / "Beauty.txt") in msg
    assert "SEQREC_DATA_DIR" in msg and "seqrec data download beauty" in msg


def test_unknown_name_or_path():
    with pytest.raises(DataError, match="neither a registered dataset"):
        datasets.load(DataConfig(name="no-such-thing"))


# ---------------------------------------------------------------- tables


def test_csv_with_named_columns_and_iso_dates(tmp_path):
    p = tmp_path / "events.csv"
    p.write_text("who,what,when\nu1,i1,2024-01-02T10:00:00\nu1,i2,2024-01-01\nu2,i1,2024-01-03 08:00\n")
    log = read_table(p, user_col="who", item_col="what", time_col="when")
    assert log.df["user_id"].to_list() == ["u1", "u1", "u2"]
    ts = log.df["timestamp"].to_list()
    assert ts[1] < ts[0] < ts[2]


def test_tsv_and_parquet_keep_integer_ids(tmp_path):
    tsv = tmp_path / "e.tsv"
    tsv.write_text("user_id\titem_id\ttimestamp\n7\t100\t5\n7\t101\t6\n")
    log = read_table(tsv)
    assert log.df["user_id"].dtype == pl.Int64 and log.df["item_id"].to_list() == [100, 101]
    pq = tmp_path / "e.parquet"
    pl.DataFrame({"u": [1, 1], "i": ["a", "b"], "t": [1.0, 2.0]}).write_parquet(pq)
    log = read_table(pq, user_col="u", item_col="i", time_col="t")
    assert log.df["item_id"].to_list() == ["a", "b"] and log.df["timestamp"].to_list() == [1, 2]


def test_misnamed_column_suggests_the_right_one(tmp_path):
    p = tmp_path / "e.csv"
    p.write_text("user,item_id,timestamp\n1,2,3\n")
    with pytest.raises(DataError) as e:
        read_table(p, user_col="usr")
    assert "no user column 'usr'" in str(e.value) and "did you mean 'user'" in str(e.value)
    assert str(p) in str(e.value)


def test_missing_time_column(tmp_path):
    p = tmp_path / "e.csv"
    p.write_text("user_id,item_id\n1,2\n")
    with pytest.raises(DataError, match="no time column 'timestamp'"):
        read_table(p)
    assert len(read_table(p, time_col=None)) == 1  # file order instead


def test_malformed_csv_line_is_named(tmp_path):
    p = tmp_path / "e.csv"
    p.write_text("user_id,item_id,timestamp\n1,2,3\n1,2\n1,3,4\n")
    with pytest.raises(DataError) as e:
        read_table(p)
    assert e.value.line == 3 and str(p) in str(e.value)


def test_bad_value_names_line_and_column(tmp_path):
    p = tmp_path / "e.csv"
    p.write_text("user_id,item_id,timestamp\n1,2,3\n1,3,yesterday\n")
    with pytest.raises(DataError) as e:
        read_table(p)
    assert e.value.line == 3 and e.value.column == "timestamp" and "yesterday" in str(e.value)
    p.write_text("user_id,item_id,timestamp\n1,2,3\n,3,4\n")
    with pytest.raises(DataError) as e:
        read_table(p)
    assert e.value.line == 3 and e.value.column == "user_id"


@pytest.mark.parametrize("content", [b"", b"   \n\n"])
def test_empty_file(tmp_path, content):
    p = tmp_path / "e.csv"
    p.write_bytes(content)
    with pytest.raises(DataError, match="empty"):
        read_table(p)
    s = tmp_path / "s.txt"
    s.write_bytes(content)
    with pytest.raises(DataError, match="empty"):
        read_sequences(s)


def test_header_only(tmp_path):
    p = tmp_path / "e.csv"
    p.write_text("user_id,item_id,timestamp\n")
    with pytest.raises(DataError, match="no rows"):
        read_table(p)


def test_non_utf8_bytes_name_the_line_and_the_fix(tmp_path):
    p = tmp_path / "e.csv"
    p.write_bytes(b"user_id,item_id,timestamp\n1,caf\xe9,3\n")
    with pytest.raises(DataError) as e:
        read_table(p)
    assert e.value.line == 2 and "latin-1" in str(e.value)
    assert len(read_table(p, encoding="latin-1")) == 1


# ---------------------------------------------------------------- sequences / delimited


def test_sequence_line_without_items(tmp_path):
    p = tmp_path / "s.txt"
    p.write_text("1 5 6 7\n2\n3 8 9\n")
    with pytest.raises(DataError) as e:
        read_sequences(p)
    assert e.value.line == 2 and "has no items" in str(e.value)


def test_sequence_user_twice(tmp_path):
    p = tmp_path / "s.txt"
    p.write_text("1 5 6\n2 7 8\n1 9\n")
    with pytest.raises(DataError, match="first on line 1") as e:
        read_sequences(p)
    assert e.value.line == 3


def test_udata_malformed_line(tmp_path):
    p = tmp_path / "u.data"
    p.write_text("1\t2\t3\t4\n1\t2\tthree\t4\n")
    with pytest.raises(DataError) as e:
        read_delimited_rows(p, "\t", ["user_id", "item_id", "rating", "timestamp"],
                            ["user_id", "item_id", "rating", "timestamp"])
    assert e.value.line == 2 and e.value.column == "rating"
    p.write_text("1\t2\t3\t4\n1\t2\t3\n")
    with pytest.raises(DataError, match="expected 4 fields") as e:
        read_delimited_rows(p, "\t", ["a", "b", "c", "d"], [])
    assert e.value.line == 2
