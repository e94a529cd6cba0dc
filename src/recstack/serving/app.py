"""The HTTP application: ``create_app(bundle)`` (FastAPI, extra ``recstack[serve]``).

Endpoints (OpenAPI docs at ``/docs``, schema at ``/openapi.json``):

    POST /v1/recommend                 one query or a batch: k, exclude_seen, allow, exclude;
                                       next-item bundles: {"history": [...]} or a user id, keep_history
                                       (:mod:`recstack.serving.history_http`)
    GET  /v1/items/{item_id}/similar   item-to-item (?k=10)
    POST /v1/predict                   ratings from the bundle's rating head
    GET  /healthz                      liveness (the process answers); HEAD too
    GET  /readyz                       readiness (a bundle is loaded), with bundle info; HEAD too
    GET  /metrics                      Prometheus text: requests, latency histogram, errors

Requests are validated strictly (:mod:`recstack.serving.schemas`): nothing is
coerced. Errors are JSON ``{"error": {"code", "message", "details"?}}``: 422 for
invalid requests (malformed JSON, a value of the wrong type, unknown field, k
out of range, too many queries, unknown query field, unknown allow-list item),
404 for unknown items/routes or a missing rating head, 413 for bodies over
``max_body_bytes``, 503 before a bundle is loaded, 500 with a request id and no
traceback (the traceback goes to the log).
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from contextlib import asynccontextmanager
from dataclasses import replace
from typing import Annotated, Any

from fastapi import FastAPI, Path as PathParam, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse
from pydantic import BeforeValidator, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

from ..core.errors import ConfigError, DataError, RecstackError
from ..core.version import __version__
from .batching import RecommendBatcher
from .fast_path import ROUTE, FastRecommend, recommend_content
from .history_http import answer_history_request, check_not_history
from .holder import BundleHolder
from .middleware import GuardMiddleware, ServerMetrics
from .query import Bundle, UnknownFieldError, UnknownItemError
from .schemas import (
    ErrorResponse,
    PredictRequest,
    PredictResponse,
    RecommendRequest,
    RecommendResponse,
    SimilarResponse,
)
from .settings import ApiError, ServerSettings, error_response

__all__ = ["ServingApp", "create_app"]


class ServingApp(FastAPI):
    """FastAPI with :class:`~recstack.serving.fast_path.FastRecommend` in front of it for
    ``POST /v1/recommend`` (everything it does not answer goes through FastAPI as usual)."""

    fast_recommend: FastRecommend | None = None

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        fast = self.fast_recommend
        if fast is not None and scope["type"] == "http" and scope["method"] == "POST" \
                and scope["path"] == ROUTE and not scope.get("root_path") and not self.root_path:
            scope["app"] = self
            await fast(scope, receive, send)
            return
        await super().__call__(scope, receive, send)


def _decimal(value: Any) -> Any:
    """A query-string integer is decimal digits: "5.0" or "5e1" is refused, not truncated."""
    if isinstance(value, str) and not re.fullmatch(r"[0-9]+", value):
        raise ValueError(f"must be a whole number written in digits; got {value!r}")
    return value


PositiveQueryInt = Annotated[int, Field(ge=1), BeforeValidator(_decimal)]
#: Type tags pydantic appends to the location of each failed branch of a union.
_UNION_TAGS = {"str": "a string", "int": "an integer", "float": "a finite number", "bool": "a boolean",
               "list": "a list of item ids"}


def _query_value_errors(errors: list[Any]) -> list[tuple[list[str], Any]]:
    """(location, error) with a query value's list branch (a next-item history) tagged "list";
    where a list's elements are wrong, only those elements are reported (``query.history.0``),
    not the scalar branches the list also failed."""
    out = []
    for err in errors:
        loc = [str(p) for p in err.get("loc", ()) if p not in ("body",)]
        out.append(([("list" if p.startswith("list[") else p) for p in loc], err))
    inner = {tuple(loc[:loc.index("list")]) for loc, _ in out if "list" in loc[:-1]}
    kept = []
    for loc, err in out:
        if "list" in loc[:-1]:
            kept.append(([p for p in loc if p != "list"], err))      # an element: query.history.0.str
        elif not (tuple(loc[:-1]) in inner and loc[-1] in _UNION_TAGS):
            kept.append((loc, err))
    return kept


def _validation_details(exc: RequestValidationError) -> tuple[str, list[dict[str, Any]]]:
    details: list[dict[str, Any]] = []
    unions: dict[str, dict[str, Any]] = {}
    for loc, err in _query_value_errors(list(exc.errors())):
        if len(loc) > 1 and loc[-1] in _UNION_TAGS:     # one message per value, not one per union branch
            where = ".".join(loc[:-1])
            entry = unions.get(where)
            if entry is None:
                entry = unions[where] = {"field": where, "kinds": [], "type": "type_error",
                                         "input": err.get("input")}
                details.append(entry)
            entry["kinds"].append(_UNION_TAGS[loc[-1]])
            continue
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
    for entry in unions.values():
        kinds = entry.pop("kinds")
        allowed = " or ".join([", ".join(kinds[:-1]), kinds[-1]] if len(kinds) > 1 else kinds)
        entry["message"] = f"must be {allowed}; got {entry.pop('input')!r}"
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
    batcher = None
    if settings.batch_window_ms is not None:
        batcher = RecommendBatcher(holder, settings.batch_window_ms / 1000.0, settings.batch_max_queries,
                                   observe=lambda n: metrics.batch_size.observe(n))  # type: ignore[attr-defined]

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> Any:
        holder.start()
        try:
            yield
        finally:
            holder.stop()
            if batcher is not None:
                batcher.close()

    app = ServingApp(title="recstack recommendation server", version=__version__, lifespan=lifespan,
                  description="Top-k recommendations, similar items and ratings from a recstack bundle.",
                  responses={422: {"model": ErrorResponse}, 413: {"model": ErrorResponse},
                             503: {"model": ErrorResponse}, 500: {"model": ErrorResponse}})
    app.state.holder = holder
    app.state.settings = settings
    app.state.metrics = metrics
    app.add_middleware(GuardMiddleware, metrics=metrics, max_body_bytes=settings.max_body_bytes,
                       routes=app.router.routes)
    if settings.fast_path:
        app.fast_recommend = FastRecommend(lambda scope, receive, send: FastAPI.__call__(app, scope, receive, send),
                                           holder, settings, metrics, batcher)

    @app.exception_handler(ApiError)
    async def _api_error(request: Request, exc: ApiError) -> JSONResponse:
        return error_response(exc.status, exc.code, exc.message, exc.details)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        summary, details = _validation_details(exc)
        return error_response(422, "invalid_request", summary, details)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        return error_response(exc.status_code, code, str(exc.detail), headers=getattr(exc, "headers", None))

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
    # CPU otherwise). Their shapes are checked against the models in the tests. Valid
    # recommendation requests are answered before FastAPI (fast_path); this handler answers
    # the rest (with their errors), and all of them with fast_path=False.

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
        if bundle.history is not None:         # a next-item bundle: histories / stored histories
            return JSONResponse(run(lambda: answer_history_request(bundle, body, batch, settings)))
        check_not_history(body, batch)
        recs = run(lambda: bundle.recommend(batch, k=body.k, exclude_seen=body.exclude_seen,
                                            allow=body.allow, exclude=body.exclude))
        metrics.queries.inc("recommend", amount=len(batch))  # type: ignore[attr-defined]
        return JSONResponse(recommend_content(bundle, recs))

    @app.get("/v1/items/{item_id:path}/similar", response_model=SimilarResponse, tags=["recommendations"],
             summary="Items similar to an item (candidate-tower embeddings; the item itself excluded)")
    def similar(item_id: str = PathParam(description="Raw item id (URL-encoded)."),
                k: Annotated[PositiveQueryInt, Query(description="Number of similar items.")] = 10
                ) -> JSONResponse:
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
            return error_response(503, "not_ready", "the bundle is still loading"
                          + (f" (last error: {holder.last_error})" if holder.last_error else "") + ".")
        return JSONResponse({"status": "ready", "bundle": holder.bundle.describe(),
                             "last_reload_error": holder.last_error})

    # HEAD answers like GET without the body (the server drops it), for probes that use HEAD.
    for path, endpoint in (("/healthz", healthz), ("/readyz", readyz)):
        app.add_api_route(path, endpoint, methods=["HEAD"], include_in_schema=False)

    @app.get("/metrics", tags=["operations"], summary="Prometheus metrics", response_class=PlainTextResponse)
    def prometheus() -> PlainTextResponse:
        return PlainTextResponse(metrics.registry.render(), media_type="text/plain; version=0.0.4; charset=utf-8")

    return app
