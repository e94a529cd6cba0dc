"""PgVector / PgVectorHNSW: the Index interface on PostgreSQL with the pgvector extension.

For catalogues that outgrow one process: the embeddings live in a PostgreSQL
table ``(id bigint primary key, embedding vector(d))`` that many serving
processes (or other services) can share, mutate transactionally and back up
with ordinary database tooling.

* :class:`PgVector` (``kind="pgvector"``) is exact: every search is a
  sequential scan ordered by pgvector's inner product, so results equal
  :class:`~recstack.index.BruteForce`'s (float tolerance; ties aside).
* :class:`~recstack.index.pgvector_hnsw.PgVectorHNSW` (``kind="pgvector_hnsw"``) adds an HNSW index
  (``USING hnsw (embedding vector_ip_ops)``) and is approximate: ``ef_search``
  trades recall for speed; :meth:`PgVectorHNSW.measure_recall` reports recall
  against the exact scan. Filters are never approximate in a way that loses
  results: rows the graph search leaves short are redone exactly, and
  allow-lists are always scored exactly.

Why pgvector: it is the most widely deployed vector search on a general
database (PostgreSQL is already in most stacks), it runs as an ordinary
server that tests can start on loopback from a throwaway ``initdb`` cluster
(:func:`recstack.testing.postgres.local_postgres`), and it has both an exact scan
and an ANN index.
On the machine this was written on (Debian 12) PostgreSQL 15 comes from apt;
``postgresql-15-pgvector`` is not in Debian 12 (it is in Debian 13, Ubuntu
24.04 and the PGDG apt repository), so pgvector 0.8.0 was built from the
Debian 13 source package (``apt-get source pgvector``; ``make && make
install`` against ``postgresql-server-dev-15``) - see docs/serving.md.

SQL notes:

* pgvector's ``a <#> b`` is the NEGATIVE inner product (so that ascending
  order is best first, as for its distances); scores here are ``-(a <#> b)``.
* A batch of queries is one statement: the query vectors travel as one binary
  ``vector[]`` parameter, are unnested with their row number, and a LATERAL
  subquery finds each row's top k. Results come back as three aggregated
  arrays parsed with numpy (no per-row Python).
* ``exclude``: each row over-fetches ``k + (largest exclusion list in the
  batch)`` and drops its own excluded ids in SQL (``id <> ALL(row's list)``),
  which keeps k filled exactly. ``allow``: ``id = ANY(row's list)`` through the
  primary key, scored exactly.
* Bulk load: ``COPY ... FROM STDIN (FORMAT BINARY)`` with the COPY records built
  by numpy (:mod:`recstack.index.pgvector_wire`) in chunks of ``copy_chunk`` rows
  (bounded memory), into a new table that replaces the old one in the same
  transaction (readers see the old catalogue until commit).

Connection (:mod:`recstack.index.pgvector_connection`): ``dsn`` (libpq key=value
or URI) or, when None, the environment variable ``RECSTACK_PGVECTOR_DSN``.
``save()`` writes only ``index.json`` (connection parameters and table; the rows
stay in the database) and never a password: a DSN read from the environment is saved as "read it from the
environment again", and a password in an explicit DSN is dropped; at load time
it comes from ``password_env`` (default ``RECSTACK_PGVECTOR_PASSWORD``),
libpq's ``PGPASSWORD`` or ``~/.pgpass``.

Optional dependency: ``pip install 'recstack[pgvector]'`` (psycopg 3, plus
``pgserver`` where it has wheels and is used: CPython <= 3.12 on Linux
x86_64 and macOS), and a PostgreSQL server with the ``vector`` extension.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..core.errors import ConfigError, DataError, ShapeError
from ..core.id_lists import IdLists
from .arrays import as_ids, as_numpy_f32, build_inputs, check_unique
from .contract import Index
from .filters import allow_rows, exclusion_rows
from .pgvector_connection import DSN_ENV, PASSWORD_ENV, PgConnection, describe_dsn, strip_password
from .pgvector_wire import (COPY_HEADER, COPY_TRAILER, Float8Array, IdArray, Int4Array, VectorArray, copy_records,
                            require_psycopg)
from .registry import register_index

_MARKER = "recstack.index"          # table comment prefix: build() only replaces tables it made
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,49}$")


@register_index("pgvector")
class PgVector(Index):
    """Exact inner-product top-k in PostgreSQL + pgvector (sequential scan per query row).

    Args:
        dsn: libpq connection string or URI; None reads ``RECSTACK_PGVECTOR_DSN``.
        table: table name, optionally ``schema.table`` (letters, digits, ``_``).
        password_env: environment variable read for the password when the DSN has none.
        copy_chunk: rows per COPY message batch in build/add (memory bound: ~(d*4+32) B a row).
        connect_timeout: seconds before an unreachable server is reported.
        settings: extra session settings applied on connect (e.g. {"work_mem": "64MB"}).

    Example:
        >>> index = PgVector("host=127.0.0.1 port=5432 dbname=app user=app", table="items").build(ids, emb)
        >>> scores, ids = index.search(queries, k=10, exclude=seen)
    """

    is_exact = True

    def __init__(self, dsn: str | None = None, table: str = "recstack_items",
                 password_env: str = PASSWORD_ENV, copy_chunk: int = 65536, connect_timeout: int = 10,
                 settings: dict[str, str] | None = None):
        require_psycopg()                                 # fail at construction, with the install hint
        parts = table.split(".")
        if len(parts) > 2 or not all(_NAME.match(p) for p in parts):
            raise ConfigError(f"table must be 'name' or 'schema.name' of letters, digits and _ "
                              f"(<= 50 characters each); got {table!r}.")
        if copy_chunk < 1:
            raise ConfigError(f"copy_chunk must be >= 1; got {copy_chunk}.")
        self.dsn = dsn
        self.table = table
        self.password_env = password_env
        self.copy_chunk = int(copy_chunk)
        self.connect_timeout = int(connect_timeout)
        self.settings = dict(settings or {})
        self._db = PgConnection(dsn, password_env, connect_timeout, settings)
        self._lock = self._db.lock        # one connection: statements from threads are serialised
        self._count = 0
        self._dim = 0

    # -- connection ---------------------------------------------------------------------------
    def _connection(self) -> Any:
        """The open connection (hold ``self._lock`` while using it)."""
        return self._db.get()

    def close(self) -> None:
        """Close the database connection (reopened on next use)."""
        self._db.close()

    def _ident(self, suffix: str = "") -> Any:
        from psycopg import sql
        parts = self.table.split(".")
        parts[-1] += suffix
        return sql.Identifier(*parts)

    def _sql(self, template: str, **idents: Any) -> Any:
        from psycopg import sql
        return sql.SQL(template).format(tbl=self._ident(), **idents)

    def server_info(self) -> dict[str, Any]:
        """PostgreSQL and pgvector versions of the connected server."""
        with self._lock:
            conn = self._connection()
            pg = conn.execute("SHOW server_version").fetchone()[0]
            vec = conn.execute("SELECT extversion FROM pg_extension WHERE extname = 'vector'").fetchone()[0]
        return {"postgresql": pg, "pgvector": vec}

    # -- building -----------------------------------------------------------------------------
    def build(self, ids: Any, embeddings: Any) -> "PgVector":
        """Load ``embeddings`` [C, d] under ``ids`` [C] (None: 0..C-1) into a fresh table.

        The rows are COPYed (binary) into ``<table>__build`` in chunks, the primary key is
        added after the load (one sort instead of C index insertions), then the new table
        replaces ``table`` in the same transaction. ``table`` may only be replaced if an
        earlier build made it (its comment says so).
        """
        ids, x = build_inputs(ids, embeddings)
        n, d = x.shape
        psycopg = require_psycopg()
        with self._lock:
            conn = self._connection()
            try:
                with conn.transaction():
                    self._check_replaceable(conn)
                    conn.execute(self._sql("DROP TABLE IF EXISTS {new}", new=self._ident("__build")))
                    conn.execute(self._sql("CREATE TABLE {new} (id bigint NOT NULL, embedding vector({d}) "
                                           "NOT NULL)", new=self._ident("__build"), d=_literal(d)))
                    self._copy_in(conn, self._ident("__build"), ids, x)
                    conn.execute(self._sql("ALTER TABLE {new} ADD PRIMARY KEY (id)", new=self._ident("__build")))
                    self._after_load(conn, self._ident("__build"))
                    conn.execute(self._sql("DROP TABLE IF EXISTS {tbl}"))
                    conn.execute(self._sql("ALTER TABLE {new} RENAME TO {name}", new=self._ident("__build"),
                                           name=unqualified_identifier(self.table)))
                    self._rename_indexes(conn)
                    conn.execute(self._sql("COMMENT ON TABLE {tbl} IS {c}",
                                           c=_literal(f"{_MARKER} {self.kind} d={d}")))
                conn.execute(self._sql("ANALYZE {tbl}"))
            except psycopg.errors.DataException as exc:
                raise DataError(f"PostgreSQL rejected the embeddings: {str(exc).strip()}") from None
        self._count, self._dim = n, d
        self.metadata.update({"dimension": d, "table": self.table, **self.server_info()})
        self.metadata.pop("recall", None)
        return self

    def _check_replaceable(self, conn: Any) -> None:
        row = conn.execute("SELECT obj_description(to_regclass(%s), 'pg_class'), to_regclass(%s) IS NOT NULL",
                           (self._qualified(), self._qualified())).fetchone()
        comment, exists = row
        if exists and not (comment or "").startswith(_MARKER):
            raise ConfigError(f"table {self.table!r} exists and was not created by recstack; refusing to replace "
                              "it. Choose another table= or drop it yourself.")

    def _qualified(self) -> str:
        return ".".join(f'"{p}"' for p in self.table.split("."))

    def _after_load(self, conn: Any, table: Any) -> None:
        """Hook: secondary indexes on the freshly loaded table (none for the exact scan)."""

    def _rename_indexes(self, conn: Any) -> None:
        name = self.table.split(".")[-1]
        conn.execute(self._sql("ALTER INDEX IF EXISTS {old} RENAME TO {new}", old=self._ident("__build_pkey"),
                               new=unqualified_identifier(f"{name}_pkey")))

    def _copy_in(self, conn: Any, table: Any, ids: np.ndarray, x: np.ndarray) -> None:
        """Binary COPY of ids [n] / x [n, d] (checked finite) in chunks of ``copy_chunk`` rows."""
        from psycopg import sql
        stmt = sql.SQL("COPY {} (id, embedding) FROM STDIN (FORMAT BINARY)").format(table)
        with conn.cursor() as cur, cur.copy(stmt) as copy:
            copy.write(COPY_HEADER)
            for start in range(0, x.shape[0], self.copy_chunk):
                stop = start + self.copy_chunk
                copy.write(copy_records(ids[start:stop], x[start:stop]))
            copy.write(COPY_TRAILER)

    @property
    def num_candidates(self) -> int:
        return self._count

    @property
    def dimension(self) -> int:
        return self._dim

    def refresh(self) -> "PgVector":
        """Re-read size and width from the table (after another process changed it)."""
        with self._lock:
            conn = self._connection()
            if not conn.execute("SELECT to_regclass(%s) IS NOT NULL", (self._qualified(),)).fetchone()[0]:
                raise ConfigError(f"table {self.table!r} does not exist in {describe_dsn(self._db.conninfo())}; "
                                  "build the index first.")
            self._count = int(conn.execute(self._sql("SELECT count(*) FROM {tbl}")).fetchone()[0])
            typmod = conn.execute("SELECT atttypmod FROM pg_attribute WHERE attrelid = to_regclass(%s) "
                                  "AND attname = 'embedding'", (self._qualified(),)).fetchone()
            self._dim = int(typmod[0]) if typmod else 0
        return self

    # -- lookups -------------------------------------------------------------------------------
    def vectors(self, ids: Any) -> torch.Tensor:
        """[n] ids -> [n, d] stored embeddings (in the order asked); DataError for unknown ids."""
        self._require_built()
        ids = as_ids(np.atleast_1d(np.asarray(ids.cpu() if isinstance(ids, torch.Tensor) else ids)))
        with self._lock:
            conn = self._connection()
            found, vecs = conn.execute(self._sql(
                "SELECT coalesce(array_agg(u.i ORDER BY u.i), '{{}}'), coalesce(array_agg(t.embedding ORDER BY "
                "u.i), '{{}}') FROM unnest(%b::int8[]) WITH ORDINALITY AS u(id, i) JOIN {tbl} t ON t.id = u.id"),
                (IdArray(ids),), binary=True).fetchone()
        if found.shape[0] != ids.shape[0]:
            missing = np.setdiff1d(np.arange(1, ids.shape[0] + 1), found)
            raise DataError(f"unknown candidate id(s) {ids[missing - 1][:5].tolist()}; the index holds "
                            f"{self._count} candidates.")
        return torch.from_numpy(vecs.reshape(ids.shape[0], self._dim))

    def candidate_ids(self) -> np.ndarray:
        if self._count == 0 and not self._db.opened:
            return np.empty(0, np.int64)
        with self._lock:
            out = self._connection().execute(self._sql("SELECT coalesce(array_agg(id ORDER BY id), '{{}}') "
                                                       "FROM {tbl}"), binary=True).fetchone()[0]
        return out

    def iter_vectors(self, chunk: int = 65536) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """Yield (ids [n], vectors [n, d]) over the table in id order (keyset pages of ``chunk``)."""
        last = np.iinfo(np.int64).min
        stmt = self._sql("SELECT coalesce(array_agg(id ORDER BY id), '{{}}'), coalesce(array_agg(embedding "
                         "ORDER BY id), '{{}}') FROM (SELECT id, embedding FROM {tbl} WHERE id > %s "
                         "ORDER BY id LIMIT %s) p")
        while True:
            with self._lock:
                ids, vecs = self._connection().execute(stmt, (int(last), int(chunk)), binary=True).fetchone()
            if ids.shape[0] == 0:
                return
            yield ids, vecs
            last = ids[-1]
            if ids.shape[0] < chunk:
                return

    # -- search -------------------------------------------------------------------------------
    def search(self, queries: Any, k: int | None = 10, exclude: Any = None, allow: Any = None,
               query_keys: Any = None) -> tuple[torch.Tensor, np.ndarray]:
        """:meth:`Index.search` exactly: one SQL statement per batch (two when some rows have allow-lists)."""
        q, k = self._prepare_search(queries, k)
        batch = q.shape[0]
        out_s = np.full((batch, k), -np.inf, dtype=np.float32)
        out_i = np.full((batch, k), -1, dtype=np.int64)
        if batch == 0:
            return torch.from_numpy(out_s), out_i
        excl = exclusion_rows(exclude, batch, query_keys)
        allowed = allow_rows(allow, batch)
        restricted = np.zeros(batch, dtype=bool) if allowed is None else allowed[1]
        free = np.flatnonzero(~restricted)
        with self._lock:
            conn = self._connection()
            if free.shape[0]:
                ex = None if excl is None else (excl if free.shape[0] == batch else excl.take(free))
                self._search_free(conn, q[free], k, ex, out_s, out_i, free)
            if allowed is not None:
                rows = np.flatnonzero(restricted)
                ex = None if excl is None else excl.take(rows)
                self._search_rows(conn, self._exact_allowed_sql(), q[rows], k, ex, allowed[0].take(rows),
                                  out_s, out_i, rows)
        return torch.from_numpy(out_s), out_i

    def _search_free(self, conn: Any, q: np.ndarray, k: int, excl: IdLists | None,
                     out_s: np.ndarray, out_i: np.ndarray, rows: np.ndarray) -> None:
        """Rows without an allow-list: exact scan, over-fetching past the row's exclusions."""
        self._search_rows(conn, self._exact_sql(), q, k, excl, None, out_s, out_i, rows)

    def _search_rows(self, conn: Any, stmt: Any, q: np.ndarray, k: int, excl: IdLists | None,
                     allow: IdLists | None, out_s: np.ndarray, out_i: np.ndarray, rows: np.ndarray) -> np.ndarray:
        """Run a LATERAL top-k statement for query rows ``q`` [b, d]; writes out_*[rows]; returns [b] counts."""
        b = q.shape[0]
        ex = excl if excl is not None else IdLists.empty(b)
        al = allow if allow is not None else IdLists.empty(b)
        fetch = min(self._count, k + int(ex.counts.max(initial=0)))
        params = {"v": VectorArray(q), "ex": IdArray(ex.ids), "elo": Int4Array(ex.indptr[:-1]), "ehi": Int4Array(ex.indptr[1:]),
                  "al": IdArray(al.ids), "alo": Int4Array(al.indptr[:-1]), "ahi": Int4Array(al.indptr[1:]),
                  "k": k, "fetch": fetch}
        r, ids, scores = conn.execute(stmt, params, binary=True).fetchone()
        return _scatter(r - 1, ids, scores, b, out_s, out_i, rows)

    # Each query row r gets its exclusion list ex[elo:ehi] and allow-list al[alo:ahi] sliced
    # once in a materialised CTE (not per scanned tuple).
    _ROWS_CTE = ("WITH q AS MATERIALIZED (SELECT u.r, u.v, (%(ex)b::int8[])[u.elo + 1 : u.ehi] AS ex, "
                 "(%(al)b::int8[])[u.alo + 1 : u.ahi] AS al FROM unnest(%(v)b::vector[], %(elo)b::int4[], "
                 "%(ehi)b::int4[], %(alo)b::int4[], %(ahi)b::int4[]) WITH ORDINALITY AS u(v, elo, ehi, alo, ahi, r)) ")
    _AGG = ("SELECT coalesce(array_agg(q.r::int4 ORDER BY q.r, h.score DESC, h.id), '{{}}'), "
            "coalesce(array_agg(h.id ORDER BY q.r, h.score DESC, h.id), '{{}}'), "
            "coalesce(array_agg(h.score ORDER BY q.r, h.score DESC, h.id), '{{}}') FROM q CROSS JOIN LATERAL ")

    def _exact_sql(self) -> Any:
        # ORDER BY the computed score (not `embedding <#> v`) so that no ANN index can serve it:
        # this is always the exact scan, with the score evaluated once per tuple.
        return self._sql(self._ROWS_CTE + self._AGG +
                         "(SELECT c.id, c.score FROM (SELECT t.id, -(t.embedding <#> q.v) AS score FROM {tbl} t "
                         "ORDER BY score DESC, t.id LIMIT %(fetch)s) c WHERE c.id <> ALL(q.ex) "
                         "ORDER BY c.score DESC, c.id LIMIT %(k)s) h")

    def _exact_allowed_sql(self) -> Any:
        return self._sql(self._ROWS_CTE + self._AGG +
                         "(SELECT t.id, -(t.embedding <#> q.v) AS score FROM {tbl} t WHERE t.id = ANY(q.al) "
                         "AND t.id <> ALL(q.ex) ORDER BY score DESC, t.id LIMIT %(k)s) h")

    @torch.no_grad()
    def count_higher(self, queries: Any, thresholds: Any, exclude: Any = None,
                     query_keys: Any = None) -> torch.Tensor:
        """[B] number of non-excluded candidates with q . x > threshold (exact ranks for metrics)."""
        self._require_built()
        q = as_numpy_f32(queries, "queries")
        thr = torch.as_tensor(thresholds).reshape(-1).double().numpy()
        ex = exclusion_rows(exclude, q.shape[0], query_keys)
        ex = ex if ex is not None else IdLists.empty(q.shape[0])
        stmt = self._sql(
            "WITH q AS MATERIALIZED (SELECT u.r, u.v, u.thr, (%(ex)b::int8[])[u.elo + 1 : u.ehi] AS ex FROM "
            "unnest(%(v)b::vector[], %(thr)b::float8[], %(elo)b::int4[], %(ehi)b::int4[]) WITH ORDINALITY AS "
            "u(v, thr, elo, ehi, r)) SELECT coalesce(array_agg(h.n ORDER BY q.r), '{{}}') FROM q CROSS JOIN "
            "LATERAL (SELECT count(*)::int8 AS n FROM {tbl} t WHERE -(t.embedding <#> q.v) > q.thr "
            "AND t.id <> ALL(q.ex)) h")
        with self._lock:
            counts = self._connection().execute(stmt, {
                "v": VectorArray(q), "thr": Float8Array(thr), "ex": IdArray(ex.ids), "elo": Int4Array(ex.indptr[:-1]),
                "ehi": Int4Array(ex.indptr[1:])}, binary=True).fetchone()[0]
        return torch.from_numpy(counts)

    def exact_search(self, queries: Any, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Exact top-k in SQL (the sequential scan), whatever indexes the table has."""
        q = as_numpy_f32(queries, "queries")
        k = min(int(k), self._count)
        out_s = np.full((q.shape[0], k), -np.inf, dtype=np.float32)
        out_i = np.full((q.shape[0], k), -1, dtype=np.int64)
        with self._lock:
            self._search_rows(self._connection(), self._exact_sql(), q, k, None, None, out_s, out_i,
                              np.arange(q.shape[0]))
        return out_s, out_i

    # -- mutation -----------------------------------------------------------------------------
    def remove(self, ids: Any) -> int:
        """Delete candidates by id; returns how many rows were deleted."""
        self._require_built()
        ids = np.unique(as_ids(np.atleast_1d(np.asarray(ids.cpu() if isinstance(ids, torch.Tensor) else ids))))
        with self._lock:
            cur = self._connection().execute(self._sql("DELETE FROM {tbl} WHERE id = ANY(%b::int8[])"), (IdArray(ids),))
            removed = int(cur.rowcount)
            self._count -= removed
        return removed

    def add(self, ids: Any, embeddings: Any) -> "PgVector":
        """Insert new candidates (binary COPY in one transaction); DataError if an id is already there."""
        if self._count == 0 and self._dim == 0:
            return self.build(ids, embeddings)
        x = as_numpy_f32(embeddings, "candidate embeddings")
        if x.shape[1] != self._dim:
            raise ShapeError(f"embeddings must be [n, {self._dim}]; got {tuple(x.shape)}.")
        new = as_ids(ids, x.shape[0])
        check_unique(new, "new candidate ids")
        with self._lock:
            conn = self._connection()
            with conn.transaction():
                clash = conn.execute(self._sql("SELECT coalesce(array_agg(id), '{{}}') FROM {tbl} "
                                               "WHERE id = ANY(%b::int8[])"), (IdArray(new),), binary=True).fetchone()[0]
                if clash.shape[0]:
                    raise DataError(f"candidate id(s) {np.sort(clash)[:5].tolist()} are already indexed; "
                                    "remove them first.")
                self._copy_in(conn, self._ident(), new, x)
            self._count += x.shape[0]
        return self

    # -- persistence ---------------------------------------------------------------------------
    def _params(self) -> dict[str, Any]:
        dsn = None if self.dsn is None else strip_password(self.dsn)[0]
        return {"dsn": dsn, "table": self.table, "password_env": self.password_env,
                "copy_chunk": self.copy_chunk, "connect_timeout": self.connect_timeout,
                "settings": self.settings}

    def _save_files(self, directory: Path) -> list[str]:
        """No files: the rows live in the database; index.json names it (no password)."""
        self._require_built()
        self.metadata["dimension"] = self._dim
        if self.dsn is not None and strip_password(self.dsn)[1]:
            self.metadata["password"] = (f"not saved; give it at load time through {self.password_env}, "
                                         "PGPASSWORD or ~/.pgpass")
        return []

    def _load_files(self, directory: Path, state: dict[str, Any]) -> None:
        self.refresh()
        comment = None
        with self._lock:
            comment = self._connection().execute("SELECT obj_description(to_regclass(%s), 'pg_class')",
                                                 (self._qualified(),)).fetchone()[0]
        if not (comment or "").startswith(f"{_MARKER} {self.kind} "):
            raise DataError(f"table {self.table!r} was not built as a recstack {self.kind!r} index "
                            f"(its comment is {comment!r}).")
        want = int(state.get("dimension", self._dim))
        if want != self._dim:
            raise DataError(f"{directory}/index.json says d={want} but table {self.table!r} holds d={self._dim}.")



def _scatter(r: np.ndarray, ids: np.ndarray, scores: np.ndarray, b: int, out_s: np.ndarray,
             out_i: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """Flat (row, id, score) results sorted by row then rank -> out_*[rows[row], rank]; returns [b] counts."""
    counts = np.bincount(r, minlength=b)
    if r.shape[0]:
        starts = np.zeros(b, dtype=np.int64)
        np.cumsum(counts[:-1], out=starts[1:])
        rank = np.arange(r.shape[0]) - starts[r]
        out_i[rows[r], rank] = ids
        out_s[rows[r], rank] = scores
    return counts


def _literal(value: Any) -> Any:
    from psycopg import sql
    return sql.Literal(value)


def unqualified_identifier(name: str) -> Any:
    from psycopg import sql
    return sql.Identifier(name.split(".")[-1])


__all__ = ["DSN_ENV", "PASSWORD_ENV", "PgVector", "copy_records", "strip_password"]
