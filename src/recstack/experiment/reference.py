"""A run's result beside the published figures of its config's ``reference:`` block.

Which figures apply: the first variant whose ``when`` settings all equal the run's config,
otherwise the block's own ``metrics`` (the config as written). Settings the run changed from
the config as written (``--set``) that the matching variant does not account for are listed,
so a one-epoch smoke run is not mistaken for a reproduction.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from .config import TEST_METRICS, ExperimentConfig, reference_metric_problem, setting, with_settings

#: Settings that do not change what a run computes (where files go, threads, batch size of evaluation).
NEUTRAL_SETTINGS = ("output.", "device", "training.threads", "training.checkpoint_every", "training.keep_checkpoints",
                    "evaluation.batch_size")


@dataclass
class AppliedReference:
    """The published figures that apply to one run."""

    source: str
    metrics: dict[str, float]
    label: str = ""
    note: str = ""
    #: Settings (dotted keys) in which the run differs from the published setting.
    differs_in: list[str] = field(default_factory=list)


@dataclass
class ComparisonRow:
    metric: str              # PROTOCOL/METRIC or test/METRIC
    result: float | None     # None when the run did not report it
    reference: float

    @property
    def difference(self) -> float | None:
        return None if self.result is None else self.result - self.reference


def applicable_reference(config: ExperimentConfig, written: ExperimentConfig | None = None) -> AppliedReference | None:
    """The figures of ``config.reference`` that apply to ``config`` (None without a reference block).

    ``written``: the config as written, before the run's ``--set`` overrides; the settings in
    which ``config`` differs from it (beyond the matching variant's and neutral ones) are
    reported in ``differs_in``.
    """
    ref = config.reference
    if ref is None:
        return None
    chosen_metrics, label, covered = ref.metrics, ref.label, set()
    for variant in ref.variants:
        if all(_equal(_value(config, key), value) for key, value in variant.when.items()):
            chosen_metrics, label, covered = variant.metrics, variant.label, set(variant.when)
            break
    changed = changed_settings(written, config) if written is not None else []
    differs = [k for k in changed if k not in covered and not k.startswith(NEUTRAL_SETTINGS)]
    return AppliedReference(ref.source, dict(chosen_metrics), label, ref.note, differs)


def changed_settings(a: ExperimentConfig, b: ExperimentConfig) -> list[str]:
    """Dotted keys whose values differ between two configs (lists compared whole)."""
    def flat(node: Any, prefix: str, out: dict[str, Any]) -> dict[str, Any]:
        if isinstance(node, dict):
            for key, value in node.items():
                flat(value, f"{prefix}{key}.", out)
        else:
            out[prefix[:-1]] = node
        return out

    left, right = flat(a.to_dict(), "", {}), flat(b.to_dict(), "", {})
    return [k for k in dict.fromkeys([*left, *right])
            if not k.startswith("reference.") and not _equal(left.get(k, _MISSING), right.get(k, _MISSING))]


def compare(metrics: dict[str, Any], reference: AppliedReference) -> list[ComparisonRow]:
    """One row per reference metric: the run's value (from metrics.json's layout) and the figure."""
    rows = []
    for key, published in reference.metrics.items():
        protocol, _, name = key.partition("/")
        if protocol == TEST_METRICS:
            value = metrics.get("test", {}).get(name)
        else:
            values = metrics.get("protocols", {}).get(protocol, {})
            value = values.get(f"factorized_top_k/{name}", values.get(name))   # next-item metrics: no prefix
        ok = isinstance(value, (int, float)) and math.isfinite(value)
        rows.append(ComparisonRow(key, float(value) if ok else None, float(published)))
    return rows


def unreported_metrics(config: ExperimentConfig) -> list[str]:
    """Reference figures that the runs they are published for would not report: the block's own
    metrics against ``config``, each variant's against ``config`` with the variant's settings.
    Each entry says where and why (empty for a consistent reference block)."""
    ref = config.reference
    if ref is None:
        return []
    checks = [("reference.metrics", ref.metrics, config)]
    checks += [(f"reference.variants[{i}].metrics", v.metrics, with_settings(config, v.when))
               for i, v in enumerate(ref.variants)]
    return [f"{where}.{key}: {problem}" for where, metrics, run in checks for key in metrics
            if (problem := reference_metric_problem(key, run))]


def _value(config: ExperimentConfig, key: str) -> Any:
    try:
        return setting(config, key)
    except KeyError:
        return _MISSING


def _equal(a: Any, b: Any) -> bool:
    """YAML-level equality: 1 == 1.0, [32] == (32,)."""
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(_equal(x, y) for x, y in zip(a, b))
    return a == b


_MISSING = object()

__all__ = ["AppliedReference", "ComparisonRow", "NEUTRAL_SETTINGS", "applicable_reference", "changed_settings",
           "compare", "unreported_metrics"]
