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

from collections.abc import Mapping
from typing import Any

from ..core.errors import ConfigError, suggest
from .checks import check_values, reference_metric_problem, separator_problem, wants_test_loss
from .deprecations import upgrade_deprecated
from .model_kinds import MODEL_KINDS
from .schema import (  # noqa: F401 (config is the schema's public face)
    BUILTIN_DATASETS,
    ColumnsConfig,
    DataConfig,
    EarlyStoppingConfig,
    EvaluationConfig,
    ExperimentConfig,
    FeatureTableConfig,
    FeaturesConfig,
    ModelConfig,
    NEXT_ITEM_PROTOCOLS,
    NextItemConfig,
    OptimizerConfig,
    OutputConfig,
    PROTOCOLS,
    Protocol,
    RatingTaskConfig,
    ReferenceConfig,
    ReferenceVariant,
    RetrievalTaskConfig,
    SplitConfig,
    TEST_METRICS,
    TasksConfig,
    TrainingConfig,
    TuneConfig,
)
from .validation import describe, parse_dataclass

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
    "RetrievalTaskConfig", "SplitConfig", "TEST_METRICS", "TasksConfig", "TrainingConfig", "TuneConfig", "dump_config",
    "parse_config", "reference_metric_problem", "separator_problem", "setting", "wants_test_loss", "with_settings",
]
