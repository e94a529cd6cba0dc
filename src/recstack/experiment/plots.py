"""The run folder's plots: one figure per metric family, train and validation together.

Families (each a PNG, 1200 px wide at the default size):

* ``loss``: training and validation loss per epoch (``total_loss`` only where it differs from
  ``loss``, i.e. with a regularisation term).
* ``top_k_accuracy``: one small panel per cut-off k: top-k categorical accuracy (TFRS) or, for
  next-item runs, HR@k, which is the same quantity for one held-out item.
* ``recall``: recall@k per k, drawn only where it differs from top-k accuracy. With one
  positive per query (the all-items protocol, next-item HR) recall@k *is* top-k accuracy, so
  it is drawn once, in the accuracy figure, and the figure says so.
* ``ndcg_mrr``: NDCG@k per k and MRR.
* ``rmse``: rating models' RMSE.

Each small panel carries, as labelled horizontal lines, the config's published figures
(``reference:``) and the baselines' test values of the same protocol. Closed-form runs
(popularity, EASE) have no epochs: :func:`metric_bars` draws their test metrics as bars beside
the published figures and the baselines.

Every function returns PNG bytes (nothing is written here): the run folder and the HTML report
embed the same images. matplotlib is optional (the ``plot`` extra); :func:`have_matplotlib`
says whether it is there.
"""

from __future__ import annotations

import io
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

#: Figure width in inches at :data:`DPI`: 12 x 100 = 1200 px.
WIDTH, DPI = 12.0, 100
#: One colour per run in comparison figures (and per series elsewhere): matplotlib's tab10.
COLOURS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22",
           "#17becf")
REFERENCE_STYLE = {"color": "black", "linestyle": ":", "linewidth": 1.6}
BASELINE_STYLE = {"color": "#7f7f7f", "linestyle": "-.", "linewidth": 1.4}

_METRIC = re.compile(r"^(?:(?:factorized_top_k|next_item)/)?(?:top_(?P<acc>\d+)_categorical_accuracy|hr_at_(?P<hr>\d+)"
                     r"|recall_at_(?P<recall>\d+)|ndcg_at_(?P<ndcg>\d+)|(?P<mrr>mrr))$")
_LOSSES = ("loss", "total_loss")
_RMSE = "root_mean_squared_error"


def have_matplotlib() -> bool:
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return False
    return True


def parse_metric(name: str) -> tuple[str, int | None] | None:
    """``(family, k)`` of a metric name: ``"factorized_top_k/top_10_categorical_accuracy"`` ->
    ``("accuracy", 10)``, ``"hr_at_10"`` -> ``("accuracy", 10)``, ``"ndcg_at_5"`` -> ``("ndcg", 5)``,
    ``"mrr"`` -> ``("mrr", None)``; None for anything else (losses, timings, ``rows``)."""
    m = _METRIC.match(name)
    if m is None:
        return None
    if m.group("mrr"):
        return "mrr", None
    for family in ("acc", "hr", "recall", "ndcg"):
        if m.group(family):
            return ("accuracy" if family in ("acc", "hr") else family), int(m.group(family))
    return None  # pragma: no cover (the pattern has no other alternative)


def family_label(family: str, k: int | None, next_item: bool = False, short: bool = False) -> str:
    """``top-10 accuracy`` (``short``: ``top-10``), ``HR@10``, ``recall@10`` (``rec@10``), ``NDCG@10``, ``MRR``."""
    if family == "accuracy":
        return f"HR@{k}" if next_item else f"top-{k}" if short else f"top-{k} accuracy"
    if family == "mrr":
        return "MRR"
    return f"{('rec' if short else 'recall') if family == 'recall' else 'NDCG'}@{k}"


@dataclass
class Lines:
    """Horizontal lines for the small panels: ``{(family, k): value}`` with a legend label."""

    label: str
    values: dict[tuple[str, int | None], float]
    style: dict[str, Any]


def metric_lines(values: Mapping[str, Any], label: str, style: Mapping[str, Any]) -> Lines:
    """:class:`Lines` from one protocol's metrics (``{"factorized_top_k/recall_at_10": 0.1, ...}``)."""
    out: dict[tuple[str, int | None], float] = {}
    for name, value in values.items():
        parsed = parse_metric(name)
        if parsed is not None and isinstance(value, (int, float)) and math.isfinite(value):
            out[parsed] = float(value)
    return Lines(label, out, dict(style))


