"""IndexTopK: identical to FactorizedTopK through an exact index; truncated MRR through ANN."""

import numpy as np
import pytest
import torch

from recstack import Exclusions
from recstack.index import BruteForce
from recstack.metrics import FactorizedTopK
from recstack.index.top_k_metric import IndexTopK
from recstack.metrics.factorized_top_k import MISS_RANK


def batches(seed=0, n_cand=400, d=8, rows=300):
    g = torch.Generator().manual_seed(seed)
    cand = torch.randn(n_cand, d, generator=g)
    ids = torch.arange(n_cand)
    users = torch.randint(0, 40, (rows,), generator=g)
    user_emb = torch.randn(40, d, generator=g)
    pos = torch.randint(0, n_cand, (rows,), generator=g)
    weights = torch.rand(rows, generator=g)
    return cand, ids, user_emb[users], cand[pos], pos, weights, users


@pytest.mark.parametrize("with_keys", [False, True])
def test_exact_index_gives_identical_numbers(with_keys):
    cand, ids, q, p, pos, w, users = batches()
    excl = Exclusions.from_pairs(users[:50], torch.randint(0, 400, (50,))) if with_keys else None
    ks = (1, 5, 10, 50)
    ref = FactorizedTopK(cand, ids, ks=ks, exclude=excl)
    got = IndexTopK(BruteForce().build(ids, cand), ks=ks, exclude=excl)
    for start in range(0, q.shape[0], 64):
        sl = slice(start, start + 64)
        kwargs = {"query_keys": users[sl]} if with_keys else {}
        ref.update_state(q[sl], p[sl], pos[sl], sample_weight=w[sl], **kwargs)
        got.update_state(q[sl], p[sl], pos[sl], sample_weight=w[sl], **kwargs)
    expected = ref.result()
    result = got.result()
    assert result.pop("factorized_top_k/index") == "brute_force"
    assert result == expected                          # identical, including MRR beyond depth
    assert torch.equal(got.ranks(), ref.ranks())


def test_approximate_index_reports_its_kind_and_truncated_mrr():
    pytest.importorskip("faiss")
    from recstack.index import FaissIVF
    cand, ids, q, p, pos, _, _ = batches(seed=1)
    index = FaissIVF(nlist=8, nprobe=8).build(ids, cand)       # exhaustive: ranks < depth exact
    ks = (1, 5, 10)
    metric = IndexTopK(index, ks=ks, name="ann")
    metric.update_state(q, p, pos)
    ref = FactorizedTopK(cand, ids, ks=ks)
    ref.update_state(q, p, pos)
    exact = ref.result()
    out = metric.result()
    assert out.pop("ann/index") == "faiss_ivf"
    for key, value in exact.items():
        if not key.endswith("mrr"):
            assert out[key.replace("factorized_top_k", "ann")] == pytest.approx(value, abs=1e-12)
    ranks = ref.ranks().numpy()
    truncated = np.where(ranks < 10, 1.0 / (ranks + 1.0), 0.0).mean()
    assert out["ann/mrr"] == pytest.approx(truncated, abs=1e-12)
    assert set(metric.ranks().tolist()) - set(range(10)) <= {-1}


def test_report_index_off_keeps_only_floats():
    cand, ids, q, p, pos, _, _ = batches(seed=2)
    metric = IndexTopK(BruteForce().build(ids, cand), ks=(5,), report_index=False)
    metric.update_state(q, p, pos)
    assert all(isinstance(v, float) for v in metric.result().values())
    metric.reset_state()
    assert metric.result() == {}


# Ties and non-finite scores: one rule with FactorizedTopK ----------------------------------------

NAN = float("nan")


def tied_batches(seed=3, n_cand=30, d=2, rows=60, users=8):
    """Embeddings in {-1, 0, 1}: most scores tie. Candidate ids are a shuffle, so catalogue
    position (the build order) and id order differ."""
    g = torch.Generator().manual_seed(seed)
    cand = torch.randint(-1, 2, (n_cand, d), generator=g).float()
    ids = torch.randperm(n_cand, generator=g) * 3 + 1
    keys = torch.randint(0, users, (rows,), generator=g)
    user_emb = torch.randint(-1, 2, (users, d), generator=g).float()
    rows_pos = torch.randint(0, n_cand, (rows,), generator=g)
    return cand, ids, user_emb[keys], cand[rows_pos], ids[rows_pos], keys


