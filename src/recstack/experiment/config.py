"""The experiment schema: typed dataclasses for a config read from YAML, TOML or JSON.

A config is a mapping whose sections mirror :class:`ExperimentConfig`::

    name: my-ratings
    description: one line for `recstack configs`
    data:
      interactions: ratings.csv            # CSV/Parquet path (relative to the file) or "movielens-100k"
      columns: {user: userId, item: movieId, rating: rating, timestamp: timestamp}
    split: {method: leave-last-out}         # or leave-one-out: the next-item protocol
    model: {kind: two_tower, embedding_dim: 32}
    training: {epochs: 10, batch_size: 1024}
    reference:                             # optional: the published figures this config reproduces
      source: where they are published
      metrics: {all-items/top_100_categorical_accuracy: 0.30}

:func:`parse_config` validates a mapping with the generic validator of
:mod:`recstack.experiment.validation` and reports every problem at once, each with its dotted
path. ``model`` holds ``kind`` plus that kind's hyperparameters, validated against the dataclass
the kind registered (:mod:`recstack.experiment.model_kinds`). Reading files, ``--set``
overrides and the configs shipped with recstack are in :mod:`recstack.experiment.config_files`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from ..core.errors import ConfigError, suggest
from .checks import (
    NEXT_ITEM_PROTOCOLS,
    PROTOCOLS,
    TEST_METRICS,
    check_values,
    reference_metric_problem,
    separator_problem,
    wants_test_loss,
)
from .deprecations import upgrade_deprecated
from .model_kinds import MODEL_KINDS
from .validation import describe, parse_dataclass

#: Interaction sources that need no file: the name loads a built-in dataset.
BUILTIN_DATASETS = ("movielens-100k", "movielens-1m", "movielens-20m")

#: The evaluation protocols (see :data:`recstack.experiment.checks.PROTOCOLS`).
Protocol = Literal["all-items", "exclude-seen", "next-item", "next-item-sampled"]


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

    ``leave-one-out`` (the next-item protocol of SASRec, BERT4Rec, RecBole and Meta's
    generative-recommenders): per user with at least 3 interactions, the last one (by
    timestamp; equal timestamps keep file order) is the test item, the second to last the
    validation item, the rest is training; users with fewer interactions are training only.
    """

    method: Literal["random", "temporal", "leave-last-out", "leave-one-out"] = "random"
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
class EarlyStoppingConfig:
    """Model selection on the validation item (``evaluation.validation_protocol: next-item``):
    ``metric`` (``ndcg_at_K``, ``hr_at_K`` with K in evaluation.ks, or ``mrr``) is computed on the
    validation split every ``training.validation_freq`` epochs; ``patience`` > 0 stops training
    after that many validations without improvement (0: train every epoch); ``restore_best``
    makes the weights of the best validation the run's model (model.pt and the test metrics;
    metrics.json records ``best_epoch``). The test split is never looked at."""

    metric: str = "ndcg_at_10"
    patience: int = 0
    restore_best: bool = True


@dataclass
class TrainingConfig:
    """``shuffle: false`` keeps fixed batches (the TFRS tutorials' cached pipeline);
    a checkpoint is written every ``checkpoint_every`` epochs and after the last one.
    ``precision: bf16`` runs the towers under bfloat16 autocast (for GPUs; the retrieval
    softmax stays in float32). ``threads`` sets torch's intra-op CPU threads for the run
    (0: torch's default, one per core); 1 avoids the slowdown of OpenMP threads waiting on
    each other when other jobs share the cores. ``clip_grad_norm`` > 0 rescales each step's
    gradients to at most that global L2 norm (0: no clipping). A non-finite loss or gradient stops
    the run with an error (status "failed"), never a result. ``early_stopping``: see
    :class:`EarlyStoppingConfig`."""

    epochs: int = 3
    batch_size: int = 4096
    shuffle: bool = True
    validation_freq: int = 1
    train_metrics: bool = False
    checkpoint_every: int = 1
    keep_checkpoints: int = 2
    precision: Literal["float32", "bf16"] = "float32"
    threads: int = 0
    clip_grad_norm: float = 0.0
    early_stopping: EarlyStoppingConfig | None = None


@dataclass
class NextItemConfig:
    """Options of the next-item protocols.

    ``exclude_history``: remove the user's earlier items (everything before the held-out item)
    from the ranking; the held-out item itself is always ranked. Both conventions are
    published: SASRec's and generative-recommenders' full-catalogue tables keep them (false,
    the default), RecBole's full ranking of non-sequential models removes them. Say which one
    a figure uses.
    ``sampled_negatives``, ``sampled_distribution``, ``sampled_seed``: the secondary protocol
    ``next-item-sampled`` ranks the held-out item among this many distinct sampled items only
    (SASRec's paper uses 100): uniform over the catalogue or by popularity (interactions
    before the test split), never the held-out item and, with ``exclude_history``, never the
    user's earlier items; seeded, so every model of a comparison meets the same negatives.
    """

    exclude_history: bool = False
    sampled_negatives: int = 100
    sampled_distribution: Literal["uniform", "popularity"] = "uniform"
    sampled_seed: int = 0


