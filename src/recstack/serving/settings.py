"""Server settings and the JSON error responses every part of the HTTP server answers with."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from fastapi.responses import JSONResponse

from ..core.errors import ConfigError

__all__ = ["ApiError", "ServerSettings", "error_response"]


@dataclass(frozen=True)
class ServerSettings:
    """Request limits and bundle handling.

    Args:
        max_k: largest k a request may ask for.
        max_batch: most queries in one /v1/recommend request.
        max_items: longest allow / exclude / predict item list.
        max_history: longest history a next-item request may send (the model reads its latest
            ``max_length`` items).
        max_body_bytes: larger request bodies get 413.
        reload_interval: seconds between checks for a new bundle (None: no hot reload).
        verify: re-hash bundle files on (re)load.
        index: None (the bundle's index) or "brute_force" (exact search over the bundle's embeddings).
        index_connection: for a pgvector-backed bundle, the operator's connection
            (``{"dsn": ..., "password_env"?: ..., "settings"?: ..., "table"?: ...}``); a bundle
            never stores it.
        fast_path: answer valid ``POST /v1/recommend`` requests in front of FastAPI (one JSON
            parse, no per-request framework work; the same responses, see
            :mod:`recstack.serving.fast_path`). False sends every request through FastAPI.
        inline_max_candidates: bundles with at most this many candidates are searched on the
            event loop (cheaper than a thread hand-off for a small catalogue); larger ones in
            the thread pool, so a long search does not hold up other connections.
        batch_window_ms: dynamic batching (:mod:`recstack.serving.batching`): None (off), or
            how long the first of a batch of concurrent recommendation requests waits for
            others before one search answers them all (0: batch only what arrives while the
            previous batch is searched).
        batch_max_queries: most queries in one dynamic batch.
    """

    max_k: int = 1000
    max_batch: int = 256
    max_items: int = 10_000
    max_history: int = 1000
    max_body_bytes: int = 1 << 20
    reload_interval: float | None = None
    verify: bool = True
    index: str | None = None
    index_connection: Mapping[str, Any] | None = None
    fast_path: bool = True
    inline_max_candidates: int = 100_000
    batch_window_ms: float | None = None
    batch_max_queries: int = 64

    def __post_init__(self) -> None:
        if self.batch_window_ms is not None and not (isinstance(self.batch_window_ms, (int, float))
                                                     and not isinstance(self.batch_window_ms, bool)
                                                     and 0 <= self.batch_window_ms <= 1000):
            raise ConfigError(f"batch_window_ms must be None (no batching) or a number of milliseconds in "
                              f"[0, 1000]; got {self.batch_window_ms!r}.")
        if isinstance(self.batch_max_queries, bool) or not isinstance(self.batch_max_queries, int) \
                or self.batch_max_queries < 1:
            raise ConfigError(f"batch_max_queries must be an integer >= 1; got {self.batch_max_queries!r}.")


class ApiError(Exception):
    """An error answered as JSON with a status code."""

    def __init__(self, status: int, code: str, message: str, details: list[dict[str, Any]] | None = None):
        super().__init__(message)
        self.status, self.code, self.message, self.details = status, code, message, details


def error_response(status: int, code: str, message: str, details: list[dict[str, Any]] | None = None,
                   headers: dict[str, str] | None = None) -> JSONResponse:
    """``{"error": {"code", "message", "details"?}}`` with ``status``."""
    body: dict[str, Any] = {"code": code, "message": message}
    if details:
        body["details"] = details
    return JSONResponse({"error": body}, status_code=status, headers=headers)
