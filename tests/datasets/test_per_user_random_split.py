"""per_user_random_split: RecBole's general protocol (per-user shuffle, 8:1:1 with RecBole 1.2.1's rounding)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from recstack.core.errors import DataError
from recstack.datasets import per_user_random_split
from recstack.experiment.config import SplitConfig
from recstack.experiment.interactions import split_data

# Rows per user and the (train, validation, test) sizes RecBole's rule gives them under 8:1:1, worked
# out by hand: held-out parts get floor(0.1 n); a part rounded down to 0 while 0 < 0.1 n < 1 takes one
# row from train, the test part first, only while train keeps more than one row.
SIZES_811 = {"a": (1, (1, 0, 0)), "b": (2, (1, 0, 1)), "c": (3, (1, 1, 1)), "d": (5, (3, 1, 1)),
             "e": (9, (7, 1, 1)), "f": (10, (8, 1, 1)), "g": (11, (9, 1, 1)), "h": (19, (17, 1, 1)),
             "i": (20, (16, 2, 2))}
# The same users under [0.8, 0.2] (two parts): floor(0.2 n) test rows, at least one when 0 < 0.2 n < 1.
SIZES_82 = {"a": (1, 0), "b": (1, 1), "c": (2, 1), "d": (4, 1), "e": (8, 1), "f": (8, 2), "g": (9, 2),
            "h": (16, 3), "i": (16, 4)}


def table() -> pd.DataFrame:
    """Users' rows interleaved (not grouped), a unique ``row`` id, a non-default index."""
    users = np.concatenate([[u] * n for u, (n, _) in SIZES_811.items()])
    order = np.random.default_rng(123).permutation(len(users))
    return pd.DataFrame({"row": np.arange(len(users)), "user_id": users[order], "x": np.arange(len(users)) * 2.5},
                        index=np.arange(len(users)) * 3 + 7)


def sizes(part: pd.DataFrame, user: str) -> int:
    return int((part["user_id"] == user).sum())


def test_part_sizes_follow_recbole_rounding() -> None:
    parts = per_user_random_split(table(), (0.8, 0.1, 0.1), seed=0)
    assert len(parts) == 3
    for user, (_, expected) in SIZES_811.items():
        assert tuple(sizes(p, user) for p in parts) == expected, user


def test_two_parts_and_unnormalised_ratios() -> None:
    two = per_user_random_split(table(), (4, 1), seed=0)        # normalised to 0.8 : 0.2
    for user, expected in SIZES_82.items():
        assert tuple(sizes(p, user) for p in two) == expected, user


def test_disjoint_cover_and_row_order() -> None:
    df = table()
    parts = per_user_random_split(df, seed=5)
    ids = np.concatenate([p["row"].to_numpy() for p in parts])
    assert sorted(ids) == list(range(len(df))) and len(set(ids)) == len(df)
    for part in parts:
        assert part.index.equals(pd.RangeIndex(len(part)))
        assert list(part.columns) == list(df.columns)
        assert (np.diff(part["row"].to_numpy()) > 0).all()        # each part keeps the table's row order
        # the other columns travel with their row
        np.testing.assert_array_equal(part["x"].to_numpy(), part["row"].to_numpy() * 2.5)


def test_seeded_reproducible_and_shuffled() -> None:
    df = table()
    first = per_user_random_split(df, seed=11)
    again = per_user_random_split(df, seed=11)
    for a, b in zip(first, again):
        pd.testing.assert_frame_equal(a, b)
    tests = {tuple(per_user_random_split(df, seed=s)[2]["row"]) for s in range(8)}
    assert len(tests) > 1                                          # the seed picks which rows are held out
    # within a user the held-out rows are not tied to file position: user "i"'s test rows vary by seed
    rows_i = {tuple(p[p["user_id"] == "i"]["row"]) for s in range(8) for p in [per_user_random_split(df, seed=s)[2]]}
    assert len(rows_i) > 1


def test_bad_input_is_an_error() -> None:
    df = table()
    with pytest.raises(DataError, match="ratios"):
        per_user_random_split(df, (1.0,))
    with pytest.raises(DataError, match="ratios"):
        per_user_random_split(df, (0.8, 0.0, 0.2))
    with pytest.raises(DataError, match="user_id"):
        per_user_random_split(df.drop(columns="user_id"))
    bad = df.assign(user_id=df["user_id"].where(df["row"] != 4, None))
    with pytest.raises(DataError, match="missing value"):
        per_user_random_split(bad)


def test_split_config_dispatch() -> None:
    df = table().rename(columns={"user_id": "user"})
    splits = split_data(df, SplitConfig(method="per-user-random", seed=3))
    assert splits.validation is not None
    assert (len(splits.train), len(splits.validation), len(splits.test)) == tuple(
        sum(s[k] for _, s in SIZES_811.values()) for k in range(3))
    two = split_data(df, SplitConfig(method="per-user-random", ratios=[0.8, 0.2], seed=3))
    assert two.validation is None and len(two.test) == sum(t for _, t in SIZES_82.values())
