"""Every content block of every item, aligned to item indices: :class:`ItemFeatures`.

Row ``i`` of each block belongs to item index ``i`` (``item_ids[i - 1]``, the external id), and row
0 is padding (all zeros, never missing). Blocks, each optional:

=====================  ===================  ==============================================
``text``               ``[N+1, d_t]`` f32   L2-normalised LM vectors of the item text
``text_missing``       ``[N+1]`` f32        1 where the item had no text (its vector is 0)
``vectors``            ``[N+1, d_v]`` f32   user-supplied vectors (images, ...)
``vectors_missing``    ``[N+1]`` f32        1 where the file had no vector (its vector is 0)
``categorical[name]``  ``[N+1, K]`` i64     attribute ids (0 none, 1 unknown), see attributes
``numeric``            ``[N+1, F]`` f32     normalised numeric attributes (0 where missing)
``numeric_missing``    ``[N+1, F]`` f32     1 where a numeric attribute was missing
=====================  ===================  ==============================================

The features may cover more items than a model was trained on: :meth:`ItemFeatures.extend` appends
items (e.g. catalog items without interactions) with the text model, vocabularies and numeric
statistics fixed at build time, so a content-only encoder scores them exactly as it would have.

Stored without pickle: :meth:`ItemFeatures.arrays` (safetensors-ready numpy arrays) and
:meth:`ItemFeatures.metadata` (JSON), written by :meth:`ItemFeatures.save` as
``item_features.safetensors`` + ``item_features.json``.

``report`` counts every fallback: items not in the catalog, catalog items without interactions,
empty texts (zero vector), missing titles, attribute values missing / unknown / truncated, missing
numeric values, items without a user vector, ids of the vector file that are not items.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from seqrec.content.attributes import AttributeEncoder
from seqrec.content.item_text import aligned_rows, check_unique_ids, item_texts
from seqrec.content.text import TextEncoder
from seqrec.config import ContentConfig, from_dict
from seqrec.content.vectors import ItemVectors, align_item_vectors, read_item_vectors
from seqrec.data.log import ItemCatalog
from seqrec.data.vocab import Vocab
from seqrec.errors import ArtifactError, ConfigError
from seqrec.fsutil import atomic_write_bytes, atomic_write_text

logger = logging.getLogger(__name__)

FEATURES_FORMAT = 1
ARRAYS_FILE = "item_features.safetensors"
META_FILE = "item_features.json"
_EXAMPLES = 5


@dataclass(frozen=True)
class ContentSchema:
    """The shapes an item encoder is built for (everything except the number of items)."""

    text_dim: int | None = None
    vectors_dim: int | None = None
    categorical: tuple[tuple[str, int, int], ...] = ()
    """``(name, num_embeddings, width K)`` per categorical field, in order."""
    numeric: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {"text_dim": self.text_dim, "vectors_dim": self.vectors_dim,
                "categorical": [list(c) for c in self.categorical], "numeric": list(self.numeric)}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ContentSchema:
        return cls(text_dim=d.get("text_dim"), vectors_dim=d.get("vectors_dim"),
                   categorical=tuple((str(n), int(v), int(k)) for n, v, k in d.get("categorical", [])),
                   numeric=tuple(d.get("numeric", [])))

    @property
    def empty(self) -> bool:
        return (self.text_dim is None and self.vectors_dim is None and not self.categorical
                and not self.numeric)


def _padded(block: np.ndarray) -> np.ndarray:
    """Prepend the zero padding row: ``[N, ...] -> [N+1, ...]``."""
    return np.concatenate([np.zeros((1, *block.shape[1:]), dtype=block.dtype), block])


@dataclass
class ItemFeatures:
    """Content of items ``1..N`` (row 0 padding); see the module docstring for the blocks."""

    item_ids: list[Any]
    text: np.ndarray | None = None
    text_missing: np.ndarray | None = None
    vectors: np.ndarray | None = None
    vectors_missing: np.ndarray | None = None
    categorical: dict[str, np.ndarray] = field(default_factory=dict)
    numeric: np.ndarray | None = None
    numeric_missing: np.ndarray | None = None
    attributes: AttributeEncoder | None = None
    """Fitted vocabularies and statistics (reused, frozen, by :meth:`extend`)."""
    text_model: dict[str, Any] | None = None
    """``{"name", "identity", "dim"}`` of the text model the vectors come from."""
    config: ContentConfig = field(default_factory=ContentConfig)
    report: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        rows = len(self.item_ids) + 1
        for name, arr in self._blocks():
            if arr.shape[0] != rows:
                raise ValueError(f"block {name!r} has {arr.shape[0]} rows for {rows - 1} items + "
                                 "padding")

    # ------------------------------------------------------------------ shape and lookup

    @property
    def n_items(self) -> int:
        """Number of real items N (rows are 0..N)."""
        return len(self.item_ids)

    @property
    def vocab(self) -> Vocab:
        """External id <-> row index (1-based), same convention as the model's item vocabulary."""
        return Vocab(self.item_ids)

    def check_aligned(self, item_ids: Sequence[Any]) -> None:
        """Raise unless row ``i`` is item ``item_ids[i - 1]`` for every id given (the model's
        vocabulary: ``seqs.items_vocab.ids``); extra rows after them (cold items) are fine."""
        if len(item_ids) > self.n_items:
            raise ArtifactError(f"item features cover {self.n_items} items, the model has "
                                f"{len(item_ids)}")
        for i, (a, b) in enumerate(zip(item_ids, self.item_ids), start=1):
            if a != b:
                raise ArtifactError(f"item features row {i} is item {b!r}, the model's index {i} "
                                    f"is item {a!r}: features and vocabulary are not aligned")

    def schema(self) -> ContentSchema:
        cats = self.attributes.categorical if self.attributes is not None else []
        return ContentSchema(
            text_dim=None if self.text is None else int(self.text.shape[1]),
            vectors_dim=None if self.vectors is None else int(self.vectors.shape[1]),
            categorical=tuple((f.name, f.num_embeddings, int(self.categorical[f.name].shape[1]))
                              for f in cats),
            numeric=tuple(f.name for f in self.attributes.numeric) if self.attributes else (),
        )

    def _blocks(self) -> list[tuple[str, np.ndarray]]:
        out = [(n, getattr(self, n)) for n in ("text", "text_missing", "vectors", "vectors_missing",
                                                "numeric", "numeric_missing")
               if getattr(self, n) is not None]
        return out + [(f"cat.{k}", v) for k, v in self.categorical.items()]

    # ------------------------------------------------------------------ serialisation

    def arrays(self) -> dict[str, np.ndarray]:
        """Every block as a contiguous numpy array (keys ``text``, ``cat.<field>``, ...):
        ready for ``safetensors.numpy``."""
        return {name: np.ascontiguousarray(arr) for name, arr in self._blocks()}

    def metadata(self) -> dict[str, Any]:
        """Everything but the arrays, as JSON-able data."""
        return {
            "format": FEATURES_FORMAT,
            "item_ids": self.item_ids,
            "schema": self.schema().to_dict(),
            "attributes": None if self.attributes is None else self.attributes.to_dict(),
            "text_model": self.text_model,
            "config": self.config.to_dict(),
            "report": self.report,
        }

    @classmethod
    def from_arrays(cls, arrays: dict[str, np.ndarray], meta: dict[str, Any]) -> ItemFeatures:
        if meta.get("format") != FEATURES_FORMAT:
            raise ArtifactError(f"item features format {meta.get('format')} is not supported "
                                f"(expected {FEATURES_FORMAT})")
        attrs = meta.get("attributes")
        return cls(
            item_ids=list(meta["item_ids"]),
            text=arrays.get("text"), text_missing=arrays.get("text_missing"),
            vectors=arrays.get("vectors"), vectors_missing=arrays.get("vectors_missing"),
            categorical={k[4:]: v for k, v in arrays.items() if k.startswith("cat.")},
            numeric=arrays.get("numeric"), numeric_missing=arrays.get("numeric_missing"),
            attributes=None if attrs is None else AttributeEncoder.from_dict(attrs),
            text_model=meta.get("text_model"),
            config=from_dict(ContentConfig, meta.get("config", {}), where="item features config"),
            report=meta.get("report", {}),
        )

    def save(self, folder: str | Path) -> None:
        """Write ``item_features.safetensors`` and ``item_features.json`` into ``folder`` (each
        atomically; inside an artifact's ``atomic_directory`` the pair is atomic too)."""
        from safetensors.numpy import save  # noqa: PLC0415

        folder = Path(folder)
        atomic_write_bytes(folder / ARRAYS_FILE, save(self.arrays(), metadata={"format": "1"}))
        atomic_write_text(folder / META_FILE, json.dumps(self.metadata(), indent=1,
                                                         default=_json_default))

    @classmethod
    def load(cls, folder: str | Path) -> ItemFeatures:
        from safetensors.numpy import load_file  # noqa: PLC0415

        folder = Path(folder)
        missing = [f for f in (ARRAYS_FILE, META_FILE) if not (folder / f).exists()]
        if missing:
            raise ArtifactError(f"{folder}: no item features ({', '.join(missing)} missing)")
        meta = json.loads((folder / META_FILE).read_text())
        return cls.from_arrays(load_file(str(folder / ARRAYS_FILE)), meta)

    # ------------------------------------------------------------------ growing the catalog

    def extend(
        self,
        item_ids: Sequence[Any],
        catalog: ItemCatalog,
        *,
        text_encoder: TextEncoder | None = None,
        cache_dir: str | Path | None = None,
        progress: bool = True,
        vectors: ItemVectors | None = None,
    ) -> ItemFeatures:
        """A new :class:`ItemFeatures` with ``item_ids`` appended as rows ``N+1, N+2, ...``.

        Ids already covered are skipped (counted), so passing every catalog id adds exactly the
        catalog items without interactions. Existing rows are unchanged; new rows use this
        object's text model, attribute vocabularies and statistics (values unseen at build time
        map to 'unknown'). With a vector block, the vectors come from ``vectors`` or are re-read
        from ``config.vectors``.
        """
        known = self.vocab
        new_ids = list(dict.fromkeys(i for i in item_ids if i not in known))
        skipped = len(item_ids) - len(new_ids)
        if not new_ids:
            out = dataclasses.replace(self, report={**self.report})
            out.report["extended"] = {"added": 0, "already_present": skipped}
            return out
        if vectors is None and self.vectors is not None:
            vectors = _read_vectors(self.config, expected_dim=self.vectors.shape[1])
        add = _build(new_ids, catalog, self.config, attributes=self.attributes,
                     text_encoder=text_encoder, cache_dir=cache_dir, progress=progress,
                     vectors=vectors if self.vectors is not None else None,
                     text_model=self.text_model, with_text=self.text is not None,
                     with_attributes=self.attributes is not None, catalog_coverage=False)
        if self.vectors is not None and add.vectors is not None \
                and add.vectors.shape[1] != self.vectors.shape[1]:
            raise ConfigError(f"new vectors have dimension {add.vectors.shape[1]}, the features "
                              f"{self.vectors.shape[1]}")

        def cat(a: np.ndarray | None, b: np.ndarray | None) -> np.ndarray | None:
            return None if a is None or b is None else np.concatenate([a, b[1:]])

        report = {**self.report,
                  "extended": {"added": len(new_ids), "already_present": skipped, **add.report}}
        return ItemFeatures(
            item_ids=self.item_ids + new_ids,
            text=cat(self.text, add.text), text_missing=cat(self.text_missing, add.text_missing),
            vectors=cat(self.vectors, add.vectors),
            vectors_missing=cat(self.vectors_missing, add.vectors_missing),
            categorical={k: cat(v, add.categorical[k]) for k, v in self.categorical.items()},  # type: ignore[misc]
            numeric=cat(self.numeric, add.numeric),
            numeric_missing=cat(self.numeric_missing, add.numeric_missing),
            attributes=self.attributes, text_model=self.text_model, config=self.config,
            report=report,
        )