def run_both(cand, ids, q, p, pos, keys=None, ks=(1, 3, 10), exclude=None, budget=1 << 24, batch=16):
    ref = FactorizedTopK(cand, ids, ks=ks, exclude=exclude)
    got = IndexTopK(BruteForce(max_scores_in_memory=budget).build(ids, cand), ks=ks, exclude=exclude,
                    report_index=False)
    for start in range(0, q.shape[0], batch):
        sl = slice(start, start + batch)
        kwargs = {} if keys is None else {"query_keys": keys[sl]}
        ref.update_state(q[sl], p[sl], None if pos is None else pos[sl], **kwargs)
        got.update_state(q[sl], p[sl], None if pos is None else pos[sl], **kwargs)
    return ref, got


@pytest.mark.parametrize("protocol", ["all-items", "exclude-seen"])
@pytest.mark.parametrize("budget", [1 << 24, 7])          # one score tile, or tiles of a few candidates
def test_exact_index_breaks_ties_by_catalogue_position_like_factorized_top_k(protocol, budget):
    cand, ids, q, p, pos, keys = tied_batches()
    exclude = None
    if protocol == "exclude-seen":
        g = torch.Generator().manual_seed(9)
        exclude = Exclusions.from_pairs(torch.randint(0, 8, (40,), generator=g), ids[torch.randint(0, 30, (40,), generator=g)])
    ref, got = run_both(cand, ids, q, p, pos, keys, exclude=exclude, budget=budget)
    assert torch.equal(got.ranks(), ref.ranks())
    assert got.result() == ref.result()
    # Independent check of the rule: the positive's index in the stable descending order of the
    # unmasked catalogue (build order), as a served list shows it.
    scores = (q @ cand.T).numpy()
    for row in range(q.shape[0]):
        masked = set(exclude.take(keys[row:row + 1]).ids.tolist()) if exclude is not None else set()
        keep = [j for j in range(cand.shape[0]) if ids[j] == pos[row] or int(ids[j]) not in masked]
        order = [keep[i] for i in np.argsort(-scores[row, keep], kind="stable")]
        assert int(got.ranks()[row]) == order.index(int(torch.nonzero(ids == pos[row])[0]))


def test_constant_scores_rank_each_positive_at_its_catalogue_position():
    cand = torch.zeros(12, 3)
    ids = torch.arange(12) * 5
    positives = torch.tensor([7, 0, 11, 3])          # positions; ks up to 5: positions 7, 11 need the exact count
    ref, got = run_both(cand, ids, torch.zeros(4, 3), cand[positives], ids[positives], ks=(1, 5))
    assert got.ranks().tolist() == ref.ranks().tolist() == positives.tolist()
    assert got.result() == ref.result()


def test_without_ids_ties_count_for_the_positive_in_both():
    cand = torch.zeros(6, 2)
    ref, got = run_both(cand, torch.arange(6), torch.zeros(3, 2), cand[:3], None, ks=(1,))
    assert got.ranks().tolist() == ref.ranks().tolist() == [0, 0, 0]


def test_a_positive_missing_from_the_catalogue_follows_every_entry_it_ties_with():
    cand = torch.tensor([[1.0], [2.0], [1.0], [0.0]])
    q = torch.ones(1, 1)
    ref, got = run_both(cand, torch.arange(4), q, torch.tensor([[1.0]]), torch.tensor([99]), ks=(1, 5))
    assert got.ranks().tolist() == ref.ranks().tolist() == [3]