@dataclass
class Curves:
    """A history split into metric families: ``series[(family, k)][split] = (epochs, values)``,
    ``split`` "train" or "validation"; ``losses[name][split]`` likewise."""

    series: dict[tuple[str, int | None], dict[str, tuple[list[int], list[float]]]] = field(default_factory=dict)
    losses: dict[str, dict[str, tuple[list[int], list[float]]]] = field(default_factory=dict)
    rmse: dict[str, tuple[list[int], list[float]]] = field(default_factory=dict)
    next_item: bool = False
    #: Sentences about what was not drawn and why (shown under the figures).
    notes: list[str] = field(default_factory=list)

    @property
    def empty(self) -> bool:
        return not (self.series or self.losses or self.rmse)


def split_history(epochs: Sequence[int], history: Mapping[str, Sequence[float]]) -> Curves:
    """Group a history's keys (``loss``, ``val_loss``, ``val_factorized_top_k/ndcg_at_10``, ...) into
    :class:`Curves`. NaN values (epochs without validation) are left out of each series; timings
    (``epoch_seconds``) and other keys are ignored. Recall@k is dropped when it equals top-k
    accuracy at every epoch of every split (one positive per query), and ``total_loss`` when it
    equals ``loss``, each with a note."""
    curves = Curves()
    for key, values in history.items():
        split, name = ("validation", key[4:]) if key.startswith("val_") else ("train", key)
        points = [(int(e), float(v)) for e, v in zip(epochs, values)
                  if isinstance(v, (int, float)) and math.isfinite(v)]
        if not points:
            continue
        data = ([p[0] for p in points], [p[1] for p in points])
        if name in _LOSSES:
            curves.losses.setdefault(name, {})[split] = data
        elif name == _RMSE:
            curves.rmse[split] = data
        elif (parsed := parse_metric(name)) is not None:
            curves.series.setdefault(parsed, {})[split] = data
            curves.next_item |= "hr_at_" in name
    recall = [key for key in curves.series if key[0] == "recall"]
    if recall and all(_same(curves.series[key], curves.series.get(("accuracy", key[1]))) for key in recall):
        for key in recall:
            del curves.series[key]
        curves.notes.append("recall@k equals top-k accuracy here (one positive per query): it is drawn once, as "
                            "top-k accuracy.")
    if "total_loss" in curves.losses and _same(curves.losses["total_loss"], curves.losses.get("loss"), subset=True):
        del curves.losses["total_loss"]
    return curves


def _same(a: Mapping[str, tuple[list[int], list[float]]] | None,
          b: Mapping[str, tuple[list[int], list[float]]] | None, subset: bool = False) -> bool:
    """Whether series ``a`` equals ``b`` in every split (``subset``: in every split ``a`` has, ``b``
    may have more, e.g. a validation loss without a validation total loss)."""
    if a is None or b is None or not (set(a) <= set(b) if subset else set(a) == set(b)):
        return False
    return all(a[s][0] == b[s][0] and all(math.isclose(x, y, rel_tol=1e-9, abs_tol=1e-12)
                                          for x, y in zip(a[s][1], b[s][1])) for s in a)


# -- figures -------------------------------------------------------------------------------------------
def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _png(fig: Any) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=DPI)
    _pyplot().close(fig)
    return buffer.getvalue()


def _integer_epochs(ax: Any) -> None:
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True, nbins=6))
    ax.tick_params(axis="x", labelsize=8)
    ax.set_xlabel("epoch")


def _draw_lines(ax: Any, key: tuple[str, int | None], lines: Sequence[Lines]) -> None:
    for group in lines:
        if key in group.values:
            ax.axhline(group.values[key], label=group.label, **group.style)


def _legend(fig: Any, axes: Sequence[Any]) -> None:
    """One legend for the figure, right of the panels (never over the data), each label once."""
    seen: dict[str, Any] = {}
    for ax in axes:
        for handle, label in zip(*ax.get_legend_handles_labels()):
            seen.setdefault(label, handle)
    if seen:
        fig.legend(list(seen.values()), list(seen), loc="center left", bbox_to_anchor=(0.8, 0.5), fontsize=9,
                   frameon=False)


