"""RecBole's per-user ratio split against its rule applied by hand, user by user."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from recstack.core.errors import DataError
from recstack.datasets.splits import per_user_ratio_parts
from recstack.experiment.config import SplitConfig
from recstack.experiment.interactions import split_data


def recbole_counts(n: int, ratios: list[float]) -> list[int]:
    """RecBole 1.2.1's _calcu_split_ids, as its docstring and code define it, for one user."""
    r = [x / sum(ratios) for x in ratios]
    cnt = [int(x * n) for x in r]
    cnt[0] = n - sum(cnt[1:])
    for i in range(1, len(r)):
        if cnt[0] <= 1:
            break
        if 0 < r[-i] * n < 1:
            cnt[-i] += 1
            cnt[0] -= 1
    return cnt


@pytest.mark.parametrize("ratios", [[0.8, 0.1, 0.1], [0.7, 0.2, 0.1], [0.6, 0.0, 0.4]])
def test_each_users_part_sizes_follow_recboles_rounding(ratios: list[float]) -> None:
    sizes = list(range(1, 40)) + [57, 100, 233]
    users = np.repeat(np.arange(len(sizes)), sizes)
    parts = per_user_ratio_parts(users, ratios, seed=3)
    for u, n in enumerate(sizes):
        got = np.bincount(parts[users == u], minlength=3).tolist()
        assert got == recbole_counts(n, ratios), (n, got)


def test_the_cut_follows_one_shuffle_and_is_seeded() -> None:
    users = np.array(["a"] * 10 + ["b"] * 20)
    first = per_user_ratio_parts(users, [0.8, 0.1, 0.1], seed=7)
    np.testing.assert_array_equal(first, per_user_ratio_parts(users, [0.8, 0.1, 0.1], seed=7))
    assert not np.array_equal(first, per_user_ratio_parts(users, [0.8, 0.1, 0.1], seed=8))
    # the parts of a user are consecutive in the seeded shuffle: train first, then validation, then test
    order = np.random.default_rng(7).permutation(len(users))
    for user in ("a", "b"):
        in_shuffle = first[order][users[order] == user]
        assert (np.diff(in_shuffle) >= 0).all()


def test_split_data_gives_three_disjoint_parts_that_cover_every_row() -> None:
    df = pd.DataFrame({"user": np.repeat(np.arange(30), 12), "item": np.arange(360) % 17, "row": np.arange(360)})
    splits = split_data(df, SplitConfig(method="per-user-random", ratios=[0.8, 0.1, 0.1], seed=0))
    rows = [set(p["row"]) for p in (splits.train, splits.validation, splits.test)]
    assert sum(map(len, rows)) == 360 and set.union(*rows) == set(range(360))
    assert len(splits.validation) == 30 and len(splits.test) == 30          # floor(0.1 * 12) = 1 per user
    assert list(splits.train["row"]) == sorted(splits.train["row"])        # file order kept


def test_bad_ratios_are_refused() -> None:
    with pytest.raises(DataError, match="positive first"):
        per_user_ratio_parts(np.zeros(4), [0.0, 0.5, 0.5])
