"""report.html of a run folder: self-contained, complete, and never changing the run."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest

from recstack.cli.main import main
from recstack.experiment.report import build_run_report, write_run_report
from recstack.experiment.report.baselines import popularity_ranks, recompute_popularity
from recstack.experiment.report.beyond import beyond_accuracy
from recstack.experiment.report.contents import recorded_baselines
from recstack.experiment.report.recommendations import top_k_items
from recstack.experiment.saved_run import load_run, recommend


def test_recstack_train_writes_a_self_contained_report(report_runs):
    for name, run in report_runs.items():
        page = (run / "report.html").read_text(encoding="utf-8")
        assert "<script" not in page.lower() and "<link" not in page.lower()
        # every image is embedded; nothing points outside the file
        sources = re.findall(r'\ssrc="([^"]*)"', page)
        assert sources and all(s.startswith("data:image/png;base64,") for s in sources), name
        assert not re.search(r'(href|src)="(https?:)?//', page) and "url(" not in page
        for title in ("Data", "Test metrics", "Training curves", "Sample recommendations", "Beyond accuracy", "Config"):
            assert f"<h2>{title}</h2>" in page, (name, title)


def test_the_report_shows_the_data_summary_and_the_config(report_runs):
    run = report_runs["retrieval"]
    data = json.loads((run / "data.json").read_text())
    page = (run / "report.html").read_text(encoding="utf-8")
    density = data["rows"]["after_duplicates"] / (data["users"] * data["items"])
    assert f"{100 * density:.2f}%" in page
    for key in ("train", "test"):
        assert f"<b>{data['rows'][key]:,}</b><span>{key} rows</span>" in page
    assert "test rows unknown user" in page               # the cold-start counts
    assert "name: basic-retrieval" in page                # config.yaml, escaped in a <pre>


def test_building_a_report_never_changes_the_run(report_runs):
    for run in report_runs.values():
        before = {p.name: p.read_bytes() for p in run.iterdir() if p.is_file() and p.name != "report.html"}
        write_run_report(run)
        after = {p.name: p.read_bytes() for p in run.iterdir() if p.is_file() and p.name != "report.html"}
        assert after == before                     # metrics.json byte-identical, nothing added or changed


def test_recomputed_popularity_equals_the_popularity_run_on_the_same_split(report_runs):
    # The synthetic data has no repeated (user, item) pair, so the counts of seen.pt are the
    # popularity kind's training counts: the report's closed-form ranks must give its metrics.
    recomputed = recompute_popularity(load_run(report_runs["retrieval"]))
    trained = json.loads((report_runs["popularity"] / "metrics.json").read_text())["protocols"]
    assert set(recomputed) == set(trained) == {"all-items", "exclude-seen"}
    for protocol, values in trained.items():
        for key, value in values.items():
            assert recomputed[protocol][key] == pytest.approx(value, abs=1e-12), (protocol, key)


def test_popularity_ranks_by_hand():
    counts = np.array([0, 5, 9, 5, 1], dtype=float)       # id 0 never ranked; order: 2, 1, 3 (tie by id), 4
    users, items = np.array([0, 0, 1, 1]), np.array([3, 2, 4, 1])
    assert popularity_ranks(counts, users, items, None).tolist() == [2, 0, 3, 1]
    from recstack.core.id_lists import IdLists

    seen = IdLists.from_lists([[2], [3, 1]])              # user 0 saw item 2, user 1 saw 3 and 1
    # user 0: item 3 had 2 and 1 ahead, 2 is removed -> 1; item 2 is first -> 0
    # user 1: item 4 had 2, 1, 3 ahead, 1 and 3 removed -> 1; item 1 (itself seen) had 2 ahead -> 1
    assert popularity_ranks(counts, users, items, seen).tolist() == [1, 0, 1, 1]


def test_baselines_recorded_by_the_run_are_read_in_either_layout():
    values = {"factorized_top_k/recall_at_10": 0.2, "rows": "x"}
    assert recorded_baselines({"baselines": {"popularity": {"protocols": {"exclude-seen": values}}}}) == \
        {"popularity": {"exclude-seen": {"factorized_top_k/recall_at_10": 0.2}}}
    assert recorded_baselines({"baselines": {"popularity": {"exclude-seen": values}}}) == \
        {"popularity": {"exclude-seen": {"factorized_top_k/recall_at_10": 0.2}}}
    assert recorded_baselines({"baselines": [1, 2]}) == {} and recorded_baselines({}) == {}


@pytest.mark.parametrize("name", ["retrieval", "ease", "sasrec"])
def test_top_k_lists_are_what_recstack_recommend_serves(report_runs, name):
    loaded = load_run(report_runs[name])
    users = np.arange(1, min(loaded.pre.num_users, 9))
    top = top_k_items(loaded, users, 5)
    raw = loaded.pre.users.lookup_inverse(__import__("torch").as_tensor(users)).tolist()
    for row, user in zip(top, raw):
        served = recommend(loaded, str(user), k=5, exclude_seen=True)["items"]
        names = loaded.pre.items.lookup_inverse(__import__("torch").as_tensor(row[row > 0])).tolist()
        assert names == [item["item"] for item in served], user


def test_coverage_and_popularity_figures_by_hand(report_runs):
    loaded = load_run(report_runs["retrieval"])
    users = np.unique(loaded.test_columns()["user"].numpy())
    b = beyond_accuracy(loaded, users, [1, 5, 10], 10)
    catalogue = loaded.pre.num_items - 1
    for k in (1, 5, 10):
        items = {int(i) for row in b.top for i in row[:k] if i > 0}
        assert b.coverage[k] == pytest.approx(len(items) / catalogue)
    counts = np.zeros(loaded.pre.num_items)
    for u in range(loaded.seen.num_keys):
        for i in loaded.seen.row(u):
            counts[i] += 1
    slots = [int(i) for row in b.top for i in row if i > 0]
    assert b.mean_popularity["recommended"] == pytest.approx(np.mean([counts[i] for i in slots]))
    assert b.mean_popularity["interactions"] == pytest.approx((counts ** 2).sum() / counts.sum())


def test_report_lists_the_popularity_baseline_and_the_published_figures(report_runs):
    page = (report_runs["retrieval"] / "report.html").read_text(encoding="utf-8")
    assert "<th>popularity</th><th>vs popularity</th>" in page and "<th>published</th>" in page
    assert "recall@k equals top-k accuracy" in page


def test_a_run_without_plots_still_gets_a_report(report_runs, tmp_path):
    from tests.report.conftest import train
    from synthetic_movielens import write_synthetic_ml100k

    data = write_synthetic_ml100k(tmp_path / "ml-100k")
    run = train("popularity", tmp_path / "run", data, ["output.plots=false"])
    assert not (run / "plots").exists()
    page = (run / "report.html").read_text(encoding="utf-8")
    assert "<img" not in page and "charts are off" in page


def test_recstack_report_rewrites_one_run_report(report_runs, capsys):
    run = report_runs["sasrec"]
    (run / "report.html").unlink()
    assert main(["report", str(run)]) == 0
    assert f"wrote {run / 'report.html'}" in capsys.readouterr().out
    page = (run / "report.html").read_text(encoding="utf-8")
    assert page.count("<img") == len(build_run_report(run).figures) == 4   # loss, HR@k, NDCG/MRR, long tail
    assert main(["report", str(run), "--out", "x.html"]) == 2          # --out is for comparisons


def test_report_of_a_folder_that_is_not_a_finished_run(tmp_path, capsys):
    assert main(["report", str(tmp_path)]) == 1
    assert "missing config.yaml, metrics.json" in capsys.readouterr().err


def test_a_report_that_fails_leaves_the_run_complete(tmp_path, monkeypatch, capsys):
    import recstack.experiment.run as run_module
    from tests.report.conftest import train
    from synthetic_movielens import write_synthetic_ml100k

    def broken(*args, **kwargs):
        raise RuntimeError("boom")

    monkeypatch.setattr(run_module, "write_run_outputs", broken)
    run = train("popularity", tmp_path / "run", write_synthetic_ml100k(tmp_path / "ml-100k"))
    assert json.loads((run / "status.json").read_text())["state"] == "completed"
    assert not (run / "report.html").exists()
    assert "report.html not written (RuntimeError: boom)" in capsys.readouterr().err
