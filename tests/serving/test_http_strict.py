"""Strict HTTP requests: no coercion, the documented status codes, HEAD probes, client disconnects.

The bundle's users are "1".."50" (so a user "42" exists, and a coerced 42.0 or true would be
visible as a cold start or as user "1").
"""

import asyncio
import warnings

import numpy as np
import pytest
import torch
from torch import nn

pytest.importorskip("fastapi")
pytest.importorskip("httpx")
pytestmark = pytest.mark.filterwarnings("ignore:Using `httpx` with `starlette.testclient`")

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    from fastapi.testclient import TestClient  # noqa: E402

from recstack.features import StringLookup  # noqa: E402
from recstack.layers import Embedding  # noqa: E402
from recstack.serving import ServingSpec, export, load_bundle  # noqa: E402
from recstack.serving.server import create_app  # noqa: E402

JSON = {"content-type": "application/json"}
USERS = [str(u) for u in range(1, 51)]


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    torch.manual_seed(0)
    tower = nn.Sequential(StringLookup(vocabulary=USERS), Embedding(len(USERS) + 1, 4))
    items = np.array([f"m{i}" for i in range(30)])
    seen = {"user_id": ["42", "42", "1"], "item": ["m0", "m1", "m2"]}
    path = export(ServingSpec(tower, "user_id"), tmp_path_factory.mktemp("strict") / "b", candidate_key="item",
                  candidate_identifiers=items, candidate_embeddings=torch.randn(30, 4), seen=seen)
    return load_bundle(path)


@pytest.fixture
def client(bundle):
    with TestClient(create_app(bundle)) as c:
        yield c


def recommend(client, text):
    return client.post("/v1/recommend", content=text.encode() if isinstance(text, str) else text, headers=JSON)


def assert_422(response, field=None):
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert error["code"] in ("invalid_request", "invalid_query")
    if field is not None:
        assert field in error["message"]
    return error["message"]


def test_an_integer_user_id_is_the_user_with_that_id(client, bundle):
    body = recommend(client, '{"query": {"user_id": 42}, "k": 3}').json()
    assert body["results"][0]["items"] == bundle.recommend({"user_id": "42"}, k=3).items
    assert body["results"][0]["cold_start"] is False


def test_a_boolean_user_id_is_refused_not_served_as_user_1(client):
    assert_422(recommend(client, '{"query": {"user_id": true}}'), "user_id")


def test_a_float_user_id_is_refused_not_served_as_a_cold_start(client):
    assert_422(recommend(client, '{"query": {"user_id": 42.0}}'), "user_id")


def test_infinity_is_refused(client):
    assert "Infinity" in assert_422(recommend(client, '{"query": {"user_id": Infinity}}'))


def test_nan_is_refused(client):
    """NaN is not JSON; the lookup layer refused it before too (a regression guard)."""
    assert "NaN" in assert_422(recommend(client, '{"query": {"user_id": NaN}}'))


def test_k_true_is_refused(client):
    assert_422(recommend(client, '{"query": {"user_id": "42"}, "k": true}'), "k")


def test_k_as_a_string_is_refused(client):
    assert_422(recommend(client, '{"query": {"user_id": "42"}, "k": "5"}'), "k")


def test_k_as_a_float_is_refused(client):
    assert_422(recommend(client, '{"query": {"user_id": "42"}, "k": 5.0}'), "k")


def test_exclude_seen_as_a_string_is_refused(client):
    assert_422(recommend(client, '{"query": {"user_id": "42"}, "exclude_seen": "yes"}'), "exclude_seen")


def test_a_boolean_item_id_in_an_allow_list_is_refused(client):
    assert_422(recommend(client, '{"query": {"user_id": "42"}, "allow": [true]}'), "allow")


def test_similar_k_must_be_digits(client, bundle):
    item = bundle.identifiers[0]
    assert_422(client.get(f"/v1/items/{item}/similar", params={"k": "5.0"}), "k")


def test_truncated_json_is_422(client):
    assert "not valid JSON" in assert_422(recommend(client, '{"query": {"user_id": "42"'))


def test_a_body_that_is_not_utf8_is_422_not_400(client):
    assert "UTF-8" in assert_422(recommend(client, b'\xff\xfe{"query": {}}'))


@pytest.mark.parametrize("path", ["/healthz", "/readyz"])
def test_head_on_health_endpoints(client, path):
    response = client.head(path)
    assert response.status_code == 200 and response.content == b""
    assert client.get(path).status_code == 200


def test_a_client_disconnecting_mid_body_is_not_a_server_error(bundle):
    app = create_app(bundle)
    scope = {"type": "http", "method": "POST", "path": "/v1/recommend", "raw_path": b"/v1/recommend",
             "query_string": b"", "headers": [(b"content-type", b"application/json")], "http_version": "1.1",
             "scheme": "http", "server": ("127.0.0.1", 8000), "client": ("127.0.0.1", 5000), "root_path": ""}
    messages = [{"type": "http.request", "body": b'{"query": {"user_', "more_body": True},
                {"type": "http.disconnect"}]
    sent = []

    async def receive():
        return messages.pop(0) if messages else {"type": "http.disconnect"}

    async def send(message):
        sent.append(message)

    asyncio.run(app(scope, receive, send))
    assert sent == []                                     # nothing answered to a client that left
    with TestClient(app) as c:
        text = c.get("/metrics").text
    assert 'class="server"' not in text
    assert 'recstack_http_requests_total{route="/v1/recommend",method="POST",status="499"} 1' in text
    assert 'recstack_http_client_disconnects_total{route="/v1/recommend"} 1' in text
