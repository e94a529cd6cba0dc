"""The HTTP server in-process (FastAPI TestClient): every endpoint and every 4xx case."""

import os
import socket
import subprocess
import sys
import threading
import time
import urllib.request
import warnings

import pytest
import torch

pytest.importorskip("fastapi")
pytest.importorskip("httpx")
pytestmark = pytest.mark.filterwarnings("ignore:Using `httpx` with `starlette.testclient`")

with warnings.catch_warnings():            # starlette >= 1.10 nags about httpx vs httpx2
    warnings.simplefilter("ignore")
    from fastapi.testclient import TestClient  # noqa: E402

from recstack.layers import Embedding  # noqa: E402
from recstack.serving import ServingSpec, export, load_bundle  # noqa: E402
from recstack.serving.schemas import PredictResponse, RecommendResponse, SimilarResponse  # noqa: E402
from recstack.serving.server import create_app  # noqa: E402

from .conftest import TITLES  # noqa: E402


@pytest.fixture(scope="module")
def bundle(bundle_dir):
    return load_bundle(bundle_dir)


@pytest.fixture
def client(bundle):
    with TestClient(create_app(bundle, max_k=50, max_batch=4, max_items=20, max_body_bytes=4096)) as c:
        yield c


def error(response, status, code):
    assert response.status_code == status, response.text
    body = response.json()["error"]
    assert body["code"] == code
    return body["message"]


def test_recommend_one_and_batch(client, bundle):
    r = client.post("/v1/recommend", json={"query": {"user_id": "u3"}, "k": 5})
    assert r.status_code == 200
    body = r.json()
    RecommendResponse.model_validate(body, strict=True)     # handlers skip response validation
    expected = bundle.recommend({"user_id": "u3"}, k=5)
    assert body["results"] == [expected.to_dict()]
    assert body["index"] == "brute_force" and body["exact"] is True and body["bundle"] == bundle.digest[:12]
    r = client.post("/v1/recommend", json={"queries": [{"user_id": "u3"}, {"user_id": "u58"}], "k": 3,
                                           "exclude_seen": False, "allow": TITLES[:10], "exclude": [TITLES[0]]})
    results = r.json()["results"]
    expected = bundle.recommend([{"user_id": "u3"}, {"user_id": "u58"}], k=3, exclude_seen=False,
                                allow=TITLES[:10], exclude=[TITLES[0]])
    assert results == [e.to_dict() for e in expected]
    assert results[1]["cold_start"] is True and results[1]["oov_fields"] == ["user_id"]


@pytest.mark.parametrize("body, code, fragment", [
    ({"query": {"user_id": "u1"}, "exlude_seen": True}, "invalid_request", "unknown field 'exlude_seen'"),
    ({"query": {"usr": "u1"}}, "unknown_query_field", "unknown field(s) ['usr']"),
    ({"query": {}}, "unknown_query_field", "lacks field(s) ['user_id']"),
    ({"query": {"user_id": "u1"}, "k": 0}, "invalid_request", "greater than or equal to 1"),
    ({"query": {"user_id": "u1"}, "k": 51}, "k_out_of_range", "max_k=50"),
    ({"query": {"user_id": "u1"}, "k": "ten"}, "invalid_request", "k:"),
    ({"queries": [{"user_id": "u1"}] * 5}, "too_many_queries", "limit is 4"),
    ({"queries": []}, "invalid_request", "empty"),
    ({}, "invalid_request", "exactly one of"),
    ({"query": {"user_id": "u1"}, "queries": [{"user_id": "u1"}]}, "invalid_request", "exactly one of"),
    ({"query": {"user_id": ["u1"]}}, "invalid_request", "query.user_id"),
    ({"query": {"user_id": "u1"}, "allow": ["Not a movie"]}, "unknown_item", "Not a movie"),
    ({"query": {"user_id": "u1"}, "allow": TITLES[:21]}, "list_too_long", "limit is 20"),
    ({"query": {"user_id": "u1"}, "exclude_seen": "maybe"}, "invalid_request", "exclude_seen"),
])
def test_recommend_4xx(client, body, code, fragment):
    message = error(client.post("/v1/recommend", json=body), 422, code)
    assert fragment in message


