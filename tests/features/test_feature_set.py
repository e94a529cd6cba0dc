"""FeatureSet: fit/transform on a table, one column feeding two outputs, save/load, errors."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch

from recstack.core.errors import ConfigError, DataError, NotFittedError
from recstack.features import (
    Discretization,
    FeatureSet,
    IntegerLookup,
    Normalization,
    StringLookup,
    TextVectorization,
)


@pytest.fixture
def ratings() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "user_id": ["u1", "u2", "u1", "u3"],
            "movie_id": [10, 20, 10, 30],
            "movie_title": ["Toy Story (1995)", "Heat (1995)", "Toy Story (1995)", "Babe (1995)"],
            "timestamp": [100, 200, 300, 400],
        }
    )


def make_feature_set() -> FeatureSet:
    fs = FeatureSet({"user_id": StringLookup(), "movie_id": IntegerLookup(), "movie_title": TextVectorization()})
    fs.add("timestamp_bucket", Discretization(num_bins=2), "timestamp")
    fs.add("timestamp_norm", Normalization(), "timestamp")
    return fs


def test_fit_transform(ratings: pd.DataFrame) -> None:
    fs = make_feature_set()
    out = fs.fit_transform(ratings)
    assert list(out) == ["user_id", "movie_id", "movie_title", "timestamp_bucket", "timestamp_norm"]
    assert out["user_id"].tolist() == [1, 2, 1, 3]
    assert out["movie_id"].tolist() == [1, 2, 1, 3]
    # title tokens: 1995 x4, story x2, toy x2, babe x1, heat x1 -> ids 2, 3, 4, 5, 6
    assert out["movie_title"].tolist() == [[4, 3, 2], [6, 2, 0], [4, 3, 2], [5, 2, 0]]
    assert out["timestamp_bucket"].tolist() == [0, 0, 1, 1]  # median boundary 250
    std = np.std([100, 200, 300, 400])
    np.testing.assert_allclose(out["timestamp_norm"].numpy(), (np.array([100, 200, 300, 400]) - 250) / std, rtol=1e-6)
    assert out["timestamp_norm"].dtype == torch.float32
    assert fs.input_columns == ["user_id", "movie_id", "movie_title", "timestamp"]
    assert fs.input_column("timestamp_norm") == "timestamp"
    assert fs.is_fitted and len(fs) == 5 and "timestamp_bucket" in fs


def test_dict_of_arrays_table(ratings: pd.DataFrame) -> None:
    fs = make_feature_set().fit(ratings)
    table = {col: ratings[col].to_numpy() for col in ratings.columns}
    table["extra"] = np.zeros(4)
    out = fs.transform(table)
    expected = fs.transform(ratings)
    assert all(torch.equal(out[k], expected[k]) for k in expected)


def test_save_load_round_trip(ratings: pd.DataFrame, tmp_path) -> None:
    fs = make_feature_set().fit(ratings)
    path = fs.save(tmp_path / "sub" / "features.json")
    config = json.loads(path.read_text(encoding="utf-8"))  # plain JSON on disk
    assert config["class"] == "FeatureSet" and len(config["features"]) == 5
    assert [p.name for p in path.parent.iterdir()] == ["features.json"]  # no temp file left behind
    loaded = FeatureSet.load(path)
    assert loaded.output_names == fs.output_names
    assert loaded.get_config() == fs.get_config()
    new = ratings.assign(user_id=["u3", "zz", "u2", "u1"], timestamp=[50, 250, 260, 999])
    a, b = fs.transform(new), loaded.transform(new)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert FeatureSet.from_json(fs.to_json()).get_config() == fs.get_config()


def test_fit_keeps_explicit_state_unless_refit(ratings: pd.DataFrame) -> None:
    fs = FeatureSet({"user_id": StringLookup(vocabulary=["u3", "u1"])})
    fs.add("ts", Discretization(bin_boundaries=[150.0]), "timestamp")
    out = fs.fit_transform(ratings)
    assert out["user_id"].tolist() == [2, 0, 2, 1]
    assert out["ts"].tolist() == [0, 1, 1, 1]
    lookup_only = FeatureSet({"user_id": StringLookup(vocabulary=["u3", "u1"])})
    assert lookup_only.fit(ratings, refit=True)["user_id"].get_vocabulary() == ["[UNK]", "u1", "u2", "u3"]


def test_missing_column_error_lists_available(ratings: pd.DataFrame) -> None:
    fs = FeatureSet().add("age_bucket", Discretization(num_bins=3), "age")
    with pytest.raises(DataError) as info:
        fs.fit(ratings)
    message = str(info.value)
    assert "'age'" in message and "'age_bucket'" in message
    assert "['user_id', 'movie_id', 'movie_title', 'timestamp']" in message
    with pytest.raises(DataError, match="'age'.*available columns"):
        fs.transform({"user_id": ["u1"]})


def test_empty_table_errors(ratings: pd.DataFrame) -> None:
    fs = make_feature_set()
    with pytest.raises(DataError, match="empty"):
        fs.fit(ratings.iloc[:0])
    with pytest.raises(DataError, match="empty"):
        fs.fit({col: [] for col in ratings.columns})
    with pytest.raises(ConfigError, match="no features"):
        FeatureSet().fit(ratings)


def test_other_table_errors(ratings: pd.DataFrame) -> None:
    fs = FeatureSet({"user_id": StringLookup(), "timestamp": Normalization()})
    with pytest.raises(DataError, match="different lengths"):
        fs.fit({"user_id": ["a", "b"], "timestamp": [1.0]})
    with pytest.raises(DataError, match="DataFrame or a dict"):
        fs.fit([1, 2, 3])  # type: ignore[arg-type]
    # A layer error names the output and column it came from.
    with pytest.raises(DataError, match=r"output 'timestamp' \(column 'timestamp'\).*numeric"):
        fs.fit({"user_id": ["a"], "timestamp": ["not a number"]})
    with pytest.raises(NotFittedError, match="output 'user_id'"):
        FeatureSet({"user_id": StringLookup()}).transform(ratings)


def test_add_errors() -> None:
    fs = FeatureSet({"a": StringLookup()})
    with pytest.raises(ConfigError, match="already"):
        fs.add("a", StringLookup())
    with pytest.raises(ConfigError, match="recstack.features layer"):
        fs.add("b", torch.nn.Identity())  # type: ignore[arg-type]


def test_load_errors(tmp_path) -> None:
    with pytest.raises(FileNotFoundError):
        FeatureSet.load(tmp_path / "missing.json")
    bad = tmp_path / "bad.json"
    bad.write_text('{"class": "StringLookup"}', encoding="utf-8")
    with pytest.raises(ConfigError, match="bad.json.*not a FeatureSet"):
        FeatureSet.load(bad)
