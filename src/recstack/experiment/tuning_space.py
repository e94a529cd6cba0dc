"""The search space of ``recstack tune``: the ``tune`` section of a config, validated.

:func:`search_space` turns ``tune.space`` (dotted settings, as ``--set`` takes them, mapped to a
range or to choices) into :class:`SearchParam` objects and :func:`validation_key` names the
history column of ``tune.metric``; both report every problem at once with a clear fix. The
study itself (Optuna, trials, outputs) is :mod:`recstack.experiment.tuning`.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from ..core.errors import ConfigError, suggest
from .checks import next_item_metric_k
from .config import NEXT_ITEM_PROTOCOLS, ExperimentConfig, TuneConfig, with_settings
from .next_item import HISTORY_PREFIX

#: Sections and settings a search may not vary: they change the data, the split or the metric every
#: trial is compared on, or only the bookkeeping of a run.
FIXED = ("tune", "name", "description", "data", "split", "evaluation", "output", "tracking", "reference",
         "device", "model.kind")
#: The keys of one entry of ``tune.space``.
SPACE_KEYS = ("low", "high", "log", "int", "step", "choices")
#: The validation metrics of the all-items / exclude-seen protocols (``K`` in evaluation.ks).
RANKING_METRICS = ("top_K_categorical_accuracy", "recall_at_K", "ndcg_at_K", "hit_at_K", "precision_at_K",
                   "mrr_at_K", "mrr")
#: Validation values that are not top-k metrics (rating models, losses).
OTHER_METRICS = ("loss", "root_mean_squared_error")


# -- the search space --------------------------------------------------------------------------------
@dataclass(frozen=True)
class SearchParam:
    """One tuned setting: ``key`` (dotted, as ``--set`` takes it) drawn from ``choices``, or from
    [``low``, ``high``] (log-uniform with ``log``, integers with ``integer``, on a grid of ``step``)."""

    key: str
    low: float | None = None
    high: float | None = None
    log: bool = False
    integer: bool = False
    step: float | None = None
    choices: tuple[Any, ...] | None = None

    def suggest(self, trial: Any) -> Any:
        """The value of this setting for an Optuna ``trial``."""
        if self.choices is not None:
            return trial.suggest_categorical(self.key, list(self.choices))
        assert self.low is not None and self.high is not None
        if self.integer:
            return trial.suggest_int(self.key, int(self.low), int(self.high), step=int(self.step or 1), log=self.log)
        return trial.suggest_float(self.key, self.low, self.high, step=self.step, log=self.log)

    def to_dict(self) -> dict[str, Any]:
        if self.choices is not None:
            return {"choices": list(self.choices)}
        out: dict[str, Any] = {"low": self.low, "high": self.high}
        if self.log:
            out["log"] = True
        if self.integer:
            out["int"] = True
        if self.step is not None:
            out["step"] = self.step
        return out


def untuned(config: ExperimentConfig) -> ExperimentConfig:
    """``config`` without its ``tune`` section (what every trial and best_config.yaml start from)."""
    return dataclasses.replace(config, tune=None)


def search_space(config: ExperimentConfig) -> list[SearchParam]:
    """The validated ``tune.space`` of ``config``; one ConfigError lists every problem.

    Each key must be a setting of the config (a value, not a section) outside :data:`FIXED`; a
    range needs numbers low < high (low > 0 with ``log``, integers with ``int``, which an
    integer setting needs); ``choices`` a non-empty list of scalars. Both ends of a range and
    every choice are applied to the config and validated as ``--set`` values would be, so a
    value the config refuses (``training.epochs: 0``) is reported before any trial runs.
    """
    tune = require_tune(config)
    base = untuned(config)
    raw = base.to_dict()
    errors: list[str] = []
    params: list[SearchParam] = []
    if not tune.space:
        errors.append("tune.space: empty; list the settings to search, e.g. {optimizer.learning_rate: "
                      "{low: 1.0e-4, high: 0.1, log: true}}")
    for key, spec in tune.space.items():
        param = _parse_param(key, spec, raw, errors)
        if param is None:
            continue
        before = len(errors)
        for value in (param.choices if param.choices is not None else (param.low, param.high)):
            value = int(value) if param.integer and param.choices is None else value
            try:
                with_settings(base, {key: value})
            except ConfigError as exc:
                errors.append(f"tune.space.{key}: {value!r} is not a valid value: {_reason(exc)}")
        if len(errors) == before:
            params.append(param)
    for name, value, low in (("trials", tune.trials, 1), ("startup_trials", tune.startup_trials, 0),
                             ("warmup_epochs", tune.warmup_epochs, 0)):
        if value < low:
            errors.append(f"tune.{name}: must be >= {low}, got {value}")
    try:
        validation_key(config)
    except ConfigError as exc:
        errors.append(str(exc))
    if len(errors) == 1:
        raise ConfigError(f"{config.name}: invalid tune section: {errors[0]}")
    if errors:
        raise ConfigError(f"{config.name}: invalid tune section:\n" + "\n".join(f"  - {e}" for e in errors))
    return params


def require_tune(config: ExperimentConfig) -> TuneConfig:
    """``config.tune``, or a ConfigError saying how to add one."""
    if config.tune is None:
        raise ConfigError(f"{config.name}: the config has no tune section; add one that lists the settings to "
                          "search, e.g. tune: {metric: ndcg_at_10, space: {model.l2: {low: 10, high: 2000, log: "
                          "true}}} (or --set 'tune.space={model.l2: {low: 10, high: 2000, log: true}}'); see "
                          "docs/cli.md, recstack tune.")
    return config.tune


def _parse_param(key: str, spec: Any, raw: dict[str, Any], errors: list[str]) -> SearchParam | None:
    where = f"tune.space.{key}"
    fixed = next((f for f in FIXED if key == f or key.startswith(f + ".")), None)
    if fixed is not None:
        errors.append(f"{where}: {fixed} cannot be tuned: every trial must train on the same data and split and be "
                      "scored with the same metric (set it in the config instead)")
        return None
    try:
        current = _setting(raw, key)
    except KeyError:
        leaves = [k for k in _leaves(raw) if not any(k == f or k.startswith(f + ".") for f in FIXED)]
        errors.append(f"{where}: not a setting of the config{suggest(key, leaves)}; the keys are those --set takes "
                      "(e.g. optimizer.learning_rate, model.embedding_dim, training.epochs)")
        return None
    if isinstance(current, dict):
        errors.append(f"{where}: is a section of the config, not a value; name one of its settings "
                      f"({', '.join(f'{key}.{k}' for k in list(current)[:4])}, ...)")
        return None
    unknown = [k for k in spec if k not in SPACE_KEYS]
    for k in unknown:
        errors.append(f"{where}.{k}: unknown key{suggest(str(k), list(SPACE_KEYS))}; a search range is {{low, high}} "
                      "(with log, int or step) or {choices: [...]}")
    if unknown:
        return None
    if "choices" in spec:
        return _parse_choices(where, key, spec, errors)
    return _parse_range(where, key, spec, current, errors)


def _parse_choices(where: str, key: str, spec: dict[str, Any], errors: list[str]) -> SearchParam | None:
    others = [k for k in spec if k != "choices"]
    choices = spec["choices"]
    if others:
        errors.append(f"{where}: choices cannot be combined with {', '.join(others)}; give either {{choices: [...]}} "
                      "or a range {low, high}")
    elif not isinstance(choices, list) or not choices:
        errors.append(f"{where}.choices: expected a non-empty list of values, got {choices!r}")
    elif not all(c is None or isinstance(c, (bool, int, float, str)) for c in choices):
        errors.append(f"{where}.choices: each choice must be a number, string, true/false or null (Optuna stores "
                      f"no lists or mappings), got {choices!r}")
    elif len(set(map(repr, choices))) != len(choices):
        errors.append(f"{where}.choices: {choices!r} lists a value twice")
    else:
        return SearchParam(key, choices=tuple(choices))
    return None


def _parse_range(where: str, key: str, spec: dict[str, Any], current: Any, errors: list[str]) -> SearchParam | None:
    before = len(errors)
    low, high = spec.get("low"), spec.get("high")
    log, integer, step = spec.get("log", False), spec.get("int", False), spec.get("step")

    def number(value: Any) -> bool:
        return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)

    for name, flag in (("log", log), ("int", integer)):
        if not isinstance(flag, bool):
            errors.append(f"{where}.{name}: expected true or false, got {flag!r}")
    if not number(low) or not number(high):
        errors.append(f"{where}: a range needs numbers low and high (got low {low!r}, high {high!r}), or give "
                      "{choices: [...]}")
        return None
    if low >= high:
        errors.append(f"{where}: low ({low}) must be below high ({high})")
    if log is True and low <= 0:
        errors.append(f"{where}: a log range needs low > 0, got {low}")
    if step is not None and (not number(step) or step <= 0):
        errors.append(f"{where}.step: expected a number > 0, got {step!r}")
    if step is not None and log is True:
        errors.append(f"{where}: step and log cannot be combined (Optuna samples a log range continuously)")
    if integer is True:
        for name, value in (("low", low), ("high", high), ("step", step)):
            if value is not None and float(value) != int(value):
                errors.append(f"{where}.{name}: an int range needs whole numbers, got {value}")
    if isinstance(current, bool):
        errors.append(f"{where}: is true/false; search it with {{choices: [true, false]}}")
    elif isinstance(current, int) and integer is not True:
        errors.append(f"{where}: is an integer setting (now {current}); add int: true")
    if len(errors) > before:
        return None
    return SearchParam(key, float(low), float(high), log=bool(log), integer=bool(integer),
                       step=None if step is None else float(step))


def _setting(raw: dict[str, Any], key: str) -> Any:
    node: Any = raw
    for part in key.split("."):
        if not isinstance(node, dict) or part not in node:
            raise KeyError(key)
        node = node[part]
    return node


def _leaves(node: dict[str, Any], prefix: str = "") -> Iterator[str]:
    for key, value in node.items():
        path = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            yield from _leaves(value, path + ".")
        else:
            yield path


def _reason(exc: ConfigError) -> str:
    """A validation error of ``with_settings`` without its long "NAME with {...}: invalid config:" prefix."""
    text = str(exc)
    marker = "invalid config:"
    return " ".join((text.split(marker, 1)[1] if marker in text else text).split())


# -- the validation metric -----------------------------------------------------------------------------
def validation_key(config: ExperimentConfig) -> str:
    """The history key of ``tune.metric`` (``val_next_item/ndcg_at_10`` for a next-item validation,
    ``/ndcg_at_10`` for the top-k metrics, whose prefix is the model's task name, ``val_loss``);
    a ConfigError names the metrics the validation protocol reports."""
    tune = require_tune(config)
    metric, e = tune.metric, config.evaluation
    if e.validation_protocol in NEXT_ITEM_PROTOCOLS:
        ok, k = next_item_metric_k(metric)
        if not ok:
            names = [f"hr_at_{k}" for k in e.ks] + [f"ndcg_at_{k}" for k in e.ks] + ["mrr"]
            raise ConfigError(f"tune.metric: {metric!r} is not a metric of the {e.validation_protocol} validation"
                              f"{suggest(metric, names)}; use hr_at_K, ndcg_at_K (K in evaluation.ks = {e.ks}) or mrr")
        if k is not None and k not in e.ks:
            raise ConfigError(f"tune.metric: K = {k} of {metric!r} is not in evaluation.ks = {e.ks}")
        return f"val_{HISTORY_PREFIX}{metric}"
    if metric in OTHER_METRICS:
        return f"val_{metric}"
    names = [n.replace("K", str(k)) for n in RANKING_METRICS for k in e.ks if "K" in n] + ["mrr", *OTHER_METRICS]
    family = metric.rsplit("_", 1)[0] + "_K" if "_" in metric else metric
    if metric.startswith("top_") and metric.endswith("_categorical_accuracy"):
        family = "top_K_categorical_accuracy"
    if family not in RANKING_METRICS:
        raise ConfigError(f"tune.metric: {metric!r} is not a validation metric of the {e.validation_protocol} "
                          f"protocol{suggest(metric, names)}; use one of {', '.join(RANKING_METRICS)} (K in "
                          f"evaluation.ks = {e.ks}) or {', '.join(OTHER_METRICS)}")
    k_text = metric.split("_")[1] if family == "top_K_categorical_accuracy" else metric.rsplit("_", 1)[1]
    if metric != "mrr" and (not k_text.isdigit() or int(k_text) not in e.ks):
        raise ConfigError(f"tune.metric: K = {k_text} of {metric!r} is not in evaluation.ks = {e.ks}")
    return f"/{metric}"


__all__ = ["FIXED", "OTHER_METRICS", "RANKING_METRICS", "SPACE_KEYS", "SearchParam", "require_tune", "search_space",
           "untuned", "validation_key"]
