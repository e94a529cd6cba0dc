"""Hostile bundles: loading is a sandbox.

Each test plays an attacker who edits a bundle and then recomputes every hash and the
manifest's own digest (the digest proves integrity, not origin), and checks that loading
refuses what loading must never do: read outside the folder, read an unlisted file, read a
device or a size other than the listed one, allocate what a header or config merely claims,
connect to a network address or read an environment variable named by the bundle, unpickle.
"""

import hashlib
import json
import os
import shutil
import socket
import threading

import numpy as np
import pytest

from recstack.core.errors import ChecksumError, ConfigError, DataError
from recstack.serving import export, load_bundle

from .conftest import TITLES


def _sha(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _digest(manifest):
    body = {k: v for k, v in manifest.items() if k != "manifest_sha256"}
    return hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def tamper(bundle_dir, tmp_path, edit=None, relist=True):
    """A copy of the bundle, ``edit(manifest, root)`` applied, then every listed regular file re-hashed
    and the manifest digest recomputed, as an attacker would."""
    root = tmp_path / "evil"
    shutil.copytree(bundle_dir, root)
    manifest = json.loads((root / "manifest.json").read_text())
    if edit is not None:
        edit(manifest, root)
    if relist:
        for name in manifest["files"]:
            path = root / name
            if path.is_file() and os.path.realpath(path).startswith(str(root.resolve())):
                manifest["files"][name] = {"sha256": _sha(path), "bytes": path.stat().st_size}
    manifest["manifest_sha256"] = _digest(manifest)
    (root / "manifest.json").write_text(json.dumps(manifest))
    return root


def outside_embeddings(bundle_dir, tmp_path):
    """Embeddings of the same shape outside the bundle that rank the catalogue backwards."""
    emb = np.load(bundle_dir / "candidates" / "embeddings.npy")
    path = tmp_path / "outside" / "embeddings.npy"
    path.parent.mkdir()
    np.save(path, -emb)
    return path


@pytest.mark.parametrize("verify", [True, False])
def test_an_absolute_path_in_the_manifest_is_refused(bundle_dir, tmp_path, verify):
    target = outside_embeddings(bundle_dir, tmp_path)

    def edit(manifest, root):
        manifest["candidates"]["embeddings"] = str(target)
    with pytest.raises(ChecksumError, match="relative paths"):
        load_bundle(tamper(bundle_dir, tmp_path, edit), verify=verify)


def test_a_dotdot_path_in_the_manifest_is_refused(bundle_dir, tmp_path):
    outside_embeddings(bundle_dir, tmp_path)

    def edit(manifest, root):
        manifest["candidates"]["embeddings"] = "../outside/embeddings.npy"
    with pytest.raises(ChecksumError, match="relative paths"):
        load_bundle(tamper(bundle_dir, tmp_path, edit))


def test_an_absolute_index_folder_is_refused(bundle_dir, tmp_path):
    other = tmp_path / "other_index"
    shutil.copytree(bundle_dir / "index", other)

    def edit(manifest, root):
        manifest["index"]["dir"] = str(other)
    with pytest.raises(ChecksumError, match="relative paths"):
        load_bundle(tamper(bundle_dir, tmp_path, edit))


def test_a_symlink_leading_out_of_the_bundle_is_refused(bundle_dir, tmp_path):
    target = outside_embeddings(bundle_dir, tmp_path)

    def edit(manifest, root):
        (root / "candidates" / "embeddings.npy").unlink()
        (root / "candidates" / "embeddings.npy").symlink_to(target)
        manifest["files"]["candidates/embeddings.npy"] = {"sha256": _sha(target), "bytes": target.stat().st_size}
    with pytest.raises(ChecksumError, match="outside the bundle"):
        load_bundle(tamper(bundle_dir, tmp_path, edit, relist=False))


def test_an_unlisted_file_is_refused_not_read(bundle_dir, tmp_path):
    """An extra index/identifiers.npy would reorder the brute-force index's ids."""
    def edit(manifest, root):
        np.save(root / "index" / "identifiers.npy", np.arange(len(TITLES))[::-1].copy())
    root = tamper(bundle_dir, tmp_path, edit)
    with pytest.raises(ChecksumError, match="index/identifiers.npy, which the manifest does not list"):
        load_bundle(root)
    (root / "index" / "identifiers.npy").unlink()
    assert load_bundle(root).recommend({"user_id": "u3"}, k=3).items == \
        load_bundle(bundle_dir).recommend({"user_id": "u3"}, k=3).items


def test_a_referenced_file_missing_from_the_files_table_is_refused(bundle_dir, tmp_path):
    def edit(manifest, root):
        shutil.copy(root / "query_tower.json", root / "tower2.json")
        manifest["query"]["tower"] = "tower2.json"             # exists, but is not listed
    with pytest.raises(ChecksumError, match="does not list"):
        load_bundle(tamper(bundle_dir, tmp_path, edit))


def test_a_size_other_than_the_listed_one_is_refused_even_unverified(bundle_dir, tmp_path):
    """verify=False skips hashing, never the size check: a grown seen list is not read."""
    root = tamper(bundle_dir, tmp_path)
    indices = np.load(root / "seen" / "indices.npy")
    np.save(root / "seen" / "indices.npy", np.concatenate([indices, indices]))
    with pytest.raises(ChecksumError, match="bytes, the manifest lists"):
        load_bundle(root, verify=False)


def test_a_device_file_is_refused_without_reading(bundle_dir, tmp_path):
    def edit(manifest, root):
        manifest["query"]["tower"] = "/dev/zero"
    with pytest.raises(ChecksumError, match="relative paths"):
        load_bundle(tamper(bundle_dir, tmp_path, edit))


def test_a_symlink_to_a_device_inside_the_listing_is_refused(bundle_dir, tmp_path):
    def edit(manifest, root):
        (root / "query_tower.json").unlink()
        (root / "query_tower.json").symlink_to("/dev/zero")
        manifest["files"]["query_tower.json"] = {"sha256": hashlib.sha256(b"").hexdigest(), "bytes": 0}
    with pytest.raises(ChecksumError, match="outside the bundle"):
        load_bundle(tamper(bundle_dir, tmp_path, edit, relist=False))


def test_a_huge_claimed_array_shape_is_refused_before_allocating(bundle_dir, tmp_path):
    """An .npy header claiming 10^12 identifiers, in a file of a few bytes."""
    def edit(manifest, root):
        path = root / "candidates" / "identifiers.npy"
        with open(path, "wb") as handle:
            np.lib.format.write_array_header_1_0(handle, {"descr": "<i8", "fortran_order": False,
                                                          "shape": (10**12,)})
            handle.write(b"\0" * 64)
        manifest["candidates"]["identifier_dtype"] = "int"
    with pytest.raises(ChecksumError, match=r"claims shape \(1000000000000,\)"):
        load_bundle(tamper(bundle_dir, tmp_path, edit))


def test_a_tower_claiming_a_trillion_ids_is_refused_before_allocating(bundle_dir, tmp_path):
    def edit(manifest, root):
        tower = json.loads((root / "query_tower.json").read_text())
        tower["config"]["layers"][0]["config"]["num_embeddings"] = 10**12
        (root / "query_tower.json").write_text(json.dumps(tower))
    with pytest.raises(ChecksumError, match="1000000000000"):
        load_bundle(tamper(bundle_dir, tmp_path, edit))


def test_seen_positions_outside_the_catalogue_are_refused(bundle_dir, tmp_path):
    def edit(manifest, root):
        indices = np.load(root / "seen" / "indices.npy")
        indices[0] = 10**9
        np.save(root / "seen" / "indices.npy", indices)
    with pytest.raises(ChecksumError, match="outside the"):
        load_bundle(tamper(bundle_dir, tmp_path, edit))


@pytest.mark.parametrize("name", ["candidates/identifiers.npy", "seen/keys.npy"])
def test_pickled_arrays_are_refused(bundle_dir, tmp_path, name):
    def edit(manifest, root):
        np.save(root / name, np.array(np.load(root / name).tolist(), dtype=object), allow_pickle=True)
    with pytest.raises((ChecksumError, DataError), match="unpickl"):
        load_bundle(tamper(bundle_dir, tmp_path, edit))


def test_pickled_npz_weights_are_refused(bundle_dir, tmp_path):
    def edit(manifest, root):
        state = {"0.weight": np.array([object()], dtype=object)}
        np.savez(root / "query_tower.npz", **state)
        manifest["files"]["query_tower.npz"] = {}
        manifest["query"]["weights"] = "query_tower.npz"
    with pytest.raises((ChecksumError, DataError, ValueError), match="pickl"):
        load_bundle(tamper(bundle_dir, tmp_path, edit))


class _Listener:
    """A TCP listener on loopback that records whether anything connected."""

    def __init__(self):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.connections = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self):
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                continue
            self.connections += 1
            conn.close()

    def close(self):
        self._stop.set()
        self._thread.join()
        self.sock.close()


