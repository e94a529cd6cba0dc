"""Dynamic batching: concurrent recommendation requests answered by one search.

With ``ServerSettings.batch_window_ms`` set, :class:`RecommendBatcher` collects
the valid ``/v1/recommend`` requests without allow / exclude lists and runs them
as one ``Bundle.recommend`` call (one query-tower pass, one index search: one
matmul for a brute-force index, one FAISS call) in a dedicated thread:

* a batch starts when its first request has waited ``batch_window_ms``, or as
  soon as ``batch_max_queries`` queries are pending, whichever comes first;
* while a batch is being searched the event loop keeps reading requests; those
  form the next batch, which starts as soon as the search ends if it is full or
  its first request has already waited the window (window 0: batch exactly what
  arrived during the previous search, adding no wait of its own);
* requests with different ``k`` or ``exclude_seen`` are searched as separate
  groups of the same batch.

A batch's results are those of ``Bundle.recommend`` on the batch's queries; the
scores of one query may differ from an unbatched search in the last float bits
(a matrix-matrix product sums in another order than a matrix-vector one), so in
rare near-ties two items can swap. When a batch fails (say one query has an
unknown field), its requests are searched one by one, and a request that fails
alone is answered by the FastAPI path with its error.
"""

from __future__ import annotations

import asyncio
import collections
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from .holder import BundleHolder
from .query import Bundle, Recommendation

__all__ = ["RecommendBatcher"]

Outcome = tuple["Bundle | None", "list[Recommendation] | None"]


@dataclass
class _Pending:
    queries: list[dict[str, Any]]
    k: int
    exclude_seen: bool
    future: asyncio.Future[Outcome]
    arrived: float = field(default_factory=time.monotonic)


class RecommendBatcher:
    """Collects requests on the event loop; searches each batch in one worker thread.

    Args:
        holder: the live bundle (each batch takes one snapshot of it).
        window_s: how long a batch's first request waits for others (seconds, >= 0).
        max_queries: a batch never holds more queries (and starts when it has them).
        observe: optional callback receiving each batch's query count (for metrics).
    """

    def __init__(self, holder: BundleHolder, window_s: float, max_queries: int = 64,
                 observe: Any = None):
        self.holder = holder
        self.window = max(0.0, float(window_s))
        self.max_queries = max(1, int(max_queries))
        self.observe = observe
        self._pending: collections.deque[_Pending] = collections.deque()
        self._size = 0
        self._timer: asyncio.TimerHandle | None = None
        self._busy = False
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="recstack-batch")

    def submit(self, queries: list[dict[str, Any]], k: int, exclude_seen: bool) -> asyncio.Future[Outcome]:
        """A future of (bundle, one Recommendation per query), or (bundle, None) if the search failed."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Outcome] = loop.create_future()
        self._pending.append(_Pending(queries, k, exclude_seen, future))
        self._size += len(queries)
        if not self._busy:
            self._schedule(loop)
        return future

    def _schedule(self, loop: asyncio.AbstractEventLoop) -> None:
        """Start the pending batch now if it is full or has waited the window, else set a timer."""
        if not self._pending:
            return
        wait = self._pending[0].arrived + self.window - time.monotonic()
        if self._size >= self.max_queries or wait <= 0:
            self._start(loop)
        elif self._timer is None:
            self._timer = loop.call_later(wait, self._start, loop)

    def _start(self, loop: asyncio.AbstractEventLoop) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._busy or not self._pending:
            return
        batch: list[_Pending] = []
        count = 0
        while self._pending and (not batch or count + len(self._pending[0].queries) <= self.max_queries):
            item = self._pending.popleft()
            batch.append(item)
            count += len(item.queries)
        self._size -= count
        self._busy = True
        bundle = self.holder.current
        if self.observe is not None:
            self.observe(count)
        done = loop.run_in_executor(self._executor, _search, bundle, batch)
        done.add_done_callback(lambda f: self._finished(loop, bundle, batch, f))

    def _finished(self, loop: asyncio.AbstractEventLoop, bundle: Bundle | None, batch: list[_Pending],
                  done: asyncio.Future[list[list[Recommendation] | None]]) -> None:
        self._busy = False
        outcomes = done.result() if not done.cancelled() and done.exception() is None else [None] * len(batch)
        for item, recs in zip(batch, outcomes):
            if not item.future.done():
                item.future.set_result((bundle, recs))
        self._schedule(loop)

    def close(self) -> None:
        """Stop the worker thread (pending requests are answered first)."""
        self._executor.shutdown(wait=False)


def _search(bundle: Bundle | None, batch: list[_Pending]) -> list[list[Recommendation] | None]:
    """One ``recommend`` per (k, exclude_seen) group; a failed group is retried request by request."""
    out: list[list[Recommendation] | None] = [None] * len(batch)
    if bundle is None:
        return out
    groups: dict[tuple[int, bool], list[int]] = {}
    for i, item in enumerate(batch):
        groups.setdefault((item.k, item.exclude_seen), []).append(i)
    for (k, exclude_seen), members in groups.items():
        queries = [q for i in members for q in batch[i].queries]
        try:
            recs = _as_list(bundle.recommend(queries, k=k, exclude_seen=exclude_seen))
        except Exception:
            if len(members) == 1:
                continue
            for i in members:
                try:
                    out[i] = _as_list(bundle.recommend(batch[i].queries, k=k, exclude_seen=exclude_seen))
                except Exception:
                    out[i] = None
            continue
        start = 0
        for i in members:
            n = len(batch[i].queries)
            out[i] = recs[start:start + n]
            start += n
    return out


def _as_list(recs: Recommendation | list[Recommendation]) -> list[Recommendation]:
    return recs if isinstance(recs, list) else [recs]
