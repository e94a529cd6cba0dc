"""Checks of a parsed config that its types cannot express: value ranges, settings that need
each other (a split and the protocols evaluated on it), and the form of reference metric keys.

:func:`recstack.experiment.config.parse_config` calls :func:`check_values` after the generic
validator has built the dataclasses; every problem is appended with its dotted key, so a config
reports all of its mistakes at once.
"""

from __future__ import annotations

import re

from ..core.errors import suggest
from .limits import MAX_K, MAX_NEGATIVES, MAX_TEXT_LENGTH, MAX_THREADS, bound
from .model_kinds import MODEL_KINDS
from .schema import NEXT_ITEM_PROTOCOLS, PROTOCOLS, TEST_METRICS, ExperimentConfig



_METRIC = re.compile(r"^(?:top_(\d+)_categorical_accuracy|recall_at_(\d+)|ndcg_at_(\d+)|mrr_at_(\d+)|hit_at_(\d+)"
                     r"|precision_at_(\d+)|mrr)$")
_NEXT_ITEM_METRIC = re.compile(r"^(?:hr_at_(\d+)|ndcg_at_(\d+)|mrr_at_(\d+)|mrr)$")
_TEST_METRIC_NAMES = ("root_mean_squared_error", "loss")


def wants_test_loss(config: ExperimentConfig) -> bool:
    """Whether a run reports test loss and RMSE (``model.evaluate`` on the test rows): rating models
    and gradient-trained kinds with a rating task. Others skip it: the retrieval loss over the test
    split costs as much as an epoch and ranks nothing."""
    kind = MODEL_KINDS.get(config.model.kind)
    return kind.predicts_ratings or (kind.gradient_trained and config.tasks.rating.weight > 0)


def next_item_metric_k(name: str) -> tuple[bool, int | None]:
    """(whether ``name`` is a next-item metric: hr_at_K, ndcg_at_K or mrr; its K or None)."""
    match = _NEXT_ITEM_METRIC.match(name)
    if match is None:
        return False, None
    return True, next((int(g) for g in match.groups() if g), None)


