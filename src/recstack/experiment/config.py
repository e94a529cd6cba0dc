"""Experiment configs: typed dataclasses read from YAML, TOML or JSON and validated.

A config file is a mapping whose sections mirror :class:`ExperimentConfig`::

    name: my-ratings
    data:
      interactions: ratings.csv            # CSV/Parquet path (relative to this file) or "movielens-100k"
      columns: {user: userId, item: movieId, rating: rating, timestamp: timestamp}
    split: {method: leave-last-out}
    model: {kind: two_tower, embedding_dim: 32}
    training: {epochs: 10, batch_size: 1024}

Validation reports every problem at once, each with its dotted path: an
unknown key (with the closest valid one), a wrong type, a value outside its
allowed set. ``model`` holds ``kind`` plus that kind's hyperparameters, which
are validated against the dataclass the kind registered
(:func:`recstack.experiment.model_kinds.register_model_kind`).
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import os
import sys
import types
import typing
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from ..core.errors import ConfigError, suggest

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10: the backport, a declared dependency there
    import tomli as tomllib

#: Interaction sources that need no file: the name loads a built-in dataset.
BUILTIN_DATASETS = ("movielens-100k",)
PROTOCOLS = ("seed", "exclude-seen")


# -- sections ------------------------------------------------------------------------------------
@dataclass
class ColumnsConfig:
    """Which columns of the interactions table hold what (only user and item are required)."""

    user: str = "user_id"
    item: str = "item_id"
    rating: str | None = None
    timestamp: str | None = None
    weight: str | None = None


@dataclass
class FeatureTableConfig:
    """An item or user feature table: one row per id, feature columns by type."""

    path: str
    id: str
    categorical: list[str] = field(default_factory=list)
    numeric: list[str] = field(default_factory=list)
    text: str | None = None


@dataclass
class DataConfig:
    """Interactions (CSV/Parquet file or built-in dataset) and optional feature tables.

    ``duplicates`` says what to do with repeated (user, item) pairs: keep the last
    or first row of each pair (file order), keep all rows, or stop with an error.
    """

    interactions: str
    columns: ColumnsConfig = field(default_factory=ColumnsConfig)
    items: FeatureTableConfig | None = None
    users: FeatureTableConfig | None = None
    duplicates: Literal["keep-last", "keep-first", "keep-all", "error"] = "keep-last"
    csv_separator: str = ","


@dataclass
class SplitConfig:
    """Train/test split (recstack.datasets.splits) and an optional validation split of train.

    ``validation_fraction`` > 0 carves a validation set out of the training part with the
    same method (for leave-last-out: each user's last remaining interaction).
    """

    method: Literal["random", "temporal", "leave-last-out"] = "random"
    train_fraction: float = 0.8
    validation_fraction: float = 0.0
    leave_out: int = 1
    seed: int = 42


@dataclass
class FeaturesConfig:
    """Preprocessing settings. ``vocabulary``: fit the user/item vocabularies on the training
    rows only ("train", no leakage; test-only users and items are cold start) or on all rows
    ("all", as the TFRS tutorials do)."""

    vocabulary: Literal["train", "all"] = "train"
    text_max_tokens: int = 10_000
    text_max_length: int = 32


@dataclass
class RetrievalTaskConfig:
    """In-batch softmax retrieval loss (recstack.tasks.Retrieval); weight 0 disables its loss.

    ``sampled_negatives`` adds that many items per batch, drawn with replacement with probability
    proportional to count(item)^``sampled_negatives_alpha`` (1: popularity, 0: uniform), as
    extra negatives for every query: mixed negative sampling (Yang et al. 2020).
    ``logq_correction`` subtracts log Q(item) from every logit (Yi et al. 2019), which removes
    the popularity bias of the negatives: Q = the item's training frequency, or with sampled
    negatives its expected share of a batch's candidate slots, (B P_train + K P_sampled) / (B + K).
    """

    weight: float = 1.0
    temperature: float | None = None
    remove_accidental_hits: bool = False
    num_hard_negatives: int | None = None
    reduction: Literal["sum", "mean"] = "sum"
    logq_correction: bool = False
    sampled_negatives: int = 0
    sampled_negatives_alpha: float = 1.0


@dataclass
class RatingTaskConfig:
    """Rating regression (MSE, RMSE metric); needs ``data.columns.rating``; weight 0 disables it."""

    weight: float = 0.0


@dataclass
class TasksConfig:
    retrieval: RetrievalTaskConfig = field(default_factory=RetrievalTaskConfig)
    rating: RatingTaskConfig = field(default_factory=RatingTaskConfig)


@dataclass
class OptimizerConfig:
    name: Literal["adagrad", "adam", "adamw", "sgd"] = "adagrad"
    learning_rate: float = 0.1
    weight_decay: float = 0.0
    momentum: float = 0.0


@dataclass
class TrainingConfig:
    """``shuffle: false`` keeps fixed batches (the TFRS tutorials' cached pipeline);
    a checkpoint is written every ``checkpoint_every`` epochs and after the last one.
    ``precision: bf16`` runs the towers under bfloat16 autocast (for GPUs; the retrieval
    softmax stays in float32). ``threads`` sets torch's intra-op CPU threads for the run
    (0: torch's default, one per core); 1 avoids the slowdown of OpenMP threads waiting on
    each other when other jobs share the cores."""

    epochs: int = 3
    batch_size: int = 4096
    shuffle: bool = True
    validation_freq: int = 1
    train_metrics: bool = False
    checkpoint_every: int = 1
    keep_checkpoints: int = 2
    precision: Literal["float32", "bf16"] = "float32"
    threads: int = 0


@dataclass
class EvaluationConfig:
    """``protocols`` evaluated on the test split after training. "seed": each test row ranks
    its item among the whole catalogue (the TFRS tutorials' top-k accuracy); "exclude-seen":
    per user, items seen before the test split are removed from the ranking, metrics are
    per-user recall/NDCG. ``validation_protocol`` is used for the per-epoch validation."""

    protocols: list[Literal["seed", "exclude-seen"]] = field(default_factory=lambda: list(PROTOCOLS))
    validation_protocol: Literal["seed", "exclude-seen"] = "seed"
    ks: list[int] = field(default_factory=lambda: [1, 5, 10, 50, 100])
    batch_size: int = 4096


@dataclass
class OutputConfig:
    """``runs_dir`` (relative to the working directory) receives one folder per run."""

    runs_dir: str = "runs"
    plots: bool = True
    tensorboard: bool = False


@dataclass
class ModelConfig:
    """``kind`` names a registered model kind; ``params`` is that kind's hyperparameter dataclass."""

    kind: str = "two_tower"
    params: Any = None


@dataclass
class ExperimentConfig:
    """A whole experiment: data, split, features, model, tasks, optimizer, training, evaluation."""

    data: DataConfig
    name: str = "experiment"
    seed: int = 0
    device: Literal["cpu", "cuda", "auto"] = "cpu"
    split: SplitConfig = field(default_factory=SplitConfig)
    features: FeaturesConfig = field(default_factory=FeaturesConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    tasks: TasksConfig = field(default_factory=TasksConfig)
    optimizer: OptimizerConfig = field(default_factory=OptimizerConfig)
    training: TrainingConfig = field(default_factory=TrainingConfig)
    evaluation: EvaluationConfig = field(default_factory=EvaluationConfig)
    output: OutputConfig = field(default_factory=OutputConfig)

    def to_dict(self) -> dict[str, Any]:
        """Plain dict (YAML/JSON-ready) with ``model`` flattened to ``{kind, **params}``."""
        out = dataclasses.asdict(self)
        params = dataclasses.asdict(self.model.params) if dataclasses.is_dataclass(self.model.params) else {}
        out["model"] = {"kind": self.model.kind, **params}
        return out


# -- loading -----------------------------------------------------------------------------------------
def read_config_file(path: str | os.PathLike) -> dict[str, Any]:
    """Parse a .yaml/.yml, .toml or .json file into a dict (no validation yet)."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {path} does not exist.")
    text = path.read_text(encoding="utf-8")
    suffix = path.suffix.lower()
    try:
        if suffix in (".yaml", ".yml"):
            import yaml

            raw = yaml.safe_load(text)
        elif suffix == ".toml":
            raw = tomllib.loads(text)
        elif suffix == ".json":
            raw = json.loads(text)
        else:
            raise ConfigError(f"{path}: unknown config format {suffix!r}; use .yaml, .yml, .toml or .json.")
    except ConfigError:
        raise
    except Exception as exc:  # yaml.YAMLError, tomllib.TOMLDecodeError, json.JSONDecodeError
        raise ConfigError(f"{path} is not valid {suffix.lstrip('.').upper()}: {exc}") from exc
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of sections, got {type(raw).__name__}.")
    return raw


def apply_overrides(raw: dict[str, Any], overrides: Sequence[str]) -> dict[str, Any]:
    """Apply ``--set a.b.c=value`` overrides (values parsed as YAML: 5, 0.1, true, null, [64, 32]).

    Returns a new dict; missing intermediate sections are created.
    """
    import copy

    import yaml

    out = copy.deepcopy(raw)
    for item in overrides:
        key, sep, text = item.partition("=")
        key = key.strip()
        if not sep or not key or any(not part for part in key.split(".")):
            raise ConfigError(f"--set expects KEY=VALUE with a dotted KEY (e.g. training.epochs=5); got {item!r}.")
        try:
            value = yaml.safe_load(text) if text.strip() else None
        except yaml.YAMLError as exc:
            raise ConfigError(f"--set {item!r}: the value is not valid YAML ({exc}).") from exc
        node = out
        parts = key.split(".")
        for depth, part in enumerate(parts[:-1]):
            child = node.get(part)
            if child is None:
                child = node[part] = {}
            elif not isinstance(child, dict):
                raise ConfigError(f"--set {item!r}: {'.'.join(parts[:depth + 1])} is a value, not a section.")
            node = child
        node[parts[-1]] = value
    return out


def load_config(path: str | os.PathLike, overrides: Sequence[str] = ()) -> ExperimentConfig:
    """Read, override, validate and resolve paths (data paths are relative to the file)."""
    path = Path(path)
    raw = apply_overrides(read_config_file(path), overrides)
    config = parse_config(raw, source=str(path))
    return resolve_paths(config, path.parent)


def parse_config(raw: Mapping[str, Any], source: str = "config") -> ExperimentConfig:
    """Validate a raw mapping into an :class:`ExperimentConfig`; ConfigError lists every problem."""
    errors: list[str] = []
    raw = dict(raw)
    model_raw = raw.pop("model", None)
    config = _parse(ExperimentConfig, raw, "", errors, skip={"model"})
    model = _parse_model(model_raw, errors)
    if config is not None:
        config.model = model
        _check_values(config, errors)
    if errors:
        lines = "\n".join(f"  - {e}" for e in errors[:20])
        more = f"\n  ... and {len(errors) - 20} more" if len(errors) > 20 else ""
        raise ConfigError(f"{source}: invalid config:\n{lines}{more}")
    return config


def resolve_paths(config: ExperimentConfig, base: Path) -> ExperimentConfig:
    """Make data paths absolute (relative ones are taken from ``base``)."""
    def resolve(value: str) -> str:
        if value in BUILTIN_DATASETS:
            return value
        p = Path(value).expanduser()
        return str(p if p.is_absolute() else (base / p).resolve())

    config.data.interactions = resolve(config.data.interactions)
    for table in (config.data.items, config.data.users):
        if table is not None:
            table.path = resolve(table.path)
    return config


def dump_config(config: ExperimentConfig) -> str:
    """The full config (defaults included) as YAML text."""
    import yaml

    return yaml.safe_dump(config.to_dict(), sort_keys=False, default_flow_style=None, width=100)


# -- validation ------------------------------------------------------------------------------------
def _parse_model(raw: Any, errors: list[str]) -> ModelConfig:
    from .model_kinds import get_model_kind, model_kind_names

    if raw is None:
        raw = {}
    if not isinstance(raw, Mapping):
        errors.append(f"model: expected a mapping with 'kind' and its hyperparameters, got {_describe(raw)}")
        raw = {}
    raw = dict(raw)
    kind = raw.pop("kind", "two_tower")
    if not isinstance(kind, str):
        errors.append(f"model.kind: expected a string, got {_describe(kind)}")
        return ModelConfig()
    names = model_kind_names()
    if kind not in names:
        errors.append(f"model.kind: unknown model kind {kind!r}{suggest(kind, names)}; "
                      f"registered kinds: {', '.join(names)}")
        return ModelConfig(kind=kind)
    params = _parse(get_model_kind(kind).params, raw, "model", errors, context=f" for model kind {kind!r}")
    return ModelConfig(kind=kind, params=params)


def _check_values(c: ExperimentConfig, errors: list[str]) -> None:
    """Range checks that types alone cannot express."""
    def need(ok: bool, message: str) -> None:
        if not ok:
            errors.append(message)

    need(0 < c.split.train_fraction < 1, f"split.train_fraction: must be in (0, 1), got {c.split.train_fraction}")
    need(0 <= c.split.validation_fraction < 1,
         f"split.validation_fraction: must be in [0, 1), got {c.split.validation_fraction}")
    need(c.split.leave_out >= 1, f"split.leave_out: must be >= 1, got {c.split.leave_out}")
    for name in ("epochs", "batch_size", "validation_freq", "checkpoint_every", "keep_checkpoints"):
        value = getattr(c.training, name)
        need(value >= 1, f"training.{name}: must be >= 1, got {value}")
    need(c.training.threads >= 0, f"training.threads: must be >= 0 (0: torch's default), got {c.training.threads}")
    need(c.evaluation.batch_size >= 1, f"evaluation.batch_size: must be >= 1, got {c.evaluation.batch_size}")
    need(bool(c.evaluation.ks) and all(k >= 1 for k in c.evaluation.ks),
         f"evaluation.ks: must be a non-empty list of positive integers, got {c.evaluation.ks}")
    need(bool(c.evaluation.protocols), "evaluation.protocols: list at least one of 'seed', 'exclude-seen'")
    need(c.optimizer.learning_rate > 0, f"optimizer.learning_rate: must be > 0, got {c.optimizer.learning_rate}")
    need(c.tasks.retrieval.weight >= 0 and c.tasks.rating.weight >= 0, "tasks.*.weight: must be >= 0")
    need(c.tasks.retrieval.weight > 0 or c.tasks.rating.weight > 0,
         "tasks: at least one of tasks.retrieval.weight and tasks.rating.weight must be > 0")
    need(c.tasks.rating.weight == 0 or c.data.columns.rating is not None,
         "tasks.rating.weight > 0 needs a rating column: set data.columns.rating")
    need(c.features.text_max_tokens >= 3, f"features.text_max_tokens: must be >= 3, got {c.features.text_max_tokens}")
    need(c.features.text_max_length >= 1,
         f"features.text_max_length: must be >= 1, got {c.features.text_max_length}")
    need(c.split.method == "random" or c.data.columns.timestamp is not None,
         f"split.method {c.split.method!r} needs a timestamp column: set data.columns.timestamp")


def _parse(cls: type, raw: Any, where: str, errors: list[str], skip: set[str] = frozenset(),
           context: str = "") -> Any:
    """Build dataclass ``cls`` from ``raw``, appending problems to ``errors`` (returns None on failure)."""
    label = where or "the top level"
    if not isinstance(raw, Mapping):
        errors.append(f"{label}: expected a mapping, got {_describe(raw)}")
        return None
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.name not in skip}
    kwargs: dict[str, Any] = {}
    for key, value in raw.items():
        path = f"{where}.{key}" if where else str(key)
        if key not in fields:
            valid = sorted([*fields, *skip])
            errors.append(f"{path}: unknown key{context}{suggest(str(key), valid)}; valid keys here: "
                          f"{', '.join(valid)}")
            continue
        ok, converted = _convert(hints[key], value, path, errors)
        if ok:
            kwargs[key] = converted
    for name, f in fields.items():
        if name not in kwargs and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            if name not in raw:  # a present-but-invalid value was reported already
                path = f"{where}.{name}" if where else name
                errors.append(f"{path}: missing required key")
    try:
        return cls(**kwargs)
    except TypeError:
        return None  # a required field is missing; already reported


def _convert(hint: Any, value: Any, path: str, errors: list[str]) -> tuple[bool, Any]:
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if hint is Any:
        return True, value
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return True, None
        options = [a for a in args if a is not type(None)]
        if len(options) == 1:
            return _convert(options[0], value, path, errors)
        trial: list[str] = []
        for option in options:
            ok, converted = _convert(option, value, path, trial)
            if ok:
                return True, converted
        errors.append(f"{path}: expected {_type_name(hint)}, got {_describe(value)}")
        return False, None
    if origin is Literal:
        if value in args and not isinstance(value, bool):
            return True, value
        allowed = ", ".join(repr(a) for a in args)
        errors.append(f"{path}: must be one of {allowed}; got {value!r}{suggest(str(value), [str(a) for a in args])}")
        return False, None
    if origin is list:
        if not isinstance(value, (list, tuple)):
            errors.append(f"{path}: expected a list of {_type_name(args[0])}, got {_describe(value)}")
            return False, None
        out, ok_all = [], True
        for i, item in enumerate(value):
            ok, converted = _convert(args[0], item, f"{path}[{i}]", errors)
            ok_all &= ok
            out.append(converted)
        return ok_all, out
    if dataclasses.is_dataclass(hint):
        result = _parse(hint, value, path, errors)
        return result is not None, result
    if hint is bool:
        if isinstance(value, bool):
            return True, value
    elif hint is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return True, value
    elif hint is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return True, float(value)
    elif hint is str:
        if isinstance(value, str):
            return True, value
    else:  # pragma: no cover - a field type this parser does not know
        raise TypeError(f"unsupported config field type {hint!r} at {path}")
    errors.append(f"{path}: expected {_type_name(hint)}, got {_describe(value)}")
    return False, None


def _type_name(hint: Any) -> str:
    names = {bool: "true/false", int: "an integer", float: "a number", str: "a string"}
    if hint in names:
        return names[hint]
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        parts = [_type_name(a) for a in args if a is not type(None)]
        return " or ".join(parts) + (" or null" if type(None) in args else "")
    if origin is list:
        return f"a list of {_type_name(args[0])}"
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in args)
    if dataclasses.is_dataclass(hint):
        return "a mapping"
    return str(hint)


def _describe(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return f"{str(value).lower()} (a boolean)"
    if isinstance(value, (dict, list)):
        return f"a {'mapping' if isinstance(value, dict) else 'list'} ({value!r:.60})"
    return f"{value!r} ({type(value).__name__})"


__all__ = [
    "BUILTIN_DATASETS", "ColumnsConfig", "DataConfig", "EvaluationConfig", "ExperimentConfig",
    "FeatureTableConfig", "FeaturesConfig", "ModelConfig", "OptimizerConfig", "OutputConfig", "PROTOCOLS",
    "RatingTaskConfig", "RetrievalTaskConfig", "SplitConfig", "TasksConfig", "TrainingConfig",
    "apply_overrides", "dump_config", "load_config", "parse_config", "read_config_file", "resolve_paths",
]
