"""PgVector / PgVectorHNSW: the Index interface on PostgreSQL with the pgvector extension.

For catalogues that outgrow one process: the embeddings live in a PostgreSQL
table ``(id bigint primary key, embedding vector(d))`` that many serving
processes (or other services) can share, mutate transactionally and back up
with ordinary database tooling.

* :class:`PgVector` (``kind="pgvector"``) is exact: every search is a
  sequential scan ordered by pgvector's inner product, so results equal
  :class:`~recstack.index.BruteForce`'s (float tolerance; ties aside).
* :class:`PgVectorHNSW` (``kind="pgvector_hnsw"``) adds an HNSW index
  (``USING hnsw (embedding vector_ip_ops)``) and is approximate: ``ef_search``
  trades recall for speed; :meth:`PgVectorHNSW.measure_recall` reports recall
  against the exact scan. Filters are never approximate in a way that loses
  results: rows the graph search leaves short are redone exactly, and
  allow-lists are always scored exactly.

Why pgvector: it is the most widely deployed vector search on a general
database (PostgreSQL is already in most stacks), it runs as an ordinary
server that tests can start on loopback from a throwaway ``initdb`` cluster
(:func:`local_postgres`), and it has both an exact scan and an ANN index.
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
* Bulk load: ``COPY ... FROM STDIN (FORMAT BINARY)`` with the COPY records
  built by numpy in chunks of ``copy_chunk`` rows (bounded memory), into a new
  table that replaces the old one in the same transaction (readers see the old
  catalogue until commit).

Connection: ``dsn`` (libpq key=value or URI) or, when None, the environment
variable ``RECSTACK_PGVECTOR_DSN``. ``save()`` writes only ``index.json``
(connection parameters and table; the rows stay in the database) and never a
password: a DSN read from the environment is saved as "read it from the
environment again", and a password in an explicit DSN is dropped; at load time
it comes from ``password_env`` (default ``RECSTACK_PGVECTOR_PASSWORD``),
libpq's ``PGPASSWORD`` or ``~/.pgpass``.

Optional dependency: ``pip install 'recstack[pgvector]'`` (psycopg 3, plus
``pgserver`` where it has wheels and is used: CPython <= 3.12 on Linux
x86_64 and macOS), and a PostgreSQL server with the ``vector`` extension.

Local server for development and tests (:func:`local_postgres`): the binaries
come from ``RECSTACK_PG_BIN`` when set, else from the PyPI package ``pgserver``
(Apache-2.0; PostgreSQL 16.2 with pgvector 0.6.2 in its ``pginstall/bin``, used
as plain binaries - pgserver's own server management is not used), else from a
system install (``pg_ctl`` on PATH, /usr/lib/postgresql/<ver>/bin, ...).
``RECSTACK_PG_SEARCH`` limits the automatic search (``pgserver``, ``system``,
both by default). pgvector 0.6 has no iterative HNSW scan; :class:`PgVectorHNSW`
then relies on its exact fallback for rows that filters leave short of k.
"""

from __future__ import annotations

import glob
import os
import re
import secrets
import shutil
import socket
import struct
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..core.errors import ConfigError, DataError, ShapeError
from .base import Index, RowIds, allow_rows, as_ids, as_numpy_f32, check_unique, exclusion_rows, recall_at_k

DSN_ENV = "RECSTACK_PGVECTOR_DSN"
PASSWORD_ENV = "RECSTACK_PGVECTOR_PASSWORD"
_MARKER = "recstack.index"          # table comment prefix: build() only replaces tables it made
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,49}$")
_INT8_ARRAY_OID, _FLOAT8_ARRAY_OID, _INT4_ARRAY_OID = 1016, 1022, 1007
_INT8_OID, _FLOAT8_OID, _INT4_OID = 20, 701, 23


def _psycopg() -> Any:
    try:
        import psycopg
    except ImportError:
        raise ImportError("The pgvector index needs psycopg 3: pip install 'recstack[pgvector]' "
                          "(or pip install 'psycopg[binary]').") from None
    return psycopg


