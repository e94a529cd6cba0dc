"""The request path of ``POST /v1/recommend``: one JSON parse, no framework work, pre-serialised bytes.

Through FastAPI a recommendation request costs about 1 ms of CPU before the
bundle sees it: the guard middleware parses the body to check it is strict JSON,
FastAPI parses it again and validates it with pydantic, the handler runs in a
worker thread, a dependency solver, telemetry hooks and three middleware layers
run around it. For a 1,682-item catalogue that is five times the search itself.

:class:`FastRecommend` answers the requests that are valid, and only those, by
itself, in front of the framework:

1. reads the body (up to ``max_body_bytes``) and parses it once with
   :func:`parse_recommend`, which accepts exactly the requests the strict
   :class:`~recstack.serving.schemas.RecommendRequest` accepts within the server's
   limits, and declines anything else, or anything it is unsure of (``\\u``
   escapes, integers beyond int64, another content type);
2. calls ``bundle.recommend`` (on the event loop for small catalogues, where a
   thread hand-off costs more than the search; in the thread pool or through the
   :class:`~recstack.serving.batching.RecommendBatcher` otherwise);
3. sends the JSON that the FastAPI handler would send, byte for byte
   (:func:`recommend_content` is shared by both, and encoded like Starlette's
   ``JSONResponse``), and records the same metrics.

Next-item bundles (a "history" section) take the same route with
:func:`parse_history_recommend`: ``{"history": [ids]}`` or stored-user queries,
``k`` and ``keep_history``, checked by the rules of
:func:`~recstack.serving.history_http.parse_history_query` (the FastAPI handler's),
answered by :func:`~recstack.serving.history.recommend_history` and
:func:`~recstack.serving.history_http.history_content`.

Whatever it declines, or whatever fails in the bundle, goes on to the FastAPI
app with the body replayed, so every error answer (422 with its details, 413,
499, 503, 500 with a request id) comes from the one place that defines it.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass
from typing import Any

import anyio.to_thread

from .batching import RecommendBatcher
from .history import HistoryRecommendation, recommend_history
from .history_http import history_content, parse_history_query
from .holder import BundleHolder
from .middleware import ServerMetrics
from .query import Bundle, Recommendation
from .settings import ApiError, ServerSettings

__all__ = ["FastRecommend", "HistoryCall", "RecommendCall", "parse_history_recommend", "parse_recommend",
           "recommend_content"]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

ROUTE = "/v1/recommend"
_FIELDS = frozenset({"query", "queries", "k", "exclude_seen", "allow", "exclude"})   # keep_history: FastAPI
#: A next-item request's fields (allow / exclude / exclude_seen are 422s: the FastAPI path says so).
_HISTORY_FIELDS = frozenset({"query", "queries", "k", "keep_history"})
_INT64 = (-(2 ** 63), 2 ** 63 - 1)
#: Encodes like starlette.responses.JSONResponse.render.
_ENCODER = json.JSONEncoder(ensure_ascii=False, allow_nan=False, indent=None, separators=(",", ":"))
_HEADERS_TYPE = (b"content-type", b"application/json")


@dataclass(frozen=True)
class RecommendCall:
    """A valid recommendation request: the arguments of ``Bundle.recommend``."""

    queries: list[dict[str, Any]]
    k: int = 10
    exclude_seen: bool = True
    allow: list[Any] | None = None
    exclude: list[Any] | None = None


@dataclass(frozen=True)
class HistoryCall:
    """A valid next-item request: per query (history or None, user id or None), k, keep_history."""

    queries: list[tuple[list[Any] | None, Any]]
    k: int = 10
    keep_history: bool = False


def recommend_content(bundle: Bundle, recs: list[Recommendation]) -> dict[str, Any]:
    """The JSON document answering a recommendation request (both request paths build it here)."""
    return {"results": [{"items": r.items, "scores": r.scores, "cold_start": r.cold_start,
                         "oov_fields": r.oov_fields} for r in recs],
            "index": bundle.index.kind, "exact": bundle.index.is_exact, "bundle": bundle.digest[:12]}


def _refuse_constant(name: str) -> float:
    raise ValueError(name)


def _is_int64(v: Any) -> bool:
    return type(v) is int and _INT64[0] <= v <= _INT64[1]


def _value_ok(v: Any) -> bool:
    """str | int64 | finite float: what the strict schema's query values are."""
    t = type(v)
    return t is str or (t is int and _INT64[0] <= v <= _INT64[1]) or (t is float and math.isfinite(v))