def test_malformed_and_oversized_bodies(client):
    message = error(client.post("/v1/recommend", content=b"{nope", headers={"content-type": "application/json"}),
                    422, "invalid_request")
    assert "not valid JSON" in message
    big = b'{"query": {"user_id": "' + b"x" * 5000 + b'"}}'
    assert "4096 bytes" in error(client.post("/v1/recommend", content=big,
                                             headers={"content-type": "application/json"}), 413, "body_too_large")

    def chunks():                        # no Content-Length: counted while reading
        for _ in range(10):
            yield b" " * 1000
    assert error(client.post("/v1/recommend", content=chunks(), headers={"content-type": "application/json"}),
                 413, "body_too_large")


def test_similar(client, bundle):
    r = client.get("/v1/items/Face%2FOff%20(1997)/similar", params={"k": 4})
    assert r.status_code == 200
    body = r.json()
    SimilarResponse.model_validate(body, strict=True)
    assert body["item"] == "Face/Off (1997)" and body["result"] == bundle.similar("Face/Off (1997)", k=4).to_dict()
    error(client.get("/v1/items/Nothing/similar"), 404, "unknown_item")
    error(client.get("/v1/items/Face%2FOff%20(1997)/similar", params={"k": 0}), 422, "invalid_request")
    error(client.get("/v1/items/Face%2FOff%20(1997)/similar", params={"k": 500}), 422, "k_out_of_range")


def test_predict(client, tmp_path, features, movies):
    error(client.post("/v1/predict", json={"query": {"user_id": "u1"}, "items": [TITLES[0]]}), 404, "not_available")
    from recstack.layers import MLP
    torch.manual_seed(0)
    spec = ServingSpec(Embedding(features["user_id"].vocabulary_size(), 4), "user_id",
                       Embedding(features["movie_title"].vocabulary_size(), 4), "movie_title",
                       rating_head=MLP(8, [4, 1]), kind="ranking")
    ranking = load_bundle(export(spec, tmp_path / "r", candidates=movies, features=features))
    with TestClient(create_app(ranking, max_items=3)) as c:
        r = c.post("/v1/predict", json={"query": {"user_id": "u57"}, "items": TITLES[:2]})
        assert r.status_code == 200
        body = r.json()
        PredictResponse.model_validate(body, strict=True)
        assert body["ratings"] == ranking.predict_rating({"user_id": "u57"}, TITLES[:2])
        assert body["cold_start"] is True and body["items"] == TITLES[:2]
        error(c.post("/v1/predict", json={"query": {"user_id": "u1"}, "items": ["nope"]}), 422, "unknown_item")
        error(c.post("/v1/predict", json={"query": {"user_id": "u1"}, "items": []}), 422, "invalid_request")
        error(c.post("/v1/predict", json={"query": {"user_id": "u1"}, "items": TITLES[:4]}), 422, "list_too_long")
        error(c.post("/v1/predict", json={"query": {"bad": "u1"}, "items": TITLES[:1]}), 422, "unknown_query_field")
        error(c.post("/v1/predict", json={"items": TITLES[:1]}), 422, "invalid_request")


def test_operations_endpoints(client, bundle):
    assert client.get("/healthz").json() == {"status": "ok"}
    ready = client.get("/readyz").json()
    assert ready["status"] == "ready" and ready["bundle"]["digest"] == bundle.digest
    error(client.get("/v1/nothing"), 404, "not_found")
    error(client.get("/v1/recommend"), 405, "method_not_allowed")
    client.post("/v1/recommend", json={"query": {"user_id": "u1"}, "k": 2})
    client.post("/v1/recommend", json={"query": {"user_id": "u1"}, "k": 0})
    text = client.get("/metrics").text
    assert 'recstack_http_requests_total{route="/v1/recommend",method="POST",status="200"} 1' in text
    assert 'recstack_http_requests_total{route="/v1/recommend",method="POST",status="422"} 1' in text
    # the 405 (GET) and the 422 both count as client errors of the route
    assert 'recstack_http_errors_total{route="/v1/recommend",class="client"} 2' in text
    assert 'recstack_http_request_duration_seconds_bucket{route="/v1/recommend",le="+Inf"} 3' in text
    assert 'recstack_http_request_duration_seconds_count{route="/v1/recommend"} 3' in text
    assert "recstack_bundle_info{" in text and 'recstack_queries_total{endpoint="recommend"} 1' in text
    schema = client.get("/openapi.json").json()
    assert {"/v1/recommend", "/v1/items/{item_id}/similar", "/v1/predict", "/healthz"} <= set(schema["paths"])
    assert client.get("/docs").status_code == 200