def test_nan_and_infinite_positives_and_queries_are_misses_in_both():
    cand, ids, q, p, pos, keys = tied_batches(seed=5, rows=8)
    q, p = q.clone(), p.clone()
    q[1] = NAN                               # a NaN query: unrankable, the index is never asked
    p[3, 0] = NAN                            # a NaN positive embedding
    p[5] = float("inf")                      # an infinite positive score
    ref, got = run_both(cand, ids, q, p, pos, keys, ks=(1, 30, 100))
    assert torch.equal(got.ranks(), ref.ranks())
    assert {int(r) for r in got.ranks()[[1, 3, 5]]} == {MISS_RANK}
    result = got.result()
    assert result == ref.result()
    assert result["factorized_top_k/top_100_categorical_accuracy"] == pytest.approx(5 / 8)


def test_a_diverged_model_scores_zero_through_the_index_too():
    cand = torch.randn(10, 4, generator=torch.Generator().manual_seed(0))
    ref, got = run_both(cand, torch.arange(10), torch.full((5, 4), NAN), torch.full((5, 4), NAN),
                        torch.arange(5), torch.arange(5), ks=(1, 10))
    assert all(value == 0.0 for value in got.result().values())
    assert got.result() == ref.result()


def test_queries_whose_scores_could_overflow_are_misses_in_both():
    # Finite vectors whose inner products overflow float32: inf or NaN depending on the summation
    # order (torch.topk would put a NaN first), so no ranking exists and both metrics call it a miss.
    d = 8
    cand = torch.cat([torch.cat([torch.full((1, 4), 2.0), torch.full((1, 4), -2.0)], 1), torch.eye(d)[:5]])
    q = torch.cat([torch.full((1, d), 3e38), torch.ones(1, d)])
    positives = torch.tensor([2, 2])
    ref, got = run_both(cand, torch.arange(6), q, cand[positives], positives, ks=(1, 5))
    assert ref.ranks().tolist() == got.ranks().tolist() == [MISS_RANK, 1]
    assert got.result() == ref.result()


def test_unknown_ranks_of_an_approximate_index_add_exactly_zero_to_mrr():
    pytest.importorskip("faiss")
    from recstack.index import FaissIVF
    cand, ids, q, p, pos, _, _ = batches(seed=4, rows=50)
    metric = IndexTopK(FaissIVF(nlist=4, nprobe=4).build(ids, cand), ks=(1,), report_index=False)
    metric.update_state(q, p, pos)
    ranks = metric.ranks()
    assert bool((ranks == -1).any())
    expected = float(torch.where(ranks < 0, 0.0, 1.0 / (ranks.double() + 1.0)).mean())
    assert metric.result()["factorized_top_k/mrr"] == expected


def test_ties_are_settled_by_catalogue_position_even_with_string_identifiers():
    cand, ids, q, p, pos, keys = tied_batches(seed=6)
    index = BruteForce().build(ids, cand, identifiers=np.array([f"item {i}" for i in ids.tolist()], dtype=object))
    got = IndexTopK(index, ks=(1, 3, 10), report_index=False)
    ref = FactorizedTopK(cand, ids, ks=(1, 3, 10))
    got.update_state(q, p, pos, query_keys=keys)
    ref.update_state(q, p, pos, query_keys=keys)
    assert torch.equal(got.ranks(), ref.ranks()) and got.result() == ref.result()


def test_an_approximate_index_orders_retrieved_ties_by_id():
    pytest.importorskip("faiss")
    from recstack.index import FaissIVF
    cand, _, q, p, _, keys = tied_batches(seed=7, n_cand=40, rows=40)
    ids = torch.arange(40)                                   # id order = catalogue order here
    positives = torch.randint(0, 40, (40,), generator=torch.Generator().manual_seed(1))
    index = FaissIVF(nlist=2, nprobe=2).build(ids, cand)    # every cell probed: the list is exact
    got = IndexTopK(index, ks=(1, 5, 20), report_index=False)
    ref = FactorizedTopK(cand, ids, ks=(1, 5, 20))
    got.update_state(q, cand[positives], positives)
    ref.update_state(q, cand[positives], positives)
    exact = ref.ranks()
    assert torch.equal(got.ranks(), torch.where(exact < 20, exact, -1))
    assert bool(((exact < 20) & (exact > 0)).any()) and bool((exact >= 20).any())
