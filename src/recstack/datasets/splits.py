"""Train/test splits of an interactions table (any pandas DataFrame).

Every split is vectorised, deterministic (given ``seed`` where there is one),
keeps all columns, and returns frames with a fresh ``RangeIndex``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from fractions import Fraction
from itertools import accumulate

import numpy as np
import pandas as pd

from recstack.core.errors import DataError

# Tolerance on sum(fractions) == 1, so (1/3, 1/3, 1/3) is accepted.
_SUM_TOLERANCE = 1e-6
# Fractions are read as the nearest rational with at most this denominator.
_MAX_DENOMINATOR = 10**6


def random_split(
    df: pd.DataFrame, train_fraction: float = 0.8, seed: int = 42
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Shuffle rows and split them into ``(train, test)``, as in the TFRS tutorials.

    The order is ``np.random.default_rng(seed).permutation(len(df))``; the first
    ``floor(len(df) * train_fraction)`` shuffled rows are train, the rest test.
    Both keep ``df``'s columns, in shuffled order.
    """
    _check_frame(df)
    _check_fraction(train_fraction, "train_fraction")
    train, test = random_split_fractions(df, (train_fraction, 1 - train_fraction), seed)
    return train, test


def random_split_fractions(
    df: pd.DataFrame, fractions: Sequence[float], seed: int = 42
) -> tuple[pd.DataFrame, ...]:
    """Shuffle rows and cut them into ``len(fractions)`` parts, e.g. ``(0.8, 0.1, 0.1)``.

    Each fraction must be in (0, 1) and they must sum to 1. Part ``k`` ends at
    row ``floor(n * (fractions[0] + ... + fractions[k]))`` of the shuffled order
    (``rng.permutation`` as in :func:`random_split`); the last part takes the rest.
    """
    _check_frame(df)
    if len(fractions) < 2:
        raise DataError(f"fractions needs at least two parts, got {tuple(fractions)}")
    for k, f in enumerate(fractions):
        _check_fraction(f, f"fractions[{k}]")
    if abs(sum(fractions) - 1) > _SUM_TOLERANCE:
        raise DataError(f"fractions must sum to 1, got {tuple(fractions)} (sum {sum(fractions)})")
    order = np.random.default_rng(seed).permutation(len(df))
    return _cut(df, order, fractions)


