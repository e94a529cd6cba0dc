"""Running the HTTP server: :func:`run_server` (the ``recstack serve`` command) on uvicorn.

The application itself is :func:`recstack.serving.app.create_app` (re-exported
here with :class:`ServerSettings`); it binds 127.0.0.1 unless told otherwise.
With ``workers > 1`` each uvicorn worker process builds its app through
:func:`app_from_env`, from the bundle folder and settings this process passes
in its environment (the operator's process: a bundle never reads it).
"""

from __future__ import annotations

import gc
import json
import logging
import os
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

from fastapi import FastAPI

from .app import create_app
from .bundle import load_bundle
from .holder import BundleHolder
from .query import Bundle
from .settings import ApiError, ServerSettings

__all__ = ["ApiError", "BundleHolder", "ServerSettings", "app_from_env", "create_app", "run_server"]

log = logging.getLogger("recstack.serving")

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


def _load(bundle_dir: str | os.PathLike, settings: ServerSettings) -> Bundle:
    return load_bundle(bundle_dir, verify=settings.verify, index=settings.index,
                       index_connection=settings.index_connection)


def app_from_env() -> FastAPI:
    """Factory for uvicorn workers (``--workers N``): bundle dir and settings from the environment."""
    settings = ServerSettings(**json.loads(os.environ.get(_ENV_SETTINGS, "{}")))
    _set_threads(int(os.environ.get("RECSTACK_SERVE_THREADS", "1")))
    app = create_app(_load(os.environ[_ENV_DIR], settings), settings)
    _settle_heap()
    return app


def _settle_heap() -> None:
    """Move everything loaded so far (the bundle, torch, the app) out of the garbage collector's
    reach: a full collection then walks only per-request objects, which keeps its pauses out
    of the latency tail."""
    gc.collect()
    gc.freeze()


def run_server(bundle_dir: str | os.PathLike, host: str = "127.0.0.1", port: int = 8000, workers: int = 1,
               settings: ServerSettings | None = None, threads: int = 1, log_level: str = "info",
               limit_concurrency: int | None = None, access_log: bool = False, **overrides: Any) -> None:
    """Serve ``bundle_dir`` over HTTP with uvicorn (blocks until stopped).

    Args:
        bundle_dir: a bundle written by :func:`recstack.serving.export`.
        host: bind address; 127.0.0.1 by default (use 0.0.0.0 deliberately, behind a proxy).
        port: TCP port.
        workers: uvicorn worker processes (each loads the bundle; memory x workers).
        settings / overrides: :class:`ServerSettings` (limits, reload_interval, verify, index,
            index_connection for a pgvector-backed bundle).
        threads: torch/FAISS intra-op threads per worker.
        limit_concurrency: uvicorn answers 503 above this many concurrent connections.
        access_log: one log line per request (off by default: it costs about as much CPU as
            answering a recommendation from a small bundle; /metrics counts requests).
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
              "timeout_graceful_shutdown": 10, "access_log": bool(access_log)}
    if workers <= 1:
        _set_threads(threads)
        app = create_app(_load(bundle_dir, settings), settings)
        _settle_heap()
        uvicorn.run(app, **common)
        return
    os.environ[_ENV_DIR] = str(bundle_dir)
    os.environ[_ENV_SETTINGS] = json.dumps(asdict(settings))
    os.environ["RECSTACK_SERVE_THREADS"] = str(threads)
    uvicorn.run("recstack.serving.server:app_from_env", factory=True, workers=int(workers), **common)
