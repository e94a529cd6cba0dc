"""Rating splits on synthetic frames: the canonical ML-100K folds and the seeded holdout."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from recstack.datasets.rating_splits import ml100k_fold, ml100k_u1_split, random_holdout
from recstack.core.errors import DataError


def frame(n: int) -> pd.DataFrame:
    """Row k is identifiable: line=k, plus a user/item/rating like u.data's."""
    k = np.arange(n)
    return pd.DataFrame({"line": k, "user_id": (k % 943 + 1).astype(str),
                         "movie_id": (k * 7 % 1682 + 1).astype(str),
                         "user_rating": (k % 5 + 1).astype(np.float32)})


def test_u1_test_is_the_first_20000_rows() -> None:
    df = frame(100_000)
    train, test = ml100k_u1_split(df)
    assert test["line"].tolist() == list(range(20_000))
    assert train["line"].tolist() == list(range(20_000, 100_000))
    assert list(train.columns) == list(df.columns)
    assert train.index.equals(pd.RangeIndex(80_000)) and test.index.equals(pd.RangeIndex(20_000))
    pd.testing.assert_frame_equal(test, df.iloc[:20_000].reset_index(drop=True))


@pytest.mark.parametrize("fold", [1, 2, 3, 4, 5])
def test_fold_k_tests_the_kth_block_like_mku_sh(fold: int) -> None:
    # mku.sh: u{k}.test = head -(20000 k) u.data | tail -20000; u{k}.base = the other lines.
    train, test = ml100k_fold(frame(100_000), fold)
    lo, hi = 20_000 * (fold - 1), 20_000 * fold
    assert test["line"].tolist() == list(range(lo, hi))
    assert train["line"].tolist() == list(range(lo)) + list(range(hi, 100_000))


def test_folds_reject_other_frames_and_folds() -> None:
    with pytest.raises(DataError, match="100000 lines"):
        ml100k_u1_split(frame(99_999))
    for fold in (0, 6, 1.0, True):
        with pytest.raises(DataError, match="fold"):
            ml100k_fold(frame(100_000), fold)
    with pytest.raises(DataError):
        ml100k_u1_split(frame(0))


def test_random_holdout_sizes_and_partition() -> None:
    df = frame(1_000)
    train, test = random_holdout(df, 0.1, seed=3)
    assert (len(train), len(test)) == (900, 100)
    assert sorted(train["line"].tolist() + test["line"].tolist()) == list(range(1_000))
    # Original row order is kept inside each part.
    assert train["line"].is_monotonic_increasing and test["line"].is_monotonic_increasing
    # n_test = n * fraction rounded to the nearest integer, halves up.
    assert len(random_holdout(frame(5), 0.5, seed=0)[1]) == 3
    assert len(random_holdout(frame(1_004), 0.1, seed=0)[1]) == 100
    assert len(random_holdout(frame(100_000), 0.1, seed=0)[1]) == 10_000


def test_random_holdout_is_the_seeded_permutation() -> None:
    df = frame(500)
    _, test = random_holdout(df, 0.2, seed=7)
    expected = np.sort(np.random.default_rng(7).permutation(500)[:100])
    assert test["line"].tolist() == expected.tolist()


def test_random_holdout_seed_determinism() -> None:
    df = frame(1_000)
    a_train, a_test = random_holdout(df, 0.1, seed=1)
    b_train, b_test = random_holdout(df, 0.1, seed=1)
    pd.testing.assert_frame_equal(a_train, b_train)
    pd.testing.assert_frame_equal(a_test, b_test)
    _, c_test = random_holdout(df, 0.1, seed=2)
    assert set(c_test["line"]) != set(a_test["line"])


def test_random_holdout_rejects_bad_fractions() -> None:
    for bad in (0, 1, 1.5, -0.1, True, "0.1"):
        with pytest.raises(DataError, match="test_fraction"):
            random_holdout(frame(10), bad)
    with pytest.raises(DataError, match="empty part"):
        random_holdout(frame(3), 0.1)
    with pytest.raises(DataError):
        random_holdout("not a frame", 0.1)  # type: ignore[arg-type]
