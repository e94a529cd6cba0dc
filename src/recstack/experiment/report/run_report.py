"""``report.html`` of one run folder, and the run folder's plots (the same figures).

:func:`build_run_report` reads the folder (never writes), :func:`write_run_report` writes
report.html atomically, :func:`write_run_outputs` is what the end of ``recstack train`` calls:
plots/*.png (``output.plots``) and report.html (``output.report``).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ...core.errors import RecstackError
from ...core.io import atomic_write_bytes, atomic_write_text
from .. import plots
from ..saved_run import LoadedRun, load_run
from . import html as h
from .baselines import POPULARITY, recompute_popularity
from .beyond import HEAD_FRACTION, BeyondAccuracy, beyond_accuracy
from .contents import RunContents, load_contents, same_as_accuracy

REPORT_NAME = "report.html"
#: Users whose history and recommendations the report shows.
SAMPLE_USERS = 3
#: Items of each sample user's history shown (the most recent).
SHOWN_HISTORY = 10


@dataclass
class RunReport:
    """A built report: the page, its figures (PNG bytes by name) and what it took."""

    html: str
    figures: dict[str, bytes] = field(default_factory=dict)
    seconds: float = 0.0
    notes: list[str] = field(default_factory=list)


# -- figures ------------------------------------------------------------------------------------------
def _by_protocol(metrics: dict[str, float]) -> dict[str, dict[str, float]]:
    out: dict[str, dict[str, float]] = {}
    for key, value in metrics.items():
        protocol, _, name = key.partition("/")
        out.setdefault(protocol, {})[name] = value
    return out


def curve_protocol(c: RunContents) -> str | None:
    """The protocol the curves measure: the validation protocol when there are validation
    curves, else the first test protocol (training metrics rank the whole catalogue)."""
    has_validation = any(k.startswith("val_") for k in c.history.history)
    e = c.config.evaluation
    if has_validation and e.validation_protocol:
        return e.validation_protocol
    return e.protocols[0] if e.protocols else None


def run_figures(c: RunContents) -> tuple[dict[str, bytes], list[str]]:
    """The run's figures by name and notes about them: the curves per metric family (trained
    runs), or the test metrics as bars beside the published figures and baselines (closed-form
    runs, which have no curves; a trained run's table says the same). Empty without matplotlib."""
    if not plots.have_matplotlib():
        return {}, ["charts skipped: matplotlib is not installed (pip install 'recstack[plot]')."]
    references = _by_protocol(c.reference.metrics) if c.reference else {}
    protocol = curve_protocol(c)
    lines = []
    if protocol in references:
        lines.append(plots.metric_lines(references[protocol], "published (test)", plots.REFERENCE_STYLE))
    for name, protocols in c.baselines.items():
        if protocol in protocols:
            lines.append(plots.metric_lines(protocols[protocol], f"{name} (test)", plots.BASELINE_STYLE))
    figures: dict[str, bytes] = {}
    notes: list[str] = []
    if c.gradient_trained and c.history.epochs:
        curves = plots.split_history(c.history.epochs, c.history.history)
        figures.update(plots.curve_figures(curves, lines))
        notes += curves.notes
    ref_lines = {p: plots.metric_lines(v, "published", plots.REFERENCE_STYLE) for p, v in references.items()}
    base_lines = {}
    for name, protocols in c.baselines.items():
        for p, values in protocols.items():
            base_lines.setdefault(p, []).append(plots.metric_lines(values, f"{name} (same split)", plots.BASELINE_STYLE))
    bars = None if c.gradient_trained else plots.metric_bars(c.protocols, ref_lines, base_lines)
    if bars is not None:   # closed-form runs (no curves): their whole result, beside the references
        figures["test_metrics"] = bars
    return figures, notes


# -- sections -------------------------------------------------------------------------------------------
def _data_section(c: RunContents) -> str:
    d = c.data
    rows = d.get("rows", {}) if isinstance(d.get("rows"), dict) else {}
    users, items = d.get("users"), d.get("items")
    interactions = rows.get("after_filters", rows.get("after_duplicates"))
    density = interactions / (users * items) if all(isinstance(x, int) and x for x in (users, items, interactions)) \
        else None
    dup = d.get("duplicates", {}) if isinstance(d.get("duplicates"), dict) else {}
    cards = [("interactions read", rows.get("read")), ("after duplicates", rows.get("after_duplicates")),
             ("after filters", rows.get("after_filters")), ("users", users),
             ("items", items), ("density", f"{100 * density:.2f}%" if density is not None else "-"),
             ("train rows", rows.get("train")), ("validation rows", rows.get("validation")),
             ("test rows", rows.get("test")),
             ("duplicate rows", dup.get("rows")), ("duplicates removed", dup.get("removed"))]
    body = h.cards([(k, v) for k, v in cards if v is not None])
    notes = []
    if dup.get("policy"):
        notes.append(f"duplicates policy: {dup['policy']}")
    filters = d.get("filters") if isinstance(d.get("filters"), dict) else {}
    for key, what in (("min_rating", "rating >= {value:g}"), ("k_core", "{k}-core ({passes} passes)")):
        step = filters.get(key)
        if isinstance(step, dict):
            try:
                label = what.format(**step)
            except (KeyError, ValueError, TypeError):
                label = key
            notes.append(f"filter {label}: dropped {step.get('rows_dropped')} rows, {step.get('users_dropped')} "
                         f"users, {step.get('items_dropped')} items")
    cold = d.get("cold_start", {}) if isinstance(d.get("cold_start"), dict) else {}
    if cold:
        body += h.table(["cold start", "rows"], [(k.replace("_", " "), v) for k, v in cold.items()])
    split = c.config.split
    notes.append(f"split: {split.method}" + (f", train fraction {split.train_fraction}"
                                             if getattr(split, "method", "") == "random" else ""))
    files = d.get("files") if isinstance(d.get("files"), list) else []
    if files:
        notes.append("files: " + ", ".join(f"{Path(str(f.get('path', '?'))).name} (sha256 "
                                           f"{str(f.get('sha256', ''))[:12]}...)" for f in files if isinstance(f, dict)))
    return h.section("Data", body + "".join(f'<p class="note">{h.esc(n)}</p>' for n in notes), "data")


def _metric_rows(c: RunContents, protocol: str, values: dict[str, Any]) -> tuple[list[str], list[list[Any]]]:
    references = _by_protocol(c.reference.metrics) if c.reference else {}
    ref = references.get(protocol, {})
    baselines = [(name, p[protocol]) for name, p in c.baselines.items() if protocol in p]
    header = ["metric", "this run"]
    for name, _ in baselines:
        header += [name, "vs " + name]
    if ref:
        header += ["published", "vs published"]
    rows = []
    for key, value in values.items():
        if not isinstance(value, (int, float)) or key == "rows" or same_as_accuracy(values, key):
            continue
        name = key.split("/", 1)[-1]
        row: list[Any] = [name, float(value)]
        for _, b in baselines:
            other = b.get(key, b.get(name))
            row += [other, h.Raw(h.signed(value - other if other is not None else None))]
        if ref:
            published = ref.get(name)
            row += [published, h.Raw(h.signed(value - published if published is not None else None))]
        rows.append(row)
    return header, rows


def _metrics_section(c: RunContents, figures: dict[str, bytes]) -> str:
    parts = []
    for protocol, values in c.protocols.items():
        if isinstance(values, dict):
            header, rows = _metric_rows(c, protocol, values)
            parts.append(f"<h3>{h.esc(protocol)}</h3>" + h.table(header, rows))
            if any(same_as_accuracy(values, k) for k in values):
                parts.append('<p class="note">recall@k equals top-k accuracy under this protocol (one positive per '
                             "query): listed once, as top-k accuracy.</p>")
    test = c.metrics.get("test")
    if isinstance(test, dict) and test:
        parts.append("<h3>test loss</h3>" + h.table(["metric", "value"], list(test.items())))
    if c.reference:
        r = c.reference
        text = f"published figures: {r.source}" + (f" ({r.label})" if r.label else "")
        parts.append(f'<p class="note">{h.esc(text)}</p>')
        if r.note:
            parts.append(f'<p class="note">{h.esc(r.note)}</p>')
    if c.baselines:
        parts.append(f'<p class="note">baselines on the same split and test rows: {h.esc(c.baselines_source)}</p>')
    if "test_metrics" in figures:
        parts.append(h.image(figures["test_metrics"], "test metrics beside the published figures and baselines"))
    validation = c.metrics.get("validation")
    if isinstance(validation, dict):
        best = f", best epoch {c.metrics['best_epoch']}" if "best_epoch" in c.metrics else ""
        parts.append(f'<p class="note">validation ({h.esc(validation.get("protocol", ""))}{best}): ' +
                     ", ".join(f"{h.esc(k)} {h.number(v)}" for k, v in validation.items()
                               if isinstance(v, float) and k != "rows") + "</p>")
    return h.section("Test metrics", "".join(parts) or "<p>metrics.json lists no protocol.</p>", "metrics")


def _curves_section(c: RunContents, figures: dict[str, bytes], notes: list[str]) -> str:
    names = [n for n in ("loss", "top_k_accuracy", "recall", "ndcg_mrr", "rmse") if n in figures]
    if not c.gradient_trained:
        body = "<p>A closed-form model: fitted in one step, so there are no training curves (the test metrics " \
               "above are its whole result).</p>"
    elif not names:
        body = "<p>No curves: the history is empty or the charts were skipped.</p>"
    else:
        protocol = curve_protocol(c)
        body = (f'<p class="note">dashed: training data; solid: validation. Horizontal lines: the published test '
                f'figures and the baselines\' test values under the {h.esc(protocol)} protocol, for scale (the '
                f'curves are measured on training or validation data).</p>')
        body += "".join(h.image(figures[n], n.replace("_", " ")) for n in names)
    body += "".join(f'<p class="note">{h.esc(n)}</p>' for n in notes)
    return h.section("Training curves", body, "curves")


def _label(loaded: LoadedRun, ids: np.ndarray) -> list[str]:
    import torch

    names = loaded.pre.items.lookup_inverse(torch.as_tensor(ids, dtype=torch.long)).tolist() if len(ids) else []
    out = []
    for i, name in zip(ids.tolist(), names):
        label = loaded.labels[i] if loaded.labels is not None and loaded.labels[i] else None
        out.append(f"{label} ({name})" if label and label != str(name) else str(name))
    return out


def _sample_section(loaded: LoadedRun, beyond: BeyondAccuracy, test_items: dict[int, set[int]]) -> str:
    seen_counts = loaded.seen.take(beyond.users).counts
    order = np.argsort(seen_counts, kind="stable")
    picks = sorted({int(order[int(q * (len(order) - 1))]) for q in (0.25, 0.5, 0.75)})[:SAMPLE_USERS]
    raw_users = loaded.pre.users.lookup_inverse(__import__("torch").as_tensor(beyond.users[picks])).tolist()
    blocks = []
    for pick, raw in zip(picks, raw_users):
        user = int(beyond.users[pick])
        if loaded.histories is not None and user < loaded.histories.num_rows:
            history, how = loaded.histories.row(user), "most recent last"
        else:
            history, how = loaded.seen.row(user) if user < loaded.seen.num_keys else np.zeros(0, np.int64), "by id"
        shown = history[-SHOWN_HISTORY:]
        more = len(history) - len(shown)
        recs = beyond.top[pick][beyond.top[pick] > 0][:10]
        hits = test_items.get(user, set())
        hist_html = "<ol>" + "".join(f"<li>{h.esc(x)}</li>" for x in _label(loaded, shown)) + "</ol>"
        rec_html = "<ol>" + "".join(f'<li class="{"hit" if int(i) in hits else ""}">{h.esc(x)}'
                                    f'{" ✓ in test" if int(i) in hits else ""}</li>'
                                    for i, x in zip(recs.tolist(), _label(loaded, recs))) + "</ol>"
        blocks.append(f"<h3>user {h.esc(raw)}</h3><div class=\"two\"><div><b>history</b> ({len(history)} items before "
                      f"the test split{f', last {len(shown)} shown' if more else ''}, {how}){hist_html}</div><div>"
                      f"<b>top 10 recommendations</b> (history excluded; ✓: an item of the user's test rows)"
                      f"{rec_html}</div></div>")
    return h.section("Sample recommendations", "".join(blocks), "samples")


def _beyond_section(b: BeyondAccuracy, figures: dict[str, bytes]) -> str:
    cards = [(f"catalogue coverage@{k}", f"{100 * v:.1f}%") for k, v in b.coverage.items()]
    cards += [(f"mean popularity of top-{b.k} items", f'{b.mean_popularity["recommended"]:.1f}'),
              ("mean popularity of a training interaction", f'{b.mean_popularity["interactions"]:.1f}'),
              ("mean popularity of a catalogue item", f'{b.mean_popularity["catalogue"]:.1f}'),
              (f"top-{b.k} slots on long-tail items", f"{100 * b.tail_share['recommended']:.1f}%"),
              ("training interactions on long-tail items", f"{100 * b.tail_share['interactions']:.1f}%")]
    body = h.cards(cards)
    body += (f'<p class="note">Over the top-{b.k} lists of the {len(b.users):,} test users, seen items excluded. '
             "Popularity of an item: how many users had it before the test split. Long tail: the items outside "
             f"the most popular {int(100 * HEAD_FRACTION)}% of the catalogue.</p>")
    if "long_tail" in figures:
        body += h.image(figures["long_tail"], "long-tail chart")
    return h.section("Beyond accuracy", body, "beyond")


# -- the page -------------------------------------------------------------------------------------------------
def build_run_report(path: str | Path, charts: bool = True) -> RunReport:
    """The report of the finished run folder at ``path`` (read only); ``charts``: draw the figures
    (needs matplotlib; off with ``output.plots: false``)."""
    start = time.perf_counter()
    c = load_contents(path)
    notes: list[str] = []
    loaded: LoadedRun | None = None
    try:
        loaded = load_run(c.run.root)
    except RecstackError as exc:   # the report still shows what the folder's JSON files say
        notes.append(f"the model could not be loaded, so sample recommendations and beyond-accuracy figures are "
                     f"missing: {exc}")
    if not c.baselines and loaded is not None and c.config.model.kind != POPULARITY:
        try:
            c.baselines = {POPULARITY: recompute_popularity(loaded)}
            c.baselines_source = "recomputed by the report from the run folder (item counts of seen.pt, one per " \
                                 "user and item)"
        except RecstackError as exc:
            notes.append(f"popularity baseline not computed: {exc}")
    figures: dict[str, bytes] = {}
    figure_notes: list[str] = []
    if charts:
        figures, figure_notes = run_figures(c)
    else:
        figure_notes = ["charts are off (output.plots: false)."]
    beyond = None
    test_items: dict[int, set[int]] = {}
    if loaded is not None:
        test = loaded.test_columns()
        users_col, items_col = test["user"].numpy(), test["item"].numpy()
        for u, i in zip(*np.unique(np.stack([users_col, items_col]), axis=1)):
            test_items.setdefault(int(u), set()).add(int(i))
        users = np.unique(users_col)
        ks = list(c.config.evaluation.ks)
        k = max([x for x in ks if x <= 100] or [10])
        beyond = beyond_accuracy(loaded, users, ks, k)
        if charts and plots.have_matplotlib():
            figures["long_tail"] = plots.long_tail_figure(beyond.train_counts, beyond.recommended_counts, k)
    sections = [_header(c), _data_section(c), _metrics_section(c, figures), _curves_section(c, figures, figure_notes)]
    if loaded is not None and beyond is not None and len(beyond.users):
        sections += [_sample_section(loaded, beyond, test_items), _beyond_section(beyond, figures)]
    sections.append(h.section("Config", f'<pre>{h.esc(c.config_text)}</pre>', "config"))
    if notes:
        sections.insert(1, h.section("Notes", "".join(f"<p>{h.esc(n)}</p>" for n in notes)))
    seconds = time.perf_counter() - start
    subtitle = f"{c.config.description or c.config.name} · run folder {c.run.root} · report built in {seconds:.1f} s"
    return RunReport(h.page(f"recstack run {c.name}", subtitle, sections), figures, seconds, notes)


def _header(c: RunContents) -> str:
    m = c.metrics
    items = [("model kind", c.config.model.kind), ("epochs", m.get("epochs")),
             ("training time", f"{m['train_seconds']:.1f} s" if isinstance(m.get("train_seconds"), float) else None),
             ("test rows", m.get("test_rows")), ("best epoch", m.get("best_epoch")), ("seed", c.config.seed)]
    status = c.run.read_status().get("state") if c.run.status.exists() else None
    if status:
        items.append(("status", status))
    body = h.cards([(k, v) for k, v in items if v is not None])
    if c.reference and c.reference.differs_in:
        body += f'<p class="note">differs from the published setting in: {h.esc(", ".join(c.reference.differs_in))}</p>'
    return h.section("Run", body, "run")


def write_run_report(path: str | Path, charts: bool = True) -> tuple[Path, RunReport]:
    """Build the report of the run at ``path`` and write ``path/report.html`` atomically."""
    report = build_run_report(path, charts)
    target = Path(path) / REPORT_NAME
    atomic_write_text(target, report.html)
    return target, report


def write_run_outputs(path: str | Path, plots_on: bool, report_on: bool) -> tuple[list[Path], Path | None, list[str]]:
    """The end of a run: plots/*.png (``plots_on``) and report.html (``report_on``), the same
    figures in both. Returns (plot files, report path or None, notes for the user)."""
    root = Path(path)
    if not plots_on and not report_on:
        return [], None, []
    report = build_run_report(root, charts=plots_on)
    written: list[Path] = []
    for name, png in report.figures.items():
        target = root / "plots" / f"{name}.png"
        atomic_write_bytes(target, png)
        written.append(target)
    notes = [n for n in report.notes]
    if plots_on and not plots.have_matplotlib():
        notes.append("plots skipped: matplotlib is not installed (pip install 'recstack[plot]').")
    report_path = None
    if report_on:
        report_path = root / REPORT_NAME
        atomic_write_text(report_path, report.html)
    return written, report_path, notes


__all__ = ["REPORT_NAME", "RunReport", "build_run_report", "curve_protocol", "run_figures", "write_run_outputs",
           "write_run_report"]
