"""split.method: column: a split made elsewhere (another toolkit's, a benchmark's), read row by row
from data.columns.split, and trained and evaluated exactly on those rows."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from recstack.cli.main import main
from recstack.core.errors import ConfigError, DataError
from recstack.experiment.config import parse_config
from recstack.experiment.interactions import load_data, split_data

from .conftest import BASE, make_ratings, merge


def _with_parts(workdir, seed: int = 3) -> pd.DataFrame:
    """ratings.csv with a ``part`` column: per user, 2 random rows test, 1 validation, the rest train."""
    df = make_ratings()
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(df))
    rank = pd.Series(order).groupby(df["userId"].to_numpy()[order]).cumcount().to_numpy()
    part = np.empty(len(df), dtype=object)
    part[order] = np.where(rank < 2, "test", np.where(rank < 3, "validation", "train"))
    df["part"] = part
    df.to_csv(workdir / "ratings.csv", index=False)
    return df


def _config(workdir, **extra):
    return merge({**BASE, "model": {}, "optimizer": {}, "training": {}}, {"data": {"interactions": str(workdir / "ratings.csv"), "columns": {"split": "part"}},
                        "split": {"method": "column"}, "model": {"kind": "ease", "l2": 5.0},
                        "features": {"vocabulary": "all"},
                        "evaluation": {"protocols": ["exclude-seen"], "validation_protocol": "exclude-seen",
                                       "ks": [5]}, **extra})


def _ease_recall_at_5(df: pd.DataFrame, l2: float) -> float:
    """EASE (Steck 2019) by hand on the given parts: B = -P / diag(P), diag 0, P = (X'X + l2 I)^-1;
    the user's training and validation items removed; recall@5 per test user, averaged."""
    users, items = sorted(df["userId"].unique()), sorted(df["movieId"].unique())
    u = df["userId"].map({x: i for i, x in enumerate(users)}).to_numpy()
    i = df["movieId"].map({x: j for j, x in enumerate(items)}).to_numpy()
    part = df["part"].to_numpy()
    X = np.zeros((len(users), len(items)))
    X[u[part == "train"], i[part == "train"]] = 1
    P = np.linalg.inv(X.T @ X + l2 * np.eye(len(items)))
    B = -P / np.diag(P)
    np.fill_diagonal(B, 0)
    S = X @ B
    seen = part != "test"
    S[u[seen], i[seen]] = -np.inf
    top = np.argsort(-S, axis=1, kind="stable")[:, :5]
    T = np.zeros_like(X, dtype=bool)
    T[u[~seen], i[~seen]] = True
    hit = np.take_along_axis(T, top, axis=1)
    return float((hit.sum(1) / T.sum(1)).mean())


def test_the_parts_are_the_column_s(workdir):
    df = _with_parts(workdir)
    config = parse_config(_config(workdir))
    splits = split_data(load_data(config.data, lambda _: None).frame, config.split)
    for name, frame in (("train", splits.train), ("validation", splits.validation), ("test", splits.test)):
        expected = df.loc[df["part"] == name, ["userId", "movieId"]].to_numpy().tolist()
        assert frame[["user", "item"]].to_numpy().tolist() == expected       # the rows, in file order
        assert "split" not in frame


def test_a_run_on_the_column_s_split_scores_what_ease_by_hand_scores(workdir, capsys):
    df = _with_parts(workdir)
    path = workdir / "config.json"
    path.write_text(json.dumps(_config(workdir)))
    assert main(["train", str(path), "--run-dir", str(workdir / "run"), "--progress", "quiet"]) == 0, \
        capsys.readouterr().err
    metrics = json.loads((workdir / "run" / "metrics.json").read_text())
    assert metrics["protocols"]["exclude-seen"]["factorized_top_k/recall_at_5"] == pytest.approx(_ease_recall_at_5(df, 5.0), abs=1e-6)


def test_values_other_than_the_three_parts_are_named(workdir):
    df = _with_parts(workdir)
    df.loc[7, "part"] = "valid"
    df.to_csv(workdir / "ratings.csv", index=False)
    with pytest.raises(DataError, match=r"1 value\(s\) other than train, validation, test, first 'valid'"):
        load_data(parse_config(_config(workdir)).data, lambda _: None)


def test_a_split_without_test_rows_is_a_data_error(workdir):
    df = _with_parts(workdir)
    df["part"] = df["part"].replace({"test": "train"})
    df.to_csv(workdir / "ratings.csv", index=False)
    config = parse_config(_config(workdir))
    with pytest.raises(DataError, match="marks no row 'test'"):
        split_data(load_data(config.data, lambda _: None).frame, config.split)


@pytest.mark.parametrize("extra", [
    {"split": {"method": "random"}},                                        # a split column, another method
    {"data": {"interactions": "ratings.csv", "columns": {"split": None}}},  # the method without its column
    {"split": {"method": "column", "validation_fraction": 0.1}},
])
def test_the_method_and_the_column_go_together(workdir, extra):
    with pytest.raises(ConfigError, match="split"):
        parse_config(merge(_config(workdir), extra))
