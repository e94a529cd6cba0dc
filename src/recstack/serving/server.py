"""HTTP recommendation server on FastAPI + uvicorn (extra ``recstack[serve]``).

Endpoints (OpenAPI docs at ``/docs``, schema at ``/openapi.json``):

    POST /v1/recommend                 one query or a batch: k, exclude_seen, allow, exclude
    GET  /v1/items/{item_id}/similar   item-to-item (?k=10)
    POST /v1/predict                   ratings from the bundle's rating head
    GET  /healthz                      liveness (the process answers)
    GET  /readyz                       readiness (a bundle is loaded), with bundle info
    GET  /metrics                      Prometheus text: requests, latency histogram, errors

Errors are JSON ``{"error": {"code", "message", "details"?}}``: 422 for invalid
requests (unknown field, k out of range, too many queries, unknown query
field, unknown allow-list item), 404 for unknown items/routes or a missing
rating head, 413 for bodies over ``max_body_bytes``, 503 before a bundle is
loaded, 500 with a request id and no traceback (the traceback goes to the log).

Hot reload: with ``reload_interval`` set, a background thread watches the
bundle's manifest.json; when ``export(..., overwrite=True)`` replaces the
bundle, the new one is loaded and verified beside the old one and swapped in
with one reference assignment. Requests already running finish on the old
bundle, new ones use the new bundle, none is dropped. A bundle that fails
verification is not swapped in (the error is logged and counted).

Run it with :func:`run_server` (the ``recstack serve`` command); it binds
127.0.0.1 unless told otherwise.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
import uuid
from collections.abc import Awaitable, Callable, MutableMapping
from contextlib import asynccontextmanager
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Path as PathParam, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from ..core.errors import ConfigError, DataError, RecstackError
from .bundle import load_bundle
from .query import Bundle, UnknownFieldError, UnknownItemError
from .prometheus import Counter, Gauge, Histogram, Registry
from .schemas import (
    ErrorResponse,
    PredictRequest,
    PredictResponse,
    RecommendRequest,
    RecommendResponse,
    SimilarResponse,
)

log = logging.getLogger("recstack.serving")

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]


@dataclass(frozen=True)
class ServerSettings:
    """Request limits and bundle handling.

    Args:
        max_k: largest k a request may ask for.
        max_batch: most queries in one /v1/recommend request.
        max_items: longest allow / exclude / predict item list.
        max_body_bytes: larger request bodies get 413.
        reload_interval: seconds between checks for a new bundle (None: no hot reload).
        verify: re-hash bundle files on (re)load.
        index: None (the bundle's index) or "brute_force" (exact search over the bundle's embeddings).
    """

    max_k: int = 1000
    max_batch: int = 256
    max_items: int = 10_000
    max_body_bytes: int = 1 << 20
    reload_interval: float | None = None
    verify: bool = True
    index: str | None = None


class ApiError(Exception):
    """An error answered as JSON with a status code."""

    def __init__(self, status: int, code: str, message: str, details: list[dict[str, Any]] | None = None):
        super().__init__(message)
        self.status, self.code, self.message, self.details = status, code, message, details


def _error(status: int, code: str, message: str, details: list[dict[str, Any]] | None = None,
           headers: dict[str, str] | None = None) -> JSONResponse:
    body: dict[str, Any] = {"code": code, "message": message}
    if details:
        body["details"] = details
    return JSONResponse({"error": body}, status_code=status, headers=headers)


# ---------------------------------------------------------------------------------------------
# Bundle holder: the current bundle, (re)loading and hot reload
# ---------------------------------------------------------------------------------------------
class BundleHolder:
    """Holds the live :class:`Bundle`; swaps in a new one atomically on reload."""

    def __init__(self, source: Bundle | str | os.PathLike, settings: ServerSettings, metrics: "ServerMetrics"):
        self.settings = settings
        self.metrics = metrics
        self._bundle: Bundle | None = source if isinstance(source, Bundle) else None
        self.directory = Path(source.directory if isinstance(source, Bundle) else source)
        self._signature = self._stat() if self._bundle is not None else None
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.last_error: str | None = None
        if self._bundle is not None:
            metrics.bundle_loaded(self._bundle)

    @property
    def ready(self) -> bool:
        return self._bundle is not None

    @property
    def bundle(self) -> Bundle:
        bundle = self._bundle
        if bundle is None:
            raise ApiError(503, "not_ready", "no bundle is loaded yet; retry shortly (see /readyz).")
        return bundle

    def _stat(self) -> tuple[int, int, int] | None:
        try:
            st = (self.directory / "manifest.json").stat()
        except FileNotFoundError:
            return None
        return (st.st_mtime_ns, st.st_size, st.st_ino)

    def reload(self, force: bool = False) -> bool:
        """Load the bundle directory again if it changed (or ``force``); True when swapped."""
        with self._lock:
            signature = self._stat()
            if signature is None:
                return False                      # mid-replacement or gone: keep serving
            if not force and signature == self._signature:
                return False
            try:
                fresh = load_bundle(self.directory, verify=self.settings.verify, index=self.settings.index)
            except Exception as exc:              # keep the old bundle on any failure
                self.last_error = f"{type(exc).__name__}: {exc}"
                self.metrics.reloads.inc("error")
                log.error("bundle reload from %s failed, keeping the current bundle: %s", self.directory,
                          self.last_error)
                self._signature = signature       # do not retry the same broken files every tick
                return False
            self._signature = signature
            if self._bundle is not None and fresh.digest == self._bundle.digest:
                return False
            self._bundle = fresh                  # one reference assignment: atomic for readers
            self.last_error = None
            self.metrics.reloads.inc("ok")
            self.metrics.bundle_loaded(fresh)
            log.info("serving bundle %s (%s, %d items)", fresh.digest[:12], fresh.index.kind, fresh.num_candidates)
            return True

    def start(self) -> None:
        if self._bundle is None:
            threading.Thread(target=self.reload, kwargs={"force": True}, name="recstack-bundle-load",
                             daemon=True).start()
        interval = self.settings.reload_interval
        if interval and self._thread is None:
            self._stop.clear()
            self._thread = threading.Thread(target=self._poll, args=(float(interval),),
                                            name="recstack-bundle-reload", daemon=True)
            self._thread.start()

    def _poll(self, interval: float) -> None:
        while not self._stop.wait(interval):
            try:
                self.reload()
            except Exception:                     # never let the poller die
                log.exception("bundle reload check failed")

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None


# ---------------------------------------------------------------------------------------------
# Metrics and the outermost middleware (body limit, timing, error shielding)
# ---------------------------------------------------------------------------------------------
class ServerMetrics:
    def __init__(self) -> None:
        self.registry = Registry()
        r = self.registry
        self.requests = r.add(Counter("recstack_http_requests_total", "HTTP requests by route, method and status.",
                                      ("route", "method", "status")))
        self.latency = r.add(Histogram("recstack_http_request_duration_seconds",
                                       "Request latency in seconds (whole request, server side).", ("route",)))
        self.errors = r.add(Counter("recstack_http_errors_total",
                                    "Error responses by route and class (client = 4xx, server = 5xx).",
                                    ("route", "class")))
        self.in_flight = r.add(Gauge("recstack_http_requests_in_flight", "Requests being processed."))
        self.queries = r.add(Counter("recstack_queries_total", "Queries answered, by endpoint.", ("endpoint",)))
        self.reloads = r.add(Counter("recstack_bundle_reloads_total", "Bundle reloads by result.", ("result",)))
        self.info = r.add(Gauge("recstack_bundle_info", "The bundle being served (value 1).",
                                ("digest", "index", "model_kind")))
        self.candidates = r.add(Gauge("recstack_bundle_candidates", "Candidates in the served bundle."))

    def bundle_loaded(self, bundle: Bundle) -> None:
        with self.info._lock:   # type: ignore[attr-defined]
            self.info._values.clear()   # type: ignore[attr-defined]
        self.info.set(1, bundle.digest[:12], bundle.index.kind, bundle.manifest["model_kind"])  # type: ignore[attr-defined]
        self.candidates.set(bundle.num_candidates)  # type: ignore[attr-defined]


class GuardMiddleware:
    """Pure ASGI: body-size limit, latency/status metrics, and no traceback ever leaves."""

    def __init__(self, app: Any, metrics: ServerMetrics, max_body_bytes: int, routes: list[Any] | None = None):
        self.app = app
        self.metrics = metrics
        self.max_body = int(max_body_bytes)
        self.routes = routes if routes is not None else []

    def _route_label(self, scope: Scope) -> str:
        """The matched route's template (bounded label set); requests answered before routing
        (413) are matched here."""
        route = scope.get("route")
        if route is not None and getattr(route, "path", None):
            return str(route.path)
        from starlette.routing import Match
        for candidate in self.routes:
            try:
                if candidate.matches(scope)[0] == Match.FULL:
                    return str(candidate.path)
            except Exception:
                continue
        return "unmatched"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = {"code": 500, "started": False}

        async def send_wrapper(message: Message) -> None:
            if message["type"] == "http.response.start":
                status["code"] = int(message["status"])
                status["started"] = True
            await send(message)

        self.metrics.in_flight.inc()  # type: ignore[attr-defined]
        try:
            body_receive = await self._limited_body(scope, receive, send_wrapper)
            if body_receive is not None:
                await self.app(scope, body_receive, send_wrapper)
        except Exception:
            request_id = uuid.uuid4().hex[:16]
            log.exception("unhandled error in %s %s (request %s)", scope.get("method"), scope.get("path"), request_id)
            if not status["started"]:
                response = _error(500, "internal_error", f"internal server error (request id {request_id}).")
                await response(scope, receive, send_wrapper)
        finally:
            self.metrics.in_flight.dec()  # type: ignore[attr-defined]
            label = self._route_label(scope)
            code = status["code"]
            self.metrics.requests.inc(label, scope.get("method", ""), str(code))  # type: ignore[attr-defined]
            self.metrics.latency.observe(time.perf_counter() - start, label)  # type: ignore[attr-defined]
            if code >= 400:
                self.metrics.errors.inc(label, "server" if code >= 500 else "client")  # type: ignore[attr-defined]

    async def _limited_body(self, scope: Scope, receive: Receive, send: Send) -> Receive | None:
        """Read the body up to the limit (413 beyond it) and replay it to the app."""
        if scope.get("method") not in ("POST", "PUT", "PATCH"):
            return receive
        too_big = _error(413, "body_too_large", f"request body exceeds {self.max_body} bytes; send fewer queries "
                                                "or items per request.")
        for name, value in scope.get("headers", []):
            if name == b"content-length":
                try:
                    if int(value) > self.max_body:
                        await too_big(scope, receive, send)
                        return None
                except ValueError:
                    await _error(400, "bad_request", "invalid Content-Length header.")(scope, receive, send)
                    return None
        chunks: list[bytes] = []
        size = 0
        more = True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                return None
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_body:
                await too_big(scope, receive, send)
                return None
            chunks.append(chunk)
            more = message.get("more_body", False)
        body = b"".join(chunks)
        sent = False

        async def replay() -> Message:
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()
        return replay


# ---------------------------------------------------------------------------------------------
# The application
# ---------------------------------------------------------------------------------------------
def _validation_details(exc: RequestValidationError) -> tuple[str, list[dict[str, Any]]]:
    details = []
    for err in exc.errors():
        loc = [str(p) for p in err.get("loc", ()) if p not in ("body",)]
        kind = err.get("type", "")
        where = "body" if kind == "json_invalid" else (".".join(loc) or "body")
        if kind == "extra_forbidden":
            message = f"unknown field {loc[-1]!r}" if loc else "unknown field"
        elif kind == "json_invalid":
            message = f"body is not valid JSON: {err.get('ctx', {}).get('error', err.get('msg'))}"
        elif kind == "missing":
            message = f"missing required field {where!r}"
        else:
            message = str(err.get("msg", "invalid value")).removeprefix("Value error, ")
        details.append({"field": where, "message": message, "type": kind})
    summary = "; ".join(f"{d['field']}: {d['message']}" for d in details[:5]) or "invalid request"
    return summary, details


def create_app(bundle_or_dir: Bundle | str | os.PathLike, settings: ServerSettings | None = None,
               **overrides: Any) -> FastAPI:
    """The FastAPI app serving a :class:`Bundle` (or the bundle directory, loaded in the background).

    Args:
        bundle_or_dir: a loaded Bundle, or a bundle directory (loaded at startup; /readyz is 503
            until then).
        settings: limits and reload behaviour; keyword ``overrides`` replace single fields
            (e.g. ``create_app(path, max_k=100, reload_interval=5)``).
    """
    settings = replace(settings or ServerSettings(), **overrides)
    metrics = ServerMetrics()
    holder = BundleHolder(bundle_or_dir, settings, metrics)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> Any:
        holder.start()
        try:
            yield
        finally:
            holder.stop()

    from ..core.version import __version__
    app = FastAPI(title="recstack recommendation server", version=__version__, lifespan=lifespan,
                  description="Top-k recommendations, similar items and ratings from a recstack bundle.",
                  responses={422: {"model": ErrorResponse}, 413: {"model": ErrorResponse},
                             503: {"model": ErrorResponse}, 500: {"model": ErrorResponse}})
    app.state.holder = holder
    app.state.settings = settings
    app.state.metrics = metrics
    app.add_middleware(GuardMiddleware, metrics=metrics, max_body_bytes=settings.max_body_bytes,
                       routes=app.router.routes)

    @app.exception_handler(ApiError)
    async def _api_error(request: Request, exc: ApiError) -> JSONResponse:
        return _error(exc.status, exc.code, exc.message, exc.details)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        summary, details = _validation_details(exc)
        return _error(422, "invalid_request", summary, details)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        return _error(exc.status_code, code, str(exc.detail), headers=getattr(exc, "headers", None))

    def check_k(k: int) -> None:
        if k > settings.max_k:
            raise ApiError(422, "k_out_of_range", f"k={k} is above this server's max_k={settings.max_k}.",
                           [{"field": "k", "message": f"must be between 1 and {settings.max_k}"}])

    def check_list(name: str, values: list[Any] | None) -> None:
        if values is not None and len(values) > settings.max_items:
            raise ApiError(422, "list_too_long", f"{name} has {len(values)} entries; the limit is "
                                                 f"{settings.max_items}.", [{"field": name, "message": "too long"}])

    def run(call: Callable[[], Any], unknown_item_status: int = 422) -> Any:
        try:
            return call()
        except UnknownFieldError as exc:
            raise ApiError(422, "unknown_query_field", str(exc)) from None
        except UnknownItemError as exc:
            raise ApiError(unknown_item_status, "unknown_item", str(exc)) from None
        except DataError as exc:
            raise ApiError(422, "invalid_query", str(exc)) from None
        except ConfigError as exc:
            raise ApiError(404, "not_available", str(exc)) from None
        except RecstackError as exc:
            raise ApiError(422, "invalid_request", str(exc)) from None

    def result(rec: Any) -> dict[str, Any]:
        return {"items": rec.items, "scores": rec.scores, "cold_start": rec.cold_start, "oov_fields": rec.oov_fields}

    # Handlers return JSONResponse built from plain dicts: the response models document the
    # API (OpenAPI) without re-validating every response (about a third of the per-request
    # CPU otherwise). Their shapes are checked against the models in the tests.

    @app.post("/v1/recommend", response_model=RecommendResponse, tags=["recommendations"],
              summary="Top-k items for one query or a batch of queries")
    def recommend(body: RecommendRequest) -> JSONResponse:
        batch = body.batch()
        if len(batch) > settings.max_batch:
            raise ApiError(422, "too_many_queries", f"{len(batch)} queries in one request; the limit is "
                                                    f"{settings.max_batch}.",
                           [{"field": "queries", "message": f"at most {settings.max_batch} queries"}])
        check_k(body.k)
        check_list("allow", body.allow)
        check_list("exclude", body.exclude)
        bundle = holder.bundle                 # one snapshot for the whole request
        recs = run(lambda: bundle.recommend(batch, k=body.k, exclude_seen=body.exclude_seen,
                                            allow=body.allow, exclude=body.exclude))
        metrics.queries.inc("recommend", amount=len(batch))  # type: ignore[attr-defined]
        return JSONResponse({"results": [result(r) for r in recs], "index": bundle.index.kind,
                             "exact": bundle.index.is_exact, "bundle": bundle.digest[:12]})

    @app.get("/v1/items/{item_id:path}/similar", response_model=SimilarResponse, tags=["recommendations"],
             summary="Items similar to an item (candidate-tower embeddings; the item itself excluded)")
    def similar(item_id: str = PathParam(description="Raw item id (URL-encoded)."),
                k: int = Query(10, ge=1, description="Number of similar items.")) -> JSONResponse:
        check_k(k)
        bundle = holder.bundle
        rec = run(lambda: bundle.similar(item_id, k=k), unknown_item_status=404)
        metrics.queries.inc("similar")  # type: ignore[attr-defined]
        return JSONResponse({"item": item_id, "result": result(rec), "index": bundle.index.kind,
                             "exact": bundle.index.is_exact, "bundle": bundle.digest[:12]})

    @app.post("/v1/predict", response_model=PredictResponse, tags=["ratings"],
              summary="Predicted ratings of items for a query (bundles with a rating head)")
    def predict(body: PredictRequest) -> JSONResponse:
        check_list("items", body.items)
        bundle = holder.bundle
        if not bundle.has_rating_head:
            raise ApiError(404, "not_available", f"this bundle ({bundle.manifest['model_kind']}) has no rating "
                                                 "head; /v1/predict needs a ranking or multi-task model.")
        ratings, oov = run(lambda: bundle.rate(body.query, body.items))
        metrics.queries.inc("predict", amount=len(body.items))  # type: ignore[attr-defined]
        return JSONResponse({"items": list(body.items), "ratings": ratings, "cold_start": bool(oov[0]),
                             "oov_fields": oov[0], "bundle": bundle.digest[:12]})

    @app.get("/healthz", tags=["operations"], summary="Liveness")
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz", tags=["operations"], summary="Readiness: 200 once a bundle is loaded")
    def readyz() -> JSONResponse:
        if not holder.ready:
            return _error(503, "not_ready", "the bundle is still loading"
                          + (f" (last error: {holder.last_error})" if holder.last_error else "") + ".")
        return JSONResponse({"status": "ready", "bundle": holder.bundle.describe(),
                             "last_reload_error": holder.last_error})

    @app.get("/metrics", tags=["operations"], summary="Prometheus metrics", response_class=PlainTextResponse)
    def prometheus() -> PlainTextResponse:
        return PlainTextResponse(metrics.registry.render(), media_type="text/plain; version=0.0.4; charset=utf-8")

    return app


# ---------------------------------------------------------------------------------------------
# Running
# ---------------------------------------------------------------------------------------------
_ENV_DIR = "RECSTACK_SERVE_BUNDLE"
_ENV_SETTINGS = "RECSTACK_SERVE_SETTINGS"


def _set_threads(threads: int) -> None:
    """Intra-op threads per worker. Concurrency comes from the request thread pool, so one
    thread per search avoids oversubscribing cores."""
    import torch
    torch.set_num_threads(threads)
    try:
        import faiss
        faiss.omp_set_num_threads(threads)
    except ImportError:
        pass


def app_from_env() -> FastAPI:
    """Factory for uvicorn workers (``--workers N``): bundle dir and settings from the environment."""
    settings = ServerSettings(**json.loads(os.environ.get(_ENV_SETTINGS, "{}")))
    _set_threads(int(os.environ.get("RECSTACK_SERVE_THREADS", "1")))
    return create_app(load_bundle(os.environ[_ENV_DIR], verify=settings.verify, index=settings.index),
                      settings)


def run_server(bundle_dir: str | os.PathLike, host: str = "127.0.0.1", port: int = 8000, workers: int = 1,
               settings: ServerSettings | None = None, threads: int = 1, log_level: str = "info",
               limit_concurrency: int | None = None, **overrides: Any) -> None:
    """Serve ``bundle_dir`` over HTTP with uvicorn (blocks until stopped).

    Args:
        bundle_dir: a bundle written by :func:`recstack.serving.export`.
        host: bind address; 127.0.0.1 by default (use 0.0.0.0 deliberately, behind a proxy).
        port: TCP port.
        workers: uvicorn worker processes (each loads the bundle; memory x workers).
        settings / overrides: :class:`ServerSettings` (limits, reload_interval, verify, index).
        threads: torch/FAISS intra-op threads per worker.
        limit_concurrency: uvicorn answers 503 above this many concurrent connections.
    """
    try:
        import uvicorn
    except ImportError:
        raise ImportError("the server needs the serve extra: pip install 'recstack[serve]'") from None
    settings = replace(settings or ServerSettings(), **overrides)
    bundle_dir = Path(bundle_dir).resolve()
    manifest = bundle_dir / "manifest.json"
    if not manifest.exists():
        raise FileNotFoundError(f"{bundle_dir} is not a recstack bundle (no manifest.json).")
    if host not in ("127.0.0.1", "localhost", "::1"):
        log.warning("binding %s: the server has no authentication; expose it only behind a trusted proxy.", host)
    common = {"host": host, "port": int(port), "log_level": log_level, "limit_concurrency": limit_concurrency,
              "timeout_graceful_shutdown": 10}
    if workers <= 1:
        _set_threads(threads)
        app = create_app(load_bundle(bundle_dir, verify=settings.verify, index=settings.index), settings)
        uvicorn.run(app, **common)
        return
    os.environ[_ENV_DIR] = str(bundle_dir)
    os.environ[_ENV_SETTINGS] = json.dumps(asdict(settings))
    os.environ["RECSTACK_SERVE_THREADS"] = str(threads)
    uvicorn.run("recstack.serving.server:app_from_env", factory=True, workers=int(workers), **common)
