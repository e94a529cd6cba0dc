"""Server settings and the JSON error responses every part of the HTTP server answers with."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from fastapi.responses import JSONResponse

__all__ = ["ApiError", "ServerSettings", "error_response"]


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
        index_connection: for a pgvector-backed bundle, the operator's connection
            (``{"dsn": ..., "password_env"?: ..., "settings"?: ..., "table"?: ...}``); a bundle
            never stores it.
    """

    max_k: int = 1000
    max_batch: int = 256
    max_items: int = 10_000
    max_body_bytes: int = 1 << 20
    reload_interval: float | None = None
    verify: bool = True
    index: str | None = None
    index_connection: Mapping[str, Any] | None = None


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
