"""Server metrics and the outermost middleware: body limit, JSON well-formedness, timing, error shielding.

:class:`GuardMiddleware` reads a request body before the application sees it:

* over ``max_body_bytes`` -> 413 (counted while reading, so a body without
  Content-Length cannot grow without bound);
* not UTF-8 JSON, or JSON with ``NaN`` / ``Infinity`` (which Python's parser
  accepts but JSON does not have) -> 422 ``invalid_request``, the status the
  API documents for every invalid request;
* the client disconnects before the body is complete -> nothing is answered;
  the request is counted with status 499 (the usual "client closed request")
  and in ``recstack_http_client_disconnects_total``, never as a server error.

Any exception escaping the application becomes a 500 with a request id and no
traceback (the traceback goes to the log).
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from starlette.routing import Match

from .prometheus import Counter, Gauge, Histogram, Registry
from .query import Bundle
from .settings import error_response

__all__ = ["CLIENT_CLOSED", "GuardMiddleware", "ServerMetrics"]

log = logging.getLogger("recstack.serving")

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

#: Status recorded for requests whose client went away before the body was complete.
CLIENT_CLOSED = 499


class ServerMetrics:
    """The server's Prometheus metrics (per process)."""

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
        self.disconnects = r.add(Counter("recstack_http_client_disconnects_total",
                                         "Requests whose client disconnected before sending the whole body.",
                                         ("route",)))
        self.in_flight = r.add(Gauge("recstack_http_requests_in_flight", "Requests being processed."))
        self.queries = r.add(Counter("recstack_queries_total", "Queries answered, by endpoint.", ("endpoint",)))
        self.reloads = r.add(Counter("recstack_bundle_reloads_total", "Bundle reloads by result.", ("result",)))
        self.info = r.add(Gauge("recstack_bundle_info", "The bundle being served (value 1).",
                                ("digest", "index", "model_kind")))
        self.candidates = r.add(Gauge("recstack_bundle_candidates", "Candidates in the served bundle."))
        self.batch_size = r.add(Histogram("recstack_recommend_batch_queries",
                                          "Queries per dynamic batch (with batch_window_ms set).",
                                          buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256)))

    def bundle_loaded(self, bundle: Bundle) -> None:
        with self.info._lock:   # type: ignore[attr-defined]
            self.info._values.clear()   # type: ignore[attr-defined]
        self.info.set(1, bundle.digest[:12], bundle.index.kind, bundle.manifest["model_kind"])  # type: ignore[attr-defined]
        self.candidates.set(bundle.num_candidates)  # type: ignore[attr-defined]


def _no_constants(name: str) -> float:
    raise ValueError(f"{name} is not JSON (numbers must be finite)")


def json_problem(body: bytes) -> str | None:
    """Why ``body`` is not a strict JSON document (UTF-8, no NaN/Infinity), or None if it is."""
    try:
        json.loads(body.decode("utf-8"), parse_constant=_no_constants)
    except UnicodeDecodeError as exc:
        return f"body is not UTF-8 ({exc.reason} at byte {exc.start})"
    except json.JSONDecodeError as exc:
        return f"body is not valid JSON: {exc.msg} (line {exc.lineno} column {exc.colno})"
    except (ValueError, RecursionError) as exc:
        return f"body is not valid JSON: {exc}"
    return None


class GuardMiddleware:
    """Pure ASGI: body-size limit, strict JSON, latency/status metrics, and no traceback ever leaves."""

    def __init__(self, app: Any, metrics: ServerMetrics, max_body_bytes: int, routes: list[Any] | None = None):
        self.app = app
        self.metrics = metrics
        self.max_body = int(max_body_bytes)
        self.routes = routes if routes is not None else []

    def _route_label(self, scope: Scope) -> str:
        """The matched route's template (bounded label set); requests answered before routing
        (413, 422 for malformed JSON, disconnects) are matched here."""
        route = scope.get("route")
        if route is not None and getattr(route, "path", None):
            return str(route.path)
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
            body_receive = await self._checked_body(scope, receive, send_wrapper)
            if body_receive is None and not status["started"]:
                status["code"] = CLIENT_CLOSED
            elif body_receive is not None:
                await self.app(scope, body_receive, send_wrapper)
        except Exception:
            request_id = uuid.uuid4().hex[:16]
            log.exception("unhandled error in %s %s (request %s)", scope.get("method"), scope.get("path"), request_id)
            if not status["started"]:
                response = error_response(500, "internal_error", f"internal server error (request id {request_id}).")
                await response(scope, receive, send_wrapper)
        finally:
            self.metrics.in_flight.dec()  # type: ignore[attr-defined]
            label = self._route_label(scope)
            code = status["code"]
            self.metrics.requests.inc(label, scope.get("method", ""), str(code))  # type: ignore[attr-defined]
            self.metrics.latency.observe(time.perf_counter() - start, label)  # type: ignore[attr-defined]
            if code == CLIENT_CLOSED:
                self.metrics.disconnects.inc(label)  # type: ignore[attr-defined]
            elif code >= 400:
                self.metrics.errors.inc(label, "server" if code >= 500 else "client")  # type: ignore[attr-defined]

    async def _checked_body(self, scope: Scope, receive: Receive, send: Send) -> Receive | None:
        """Read the body up to the limit (413 beyond it), check it is strict JSON (422 if not) and
        replay it to the app. None: answered here, or the client disconnected (nothing sent)."""
        if scope.get("method") not in ("POST", "PUT", "PATCH"):
            return receive
        too_big = error_response(413, "body_too_large", f"request body exceeds {self.max_body} bytes; send fewer "
                                                        "queries or items per request.")
        for name, value in scope.get("headers", []):
            if name == b"content-length":
                try:
                    if int(value) > self.max_body:
                        await too_big(scope, receive, send)
                        return None
                except ValueError:
                    await error_response(400, "bad_request", "invalid Content-Length header.")(scope, receive, send)
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
        problem = json_problem(body) if body.strip() else None   # an empty body: the app says what is missing
        if problem is not None:
            await error_response(422, "invalid_request", problem,
                                 [{"field": "body", "message": problem, "type": "json_invalid"}])(scope, receive, send)
            return None
        sent = False

        async def replay() -> Message:
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()
        return replay
