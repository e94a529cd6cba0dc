"""Dynamic batching: concurrent requests searched together, each answered with its own slice."""

import asyncio
import warnings

import pytest

from recstack.core.errors import ConfigError
from recstack.serving import load_bundle
from recstack.serving.batching import RecommendBatcher
from recstack.serving.holder import BundleHolder
from recstack.serving.middleware import ServerMetrics
from recstack.serving.settings import ServerSettings


@pytest.fixture(scope="module")
def bundle(bundle_dir):
    return load_bundle(bundle_dir)


def _batcher(bundle, window_s, max_queries=64):
    sizes = []
    holder = BundleHolder(bundle, ServerSettings(), ServerMetrics())
    return RecommendBatcher(holder, window_s, max_queries, observe=sizes.append), sizes


def _submit_together(batcher, requests):
    async def go():
        return await asyncio.gather(*[batcher.submit(q, k, ex) for q, k, ex in requests])
    try:
        return asyncio.run(go())
    finally:
        batcher.close()


def test_requests_within_the_window_are_one_search(bundle):
    batcher, sizes = _batcher(bundle, window_s=0.2)
    requests = [([{"user_id": "u1"}], 5, True), ([{"user_id": "u58"}], 5, True),
                ([{"user_id": "u3"}, {"user_id": "u4"}], 5, True), ([{"user_id": "u2"}], 5, True)]
    outcomes = _submit_together(batcher, requests)
    assert sizes == [5]
    expected = bundle.recommend([q for queries, _, _ in requests for q in queries], k=5)
    assert [len(recs) for _, recs in outcomes] == [1, 1, 2, 1]
    assert [rec for _, recs in outcomes for rec in recs] == expected
    assert all(b is bundle for b, _ in outcomes)


def test_different_k_and_exclude_seen_are_separate_groups_of_one_batch(bundle):
    batcher, sizes = _batcher(bundle, window_s=0.2)
    requests = [([{"user_id": "u1"}], 3, True), ([{"user_id": "u2"}], 7, True), ([{"user_id": "u5"}], 3, False),
                ([{"user_id": "u6"}], 3, True)]
    outcomes = _submit_together(batcher, requests)
    assert sizes == [4]
    first_group = bundle.recommend([{"user_id": "u1"}, {"user_id": "u6"}], k=3)
    assert outcomes[0][1] == first_group[:1] and outcomes[3][1] == first_group[1:]
    assert outcomes[1][1] == bundle.recommend([{"user_id": "u2"}], k=7)
    assert outcomes[2][1] == bundle.recommend([{"user_id": "u5"}], k=3, exclude_seen=False)


def test_a_failing_request_does_not_fail_its_batch(bundle):
    batcher, _ = _batcher(bundle, window_s=0.2)
    requests = [([{"user_id": "u1"}], 4, True), ([{"usr": "u2"}], 4, True), ([{"user_id": "u3"}], 4, True)]
    outcomes = _submit_together(batcher, requests)
    assert outcomes[1][1] is None                       # answered by the FastAPI path, with its 422
    assert outcomes[0][1] == bundle.recommend([{"user_id": "u1"}], k=4)
    assert outcomes[2][1] == bundle.recommend([{"user_id": "u3"}], k=4)


def test_batches_are_bounded_and_the_next_one_forms_during_a_search(bundle):
    batcher, sizes = _batcher(bundle, window_s=0.2, max_queries=2)
    requests = [([{"user_id": f"u{i}"}], 4, True) for i in range(5)]
    outcomes = _submit_together(batcher, requests)
    assert sizes == [2, 2, 1]
    queries = [q for qs, _, _ in requests for q in qs]
    expected = [rec for part in (queries[:2], queries[2:4], queries[4:]) for rec in bundle.recommend(part, k=4)]
    assert [recs[0] for _, recs in outcomes] == expected


def test_window_zero_batches_what_arrives_during_a_search(bundle):
    batcher, sizes = _batcher(bundle, window_s=0.0)
    outcomes = _submit_together(batcher, [([{"user_id": f"u{i}"}], 4, True) for i in range(5)])
    assert sizes == [1, 4] and all(len(recs) == 1 for _, recs in outcomes)


def test_not_ready_gives_no_results(tmp_path):
    holder = BundleHolder(tmp_path / "missing", ServerSettings(), ServerMetrics())
    batcher = RecommendBatcher(holder, 0.0)
    [(b, recs)] = _submit_together(batcher, [([{"user_id": "u1"}], 4, True)])
    assert b is None and recs is None


def test_the_server_answers_batched_requests_like_bundle_recommend(bundle):
    pytest.importorskip("fastapi")
    pytest.importorskip("httpx")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from fastapi.testclient import TestClient
    from recstack.serving.server import create_app

    with TestClient(create_app(bundle, batch_window_ms=0)) as c:
        for user in ("u1", "u57"):
            answer = c.post("/v1/recommend", json={"query": {"user_id": user}, "k": 6}).json()
            assert answer["results"] == [bundle.recommend({"user_id": user}, k=6).to_dict()]
        bad = c.post("/v1/recommend", json={"query": {"usr": "u1"}})
        assert bad.status_code == 422 and bad.json()["error"]["code"] == "unknown_query_field"
        allowed = c.post("/v1/recommend", json={"query": {"user_id": "u1"}, "allow": ["Movie 3 (1953)"]}).json()
        assert allowed["results"] == [bundle.recommend({"user_id": "u1"}, allow=["Movie 3 (1953)"]).to_dict()]
        text = c.get("/metrics").text
    assert "recstack_recommend_batch_queries_count 3" in text          # the two requests, and the bad one
    assert 'recstack_http_requests_total{route="/v1/recommend",method="POST",status="200"} 3' in text


@pytest.mark.parametrize("bad", [dict(batch_window_ms=-1), dict(batch_window_ms=True), dict(batch_window_ms="2"),
                                 dict(batch_window_ms=5000), dict(batch_max_queries=0)])
def test_batch_settings_are_checked(bad):
    with pytest.raises(ConfigError):
        ServerSettings(**bad)
