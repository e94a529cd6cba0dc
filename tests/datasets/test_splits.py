"""random_split, random_split_fractions, temporal_split, leave_last_out."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from recstack.datasets import leave_last_out, random_split, random_split_fractions, temporal_split
from recstack.core.errors import DataError


def frame(n: int = 100) -> pd.DataFrame:
    """``n`` rows with a unique ``row`` id, a non-default index, and repeated timestamps."""
    rng = np.random.default_rng(0)
    return pd.DataFrame(
        {"row": np.arange(n), "user_id": rng.integers(0, 7, n).astype(str),
         "timestamp": rng.integers(0, 20, n)},
        index=np.arange(n) * 10 + 5,
    )


def assert_partition(df: pd.DataFrame, parts: tuple[pd.DataFrame, ...]) -> None:
    ids = np.concatenate([p["row"].to_numpy() for p in parts])
    assert sorted(ids) == sorted(df["row"]) and len(ids) == len(set(ids))
    for part in parts:
        assert part.index.equals(pd.RangeIndex(len(part)))
        assert list(part.columns) == list(df.columns)


# --- random splits -------------------------------------------------------------------------


def test_random_split_is_the_seeded_permutation() -> None:
    df = frame(100)
    train, test = random_split(df, 0.8, seed=7)
    order = np.random.default_rng(7).permutation(100)
    assert train["row"].tolist() == order[:80].tolist()
    assert test["row"].tolist() == order[80:].tolist()
    assert_partition(df, (train, test))


def test_random_split_sizes_floor() -> None:
    train, test = random_split(frame(7), 0.8)
    assert (len(train), len(test)) == (5, 2)  # int(7 * 0.8) == 5


def test_random_split_is_deterministic_and_seed_dependent() -> None:
    df = frame(50)
    a, _ = random_split(df, seed=1)
    b, _ = random_split(df, seed=1)
    c, _ = random_split(df, seed=2)
    pd.testing.assert_frame_equal(a, b)
    assert a["row"].tolist() != c["row"].tolist()


def test_random_split_equals_two_fractions() -> None:
    df = frame(33)
    pairs = zip(random_split(df, 0.7, seed=3), random_split_fractions(df, (0.7, 0.3), seed=3))
    for left, right in pairs:
        pd.testing.assert_frame_equal(left, right)


def test_random_split_fractions_three_way() -> None:
    df = frame(100)
    parts = random_split_fractions(df, (0.8, 0.1, 0.1), seed=5)
    assert [len(p) for p in parts] == [80, 10, 10]
    order = np.random.default_rng(5).permutation(100)
    assert parts[1]["row"].tolist() == order[80:90].tolist()
    assert_partition(df, parts)


def test_random_split_fractions_boundaries_are_exact_decimals() -> None:
    # In floats 0.7 + 0.1 == 0.7999999999999999, which would cut at 7 instead of 8.
    parts = random_split_fractions(frame(10), (0.7, 0.1, 0.2))
    assert [len(p) for p in parts] == [7, 1, 2]
    thirds = random_split_fractions(frame(9), (1 / 3, 1 / 3, 1 / 3))
    assert [len(p) for p in thirds] == [3, 3, 3]


@pytest.mark.parametrize("fractions", [(0.5, 0.3), (0.6, 0.6), (0.9,)])
def test_random_split_fractions_rejects_bad_totals(fractions) -> None:
    with pytest.raises(DataError, match="fractions"):
        random_split_fractions(frame(10), fractions)


@pytest.mark.parametrize("bad", [0, 1, 1.5, -0.1, 0.0, 1.0, True, "0.5", float("nan")])
def test_fraction_outside_open_unit_interval(bad) -> None:
    with pytest.raises(DataError, match=r"train_fraction must be in \(0, 1\)"):
        random_split(frame(10), bad)
    with pytest.raises(DataError, match=r"train_fraction must be in \(0, 1\)"):
        temporal_split(frame(10), bad)


def test_fractions_entry_outside_unit_interval_is_named() -> None:
    with pytest.raises(DataError, match=r"fractions\[1\] must be in \(0, 1\), got 0"):
        random_split_fractions(frame(10), (0.5, 0, 0.5))


# --- temporal_split ------------------------------------------------------------------------


def test_temporal_split_cuts_at_a_global_time() -> None:
    df = frame(100)
    train, test = temporal_split(df, 0.75)
    assert (len(train), len(test)) == (75, 25)
    assert train["timestamp"].max() <= test["timestamp"].min()
    # Both parts are in (timestamp, original position) order.
    expected = df.sort_values("timestamp", kind="stable")["row"].tolist()
    assert train["row"].tolist() + test["row"].tolist() == expected
    assert_partition(df, (train, test))


def test_temporal_split_ties_keep_row_order() -> None:
    df = pd.DataFrame({"row": [0, 1, 2, 3], "t": [5, 1, 5, 5]})
    train, test = temporal_split(df, 0.5, timestamp_col="t")
    assert train["row"].tolist() == [1, 0] and test["row"].tolist() == [2, 3]


def test_temporal_split_rejects_missing_timestamps() -> None:
    df = pd.DataFrame({"timestamp": [1.0, np.nan, 3.0]})
    with pytest.raises(DataError, match="'timestamp' has a missing value at position 1"):
        temporal_split(df)


# --- leave_last_out ------------------------------------------------------------------------


def test_leave_last_out_holds_out_each_users_latest() -> None:
    df = pd.DataFrame({
        "user_id":   ["a", "a", "b", "a", "c", "c"],
        "timestamp": [3,   1,   5,   3,   2,   1],
        "row":       [0,   1,   2,   3,   4,   5],
    })
    train, test = leave_last_out(df)
    # a: rows 0 and 3 tie at t=3; the later row (3) counts as later. b has one rating: train.
    assert test["row"].tolist() == [3, 4]
    assert train["row"].tolist() == [0, 1, 2, 5]  # original order kept
    assert_partition(df, (train, test))


def test_leave_last_out_n_and_small_users() -> None:
    df = pd.DataFrame({"u": [1, 1, 1, 2, 2, 3], "ts": [1, 2, 3, 1, 2, 9], "row": range(6)})
    train, test = leave_last_out(df, user_col="u", timestamp_col="ts", n=2)
    # User 1 has 3 > n interactions: its 2 latest go to test; users 2 and 3 have <= n.
    assert test["row"].tolist() == [1, 2]
    assert train["row"].tolist() == [0, 3, 4, 5]


def test_leave_last_out_every_test_user_is_in_train() -> None:
    df = frame(300)
    train, test = leave_last_out(df, n=3)
    assert set(test["user_id"]) <= set(train["user_id"])
    counts = df["user_id"].value_counts()
    assert len(test) == sum(min(3, c) if c > 3 else 0 for c in counts)
    for user, group in test.groupby("user_id"):
        assert group["timestamp"].min() >= train.loc[train["user_id"] == user, "timestamp"].max()


@pytest.mark.parametrize("n", [0, -1, 1.5, True])
def test_leave_last_out_rejects_bad_n(n) -> None:
    with pytest.raises(DataError, match="n must be a positive integer"):
        leave_last_out(frame(10), n=n)


# --- shared input checks -------------------------------------------------------------------


@pytest.mark.parametrize(
    "split",
    [random_split, lambda df: random_split_fractions(df, (0.5, 0.5)), temporal_split,
     leave_last_out],
)
def test_empty_input_is_rejected(split) -> None:
    with pytest.raises(DataError, match="empty DataFrame"):
        split(pd.DataFrame({"user_id": [], "timestamp": []}))


def test_missing_column_is_named_with_the_available_ones() -> None:
    df = pd.DataFrame({"user": [1], "time": [1]})
    with pytest.raises(DataError) as info:
        leave_last_out(df, timestamp_col="time")
    assert "column 'user_id' not found" in str(info.value)
    assert "['user', 'time']" in str(info.value)
    expected = r"column 'timestamp' not found; available columns: \['user', 'time'\]"
    with pytest.raises(DataError, match=expected):
        temporal_split(df)


def test_non_dataframe_is_rejected() -> None:
    with pytest.raises(DataError, match="expected a pandas DataFrame, got list"):
        random_split([1, 2, 3])  # type: ignore[arg-type]
