"""PgVector / PgVectorHNSW on a real PostgreSQL + pgvector server, through the index contract.

The server is a throwaway cluster: ``initdb`` in a temporary directory, started with
``pg_ctl`` on a free 127.0.0.1 port (as the ``postgres`` account when the tests run as
root), stopped and deleted at the end of the session
(:func:`recstack.testing.postgres.local_postgres`).

How to get these tests to run (they skip, saying which part is missing, otherwise):

* ``pip install -e '.[dev]'`` (or ``'recstack[pgvector]'``) is enough on CPython <= 3.12,
  Linux x86_64 / macOS: it brings psycopg 3 and ``pgserver``, whose wheel bundles PostgreSQL
  16 with pgvector 0.6; its binaries are used as they are (``pginstall/bin``);
* else a system PostgreSQL with pgvector for that version (found on PATH, in
  /usr/lib/postgresql/<ver>/bin, ...): ``apt install postgresql postgresql-<ver>-pgvector``
  (Debian 13+, Ubuntu 24.04+, apt.postgresql.org), or pgvector built from source; see
  docs/serving.md;
* ``RECSTACK_PG_BIN=<dir>`` picks the binaries; ``RECSTACK_PG_SEARCH=pgserver`` or
  ``=system`` limits the automatic search (pgserver's binaries come before system ones);
* ``RECSTACK_INSTALL_PGVECTOR=1``: the fixture tries ``apt-get install postgresql
  postgresql-<ver>-pgvector`` itself (root, apt sources that carry the package);
* or ``RECSTACK_PGVECTOR_TEST_DSN``: use an existing server with pgvector (the tests create
  and drop tables named ``recstack_test_*``; some tests need a superuser).

The exact backend runs the same contract tests as BruteForce/FAISS/ScaNN (the functions of
test_contract.py, with its ``make`` pointed at this backend); HNSW runs the ones that do
not need an exhaustive setting (an HNSW graph has none), plus a recall check.
"""

from __future__ import annotations

import itertools
import json
import os
import shutil
import subprocess

import numpy as np
import pytest
import torch

psycopg = pytest.importorskip("psycopg", reason="the pgvector backend needs psycopg 3: "
                                                "pip install 'recstack[pgvector]'")

from recstack import Exclusions  # noqa: E402
from recstack.core.errors import ConfigError, DataError, ShapeError  # noqa: E402
from recstack.index import BruteForce, Index, load_index  # noqa: E402
from recstack.index.pgvector_hnsw import PgVectorHNSW  # noqa: E402
from recstack.index.pgvector_index import PASSWORD_ENV, PgVector, copy_records, strip_password  # noqa: E402
from recstack.testing import postgres  # noqa: E402
from recstack.testing.postgres import (find_postgres_bin, local_postgres, no_server_reason,  # noqa: E402
                                       pgvector_installed)

from . import test_contract as contract  # noqa: E402
from .conftest import clustered, numpy_top_k  # noqa: E402


# ---------------------------------------------------------------------------------------
# The server
# ---------------------------------------------------------------------------------------
def _try_apt_install() -> None:
    """RECSTACK_INSTALL_PGVECTOR=1: apt-get install the server and pgvector for its version."""
    if os.environ.get("RECSTACK_INSTALL_PGVECTOR") != "1" or shutil.which("apt-get") is None or os.geteuid() != 0:
        return
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    try:
        if find_postgres_bin() is None:
            subprocess.run(["apt-get", "install", "-y", "--no-install-recommends", "postgresql"], env=env,
                           capture_output=True, timeout=600, check=False)
        bin_dir = find_postgres_bin()
        if bin_dir is not None:
            major = bin_dir.parent.name
            subprocess.run(["apt-get", "install", "-y", "--no-install-recommends", f"postgresql-{major}-pgvector"],
                           env=env, capture_output=True, timeout=600, check=False)
    except (OSError, subprocess.SubprocessError):
        pass