def check_values(c: ExperimentConfig, errors: list[str]) -> None:
    """Range and consistency checks (appended to ``errors``)."""
    def need(ok: bool, message: str) -> None:
        if not ok:
            errors.append(message)

    need(0 < c.split.train_fraction < 1, f"split.train_fraction: must be in (0, 1), got {c.split.train_fraction}")
    need(0 <= c.split.validation_fraction < 1,
         f"split.validation_fraction: must be in [0, 1), got {c.split.validation_fraction}")
    need(c.split.leave_out >= 1, f"split.leave_out: must be >= 1, got {c.split.leave_out}")
    if c.split.method == "per-user-random":
        ratios = c.split.ratios
        need(len(ratios) in (2, 3) and all(r > 0 and r < float("inf") for r in ratios),
             f"split.ratios: per-user-random needs 2 or 3 positive ratios ([train, test] or [train, validation, "
             f"test], e.g. [0.8, 0.1, 0.1]), got {ratios}")
        need(c.split.validation_fraction == 0,
             "split.validation_fraction: per-user-random takes its validation part from split.ratios "
             "([train, validation, test]); remove split.validation_fraction")
    for name in ("epochs", "batch_size", "validation_freq", "checkpoint_every", "keep_checkpoints"):
        value = getattr(c.training, name)
        need(value >= 1, f"training.{name}: must be >= 1, got {value}")
    need(c.training.threads >= 0, f"training.threads: must be >= 0 (0: torch's default), got {c.training.threads}")
    need(c.evaluation.batch_size >= 1, f"evaluation.batch_size: must be >= 1, got {c.evaluation.batch_size}")
    need(bool(c.evaluation.ks) and all(k >= 1 for k in c.evaluation.ks),
         f"evaluation.ks: must be a non-empty list of positive integers, got {c.evaluation.ks}")
    need(bool(c.evaluation.protocols), f"evaluation.protocols: list at least one of {', '.join(PROTOCOLS)}")
    need(c.optimizer.learning_rate > 0, f"optimizer.learning_rate: must be > 0, got {c.optimizer.learning_rate}")
    need(c.training.clip_grad_norm >= 0,
         f"training.clip_grad_norm: must be >= 0 (0: no clipping), got {c.training.clip_grad_norm}")
    need(c.tasks.retrieval.weight >= 0 and c.tasks.rating.weight >= 0, "tasks.*.weight: must be >= 0")
    need(c.tasks.retrieval.weight > 0 or c.tasks.rating.weight > 0,
         "tasks: at least one of tasks.retrieval.weight and tasks.rating.weight must be > 0")
    need(c.tasks.rating.weight == 0 or c.data.columns.rating is not None,
         "tasks.rating.weight > 0 needs a rating column: set data.columns.rating")
    need(c.features.text_max_tokens >= 3, f"features.text_max_tokens: must be >= 3, got {c.features.text_max_tokens}")
    need(c.features.text_max_length >= 1,
         f"features.text_max_length: must be >= 1, got {c.features.text_max_length}")
    if c.split.method == "column" or c.data.columns.split is not None:
        need(c.split.method == "column" and c.data.columns.split is not None,
             "split.method: column reads each row's part from data.columns.split: set both (or neither)")
        need(c.split.validation_fraction == 0, "split.validation_fraction: split.method column takes the validation "
             "part from the split column's \"validation\" rows; remove split.validation_fraction")
    need(c.split.method in ("random", "per-user-random", "column") or c.data.columns.timestamp is not None,
         f"split.method {c.split.method!r} needs a timestamp column: set data.columns.timestamp")
    problem = separator_problem(c.data.csv_separator)
    need(problem is None, f"data.csv_separator: {problem}")
    need(c.data.min_rating is None or c.data.columns.rating is not None,
         f"data.min_rating: {c.data.min_rating:g} keeps the interactions rated >= it, but no rating column is "
         "mapped: set data.columns.rating, or remove data.min_rating" if c.data.min_rating is not None else "")
    need(c.data.k_core is None or c.data.k_core >= 1,
         f"data.k_core: must be >= 1 (every kept user and item has at least this many interactions; null: no "
         f"filter), got {c.data.k_core}")
    r = c.tasks.retrieval
    bounded = [
        bound("training.threads", c.training.threads, 0, MAX_THREADS, "more threads than cores only slow a run down"),
        bound("features.text_max_length", c.features.text_max_length, 1, MAX_TEXT_LENGTH,
              "every item stores this many token ids; titles need 10-50"),
        bound("tasks.retrieval.sampled_negatives", r.sampled_negatives, 0, MAX_NEGATIVES,
              "each adds a logit per query, batch_size x negatives floats per step"),
        *(bound(f"evaluation.ks[{i}]", k, 1, MAX_K, "a larger K ranks the whole catalogue anyway")
          for i, k in enumerate(c.evaluation.ks)),
    ]
    if r.num_hard_negatives is not None:
        bounded.append(bound("tasks.retrieval.num_hard_negatives", r.num_hard_negatives, 1, MAX_NEGATIVES,
                             "the hardest negatives are taken among the batch's candidates"))
    errors.extend(p for p in bounded if p)
    need(r.temperature is None or r.temperature > 0,
         f"tasks.retrieval.temperature: must be > 0 (or null: none), got {r.temperature}")
    params = c.model.params
    if getattr(params, "timestamp_buckets", 0) and c.data.columns.timestamp is None:
        errors.append("model.timestamp_buckets uses the interaction time, but no timestamp column is mapped: set "
                      "data.columns.timestamp, or model.timestamp_buckets: 0")
    if getattr(params, "sparse_gradients", False) and (c.optimizer.name in ("adam", "adamw") or c.optimizer.weight_decay
                                                        or c.optimizer.momentum):
        errors.append("model.sparse_gradients needs optimizer adagrad or sgd without weight_decay or momentum "
                      "(those would touch every embedding row each step)")
    _check_next_item(c, errors)


