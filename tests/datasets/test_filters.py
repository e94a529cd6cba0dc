"""The k-core filter (RecBole's iterated user/item interaction-count filter) on hand-computed tables."""

from __future__ import annotations

import numpy as np
import pytest

from recstack.datasets import k_core


def test_a_chain_of_removals_takes_several_passes():
    """k = 2. Pass 1: item 4 has one row, (D, 4) goes; pass 2: D is left with one, (D, 3) goes; pass 3:
    item 3 is left with one, (C, 3) goes; pass 4: C is left with one, (C, 2) goes; pass 5: A and B with
    items 1 and 2 have two each, nothing is banned."""
    users = np.array(["A", "A", "B", "B", "C", "C", "D", "D"])
    items = np.array([1, 2, 1, 2, 2, 3, 3, 4])
    core = k_core(users, items, 2)
    assert core.keep.tolist() == [True, True, True, True, False, False, False, False]
    assert core.passes == 5
    assert (core.users_dropped, core.items_dropped) == (2, 2)


def test_one_pass_bans_users_and_items_from_the_same_counts():
    """RecBole bans the users and the items below k of one count together: user C (one row) and item 3
    (one row, E's) go in pass 1, which leaves E with one row; pass 2 bans E; pass 3 bans nothing."""
    users = np.array(["A", "A", "B", "B", "C", "E", "E"])
    items = np.array([1, 2, 1, 2, 1, 3, 2])
    core = k_core(users, items, 2)
    assert core.keep.tolist() == [True, True, True, True, False, False, False]
    assert core.passes == 3
    assert (core.users_dropped, core.items_dropped) == (2, 1)


def test_a_core_that_empties_and_k_one_keeps_everything():
    users, items = np.array(list("aabcc")), np.array(list("xyxyz"))
    empty = k_core(users, items, 2)
    assert not empty.keep.any() and (empty.users_dropped, empty.items_dropped) == (3, 3)
    everything = k_core(users, items, 1)
    assert everything.keep.all() and everything.passes == 1


def _reference(users: list[int], items: list[int], k: int) -> list[bool]:
    """One id at a time, in a plain loop: the k-core does not depend on the order of removal."""
    alive = [True] * len(users)
    changed = True
    while changed:
        changed = False
        for ids in (users, items):
            counts: dict[int, int] = {}
            for row, value in enumerate(ids):
                if alive[row]:
                    counts[value] = counts.get(value, 0) + 1
            low = next((v for v, n in counts.items() if n < k), None)
            if low is not None:
                for row, value in enumerate(ids):
                    if value == low:
                        alive[row] = False
                changed = True
                break
    return alive


@pytest.mark.parametrize("seed", range(4))
def test_agrees_with_removal_one_id_at_a_time(seed):
    rng = np.random.default_rng(seed)
    users, items = rng.integers(0, 30, 300), rng.integers(0, 25, 300)
    assert k_core(users, items, 8).keep.tolist() == _reference(users.tolist(), items.tolist(), 8)


def test_k_below_one_is_refused():
    with pytest.raises(ValueError, match="k must be >= 1"):
        k_core(np.array([1]), np.array([1]), 0)