def _panels(keys: Sequence[tuple[str, int | None]], title: str) -> tuple[Any, list[Any]]:
    plt = _pyplot()
    n = len(keys)
    columns = min(n, 6)
    rows = math.ceil(n / columns)
    fig, axes = plt.subplots(rows, columns, figsize=(WIDTH, 3.2 * rows + 0.6), squeeze=False)
    flat = list(axes.ravel())
    for ax in flat[n:]:
        ax.set_visible(False)
    fig.suptitle(title, fontsize=12, x=0.42)
    return fig, flat[:n]


def _finish(fig: Any, axes: Sequence[Any]) -> bytes:
    """Legend at the right, fixed margins (tight_layout would cost as much as drawing: the
    report's build time is mostly these figures)."""
    _legend(fig, axes)
    height = fig.get_figheight()
    rows = max(1, len({round(ax.get_position().y0, 3) for ax in axes}))
    from matplotlib.ticker import MaxNLocator

    for ax in axes:
        ax.tick_params(axis="y", labelsize=8)
        if ax.get_yscale() == "linear":
            ax.yaxis.set_major_locator(MaxNLocator(nbins=5))
    fig.subplots_adjust(left=0.06, right=0.79, top=1 - 0.55 / height, bottom=0.5 / height + 0.02,
                        wspace=0.5, hspace=0.55 if rows > 1 else 0.2)
    return _png(fig)


def curve_figures(curves: Curves, lines: Sequence[Lines] = ()) -> dict[str, bytes]:
    """PNG bytes per family name (``loss``, ``top_k_accuracy``, ``recall``, ``ndcg_mrr``, ``rmse``)
    for the families the history has. ``lines``: published figures and baselines, drawn as
    horizontal lines in the panel of the metric they give."""
    out: dict[str, bytes] = {}
    styles = {"train": {"linestyle": "--", "marker": "o", "markersize": 3, "color": COLOURS[0], "alpha": 0.85},
              "validation": {"linestyle": "-", "marker": "o", "markersize": 4, "color": COLOURS[1]}}
    if curves.losses:
        fig, (ax,) = _panels([("loss", None)], "Loss per epoch")
        for i, (name, splits) in enumerate(sorted(curves.losses.items())):
            for split, (x, y) in splits.items():
                style = dict(styles[split], color=COLOURS[(2 * i + (split == "validation")) % len(COLOURS)])
                ax.plot(x, y, label=f"{split} {name.replace('_', ' ')}", **style)
        ax.set_ylabel("loss")
        _integer_epochs(ax)
        ax.grid(alpha=0.3)
        out["loss"] = _finish(fig, [ax])
    families = [("top_k_accuracy", ("accuracy",), "HR@k per epoch" if curves.next_item else "Top-k accuracy per epoch"),
                ("recall", ("recall",), "Recall@k per epoch"), ("ndcg_mrr", ("ndcg", "mrr"), "NDCG@k and MRR per epoch")]
    for name, members, title in families:
        keys = sorted((key for key in curves.series if key[0] in members), key=lambda key: (key[0] == "mrr", key[1] or 0))
        if not keys:
            continue
        fig, axes = _panels(keys, title)
        for ax, key in zip(axes, keys):
            for split, (x, y) in curves.series[key].items():
                ax.plot(x, y, label=split, **styles[split])
            _draw_lines(ax, key, lines)
            ax.set_title(family_label(*key, next_item=curves.next_item), fontsize=10)
            _integer_epochs(ax)
            ax.grid(alpha=0.3)
        out[name] = _finish(fig, axes)
    if curves.rmse:
        fig, (ax,) = _panels([("rmse", None)], "RMSE per epoch")
        for split, (x, y) in curves.rmse.items():
            ax.plot(x, y, label=split, **styles[split])
        ax.set_ylabel("RMSE")
        _integer_epochs(ax)
        ax.grid(alpha=0.3)
        out["rmse"] = _finish(fig, [ax])
    return out