def test_500_never_leaks_a_traceback(bundle, monkeypatch):
    app = create_app(bundle)
    def boom(*args, **kwargs):
        raise RuntimeError("secret detail /home/x/model.py line 3")
    monkeypatch.setattr(bundle, "recommend", boom)
    with TestClient(app, raise_server_exceptions=False) as c:
        r = c.post("/v1/recommend", json={"query": {"user_id": "u1"}})
        assert r.status_code == 500
        assert r.json()["error"]["code"] == "internal_error"
        assert "secret" not in r.text and "Traceback" not in r.text
        assert 'class="server"} 1' in c.get("/metrics").text


def _retrained(model, scale):
    import copy
    other = copy.deepcopy(model)
    with torch.no_grad():
        for p in other.query_tower.parameters():
            p.mul_(scale).add_(0.3)
    return other


def test_hot_reload_swaps_bundles_without_failing_requests(tmp_path, model, features, movies):
    path = export(model, tmp_path / "live", candidates=movies, features=features)
    app = create_app(path, reload_interval=0.05)
    with TestClient(app) as c:
        deadline = time.monotonic() + 30
        while c.get("/readyz").status_code != 200 and time.monotonic() < deadline:   # background load
            time.sleep(0.02)
        first = c.get("/readyz").json()["bundle"]["digest"]
        statuses, stop = [], threading.Event()

        def hammer():
            while not stop.is_set():
                statuses.append(c.post("/v1/recommend", json={"query": {"user_id": "u2"}, "k": 5}).status_code)
        worker = threading.Thread(target=hammer)
        worker.start()
        new_model = _retrained(model, -1.0)
        export(new_model, path, candidates=movies, features=features, overwrite=True)
        while c.get("/readyz").json()["bundle"]["digest"] == first and time.monotonic() < deadline:
            time.sleep(0.02)
        time.sleep(0.1)
        stop.set()
        worker.join()
        assert c.get("/readyz").json()["bundle"]["digest"] != first
        assert statuses and set(statuses) == {200}
        fresh = load_bundle(path)
        r = c.post("/v1/recommend", json={"query": {"user_id": "u2"}, "k": 5}).json()
        assert r["results"][0] == fresh.recommend({"user_id": "u2"}, k=5).to_dict()
        # A broken replacement is not swapped in.
        holder = app.state.holder
        (path / "candidates" / "embeddings.npy").write_bytes(b"broken")
        os.utime(path / "manifest.json")
        assert holder.reload() is False and "ChecksumError" in holder.last_error
        assert c.post("/v1/recommend", json={"query": {"user_id": "u2"}, "k": 5}).status_code == 200


def test_not_ready_answers_503(tmp_path):
    app = create_app(tmp_path / "missing")
    with TestClient(app) as c:
        assert c.get("/healthz").status_code == 200
        error(c.get("/readyz"), 503, "not_ready")
        error(c.post("/v1/recommend", json={"query": {"user_id": "u1"}}), 503, "not_ready")


def test_run_server_binds_loopback(bundle_dir):
    pytest.importorskip("uvicorn")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    code = (f"from recstack.serving.server import run_server; "
            f"run_server({str(bundle_dir)!r}, port={port}, log_level='warning')")
    proc = subprocess.Popen([sys.executable, "-c", code])
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=2) as resp:
                    assert resp.status == 200
                    break
            except OSError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise
                time.sleep(0.2)
        request = urllib.request.Request(f"http://127.0.0.1:{port}/v1/recommend", method="POST",
                                         data=b'{"query": {"user_id": "u1"}, "k": 3}',
                                         headers={"content-type": "application/json"})
        with urllib.request.urlopen(request, timeout=5) as resp:
            assert len(__import__("json").loads(resp.read())["results"][0]["items"]) == 3
    finally:
        proc.terminate()
        proc.wait(timeout=20)
