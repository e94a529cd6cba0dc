"""Rating-prediction splits: a seeded random holdout and MovieLens 100K's canonical folds.

* :func:`random_holdout` - d2l's protocol (``split_data_ml100k(..., "random", 0.1)``)
  made exact and reproducible: d2l draws ``np.random.uniform(0, 1, n) < 0.9`` per row
  (about, not exactly, 10% test, unseeded); here the test part is the first
  ``floor(n * test_fraction + 0.5)`` positions of ``np.random.default_rng(seed).permutation(n)``,
  so its size is fixed and the same seed gives the same split.
* :func:`ml100k_fold` / :func:`ml100k_u1_split` - GroupLens's ``u1..u5`` folds. ``mku.sh``
  cuts ``u.data`` into five consecutive blocks of 20 000 lines: ``u{k}.test`` is lines
  ``[20000 (k-1), 20000 k)`` and ``u{k}.base`` the other 80 000 (both then sorted by user
  and item, which changes no set). :func:`recstack.datasets.load_movielens_100k` keeps
  u.data's line order, so fold k's test set is rows ``[20000 (k-1), 20000 k)`` of its
  ``ratings`` frame; u1 (GLocal-K's benchmark split) is rows [0, 20000).

Both parts keep ``df``'s columns and original row order and get a fresh RangeIndex.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from recstack.core.errors import DataError

__all__ = ["ML100K_NUM_RATINGS", "ml100k_fold", "ml100k_u1_split", "random_holdout"]

ML100K_NUM_RATINGS = 100_000
_FOLD_SIZE = 20_000
_NUM_FOLDS = 5


def _check_frame(df: pd.DataFrame) -> None:
    if not isinstance(df, pd.DataFrame):
        raise DataError(f"expected a pandas DataFrame, got {type(df).__name__}")
    if len(df) == 0:
        raise DataError("cannot split an empty DataFrame (0 rows)")


def _parts(df: pd.DataFrame, test_mask: np.ndarray) -> tuple[pd.DataFrame, pd.DataFrame]:
    return (df.iloc[np.flatnonzero(~test_mask)].reset_index(drop=True),
            df.iloc[np.flatnonzero(test_mask)].reset_index(drop=True))


def random_holdout(df: pd.DataFrame, test_fraction: float = 0.1,
                   seed: int = 0) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Seeded random ``(train, test)`` split with a fixed number of test rows.

    ``n_test = floor(len(df) * test_fraction + 0.5)`` (nearest integer, halves up); the test rows are ``np.random.default_rng(seed).permutation(len(df))[:n_test]``; both
    parts keep ``df``'s row order. Use it twice to carve a validation set from the
    training part (with another seed) so that the test set is never used for selection.
    """
    _check_frame(df)
    is_number = isinstance(test_fraction, (int, float, np.number)) and not isinstance(test_fraction, bool)
    if not (is_number and 0 < test_fraction < 1):
        raise DataError(f"test_fraction must be in (0, 1), got {test_fraction!r}")
    n = len(df)
    n_test = math.floor(n * float(test_fraction) + 0.5)
    if not 0 < n_test < n:
        raise DataError(f"test_fraction={test_fraction} of {n} rows leaves an empty part "
                        f"({n_test} test rows); use more rows or another fraction")
    test_mask = np.zeros(n, dtype=bool)
    test_mask[np.random.default_rng(seed).permutation(n)[:n_test]] = True
    return _parts(df, test_mask)


def ml100k_fold(df: pd.DataFrame, fold: int = 1) -> tuple[pd.DataFrame, pd.DataFrame]:
    """GroupLens's ``u{fold}.base`` / ``u{fold}.test`` as ``(train, test)`` row subsets of
    the MovieLens 100K ratings frame in u.data line order (see module doc).

    Raises DataError unless ``df`` has exactly 100 000 rows (the folds are defined by
    u.data's line numbers, so a filtered or reordered frame has no canonical folds).
    """
    _check_frame(df)
    if len(df) != ML100K_NUM_RATINGS:
        raise DataError(
            f"the canonical ML-100K folds are defined on u.data's {ML100K_NUM_RATINGS} lines in "
            f"file order; this frame has {len(df)} rows. Pass the unfiltered, unshuffled "
            "ratings of recstack.datasets.load_movielens_100k().")
    if isinstance(fold, bool) or not isinstance(fold, (int, np.integer)) or not 1 <= fold <= _NUM_FOLDS:
        raise DataError(f"fold must be an integer in 1..{_NUM_FOLDS}, got {fold!r}")
    test_mask = np.zeros(len(df), dtype=bool)
    test_mask[(fold - 1) * _FOLD_SIZE: fold * _FOLD_SIZE] = True
    return _parts(df, test_mask)


def ml100k_u1_split(df: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """``(u1.base, u1.test)``: rows [20000, 100000) and [0, 20000) of the ratings frame."""
    return ml100k_fold(df, 1)
