"""The live bundle of a server: loading in the background, and hot reload.

With ``reload_interval`` set, a background thread watches the bundle's
manifest.json; when ``export(..., overwrite=True)`` replaces the bundle, the new
one is loaded and verified beside the old one and swapped in with one reference
assignment. Requests already running finish on the old bundle, new ones use the
new bundle, none is dropped. A bundle that fails verification (or the sandbox
checks) is not swapped in; the error is logged and counted.
"""

from __future__ import annotations

import logging
import os
import threading
from pathlib import Path

from .bundle import load_bundle
from .middleware import ServerMetrics
from .query import Bundle
from .settings import ApiError, ServerSettings

__all__ = ["BundleHolder"]

log = logging.getLogger("recstack.serving")


class BundleHolder:
    """Holds the live :class:`Bundle`; swaps in a new one atomically on reload."""

    def __init__(self, source: Bundle | str | os.PathLike, settings: ServerSettings, metrics: ServerMetrics):
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
    def current(self) -> Bundle | None:
        """The live bundle, None before the first load."""
        return self._bundle

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
                fresh = load_bundle(self.directory, verify=self.settings.verify, index=self.settings.index,
                                    index_connection=self.settings.index_connection)
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
