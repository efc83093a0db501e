"""ItemFeatures: every block aligned to item indices (row 0 padding), fallbacks counted, cold
items appended with the vocabularies frozen, and a pickle-free round trip."""

from __future__ import annotations

import json

import numpy as np
import polars as pl
import pytest

from seqrec.content.features import ContentConfig, ItemFeatures, build_item_features
from seqrec.content.item_text import item_texts
from seqrec.content.text import encode_texts
from seqrec.data.log import ItemCatalog
from seqrec.data.preprocess import sequences_from_lists
from seqrec.errors import ArtifactError, ConfigError, DataError

NO_TEXT = ContentConfig(text=False)


@pytest.fixture(scope="module")
def beauty_catalog(data_dir) -> ItemCatalog:
    from seqrec.data.amazon import read_s3rec

    return read_s3rec(data_dir / "amazon_beauty", "Beauty")[1]


@pytest.fixture(scope="module")
def ml100k_catalog(data_dir) -> ItemCatalog:
    from seqrec.data.movielens import read_ml100k_items

    return read_ml100k_items(data_dir / "ml-100k")


@pytest.fixture(scope="module")
def text_cache(tmp_path_factory):
    return tmp_path_factory.mktemp("text-cache")


def test_attribute_blocks_align_with_the_vocabulary(beauty_catalog):
    # the model's vocabulary: first appearance in these histories, not catalog order
    seqs = sequences_from_lists([[3, 1, 7], [7, 12, 5], [2, 999_999]])
    feats = build_item_features(seqs.items_vocab.ids, beauty_catalog, NO_TEXT)
    assert feats.n_items == seqs.n_items == 7 and feats.item_ids == [3, 1, 7, 12, 5, 2, 999_999]
    df = beauty_catalog.df
    brand = feats.attributes.categorical[1]
    assert brand.name == "brand"
    for i, ext in enumerate(feats.item_ids, start=1):
        row = df.filter(pl.col("item_id") == ext)
        want = row["brand"][0] if row.height else None
        got = feats.categorical["brand"][i, 0]
        assert (brand.values[got - 2] if got >= 2 else None) == want
    # row 0 is padding everywhere; the item not in the catalog is all 'missing'
    assert not feats.categorical["categories"][0].any() and not feats.numeric[0].any()
    assert not feats.numeric_missing[0].any()
    assert not feats.categorical["categories"][7].any() and feats.numeric_missing[7, 0] == 1
    assert feats.report["not_in_catalog"] == 1
    assert feats.report["not_in_catalog_examples"] == [999_999]
    assert feats.report["catalog_items_without_interactions"] == beauty_catalog.df.height - 6


def test_text_block_is_the_encoded_item_text(ml100k_catalog, text_cache):
    ids = [50, 1, 181, 424242]  # Star Wars, Toy Story, Return of the Jedi, not in the catalog
    feats = build_item_features(ids, ml100k_catalog, ContentConfig(), cache_dir=text_cache,
                                progress=False)
    assert feats.text.shape == (5, 384) and feats.text.dtype == np.float32
    texts, _ = item_texts(ml100k_catalog, ids)
    want = encode_texts(texts, cache_dir=text_cache, progress=False).vectors
    np.testing.assert_array_equal(feats.text[1:], want)
    assert not feats.text[0].any() and not feats.text[4].any()
    assert feats.text_missing.tolist() == [0, 0, 0, 0, 1]
    assert feats.report["text"]["empty_text"] == 1
    sim = feats.text[1:4] @ feats.text[1]
    assert sim[2] > sim[1]  # Star Wars is closer to Return of the Jedi than to Toy Story
    assert feats.text_model["name"] == "all-MiniLM-L6-v2" and feats.text_model["dim"] == 384


def test_extend_adds_cold_items_with_frozen_vocabularies(ml100k_catalog, text_cache):
    trained = [1, 2, 3, 50, 181]
    feats = build_item_features(trained, ml100k_catalog, ContentConfig(), cache_dir=text_cache,
                                progress=False)
    all_ids = [3, 172, 1, 174, 50]  # two old ids (skipped), 172 and 174 are new
    big = feats.extend(all_ids, ml100k_catalog, cache_dir=text_cache, progress=False)
    assert big.item_ids == trained + [172, 174]
    assert big.report["extended"]["added"] == 2 and big.report["extended"]["already_present"] == 3
    for name, arr in feats.arrays().items():
        np.testing.assert_array_equal(big.arrays()[name][:6], arr)  # old rows unchanged
    # a new row equals what the same (frozen) pipeline gives for that item directly
    solo = feats.extend([174], ml100k_catalog, cache_dir=text_cache, progress=False)
    for name, arr in solo.arrays().items():
        np.testing.assert_array_equal(big.arrays()[name][7], arr[6])
    assert big.attributes is feats.attributes and big.schema() == feats.schema()
    unchanged = feats.extend(trained, ml100k_catalog, cache_dir=text_cache, progress=False)
    assert unchanged.n_items == feats.n_items and unchanged.report["extended"]["added"] == 0