@pytest.fixture(scope="session")
def pg_dsn():
    """DSN of a PostgreSQL server with pgvector (throwaway local cluster, or RECSTACK_PGVECTOR_TEST_DSN)."""
    if os.environ.get("RECSTACK_PGVECTOR_TEST_DSN"):
        yield os.environ["RECSTACK_PGVECTOR_TEST_DSN"]
        return
    bin_dir = find_postgres_bin()
    if bin_dir is None or not pgvector_installed(bin_dir):
        _try_apt_install()
        bin_dir = find_postgres_bin()
    if bin_dir is None:
        pytest.skip(no_server_reason() + "; or set RECSTACK_PGVECTOR_TEST_DSN (see this module's docstring)")
    if not pgvector_installed(bin_dir):
        pytest.skip(f"PostgreSQL in {bin_dir} has no pgvector: pip install pgserver, install "
                    "postgresql-<ver>-pgvector or build it (see this module's docstring)")
    try:
        server = local_postgres(settings={"fsync": "off", "synchronous_commit": "off"}, bin_dir=bin_dir)
        dsn = server.__enter__()
    except ConfigError as exc:  # e.g. root with binaries the server account cannot read (a venv under /root)
        pytest.skip(f"cannot start a local PostgreSQL here: {exc}")
    try:
        yield dsn
    finally:
        server.__exit__(None, None, None)


def _fake_bin(root, name, pgvector):
    """A directory that looks like a PostgreSQL bin dir (pg_config answers --sharedir)."""
    bin_dir, share = root / name / "bin", root / name / "share"
    (share / "extension").mkdir(parents=True)
    bin_dir.mkdir()
    for exe in ("initdb", "pg_ctl"):
        (bin_dir / exe).write_text("")
    (bin_dir / "pg_config").write_text(f"#!/bin/sh\necho {share}\n")
    (bin_dir / "pg_config").chmod(0o755)
    if pgvector:
        (share / "extension" / "vector.control").write_text("")
    return bin_dir


def test_find_postgres_bin_order(tmp_path, monkeypatch):
    """RECSTACK_PG_BIN, then pgserver's binaries, then system ones; one with pgvector first."""
    bundled = _fake_bin(tmp_path, "pgserver", pgvector=True)
    system = _fake_bin(tmp_path, "system", pgvector=True)
    plain = _fake_bin(tmp_path, "plain", pgvector=False)
    monkeypatch.delenv("RECSTACK_PG_BIN", raising=False)
    monkeypatch.delenv("RECSTACK_PG_SEARCH", raising=False)
    monkeypatch.setattr(postgres, "pgserver_bin", lambda: bundled)
    monkeypatch.setattr(postgres, "_system_bins", lambda: [plain, system])
    assert find_postgres_bin() == bundled
    monkeypatch.setenv("RECSTACK_PG_SEARCH", "system")
    assert find_postgres_bin() == system                 # the one with pgvector, not the first
    monkeypatch.setattr(postgres, "_system_bins", lambda: [plain])
    assert find_postgres_bin() == plain                  # no pgvector anywhere: still a server
    monkeypatch.setenv("RECSTACK_PG_SEARCH", "pgserver")
    monkeypatch.setattr(postgres, "pgserver_bin", lambda: None)
    assert find_postgres_bin() is None
    assert "pgserver not installed" in no_server_reason() and "searched: pgserver" in no_server_reason()
    with pytest.raises(ConfigError, match="no PostgreSQL server binaries"):
        with local_postgres():
            pass
    monkeypatch.setenv("RECSTACK_PG_SEARCH", "pgserver, postgres")
    with pytest.raises(ConfigError, match="RECSTACK_PG_SEARCH"):
        find_postgres_bin()
    monkeypatch.setenv("RECSTACK_PG_BIN", str(system))      # explicit: the only place looked at
    assert find_postgres_bin() == system
    monkeypatch.setenv("RECSTACK_PG_BIN", str(tmp_path))
    assert find_postgres_bin() is None and "holds no initdb" in no_server_reason()