def metric_bars(protocols: Mapping[str, Mapping[str, Any]], references: Mapping[str, Lines] | None = None,
                baselines: Mapping[str, Sequence[Lines]] | None = None, title: str | None = None) -> bytes | None:
    """Grouped bars of a run's test metrics, one panel per protocol: the run, then each reference
    and baseline that gives the same metric (``references[protocol]``, ``baselines[protocol]``).
    Recall@k is left out where it equals top-k accuracy. None when there is nothing to draw."""
    panels = []
    for protocol, values in protocols.items():
        run = metric_lines(values, "this run", {})
        keys = [key for key in run.values if key[0] != "recall"
                or not math.isclose(run.values[key], run.values.get(("accuracy", key[1]), math.nan))]
        keys.sort(key=lambda key: (("accuracy", "recall", "ndcg", "mrr").index(key[0]), key[1] or 0))
        if keys:
            groups = [run, *([references[protocol]] if references and protocol in references else []),
                      *(baselines.get(protocol, []) if baselines else [])]
            panels.append((protocol, keys, groups))
    if not panels:
        return None
    plt = _pyplot()
    fig, axes = plt.subplots(len(panels), 1, figsize=(WIDTH, 3.4 * len(panels) + 0.4), squeeze=False)
    next_item = any("hr_at_" in name for values in protocols.values() for name in values)
    for ax, (protocol, keys, groups) in zip(axes.ravel(), panels):
        width = 0.8 / len(groups)
        for g, group in enumerate(groups):
            xs = [i + (g - (len(groups) - 1) / 2) * width for i, key in enumerate(keys) if key in group.values]
            ys = [group.values[key] for key in keys if key in group.values]
            colour = COLOURS[0] if g == 0 else group.style.get("color", COLOURS[g % len(COLOURS)])
            hatch = "//" if group.style.get("linestyle") == ":" else None
            ax.bar(xs, ys, width=width * 0.95, label=group.label, color=colour if hatch is None else "white",
                   edgecolor=colour, hatch=hatch)
        ax.set_xticks(range(len(keys)), [family_label(*key, next_item=next_item, short=True) for key in keys])
        ax.tick_params(axis="x", labelsize=8 if len(keys) <= 12 else 7)
        ax.set_title(f"test metrics, {protocol} protocol" if title is None else f"{title}, {protocol}", fontsize=10)
        ax.grid(alpha=0.3, axis="y")
    return _finish(fig, list(axes.ravel()))


def overlay_figures(runs: Sequence[tuple[str, Curves]]) -> dict[str, bytes]:
    """Comparison figures: per family, one colour per run (its validation curve where it has one,
    else its training curve; the legend says which)."""
    out: dict[str, bytes] = {}
    families = [("top_k_accuracy", ("accuracy",), "Top-k accuracy / HR@k per epoch"),
                ("ndcg_mrr", ("ndcg", "mrr"), "NDCG@k and MRR per epoch")]
    for name, members, title in families:
        keys = sorted({key for _, c in runs for key in c.series if key[0] in members},
                      key=lambda key: (key[0] == "mrr", key[1] or 0))
        if not keys:
            continue
        fig, axes = _panels(keys, title)
        for ax, key in zip(axes, keys):
            for i, (label, curves) in enumerate(runs):
                splits = curves.series.get(key, {})
                split = "validation" if "validation" in splits else "train"
                if split in splits:
                    x, y = splits[split]
                    ax.plot(x, y, marker="o", markersize=3, color=COLOURS[i % len(COLOURS)], label=f"{label} ({split})")
            ax.set_title(family_label(*key), fontsize=10)
            _integer_epochs(ax)
            ax.grid(alpha=0.3)
        out[name] = _finish(fig, axes)
    loss_runs = [(label, c.losses["loss"]) for label, c in runs if "loss" in c.losses]
    if loss_runs:
        fig, (ax,) = _panels([("loss", None)], "Loss per epoch (scales differ with the loss's reduction)")
        for i, (label, splits) in enumerate(loss_runs):
            for split, (x, y) in splits.items():
                ax.plot(x, y, color=COLOURS[i % len(COLOURS)], linestyle="-" if split == "validation" else "--",
                        marker="o", markersize=3, label=f"{label} ({split})")
        if all(v > 0 for _, splits in loss_runs for _, ys in splits.values() for v in ys):
            ax.set_yscale("log")   # sum- and mean-reduced losses differ by orders of magnitude
        _integer_epochs(ax)
        ax.grid(alpha=0.3)
        out["loss"] = _finish(fig, [ax])
    return out


