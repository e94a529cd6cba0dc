"""The pgvector backend's database connection: DSN handling without ever saving a password, and
one lazily opened connection with pgvector's types registered.

Connection string: ``dsn`` (libpq key=value or URI) or, when None, the environment
variable ``RECSTACK_PGVECTOR_DSN``. The password, when the DSN has none, comes from
``password_env`` (default ``RECSTACK_PGVECTOR_PASSWORD``), libpq's ``PGPASSWORD`` or
``~/.pgpass``. :func:`strip_password` gives the DSN that may be written to disk.
"""

from __future__ import annotations

import os
import threading
from typing import Any

from ..core.errors import ConfigError
from .pgvector_wire import register_types, require_psycopg

DSN_ENV = "RECSTACK_PGVECTOR_DSN"
PASSWORD_ENV = "RECSTACK_PGVECTOR_PASSWORD"


def strip_password(dsn: str) -> tuple[str, bool]:
    """(dsn without its password, whether it had one); libpq key=value or URI in, key=value out."""
    from psycopg.conninfo import conninfo_to_dict, make_conninfo
    try:
        parts = conninfo_to_dict(dsn)
    except Exception as exc:             # psycopg.ProgrammingError: unparsable DSN
        raise ConfigError(f"invalid PostgreSQL connection string: {exc}") from None
    had = parts.pop("password", None) is not None
    return make_conninfo(**{k: str(v) for k, v in parts.items()}), had


def describe_dsn(dsn: str) -> str:
    """host/port/dbname/user of a DSN, for messages (never the password)."""
    from psycopg.conninfo import conninfo_to_dict
    try:
        parts = conninfo_to_dict(dsn)
    except Exception:
        return "(unparsable DSN)"
    shown = " ".join(f"{k}={parts[k]}" for k in ("host", "port", "dbname", "user") if k in parts)
    return shown or "(libpq defaults)"


class PgConnection:
    """One autocommit connection, opened on first use (and again after :meth:`close`).

    Statements from several threads share it, serialised by :attr:`lock` (a re-entrant
    lock: hold it around a connection's use). Session settings are sent only when they
    change (:meth:`set`).

    Args:
        dsn: libpq connection string or URI; None reads ``RECSTACK_PGVECTOR_DSN``.
        password_env: environment variable read for the password when the DSN has none.
        connect_timeout: seconds before an unreachable server is reported.
        settings: session settings applied on connect (e.g. {"work_mem": "64MB"}).
    """

    def __init__(self, dsn: str | None, password_env: str = PASSWORD_ENV, connect_timeout: int = 10,
                 settings: dict[str, str] | None = None):
        self.dsn = dsn
        self.password_env = password_env
        self.connect_timeout = int(connect_timeout)
        self.settings = dict(settings or {})
        self.lock = threading.RLock()
        self._conn: Any = None
        self._session: dict[str, str] = {}

    @property
    def opened(self) -> bool:
        """Whether a connection was opened (and not closed since)."""
        return self._conn is not None

    def conninfo(self) -> str:
        """The libpq connection string to connect with (password added from the environment)."""
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

    def get(self) -> Any:
        """The open connection (connecting, enabling pgvector and registering its types if needed)."""
        if self._conn is not None and not self._conn.closed:
            return self._conn
        psycopg = require_psycopg()
        conninfo = self.conninfo()
        try:
            conn = psycopg.connect(conninfo, autocommit=True)
        except psycopg.OperationalError as exc:
            reason = str(exc).strip().rstrip(".?")
            raise ConfigError(
                f"cannot connect to PostgreSQL at {describe_dsn(conninfo)}: {reason}. Start the server (or "
                f"check host/port/user/dbname and the password in {self.password_env} / PGPASSWORD), or start "
                "a throwaway one with recstack.testing.postgres.local_postgres().") from None
        try:
            self._ensure_extension(conn)
            register_types(conn)
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
        psycopg = require_psycopg()
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
        with self.lock:
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

    def set(self, name: str, value: Any) -> None:
        """Session setting, sent only when it changes."""
        if self._session.get(name) != str(value):
            self.get().execute("SELECT set_config(%s, %s, false)", (name, str(value)))
            self._session[name] = str(value)