_counter = itertools.count()


@pytest.fixture(scope="session")
def tables(pg_dsn):
    """new_table() -> a fresh table name; every one is dropped at the end of the session."""
    made: list[str] = []

    def new_table() -> str:
        name = f"recstack_test_{os.getpid()}_{next(_counter)}"
        made.append(name)
        return name

    yield new_table
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        for name in made:
            conn.execute(f'DROP TABLE IF EXISTS "{name}", "{name}__build"')


@pytest.fixture
def pg_make(pg_dsn, tables, monkeypatch):
    """Point test_contract's ``make`` at this backend (other kinds pass through)."""
    original = contract.make

    def make(kind, ids, x, exhaustive=False):
        if kind == "pgvector":
            return PgVector(pg_dsn, table=tables()).build(ids, x)
        if kind.startswith("pgvector_hnsw"):   # low ef_search: the contract's "low-recall setting"
            iterative = "off" if kind.endswith("_off") else "strict_order"
            return PgVectorHNSW(pg_dsn, table=tables(), m=8, ef_construction=32, ef_search=10,
                                iterative_scan=iterative).build(ids, x)
        return original(kind, ids, x, exhaustive)

    monkeypatch.setattr(contract, "make", make)
    return make


# ---------------------------------------------------------------------------------------
# The shared contract
# ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("check", contract.CONTRACT, ids=lambda f: f.__name__)
def test_exact_contract(check, data, pg_make):
    check(data, "pgvector")


@pytest.mark.parametrize("check", contract.ANY_RECALL, ids=lambda f: f.__name__)
@pytest.mark.parametrize("iterative", ["strict_order", "off"])
def test_hnsw_contract(check, iterative, data, pg_make):
    """With the iterative scan off the graph stops at ef_search results, so rows short of k
    take the exact fallback."""
    check(data, "pgvector_hnsw" if iterative != "off" else "pgvector_hnsw_off")


# ---------------------------------------------------------------------------------------
# Exact backend
# ---------------------------------------------------------------------------------------
def test_equals_brute_force(data, pg_dsn, tables):
    ids, x, q = data
    index = PgVector(pg_dsn, table=tables()).build(ids, x)
    assert isinstance(index, Index) and index.is_exact and index.kind == "pgvector"
    assert index.num_candidates == x.shape[0] and index.dimension == x.shape[1]
    brute = BruteForce().build(ids, x)
    for k in (1, 7, 100):
        scores, got = index.search(torch.from_numpy(q), k=k)
        ref_scores, ref = brute.search(q, k=k)
        np.testing.assert_array_equal(got, ref)
        np.testing.assert_allclose(scores.numpy(), ref_scores.numpy(), rtol=1e-5, atol=1e-5)
        assert scores.dtype == torch.float32 and got.dtype == np.int64
    # One row at a time (the serving path) gives the batch's answer.
    single = np.concatenate([index.search(q[r:r + 1], k=9)[1] for r in range(5)])
    np.testing.assert_array_equal(single, index.search(q[:5], k=9)[1])
    np.testing.assert_array_equal(index.candidate_ids(), np.sort(ids))
    np.testing.assert_array_equal(index.vectors(ids[[5, 2, 5]]).numpy(), x[[5, 2, 5]])
    # k larger than the catalogue is capped; an empty batch is [0, k].
    assert index.search(q[:2], k=10 ** 6)[1].shape == (2, x.shape[0])
    assert index.search(q[:0], k=4)[1].shape == (0, 4)
    info = index.describe()
    assert info["kind"] == "pgvector" and info["metadata"]["pgvector"]
    got_ids = np.concatenate([i for i, _ in index.iter_vectors(chunk=1000)])
    np.testing.assert_array_equal(got_ids, np.sort(ids))


