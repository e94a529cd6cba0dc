"""The comparison page and table of several runs (recstack report RUN_A RUN_B ...)."""

from __future__ import annotations

import json

import pytest

from recstack.cli.main import main
from recstack.experiment.report.comparison import comparison_table, config_differences, default_output
from recstack.experiment.report.contents import load_contents


def test_metrics_side_by_side_with_differences(report_runs):
    a, b = (json.loads((report_runs[n] / "metrics.json").read_text())["protocols"] for n in ("retrieval", "ease"))
    header, rows = comparison_table([load_contents(report_runs["retrieval"]), load_contents(report_runs["ease"])],
                                    ["A", "B"])
    assert header == ["metric", "A", "B", "B - A"]
    by_name = {row[0]: row for row in rows}
    key = "factorized_top_k/ndcg_at_10"
    row = by_name["exclude-seen/ndcg_at_10"]
    assert row[1:] == [pytest.approx(a["exclude-seen"][key]), pytest.approx(b["exclude-seen"][key]),
                       pytest.approx(b["exclude-seen"][key] - a["exclude-seen"][key])]


def test_config_differences_name_the_settings_that_differ(report_runs):
    runs = [load_contents(report_runs[n]) for n in ("popularity", "ease")]
    keys, values, shared = config_differences(runs)
    assert "model.kind" in keys and "split.train_fraction" not in keys and shared > 10
    assert values[0][keys.index("model.kind")] == "popularity" and values[1][keys.index("model.kind")] == "ease"


def test_recstack_report_of_several_runs_writes_the_page_and_prints_the_table(report_runs, tmp_path, capsys):
    out = tmp_path / "compare.html"
    runs = [str(report_runs[n]) for n in ("retrieval", "popularity", "ease", "sasrec")]
    assert main(["report", *runs, "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert f"A = {runs[0]}" in text and "D - A" in text and f"wrote {out}" in text
    page = out.read_text(encoding="utf-8")
    assert "<script" not in page and page.count("<img") >= 2        # overlaid curves: accuracy/HR, NDCG/MRR, loss
    assert 'class="diff"' in page and "model.kind" in page
    assert "Closed-form runs have no curves" in page


def test_default_page_is_beside_the_runs(report_runs):
    assert default_output([report_runs["retrieval"], report_runs["ease"]]) == \
        report_runs["retrieval"].resolve().parent / "comparison.html"


def test_json_table(report_runs, capsys):
    runs = [str(report_runs[n]) for n in ("popularity", "ease")]
    assert main(["report", *runs, "--format", "json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["header"] == ["metric", "A", "B", "B - A"] and data["runs"]["B"] == runs[1]