def _query_ok(query: Any) -> bool:
    """A dict of str -> str | int64 | finite float."""
    return type(query) is dict and all(_value_ok(v) for v in query.values())


def _item_list(value: Any, limit: int) -> tuple[bool, list[Any] | None]:
    """(ok, list) for an allow / exclude field: absent or null, or a list of str | int64 ids."""
    if value is None:
        return True, None
    if type(value) is not list or len(value) > limit:
        return False, None
    return all(type(v) is str or _is_int64(v) for v in value), value


def _history_query_ok(query: Any) -> bool:
    """A query dict as the strict schema has it for next-item bundles: values as :func:`_query_ok`'s,
    or a list of str | int64 item ids."""
    return type(query) is dict and all(
        all(type(x) is str or _is_int64(x) for x in v) if type(v) is list else _value_ok(v) for v in query.values())


def _decode(body: bytes, fields: frozenset[str]) -> dict[str, Any] | None:
    """The JSON object in ``body`` if it parses strictly and has only ``fields``."""
    if b"\\u" in body:               # escapes can spell lone surrogates or NULs: leave them to pydantic
        return None
    try:
        obj = json.loads(body.decode("utf-8"), parse_constant=_refuse_constant)
    except (ValueError, RecursionError):
        return None
    if type(obj) is not dict or not obj.keys() <= fields:
        return None
    return obj


def _batch(obj: dict[str, Any], settings: ServerSettings, query_ok: Callable[[Any], bool]) -> list[Any] | None:
    """The request's queries: exactly one of ``query`` or a non-empty ``queries`` within max_batch."""
    query, queries = obj.get("query"), obj.get("queries")
    if query is not None:
        return [query] if queries is None and query_ok(query) else None
    if type(queries) is list and 0 < len(queries) <= settings.max_batch and all(query_ok(q) for q in queries):
        return queries
    return None


def _k_ok(k: Any, settings: ServerSettings) -> bool:
    return type(k) is int and 1 <= k <= settings.max_k


def parse_recommend(body: bytes, settings: ServerSettings) -> RecommendCall | None:
    """The request in ``body`` if it is valid for the strict schema and within ``settings``'
    limits; None for anything else (which the FastAPI path then answers with its error)."""
    obj = _decode(body, _FIELDS)
    batch = None if obj is None else _batch(obj, settings, _query_ok)
    if obj is None or batch is None:
        return None
    k = obj.get("k", 10)
    exclude_seen = obj.get("exclude_seen", True)
    if not _k_ok(k, settings) or type(exclude_seen) is not bool:
        return None
    ok_allow, allow = _item_list(obj.get("allow"), settings.max_items)
    ok_exclude, exclude = _item_list(obj.get("exclude"), settings.max_items)
    if not (ok_allow and ok_exclude):
        return None
    return RecommendCall(batch, k, exclude_seen, allow, exclude)


def parse_history_recommend(body: bytes, settings: ServerSettings, bundle: Bundle) -> HistoryCall | None:
    """A next-item request to ``bundle`` if the FastAPI path would answer it with results; None
    for anything else (the FastAPI path then answers it, errors included)."""
    obj = _decode(body, _HISTORY_FIELDS)
    batch = None if obj is None else _batch(obj, settings, _history_query_ok)
    if obj is None or batch is None:
        return None
    k = obj.get("k", 10)
    keep_history = obj.get("keep_history", False)
    if not _k_ok(k, settings) or type(keep_history) is not bool:
        return None
    user_field = bundle.manifest["history"].get("user_field", "user_id")
    try:
        queries = [parse_history_query(r, q, user_field, bundle.history.users, settings)
                   for r, q in enumerate(batch)]
    except ApiError:
        return None
    return HistoryCall(queries, k, keep_history)


def _json_content_type(scope: Scope) -> tuple[bool, int | None]:
    """(content type is application/json, Content-Length or None); (False, None) for a bad length."""
    is_json, length = False, None
    for name, value in scope.get("headers", ()):
        if name == b"content-type":
            is_json = value.split(b";", 1)[0].strip().lower() == b"application/json"
        elif name == b"content-length":
            if not value.isdigit():
                return False, None
            length = int(value)
    return is_json, length


