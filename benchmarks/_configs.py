"""Benchmarks run the shipped configs: the same data preparation, model kind, optimizer and fit
options as ``recstack train NAME`` (recstack.experiment), without a run folder, plus what a
benchmark needs beyond a run: the test split as per-epoch validation data (the TFRS tutorials
validate on it, for the accuracy-vs-epoch curves), callbacks (timers), evaluation on the
validation split (tuning).

The published figures come from each config's ``reference:`` block, never from the scripts.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from recstack.core.columns import Columns
from recstack.core.exclusions import Exclusions
from recstack.experiment.building import build_model, fit_options, make_optimizer, model_context, training_source
from recstack.experiment.config import ExperimentConfig
from recstack.experiment.config_files import load_config
from recstack.experiment.evaluation import evaluate_protocol
from recstack.experiment.model_kinds import MODEL_KINDS
from recstack.experiment.prepare import Prepared, prepare
from recstack.experiment.reporter import Reporter
from recstack.training.callbacks import Callback
from recstack.training.history import History
from recstack.training.model import Model


@dataclass
class Fitted:
    config: ExperimentConfig
    model: Model
    history: History
    prepared: Prepared


def overrides(settings: dict[str, Any]) -> list[str]:
    """``{"model.layer_sizes": [32]}`` -> ``["model.layer_sizes=[32]"]`` (``--set`` items; JSON is YAML)."""
    return [f"{key}={json.dumps(value)}" for key, value in settings.items()]


def variants(name: str) -> list[tuple[str, list[str], dict[str, float]]]:
    """(label, --set overrides, published metrics) for the config as shipped and each reference variant."""
    config = load_config(name)
    ref = config.reference
    if ref is None:
        raise SystemExit(f"the shipped config {name!r} has no reference block")
    out = [(ref.label or name, [], dict(ref.metrics))]
    out += [(v.label, overrides(v.when), dict(v.metrics)) for v in ref.variants]
    return out


def fit(config: ExperimentConfig, validate_on_test_every: int = 0, callbacks: Sequence[Callback] = (),
        prepared: Prepared | None = None) -> Fitted:
    """Train ``config``'s model as ``recstack train`` does (closed-form kinds: one ``fit(train)``).

    ``validate_on_test_every`` > 0 validates on the *test* split every that many epochs, as the
    TFRS tutorials do (benchmarks only: a run never looks at its test split before the end).
    ``prepared``: reuse the data of an earlier fit with the same data, split and features sections.
    """
    if config.training.threads:
        torch.set_num_threads(config.training.threads)
    prepared = prepared or prepare(config, Reporter("quiet"))
    ctx = model_context(config, prepared.pre, prepared, "rating" in prepared.train, "weight" in prepared.train)
    model = build_model(config, ctx)
    if not MODEL_KINDS.get(config.model.kind).gradient_trained:
        return Fitted(config, model, model.fit(prepared.train), prepared)
    options = fit_options(config)
    if validate_on_test_every:
        options["validation_freq"] = validate_on_test_every
    history = model.fit(training_source(model, prepared.train), optimizer=make_optimizer(config, model),
                        validation_data=prepared.test if validate_on_test_every else prepared.validation,
                        verbose=False, callbacks=list(callbacks), **options)
    return Fitted(config, model, history, prepared)


def evaluate(fitted: Fitted, split: str = "test") -> dict[str, dict[str, float]]:
    """{protocol: metrics without the "factorized_top_k/" prefix} on the test split (items seen in
    training and validation excluded) or the validation split (items seen in training excluded)."""
    p = fitted.prepared
    rows: Columns | None = p.test if split == "test" else p.validation
    if rows is None:
        raise SystemExit(f"{fitted.config.name}: no {split} split (set split.validation_fraction)")
    seen: Exclusions = p.seen_before_test if split == "test" else p.seen_train
    e = fitted.config.evaluation
    out = {}
    for protocol in e.protocols:
        metrics = evaluate_protocol(fitted.model, rows, p.pre.catalogue(), protocol, seen, e.ks, e.batch_size)
        out[protocol] = {k.split("/", 1)[1]: v for k, v in metrics.items()}
    return out


__all__ = ["Fitted", "evaluate", "fit", "overrides", "variants"]
