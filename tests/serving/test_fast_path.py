"""The recommendation fast path: it accepts what the strict schema accepts, and answers byte for byte
what the FastAPI handler answers (which answers everything the fast path declines)."""

import json
import warnings

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("httpx")
pytestmark = pytest.mark.filterwarnings("ignore:Using `httpx` with `starlette.testclient`")

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    from fastapi.testclient import TestClient  # noqa: E402

from pydantic import ValidationError  # noqa: E402

from recstack.serving import load_bundle  # noqa: E402
from recstack.serving.fast_path import parse_recommend  # noqa: E402
from recstack.serving.middleware import json_problem  # noqa: E402
from recstack.serving.schemas import RecommendRequest  # noqa: E402
from recstack.serving.server import create_app  # noqa: E402
from recstack.serving.settings import ServerSettings  # noqa: E402

from .conftest import TITLES  # noqa: E402

LIMITS = dict(max_k=50, max_batch=4, max_items=20)
JSON = {"content-type": "application/json"}

VALID = [
    {"query": {"user_id": "u3"}},
    {"query": {"user_id": "u3"}, "k": 7, "exclude_seen": False},
    {"query": {"user_id": "u58"}, "k": 50},                                        # out of vocabulary
    {"query": {"user_id": "nobody at all"}, "k": 3},
    {"queries": [{"user_id": "u1"}, {"user_id": "u2"}, {"user_id": "u57"}, {"user_id": "u9"}], "k": 5},
    {"query": {"user_id": "u4"}, "allow": TITLES[:12], "exclude": [TITLES[0], "not a title"], "k": 6},
    {"queries": [{"user_id": "u5"}], "query": None, "allow": None, "exclude": []},
    {"query": {"user_id": "u6"}, "queries": None, "exclude": TITLES[100:120]},
    {"query": {"user_id": "Face/Off (1997)"}, "k": 1},
]
INVALID_FOR_THE_BUNDLE = [                       # valid requests the bundle refuses (422 from its errors)
    {"query": {"usr": "u1"}},
    {"query": {}},
    {"query": {"user_id": 4.5}},
    {"query": {"user_id": "u1"}, "allow": ["Not a movie"]},
]
INVALID = [                                      # refused by the schema or the limits
    {"query": {"user_id": "u1"}, "exlude_seen": True},
    {"query": {"user_id": "u1"}, "k": 0},
    {"query": {"user_id": "u1"}, "k": 51},
    {"query": {"user_id": "u1"}, "k": "ten"},
    {"query": {"user_id": "u1"}, "k": True},
    {"query": {"user_id": "u1"}, "k": 5.0},
    {"query": {"user_id": "u1"}, "k": None},
    {"query": {"user_id": "u1"}, "exclude_seen": "yes"},
    {"query": {"user_id": "u1"}, "exclude_seen": None},
    {"queries": [{"user_id": "u1"}] * 5},
    {"queries": []},
    {"queries": [{"user_id": "u1"}, "u2"]},
    {},
    {"query": {"user_id": "u1"}, "queries": [{"user_id": "u1"}]},
    {"query": {"user_id": ["u1"]}},
    {"query": {"user_id": True}},
    {"query": {"user_id": None}},
    {"query": {"user_id": {"id": 1}}},
    {"query": "u1"},
    {"query": {"user_id": "u1"}, "allow": TITLES[:21]},
    {"query": {"user_id": "u1"}, "allow": [True]},
    {"query": {"user_id": "u1"}, "allow": [1.5]},
    {"query": {"user_id": "u1"}, "exclude": "Heat (1995)"},
    [{"query": {"user_id": "u1"}}],
    "query",
]
RAW_BODIES = [                                   # bodies that are not JSON objects built by json.dumps
    b'{"query": {"user_id": "u1"}, "k": 1e999}',
    b'{"query": {"user_id": 1e999}}',
    b'{"query": {"user_id": NaN}}',
    b'{"query": {"user_id": Infinity}}',
    b'{"query": {"user_id": "u1"}',
    b'\xff\xfe{"query": {}}',
    b'\xef\xbb\xbf{"query": {"user_id": "u1"}}',                                 # UTF-8 byte-order mark
    b'{"query": {"user_id": "u1"}, "k": 3, "k": 4}',                             # the last one counts
    b'{"query": {"user_id": "u\\u0031"}}',                                        # an escape (declined)
    b'{"query": {"user_id": "\\ud800"}}',                                         # a lone surrogate
    b'{"query": {"user_id": 123456789012345678901234567890}}',
    b'{"query": {"user_id": -9223372036854775808}}',
    b'  {"query": {"user_id": "u2"}}  ',
    b"",
    b"[" * 5000 + b"]" * 5000,
]


def _oracle(body: bytes, settings: ServerSettings):
    """What the FastAPI path accepts: strict JSON, the strict schema, the handler's limits."""
    if not body.strip() or json_problem(body) is not None:
        return None
    try:
        request = RecommendRequest.model_validate(json.loads(body))
    except (ValidationError, ValueError):
        return None
    batch = request.batch()
    if len(batch) > settings.max_batch or request.k > settings.max_k or any(
            values is not None and len(values) > settings.max_items for values in (request.allow, request.exclude)):
        return None
    return batch, request.k, request.exclude_seen, request.allow, request.exclude


