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
  groups of the same batch;
* next-item bundles batch their history queries the same way (:meth:`RecommendBatcher.submit_history`:
  one encoder pass over the batch's padded histories, one matmul), grouped by ``k`` and
  ``keep_history``. On one core this is what keeps latency flat under concurrency: a
  SASRec pass over 8 histories costs about 2.5x one history, not 8x, because a single
  history's pass is dominated by per-operator overhead, not arithmetic.

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

from .history import HistoryRecommendation, recommend_history
from .holder import BundleHolder
from .query import Bundle, Recommendation

__all__ = ["RecommendBatcher"]

Outcome = tuple["Bundle | None", "list[Any] | None"]
#: A next-item query: (history of raw item ids, or None to use the user's stored one; user id).
HistoryQuery = tuple["list[Any] | None", Any]


@dataclass
class _Pending:
    """One request: its queries, and what its group shares (kind, k, exclude_seen / keep_history)."""

    queries: list[Any]
    k: int
    flag: bool
    future: asyncio.Future[Outcome]
    history: bool = False
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
        return self._submit(_Pending(queries, k, exclude_seen, asyncio.get_running_loop().create_future()))

    def submit_history(self, queries: list[HistoryQuery], k: int, keep_history: bool) -> asyncio.Future[Outcome]:
        """Next-item bundles: a future of (bundle, one HistoryRecommendation per query), or
        (bundle, None) if the search failed (or the live bundle has no histories)."""
        return self._submit(_Pending(queries, k, keep_history, asyncio.get_running_loop().create_future(),
                                     history=True))

    def _submit(self, pending: _Pending) -> asyncio.Future[Outcome]:
        self._pending.append(pending)
        self._size += len(pending.queries)
        if not self._busy:
            self._schedule(asyncio.get_running_loop())
        return pending.future

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


def _run(bundle: Bundle, history: bool, queries: list[Any], k: int, flag: bool) -> list[Any]:
    """``Bundle.recommend`` (flag: exclude_seen) or the next-item search (flag: keep_history)."""
    if history:
        if bundle.history is None:
            raise ValueError("the live bundle has no histories")
        return recommend_history(bundle, [h for h, _ in queries], k=k, users=[u for _, u in queries],
                                 keep_history=flag)
    return _as_list(bundle.recommend(queries, k=k, exclude_seen=flag))


def _search(bundle: Bundle | None, batch: list[_Pending]) -> list[list[Recommendation] | list[HistoryRecommendation] | None]:
    """One search per (kind, k, flag) group; a failed group is retried request by request."""
    out: list[Any] = [None] * len(batch)
    if bundle is None:
        return out
    groups: dict[tuple[bool, int, bool], list[int]] = {}
    for i, item in enumerate(batch):
        groups.setdefault((item.history, item.k, item.flag), []).append(i)
    for (history, k, flag), members in groups.items():
        queries = [q for i in members for q in batch[i].queries]
        try:
            recs = _run(bundle, history, queries, k, flag)
        except Exception:
            if len(members) == 1:
                continue
            for i in members:
                try:
                    out[i] = _run(bundle, history, batch[i].queries, k, flag)
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
