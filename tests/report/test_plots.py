"""The figures of experiment.plots: families, each metric once, integer epochs, legends outside."""

from __future__ import annotations

import struct

import pytest

pytest.importorskip("matplotlib")

from recstack.experiment import plots  # noqa: E402


def png_size(data: bytes) -> tuple[int, int]:
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    return struct.unpack(">II", data[16:24])


@pytest.mark.parametrize("name, parsed", [
    ("factorized_top_k/top_10_categorical_accuracy", ("accuracy", 10)),
    ("hr_at_5", ("accuracy", 5)), ("next_item/hr_at_20", ("accuracy", 20)),
    ("factorized_top_k/recall_at_50", ("recall", 50)), ("ndcg_at_1", ("ndcg", 1)), ("factorized_top_k/mrr", ("mrr", None)),
    ("loss", None), ("epoch_seconds", None), ("rows", None)])
def test_parse_metric(name, parsed):
    assert plots.parse_metric(name) == parsed


def history(recall_equal: bool) -> tuple[list[int], dict[str, list[float]]]:
    epochs = [1, 2, 3]
    h = {"loss": [3.0, 2.0, 1.5], "total_loss": [3.0, 2.0, 1.5], "val_loss": [3.1, 2.5, 2.4],
         "epoch_seconds": [1.0, 1.0, 1.0]}
    for k, base in ((1, 0.01), (10, 0.1)):
        acc = [base, 2 * base, 3 * base]
        h[f"factorized_top_k/top_{k}_categorical_accuracy"] = acc
        h[f"factorized_top_k/recall_at_{k}"] = acc if recall_equal else [v / 2 for v in acc]
        h[f"factorized_top_k/ndcg_at_{k}"] = [v / 3 for v in acc]
        h[f"val_factorized_top_k/top_{k}_categorical_accuracy"] = [float("nan"), base, 2 * base]
        h[f"val_factorized_top_k/recall_at_{k}"] = [float("nan"), base, 2 * base] if recall_equal else \
            [float("nan"), base / 2, base]
    h["factorized_top_k/mrr"] = [0.1, 0.2, 0.3]
    return epochs, h


def test_recall_equal_to_top_k_accuracy_is_drawn_once():
    curves = plots.split_history(*history(recall_equal=True))
    assert ("recall", 10) not in curves.series and ("accuracy", 10) in curves.series
    assert any("drawn once" in n for n in curves.notes)
    assert set(curves.losses) == {"loss"}            # total_loss == loss: not drawn again
    # the NaN epoch without validation is left out of the validation series, not drawn as 0
    assert curves.series[("accuracy", 1)]["validation"] == ([2, 3], [0.01, 0.02])
    assert set(plots.curve_figures(curves)) == {"loss", "top_k_accuracy", "ndcg_mrr"}


def test_recall_that_differs_gets_its_own_figure():
    curves = plots.split_history(*history(recall_equal=False))
    assert ("recall", 10) in curves.series and not curves.notes
    figures = plots.curve_figures(curves)
    assert set(figures) == {"loss", "top_k_accuracy", "recall", "ndcg_mrr"}
    for png in figures.values():
        assert png_size(png)[0] == 1200              # readable at a glance in a 1200-pixel-wide image


def test_epochs_are_integer_ticks_and_the_legend_is_outside_the_panels():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plots._panels([("accuracy", 1), ("accuracy", 10)], "t")
    for ax in axes:
        ax.plot([1, 2, 3, 4], [0.1, 0.2, 0.3, 0.25], label="train")
        ax.axhline(0.2, label="published (test)")
        plots._integer_epochs(ax)
    plots._legend(fig, axes)
    fig.subplots_adjust(right=0.79)
    fig.canvas.draw()
    for ax in axes:
        ticks = [t for t in ax.get_xticks() if ax.get_xlim()[0] <= t <= ax.get_xlim()[1]]
        assert ticks and all(float(t).is_integer() for t in ticks)
    legend = fig.legends[0].get_window_extent()
    assert all(legend.x0 >= ax.get_window_extent().x1 for ax in axes)   # never over the data
    assert [t.get_text() for t in fig.legends[0].get_texts()] == ["train", "published (test)"]  # each label once
    plt.close(fig)


def test_reference_and_baseline_lines_are_drawn_in_the_matching_panel():
    curves = plots.split_history(*history(recall_equal=True))
    ref = plots.metric_lines({"top_10_categorical_accuracy": 0.25}, "published (test)", plots.REFERENCE_STYLE)
    drawn = []
    original = plots._draw_lines

    def spy(ax, key, lines):
        original(ax, key, lines)
        drawn.append((key, [line.get_ydata()[0] for line in ax.get_lines() if line.get_label() == "published (test)"]))

    plots._draw_lines = spy
    try:
        plots.curve_figures(curves, [ref])
    finally:
        plots._draw_lines = original
    assert (("accuracy", 10), [0.25]) in drawn
    assert all(values == [] for key, values in drawn if key != ("accuracy", 10))


def test_closed_form_bars_leave_out_recall_equal_to_accuracy():
    values = {"factorized_top_k/top_10_categorical_accuracy": 0.2, "factorized_top_k/recall_at_10": 0.2,
              "factorized_top_k/ndcg_at_10": 0.1, "factorized_top_k/mrr": 0.05}
    png = plots.metric_bars({"all-items": values},
                            {"all-items": plots.metric_lines({"top_10_categorical_accuracy": 0.3}, "published",
                                                             plots.REFERENCE_STYLE)})
    assert png is not None and png_size(png)[0] == 1200
    assert plots.metric_bars({"all-items": {"rows": 3}}) is None
