"""data.min_rating and data.k_core: config checks, the filters as the run applies them (after the
duplicates, rating first), and the errors when they leave nothing."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from recstack.core.errors import ConfigError, DataError
from recstack.experiment.config import ColumnsConfig, DataConfig, parse_config
from recstack.experiment.interactions import load_data

COLUMNS = ColumnsConfig(user="u", item="i", rating="r")


def data(tmp_path: Path, rows: list[tuple[str, str, float]], **options) -> DataConfig:
    path = tmp_path / "ratings.csv"
    pd.DataFrame(rows, columns=["u", "i", "r"]).to_csv(path, index=False)
    return DataConfig(interactions=str(path), columns=COLUMNS, **options)


def load(config: DataConfig):
    notes: list[str] = []
    return load_data(config, notes.append), notes


def test_min_rating_keeps_ratings_equal_to_it(tmp_path):
    rows = [("a", "x", 2.5), ("a", "y", 3.0), ("b", "x", 3.5), ("b", "y", 2.999), ("c", "z", 1.0)]
    loaded, notes = load(data(tmp_path, rows, min_rating=3))
    assert list(zip(loaded.frame["user"], loaded.frame["item"])) == [("a", "y"), ("b", "x")]
    assert loaded.stats["filters"]["min_rating"] == {"value": 3.0, "rows_dropped": 3, "users_dropped": 1,
                                                     "items_dropped": 1}
    assert loaded.stats["rows"] == 2 and "data.min_rating 3 removed 3 interaction(s)" in notes[0]


def test_rating_filter_runs_before_the_k_core(tmp_path):
    """k = 2 on what min_rating 3 keeps: (c, y) is rated 1, so c is left with one row and goes, then
    item z (rated by c and d) is left with d only and goes, then d (one row left) goes."""
    rows = [("a", "x", 4), ("a", "y", 5), ("b", "x", 3), ("b", "y", 4),
            ("c", "y", 1), ("c", "z", 5), ("d", "z", 4), ("d", "x", 4)]
    loaded, _ = load(data(tmp_path, rows, min_rating=3, k_core=2))
    assert sorted(zip(loaded.frame["user"], loaded.frame["item"])) == [("a", "x"), ("a", "y"), ("b", "x"),
                                                                     ("b", "y")]
    filters = loaded.stats["filters"]
    assert filters["min_rating"]["rows_dropped"] == 1
    assert filters["k_core"] == {"k": 2, "passes": 4, "rows_dropped": 3, "users_dropped": 2, "items_dropped": 1}
    assert filters["total"] == {"rows_dropped": 4, "users_dropped": 2, "items_dropped": 1}
    assert loaded.stats["rows_after_duplicates"] == 8 and loaded.stats["rows"] == 4
    # without the rating filter, c keeps two rows and everyone survives the 2-core
    assert len(load(data(tmp_path, rows, k_core=2))[0].frame) == 8


def test_the_k_core_counts_the_rows_left_after_the_duplicates(tmp_path):
    rows = [("c", "x", 4), ("c", "x", 5), ("a", "x", 4), ("a", "y", 4), ("b", "x", 4), ("b", "y", 4)]
    kept = load(data(tmp_path, rows, k_core=2))[0].frame                    # keep-last: c has one row
    assert sorted(set(kept["user"])) == ["a", "b"] and len(kept) == 4
    assert len(load(data(tmp_path, rows, k_core=2, duplicates="keep-all"))[0].frame) == 6   # c's two rows count


def test_min_rating_without_a_rating_column_is_a_data_error_from_the_api(tmp_path):
    config = data(tmp_path, [("a", "x", 4.0)], min_rating=3)
    config.columns = ColumnsConfig(user="u", item="i")
    with pytest.raises(DataError, match="no rating column is mapped: set data.columns.rating"):
        load(config)


def test_no_filter_adds_nothing_to_the_stats(tmp_path):
    loaded, notes = load(data(tmp_path, [("a", "x", 1.0)]))
    assert "filters" not in loaded.stats and notes == []


@pytest.mark.parametrize("options, message", [
    ({"min_rating": 6}, r"data.min_rating 6 keeps no interaction \(the 4 ratings range from 1 to 5\); "
                        r"lower data.min_rating"),
    ({"k_core": 3}, r"data.k_core 3 leaves no interactions: .* among the 4 rows .* the most any user had was 2, "
                    r"any item 2\); lower data.k_core, or use more data"),
    ({"min_rating": 2, "k_core": 2}, r"among the 3 rows rated >= 2 .*; lower data.k_core or data.min_rating"),
])
def test_filters_that_leave_nothing_say_what_to_relax(tmp_path, options, message):
    rows = [("a", "x", 1), ("a", "y", 5), ("b", "x", 4), ("b", "y", 2)]
    with pytest.raises(DataError, match=message):
        load(data(tmp_path, rows, **options))


BASE = {"data": {"interactions": "r.csv", "columns": {"user": "u", "item": "i", "rating": "r"}}}


@pytest.mark.parametrize("data_options, message", [
    ({"k_core": 0}, r"data.k_core: must be >= 1 .*got 0"),
    ({"k_core": -3}, r"data.k_core: must be >= 1"),
    ({"k_core": 2.5}, r"data.k_core: expected an integer"),
    ({"k_core": True}, r"data.k_core: expected an integer"),
    ({"min_rating": "high"}, r"data.min_rating: expected a number"),
    ({"min_rating": float("nan")}, r"data.min_rating"),
    ({"min_rating": 3, "columns": {"user": "u", "item": "i"}},
     r"data.min_rating: 3 keeps the interactions rated >= it, but no rating column is mapped: set "
     r"data.columns.rating"),
])
def test_bad_filter_settings_are_config_errors(data_options, message):
    with pytest.raises(ConfigError, match=message):
        parse_config({"data": {**BASE["data"], **data_options}})


def test_good_filter_settings_parse():
    config = parse_config({"data": {**BASE["data"], "min_rating": 3, "k_core": 10}})
    assert (config.data.min_rating, config.data.k_core) == (3.0, 10)
    assert parse_config(BASE).data.k_core is None and parse_config(BASE).data.min_rating is None
