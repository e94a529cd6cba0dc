"""``POST /v1/recommend`` on a next-item bundle: history and user queries, dropped ids, every 4xx."""

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
from recstack.layers.sequence import SASRecEncoder  # noqa: E402
from recstack.models.history_tower import HistoryQueryTower  # noqa: E402
from recstack.serving import ServingSpec, export, load_bundle  # noqa: E402
from recstack.serving.history import recommend_history  # noqa: E402
from recstack.serving.server import create_app  # noqa: E402

JSON = {"content-type": "application/json"}
V = 13                                   # item ids 1..12 -> candidates "m1".."m12"
ITEMS = np.array([f"m{j}" for j in range(1, V)])


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    torch.manual_seed(0)
    encoder = SASRecEncoder(V, 8, 5, dropout=0.0)
    history = {"max_length": 5, "user_field": "user_id", "users": np.array(["7", "8"]),
               "indptr": np.array([0, 2, 3]), "items": np.array([0, 4, 9]),
               "popularity": np.linspace(12, 1, V - 1).astype(np.float32)}
    spec = ServingSpec(query_tower=HistoryQueryTower(encoder), query_inputs="history", kind="sasrec")
    path = export(spec, tmp_path_factory.mktemp("hist") / "b", candidate_identifiers=ITEMS,
                  candidate_embeddings=encoder.item_embedding.weight.detach()[1:].clone(), history=history)
    return load_bundle(path)


@pytest.fixture(scope="module")
def client(bundle):
    with TestClient(create_app(bundle, max_history=20)) as c:
        yield c


@pytest.fixture(scope="module")
def user_client(tmp_path_factory):
    users = ["1", "2"]
    tower = nn.Sequential(StringLookup(vocabulary=users), Embedding(3, 4))
    path = export(ServingSpec(tower, "user_id"), tmp_path_factory.mktemp("users") / "b", candidate_key="item",
                  candidate_identifiers=ITEMS, candidate_embeddings=torch.randn(V - 1, 4))
    with TestClient(create_app(load_bundle(path))) as c:
        yield c


def post(client, body):
    return client.post("/v1/recommend", content=body.encode(), headers=JSON)


def error(response, code=None):
    assert response.status_code == 422, response.text
    err = response.json()["error"]
    if code is not None:
        assert err["code"] == code, err
    return err


def test_history_request_matches_the_bundle_and_reports_dropped_ids(client, bundle):
    body = post(client, '{"query": {"history": ["m3", "zz", "m5", "m9", 9]}, "k": 4}').json()
    ref = recommend_history(bundle, [["m3", "m5", "m9"]], k=4)[0]
    result = body["results"][0]
    assert result["items"] == ref.items and result["dropped"] == ["zz", 9] and result["history_length"] == 3
    assert not {"m3", "m5", "m9"} & set(result["items"])               # excluded by default
    kept = post(client, '{"query": {"history": ["m3"]}, "k": 12, "keep_history": true}').json()
    assert "m3" in kept["results"][0]["items"]


def test_user_query_uses_the_stored_history(client):
    by_user = post(client, '{"query": {"user_id": "7"}, "k": 5}').json()["results"][0]
    by_history = post(client, '{"query": {"history": ["m1", "m5"]}, "k": 5}').json()["results"][0]
    assert by_user["items"] == by_history["items"] and by_user["history_length"] == 2
    assert post(client, '{"query": {"user_id": 8}, "k": 5}').status_code == 200     # integer id


def test_only_unknown_ids_give_the_popularity_ranking(client):
    result = post(client, '{"query": {"history": ["x", "y"]}, "k": 3}').json()["results"][0]
    assert result["items"] == ["m1", "m2", "m3"] and result["cold_start"] and result["dropped"] == ["x", "y"]


def test_a_batch_of_history_queries(client):
    body = post(client, '{"queries": [{"history": ["m2"]}, {"user_id": "8"}], "k": 2}').json()
    assert len(body["results"]) == 2


#: Every 422 of the history endpoint: (body, error code). test_history_fast_path.py reuses it.
INVALID_HISTORY_REQUESTS = [
    ('{"query": {"history": []}}', "invalid_history"),
    ('{"query": {"history": "m1"}}', "invalid_history"),
    ('{"query": {"history": [1.5]}}', "invalid_request"),
    ('{"query": {"history": [true]}}', "invalid_request"),
    ('{"query": {"history": [null]}}', "invalid_request"),
    ('{"query": {"history": [["m1"]]}}', "invalid_request"),
    ('{"query": {"history": ' + str([f"m{i % 12 + 1}" for i in range(21)]).replace("'", '"') + '}}',
     "history_too_long"),
    ('{"query": {"history": ["m1"], "user_id": "7"}}', "ambiguous_query"),
    ('{"query": {"histroy": ["m1"]}}', "unknown_query_field"),
    ('{"query": {}}', "invalid_query"),
    ('{"query": {"user_id": "nobody"}}', "unknown_user"),
    ('{"query": {"user_id": 7.0}}', "invalid_query"),
    ('{"query": {"history": ["m1"]}, "k": 0}', "invalid_request"),
    ('{"query": {"history": ["m1"]}, "k": "3"}', "invalid_request"),
    ('{"query": {"history": ["m1"]}, "k": 5000}', "k_out_of_range"),
    ('{"query": {"history": ["m1"]}, "keep_history": "yes"}', "invalid_request"),
    ('{"query": {"history": ["m1"]}, "exclude": ["m2"]}', "not_supported"),
    ('{"query": {"history": ["m1"]}, "exclude_seen": false}', "not_supported"),
    ('{"query": {"history": ["m1"]}, "unknown": 1}', "invalid_request"),
    ('{"query": {"history": ["m1", 2.5]}}', "invalid_request"),
    ('{"query": {"history": ["m1"]}, "queries": [{"user_id": "7"}]}', "invalid_request"),
    ('{"queries": []}', "invalid_request"),
    ('{"queries": [{"history": ["m1"]}, {"user_id": "nobody"}]}', "unknown_user"),
]


@pytest.mark.parametrize("body, code", INVALID_HISTORY_REQUESTS)
def test_every_invalid_history_request_is_a_422(client, body, code):
    error(post(client, body), code)


def test_a_history_sent_to_a_user_bundle_is_a_422(user_client):
    error(post(user_client, '{"query": {"history": ["m1"]}}'), "history_not_supported")
    error(post(user_client, '{"query": {"user_id": "1"}, "keep_history": true}'), "history_not_supported")
    assert post(user_client, '{"query": {"user_id": "1"}, "k": 2}').status_code == 200


def test_a_wrong_history_element_is_named_by_its_position(client):
    err = error(post(client, '{"query": {"history": ["m1", 2.5]}}'), "invalid_request")
    assert [d["field"] for d in err["details"]] == ["query.history.1"]
    assert "a string or an integer" in err["message"]