# ---------------------------------------------------------------------------------------
# Binary wire formats, built and parsed with numpy
# ---------------------------------------------------------------------------------------
def _vector_record(d: int) -> np.dtype:
    """One length-prefixed pgvector value: int32 length, uint16 dim, uint16 unused, d x float4 (big-endian)."""
    return np.dtype([("len", ">i4"), ("dim", ">u2"), ("unused", ">u2"), ("v", ">f4", (d,))])


def _copy_record(d: int) -> np.dtype:
    """One binary COPY tuple (id bigint, embedding vector(d))."""
    return np.dtype([("nfields", ">i2"), ("id_len", ">i4"), ("id", ">i8"), ("v_len", ">i4"),
                     ("dim", ">u2"), ("unused", ">u2"), ("v", ">f4", (d,))])


_COPY_HEADER = b"PGCOPY\n\xff\r\n\x00" + struct.pack(">ii", 0, 0)
_COPY_TRAILER = struct.pack(">h", -1)


def copy_records(ids: np.ndarray, x: np.ndarray) -> bytes:
    """ids [n] int64, x [n, d] float32 -> the tuples of a binary COPY (no header/trailer)."""
    d = x.shape[1]
    rec = np.empty(x.shape[0], dtype=_copy_record(d))
    rec["nfields"], rec["id_len"], rec["id"] = 2, 8, ids
    rec["v_len"], rec["dim"], rec["unused"], rec["v"] = 4 + 4 * d, d, 0, x
    return rec.tobytes()


def _array_header(n: int, elem_oid: int) -> bytes:
    if n == 0:
        return struct.pack(">iii", 0, 0, elem_oid)
    return struct.pack(">iiiii", 1, 0, elem_oid, n, 1)


def _dump_array(values: np.ndarray, elem: str, elem_oid: int) -> bytes:
    """1-D fixed-width array (int8/int4/float8) in PostgreSQL's binary array format."""
    rec = np.empty(values.shape[0], dtype=[("len", ">i4"), ("v", elem)])
    rec["len"], rec["v"] = np.dtype(elem).itemsize, values
    return _array_header(values.shape[0], elem_oid) + rec.tobytes()


def _dump_vectors(x: np.ndarray, elem_oid: int) -> bytes:
    """[n, d] float32 -> binary vector[]."""
    rec = np.empty(x.shape[0], dtype=_vector_record(x.shape[1]))
    rec["len"], rec["dim"], rec["unused"], rec["v"] = 4 + 4 * x.shape[1], x.shape[1], 0, x
    return _array_header(x.shape[0], elem_oid) + rec.tobytes()


def _array_body(data: Any) -> tuple[int, memoryview]:
    """(number of elements, element bytes) of a binary 1-D array without NULLs."""
    buf = memoryview(data)
    ndim, has_null = struct.unpack_from(">ii", buf, 0)
    if ndim == 0:
        return 0, buf[12:12]
    if ndim != 1 or has_null:
        raise DataError("unexpected array from PostgreSQL (multi-dimensional or with NULLs).")
    (n,) = struct.unpack_from(">i", buf, 12)
    return n, buf[20:]


def _load_array(data: Any, elem: str) -> np.ndarray:
    n, body = _array_body(data)
    rec = np.frombuffer(body, dtype=[("len", ">i4"), ("v", elem)], count=n)
    return rec["v"].astype(np.dtype(elem).newbyteorder("="))


def _load_vectors(data: Any) -> np.ndarray:
    n, body = _array_body(data)
    if n == 0:
        return np.empty((0, 0), np.float32)
    (d,) = struct.unpack_from(">H", body, 4)
    return np.frombuffer(body, dtype=_vector_record(d), count=n)["v"].astype(np.float32)


class _Ids:
    """Parameter wrapper: int64 [n] -> binary int8[]."""

    def __init__(self, ids: np.ndarray):
        self.ids = np.asarray(ids, dtype=np.int64).reshape(-1)


class _Int4s:
    """Parameter wrapper: [n] -> binary int4[]."""

    def __init__(self, values: np.ndarray):
        self.values = np.asarray(values, dtype=np.int32).reshape(-1)


class _Floats:
    """Parameter wrapper: [n] -> binary float8[]."""

    def __init__(self, values: np.ndarray):
        self.values = np.asarray(values, dtype=np.float64).reshape(-1)


class _Vectors:
    """Parameter wrapper: [n, d] float32 -> binary vector[]."""

    def __init__(self, x: np.ndarray):
        self.x = np.ascontiguousarray(x, dtype=np.float32)