def _check_next_item(c: ExperimentConfig, errors: list[str]) -> None:
    """The leave-one-out split, the next-item protocols, sequential kinds and early stopping fit together."""
    e, loo = c.evaluation, c.split.method == "leave-one-out"
    if loo and c.split.validation_fraction > 0:
        errors.append("split.validation_fraction: leave-one-out always holds out each user's second-to-last "
                      "interaction for validation; remove split.validation_fraction")
    used = [p for p in e.protocols if p in NEXT_ITEM_PROTOCOLS]
    if e.validation_protocol in NEXT_ITEM_PROTOCOLS:
        used.append(f"{e.validation_protocol} (evaluation.validation_protocol)")
    if used and not loo:
        errors.append(f"evaluation: the protocols {', '.join(used)} rank each user's held-out next item given the "
                      "user's history; they need split: {method: leave-one-out}")
    kind = MODEL_KINDS.get(c.model.kind) if c.model.kind in MODEL_KINDS else None
    if kind is not None and kind.sequential:
        other = [p for p in e.protocols if p not in NEXT_ITEM_PROTOCOLS]
        if other:
            errors.append(f"evaluation.protocols: model kind {c.model.kind!r} ranks items given a history; it is "
                          f"evaluated with next-item or next-item-sampled, not {', '.join(other)}")
        if e.validation_protocol not in NEXT_ITEM_PROTOCOLS:
            errors.append(f"evaluation.validation_protocol: model kind {c.model.kind!r} is validated with next-item "
                          f"or next-item-sampled, not {e.validation_protocol!r}")
        if not loo:
            errors.append(f"split.method: model kind {c.model.kind!r} trains on each user's interactions in time "
                          "order and is evaluated on the next item; use split: {method: leave-one-out}")
        if c.tasks.rating.weight > 0:
            errors.append(f"tasks.rating.weight: model kind {c.model.kind!r} ranks items and has no rating head; "
                          "set it to 0")
    problem = bound("evaluation.next_item.sampled_negatives", e.next_item.sampled_negatives, 1, MAX_NEGATIVES,
                    "the sampled protocol ranks the target among this many items")
    if problem:
        errors.append(problem)
    stop = c.training.early_stopping
    if stop is not None:
        if e.validation_protocol not in NEXT_ITEM_PROTOCOLS:
            errors.append("training.early_stopping selects on the next-item validation metrics: set "
                          "evaluation.validation_protocol: next-item (with split.method: leave-one-out)")
        ok, k = next_item_metric_k(stop.metric)
        if not ok:
            errors.append(f"training.early_stopping.metric: one of hr_at_K, ndcg_at_K (K in evaluation.ks) or mrr, "
                          f"got {stop.metric!r}")
        elif k is not None and k not in e.ks:
            errors.append(f"training.early_stopping.metric: K = {k} is not in evaluation.ks = {e.ks}")
        if stop.patience < 0:
            errors.append(f"training.early_stopping.patience: must be >= 0 (0: never stop early), got {stop.patience}")


def separator_problem(separator: str) -> str | None:
    """Why ``separator`` cannot split CSV columns, or None: it must be one character other than a
    quote or a line break (``","``, ``";"``, ``"\\t"``, ``"|"``)."""
    if len(separator) != 1:
        return (f"a CSV separator is one character (e.g. ',', ';', '|' or a tab), got {separator!r}"
                + (" (empty)" if not separator else ""))
    if separator in "\"\r\n":
        return f"{separator!r} cannot separate CSV columns (it quotes values or ends lines); use ',', ';', '|' or a tab"
    return None


def reference_metric_problem(key: str, config: ExperimentConfig | None = None) -> str | None:
    """Why ``key`` (``PROTOCOL/METRIC`` or ``test/METRIC``) is not a metric a run reports, or None.

    Without ``config`` only the form is checked; with it, also that this config's run reports it
    (the protocol is evaluated, K is in evaluation.ks, test metrics come from a rating model).
    """
    protocol, _, name = key.partition("/")
    if protocol == TEST_METRICS:
        if name not in _TEST_METRIC_NAMES:
            return f"the test metrics are {', '.join(_TEST_METRIC_NAMES)}{suggest(name, list(_TEST_METRIC_NAMES))}"
        if config is not None and not wants_test_loss(config):
            return ("the run reports test/root_mean_squared_error and test/loss only for rating models "
                    "(model kind autorec, or tasks.rating.weight > 0)")
        return None
    if protocol not in PROTOCOLS:
        return (f"a reference metric is PROTOCOL/METRIC with PROTOCOL one of {', '.join(PROTOCOLS)} or "
                f"{TEST_METRICS!r}{suggest(protocol, [*PROTOCOLS, TEST_METRICS])}")
    if protocol in NEXT_ITEM_PROTOCOLS:
        ok, k = next_item_metric_k(name)
        if not ok:
            return f"{name!r} is not a metric the {protocol} protocol reports (hr_at_K, ndcg_at_K, mrr_at_K or mrr)"
    else:
        match = _METRIC.match(name)
        if match is None:
            return (f"{name!r} is not a metric the runs report (top_K_categorical_accuracy, recall_at_K, ndcg_at_K, "
                    "mrr_at_K, hit_at_K, precision_at_K or mrr)")
        k = next((int(g) for g in match.groups() if g), None)
    if config is not None:
        if protocol not in config.evaluation.protocols:
            return f"protocol {protocol!r} is not evaluated (evaluation.protocols: {config.evaluation.protocols})"
        if k is not None and k not in config.evaluation.ks:
            return f"K = {k} is not in evaluation.ks = {config.evaluation.ks}"
    return None


__all__ = ["NEXT_ITEM_PROTOCOLS", "PROTOCOLS", "TEST_METRICS", "check_values", "next_item_metric_k",
           "reference_metric_problem", "separator_problem", "wants_test_loss"]