def _json_default(o: Any) -> Any:
    if isinstance(o, np.integer):
        return int(o)
    if isinstance(o, np.floating):
        return float(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def _read_vectors(config: ContentConfig, expected_dim: int | None = None) -> ItemVectors:
    if config.vectors is None:
        raise ConfigError("no vector file configured")
    return read_item_vectors(config.vectors, ids_path=config.vectors_ids,
                             id_column=config.vectors_id_column,
                             vector_column=config.vectors_column, expected_dim=expected_dim,
                             nonfinite=config.vectors_nonfinite)


def _build(
    item_ids: list[Any],
    catalog: ItemCatalog,
    config: ContentConfig,
    *,
    attributes: AttributeEncoder | None,
    text_encoder: TextEncoder | None,
    cache_dir: str | Path | None,
    progress: bool,
    vectors: ItemVectors | None,
    text_model: dict[str, Any] | None,
    with_text: bool,
    with_attributes: bool,
    catalog_coverage: bool,
) -> ItemFeatures:
    """Build features of ``item_ids``; a given ``attributes`` encoder is used frozen."""
    check_unique_ids(catalog)
    rows, present = aligned_rows(catalog, item_ids)
    report: dict[str, Any] = {"items": len(item_ids), "not_in_catalog": present.count(False)}
    if report["not_in_catalog"]:
        absent = [i for i, p in zip(item_ids, present) if not p]
        report["not_in_catalog_examples"] = absent[:_EXAMPLES]
        logger.warning("%d of %d items are not in the item catalog: no text or attributes",
                       len(absent), len(item_ids))
    if catalog_coverage and len(catalog):
        ids = catalog.df["item_id"]
        covered = pl.Series(list(item_ids)).cast(ids.dtype, strict=False).implode()
        cold = ids.filter(~ids.is_in(covered))
        report["catalog_items_without_interactions"] = len(cold)
        if len(cold):
            report["catalog_items_without_interactions_examples"] = cold.head(_EXAMPLES).to_list()
            logger.info("%d catalog items have no interactions: not in the features (add them "
                        "with ItemFeatures.extend for cold-start scoring)", len(cold))

    text = text_missing = None
    if with_text:
        texts, report["text"] = item_texts(catalog, item_ids, config.text_fields,
                                            config.text_fallback_fields)
        enc = text_encoder or TextEncoder(config.text_model, cache_dir=cache_dir,
                                          batch_size=config.text_batch_size, progress=progress)
        if text_model is not None and enc.identity != text_model.get("identity"):
            raise ConfigError(f"these features hold vectors of text model {text_model.get('name')!r};"
                              f" encoding new items with {enc.model.name!r} would mix two vector "
                              "spaces")
        res = enc.encode(texts)
        report["text"].update({k: res.report[k] for k in ("cached", "encoded", "unique_texts")})
        report["text"]["model"] = enc.model.name
        text = _padded(res.vectors)  # [N+1, d_t]
        text_missing = _padded((np.abs(res.vectors).sum(1) == 0).astype(np.float32))  # [N+1]
        text_model = {"name": enc.model.name, "identity": enc.identity, "dim": int(text.shape[1])}

    cat: dict[str, np.ndarray] = {}
    numeric = numeric_missing = None
    if with_attributes:
        if attributes is None:
            fit_rows = rows.filter(pl.Series(present)) if any(present) else rows
            attributes = AttributeEncoder.fit(
                fit_rows, categorical=config.categorical, numeric=config.numeric,
                log_scale=config.log_scale, min_count=config.min_count,
                max_values=config.max_values)
            if not attributes.names:
                logger.info("the item catalog has no attribute columns")
                attributes = None
        if attributes is not None:
            block = attributes.transform(rows)
            cat = {k: _padded(v) for k, v in block.categorical.items()}  # [N+1, K] each
            if attributes.numeric:
                numeric = _padded(block.numeric)  # [N+1, F]
                numeric_missing = _padded(block.numeric_missing)
            report["attributes"] = block.report

    vec = vec_missing = None
    if vectors is not None:
        vec, vec_missing, report["vectors"] = align_item_vectors(
            vectors, item_ids, missing=config.vectors_missing)

    return ItemFeatures(item_ids=list(item_ids), text=text, text_missing=text_missing,
                        vectors=vec, vectors_missing=vec_missing, categorical=cat,
                        numeric=numeric, numeric_missing=numeric_missing, attributes=attributes,
                        text_model=text_model if with_text else None, config=config, report=report)


def build_item_features(
    item_ids: Sequence[Any],
    catalog: ItemCatalog,
    config: ContentConfig | None = None,
    *,
    text_encoder: TextEncoder | None = None,
    cache_dir: str | Path | None = None,
    progress: bool = True,
    vectors: ItemVectors | None = None,
) -> ItemFeatures:
    """Content features of ``item_ids`` (external ids in index order: ``seqs.items_vocab.ids``).

    Args:
        item_ids: row ``i`` of every block belongs to ``item_ids[i - 1]``.
        catalog: the item catalog (items may be missing from it, counted; it may hold more items).
        config: which blocks and how (default :class:`ContentConfig`: text + attributes).
        text_encoder: a ready :class:`TextEncoder` (default: one for ``config.text_model``).
        cache_dir: text vector cache root (default ``$SEQREC_CACHE_DIR/text-vectors`` or
            ``~/.cache/seqrec/text-vectors``).
        progress: progress bar while encoding text.
        vectors: already-read vectors (default: read ``config.vectors`` when set).

    Raises ConfigError when no block can be built (text off, no attributes, no vectors).
    """
    config = config or ContentConfig()
    item_ids = list(item_ids)
    if vectors is None and config.vectors is not None:
        vectors = _read_vectors(config)
    feats = _build(item_ids, catalog, config, attributes=None, text_encoder=text_encoder,
                   cache_dir=cache_dir, progress=progress, vectors=vectors, text_model=None,
                   with_text=config.text, with_attributes=config.attributes, catalog_coverage=True)
    if feats.schema().empty:
        raise ConfigError("no item content: text is off, the catalog has no attributes and no "
                          "vector file was given")
    return feats