def _register_types(conn: Any) -> None:
    """Binary dumpers for the wrappers and numpy loaders for int8[]/float8[]/int4[]/vector[]."""
    psycopg = _psycopg()
    from psycopg.adapt import Dumper, Loader
    from psycopg.pq import Format

    info = psycopg.types.TypeInfo.fetch(conn, "vector")
    if info is None:
        raise ConfigError("the 'vector' type is missing in this database; run CREATE EXTENSION vector.")
    vec_oid, vec_array_oid = info.oid, info.array_oid

    def dumper(cls: type, oid: int, fn: Any) -> None:
        conn.adapters.register_dumper(cls, type(f"{cls.__name__}Dumper", (Dumper,), {
            "format": Format.BINARY, "oid": oid, "dump": lambda self, obj: fn(obj)}))

    dumper(_Ids, _INT8_ARRAY_OID, lambda o: _dump_array(o.ids, ">i8", _INT8_OID))
    dumper(_Int4s, _INT4_ARRAY_OID, lambda o: _dump_array(o.values, ">i4", _INT4_OID))
    dumper(_Floats, _FLOAT8_ARRAY_OID, lambda o: _dump_array(o.values, ">f8", _FLOAT8_OID))
    dumper(_Vectors, vec_array_oid, lambda o: _dump_vectors(o.x, vec_oid))

    def loader(oid: int, fn: Any) -> None:
        conn.adapters.register_loader(oid, type(f"Loader{oid}", (Loader,), {
            "format": Format.BINARY, "load": lambda self, data: fn(data)}))

    loader(_INT8_ARRAY_OID, lambda b: _load_array(b, ">i8"))
    loader(_FLOAT8_ARRAY_OID, lambda b: _load_array(b, ">f8"))
    loader(_INT4_ARRAY_OID, lambda b: _load_array(b, ">i4"))
    loader(vec_array_oid, _load_vectors)


# ---------------------------------------------------------------------------------------
# Connection parameters
# ---------------------------------------------------------------------------------------
def strip_password(dsn: str) -> tuple[str, bool]:
    """(dsn without its password, whether it had one); libpq key=value or URI in, key=value out."""
    from psycopg.conninfo import conninfo_to_dict, make_conninfo
    try:
        parts = conninfo_to_dict(dsn)
    except Exception as exc:             # psycopg.ProgrammingError: unparsable DSN
        raise ConfigError(f"invalid PostgreSQL connection string: {exc}") from None
    had = parts.pop("password", None) is not None
    return make_conninfo(**{k: str(v) for k, v in parts.items()}), had


def _describe_dsn(dsn: str) -> str:
    """host/port/dbname/user of a DSN, for messages (never the password)."""
    from psycopg.conninfo import conninfo_to_dict
    try:
        parts = conninfo_to_dict(dsn)
    except Exception:
        return "(unparsable DSN)"
    shown = " ".join(f"{k}={parts[k]}" for k in ("host", "port", "dbname", "user") if k in parts)
    return shown or "(libpq defaults)"