class _RecordingEnviron(dict):
    """os.environ stand-in that records every variable read."""

    def __init__(self, base):
        super().__init__(base)
        self.read = set()

    def __getitem__(self, key):
        self.read.add(key)
        return super().__getitem__(key)

    def get(self, key, default=None):
        self.read.add(key)
        return super().get(key, default)

    def __contains__(self, key):
        self.read.add(key)
        return super().__contains__(key)


def as_pgvector(params):
    """An ``edit`` turning the bundle's index into a pgvector index.json with ``params``."""
    def edit(manifest, root):
        state = json.loads((root / "index" / "index.json").read_text())
        state.update(kind="pgvector", files=[], params=params)
        for name in list(manifest["files"]):
            if name.startswith("index/") and name != "index/index.json":
                (root / name).unlink()
                del manifest["files"][name]
        (root / "index" / "index.json").write_text(json.dumps(state))
        manifest["index"].update(kind="pgvector", params=params)
    return edit


def test_connection_details_and_environment_names_are_never_used(bundle_dir, tmp_path, monkeypatch):
    """A pgvector index.json naming a DSN and a password variable: no connection, no environment read."""
    pytest.importorskip("psycopg")
    listener = _Listener()

    root = tamper(bundle_dir, tmp_path, as_pgvector({
        "dsn": f"host=127.0.0.1 port={listener.port} dbname=x user=x connect_timeout=2",
        "password_env": "RECSTACK_TEST_SECRET", "table": "items"}))
    env = _RecordingEnviron(os.environ)
    env["RECSTACK_TEST_SECRET"] = "hunter2"
    monkeypatch.setattr(os, "environ", env)
    try:
        with pytest.raises((ChecksumError, ConfigError)):
            load_bundle(root)
    finally:
        monkeypatch.undo()
        listener.close()
    assert listener.connections == 0
    assert "RECSTACK_TEST_SECRET" not in env.read and "RECSTACK_PGVECTOR_DSN" not in env.read