def _encode(body):
    return body if isinstance(body, bytes) else json.dumps(body).encode()


@pytest.mark.parametrize("body", VALID + INVALID_FOR_THE_BUNDLE + INVALID + RAW_BODIES)
def test_the_parser_accepts_only_what_the_strict_schema_accepts(body):
    settings = ServerSettings(**LIMITS)
    raw = _encode(body)
    call = parse_recommend(raw, settings)
    expected = _oracle(raw, settings)
    if call is not None:
        assert expected is not None, "accepted a request the FastAPI path refuses"
        assert (call.queries, call.k, call.exclude_seen, call.allow, call.exclude) == expected
    if body in VALID or body in INVALID_FOR_THE_BUNDLE:
        assert call is not None, "a plain valid request should take the fast path"


@pytest.fixture(scope="module")
def bundle(bundle_dir):
    return load_bundle(bundle_dir)


@pytest.fixture(scope="module")
def clients(bundle):
    """(fast-path app, FastAPI-only app), same bundle and limits."""
    fast_app = create_app(bundle, **LIMITS)
    with TestClient(fast_app) as fast, TestClient(create_app(bundle, fast_path=False, **LIMITS)) as slow:
        yield fast_app, fast, slow


def _declined(app):
    """Count the requests the fast path hands to FastAPI."""
    handler = app.fast_recommend
    calls = []
    inner = handler.fallback

    async def counting(scope, receive, send):
        calls.append(scope["path"])
        await inner(scope, receive, send)
    handler.fallback = counting
    return calls, lambda: setattr(handler, "fallback", inner)


@pytest.mark.parametrize("body", VALID + INVALID_FOR_THE_BUNDLE + INVALID + RAW_BODIES)
def test_both_paths_answer_byte_for_byte_alike(clients, body):
    app, fast, slow = clients
    calls, restore = _declined(app)
    try:
        a = fast.post("/v1/recommend", content=_encode(body), headers=JSON)
    finally:
        restore()
    b = slow.post("/v1/recommend", content=_encode(body), headers=JSON)
    assert (a.status_code, a.content, a.headers["content-type"]) == (b.status_code, b.content,
                                                                      b.headers["content-type"])
    assert a.headers["content-length"] == str(len(a.content))
    if body in VALID:
        assert not calls                                # answered by the fast path
    elif body in INVALID or body in INVALID_FOR_THE_BUNDLE:
        assert calls == ["/v1/recommend"]               # answered by FastAPI, with its error


@pytest.mark.parametrize("body", VALID)
def test_the_fast_path_returns_what_bundle_recommend_returns(clients, bundle, body):
    _, fast, _ = clients
    answer = fast.post("/v1/recommend", json=body).json()
    queries = body.get("queries") or [body["query"]]
    expected = bundle.recommend(queries, k=body.get("k", 10), exclude_seen=body.get("exclude_seen", True),
                                allow=body.get("allow"), exclude=body.get("exclude"))
    assert answer["results"] == [r.to_dict() for r in expected]
    assert answer["bundle"] == bundle.digest[:12] and answer["index"] == "brute_force" and answer["exact"] is True


def test_other_content_types_are_left_to_fastapi(clients):
    app, fast, slow = clients
    body = json.dumps(VALID[0]).encode()
    for headers in ({"content-type": "text/plain"}, {"content-type": "application/x-www-form-urlencoded"}):
        a, b = fast.post("/v1/recommend", content=body, headers=headers), slow.post("/v1/recommend", content=body,
                                                                                   headers=headers)
        assert a.status_code == b.status_code == 422 and a.content == b.content
    ok = fast.post("/v1/recommend", content=body, headers={"content-type": "Application/JSON; charset=utf-8"})
    assert ok.status_code == 200


def test_large_catalogues_are_searched_off_the_event_loop(bundle):
    with TestClient(create_app(bundle, inline_max_candidates=0)) as c:
        answer = c.post("/v1/recommend", json={"query": {"user_id": "u3"}, "k": 4}).json()
    assert answer["results"] == [bundle.recommend({"user_id": "u3"}, k=4).to_dict()]


def test_the_fast_path_counts_its_requests_in_metrics(bundle):
    with TestClient(create_app(bundle)) as c:
        for _ in range(3):
            assert c.post("/v1/recommend", json={"queries": [{"user_id": "u1"}, {"user_id": "u2"}]}).status_code == 200
        text = c.get("/metrics").text
    assert 'recstack_http_requests_total{route="/v1/recommend",method="POST",status="200"} 3' in text
    assert 'recstack_http_request_duration_seconds_count{route="/v1/recommend"} 3' in text
    assert 'recstack_queries_total{endpoint="recommend"} 6' in text
    assert "recstack_http_requests_in_flight 1" in text      # the /metrics request itself
