"""A throwaway local PostgreSQL server with pgvector, for tests, benchmarks and trying the pgvector index.

:func:`local_postgres` runs ``initdb`` in a temporary directory, starts the server
with ``pg_ctl`` on a free 127.0.0.1 port with password authentication, enables
pgvector, yields the DSN, and stops and deletes everything on exit.

The binaries come from ``RECSTACK_PG_BIN`` when set, else from the PyPI package
``pgserver`` (Apache-2.0; PostgreSQL 16.2 with pgvector 0.6.2 in its
``pginstall/bin``, used as plain binaries - pgserver's own server management is not
used), else from a system install (``pg_ctl`` on PATH, /usr/lib/postgresql/<ver>/bin,
...). ``RECSTACK_PG_SEARCH`` limits the automatic search (``pgserver``, ``system``,
both by default). pgvector 0.6 has no iterative HNSW scan; ``PgVectorHNSW`` then
relies on its exact fallback for rows that filters leave short of k.

This is development tooling, not part of serving: nothing in ``recstack`` outside
the tests and benchmarks starts a server.
"""

from __future__ import annotations

import glob
import os
import re
import secrets
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from ..core.errors import ConfigError
from ..index.pgvector_wire import require_psycopg

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
            psycopg = require_psycopg()
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

__all__ = ["BIN_ENV", "SEARCH_ENV", "find_postgres_bin", "local_postgres", "no_server_reason", "pgserver_bin",
           "pgvector_installed"]