def test_a_database_index_without_an_operator_connection_says_how_to_pass_one(bundle_dir, tmp_path):
    pytest.importorskip("psycopg")

    with pytest.raises(ConfigError, match="index_connection"):
        load_bundle(tamper(bundle_dir, tmp_path, as_pgvector({"table": "items"})))


def test_an_unknown_index_kind_is_refused(bundle_dir, tmp_path):
    def edit(manifest, root):
        manifest["index"]["kind"] = "something_registered_for_tests"
    with pytest.raises(ChecksumError, match="not one a bundle may use"):
        load_bundle(tamper(bundle_dir, tmp_path, edit))


@pytest.fixture(scope="module")
def postgres_dsn():
    pytest.importorskip("psycopg")
    from recstack.testing import postgres as pgvector
    bin_dir = pgvector.find_postgres_bin()
    if bin_dir is None or not pgvector.pgvector_installed(bin_dir):
        pytest.skip("no PostgreSQL with pgvector on this machine")
    with pgvector.local_postgres() as dsn:
        yield dsn


def test_a_pgvector_bundle_stores_no_connection_and_serves_with_the_operators(tmp_path, model, features, movies,
                                                                              interactions, postgres_dsn):
    from recstack.index import PgVector

    reference = export(model, tmp_path / "exact", candidates=movies, features=features, seen=interactions)
    emb = np.load(reference / "candidates" / "embeddings.npy")
    index = PgVector(postgres_dsn, table="hostile_test_items").build(np.arange(emb.shape[0]), emb)
    path = export(model, tmp_path / "pg", candidates=movies, features=features, seen=interactions, index=index)
    text = (path / "index" / "index.json").read_text() + (path / "manifest.json").read_text()
    assert "dsn" not in text and "password" not in text and "host=" not in text
    with pytest.raises(ConfigError, match="index_connection"):
        load_bundle(path)
    served = load_bundle(path, index_connection={"dsn": postgres_dsn})
    exact = load_bundle(reference)
    for user in ("u0", "u7", "u58"):
        assert served.recommend({"user_id": user}, k=5).items == exact.recommend({"user_id": user}, k=5).items
