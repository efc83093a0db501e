"""Catalog attributes -> categorical ids and normalised numbers, on the real Beauty and ML-100K
catalogs and on hand-made rows with known answers."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest

from seqrec.content.attributes import UNKNOWN, AttributeEncoder, detect_fields
from seqrec.content.item_text import compose_text, item_texts
from seqrec.data.log import ItemCatalog
from seqrec.errors import ConfigError, DataError


@pytest.fixture(scope="module")
def beauty_catalog(data_dir) -> ItemCatalog:
    from seqrec.data.amazon import read_s3rec

    return read_s3rec(data_dir / "amazon_beauty", "Beauty")[1]


@pytest.fixture(scope="module")
def ml100k_catalog(data_dir) -> ItemCatalog:
    from seqrec.data.movielens import read_ml100k_items

    return read_ml100k_items(data_dir / "ml-100k")


def test_beauty_fields_detected_and_encoded(beauty_catalog):
    df = beauty_catalog.df
    assert detect_fields(df) == (["categories", "brand", "attributes"], ["price"])
    enc = AttributeEncoder.fit(df)
    block = enc.transform(df)
    n = df.height
    brand = block.categorical["brand"]
    assert brand.shape == (n, 1)
    # every null brand is 'no value' (0), every other brand a real value (>= 2)
    assert int((brand[:, 0] == 0).sum()) == df["brand"].null_count() == block.report["brand"]["missing"]
    assert (brand[df["brand"].is_not_null().to_numpy(), 0] >= 2).all()
    cats = block.categorical["categories"]
    assert cats.shape[1] == df["categories"].list.len().max()
    # the ids decode back to the item's categories
    f = enc.categorical[0]
    row = df.row(0, named=True)
    decoded = [f.values[j - 2] for j in cats[0] if j]
    assert decoded == list(dict.fromkeys(row["categories"]))
    # price: log1p, standardised over the items that have one; missing -> 0 with a flag
    price = df["price"].to_numpy()
    has = np.isfinite(price)
    assert block.report["price"]["missing"] == int((~has).sum()) == df["price"].null_count()
    assert enc.numeric[0].log
    x = block.numeric[:, 0]
    assert abs(x[has].mean()) < 0.01 and abs(x[has].std() - 1.0) < 0.05
    assert (x[~has] == 0).all() and (block.numeric_missing[~has, 0] == 1).all()
    assert (block.numeric_missing[has, 0] == 0).all()


def test_ml100k_genres_and_year(ml100k_catalog):
    df = ml100k_catalog.df
    enc = AttributeEncoder.fit(df)
    assert [f.name for f in enc.categorical] == ["categories"]
    assert [f.name for f in enc.numeric] == ["year"] and not enc.numeric[0].log
    block = enc.transform(df)
    toy = df["item_id"].to_list().index(1)
    genres = enc.categorical[0]
    assert [genres.values[j - 2] for j in block.categorical["categories"][toy] if j] == \
        ["Animation", "Children's", "Comedy"]
    # the most frequent genre gets the first real id
    counts = df["categories"].explode().value_counts(sort=True)
    assert genres.values[0] == counts["categories"][0]
    years = df["year"].to_numpy().astype(float)
    x = block.numeric[:, 0]
    assert block.report["year"]["missing"] == int(np.isnan(years).sum())
    ok = ~np.isnan(years)
    np.testing.assert_allclose(x[ok], np.clip((years[ok] - years[ok].mean()) / years[ok].std(),
                                              -5, 5), rtol=1e-5, atol=1e-5)


def test_unknown_rare_and_truncated_values():
    fit = pl.DataFrame({"tags": [["a", "b"], ["a"], ["a", "c"], []], "brand": ["x", "x", "y", None],
                        "price": [1.0, 3.0, None, 5.0]})
    enc = AttributeEncoder.fit(fit, min_count=2, max_values=2, log_scale=[])
    tags = enc.categorical[0]
    assert tags.values == ["a"] and tags.width == 2  # b, c are rare: 'unknown'
    new = pl.DataFrame({"tags": [["a", "b", "c"], ["z"], None], "brand": ["x", "new", "y"],
                        "price": [3.0, float("nan"), 1e9]})
    block = enc.transform(new)
    assert block.categorical["tags"].tolist() == [[2, UNKNOWN], [UNKNOWN, 0], [0, 0]]
    assert block.report["tags"] == {"missing": 1, "unknown_values": 2, "truncated": 1}
    assert block.categorical["brand"].tolist() == [[2], [UNKNOWN], [UNKNOWN]]  # y seen once < 2
    assert block.numeric[0, 0] == 0.0 and block.numeric[2, 0] == 5.0  # mean, and clipped
    assert block.numeric_missing[:, 0].tolist() == [0.0, 1.0, 0.0]
    # JSON round trip encodes identically
    again = AttributeEncoder.from_dict(enc.to_dict()).transform(new)
    for k in block.categorical:
        np.testing.assert_array_equal(block.categorical[k], again.categorical[k])
    np.testing.assert_array_equal(block.numeric, again.numeric)


def test_named_fields_must_exist():
    df = pl.DataFrame({"item_id": [1], "brand": ["x"]})
    with pytest.raises(ConfigError, match="'colour'.*brand"):
        AttributeEncoder.fit(df, categorical=["colour"])
    with pytest.raises(ConfigError, match="not numeric"):
        AttributeEncoder.fit(df, numeric=["brand"])


def test_free_text_columns_are_not_categories():
    df = pl.DataFrame({"description": [f"text {i}" for i in range(200)],
                       "colour": ["red", "blue"] * 100})
    assert detect_fields(df) == (["colour"], [])


def test_item_text_composition(beauty_catalog, ml100k_catalog):
    row = {"title": "Great Lash", "brand": "Maybelline", "categories": ["Beauty", "Makeup", "Beauty"]}
    assert compose_text(row, ["title", "brand", "categories"]) == \
        "Great Lash. Brand: Maybelline. Categories: Beauty, Makeup"
    texts, report = item_texts(ml100k_catalog, [1, 999_999])
    assert texts == ["Toy Story (1995)", ""]  # the default text is the title
    assert report == {"items": 2, "not_in_catalog": 1, "missing_title": 1, "fallback_text": 0,
                      "empty_text": 1}
    texts, _ = item_texts(ml100k_catalog, [1], fields=["title", "categories"])
    assert texts == ["Toy Story (1995). Categories: Animation, Children's, Comedy"]
    with pytest.raises(ConfigError, match="'summary'"):
        item_texts(ml100k_catalog, [1], fields=["title", "summary"])


def test_items_without_a_title_fall_back_to_brand_and_categories(beauty_catalog):
    no_title = beauty_catalog.df.filter(pl.col("title").is_null())
    ids = no_title["item_id"].to_list()
    texts, report = item_texts(beauty_catalog, ids)
    assert report["missing_title"] == report["fallback_text"] == len(ids) == 7
    assert report["empty_text"] == 0
    row = no_title.row(0, named=True)
    assert texts[0] == compose_text(row, ["brand", "categories"])
    assert texts[0].startswith(("Brand:", "Categories:")) and row["categories"][-1] in texts[0]
    texts, report = item_texts(beauty_catalog, ids, fallback_fields=[])
    assert texts == [""] * 7 and report["empty_text"] == 7


def test_duplicate_catalog_ids_are_an_error():
    cat = ItemCatalog(pl.DataFrame({"item_id": [1, 2, 2], "title": ["a", "b", "c"]}))
    with pytest.raises(DataError, match="item 2 appears 2 times"):
        item_texts(cat, [1, 2])
