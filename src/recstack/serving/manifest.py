"""The bundle manifest: its schema, digests and validation (``read_manifest``, ``verify_bundle``).

``manifest.json`` is the table of contents of a bundle:

    format, format_version        "recstack.bundle", 2 (this recstack also reads 1)
    recstack/torch/numpy_version  the versions that wrote it; created_at (UTC)
    model_kind, model_class       "two_tower" / "multitask" / ..., the model's class name
    embedding_dim, num_candidates d and C: every array's shape follows from them
    query                         fields, inputs, and the names of the features / tower / weights files
    candidates                    key column, identifiers [C] and embeddings [C, d] files
    seen                          optional: query field, num_keys, num_pairs (seen/{keys,indptr,indices}.npy)
    rating_head                   optional: config and weights files
    index                         dir, kind, exactness, params, recall, tuning
    files                         {name: {"sha256", "bytes"}} of every other file in the bundle
    manifest_sha256               SHA-256 of the rest of the manifest (canonical JSON)

Format 2 (this version) records towers by their registered names
(``"feature_tower"``) where format 1 recorded import paths, and stores no
database connection details for database-backed indexes. Every file a
manifest names must be listed in ``files``; :func:`validate_manifest` refuses
one that is not, before any file is read.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ..core.errors import ChecksumError, ConfigError
from .sandbox import MAX_MANIFEST_BYTES, BundleFiles, UnsafeBundleError, check_name, read_regular, resolve_inside

BUNDLE_FORMAT = "recstack.bundle"
BUNDLE_VERSION = 2
#: Seen-items arrays (CSR): fixed names inside the bundle.
SEEN_FILES = ("seen/keys.npy", "seen/indptr.npy", "seen/indices.npy")
#: Next-item bundles: stored histories (CSR, sorted user keys) and the empty-history ranking.
HISTORY_FILES = ("history/users.npy", "history/indptr.npy", "history/items.npy", "history/popularity.npy")

__all__ = ["BUNDLE_FORMAT", "BUNDLE_VERSION", "HISTORY_FILES", "SEEN_FILES", "UnsafeBundleError", "manifest_digest", "read_manifest",
           "referenced_files", "validate_manifest", "verify_bundle"]

_HEX64 = re.compile(r"[0-9a-f]{64}")


def manifest_digest(manifest: Mapping[str, Any]) -> str:
    """SHA-256 of the manifest without its own digest, over canonical JSON (sorted keys, no spaces)."""
    body = {k: v for k, v in manifest.items() if k != "manifest_sha256"}
    return hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def _malformed(path: Path, what: str) -> ConfigError:
    return ConfigError(f"{path} is a malformed bundle manifest: {what}; re-export the bundle.")


def _count(manifest: Mapping[str, Any], key: str, path: Path, section: Mapping[str, Any] | None = None) -> int:
    value = (manifest if section is None else section).get(key)
    if type(value) is not int or value < 0:
        raise _malformed(path, f"{key} must be a non-negative integer; got {value!r}")
    return value


def _section(manifest: Mapping[str, Any], key: str, path: Path, optional: bool = False) -> dict[str, Any] | None:
    value = manifest.get(key)
    if value is None and optional:
        return None
    if not isinstance(value, dict):
        raise _malformed(path, f"{key!r} must be an object; got {type(value).__name__}")
    return value


def referenced_files(manifest: Mapping[str, Any], path: Path) -> list[str]:
    """Every file name the manifest's sections point at (each must be listed in ``files``)."""
    query = _section(manifest, "query", path)
    candidates = _section(manifest, "candidates", path)
    index = _section(manifest, "index", path)
    assert query is not None and candidates is not None and index is not None
    names = [query.get("tower"), query.get("weights"), candidates.get("identifiers"), candidates.get("embeddings"),
             f"{check_name(index.get('dir'), 'index folder')}/index.json"]
    if query.get("features") is not None:
        names.append(query["features"])
    if _section(manifest, "seen", path, optional=True) is not None:
        names += list(SEEN_FILES)
    head = _section(manifest, "rating_head", path, optional=True)
    if head is not None:
        names += [head.get("config"), head.get("weights")]
    return [check_name(n) for n in names]