@dataclass
class EvaluationConfig:
    """``protocols`` evaluated on the test split after training. "all-items": each test row ranks
    its item among the whole catalogue (the TFRS tutorials' top-k accuracy); "exclude-seen":
    per user, items seen before the test split are removed from the ranking, metrics are
    per-user recall/NDCG. "next-item" (``split.method: leave-one-out``): each user's held-out
    item is ranked among the whole catalogue given the user's history, HR@K, NDCG@K and MRR
    per user, averaged; ties count against the held-out item; "next-item-sampled" ranks it among
    sampled items only (see :class:`NextItemConfig`). Every kind is evaluated the same way:
    sequential kinds read the history, EASE scores the history's items, other kinds score the
    user (their user x item scores). ``validation_protocol`` is used for the per-epoch
    validation (with a next-item protocol: on the validation item only, the history before it).
    Without ``protocols`` / ``validation_protocol`` in the file, a leave-one-out split is
    evaluated with next-item, other splits with all-items and exclude-seen (validated with
    all-items). The old name "seed" of "all-items" is still accepted, with a deprecation warning."""

    protocols: list[Protocol] = field(default_factory=lambda: ["all-items", "exclude-seen"])
    validation_protocol: Protocol = "all-items"
    ks: list[int] = field(default_factory=lambda: [1, 5, 10, 50, 100])
    batch_size: int = 4096
    next_item: NextItemConfig = field(default_factory=NextItemConfig)


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
class ReferenceVariant:
    """Published figures for a variation of the config: the settings in ``when`` (dotted keys,
    as ``--set`` takes them, e.g. ``{model.layer_sizes: [32]}``) replace the file's."""

    when: dict[str, Any]
    metrics: dict[str, float]
    label: str = ""


@dataclass
class ReferenceConfig:
    """The published figures a config reproduces, and where they are published.

    ``metrics`` keys are ``PROTOCOL/METRIC`` (``all-items/top_100_categorical_accuracy``,
    ``exclude-seen/recall_at_10``) or ``test/METRIC`` (``test/root_mean_squared_error``), each a
    metric the run reports. ``label`` names the setting they belong to; ``variants`` hold the
    figures published for other settings of the same experiment (see
    :func:`recstack.experiment.reference.applicable_reference`).
    """

    source: str
    metrics: dict[str, float] = field(default_factory=dict)
    label: str = ""
    note: str = ""
    variants: list[ReferenceVariant] = field(default_factory=list)


@dataclass
class ExperimentConfig:
    """A whole experiment: data, split, features, model, tasks, optimizer, training, evaluation,
    and the published figures it reproduces (``reference``)."""

    data: DataConfig
    name: str = "experiment"
    description: str = ""
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
    reference: ReferenceConfig | None = None

    def to_dict(self) -> dict[str, Any]:
        """Plain dict (YAML/JSON-ready) with ``model`` flattened to ``{kind, **params}``."""
        out = dataclasses.asdict(self)
        params = dataclasses.asdict(self.model.params) if dataclasses.is_dataclass(self.model.params) else {}
        out["model"] = {"kind": self.model.kind, **params}
        return out


# -- parsing ---------------------------------------------------------------------------------------
def parse_config(raw: Mapping[str, Any], source: str = "config") -> ExperimentConfig:
    """Validate a raw mapping into an :class:`ExperimentConfig`; ConfigError lists every problem.

    Deprecated spellings (the protocol name "seed") are rewritten with a ConfigDeprecationWarning.
    """
    errors: list[str] = []
    raw = upgrade_deprecated(dict(raw), source)
    model_raw = raw.pop("model", None)
    config = parse_dataclass(ExperimentConfig, raw, "", errors, skip={"model"})
    model = _parse_model(model_raw, errors)
    if config is not None:
        config.model = model
        _default_protocols(config, raw.get("evaluation"))
        check_values(config, errors)
        if config.reference is not None and model.params is not None:
            _check_reference(config, errors)
    if len(errors) == 1:
        raise ConfigError(f"{source}: invalid config: {errors[0]}")
    if errors:
        lines = "\n".join(f"  - {e}" for e in errors[:20])
        more = f"\n  ... and {len(errors) - 20} more" if len(errors) > 20 else ""
        raise ConfigError(f"{source}: invalid config:\n{lines}{more}")
    return config


