"""The popularity baseline beside every trained run, and a warning when the model does not beat it.

Recommending the most-interacted training items is a one-line baseline that an untuned model
often loses to (the README's first two-tower template did on MovieLens 100K). So every
``recstack train`` run of another kind evaluates popularity on the run's own split and protocols,
records it in metrics.json as ``baselines: {popularity: {PROTOCOL: {metric: value}}}`` (the layout
the run report reads, :func:`recstack.experiment.report.contents.recorded_baselines`) and warns
when the model is not above it on the headline metrics.

Cost: popularity ranks every query in one fixed order (training counts descending, ties by item
id, the popularity kind's rule), so its all-items and exclude-seen ranks come from one sort and a
binary search per test row (:func:`~recstack.experiment.report.baselines.popularity_ranks`):
milliseconds. Next-item protocols score the fitted popularity kind through the usual evaluation.
"""

from __future__ import annotations

import dataclasses
import re
from typing import Any

import numpy as np
import torch

from ..metrics.factorized_top_k import metrics_from_ranks
from .building import model_context
from .config import NEXT_ITEM_PROTOCOLS, ExperimentConfig
from .evaluation import evaluate_run
from .model_kinds import MODEL_KINDS, PopularityParams
from .prepare import Prepared
from .report.baselines import POPULARITY, popularity_ranks
from .schema import ModelConfig

#: Headline metrics per protocol, by name after the ``factorized_top_k/`` prefix; ``{k}`` is the
#: cut-off compared (10 when evaluated, else the smallest of evaluation.ks).
HEADLINE = {"exclude-seen": ("recall_at_{k}", "ndcg_at_{k}", "mrr"),
            "all-items": ("top_{k}_categorical_accuracy", "mrr"),
            "next-item": ("hr_at_{k}", "ndcg_at_{k}", "mrr"),
            "next-item-sampled": ("hr_at_{k}", "ndcg_at_{k}", "mrr")}


def popularity_baseline(config: ExperimentConfig, prepared: Prepared) -> dict[str, dict[str, float]]:
    """``{protocol: metrics}`` of the popularity kind fitted on ``prepared.train`` (item counts of the
    training rows) and evaluated on ``prepared.test`` under ``config.evaluation.protocols``, with the
    same exclusions (training + validation items per user) and the same metric keys as the run."""
    e = config.evaluation
    test = prepared.test
    counts = np.bincount(prepared.train["item"].numpy(), minlength=prepared.pre.num_items).astype(np.float64)
    users, items = test["user"].numpy(), test["item"].numpy()
    out: dict[str, dict[str, float]] = {}
    for protocol in (p for p in e.protocols if p in ("all-items", "exclude-seen")):
        per_user = protocol == "exclude-seen"
        ranks = popularity_ranks(counts, users, items, prepared.seen_before_test if per_user else None)
        out[protocol] = metrics_from_ranks(torch.from_numpy(ranks), torch.ones(len(ranks), dtype=torch.float64),
                                           test["query_key"] if per_user else None, e.ks, "factorized_top_k")
    sequential = [p for p in e.protocols if p in NEXT_ITEM_PROTOCOLS]
    if sequential:
        popular = dataclasses.replace(config, model=ModelConfig(POPULARITY, PopularityParams()))
        ctx = model_context(popular, prepared.pre, prepared, False, False)
        model = MODEL_KINDS.get(POPULARITY).builder(ctx, popular.model.params)
        model.fit(prepared.train)
        model.eval()
        result: dict[str, Any] = evaluate_run(popular, model, test, prepared.pre, prepared.seen_before_test,
                                              sequential, with_loss=False, histories=prepared.histories_before_test)
        out.update(result["protocols"])
    return out


def headline_k(ks: list[int] | tuple[int, ...]) -> int:
    """The cut-off of the headline metrics: 10 when evaluated, else the smallest of ``ks``."""
    return 10 if 10 in ks else min(ks)


def losses_to_baseline(model_metrics: dict[str, dict[str, float]], baseline: dict[str, dict[str, float]],
                       ks: list[int] | tuple[int, ...]) -> list[tuple[str, str, float, float]]:
    """``(protocol, metric, model value, baseline value)`` for every headline metric where the model
    is not above the baseline (a tie counts: it does not beat it). A NaN model value is a loss."""
    k = headline_k(ks)
    out = []
    for protocol, theirs in baseline.items():
        ours = model_metrics.get(protocol, {})
        for template in HEADLINE.get(protocol, ()):
            name = template.format(k=k)
            key = next((key for key in ours if re.fullmatch(rf"(?:.*/)?{re.escape(name)}", key)), None)
            if key is None or key not in theirs:
                continue
            mine, base = float(ours[key]), float(theirs[key])
            if not mine > base:                      # NaN is never above
                out.append((protocol, name, mine, base))
    return out


def warning_text(kind: str, losses: list[tuple[str, str, float, float]], gradient_trained: bool) -> str:
    """The warning printed after a run that does not beat popularity (what, by how much, what to try)."""
    parts = []
    for protocol, name, mine, base in losses:
        relative = f", {100 * (mine - base) / base:+.0f}%" if base > 0 else ""
        parts.append(f"{protocol} {name} {mine:.4f} vs {base:.4f} ({mine - base:+.4f}{relative})")
    if gradient_trained:
        advice = ("train longer (training.epochs), tune optimizer.learning_rate, and for two_tower set "
                  "tasks.retrieval.temperature (e.g. 0.05 to 0.2) with tasks.retrieval.reduction: mean; "
                  "or try a closed-form kind (model.kind: ease), which is strong on interaction data")
    else:
        advice = "tune the model's parameters (model.*, e.g. model.l2 for ease) or try another model.kind"
    return (f"WARNING: the {kind} model does not beat the popularity baseline (most-interacted training items) "
            f"on the same split: {'; '.join(parts)}. Try: {advice}. The baseline is in metrics.json "
            "(baselines.popularity).")


def check_against_popularity(config: ExperimentConfig, prepared: Prepared, metrics: dict[str, Any],
                             warn: Any) -> None:
    """Add ``metrics["baselines"]["popularity"]`` and call ``warn(text)`` when the model loses to it.

    Not for the popularity kind itself; a no-op for runs without a top-k protocol (rating-only runs
    still have exclude-seen or all-items, so they are compared too)."""
    kind = config.model.kind
    if kind == POPULARITY or not config.evaluation.protocols:
        return
    baseline = popularity_baseline(config, prepared)
    if not baseline:
        return
    metrics.setdefault("baselines", {})[POPULARITY] = baseline
    losses = losses_to_baseline(metrics.get("protocols", {}), baseline, config.evaluation.ks)
    if losses:
        warn(warning_text(kind, losses, MODEL_KINDS.get(kind).gradient_trained))


__all__ = ["HEADLINE", "check_against_popularity", "headline_k", "losses_to_baseline", "popularity_baseline",
           "warning_text"]
