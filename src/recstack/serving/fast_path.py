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
from .holder import BundleHolder
from .middleware import ServerMetrics
from .query import Bundle, Recommendation
from .settings import ServerSettings

__all__ = ["FastRecommend", "RecommendCall", "parse_recommend", "recommend_content"]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

ROUTE = "/v1/recommend"
_FIELDS = frozenset({"query", "queries", "k", "exclude_seen", "allow", "exclude"})   # keep_history: FastAPI
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


def recommend_content(bundle: Bundle, recs: list[Recommendation]) -> dict[str, Any]:
    """The JSON document answering a recommendation request (both request paths build it here)."""
    return {"results": [{"items": r.items, "scores": r.scores, "cold_start": r.cold_start,
                         "oov_fields": r.oov_fields} for r in recs],
            "index": bundle.index.kind, "exact": bundle.index.is_exact, "bundle": bundle.digest[:12]}


def _refuse_constant(name: str) -> float:
    raise ValueError(name)


def _is_int64(v: Any) -> bool:
    return type(v) is int and _INT64[0] <= v <= _INT64[1]


def _query_ok(query: Any) -> bool:
    """A dict of str -> str | int64 | finite float (what the strict schema's query values are)."""
    if type(query) is not dict:
        return False
    for v in query.values():
        t = type(v)
        if not (t is str or (t is int and _INT64[0] <= v <= _INT64[1]) or (t is float and math.isfinite(v))):
            return False
    return True


def _item_list(value: Any, limit: int) -> tuple[bool, list[Any] | None]:
    """(ok, list) for an allow / exclude field: absent or null, or a list of str | int64 ids."""
    if value is None:
        return True, None
    if type(value) is not list or len(value) > limit:
        return False, None
    return all(type(v) is str or _is_int64(v) for v in value), value


def parse_recommend(body: bytes, settings: ServerSettings) -> RecommendCall | None:
    """The request in ``body`` if it is valid for the strict schema and within ``settings``'
    limits; None for anything else (which the FastAPI path then answers with its error)."""
    if b"\\u" in body:               # escapes can spell lone surrogates or NULs: leave them to pydantic
        return None
    try:
        obj = json.loads(body.decode("utf-8"), parse_constant=_refuse_constant)
    except (ValueError, RecursionError):
        return None
    if type(obj) is not dict or not obj.keys() <= _FIELDS:
        return None
    query, queries = obj.get("query"), obj.get("queries")
    if query is not None:
        if queries is not None or not _query_ok(query):
            return None
        batch = [query]
    elif type(queries) is list and 0 < len(queries) <= settings.max_batch and all(_query_ok(q) for q in queries):
        batch = queries
    else:
        return None
    k = obj.get("k", 10)
    exclude_seen = obj.get("exclude_seen", True)
    if type(k) is not int or not 1 <= k <= settings.max_k or type(exclude_seen) is not bool:
        return None
    ok_allow, allow = _item_list(obj.get("allow"), settings.max_items)
    ok_exclude, exclude = _item_list(obj.get("exclude"), settings.max_items)
    if not (ok_allow and ok_exclude):
        return None
    return RecommendCall(batch, k, exclude_seen, allow, exclude)


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
        call = None
        is_json, length = _json_content_type(scope)
        if is_json and (length is None or length <= self.max_body):
            body = await self._read(receive, consumed)
            if body is not None:
                call = parse_recommend(body, self.settings)
        if call is not None:
            self.metrics.in_flight.inc()  # type: ignore[attr-defined]
            try:
                answer = await self._answer(call)
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

    async def _answer(self, call: RecommendCall) -> bytes | None:
        """The response body, or None to let the FastAPI path answer (errors, not ready)."""
        bundle = self.holder.current              # one snapshot for the whole request
        if bundle is None or bundle.history is not None:   # next-item bundles: the FastAPI handler
            return None
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


def _recommend(bundle: Bundle, call: RecommendCall) -> list[Recommendation]:
    recs = bundle.recommend(call.queries, k=call.k, exclude_seen=call.exclude_seen, allow=call.allow,
                            exclude=call.exclude)
    return recs if isinstance(recs, list) else [recs]


def _replay(consumed: list[Message], receive: Receive) -> Receive:
    """A receive that returns ``consumed`` first, then reads on."""
    pending = list(consumed)

    async def replayed() -> Message:
        return pending.pop(0) if pending else await receive()
    return replayed