def validate_manifest(manifest: Any, path: Path) -> dict[str, Any]:
    """Structure and types of a parsed manifest; every referenced file listed with hash and size.

    Raises:
        ConfigError: a missing or mistyped field.
        UnsafeBundleError: an unsafe file name, or a referenced file the ``files`` table lacks.
    """
    if not isinstance(manifest, dict):
        raise _malformed(path, "not a JSON object")
    files = manifest.get("files")
    if not isinstance(files, dict):
        raise _malformed(path, "'files' must be an object of name -> {sha256, bytes}")
    for name, entry in files.items():
        check_name(name)
        if not (isinstance(entry, dict) and isinstance(entry.get("sha256"), str) and _HEX64.fullmatch(entry["sha256"])
                and type(entry.get("bytes")) is int and entry["bytes"] >= 0):
            raise _malformed(path, f"files[{name!r}] must be {{\"sha256\": 64 hex digits, \"bytes\": n >= 0}}")
    for key in ("num_candidates", "embedding_dim"):
        _count(manifest, key, path)
    seen = _section(manifest, "seen", path, optional=True)
    if seen is not None:
        _count(manifest, "num_keys", path, seen)
        _count(manifest, "num_pairs", path, seen)
    query = _section(manifest, "query", path)
    assert query is not None
    fields = query.get("fields")
    if not (isinstance(fields, list) and fields and all(isinstance(f, str) for f in fields)):
        raise _malformed(path, "query.fields must be a non-empty list of names")
    inputs = query.get("inputs")
    if not (isinstance(inputs, str) or (isinstance(inputs, list) and all(isinstance(i, str) for i in inputs))):
        raise _malformed(path, "query.inputs must be a name or a list of names")
    missing = [n for n in referenced_files(manifest, path) if n not in files]
    if missing:
        raise UnsafeBundleError(f"{path} refers to {missing}, which its 'files' table does not list with a hash and "
                                "size; unlisted files are never read. Refusing the bundle; re-export it.")
    return manifest


def read_manifest(directory: str | os.PathLike) -> dict[str, Any]:
    """Parse, self-check and validate ``manifest.json`` (no other file is read)."""
    root = Path(os.path.realpath(directory))
    path = Path(directory) / "manifest.json"
    if not (root / "manifest.json").exists() and not (root / "manifest.json").is_symlink():
        raise FileNotFoundError(f"{directory} is not a recstack bundle (no manifest.json); "
                                "create one with recstack.serving.export(model, dir, ...)")
    raw = read_regular(resolve_inside(root, "manifest.json"), "manifest.json", limit=MAX_MANIFEST_BYTES)
    try:
        manifest = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        raise ChecksumError(f"{path} is corrupt (not valid JSON: {exc}); re-export the bundle.") from None
    if not isinstance(manifest, dict) or manifest.get("format") != BUNDLE_FORMAT:
        raise ConfigError(f"{path} is not a recstack bundle manifest.")
    if manifest.get("manifest_sha256") != manifest_digest(manifest):
        raise ChecksumError(f"{path} was modified after export (its digest does not match); re-export the bundle.")
    version = manifest.get("format_version")
    if type(version) is not int or not 1 <= version <= BUNDLE_VERSION:
        raise ConfigError(f"bundle format version {version!r} is not one this recstack reads (1..{BUNDLE_VERSION}); "
                          "upgrade recstack.")
    return validate_manifest(manifest, path)


def verify_bundle(directory: str | os.PathLike, hashes: bool = True) -> dict[str, Any]:
    """Check the bundle as :func:`recstack.serving.load_bundle` does before reading it: the manifest,
    every listed file's place, type and size (and SHA-256, with ``hashes``), and that the folder
    holds no unlisted file. Returns the manifest; raises ChecksumError (UnsafeBundleError for a
    refused bundle) otherwise."""
    manifest = read_manifest(directory)
    BundleFiles(directory, manifest["files"]).check(hashes=hashes)
    return manifest

