"""The bundle's request-path search and lookups give exactly what the general paths give."""

import numpy as np
import pytest
import torch
from torch import nn

from recstack.core.id_lists import IdLists
from recstack.features import StringLookup
from recstack.index import BruteForce
from recstack.layers import Embedding
from recstack.serving import ServingSpec, export, load_bundle
from recstack.serving.exact_search import ExactSearch

USERS = [f"u{i}" for i in range(40)]


def _candidates(n: int = 120, d: int = 6) -> torch.Tensor:
    torch.manual_seed(1)
    emb = torch.randn(n, d)
    emb[10] = emb[3]                    # exact score ties: top-k's tie order must survive
    emb[11] = emb[3]
    emb[50:60] = emb[40]
    return emb


@pytest.fixture(scope="module")
def raw_bundle(tmp_path_factory):
    """Raw mode (Sequential(StringLookup, Embedding)), string titles, seen lists, ties."""
    torch.manual_seed(0)
    tower = nn.Sequential(StringLookup(vocabulary=USERS), Embedding(len(USERS) + 1, 6))
    items = np.array([f"title {i}" for i in range(120)])
    rng = np.random.default_rng(0)
    seen = {"user_id": [USERS[i] for i in rng.integers(0, 30, 400)], "item": list(items[rng.integers(0, 120, 400)])}
    path = export(ServingSpec(tower, "user_id"), tmp_path_factory.mktemp("exact") / "b", candidate_key="item",
                  candidate_identifiers=items, candidate_embeddings=_candidates(), seen=seen)
    return load_bundle(path)


def _general(bundle):
    """The same bundle answering through index.search and the layers themselves."""
    clone = load_bundle(bundle.directory)
    clone._exact = None
    clone._raw_fast = None
    return clone


def test_exact_search_equals_brute_force_bit_for_bit():
    emb = _candidates()
    index = BruteForce().build(None, emb)
    fast = ExactSearch.for_index(index)
    assert fast is not None
    torch.manual_seed(2)
    q = torch.randn(5, 6)
    q[1] = emb[3] * 2                   # its top scores tie (rows 3, 10, 11)
    seen = IdLists.from_lists([[0, 1, 2], [], [3, 10], list(range(100)), [119]])
    extra = np.array([5, 6, 7])
    allow = np.array([3, 10, 11, 40, 50, 51, 52, 7, 8, 9])
    cases = [dict(), dict(exclude=seen), dict(exclude_all=extra), dict(allow=allow),
             dict(exclude=seen, exclude_all=extra, allow=allow)]
    for k in (1, 4, 15, 500):
        for case in cases:
            excl = case.get("exclude")
            if case.get("exclude_all") is not None:
                shared = IdLists.same(case["exclude_all"], 5)
                excl = shared if excl is None else excl.union(shared)
            allow_spec = None if case.get("allow") is None else IdLists.same(case["allow"], 5)
            s_ref, i_ref = index.search(q, k=k, exclude=excl, allow=allow_spec)
            s, i = fast.search(q, k, **case)
            assert torch.equal(s, s_ref), (k, case)
            assert np.array_equal(i, i_ref), (k, case)


def test_exact_search_steps_aside_where_it_would_differ():
    emb = _candidates()
    assert ExactSearch.for_index(BruteForce().build(np.arange(120) + 7, emb)) is None    # ids are not positions
    fast = ExactSearch.for_index(BruteForce(max_scores_in_memory=240).build(None, emb))
    assert fast.applies(torch.randn(2, 6)) and not fast.applies(torch.randn(3, 6))      # BruteForce would chunk
    q = torch.randn(1, 6)
    q[0, 2] = float("nan")
    assert not fast.applies(q)                                                          # index.search raises


@pytest.mark.parametrize("kwargs", [
    dict(queries={"user_id": "u3"}),
    dict(queries={"user_id": "u35"}, k=30),                                  # no seen items
    dict(queries={"user_id": "stranger"}),                                   # cold start
    dict(queries={"user_id": "u3"}, exclude_seen=False, k=120),
    dict(queries=[{"user_id": u} for u in ("u1", "u2", "nobody", "u3", "u29")], k=12),
    dict(queries={"user_id": "u4"}, allow=["title 3", "title 10", "title 11", "title 90"], k=10),
    dict(queries={"user_id": "u4"}, exclude=["title 3", "not a title", "title 40"], k=25),
    dict(queries=[{"user_id": "u5"}, {"user_id": "u6"}], allow=[f"title {i}" for i in range(60)],
         exclude=["title 41", "title 42"], k=50),
    dict(queries={"user_id": "u7"}, allow=[], k=5),
])
def test_recommend_equals_the_general_path(raw_bundle, kwargs):
    assert raw_bundle._exact is not None and raw_bundle._raw_fast is not None
    assert raw_bundle.recommend(**kwargs) == _general(raw_bundle).recommend(**kwargs)


def test_a_nul_character_is_not_dropped_from_a_raw_mode_user_id(raw_bundle):
    """numpy's fixed-width strings drop trailing NULs: "u3\\x00" must stay an unknown user,
    not become user "u3"."""
    rec = raw_bundle.recommend({"user_id": "u3\x00"}, k=5)
    assert rec.cold_start and rec.items == raw_bundle.recommend({"user_id": "stranger"}, k=5).items


def test_a_nul_character_is_not_dropped_from_a_feature_set_user_id(bundle_dir):
    featured = load_bundle(bundle_dir)
    assert featured.recommend({"user_id": "u3\x00"}, k=5).cold_start
    assert not featured.recommend({"user_id": "u3"}, k=5).cold_start
