"""FactorizedTopK scores the catalogue once per distinct query when the keys repeat.

The ranks must be those of a direct numpy count (stable order: higher scores first, ties by
catalogue position; the row's own positive and its key's excluded items left out), whether the
rows of one key share an embedding (scored and sorted once per key) or not (a per-row context
tower: every row counted with its own embedding), and in the cases the sort cannot take (a
positive in its own exclusion list, an id listed twice, a positive outside the catalogue).
"""

from __future__ import annotations

import numpy as np
import torch

from recstack import Exclusions
from recstack.metrics import FactorizedTopK
from recstack.metrics.factorized_top_k import distinct_queries


def numpy_ranks(queries: np.ndarray, candidates: np.ndarray, positives: np.ndarray, keys: np.ndarray | None = None,
                seen: dict[int, list[int]] | None = None, ids: np.ndarray | None = None) -> np.ndarray:
    """Rank of each row's positive id among the catalogue entries (ids ``ids``, default their positions)
    that neither hold that id nor are excluded for the row's key: those scoring higher, plus those
    tying from a position before the positive's first (every tie when the id is not listed)."""
    ids = np.arange(len(candidates)) if ids is None else ids
    ranks = []
    for row, p in enumerate(positives):
        s = queries[row] @ candidates.T                                        # [C]
        s_p = queries[row] @ candidates[np.flatnonzero(ids == p)[0]] if (ids == p).any() else None
        first = np.flatnonzero(ids == p)[0] if (ids == p).any() else len(ids)
        excluded = set(seen.get(int(keys[row]), [])) if seen else set()
        keep = np.array([ids[c] != p and ids[c] not in excluded for c in range(len(ids))])
        positions = np.arange(len(ids))
        ranks.append(int(np.sum(keep & (s > s_p)) + np.sum(keep & (s == s_p) & (positions < first))))
    return np.array(ranks)


def ranks_of(queries: torch.Tensor, candidates: torch.Tensor, positives: torch.Tensor,
             keys: torch.Tensor, exclude: Exclusions | None = None, ids: torch.Tensor | None = None) -> np.ndarray:
    """FactorizedTopK's ranks; a positive id's embedding is its first catalogue entry's."""
    metric = FactorizedTopK(candidates, candidate_ids=ids, ks=(1, 3), exclude=exclude)
    listed = torch.arange(len(candidates)) if ids is None else ids
    positive_embeddings = candidates[torch.tensor([int(torch.nonzero(listed == p)[0]) for p in positives])]
    metric.update_state(queries, positive_embeddings, true_candidate_ids=positives, query_keys=keys)
    return metric.ranks().numpy()


def exclusions(seen: dict[int, list[int]], num_keys: int) -> Exclusions:
    pairs = [(u, i) for u, items in seen.items() for i in items]
    return Exclusions.from_pairs(torch.tensor([u for u, _ in pairs]), torch.tensor([i for _, i in pairs]),
                                 num_keys=num_keys)


def test_repeated_users_are_scored_once_and_rank_exactly():
    generator = torch.Generator().manual_seed(0)
    candidates = torch.randint(-2, 3, (12, 4), generator=generator).double()   # small integers: many ties
    user_vectors = torch.randint(-2, 3, (3, 4), generator=generator).double()
    keys = torch.tensor([0, 1, 0, 2, 1, 0, 2, 2, 1, 0])
    positives = torch.randint(0, 12, (10,), generator=generator)
    queries = user_vectors[keys]
    grouped = distinct_queries(queries, keys)
    assert grouped is not None and grouped[0].shape[0] == 3
    assert torch.equal(grouped[0][grouped[1]], queries)
    expected = numpy_ranks(queries.numpy(), candidates.numpy(), positives.numpy())
    np.testing.assert_array_equal(ranks_of(queries, candidates, positives, keys), expected)


def test_rows_of_one_key_with_different_embeddings_are_scored_row_by_row():
    generator = torch.Generator().manual_seed(1)
    candidates = torch.randn(9, 3, generator=generator, dtype=torch.float64)
    keys = torch.tensor([0, 0, 0, 1, 1, 1])
    queries = torch.randn(6, 3, generator=generator, dtype=torch.float64)   # a context tower: rows differ
    positives = torch.tensor([0, 4, 8, 2, 2, 7])
    assert distinct_queries(queries, keys) is None
    expected = numpy_ranks(queries.numpy(), candidates.numpy(), positives.numpy())
    np.testing.assert_array_equal(ranks_of(queries, candidates, positives, keys), expected)


