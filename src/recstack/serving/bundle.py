"""Loading a serving bundle: ``load_bundle(dir)`` -> :class:`~recstack.serving.query.Bundle`.

Loading is a sandbox (see :mod:`recstack.serving.sandbox` and docs/serving.md,
"Trust model"): only files the manifest lists, inside the bundle folder,
regular and of their listed size, are read; every array's shape follows from
the manifest's ``num_candidates`` / ``embedding_dim`` / seen counts and is
checked on the file header before the data is read; tower sizes are checked
against their weights files before any tensor is allocated; nothing is
unpickled, no network connection is opened (a database-backed index connects
only with the connection the caller passes) and the environment is not read.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from ..core.errors import ConfigError
from ..core.id_lists import IdLists
from ..features.feature_set import FeatureSet
from .query import Bundle, SortedKeys
from .bundle_index import open_index
from .history import HistoryStore
from .manifest import HISTORY_FILES, SEEN_FILES, read_manifest
from .sandbox import BundleFiles, UnsafeBundleError
from .weights import load_tower

__all__ = ["Bundle", "load_bundle"]


def load_bundle(directory: str | os.PathLike, verify: bool = True, index: str | None = None,
                mmap: bool = True, index_connection: Mapping[str, Any] | None = None) -> Bundle:
    """Load a bundle written by :func:`recstack.serving.export`.

    Args:
        directory: the bundle directory.
        verify: re-hash every file against the manifest first (refuses tampered or truncated
            bundles with ChecksumError). Leave on; it costs ~1 s per GB. Off, the sandbox
            checks (places, types, sizes, shapes, no unlisted files) still apply.
        index: None (the bundle's index) or "brute_force" to search exactly over the stored
            candidate embeddings instead.
        mmap: memory-map the candidate embeddings and seen lists (read-only).
        index_connection: for a bundle whose index lives in PostgreSQL (pgvector): the
            operator's ``{"dsn": ..., "password_env"?: ..., "settings"?: ..., "table"?: ...}``.
            A bundle never stores where to connect.

    Raises:
        UnsafeBundleError: the bundle asks for something loading never does (a path outside
            it, an unlisted or non-regular file, shapes its files do not hold, a pickle,
            connection details).
        ChecksumError: a file is missing, truncated or changed, or the manifest was edited.
        ConfigError: a malformed manifest, an unknown tower type, a missing index connection.
    """
    manifest = read_manifest(directory)
    files = BundleFiles(directory, manifest["files"])
    files.check(hashes=verify)
    num, dim = manifest["num_candidates"], manifest["embedding_dim"]
    try:
        q = manifest["query"]
        query_fs = None
        if q.get("features"):
            query_fs = FeatureSet.from_config(files.read_json(q["features"]))
        tower = load_tower(files, q["tower"], q["weights"])
        c = manifest["candidates"]
        identifiers = files.load_npy(c["identifiers"], expect=(num,), kinds="iU")
        embeddings = files.load_npy(c["embeddings"], expect=(num, dim), kinds="f", mmap=mmap)
        idx = open_index(files, manifest, embeddings, override=index, connection=index_connection)
        seen = _load_seen(files, manifest["seen"], num, mmap) if manifest.get("seen") else None
        head = None
        if manifest.get("rating_head"):
            head = load_tower(files, manifest["rating_head"]["config"], manifest["rating_head"]["weights"])
        history = _load_history(files, manifest["history"], num) if manifest.get("history") else None
    except (KeyError, TypeError, AttributeError) as exc:
        raise ConfigError(f"bundle {directory} has a malformed manifest or file: {exc!r}; re-export it.") from exc
    bundle = Bundle(Path(directory), manifest, query_fs, tower, identifiers, embeddings, idx, seen, head)
    bundle.history = history
    return bundle


def _load_history(files: BundleFiles, info: Mapping[str, Any], num: int) -> HistoryStore:
    """The stored histories and fallback ranking, shapes from the manifest, positions in range."""
    users_name, indptr_name, items_name, pop_name = HISTORY_FILES
    num_users, num_items = int(info["num_users"]), int(info["num_items"])
    users = files.load_npy(users_name, expect=(num_users,), kinds="U")
    indptr = files.load_npy(indptr_name, expect=(num_users + 1,), kinds="i").astype(np.int64)
    items = files.load_npy(items_name, expect=(num_items,), kinds="i").astype(np.int64)
    popularity = files.load_npy(pop_name, expect=(num,), kinds="f").astype(np.float32)
    if indptr[0] != 0 or indptr[-1] != num_items or (np.diff(indptr) < 0).any():
        raise UnsafeBundleError(f"bundle file {indptr_name} is not a valid row-offset array for {num_items} items; "
                                "refusing the bundle.")
    if num_items and (int(items.min()) < 0 or int(items.max()) >= num):
        raise UnsafeBundleError(f"bundle file {items_name} holds positions outside the {num} candidates; "
                                "refusing the bundle.")
    if not np.isfinite(popularity).all():
        raise UnsafeBundleError(f"bundle file {pop_name} holds non-finite values; refusing the bundle.")
    max_length = int(info["max_length"])
    if max_length < 1:
        raise UnsafeBundleError(f"the manifest's history max_length must be >= 1; got {max_length}.")
    return HistoryStore(SortedKeys(users), IdLists(indptr, items), popularity, max_length)


def _load_seen(files: BundleFiles, info: Mapping[str, Any], num: int, mmap: bool) -> tuple[SortedKeys, IdLists]:
    """The CSR seen lists, with shapes from the manifest's counts and offsets / positions in range."""
    keys_name, indptr_name, indices_name = SEEN_FILES
    num_keys, num_pairs = info["num_keys"], info["num_pairs"]
    keys = files.load_npy(keys_name, expect=(num_keys,), kinds="U")
    indptr = files.load_npy(indptr_name, expect=(num_keys + 1,), kinds="iu").astype(np.int64)
    indices = files.load_npy(indices_name, expect=(num_pairs,), kinds="iu", mmap=mmap)
    if indptr[0] != 0 or indptr[-1] != num_pairs or (np.diff(indptr) < 0).any():
        raise UnsafeBundleError(f"bundle file {indptr_name} is not a valid row-offset array for {num_pairs} "
                                "pairs; refusing the bundle.")
    if num_pairs and (int(indices.min()) < 0 or int(indices.max()) >= num):
        raise UnsafeBundleError(f"bundle file {indices_name} holds positions outside the {num} candidates; "
                                "refusing the bundle.")
    return SortedKeys(keys), IdLists(indptr, indices)