def long_tail_figure(train_counts: Sequence[float], recommended_counts: Sequence[float], k: int,
                     bins: int = 10) -> bytes:
    """The long tail: left, training interactions per item (items ranked by popularity, log
    scale); right, the share of training interactions and of the top-``k`` recommendation slots
    that fall on each popularity decile of the catalogue (decile 1 = the most popular tenth).

    ``train_counts`` [V'] and ``recommended_counts`` [V'] are per catalogue item, in the same order."""
    import numpy as np

    plt = _pyplot()
    train = np.asarray(train_counts, dtype=np.float64)
    recommended = np.asarray(recommended_counts, dtype=np.float64)
    order = np.argsort(-train, kind="stable")
    fig, (left, right) = plt.subplots(1, 2, figsize=(WIDTH, 3.8))
    ranked = train[order]
    left.plot(np.arange(1, len(ranked) + 1), np.maximum(ranked, 0.5), color=COLOURS[0], label="training interactions")
    left.set_yscale("log")
    left.set_xlabel("items ranked by training popularity")
    left.set_ylabel("interactions (log)")
    left.set_title("Popularity of each item in the training data", fontsize=10)
    left.grid(alpha=0.3)
    edges = np.linspace(0, len(order), bins + 1).round().astype(int)
    decile = np.empty(len(order), dtype=np.int64)
    for b in range(bins):
        decile[order[edges[b]:edges[b + 1]]] = b
    share_train = np.bincount(decile, weights=train, minlength=bins) / max(train.sum(), 1.0)
    share_recs = np.bincount(decile, weights=recommended, minlength=bins) / max(recommended.sum(), 1.0)
    x = np.arange(1, bins + 1)
    right.bar(x - 0.2, 100 * share_train, width=0.4, color=COLOURS[7], label="share of training interactions")
    right.bar(x + 0.2, 100 * share_recs, width=0.4, color=COLOURS[1], label=f"share of top-{k} recommendations")
    right.set_xticks(x)
    right.set_xlabel("popularity decile of the catalogue (1 = most popular 10% of items)")
    right.set_ylabel("%")
    right.set_title("Where recommendations fall in the long tail", fontsize=10)
    right.grid(alpha=0.3, axis="y")
    return _finish(fig, [left, right])


def trials_figure(trials: Sequence[Mapping[str, Any]], metric: str, direction: str) -> bytes:
    """A hyperparameter study (``recstack tune``): each completed trial's validation ``metric``
    (dots), each pruned trial's last reported value (hollow), and the best value so far (a step
    line; ``direction`` "maximize" or "minimize"). ``trials``: dicts with ``number``, ``state``
    (COMPLETE, PRUNED, FAIL, ...), ``value`` and ``epoch_values`` ({epoch: value})."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(WIDTH * 0.6, 3.8))
    done = [t for t in trials if t["state"] == "COMPLETE" and t["value"] is not None]
    pruned = [t for t in trials if t["state"] == "PRUNED" and t["epoch_values"]]
    if done:
        ax.plot([t["number"] for t in done], [t["value"] for t in done], "o", color=COLOURS[0],
                label="completed trial")
        best, xs, ys = None, [], []
        for t in sorted(done, key=lambda t: t["number"]):
            better = best is None or (t["value"] > best if direction == "maximize" else t["value"] < best)
            best = t["value"] if better else best
            xs.append(t["number"])
            ys.append(best)
        ax.step(xs, ys, where="post", color=COLOURS[1], label="best so far")
    if pruned:
        last = [t["epoch_values"][max(t["epoch_values"], key=int)] for t in pruned]
        ax.plot([t["number"] for t in pruned], last, "o", mfc="none", color=COLOURS[7],
                label="pruned trial (last epoch reported)")
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("trial")
    ax.set_ylabel(f"validation {metric}")
    ax.set_title(f"Trials ({direction} validation {metric})", fontsize=10)
    ax.grid(alpha=0.3)
    if done or pruned:
        ax.legend(fontsize=8, frameon=False)
    fig.tight_layout()
    return _png(fig)


__all__ = ["BASELINE_STYLE", "COLOURS", "Curves", "Lines", "REFERENCE_STYLE", "curve_figures", "family_label",
           "have_matplotlib", "long_tail_figure", "metric_bars", "metric_lines", "overlay_figures", "parse_metric",
           "split_history", "trials_figure"]