def test_extend_maps_unseen_values_to_unknown(beauty_catalog):
    df = beauty_catalog.df
    brands = df.filter(pl.col("brand").is_not_null())
    first = brands.filter(pl.col("brand") == brands["brand"][0])["item_id"].to_list()[:3]
    other = brands.filter(pl.col("brand") != brands["brand"][0])["item_id"][0]
    feats = build_item_features(first, beauty_catalog, NO_TEXT)
    assert feats.attributes.categorical[1].values == [brands["brand"][0]]
    big = feats.extend([other], beauty_catalog)
    assert big.categorical["brand"][-1, 0] == 1  # 'unknown'
    assert big.report["extended"]["attributes"]["brand"]["unknown_values"] == 1


def test_text_model_mismatch_is_refused(ml100k_catalog, text_cache, tmp_path):
    feats = build_item_features([1, 2], ml100k_catalog, ContentConfig(), cache_dir=text_cache,
                                progress=False)
    other = ItemFeatures.from_arrays(feats.arrays(), {**feats.metadata(), "text_model": {
        **feats.text_model, "name": "another-model", "identity": "hub:another-model"}})
    with pytest.raises(ConfigError, match="would mix two vector spaces"):
        other.extend([3], ml100k_catalog, cache_dir=text_cache, progress=False)


def test_save_load_round_trip(beauty_catalog, tmp_path):
    feats = build_item_features([4, 83, 165, 77777], beauty_catalog, NO_TEXT)
    feats.save(tmp_path)
    meta = json.loads((tmp_path / "item_features.json").read_text())
    assert meta["item_ids"] == [4, 83, 165, 77777] and meta["schema"]["numeric"] == ["price"]
    back = ItemFeatures.load(tmp_path)
    assert back.item_ids == feats.item_ids and back.schema() == feats.schema()
    assert back.report == feats.report and back.config == feats.config
    for name, arr in feats.arrays().items():
        np.testing.assert_array_equal(back.arrays()[name], arr)
        assert back.arrays()[name].dtype == arr.dtype
    assert back.attributes.to_dict() == feats.attributes.to_dict()
    back.check_aligned([4, 83, 165])  # a model vocabulary that is a prefix: fine
    with pytest.raises(ArtifactError, match="row 2 is item 83, the model's index 2 is item 165"):
        back.check_aligned([4, 165])


def test_vector_block_from_a_file(beauty_catalog, tmp_path):
    ids = [4, 83, 165]
    np.save(tmp_path / "img.npy", np.arange(6, dtype=np.float32).reshape(2, 3))
    (tmp_path / "img.ids.json").write_text(json.dumps([165, 4]))
    cfg = ContentConfig(text=False, attributes=False, vectors=str(tmp_path / "img.npy"))
    feats = build_item_features(ids, beauty_catalog, cfg)
    assert feats.vectors.tolist() == [[0, 0, 0], [3, 4, 5], [0, 0, 0], [0, 1, 2]]
    assert feats.vectors_missing.tolist() == [0, 0, 1, 0]
    assert feats.report["vectors"]["missing_items"] == 1
    # extend re-reads the file: 214 has no vector there
    big = feats.extend([214], beauty_catalog)
    assert big.vectors.shape == (5, 3) and big.vectors_missing[-1] == 1
    with pytest.raises(DataError, match="have no vector"):
        build_item_features(ids, beauty_catalog, ContentConfig(
            text=False, attributes=False, vectors=str(tmp_path / "img.npy"),
            vectors_missing="error"))


def test_no_content_and_bad_config(beauty_catalog):
    bare = ItemCatalog(pl.DataFrame({"item_id": [1, 2]}))
    with pytest.raises(ConfigError, match="no item content"):
        build_item_features([1, 2], bare, NO_TEXT)
    with pytest.raises(ConfigError, match="vectors_missing"):
        ContentConfig(vectors_missing="mean")
    dup = ItemCatalog(pl.DataFrame({"item_id": [1, 1], "brand": ["a", "b"]}))
    with pytest.raises(DataError, match="item 1 appears 2 times"):
        build_item_features([1], dup, NO_TEXT)


def test_string_ids_match_an_integer_catalog(beauty_catalog):
    """Ids given as strings (as from a text file) find their integer catalog rows."""
    feats = build_item_features(["4", "83"], beauty_catalog, NO_TEXT)
    assert feats.report["not_in_catalog"] == 0
    assert feats.categorical["brand"][1:].min() >= 2