class FastRecommend:
    """ASGI handler of ``POST /v1/recommend`` in front of the FastAPI app (see the module doc).

    Args:
        fallback: the FastAPI application, for every request this does not answer.
        holder: the live bundle.
        settings: request limits, ``inline_max_candidates``.
        metrics: the server's metrics (the same series the FastAPI path records).
        batcher: optional :class:`~recstack.serving.batching.RecommendBatcher` (dynamic batching).
    """

    def __init__(self, fallback: ASGIApp, holder: BundleHolder, settings: ServerSettings, metrics: ServerMetrics,
                 batcher: RecommendBatcher | None = None):
        self.fallback = fallback
        self.holder = holder
        self.settings = settings
        self.metrics = metrics
        self.batcher = batcher
        self.max_body = int(settings.max_body_bytes)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        start = time.perf_counter()
        consumed: list[Message] = []
        call: RecommendCall | HistoryCall | None = None
        bundle = self.holder.current              # one snapshot for the whole request
        is_json, length = _json_content_type(scope)
        if bundle is not None and is_json and (length is None or length <= self.max_body):
            body = await self._read(receive, consumed)
            if body is not None:
                call = (parse_recommend(body, self.settings) if bundle.history is None
                        else parse_history_recommend(body, self.settings, bundle))
        if call is not None:
            self.metrics.in_flight.inc()  # type: ignore[attr-defined]
            try:
                answer = await (self._answer(bundle, call) if isinstance(call, RecommendCall)
                                else self._answer_history(bundle, call))
            finally:
                self.metrics.in_flight.dec()  # type: ignore[attr-defined]
            if answer is not None:
                await send({"type": "http.response.start", "status": 200,
                            "headers": [(b"content-length", str(len(answer)).encode()), _HEADERS_TYPE]})
                await send({"type": "http.response.body", "body": answer})
                m = self.metrics
                m.requests.inc(ROUTE, "POST", "200")  # type: ignore[attr-defined]
                m.latency.observe(time.perf_counter() - start, ROUTE)  # type: ignore[attr-defined]
                m.queries.inc("recommend", amount=len(call.queries))  # type: ignore[attr-defined]
                return
        await self.fallback(scope, _replay(consumed, receive), send)

    async def _read(self, receive: Receive, consumed: list[Message]) -> bytes | None:
        """The whole body, or None (over the limit, or the client left): the messages read so
        far are kept in ``consumed`` for the fallback to see."""
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            consumed.append(message)
            if message["type"] != "http.request":
                return None
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_body:
                return None
            chunks.append(chunk)
            if not message.get("more_body", False):
                return chunks[0] if len(chunks) == 1 else b"".join(chunks)

    async def _answer(self, bundle: Bundle, call: RecommendCall) -> bytes | None:
        """The response body, or None to let the FastAPI path answer (errors, not ready)."""
        try:
            if self.batcher is not None and call.allow is None and call.exclude is None:
                bundle, recs = await self.batcher.submit(call.queries, call.k, call.exclude_seen)
                if recs is None:                  # its batch failed: this request on its own
                    return None
            elif bundle.num_candidates <= self.settings.inline_max_candidates:
                recs = _recommend(bundle, call)
            else:
                recs = await anyio.to_thread.run_sync(_recommend, bundle, call)
        except Exception:                         # the FastAPI path answers (and logs) it
            return None
        return _ENCODER.encode(recommend_content(bundle, recs)).encode("utf-8")

    async def _answer_history(self, bundle: Bundle, call: HistoryCall) -> bytes | None:
        """A next-item request's response body, or None to let the FastAPI path answer."""
        try:
            if self.batcher is not None:
                used, recs = await self.batcher.submit_history(call.queries, call.k, call.keep_history)
                if recs is None or used is not bundle:   # failed, or a reload came between: answer it alone
                    return None
            elif bundle.num_candidates <= self.settings.inline_max_candidates:
                recs = _recommend_history(bundle, call)
            else:
                recs = await anyio.to_thread.run_sync(_recommend_history, bundle, call)
        except Exception:                         # the FastAPI path answers (and logs) it
            return None
        return _ENCODER.encode(history_content(bundle, recs)).encode("utf-8")


def _recommend(bundle: Bundle, call: RecommendCall) -> list[Recommendation]:
    recs = bundle.recommend(call.queries, k=call.k, exclude_seen=call.exclude_seen, allow=call.allow,
                            exclude=call.exclude)
    return recs if isinstance(recs, list) else [recs]


def _recommend_history(bundle: Bundle, call: HistoryCall) -> list[HistoryRecommendation]:
    return recommend_history(bundle, [h for h, _ in call.queries], k=call.k, users=[u for _, u in call.queries],
                             keep_history=call.keep_history)


def _replay(consumed: list[Message], receive: Receive) -> Receive:
    """A receive that returns ``consumed`` first, then reads on."""
    pending = list(consumed)

    async def replayed() -> Message:
        return pending.pop(0) if pending else await receive()
    return replayed