def test_small_copy_chunks_and_rebuild_in_place(data, pg_dsn, tables):
    ids, x, q = data
    table = tables()
    index = PgVector(pg_dsn, table=table, copy_chunk=257).build(ids, x)
    np.testing.assert_array_equal(index.search(q, k=5)[1], BruteForce().build(ids, x).search(q, k=5)[1])
    # Rebuilding replaces the table (new width, new rows) and keeps its index names tidy.
    y = clustered(500, d=6, seed=4)
    index.build(None, y)
    assert index.num_candidates == 500 and index.dimension == 6
    np.testing.assert_array_equal(index.search(y[:3], k=4)[1], BruteForce().build(None, y).search(y[:3], k=4)[1])
    with psycopg.connect(pg_dsn) as conn:
        names = [r[0] for r in conn.execute("SELECT indexname FROM pg_indexes WHERE tablename = %s", (table,))]
    assert names == [f"{table}_pkey"]


def test_count_higher_matches_brute_force(data, pg_dsn, tables):
    ids, x, q = data
    index = PgVector(pg_dsn, table=tables()).build(ids, x)
    thresholds = torch.tensor([float(q[0] @ x[5]) + 1e-3, float(q[1] @ x[6]) - 1e-3])
    exclude = [[ids[9]], []]
    expected = BruteForce().build(ids, x).count_higher(q[:2], thresholds, exclude=exclude)
    assert index.count_higher(q[:2], thresholds, exclude=exclude).tolist() == expected.tolist()


def test_remove_and_add(data, pg_dsn, tables):
    ids, x, q = data
    index = PgVector(pg_dsn, table=tables()).build(ids, x)
    top = numpy_top_k(q[:1], x, ids, 3)[0][0]
    assert index.remove(np.append(top, 123456789)) == 3 and index.num_candidates == x.shape[0] - 3
    assert not np.isin(index.search(q[:1], k=10)[1], top).any()
    index.add(top, x[np.searchsorted(ids, top)])
    assert index.num_candidates == x.shape[0]
    np.testing.assert_array_equal(index.search(q[:1], k=3)[1][0], top)
    with pytest.raises(DataError, match="already indexed"):
        index.add(top[:1], x[:1])
    with pytest.raises(ShapeError, match=r"\[n, 12\]"):
        index.add([10 ** 9], np.zeros((1, 3), np.float32))


def test_save_load_keeps_no_password(data, pg_dsn, tables, tmp_path, monkeypatch):
    ids, x, q = data
    table = tables()
    index = PgVector(pg_dsn, table=table).build(ids, x)
    index.save(tmp_path / "pg")
    text = (tmp_path / "pg" / "index.json").read_text()
    state = json.loads(text)
    password = psycopg.conninfo.conninfo_to_dict(pg_dsn).get("password")
    assert state["kind"] == "pgvector" and state["files"] == [] and state["params"]["table"] == table
    if password:
        assert password not in text and "password" not in state["params"]["dsn"]
        assert "not saved" in state["metadata"]["password"]
        monkeypatch.delenv("PGPASSWORD", raising=False)
        monkeypatch.delenv(PASSWORD_ENV, raising=False)
        with pytest.raises(ConfigError, match="cannot connect"):
            load_index(tmp_path / "pg")
        monkeypatch.setenv(PASSWORD_ENV, password)
    loaded = load_index(tmp_path / "pg")
    assert isinstance(loaded, PgVector) and loaded.num_candidates == x.shape[0] and loaded.dimension == 12
    exclude = [[ids[0]]] * q.shape[0]
    s1, i1 = index.search(q, k=15, exclude=exclude)
    s2, i2 = loaded.search(q, k=15, exclude=exclude)
    np.testing.assert_array_equal(i1, i2)
    np.testing.assert_array_equal(s1.numpy(), s2.numpy())
    # A DSN taken from the environment is saved as "read the environment again".
    monkeypatch.setenv("RECSTACK_PGVECTOR_DSN", pg_dsn)
    from_env = PgVector(table=table).refresh()
    from_env.save(tmp_path / "env")
    assert json.loads((tmp_path / "env" / "index.json").read_text())["params"]["dsn"] is None
    assert load_index(tmp_path / "env").num_candidates == x.shape[0]


