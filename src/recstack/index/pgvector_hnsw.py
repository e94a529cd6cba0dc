"""PgVectorHNSW: :class:`~recstack.index.pgvector_index.PgVector` with an HNSW graph index (approximate).

See :mod:`recstack.index.pgvector_index` for the table, the SQL and the connection;
this subclass adds ``CREATE INDEX ... USING hnsw (embedding vector_ip_ops)`` after
the bulk load and serves unfiltered rows from the graph walk.
"""

from __future__ import annotations

import re
import time
from typing import Any

import numpy as np

from ..core.errors import ConfigError
from ..core.id_lists import IdLists
from .approximate import recall_at_k
from .arrays import as_numpy_f32
from .pgvector_index import PgVector, unqualified_identifier
from .registry import register_index


@register_index("pgvector_hnsw")
class PgVectorHNSW(PgVector):
    """PgVector with an HNSW index (``vector_ip_ops``): approximate, ``ef_search`` sets recall.

    Search without allow-lists walks the graph (``ORDER BY embedding <#> q LIMIT k + L``, L =
    the batch's longest exclusion list) and drops excluded ids; with pgvector >= 0.8 an
    iterative scan (``hnsw.iterative_scan``) continues until the LIMIT is met, and any row
    still short of k is redone with the exact scan. Allow-listed rows are scored exactly.
    Returned scores are exact inner products of the returned candidates.

    Args:
        m: graph degree (pgvector default 16).
        ef_construction: build-time candidate list (pgvector default 64).
        ef_search: query-time candidate list (>= k is used; pgvector caps it at 1000).
        iterative_scan: "strict_order" (default), "relaxed_order" or "off" (pgvector >= 0.8).
        maintenance_work_mem: memory for the build (the graph should fit: ~ C x (4d + 8m + 80) bytes).
        build_workers: parallel workers for the build (``max_parallel_maintenance_workers``).
        Other arguments as :class:`PgVector`.
    """

    is_exact = False

    def __init__(self, dsn: str | None = None, table: str = "recstack_items", m: int = 16,
                 ef_construction: int = 64, ef_search: int = 40, iterative_scan: str = "strict_order",
                 maintenance_work_mem: str = "1GB", build_workers: int | None = None, **kwargs: Any):
        super().__init__(dsn, table, **kwargs)
        if m < 2 or ef_construction < 2 * m:
            raise ConfigError(f"HNSW needs m >= 2 and ef_construction >= 2 m; got m={m}, "
                              f"ef_construction={ef_construction}.")
        if iterative_scan not in ("strict_order", "relaxed_order", "off"):
            raise ConfigError(f"iterative_scan must be strict_order, relaxed_order or off; got {iterative_scan!r}.")
        self.m, self.ef_construction = int(m), int(ef_construction)
        self.iterative_scan = iterative_scan
        self.maintenance_work_mem = maintenance_work_mem
        self.build_workers = build_workers
        self.ef_search = 40
        self.set_search_params(ef_search=ef_search)

    def search_params(self) -> dict[str, Any]:
        return {"ef_search": self.ef_search}

    def set_search_params(self, ef_search: int | None = None, **unknown: Any) -> None:
        if unknown:
            raise ConfigError(f"PgVectorHNSW search settings are ef_search only; got {sorted(unknown)}.")
        if ef_search is not None:
            if not 1 <= int(ef_search) <= 1000:
                raise ConfigError(f"ef_search must be in [1, 1000] (pgvector's range); got {ef_search}.")
            self.ef_search = int(ef_search)

    def _after_load(self, conn: Any, table: Any) -> None:
        from psycopg import sql
        self._db.set("maintenance_work_mem", self.maintenance_work_mem)
        if self.build_workers is not None:
            self._db.set("max_parallel_maintenance_workers", int(self.build_workers))
        start = time.perf_counter()
        conn.execute(sql.SQL("CREATE INDEX {} ON {} USING hnsw (embedding vector_ip_ops) WITH (m = {}, "
                             "ef_construction = {})").format(self._ident("__build_hnsw"), table,
                                                             sql.Literal(self.m), sql.Literal(self.ef_construction)))
        self.metadata["hnsw_build_seconds"] = round(time.perf_counter() - start, 3)

    def _rename_indexes(self, conn: Any) -> None:
        super()._rename_indexes(conn)
        name = self.table.split(".")[-1]
        conn.execute(self._sql("ALTER INDEX IF EXISTS {old} RENAME TO {new}", old=self._ident("__build_hnsw"),
                               new=unqualified_identifier(f"{name}_hnsw")))

    def _ann_sql(self) -> Any:
        # ORDER BY the distance operator itself: the planner serves it from the HNSW index.
        return self._sql(self._ROWS_CTE + self._AGG +
                         "(SELECT c.id, c.score FROM (SELECT t.id, -(t.embedding <#> q.v) AS score FROM {tbl} t "
                         "ORDER BY t.embedding <#> q.v LIMIT %(fetch)s) c WHERE c.id <> ALL(q.ex) "
                         "ORDER BY c.score DESC, c.id LIMIT %(k)s) h")

    def _search_free(self, conn: Any, q: np.ndarray, k: int, excl: IdLists | None,
                     out_s: np.ndarray, out_i: np.ndarray, rows: np.ndarray) -> None:
        longest = 0 if excl is None else int(excl.counts.max(initial=0))
        self._configure_scan(conn, min(self._count, k + longest))
        counts = self._search_rows(conn, self._ann_sql(), q, k, excl, None, out_s, out_i, rows)
        short = np.flatnonzero(counts < k)
        if short.shape[0]:      # fewer than k survived the graph walk: these rows go exact
            out_s[rows[short]], out_i[rows[short]] = -np.inf, -1
            self._search_rows(conn, self._exact_sql(), q[short], k,
                              None if excl is None else excl.take(short), None, out_s, out_i, rows[short])

    def _configure_scan(self, conn: Any, fetch: int) -> None:
        """ef_search >= the rows fetched (up to 1000), iterative scan where pgvector has it."""
        self._db.set("hnsw.ef_search", max(self.ef_search, min(fetch, 1000)))
        if self._has_iterative_scan(conn):
            self._db.set("hnsw.iterative_scan", self.iterative_scan)

    def _has_iterative_scan(self, conn: Any) -> bool:
        if "iterative" not in self.__dict__:
            version = conn.execute("SELECT extversion FROM pg_extension WHERE extname = 'vector'").fetchone()[0]
            self.__dict__["iterative"] = tuple(int(p) for p in re.findall(r"\d+", version)[:2]) >= (0, 8)
        return bool(self.__dict__["iterative"])

    def measure_recall(self, queries: Any, k: int = 100, truth: np.ndarray | None = None) -> float:
        """recall@k of the current ``ef_search`` against the exact scan on ``queries`` (stored in metadata)."""
        q = as_numpy_f32(queries, "queries")
        k = min(int(k), self._count)
        if truth is None:
            truth = self.exact_search(q, k)[1]
        found = self.search(q, k=k)[1]
        value = recall_at_k(found, truth)
        self.metadata["recall"] = {"k": k, "value": round(value, 6), "ef_search": self.ef_search,
                                   "num_queries": int(q.shape[0])}
        return value

    def _params(self) -> dict[str, Any]:
        return {**super()._params(), "m": self.m, "ef_construction": self.ef_construction,
                "ef_search": self.ef_search, "iterative_scan": self.iterative_scan,
                "maintenance_work_mem": self.maintenance_work_mem, "build_workers": self.build_workers}
