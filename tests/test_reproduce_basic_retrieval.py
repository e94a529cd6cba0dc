"""The seed-002 reproduction and the demo, end to end on synthetic MovieLens files."""

import pytest

from recstack import demo
from recstack.datasets import read_movielens_100k
from recstack.reproduce import basic_retrieval


def test_basic_retrieval_runs_end_to_end(synthetic_ml100k):
    data = read_movielens_100k(synthetic_ml100k)
    result = basic_retrieval(data, seed=0, epochs=2, batch_size=256, k=3)
    assert len(result.history) == 2
    top100 = result.test_metrics["factorized_top_k/top_100_categorical_accuracy"]
    assert top100 == pytest.approx(1.0)        # 45 movies < 100: every positive is in the top 100
    titles = result.recommendations["42"]
    assert len(titles) == 3 and all(t.startswith("Movie") for t in titles)


def test_same_seed_gives_same_metrics(synthetic_ml100k):
    data = read_movielens_100k(synthetic_ml100k)
    a = basic_retrieval(data, seed=3, epochs=1, batch_size=256)
    b = basic_retrieval(data, seed=3, epochs=1, batch_size=256)
    assert a.test_metrics == b.test_metrics


def test_demo_prints_table_and_recommendations(synthetic_ml100k, capsys):
    assert demo.main(["--data-dir", str(synthetic_ml100k), "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "top-100 accuracy" in out and "Top 5 recommendations for user 42" in out


def test_demo_missing_data_is_a_clear_error(tmp_path, capsys):
    assert demo.main(["--data-dir", str(tmp_path / "nowhere"), "--quiet"]) == 1
    err = capsys.readouterr().err
    assert "nowhere does not exist" in err and "u.data" in err