def test_strip_password_and_copy_records():
    dsn, had = strip_password("postgresql://u:secret@h:5433/db")
    assert had and "secret" not in dsn and "port=5433" in dsn and "user=u" in dsn
    plain, had = strip_password("host=a dbname=b")
    assert not had and psycopg.conninfo.conninfo_to_dict(plain) == {"host": "a", "dbname": "b"}
    with pytest.raises(ConfigError, match="invalid PostgreSQL connection string"):
        strip_password("host='unterminated")
    raw = copy_records(np.array([7, -2], np.int64), np.array([[1.5, -2.0], [0.0, 3.25]], np.float32))
    assert len(raw) == 2 * (2 + 4 + 8 + 4 + 4 + 8)
    assert raw[:2] == b"\x00\x02" and raw[6:14] == (7).to_bytes(8, "big")
    assert raw[18:22] == b"\x00\x02\x00\x00"           # vector header: dim 2, unused 0


def test_errors(data, pg_dsn, tables, monkeypatch):
    ids, x, q = data
    monkeypatch.delenv("RECSTACK_PGVECTOR_DSN", raising=False)
    with pytest.raises(ConfigError, match="RECSTACK_PGVECTOR_DSN"):
        PgVector(table="t").build(ids, x)
    with pytest.raises(ConfigError, match="table must be"):
        PgVector(pg_dsn, table="items; DROP TABLE x")
    with pytest.raises(ConfigError, match="cannot connect to PostgreSQL at host=127.0.0.1 port=1 dbname=x user=x:"):
        PgVector("host=127.0.0.1 port=1 dbname=x user=x connect_timeout=3", table="t").build(ids, x)
    index = PgVector(pg_dsn, table=tables())
    with pytest.raises(ConfigError, match="empty"):
        index.search(q, k=3)
    index.build(ids, x)
    with pytest.raises(ShapeError, match=r"\[B, 12\]"):
        index.search(np.zeros((1, 5), np.float32), k=3)
    with pytest.raises(ConfigError, match="k must be"):
        index.search(q, k=0)
    with pytest.raises(DataError, match="unknown candidate"):
        index.vectors([12345678])
    # A table recstack did not make is never replaced.
    foreign = tables()
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        conn.execute(f'CREATE TABLE "{foreign}" (id int)')
    with pytest.raises(ConfigError, match="not created by recstack"):
        PgVector(pg_dsn, table=foreign).build(ids, x)
    with pytest.raises(ConfigError, match="ef_search"):
        PgVectorHNSW(pg_dsn, table="t", ef_search=5000)
    with pytest.raises(ConfigError, match="ef_search only"):
        PgVectorHNSW(pg_dsn, table="t").set_search_params(nprobe=3)


def test_extension_not_enabled_and_not_allowed(pg_dsn, tables):
    """A non-superuser in a database without the extension gets told how to enable it."""
    parts = psycopg.conninfo.conninfo_to_dict(pg_dsn)
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        if not conn.execute("SELECT rolsuper FROM pg_roles WHERE rolname = current_user").fetchone()[0]:
            pytest.skip("needs a superuser DSN to create a role and a database")
        conn.execute("DROP DATABASE IF EXISTS recstack_noext")
        conn.execute("DROP ROLE IF EXISTS recstack_plain")
        conn.execute("CREATE ROLE recstack_plain LOGIN PASSWORD 'plain-pw'")
        conn.execute("CREATE DATABASE recstack_noext")
    try:
        parts.update(user="recstack_plain", password="plain-pw", dbname="recstack_noext")
        dsn = psycopg.conninfo.make_conninfo(**parts)
        with pytest.raises(ConfigError, match="CREATE EXTENSION vector"):
            PgVector(dsn, table="t").build(None, np.eye(3, dtype=np.float32))
    finally:
        with psycopg.connect(pg_dsn, autocommit=True) as conn:
            conn.execute("DROP DATABASE IF EXISTS recstack_noext")
            conn.execute("DROP ROLE IF EXISTS recstack_plain")