def temporal_split(
    df: pd.DataFrame, train_fraction: float = 0.8, timestamp_col: str = "timestamp"
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Split at a global time cutoff into ``(train, test)``.

    Rows are ordered by ``(timestamp, original position)`` (a stable sort, so
    equal timestamps keep their order and may straddle the cutoff); the first
    ``floor(len(df) * train_fraction)`` are train. Both parts stay in that order.
    """
    _check_frame(df, timestamp_col)
    _check_fraction(train_fraction, "train_fraction")
    timestamps = _timestamps(df, timestamp_col)
    order = np.argsort(timestamps, kind="stable")
    train, test = _cut(df, order, (train_fraction, 1 - train_fraction))
    return train, test


def leave_last_out(
    df: pd.DataFrame, user_col: str = "user_id", timestamp_col: str = "timestamp", n: int = 1
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Per user, hold out the ``n`` latest interactions: returns ``(train, test)``.

    "Latest" is by ``timestamp_col``, ties broken by row order (a later row is
    later). Users with ``n`` or fewer interactions stay entirely in train, so
    every test user also appears in train. Both parts keep ``df``'s row order.
    """
    _check_frame(df, user_col, timestamp_col)
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise DataError(f"n must be a positive integer, got {n!r}")
    timestamps = _timestamps(df, timestamp_col)
    # Stable sort by time, then stable sort by user: within a user, rows are in
    # (timestamp, position) order without ever comparing user ids to timestamps.
    by_time = np.argsort(timestamps, kind="stable")
    users = df[user_col].iloc[by_time].reset_index(drop=True)
    groups = users.groupby(users, sort=False, dropna=False)
    rank_from_end = groups.cumcount(ascending=False).to_numpy()  # 0 = the user's latest
    size = groups.transform("size").to_numpy()
    held_out = np.zeros(len(df), dtype=bool)
    held_out[by_time] = (rank_from_end < n) & (size > n)
    return _take(df, np.flatnonzero(~held_out)), _take(df, np.flatnonzero(held_out))


def per_user_random_split(
    df: pd.DataFrame, ratios: Sequence[float] = (0.8, 0.1, 0.1), user_col: str = "user_id", seed: int = 42
) -> tuple[pd.DataFrame, ...]:
    """Per user, shuffle the user's rows (seeded) and cut them by ``ratios``: RecBole's general protocol
    (``eval_args: {split: {RS: [0.8, 0.1, 0.1]}, order: RO, group_by: user}``).

    Returns one frame per ratio, e.g. ``(train, validation, test)``; each keeps ``df``'s row order.
    ``ratios`` (at least two, positive) need not sum to 1; they are normalised, ``r_i = ratios[i] / sum``.
    For a user with ``n`` rows the part sizes follow RecBole 1.2.1's rounding rule
    (``Dataset._calcu_split_ids``):

    * ``c_i = floor(r_i * n)`` for every part ``i >= 1``, ``c_0 = n - sum_{i>=1} c_i``;
    * then for ``i = m-1, m-2, ..., 1`` (the last part first), while ``c_0 > 1``: a part with
      ``0 < r_i * n < 1`` (rounded down to nothing) takes one row from part 0.

    So a user with 2 rows under 8:1:1 gets (1, 0, 1), with 3 rows (1, 1, 1), with 10 rows (8, 1, 1);
    every user keeps at least one training row. The order within a user is that of
    ``np.random.default_rng(seed).permutation(len(df))`` (RecBole shuffles the whole table, then groups
    by user, which is the same construction; the random stream differs, so individual rows differ).
    """
    _check_frame(df, user_col)
    values = [float(r) for r in ratios]
    if len(values) < 2 or not all(math.isfinite(r) and r > 0 for r in values):
        raise DataError(f"ratios must be at least two positive numbers, e.g. [0.8, 0.1, 0.1]; got {list(ratios)}")
    users = df[user_col]
    if users.isna().any():
        first = int(np.flatnonzero(users.isna().to_numpy())[0])
        raise DataError(f"column {user_col!r} has a missing value at position {first} (0-based)")
    total = sum(values)
    shares = np.array([r / total for r in values], dtype=np.float64)
    codes = pd.factorize(users)[0]
    order = np.random.default_rng(seed).permutation(len(df))
    # Stable sort of the shuffled rows by user: each user's rows in shuffled order, users contiguous.
    by_user = order[np.argsort(codes[order], kind="stable")]
    sizes = np.bincount(codes)                                     # [U]
    counts = _ratio_counts(sizes, shares)                          # [U, m]
    starts = np.cumsum(sizes) - sizes                              # first position of each user in by_user
    user_of_row = codes[by_user]
    position = np.arange(len(df)) - starts[user_of_row]            # 0-based rank within the user
    bounds = np.cumsum(counts, axis=1)                             # [U, m]: end of each part
    part = (position[:, None] >= bounds[user_of_row]).sum(axis=1)  # first part whose end lies past the row
    labels = np.empty(len(df), dtype=np.int64)
    labels[by_user] = part
    return tuple(_take(df, np.flatnonzero(labels == k)) for k in range(len(values)))


def _ratio_counts(sizes: np.ndarray, shares: np.ndarray) -> np.ndarray:
    """[U, m] rows per part for users with ``sizes`` [U] rows: RecBole's rule (see
    :func:`per_user_random_split`), vectorised over users, one step per part."""
    exact = shares[None, :] * sizes[:, None].astype(np.float64)   # r_i * n, the same float product
    counts = np.floor(exact).astype(np.int64)
    counts[:, 0] = sizes - counts[:, 1:].sum(axis=1)
    for j in range(len(shares) - 1, 0, -1):
        # c_0 only decreases, so RecBole's "break once c_0 <= 1" is this per-step condition.
        bump = (counts[:, 0] > 1) & (exact[:, j] > 0) & (exact[:, j] < 1)
        counts[:, j] += bump
        counts[:, 0] -= bump
    return counts


# --- helpers -------------------------------------------------------------------------------


def _check_frame(df: pd.DataFrame, *columns: str) -> None:
    """Reject a non-DataFrame, an empty one, or one lacking any of ``columns``."""
    if not isinstance(df, pd.DataFrame):
        raise DataError(f"expected a pandas DataFrame, got {type(df).__name__}")
    if len(df) == 0:
        raise DataError("cannot split an empty DataFrame (0 rows)")
    for column in columns:
        if column not in df.columns:
            raise DataError(f"column {column!r} not found; available columns: {list(df.columns)}")


def _check_fraction(value: float, name: str) -> None:
    is_number = isinstance(value, (int, float, np.number)) and not isinstance(value, bool)
    if not (is_number and 0 < value < 1):
        raise DataError(f"{name} must be in (0, 1), got {value!r}")


def _timestamps(df: pd.DataFrame, column: str) -> np.ndarray:
    """The column as an array to sort by; missing values would sort arbitrarily, so they raise."""
    values = df[column]
    if values.isna().any():
        first = int(np.flatnonzero(values.isna().to_numpy())[0])
        raise DataError(f"column {column!r} has a missing value at position {first} (0-based)")
    return values.to_numpy()


def _cut(
    df: pd.DataFrame, order: np.ndarray, fractions: Sequence[float]
) -> tuple[pd.DataFrame, ...]:
    """Split ``df.iloc[order]`` at the cumulative ``fractions``."""
    n = len(order)
    # Exact rational arithmetic on the fractions the caller meant (0.7 -> 7/10,
    # 1/3 -> 1/3): float sums like 0.7 + 0.1 = 0.7999... or 9 * (1/3 + 1/3) =
    # 5.999... would otherwise move a boundary by one row.
    cumulative = accumulate(Fraction(float(f)).limit_denominator(_MAX_DENOMINATOR)
                            for f in fractions[:-1])
    bounds = [0, *(math.floor(n * c) for c in cumulative), n]
    return tuple(_take(df, order[lo:hi]) for lo, hi in zip(bounds[:-1], bounds[1:]))


def _take(df: pd.DataFrame, positions: np.ndarray) -> pd.DataFrame:
    return df.iloc[positions].reset_index(drop=True)
