"""What a report reads from a finished run folder (read only): config, data summary, metrics,
history, the published figures that apply, and the popularity baseline of the same split."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ...core.errors import DataError
from ...training.history import History
from ..config import ExperimentConfig
from ..config_files import load_config
from ..model_kinds import MODEL_KINDS
from ..plots import parse_metric
from ..reference import AppliedReference, applicable_reference
from ..run_dir import RunDir


@dataclass
class RunContents:
    """One run folder's files, parsed."""

    run: RunDir
    config: ExperimentConfig
    config_text: str
    data: dict[str, Any]
    metrics: dict[str, Any]
    history: History
    reference: AppliedReference | None
    #: ``{baseline name: {protocol: {metric: value}}}`` on the run's own split and test rows.
    baselines: dict[str, dict[str, dict[str, float]]] = field(default_factory=dict)
    #: Where the baselines came from ("metrics.json" or "recomputed ...").
    baselines_source: str = ""

    @property
    def name(self) -> str:
        return self.run.root.name

    @property
    def protocols(self) -> dict[str, dict[str, Any]]:
        value = self.metrics.get("protocols")
        return value if isinstance(value, dict) else {}

    @property
    def gradient_trained(self) -> bool:
        try:
            return MODEL_KINDS.get(self.config.model.kind).gradient_trained
        except Exception:  # an unknown kind (a folder from another version): treat as trained
            return True


def load_contents(path: str | Path) -> RunContents:
    """Parse the run folder at ``path``; a folder that is not a finished run is a DataError naming
    what is missing (with a hint to resume)."""
    run = RunDir.open(Path(path), need=("config", "metrics"))
    config = load_config(run.config)
    data = run.read_json(run.data, expect=dict) if run.data.exists() else {}
    metrics = run.read_json(run.metrics, expect=dict)
    history = History()
    if run.history_json.exists():
        try:
            history = History.from_dict(run.read_json(run.history_json, expect=dict))
        except (KeyError, TypeError, ValueError) as exc:
            raise DataError(f"{run.history_json} is not a history as recstack writes it ({exc}).") from None
    contents = RunContents(run, config, run.config.read_text(encoding="utf-8"), data, metrics, history,
                           applicable_reference(config))
    recorded = recorded_baselines(metrics)
    if recorded:
        contents.baselines, contents.baselines_source = recorded, "metrics.json (evaluated by the run)"
    return contents


def recorded_baselines(metrics: dict[str, Any]) -> dict[str, dict[str, dict[str, float]]]:
    """The baselines a run evaluated itself, from metrics.json's ``baselines`` entry.

    Read defensively: ``{"popularity": {"protocols": {protocol: {...}}}}`` and
    ``{"popularity": {protocol: {...}}}`` are both accepted; non-numeric values are left out."""
    raw = metrics.get("baselines")
    out: dict[str, dict[str, dict[str, float]]] = {}
    if not isinstance(raw, dict):
        return out
    for name, value in raw.items():
        if isinstance(value, dict) and isinstance(value.get("protocols"), dict):
            value = value["protocols"]
        if not isinstance(value, dict):
            continue
        protocols = {p: {k: float(v) for k, v in m.items() if isinstance(v, (int, float)) and math.isfinite(v)}
                     for p, m in value.items() if isinstance(m, dict)}
        protocols = {p: m for p, m in protocols.items() if m}
        if protocols:
            out[str(name)] = protocols
    return out


def same_as_accuracy(values: dict[str, Any], key: str) -> bool:
    """Whether ``key`` is recall@k and equals top-k accuracy (one positive per query)."""
    parsed = parse_metric(key)
    if parsed is None or parsed[0] != "recall":
        return False
    prefix = key.rsplit("/", 1)[0] + "/" if "/" in key else ""
    other = values.get(f"{prefix}top_{parsed[1]}_categorical_accuracy")
    return isinstance(other, (int, float)) and math.isclose(other, values[key], rel_tol=1e-9, abs_tol=1e-12)


__all__ = ["RunContents", "load_contents", "recorded_baselines", "same_as_accuracy"]
