"""The search index inside a bundle: which kinds a bundle may name, how it is written and opened.

File-backed kinds keep their files in the bundle's index folder and are opened
only after every one of those files passed the sandbox checks (listed, inside,
regular, of the listed size; ``.npy`` headers matching their bytes).

Database-backed kinds (pgvector) keep the rows in the operator's PostgreSQL.
A bundle never says where that database is: export removes the connection
string, the password variable's name and session settings from ``index.json``,
and loading refuses a format-2 bundle that carries them (format-1 bundles stored
them; they are ignored). The operator passes the connection when serving
(``load_bundle(dir, index_connection={"dsn": ...})``, ``recstack serve``); without
it, loading stops with a message saying so, before any connection is attempted.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from ..core.errors import ConfigError, DataError
from ..core.io import atomic_write_json
from ..index import INDEXES, BruteForce, Index, load_index
from .sandbox import BundleFiles, UnsafeBundleError, check_name

__all__ = ["CONNECTION_KEYS", "DATABASE_KINDS", "FILE_KINDS", "open_index", "public_params", "write_index"]

#: Kinds whose index files live in the bundle.
FILE_KINDS = frozenset({"brute_force", "faiss_ivf", "scann"})
#: Kinds whose rows live in the operator's database.
DATABASE_KINDS = frozenset({"pgvector", "pgvector_hnsw"})
#: Where and how to connect: the operator's, never stored in a bundle.
CONNECTION_KEYS = ("dsn", "password_env", "settings")
#: What the operator may pass at load time for a database-backed index.
OPERATOR_KEYS = frozenset(CONNECTION_KEYS + ("table", "connect_timeout"))


def public_params(kind: str, params: Mapping[str, Any]) -> dict[str, Any]:
    """An index's constructor parameters as a bundle may record them (no connection details)."""
    if kind not in DATABASE_KINDS:
        return dict(params)
    return {k: v for k, v in params.items() if k not in CONNECTION_KEYS}


def write_index(built: Index, folder: Path) -> list[str]:
    """``built.save(folder)``; for a database-backed index, index.json without connection details.

    Returns:
        the written files' names relative to ``folder``'s parent (e.g. "index/index.json").
    """
    built.save(folder)
    if built.kind in DATABASE_KINDS:
        state = json.loads((folder / "index.json").read_text(encoding="utf-8"))
        state["params"] = public_params(built.kind, state.get("params", {}))
        state["metadata"] = {k: v for k, v in state.get("metadata", {}).items() if k != "password"}
        atomic_write_json(folder / "index.json", state)
    return sorted(str(p.relative_to(folder.parent).as_posix()) for p in folder.rglob("*") if p.is_file())


def open_index(files: BundleFiles, manifest: Mapping[str, Any], embeddings: np.ndarray, *,
               override: str | None = None, connection: Mapping[str, Any] | None = None) -> Index:
    """The bundle's index, opened inside the sandbox.

    Args:
        files: the bundle's checked files.
        manifest: its validated manifest.
        embeddings: the candidate embeddings [C, d] (for ``override="brute_force"``).
        override: None (the bundle's index) or "brute_force" (or an alias of it, e.g. "exact":
            exact search over ``embeddings`` instead).
        connection: for a database-backed index, the operator's connection: ``dsn`` and
            optionally ``password_env``, ``settings``, ``table``, ``connect_timeout``.
    """
    info = manifest["index"]
    kind = info.get("kind")
    num, dim = int(manifest["num_candidates"]), int(manifest["embedding_dim"])
    wanted = None if override is None else INDEXES.canonical(str(override).lower())
    if wanted == "brute_force":
        return BruteForce().build(np.arange(num), np.array(embeddings))
    if wanted not in (None, kind):
        raise ConfigError(f"index override must be None or 'brute_force'; got {override!r}.")
    if kind not in FILE_KINDS | DATABASE_KINDS:
        raise UnsafeBundleError(f"bundle index kind {kind!r} is not one a bundle may use "
                                f"({sorted(FILE_KINDS | DATABASE_KINDS)}); refusing the bundle.")
    folder = check_name(info.get("dir"), "index folder")
    state = files.read_json(f"{folder}/index.json")
    if not (isinstance(state, dict) and state.get("kind") == kind and isinstance(state.get("params", {}), dict)
            and isinstance(state.get("files", []), list)):
        raise UnsafeBundleError(f"bundle file {folder}/index.json does not describe a {kind!r} index as the "
                                "manifest says; refusing the bundle.")
    for name in state.get("files", []):
        member = f"{folder}/{check_name(name)}"
        if member.endswith(".npy"):
            files.check_npy(member)           # its header must describe exactly its listed bytes
        else:
            files.path(member)
    if kind in DATABASE_KINDS:
        index = _database_index(files, kind, folder, state, manifest, connection)
    else:
        index = load_index(files.root / folder)
    if index.num_candidates != num or index.dimension != dim:
        raise DataError(f"the bundle's {kind} index holds {index.num_candidates} x {index.dimension} vectors; "
                        f"the manifest says {num} x {dim}. Re-export the bundle.")
    return index


def _database_index(files: BundleFiles, kind: str, folder: str, state: dict[str, Any], manifest: Mapping[str, Any],
                    connection: Mapping[str, Any] | None) -> Index:
    params = dict(state.get("params", {}))
    stored = [k for k in CONNECTION_KEYS if params.get(k) is not None and manifest.get("format_version", 1) >= 2]
    if stored:
        raise UnsafeBundleError(f"bundle file {folder}/index.json stores connection details ({stored}); a bundle "
                                "never says where to connect. Refusing it; re-export the bundle.")
    table = params.get("table")
    if connection is None:
        raise ConfigError(f"this bundle's {kind} index lives in the PostgreSQL table {table!r}, and a bundle never "
                          "says where its database is: pass the connection when loading, e.g. "
                          "load_bundle(dir, index_connection={'dsn': 'host=... dbname=... user=...'}) "
                          "(the server: ServerSettings(index_connection=...)).")
    unknown = sorted(set(connection) - OPERATOR_KEYS)
    if unknown or not isinstance(connection.get("dsn"), str):
        raise ConfigError(f"index_connection takes a 'dsn' string and optionally {sorted(OPERATOR_KEYS - {'dsn'})}; "
                          f"got keys {sorted(connection)}.")
    # Connection details a format-1 bundle stored are dropped (None: the constructor's default);
    # the operator's connection replaces them. Loading connects and checks the table.
    index = load_index(files.root / folder, **{**dict.fromkeys(CONNECTION_KEYS), **connection})
    index.metadata.pop("password", None)
    return index