# ---------------------------------------------------------------------------------------
# The exact index
# ---------------------------------------------------------------------------------------
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

    kind = "pgvector"
    is_exact = True

    def __init__(self, dsn: str | None = None, table: str = "recstack_items",
                 password_env: str = PASSWORD_ENV, copy_chunk: int = 65536, connect_timeout: int = 10,
                 settings: dict[str, str] | None = None):
        _psycopg()                                        # fail at construction, with the install hint
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
        self._conn: Any = None
        self._lock = threading.RLock()    # one connection: statements from threads are serialised
        self._count = 0
        self._dim = 0
        self._session: dict[str, str] = {}

    # -- connection ---------------------------------------------------------------------------
    def _conninfo(self) -> str:
        dsn = self.dsn if self.dsn is not None else os.environ.get(DSN_ENV)
        if dsn is None:
            raise ConfigError(f"no PostgreSQL connection string: pass dsn= or set {DSN_ENV} "
                              "(e.g. 'host=127.0.0.1 port=5432 dbname=app user=app'); the password can come "
                              f"from {self.password_env}, PGPASSWORD or ~/.pgpass.")
        from psycopg.conninfo import conninfo_to_dict, make_conninfo
        try:
            parts = conninfo_to_dict(dsn)
        except Exception as exc:         # psycopg.ProgrammingError: unparsable DSN
            raise ConfigError(f"invalid PostgreSQL connection string: {exc}") from None
        if "password" not in parts and os.environ.get(self.password_env):
            parts["password"] = os.environ[self.password_env]
        parts.setdefault("connect_timeout", self.connect_timeout)
        parts.setdefault("application_name", "recstack")
        return make_conninfo(**{k: str(v) for k, v in parts.items()})

    def _connection(self) -> Any:
        if self._conn is not None and not self._conn.closed:
            return self._conn
        psycopg = _psycopg()
        conninfo = self._conninfo()
        try:
            conn = psycopg.connect(conninfo, autocommit=True)
        except psycopg.OperationalError as exc:
            reason = str(exc).strip().rstrip(".?")
            raise ConfigError(
                f"cannot connect to PostgreSQL at {_describe_dsn(conninfo)}: {reason}. Start the server (or "
                f"check host/port/user/dbname and the password in {self.password_env} / PGPASSWORD), or start "
                "a throwaway one with recstack.index.pgvector_index.local_postgres().") from None
        try:
            self._ensure_extension(conn)
            _register_types(conn)
            for name, value in self.settings.items():
                conn.execute("SELECT set_config(%s, %s, false)", (name, str(value)))
        except BaseException:
            conn.close()
            raise
        self._conn = conn
        self._session = {}
        return conn

    @staticmethod
    def _ensure_extension(conn: Any) -> None:
        """CREATE EXTENSION vector when available; a ConfigError saying how to install it otherwise."""
        psycopg = _psycopg()
        if conn.execute("SELECT 1 FROM pg_extension WHERE extname = 'vector'").fetchone():
            return
        available = conn.execute("SELECT default_version FROM pg_available_extensions "
                                 "WHERE name = 'vector'").fetchone()
        version = conn.execute("SHOW server_version_num").fetchone()[0]
        major = int(version) // 10000
        if available is None:
            raise ConfigError(
                f"the PostgreSQL {major} server has no pgvector extension installed. Install it on the server "
                f"(apt: postgresql-{major}-pgvector from Debian 13+/Ubuntu 24.04+/apt.postgresql.org; or build "
                "https://github.com/pgvector/pgvector: make && make install with pg_config on PATH), then "
                "connect again.")
        try:
            conn.execute("CREATE EXTENSION IF NOT EXISTS vector")
        except psycopg.errors.InsufficientPrivilege:
            raise ConfigError("pgvector is installed on the server but not enabled in this database, and this "
                              "user may not enable it: run CREATE EXTENSION vector; as a superuser (or the "
                              "database owner on PostgreSQL 13+ if the extension is trusted).") from None

    def close(self) -> None:
        """Close the database connection (reopened on next use)."""
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

    def __del__(self) -> None:
        conn = self.__dict__.get("_conn")
        if conn is not None:
            try:
                conn.close()
            except Exception:
                pass

    def _set_session(self, conn: Any, name: str, value: Any) -> None:
        """Session setting, sent only when it changes."""
        if self._session.get(name) != str(value):
            conn.execute("SELECT set_config(%s, %s, false)", (name, str(value)))
            self._session[name] = str(value)

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
        x = as_numpy_f32(embeddings)
        n, d = x.shape
        if n == 0:
            raise DataError(f"{type(self).__name__}.build got no candidates.")
        ids = np.arange(n, dtype=np.int64) if ids is None else as_ids(ids, n)
        check_unique(ids, "candidate ids")
        psycopg = _psycopg()
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
                                           name=_ident_last(self.table)))
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
                               new=_ident_last(f"{name}_pkey")))

    def _copy_in(self, conn: Any, table: Any, ids: np.ndarray, x: np.ndarray) -> None:
        """Binary COPY of ids [n] / x [n, d] in chunks of ``copy_chunk`` rows."""
        from psycopg import sql
        stmt = sql.SQL("COPY {} (id, embedding) FROM STDIN (FORMAT BINARY)").format(table)
        with conn.cursor() as cur, cur.copy(stmt) as copy:
            copy.write(_COPY_HEADER)
            for start in range(0, x.shape[0], self.copy_chunk):
                chunk = x[start:start + self.copy_chunk]
                if not np.isfinite(chunk).all():
                    bad = start + int(np.flatnonzero(~np.isfinite(chunk).all(1))[0])
                    raise DataError(f"embedding of candidate {int(ids[bad])} is not finite (NaN/inf); "
                                    "pgvector stores finite values only.")
                copy.write(copy_records(ids[start:start + self.copy_chunk], chunk))
            copy.write(_COPY_TRAILER)

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
                raise ConfigError(f"table {self.table!r} does not exist in {_describe_dsn(self._conninfo())}; "
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
                (_Ids(ids),), binary=True).fetchone()
        if found.shape[0] != ids.shape[0]:
            missing = np.setdiff1d(np.arange(1, ids.shape[0] + 1), found)
            raise DataError(f"unknown candidate id(s) {ids[missing - 1][:5].tolist()}; the index holds "
                            f"{self._count} candidates.")
        return torch.from_numpy(vecs.reshape(ids.shape[0], self._dim))

    def candidate_ids(self) -> np.ndarray:
        if self._count == 0 and self._conn is None:
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
        """Top-k by inner product; one SQL statement per batch (two when some rows have allow-lists).

        Args:
            queries: [B, d] query embeddings (tensor or array).
            k: results per row (capped at the number of candidates).
            exclude: ids never returned (Exclusions with ``query_keys``, B lists, RowIds).
            allow: B lists (None entries unrestricted) or RowIds; only these are returned.

        Returns:
            (scores [B, k'] float32 tensor, ids [B, k'] int64 ndarray), descending;
            padding (fewer than k' candidates left) is -inf / -1.
        """
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

    def _search_free(self, conn: Any, q: np.ndarray, k: int, excl: RowIds | None,
                     out_s: np.ndarray, out_i: np.ndarray, rows: np.ndarray) -> None:
        """Rows without an allow-list: exact scan, over-fetching past the row's exclusions."""
        self._search_rows(conn, self._exact_sql(), q, k, excl, None, out_s, out_i, rows)

    def _search_rows(self, conn: Any, stmt: Any, q: np.ndarray, k: int, excl: RowIds | None,
                     allow: RowIds | None, out_s: np.ndarray, out_i: np.ndarray, rows: np.ndarray) -> np.ndarray:
        """Run a LATERAL top-k statement for query rows ``q`` [b, d]; writes out_*[rows]; returns [b] counts."""
        b = q.shape[0]
        ex = excl if excl is not None else RowIds(np.zeros(b + 1, np.int64), np.empty(0, np.int64))
        al = allow if allow is not None else RowIds(np.zeros(b + 1, np.int64), np.empty(0, np.int64))
        fetch = min(self._count, k + int(ex.counts.max(initial=0)))
        params = {"v": _Vectors(q), "ex": _Ids(ex.ids), "elo": _Int4s(ex.indptr[:-1]), "ehi": _Int4s(ex.indptr[1:]),
                  "al": _Ids(al.ids), "alo": _Int4s(al.indptr[:-1]), "ahi": _Int4s(al.indptr[1:]),
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
        ex = ex if ex is not None else RowIds(np.zeros(q.shape[0] + 1, np.int64), np.empty(0, np.int64))
        stmt = self._sql(
            "WITH q AS MATERIALIZED (SELECT u.r, u.v, u.thr, (%(ex)b::int8[])[u.elo + 1 : u.ehi] AS ex FROM "
            "unnest(%(v)b::vector[], %(thr)b::float8[], %(elo)b::int4[], %(ehi)b::int4[]) WITH ORDINALITY AS "
            "u(v, thr, elo, ehi, r)) SELECT coalesce(array_agg(h.n ORDER BY q.r), '{{}}') FROM q CROSS JOIN "
            "LATERAL (SELECT count(*)::int8 AS n FROM {tbl} t WHERE -(t.embedding <#> q.v) > q.thr "
            "AND t.id <> ALL(q.ex)) h")
        with self._lock:
            counts = self._connection().execute(stmt, {
                "v": _Vectors(q), "thr": _Floats(thr), "ex": _Ids(ex.ids), "elo": _Int4s(ex.indptr[:-1]),
                "ehi": _Int4s(ex.indptr[1:])}, binary=True).fetchone()[0]
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
            cur = self._connection().execute(self._sql("DELETE FROM {tbl} WHERE id = ANY(%b::int8[])"), (_Ids(ids),))
            removed = int(cur.rowcount)
            self._count -= removed
        return removed

    def add(self, ids: Any, embeddings: Any) -> "PgVector":
        """Insert new candidates (binary COPY in one transaction); DataError if an id is already there."""
        if self._count == 0 and self._dim == 0:
            return self.build(ids, embeddings)
        x = as_numpy_f32(embeddings)
        if x.shape[1] != self._dim:
            raise ShapeError(f"embeddings must be [n, {self._dim}]; got {tuple(x.shape)}.")
        new = as_ids(ids, x.shape[0])
        check_unique(new, "new candidate ids")
        with self._lock:
            conn = self._connection()
            with conn.transaction():
                clash = conn.execute(self._sql("SELECT coalesce(array_agg(id), '{{}}') FROM {tbl} "
                                               "WHERE id = ANY(%b::int8[])"), (_Ids(new),), binary=True).fetchone()[0]
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


def _ident_last(name: str) -> Any:
    from psycopg import sql
    return sql.Identifier(name.split(".")[-1])


# ---------------------------------------------------------------------------------------
# HNSW
# ---------------------------------------------------------------------------------------
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

    kind = "pgvector_hnsw"
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
        self._set_session(conn, "maintenance_work_mem", self.maintenance_work_mem)
        if self.build_workers is not None:
            self._set_session(conn, "max_parallel_maintenance_workers", int(self.build_workers))
        start = time.perf_counter()
        conn.execute(sql.SQL("CREATE INDEX {} ON {} USING hnsw (embedding vector_ip_ops) WITH (m = {}, "
                             "ef_construction = {})").format(self._ident("__build_hnsw"), table,
                                                             sql.Literal(self.m), sql.Literal(self.ef_construction)))
        self.metadata["hnsw_build_seconds"] = round(time.perf_counter() - start, 3)

    def _rename_indexes(self, conn: Any) -> None:
        super()._rename_indexes(conn)
        name = self.table.split(".")[-1]
        conn.execute(self._sql("ALTER INDEX IF EXISTS {old} RENAME TO {new}", old=self._ident("__build_hnsw"),
                               new=_ident_last(f"{name}_hnsw")))

    def _ann_sql(self) -> Any:
        # ORDER BY the distance operator itself: the planner serves it from the HNSW index.
        return self._sql(self._ROWS_CTE + self._AGG +
                         "(SELECT c.id, c.score FROM (SELECT t.id, -(t.embedding <#> q.v) AS score FROM {tbl} t "
                         "ORDER BY t.embedding <#> q.v LIMIT %(fetch)s) c WHERE c.id <> ALL(q.ex) "
                         "ORDER BY c.score DESC, c.id LIMIT %(k)s) h")

    def _search_free(self, conn: Any, q: np.ndarray, k: int, excl: RowIds | None,
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
        self._set_session(conn, "hnsw.ef_search", max(self.ef_search, min(fetch, 1000)))
        if self._has_iterative_scan(conn):
            self._set_session(conn, "hnsw.iterative_scan", self.iterative_scan)

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


# ---------------------------------------------------------------------------------------
# A throwaway local server (tests, benchmarks, trying it out)
# ---------------------------------------------------------------------------------------
SEARCH_ENV = "RECSTACK_PG_SEARCH"
BIN_ENV = "RECSTACK_PG_BIN"


def pgserver_bin() -> Path | None:
    """``pginstall/bin`` of the installed ``pgserver`` package (found without importing it), or None."""
    import importlib.util
    try:
        spec = importlib.util.find_spec("pgserver")
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    for location in spec.submodule_search_locations:
        path = Path(location) / "pginstall" / "bin"
        if path.is_dir():
            return path
    return None


def _system_bins() -> list[Path]:
    candidates: list[Path] = []
    on_path = shutil.which("pg_ctl")
    if on_path:
        candidates.append(Path(on_path).resolve().parent)

    def version(p: Path) -> float:
        found = re.findall(r"(\d+(?:\.\d+)?)", str(p))
        return float(found[-1]) if found else 0.0

    for pattern in ("/usr/lib/postgresql/*/bin", "/usr/pgsql-*/bin", "/opt/homebrew/opt/postgresql@*/bin",
                    "/usr/local/pgsql/bin"):
        candidates += sorted((Path(p) for p in glob.glob(pattern)), key=version, reverse=True)
    return candidates


def _has_server(path: Path) -> bool:
    return (path / "initdb").exists() and (path / "pg_ctl").exists()


def find_postgres_bin() -> Path | None:
    """A PostgreSQL bin directory holding initdb + pg_ctl, preferring one with pgvector.

    Order: ``RECSTACK_PG_BIN`` (when set, the only place looked at); the ``pgserver``
    package's bundled binaries; then system installs (``pg_ctl`` on PATH,
    /usr/lib/postgresql/<ver>/bin newest first, /usr/pgsql-*, Homebrew, /usr/local/pgsql).
    ``RECSTACK_PG_SEARCH`` (comma/space separated ``pgserver``, ``system``; default both)
    limits the automatic search, e.g. ``RECSTACK_PG_SEARCH=pgserver`` ignores system
    PostgreSQL. The first candidate with pgvector wins, else the first with a server at all.
    """
    if os.environ.get(BIN_ENV):
        path = Path(os.environ[BIN_ENV])
        return path if _has_server(path) else None
    search = re.split(r"[\s,]+", os.environ.get(SEARCH_ENV, "pgserver,system").strip().lower())
    unknown = set(search) - {"pgserver", "system", ""}
    if unknown:
        raise ConfigError(f"{SEARCH_ENV} takes 'pgserver' and/or 'system'; got {sorted(unknown)}.")
    candidates: list[Path] = []
    if "pgserver" in search:
        bundled = pgserver_bin()
        candidates += [bundled] if bundled is not None else []
    if "system" in search:
        candidates += _system_bins()
    servers = [p for p in dict.fromkeys(candidates) if _has_server(p)]
    return next((p for p in servers if pgvector_installed(p)), servers[0] if servers else None)


def pgvector_installed(bin_dir: Path) -> bool:
    """Whether the server in ``bin_dir`` has pgvector's control file."""
    try:
        share = subprocess.run([str(bin_dir / "pg_config"), "--sharedir"], capture_output=True, text=True,
                               check=True, timeout=30).stdout.strip()
        return (Path(share) / "extension" / "vector.control").exists()
    except (OSError, subprocess.SubprocessError):
        major = re.findall(r"/(\d+)/bin", str(bin_dir))
        return bool(major) and Path(f"/usr/share/postgresql/{major[0]}/extension/vector.control").exists()


def no_server_reason() -> str:
    """Why :func:`find_postgres_bin` found nothing, and how to get a server (for messages)."""
    if os.environ.get(BIN_ENV):
        return f"{BIN_ENV}={os.environ[BIN_ENV]} holds no initdb + pg_ctl"
    search = os.environ.get(SEARCH_ENV, "pgserver,system")
    return (f"no PostgreSQL server binaries (initdb, pg_ctl) found (searched: {search or 'nothing'}; "
            f"pgserver {'installed' if pgserver_bin() else 'not installed'}): pip install 'recstack[pgvector]' "
            f"(brings pgserver's bundled PostgreSQL + pgvector on CPython <= 3.12, Linux x86_64/macOS), "
            f"apt install postgresql, or set {BIN_ENV} to their directory")


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def local_postgres(settings: dict[str, str] | None = None, bin_dir: Path | None = None,
                   user: str | None = None) -> Iterator[str]:
    """Start a throwaway PostgreSQL cluster on 127.0.0.1 with pgvector enabled; yield its DSN.

    ``initdb`` makes a cluster in a new temporary directory (password authentication on
    TCP, a random password that is part of the yielded DSN), ``pg_ctl`` starts it on a
    free loopback port, and on exit it is stopped and the directory deleted. PostgreSQL
    refuses to run as root, so under root the server runs as ``user`` (default: the
    ``postgres`` account, else ``nobody``).

    Args:
        settings: server settings (``-c name=value``), e.g. {"shared_buffers": "512MB"}.
        bin_dir: directory of initdb/pg_ctl (default :func:`find_postgres_bin`: ``RECSTACK_PG_BIN``,
            else pgserver's bundled binaries, else a system install).
        user: account the server runs as when started by root.
    """
    bin_dir = bin_dir or find_postgres_bin()
    if bin_dir is None:
        raise ConfigError(no_server_reason() + ".")
    run_as: dict[str, Any] = {}
    root = Path(tempfile.mkdtemp(prefix="recstack-pg-"))
    try:
        if os.geteuid() == 0:
            import pwd
            name = user or next((u for u in ("postgres", "nobody") if _has_user(u)), None)
            if name is None:
                raise ConfigError("running as root and no 'postgres' or 'nobody' account to run PostgreSQL as.")
            entry = pwd.getpwnam(name)
            os.chown(root, entry.pw_uid, entry.pw_gid)
            run_as = {"user": entry.pw_uid, "group": entry.pw_gid, "extra_groups": []}
            # The binaries (e.g. pgserver's, inside a virtual environment) must be reachable by that account.
            for exe in ("initdb", "postgres"):
                try:
                    ok = subprocess.run([str(bin_dir / exe), "--version"], capture_output=True, timeout=30,
                                        cwd="/", **run_as).returncode == 0
                except (OSError, subprocess.SubprocessError):
                    ok = False
                if not ok:
                    raise ConfigError(
                        f"running as root, so PostgreSQL runs as '{name}', which cannot run {bin_dir / exe}: "
                        f"make the directories up to {bin_dir} readable and searchable by others (chmod o+rx; a "
                        "virtual environment under /root is not), pass user=, or run as a non-root user.")
        os.chmod(root, 0o700)
        password = secrets.token_hex(16)
        pwfile = root / "pw"
        pwfile.write_text(password + "\n")
        if run_as:
            os.chown(pwfile, run_as["user"], run_as["group"])
        data = root / "data"
        env = {**os.environ, "LC_ALL": "C", "LANG": "C"}

        def run(*args: str, timeout: int = 120) -> None:
            done = subprocess.run(list(args), capture_output=True, text=True, env=env, cwd=root, timeout=timeout,
                                  **run_as)
            if done.returncode:
                log = root / "server.log"
                tail = log.read_text(errors="replace")[-2000:] if log.exists() else ""
                raise ConfigError(f"{Path(args[0]).name} failed ({done.returncode}): "
                                  f"{(done.stderr or done.stdout).strip()[-2000:]}\n{tail}")

        run(str(bin_dir / "initdb"), "-D", str(data), "-U", "recstack", "--pwfile", str(pwfile), "-E", "UTF8",
            "--locale=C", "--auth-local=trust", "--auth-host=scram-sha-256", "--no-sync")
        port = _free_port()
        options = {"listen_addresses": "127.0.0.1", "port": str(port), "unix_socket_directories": str(root),
                   **(settings or {})}
        opts = " ".join(f"-c {k}={v}" for k, v in options.items())
        run(str(bin_dir / "pg_ctl"), "-D", str(data), "-l", str(root / "server.log"), "-w", "-t", "60",
            "-o", opts, "start")
        try:
            dsn = f"host=127.0.0.1 port={port} dbname=postgres user=recstack password={password}"
            psycopg = _psycopg()
            with psycopg.connect(dsn, autocommit=True) as conn:
                if pgvector_installed(bin_dir):
                    conn.execute("CREATE EXTENSION IF NOT EXISTS vector")
            yield dsn
        finally:
            try:
                run(str(bin_dir / "pg_ctl"), "-D", str(data), "-m", "fast", "-w", "stop")
            except (ConfigError, subprocess.SubprocessError):
                run(str(bin_dir / "pg_ctl"), "-D", str(data), "-m", "immediate", "-w", "stop")
    finally:
        shutil.rmtree(root, ignore_errors=True)


def _has_user(name: str) -> bool:
    import pwd
    try:
        pwd.getpwnam(name)
        return True
    except KeyError:
        return False


__all__ = ["BIN_ENV", "DSN_ENV", "PASSWORD_ENV", "SEARCH_ENV", "PgVector", "PgVectorHNSW", "copy_records",
           "find_postgres_bin", "local_postgres", "no_server_reason", "pgserver_bin", "pgvector_installed",
           "strip_password"]
