"""Next-item requests on the fast path and through dynamic batching: the same bytes as the
FastAPI handler, the same results as ``recommend_history``, every error left to FastAPI."""

import asyncio
import json
import warnings

import numpy as np
import pytest
import torch

pytest.importorskip("fastapi")
pytest.importorskip("httpx")
pytestmark = pytest.mark.filterwarnings("ignore:Using `httpx` with `starlette.testclient`")

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    from fastapi.testclient import TestClient  # noqa: E402

from recstack.layers.sequence import GRU4RecEncoder, SASRecEncoder  # noqa: E402
from recstack.models.history_tower import HistoryQueryTower  # noqa: E402
from recstack.serving import ServingSpec, export, load_bundle  # noqa: E402
from recstack.serving.batching import RecommendBatcher  # noqa: E402
from recstack.serving.fast_path import parse_history_recommend  # noqa: E402
from recstack.serving.history import recommend_history  # noqa: E402
from recstack.serving.holder import BundleHolder  # noqa: E402
from recstack.serving.middleware import ServerMetrics  # noqa: E402
from recstack.serving.server import create_app  # noqa: E402
from recstack.serving.settings import ServerSettings  # noqa: E402

from .test_http_history import INVALID_HISTORY_REQUESTS, ITEMS, JSON, V  # noqa: E402
from .test_http_history import bundle  # noqa: E402,F401  (the module's next-item bundle fixture)

LIMITS = dict(max_history=20)
VALID = [
    '{"query": {"history": ["m3", "zz", "m5", "m9", 9]}, "k": 4}',
    '{"query": {"history": ["m3"]}, "k": 12, "keep_history": true}',
    '{"query": {"user_id": "7"}, "k": 5}',
    '{"query": {"user_id": 8}}',
    '{"query": {"history": ["x", "y"]}, "k": 3}',
    '{"queries": [{"history": ["m2"]}, {"user_id": "8"}, {"history": ["m1", "m2", "m3", "m4", "m5", "m6"]}], "k": 2}',
    '{"query": {"history": ["m2", "m2", "m2"]}, "keep_history": false}',
]


@pytest.fixture(scope="module")
def clients(bundle):  # noqa: F811
    """(fast-path app, its client, FastAPI-only client, batching client)."""
    fast_app = create_app(bundle, **LIMITS)
    with TestClient(fast_app) as fast, TestClient(create_app(bundle, fast_path=False, **LIMITS)) as slow, \
            TestClient(create_app(bundle, batch_window_ms=0, **LIMITS)) as batched:
        yield fast_app, fast, slow, batched


def _declined(app):
    handler, calls = app.fast_recommend, []
    inner = handler.fallback

    async def counting(scope, receive, send):
        calls.append(scope["path"])
        await inner(scope, receive, send)
    handler.fallback = counting
    return calls, lambda: setattr(handler, "fallback", inner)


@pytest.mark.parametrize("body", VALID + [b for b, _ in INVALID_HISTORY_REQUESTS])
def test_both_paths_answer_next_item_requests_byte_for_byte_alike(clients, body):
    app, fast, slow, batched = clients
    calls, restore = _declined(app)
    try:
        a = fast.post("/v1/recommend", content=body.encode(), headers=JSON)
    finally:
        restore()
    b = slow.post("/v1/recommend", content=body.encode(), headers=JSON)
    c = batched.post("/v1/recommend", content=body.encode(), headers=JSON)
    assert (a.status_code, a.content) == (b.status_code, b.content) == (c.status_code, c.content)
    assert calls == ([] if body in VALID else ["/v1/recommend"])    # valid: answered by the fast path


@pytest.mark.parametrize("body", VALID)
def test_the_parser_reads_what_the_handler_reads(bundle, body):  # noqa: F811
    call = parse_history_recommend(body.encode(), ServerSettings(**LIMITS), bundle)
    obj = json.loads(body)
    queries = [obj["query"]] if "query" in obj else obj["queries"]
    assert call is not None and call.k == obj.get("k", 10) and call.keep_history == obj.get("keep_history", False)
    assert call.queries == [(q.get("history"), q.get("user_id")) for q in queries]


def test_concurrent_history_requests_are_one_search_with_each_ones_answer(bundle):  # noqa: F811
    sizes: list[int] = []
    batcher = RecommendBatcher(BundleHolder(bundle, ServerSettings(), ServerMetrics()), 0.05, 64,
                               observe=sizes.append)
    requests = [([(["m1", "m4"], None)], 3, False), ([(None, "7"), (["m9", "zz"], None)], 3, False),
                ([(["m2"], None)], 3, True), ([(["m5", "m6", "m7", "m8", "m10", "m11"], None)], 5, False)]

    async def go():
        return await asyncio.gather(*[batcher.submit_history(q, k, keep) for q, k, keep in requests])
    try:
        outcomes = asyncio.run(go())
    finally:
        batcher.close()
    assert sizes == [5]                                       # one batch of all five queries
    for (queries, k, keep), (used, recs) in zip(requests, outcomes):
        assert used is bundle
        alone = recommend_history(bundle, [h for h, _ in queries], k=k, users=[u for _, u in queries],
                                  keep_history=keep)
        assert [(r.items, r.dropped, r.history_length) for r in recs] == \
            [(r.items, r.dropped, r.history_length) for r in alone]
        for r, s in zip(recs, alone):
            np.testing.assert_allclose(r.scores, s.scores, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("make", [lambda: SASRecEncoder(V, 8, 30, dropout=0.0, num_blocks=2),
                                  lambda: GRU4RecEncoder(V, 8, 30, dropout=0.0)])
def test_histories_padded_to_their_batch_give_the_full_window_queries(tmp_path, make):
    """recommend_history pads a batch to its longest history, not to max_length: the scores must
    equal the query tower's on rows padded to the whole window."""
    torch.manual_seed(0)
    encoder = make().eval()
    history = {"max_length": 30, "user_field": "user_id", "users": np.array(["7"]), "indptr": np.array([0, 1]),
               "items": np.array([0]), "popularity": np.linspace(12, 1, V - 1).astype(np.float32)}
    path = export(ServingSpec(query_tower=HistoryQueryTower(encoder), query_inputs="history", kind="sasrec"),
                  tmp_path / "b", candidate_identifiers=ITEMS,
                  candidate_embeddings=encoder.item_embedding.weight.detach()[1:].clone(), history=history)
    loaded = load_bundle(path)
    rows = [[1, 4, 2], [7, 7, 3, 11, 12, 5, 1], [9]]                    # candidate positions + 1
    recs = recommend_history(loaded, [[f"m{j}" for j in r] for r in rows], k=V - 1, keep_history=True)
    window = torch.zeros(len(rows), 30, dtype=torch.long)
    for b, r in enumerate(rows):
        window[b, 30 - len(r):] = torch.tensor(r)
    with torch.no_grad():
        reference = HistoryQueryTower(encoder)(window) @ encoder.item_embedding.weight[1:].T
    for b, rec in enumerate(recs):
        order = np.argsort(-reference[b].numpy(), kind="stable")
        np.testing.assert_allclose(rec.scores, reference[b].numpy()[order], rtol=1e-5, atol=1e-6)