def test_mostly_distinct_keys_are_not_grouped():
    queries = torch.eye(4, dtype=torch.float64)[[0, 1, 2, 2]]
    assert distinct_queries(queries, torch.tensor([0, 1, 2, 2])) is None    # 3 keys in 4 rows
    assert distinct_queries(queries, None) is None


def tie_heavy_case(seed: int):
    generator = torch.Generator().manual_seed(seed)
    candidates = torch.randint(-1, 2, (10, 3), generator=generator).double()   # values in {-1, 0, 1}: many ties
    user_vectors = torch.randint(-1, 2, (4, 3), generator=generator).double()
    keys = torch.tensor([0, 1, 0, 2, 1, 0, 3, 2, 1, 0, 3, 3])
    positives = torch.tensor([1, 2, 3, 4, 5, 6, 7, 8, 9, 0, 2, 5])
    return candidates, user_vectors[keys], keys, positives


def test_sorted_ranks_with_exclusions_equal_the_direct_count(monkeypatch):
    def no_count(*args, **kwargs):
        raise AssertionError("these rows should be ranked by the per-query sort")

    monkeypatch.setattr(FactorizedTopK, "_count_higher", no_count)
    candidates, queries, keys, positives = tie_heavy_case(2)
    seen = {0: [4, 9], 1: [1], 2: [3, 6], 3: []}           # never a row's own positive: the sort applies
    expected = numpy_ranks(queries.numpy(), candidates.numpy(), positives.numpy(), keys.numpy(), seen)
    got = ranks_of(queries, candidates, positives, keys, exclusions(seen, 4))
    np.testing.assert_array_equal(got, expected)


def test_a_positive_in_its_own_exclusion_list_is_still_compared():
    candidates, queries, keys, positives = tie_heavy_case(3)
    seen = {0: [1, 3, 6], 1: [2], 2: [], 3: [7]}           # user 0's positives 1, 3 and 6 are "seen" too
    expected = numpy_ranks(queries.numpy(), candidates.numpy(), positives.numpy(), keys.numpy(), seen)
    np.testing.assert_array_equal(ranks_of(queries, candidates, positives, keys, exclusions(seen, 4)), expected)


def test_an_id_listed_twice():
    candidates, queries, keys, positives = tie_heavy_case(6)
    ids = torch.tensor([0, 1, 2, 3, 4, 5, 6, 2, 8, 9])     # id 2 at positions 2 and 7, id 7 not listed
    positives = torch.where(positives == 7, torch.tensor(8), positives)
    candidates[7] = 3 * candidates[2]                      # id 2's second entry outscores its first
    assert ((queries @ candidates[2])[positives == 2] > 0).any()
    expected = numpy_ranks(queries.numpy(), candidates.numpy(), positives.numpy(), ids=ids.numpy())
    np.testing.assert_array_equal(ranks_of(queries, candidates, positives, keys, ids=ids), expected)


def test_a_positive_outside_the_catalogue_follows_every_tie():
    candidates, queries, keys, positives = tie_heavy_case(5)
    metric = FactorizedTopK(candidates[:9], candidate_ids=torch.arange(9), ks=(1,))   # id 9 not listed
    metric.update_state(queries, candidates[positives], true_candidate_ids=positives, query_keys=keys)
    scores = queries.numpy() @ candidates[:9].numpy().T
    s_p = (queries * candidates[positives]).sum(dim=1).numpy()
    own = positives.numpy()[:, None] == np.arange(9)[None, :]
    higher = ((scores > s_p[:, None]) & ~own).sum(axis=1)
    tied_before = ((scores == s_p[:, None]) & ~own & (np.arange(9)[None, :] < np.where(
        positives.numpy() == 9, 9, positives.numpy())[:, None])).sum(axis=1)
    assert (positives == 9).any()
    np.testing.assert_array_equal(metric.ranks().numpy(), higher + tied_before)