# ---------------------------------------------------------------------------------------
# HNSW
# ---------------------------------------------------------------------------------------
def test_hnsw_recall_is_reported_and_high(data, pg_dsn, tables, tmp_path, monkeypatch):
    """recall@10 against the exact scan on clustered data and on a random Gaussian set."""
    ids, x, q = data
    rng = np.random.default_rng(11)
    sets = {"clustered": (ids, x, clustered(200, seed=9)),
            "gaussian": (None, rng.normal(size=(4000, 16)).astype(np.float32),
                         rng.normal(size=(200, 16)).astype(np.float32))}
    measured = {}
    for name, (cids, cx, cq) in sets.items():
        index = PgVectorHNSW(pg_dsn, table=tables(), ef_search=100).build(cids, cx)
        assert not index.is_exact and index.kind == "pgvector_hnsw"
        truth = numpy_top_k(cq, cx, np.arange(cx.shape[0]) if cids is None else cids, 10)[0]
        recall = index.measure_recall(cq, k=10)
        assert index.metadata["recall"]["value"] == pytest.approx(recall, abs=1e-6)
        _, found = index.search(cq, k=10)
        independent = np.mean([np.isin(t, f).mean() for f, t in zip(found, truth)])
        assert independent == pytest.approx(recall, abs=1e-6)
        measured[name] = recall
        # Scores are the exact inner products of what was returned, in descending order.
        s, i = index.search(cq[:5], k=10)
        lookup = cx[np.searchsorted(cids, i)] if cids is not None else cx[i]
        np.testing.assert_allclose(s.numpy(), np.einsum("bd,bkd->bk", cq[:5], lookup), rtol=1e-4, atol=1e-4)
    print(f"\nPgVectorHNSW recall@10 (ef_search 100): {measured}")
    assert min(measured.values()) >= 0.9
    # The graph serves the unfiltered search (and the exact class never uses it).
    with index._lock:
        conn = index._connection()
        plan = "\n".join(r[0] for r in conn.execute(
            index._sql("EXPLAIN SELECT id FROM {tbl} ORDER BY embedding <#> %s::vector LIMIT 10"),
            (str(cq[0].tolist()),)))
    assert "hnsw" in plan
    index.save(tmp_path / "hnsw")
    monkeypatch.setenv(PASSWORD_ENV, psycopg.conninfo.conninfo_to_dict(pg_dsn).get("password", ""))
    loaded = load_index(tmp_path / "hnsw")
    assert isinstance(loaded, PgVectorHNSW) and loaded.search_params() == {"ef_search": 100}
    np.testing.assert_array_equal(loaded.search(cq, k=10)[1], index.search(cq, k=10)[1])


def test_hnsw_filters_fill_k(data, pg_dsn, tables):
    """Exclusions larger than ef_search and allow-lists still give k (or all remaining) results."""
    ids, x, q = data
    index = PgVectorHNSW(pg_dsn, table=tables(), ef_search=10).build(ids, x)
    excl = Exclusions.from_pairs(torch.zeros(300, dtype=torch.long), torch.from_numpy(ids[:300]))
    scores, got = index.search(q[:3], k=25, exclude=excl, query_keys=torch.tensor([0, 1, 0]))
    assert (got >= 0).all() and not np.isin(got[[0, 2]], ids[:300]).any()
    assert (np.diff(scores.numpy(), axis=1) <= 1e-6).all()
    with pytest.raises(DataError, match="unknown candidate"):
        index.vectors([-1])