def dump_config(config: ExperimentConfig) -> str:
    """The full config (defaults included) as YAML text."""
    import yaml

    return yaml.safe_dump(config.to_dict(), sort_keys=False, default_flow_style=None, width=100)


def with_settings(config: ExperimentConfig, settings: Mapping[str, Any]) -> ExperimentConfig:
    """A copy of ``config`` with dotted ``settings`` replaced (``{"model.layer_sizes": [32]}``),
    validated again (without the reference block, which describes the original)."""
    raw = config.to_dict()
    raw["reference"] = None
    for key, value in settings.items():
        node = raw
        parts = key.split(".")
        for part in parts[:-1]:
            child = node.get(part) if isinstance(node, dict) else None
            if not isinstance(child, dict):
                raise ConfigError(f"{key}: {part!r} is not a section of the config.")
            node = child
        if parts[-1] not in node:
            raise ConfigError(f"{key}: not a setting of the config{suggest(parts[-1], list(node))}.")
        node[parts[-1]] = value
    return parse_config(raw, source=f"{config.name} with {dict(settings)}")


def setting(config: ExperimentConfig, key: str) -> Any:
    """The value at a dotted ``key`` of ``config.to_dict()``; KeyError when there is none."""
    node: Any = config.to_dict()
    for part in key.split("."):
        if not isinstance(node, dict) or part not in node:
            raise KeyError(key)
        node = node[part]
    return node


def _default_protocols(config: ExperimentConfig, raw_evaluation: Any) -> None:
    """A leave-one-out split is evaluated and validated with next-item unless the file says otherwise."""
    if config.split.method != "leave-one-out":
        return
    given = raw_evaluation if isinstance(raw_evaluation, Mapping) else {}
    if "protocols" not in given:
        config.evaluation.protocols = ["next-item"]
    if "validation_protocol" not in given:
        config.evaluation.validation_protocol = "next-item"


def _parse_model(raw: Any, errors: list[str]) -> ModelConfig:
    if raw is None:
        raw = {}
    if not isinstance(raw, Mapping):
        errors.append(f"model: expected a mapping with 'kind' and its hyperparameters, got {describe(raw)}")
        raw = {}
    raw = dict(raw)
    kind = raw.pop("kind", "two_tower")
    if not isinstance(kind, str):
        errors.append(f"model.kind: expected a string, got {describe(kind)}")
        return ModelConfig()
    names = MODEL_KINDS.names()
    if kind not in names:
        errors.append(f"model.kind: unknown model kind {kind!r}{suggest(kind, names)}; "
                      f"registered kinds: {', '.join(names)}")
        return ModelConfig(kind=kind)
    registered = MODEL_KINDS.get(kind)
    params = parse_dataclass(registered.params, raw, "model", errors, context=f" for model kind {kind!r}")
    if params is not None and registered.check is not None:
        errors.extend(registered.check(params))
    return ModelConfig(kind=kind, params=params)


def _check_reference(c: ExperimentConfig, errors: list[str]) -> None:
    """Reference metrics have the form of metrics a run reports; every variant is a valid config.

    Whether this particular run reports them is not checked here: ``--set`` may legitimately
    change what is evaluated (the comparison then shows "-"); tests hold the shipped configs to it
    (:func:`recstack.experiment.reference.unreported_metrics`).
    """
    ref = c.reference
    assert ref is not None

    def check_metrics(metrics: dict[str, float], where: str) -> None:
        for key in metrics:
            problem = reference_metric_problem(key)
            if problem:
                errors.append(f"{where}.{key}: {problem}")

    check_metrics(ref.metrics, "reference.metrics")
    for i, variant in enumerate(ref.variants):
        where = f"reference.variants[{i}]"
        check_metrics(variant.metrics, f"{where}.metrics")
        if not variant.when:
            errors.append(f"{where}.when: list the settings of this variant (e.g. {{model.layer_sizes: [32]}})")
            continue
        try:
            with_settings(c, variant.when)
        except ConfigError as exc:
            errors.append(f"{where}.when: {exc}")


__all__ = [
    "BUILTIN_DATASETS", "ColumnsConfig", "DataConfig", "EarlyStoppingConfig", "NEXT_ITEM_PROTOCOLS", "NextItemConfig",
    "EvaluationConfig", "ExperimentConfig", "FeatureTableConfig", "FeaturesConfig", "ModelConfig",
    "OptimizerConfig", "OutputConfig", "PROTOCOLS", "RatingTaskConfig", "ReferenceConfig", "ReferenceVariant",
    "RetrievalTaskConfig", "SplitConfig", "TEST_METRICS", "TasksConfig", "TrainingConfig", "dump_config",
    "parse_config", "reference_metric_problem", "separator_problem", "setting", "wants_test_loss", "with_settings",
]
