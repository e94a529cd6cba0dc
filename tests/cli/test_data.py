"""Generic interaction data: every bad input gives a clear message; cold start and duplicates are reported."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from recstack.experiment.config_files import load_config
from recstack.experiment.prepare import prepare
from recstack.experiment.tables import describe_table
from recstack.cli.main import main
from recstack.experiment.reporter import Reporter
from recstack.core.errors import DataError

from .conftest import make_ratings


class Notes(Reporter):
    def __init__(self):
        super().__init__("quiet")
        self.notes: list[str] = []

    def note(self, message: str) -> None:
        self.notes.append(message)


def prepared(write_config, extra=None):
    notes = Notes()
    return prepare(load_config(write_config(extra)), notes), notes.notes


def run_cli(args, capsys):
    code = main(args)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_missing_column_names_the_config_key_and_suggests(workdir, write_config, capsys):
    path = write_config({"data": {"columns": {"user": "userid"}}})
    code, _, err = run_cli(["train", str(path), "--progress", "quiet"], capsys)
    assert code == 1
    assert "ratings.csv: column 'userid' (data.columns.user) not found (did you mean 'userId'?)" in err
    assert "Columns in the file: userId, movieId, rating, timestamp" in err


def test_non_numeric_ratings_are_counted_and_located(workdir, write_config):
    df = make_ratings()
    df["rating"] = df["rating"].astype(object)
    df.loc[3, "rating"] = "five"
    df.loc[10, "rating"] = "4 stars"
    df.to_csv(workdir / "ratings.csv", index=False)
    with pytest.raises(DataError) as info:
        prepared(write_config)
    message = str(info.value)
    assert "column 'rating' (data.columns.rating) must be numeric but has 2 non-numeric value(s)" in message
    assert "'five' at row 3 (line 5), '4 stars' at row 10 (line 12)" in message
    df.loc[[3, 10], "rating"] = None  # empty cells: missing, not non-numeric
    df.to_csv(workdir / "ratings.csv", index=False)
    with pytest.raises(DataError, match=r"column 'rating' \(data.columns.rating\) has 2 missing value\(s\), "
                                        r"first at row 3 \(line 5\), row 10"):
        prepared(write_config)


def test_missing_ids_and_empty_file(workdir, write_config):
    df = make_ratings()
    df.loc[[4, 6], "userId"] = np.nan
    df.to_csv(workdir / "ratings.csv", index=False)
    with pytest.raises(DataError, match=r"column 'userId' \(data.columns.user\) has 2 missing id\(s\), first at row 4"):
        prepared(write_config)
    (workdir / "ratings.csv").write_text("userId,movieId,rating,timestamp\n")
    with pytest.raises(DataError, match="ratings.csv has no rows"):
        prepared(write_config)


def test_duplicates_keep_last_by_default_and_say_how_many(workdir, write_config):
    df = make_ratings()
    dup = df.iloc[[0, 0, 5]].copy()
    dup["rating"] = [1.0, 2.0, 3.0]
    pd.concat([df, dup]).to_csv(workdir / "ratings.csv", index=False)
    p, notes = prepared(write_config)
    assert any("3 duplicate row(s) repeat an earlier (user, item) pair (2 pair(s) affected): kept the last row "
               "of each pair and removed 3 (data.duplicates: keep-last)" in n for n in notes)
    assert len(p.data.frame) == len(df)
    kept = p.data.frame[(p.data.frame.user == df.userId[0]) & (p.data.frame.item == df.movieId[0])]
    assert kept.rating.tolist() == [2.0]  # the last of the three rows for that pair
    with pytest.raises(DataError, match="3 duplicate row.*set data.duplicates to keep-last, keep-first or keep-all"):
        prepared(write_config, {"data": {"duplicates": "error"}})


def test_empty_split_is_explained(workdir, write_config):
    one_each = make_ratings().groupby("userId").head(1)
    one_each.to_csv(workdir / "ratings.csv", index=False)
    with pytest.raises(DataError, match=r"the test split is empty \(leave-last-out \(n=1\) of 40 rows\); "
                                        "leave-last-out only holds out users with more than 1 interaction"):
        prepared(write_config)


def test_cold_start_users_are_evaluated_and_unknown_items_dropped(workdir, write_config):
    df = make_ratings()
    late = 2_000_000_000  # after every other rating: these rows land in the temporal test split
    extra = pd.DataFrame({"userId": ["new1", "new1", "new2"], "movieId": ["m1", "m2", "never-seen"],
                          "rating": [3.0, 4.0, 5.0], "timestamp": [late, late + 1, late + 2]})
    both = pd.concat([df, extra], ignore_index=True)
    both.to_csv(workdir / "ratings.csv", index=False)
    p, notes = prepared(write_config, {"split": {"method": "temporal", "train_fraction": 0.9}})
    # Expected counts from a plain pandas temporal cut of the same table.
    ordered = both.sort_values("timestamp", kind="stable")
    cut = int(np.floor(len(both) * 0.9))
    train, test = ordered.iloc[:cut], ordered.iloc[cut:].reset_index(drop=True)
    cold_rows = ~test.userId.isin(train.userId)
    unknown_items = ~test.movieId.isin(train.movieId)
    assert cold_rows.sum() > 0 and unknown_items.sum() > 0
    assert any(f"{cold_rows.sum()} test row(s) of {test.userId[cold_rows].nunique()} user(s) never seen in training "
               "were mapped to the unknown-user index and are still evaluated" in n for n in notes)
    assert any(f"{unknown_items.sum()} test row(s) with {test.movieId[unknown_items].nunique()} item(s)" in n
               and "were dropped" in n for n in notes)
    assert p.test.num_rows == int((~unknown_items).sum())
    assert int((p.test["user"] == 0).sum()) == int((cold_rows & ~unknown_items).sum())
    # Every cold user keeps a distinct query key (per-user metrics never merge them).
    cold_keys = p.test["query_key"][p.test["user"] == 0]
    assert len(set(cold_keys.tolist())) == test.userId[cold_rows & ~unknown_items].nunique()


def test_item_table_puts_unrated_items_in_the_catalogue(workdir, write_config):
    p, _ = prepared(write_config, {"data": {"items": {"path": "items.csv", "id": "movieId",
                                                      "categorical": ["genre"], "numeric": ["year"], "text": "title"}}})
    assert p.pre.num_items - 1 == 24
    spec = p.pre.feature_spec("item")
    assert spec.categorical_sizes == [5] and spec.num_numeric == 1 and spec.text_length == 32
    table = p.tables["item"]
    year = table["numeric"][p.pre.items(["m3"])[0], 0].item()
    years = np.arange(1980, 2004, dtype=np.float64)
    assert year == pytest.approx((1983 - years.mean()) / years.std(), rel=1e-5)


def test_feature_table_problems(workdir, write_config):
    items = pd.read_csv(workdir / "items.csv")
    items["year"] = items["year"].astype(object)
    items.loc[2, "year"] = "nineteen"
    items.to_csv(workdir / "items.csv", index=False)
    with pytest.raises(DataError, match=r"items.csv: column 'year' \(data.items.numeric\) must be numeric .*"
                                        r"'nineteen' at row 2 \(line 4\)"):
        prepared(write_config, {"data": {"items": {"path": "items.csv", "id": "movieId", "numeric": ["year"]}}})
    with pytest.raises(DataError, match=r"column 'titel' \(data.items.text\) not found \(did you mean 'title'"):
        prepared(write_config, {"data": {"items": {"path": "items.csv", "id": "movieId", "text": "titel"}}})


def test_date_string_timestamps_become_unix_seconds(workdir, write_config):
    df = make_ratings()
    seconds = df["timestamp"].to_numpy()
    df["timestamp"] = pd.to_datetime(seconds, unit="s").strftime("%Y-%m-%d %H:%M:%S")
    df.to_csv(workdir / "ratings.csv", index=False)
    p, _ = prepared(write_config)
    assert np.array_equal(np.sort(p.data.frame["timestamp"].to_numpy()), np.sort(seconds))
    df.loc[7, "timestamp"] = "yesterday-ish"
    df.to_csv(workdir / "ratings.csv", index=False)
    with pytest.raises(DataError, match=r"must hold numbers or dates; 1 value\(s\) are neither: 'yesterday-ish'"):
        prepared(write_config)


def test_missing_file_and_unknown_format(workdir, write_config, capsys):
    code, _, err = run_cli(["train", str(write_config({"data": {"interactions": "nope.csv"}})),
                            "--progress", "quiet"], capsys)
    assert code == 1 and "nope.csv does not exist" in err
    (workdir / "ratings.xlsx").write_text("x")
    with pytest.raises(DataError, match="unknown table format '.xlsx'"):
        prepared(write_config, {"data": {"interactions": "ratings.xlsx"}})


def test_data_info_matches_pandas(workdir, capsys):
    df = make_ratings()
    info = describe_table(workdir / "ratings.csv")
    assert info["rows"] == len(df) and info["users"] == df.userId.nunique() and info["items"] == df.movieId.nunique()
    assert info["density"] == pytest.approx(len(df) / (df.userId.nunique() * df.movieId.nunique()))
    assert info["rating"]["mean"] == pytest.approx(df.rating.mean())
    assert info["timestamp"]["min"] == df.timestamp.min() and info["timestamp"]["max"] == df.timestamp.max()
    assert info["timestamp"]["min_utc"].startswith("2020-09-13")
    code, out, _ = run_cli(["data", "info", str(workdir / "ratings.csv")], capsys)
    assert code == 0 and f"rows:       {len(df)}" in out and "density:" in out and "timestamps:" in out
    code, _, err = run_cli(["data", "info", str(workdir / "ratings.csv"), "--user", "uid"], capsys)
    assert code == 1 and "column 'uid' (--user) not found" in err


def test_data_info_on_an_ml100k_folder(synthetic_ml100k, capsys):
    code, out, _ = run_cli(["data", "info", str(synthetic_ml100k), "--format", "json"], capsys)
    assert code == 0
    import json

    info = json.loads(out)
    raw = pd.read_csv(synthetic_ml100k / "u.data", sep="\t", header=None)
    assert info["rows"] == len(raw) and info["users"] == raw[0].nunique()
    assert info["rating"]["min"] == raw[2].min() and info["rating"]["max"] == raw[2].max()
