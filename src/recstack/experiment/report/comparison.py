"""The comparison page of several run folders (``recstack report RUN_A RUN_B ...``).

Metrics side by side (each run's value, and its difference from the first run), the curves
overlaid (one colour per run), and the settings in which the configs differ, highlighted (the
shared ones folded away). :func:`comparison_table` gives the metrics as (header, rows) for the
command line's table.
"""

from __future__ import annotations

import math
import os
import time
from pathlib import Path
from typing import Any

from ...core.errors import UsageError
from ...core.io import atomic_write_text
from .. import plots
from ..tracking import flatten
from . import html as h
from .contents import RunContents, load_contents, same_as_accuracy

COMPARISON_NAME = "comparison.html"


def _metric_keys(runs: list[RunContents]) -> list[tuple[str, str]]:
    keys: dict[tuple[str, str], None] = {}
    for c in runs:
        for protocol, values in c.protocols.items():
            for name, value in (values or {}).items():
                if isinstance(value, (int, float)) and name != "rows":
                    keys[(protocol, name)] = None
    return list(keys)


def _value(c: RunContents, protocol: str, name: str) -> float | None:
    value = c.protocols.get(protocol, {}).get(name)
    return float(value) if isinstance(value, (int, float)) and math.isfinite(value) else None


def comparison_table(runs: list[RunContents], labels: list[str] | None = None) -> tuple[list[str], list[list[Any]]]:
    """Header and rows: ``protocol/metric``, each run's value, then each later run's difference
    from the first (``B - A``). Training seconds and epochs close the table. ``labels``: the
    runs' column names (default: their folder names)."""
    labels = labels or [c.name for c in runs]
    header = ["metric", *labels, *(f"{label} - {labels[0]}" for label in labels[1:])]
    rows: list[list[Any]] = []
    for protocol, name in _metric_keys(runs):
        if all(same_as_accuracy(c.protocols.get(protocol, {}), name) for c in runs
               if name in c.protocols.get(protocol, {})):
            continue    # recall@k that is top-k accuracy in every run (one positive per query): listed once
        values = [_value(c, protocol, name) for c in runs]
        first = values[0]
        diffs = [None if v is None or first is None else v - first for v in values[1:]]
        rows.append([f"{protocol}/{name.split('/', 1)[-1]}", *values, *diffs])
    for key in ("train_seconds", "epochs"):
        values = [c.metrics.get(key) if isinstance(c.metrics.get(key), (int, float)) else None for c in runs]
        rows.append([key, *values, *([None] * (len(runs) - 1))])
    return header, rows


def config_differences(runs: list[RunContents]) -> tuple[list[str], list[list[str]], int]:
    """(setting names, one row per run of their values, number of settings all runs share)."""
    flat = [flatten({k: v for k, v in c.config.to_dict().items() if k != "reference"}) for c in runs]
    keys = list(dict.fromkeys(k for f in flat for k in f))
    differing = [k for k in keys if len({f.get(k, "(absent)") for f in flat}) > 1]
    return differing, [[f.get(k, "(absent)") for k in differing] for f in flat], len(keys) - len(differing)


def default_output(paths: list[Path]) -> Path:
    """``comparison.html`` in the folder that holds all the runs (e.g. runs/demo/comparison.html)."""
    parents = [str(Path(p).resolve().parent) for p in paths]
    return Path(os.path.commonpath(parents)) / COMPARISON_NAME


def run_labels(runs: list[RunContents]) -> list[str]:
    """A, B, C, ... (R27, R28, ... past Z): the runs' short names in tables and legends."""
    return [chr(ord("A") + i) if i < 26 else f"R{i + 1}" for i in range(len(runs))]


def build_comparison(runs: list[RunContents]) -> str:
    start = time.perf_counter()
    labels = run_labels(runs)
    header, rows = comparison_table(runs, labels)
    n = len(runs)
    cells = []
    for row in rows:
        values, diffs = row[1:1 + n], row[1 + n:]
        cells.append([row[0], *values, *(h.Raw(h.signed(d)) for d in diffs)])
    sections = [h.section("Runs", h.table(["", "run", "config", "model kind", "description"],
                                          [[label, c.name, c.config.name, c.config.model.kind, c.config.description]
                                           for label, c in zip(labels, runs)], text_columns=(1, 4)), "runs"),
                h.section("Test metrics", h.table(header, cells) +
                          '<p class="note">Differences are each run minus the first run; green: higher.</p>',
                          "metrics")]
    if plots.have_matplotlib():
        curves = [(f"{label} {c.config.name}", plots.split_history(c.history.epochs, c.history.history))
                  for label, c in zip(labels, runs) if c.gradient_trained and c.history.epochs]
        figures = plots.overlay_figures(curves) if curves else {}
        body = "".join(h.image(png, name) for name, png in figures.items())
        closed = [f"{label} ({c.config.name})" for label, c in zip(labels, runs) if not c.gradient_trained]
        if closed:
            body += f'<p class="note">Closed-form runs have no curves: {h.esc(", ".join(closed))}.</p>'
        sections.append(h.section("Curves", body or "<p>No run has per-epoch curves.</p>", "curves"))
    keys, values, shared = config_differences(runs)
    if keys:
        body = h.table(["setting", *(f"{label} {c.config.name}" for label, c in zip(labels, runs))], [[k, *(v[i] for v in values)] for i, k in enumerate(keys)],
                       text_columns=tuple(range(n + 1)), row_classes=["diff"] * len(keys))
    else:
        body = "<p>The configs are identical.</p>"
    body += f'<p class="note">{len(keys)} setting(s) differ (highlighted); {shared} are the same in every run.</p>'
    sections.append(h.section("Config differences", body, "config"))
    subtitle = f"{n} runs · built in {time.perf_counter() - start:.1f} s"
    return h.page("recstack comparison: " + ", ".join(c.name for c in runs), subtitle, sections)


def write_comparison(paths: list[str | Path], out: str | Path | None = None) -> tuple[Path, list[RunContents]]:
    """Write the comparison page of the run folders ``paths`` to ``out`` (default
    :func:`default_output`); returns the page's path and the parsed runs."""
    if len(paths) < 2:
        raise UsageError("a comparison needs two or more run folders (recstack report RUN_A RUN_B ...).")
    runs = [load_contents(p) for p in paths]
    target = Path(out) if out is not None else default_output([Path(p) for p in paths])
    atomic_write_text(target, build_comparison(runs))
    return target, runs


__all__ = ["COMPARISON_NAME", "build_comparison", "run_labels", "comparison_table", "config_differences", "default_output",
           "write_comparison"]
