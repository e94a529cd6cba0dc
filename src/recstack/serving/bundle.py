"""Portable serving bundles: ``export(model, dir, ...)`` and ``load_bundle(dir)``.

A bundle is a directory that needs recstack (and torch/numpy) to serve, but
none of the code that trained the model:

    manifest.json                 format version, versions, model kind, dim, created-at,
                                  SHA-256 + size of every other file, its own digest
    query_features.json           fitted preprocessing of the query fields (FeatureSet JSON)
    query_tower.json              tower architecture (recstack.serving.tower_registry)
    query_tower.safetensors       tower weights (.npz when safetensors is not installed)
    candidates/identifiers.npy    raw candidate ids (str or int), position = candidate id
    candidates/embeddings.npy     float32 [C, d] candidate-tower outputs
    seen/{keys,indptr,indices}.npy  items each query key interacted with (CSR), optional
    rating_head.{json,safetensors}  rating model over [query_emb, candidate_emb], optional
    index/                        the search index (index.json + backend files)

Loading re-hashes every listed file and refuses a bundle whose files are
missing, truncated or changed (ChecksumError), or whose manifest was edited
(its own digest); arrays are read with ``allow_pickle=False`` and weights with
safetensors / ``np.load(allow_pickle=False)``: nothing is unpickled.

Cold start: a query whose lookup features fall outside the vocabulary gets the
out-of-vocabulary embedding row (index 0 of StringLookup/IntegerLookup), so it
still receives recommendations (the OOV row is trained on whatever unknown
values training saw, otherwise it stays near its random init, i.e. a generic
query); the result says ``cold_start=True`` and names the fields in
``oov_fields``. Such queries have no seen-items list.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import os
import shutil
import tempfile
import threading
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn

from ..core.io import atomic_write_json
from ..layers.candidates import embed_in_batches
from ..core.errors import ChecksumError, ConfigError, DataError, RecstackError
from ..features.base import PreprocessingLayer
from ..features.feature_set import FeatureSet
from ..features.lookup import IntegerLookup, StringLookup
from ..index.base import Index, RowIds, load_index
from ..index.brute_force import BruteForce
from ..models.serving_spec import InputSpec, ServingSpec, serving_spec
from .tower_registry import tower_config, tower_from_config

BUNDLE_FORMAT = "recstack.bundle"
BUNDLE_VERSION = 1


class UnknownItemError(DataError, KeyError):
    """An item id is not in the bundle's candidates."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class UnknownFieldError(DataError):
    """A query names fields the bundle does not take, or lacks required ones."""


# ------------------------------------------------------------------------------------------
# Small helpers
# ------------------------------------------------------------------------------------------
def _names(spec: InputSpec) -> list[str]:
    return [spec] if isinstance(spec, str) else list(spec)


def _select(inputs: Mapping[str, Any], spec: InputSpec) -> Any:
    return inputs[spec] if isinstance(spec, str) else {n: inputs[n] for n in spec}


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _manifest_digest(manifest: Mapping[str, Any]) -> str:
    body = {k: v for k, v in manifest.items() if k != "manifest_sha256"}
    return hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def _save_weights(module: nn.Module, stem: Path) -> str:
    """state_dict -> ``stem.safetensors`` (or ``stem.npz`` without safetensors); returns the file name."""
    state = {k: v.detach().cpu().contiguous() for k, v in module.state_dict().items()}
    try:
        from safetensors.torch import save_file
    except ImportError:
        path = stem.with_suffix(".npz")
        with open(path, "wb") as handle:
            np.savez(handle, **{k: v.numpy() for k, v in state.items()})
        return path.name
    path = stem.with_suffix(".safetensors")
    # Tied parameters share storage; safetensors wants distinct tensors.
    save_file({k: v.clone() for k, v in state.items()}, str(path))
    return path.name


def _load_weights(module: nn.Module, path: Path) -> None:
    if path.suffix == ".safetensors":
        try:
            from safetensors.torch import load_file
        except ImportError:
            raise ImportError(f"{path.name} needs the safetensors package: pip install safetensors") from None
        state = load_file(str(path))
    elif path.suffix == ".npz":
        with np.load(path, allow_pickle=False) as data:
            state = {k: torch.from_numpy(np.array(data[k])) for k in data.files}
    else:
        raise ConfigError(f"unknown weights format {path.name}")
    try:
        module.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise ConfigError(f"{path.name} does not fit the tower described next to it: {exc}") from exc


def _load_npy(path: Path, mmap: bool = False) -> np.ndarray:
    try:
        return np.load(path, allow_pickle=False, mmap_mode="r" if mmap else None)
    except ValueError as exc:
        raise DataError(f"{path} is not a plain numpy array ({exc}); refusing to unpickle it.") from exc


def _plain(values: np.ndarray) -> np.ndarray:
    """Identifiers as a numpy dtype np.save stores without pickle (str or int64)."""
    values = np.asarray(values)
    if values.dtype.kind in "iu":
        return values.astype(np.int64)
    if values.dtype.kind in "US":
        return values.astype(str)
    if values.dtype == object and all(isinstance(v, str) for v in values):
        return values.astype(str)
    if values.dtype == object and all(isinstance(v, (int, np.integer)) for v in values):
        return values.astype(np.int64)
    raise DataError(f"candidate identifiers must be strings or integers; got dtype {values.dtype}.")


def _lookup_layers(fs: FeatureSet) -> dict[str, PreprocessingLayer]:
    """Outputs whose layer maps unknown values to an OOV index 0."""
    return {name: fs[name] for name in fs.output_names
            if isinstance(fs[name], (StringLookup, IntegerLookup)) and fs[name].num_oov_indices == 1}


def _table(values: Any, columns: list[str], what: str) -> dict[str, Any]:
    if isinstance(values, pd.DataFrame):
        missing = [c for c in columns if c not in values.columns]
        if missing:
            raise DataError(f"{what} lacks column(s) {missing}; it has {list(values.columns)}.")
        return {c: values[c].to_numpy() for c in columns}
    if isinstance(values, Mapping):
        missing = [c for c in columns if c not in values]
        if missing:
            raise DataError(f"{what} lacks column(s) {missing}; it has {list(values)}.")
        return {c: values[c] for c in columns}
    raise DataError(f"{what} must be a pandas DataFrame or a dict of columns; got {type(values).__name__}.")


def _raw_inputs(table: Mapping[str, Any], spec: InputSpec) -> Any:
    """Raw-mode tower inputs: numeric columns as tensors, others as object arrays."""
    def conv(v: Any) -> Any:
        arr = np.asarray(v.cpu() if isinstance(v, torch.Tensor) else v)
        if arr.dtype.kind in "iub":
            return torch.from_numpy(arr.astype(np.int64))
        if arr.dtype.kind == "f":
            return torch.from_numpy(arr.astype(np.float32))
        return arr.astype(object)
    return _select({k: conv(v) for k, v in table.items()}, spec)


# ------------------------------------------------------------------------------------------
# Export
# ------------------------------------------------------------------------------------------
def export(
    model: nn.Module | ServingSpec,
    directory: str | os.PathLike,
    *,
    candidates: Any = None,
    candidate_key: str | None = None,
    candidate_identifiers: Sequence[Any] | np.ndarray | None = None,
    candidate_embeddings: torch.Tensor | np.ndarray | None = None,
    features: FeatureSet | None = None,
    seen: Any = None,
    seen_key: str | None = None,
    index: str | Index = "brute_force",
    index_options: Mapping[str, Any] | None = None,
    tune_recall: float | None = 0.95,
    tune_k: int = 100,
    tune_queries: torch.Tensor | np.ndarray | None = None,
    overwrite: bool = False,
    batch_size: int = 8192,
    extra: Mapping[str, Any] | None = None,
) -> Path:
    """Write a serving bundle for ``model`` to ``directory`` (atomically: a temp dir renamed into place).

    Args:
        model: a TwoTowerRetrieval (or any model with ``serving_spec()``, or a ServingSpec).
        candidates: raw candidate table (DataFrame / dict of columns) holding the candidate
            tower's input columns and ``candidate_key``; embedded with the candidate tower
            (through ``features`` when given). Alternatively pass ``candidate_identifiers``
            and ``candidate_embeddings`` [C, d] directly.
        candidate_key: column of ``candidates`` whose raw values are returned (default: the
            candidate tower's single input column). Must be unique.
        features: the fitted FeatureSet used in training; the query tower's outputs are
            saved as JSON and applied to requests. Without it the towers get raw values
            (e.g. ``nn.Sequential(StringLookup(...), Embedding(...))``).
        seen: raw table of (seen_key, candidate_key) interactions for ``exclude_seen``.
        seen_key: the query field keying ``seen`` (default: the single query input column).
        index: "brute_force" (exact), "faiss", "scann", or a built Index over ids 0..C-1.
        index_options: constructor options of the index.
        tune_recall: for approximate indexes, ``index.tune(target_recall=...)`` on
            query-tower embeddings of up to 1000 known query ids (None: skip).
        overwrite: replace an existing bundle directory.
        extra: JSON metadata stored in the manifest under "extra".

    Returns:
        the bundle directory.
    """
    spec = serving_spec(model)
    directory = Path(directory)
    if directory.exists() and not overwrite:
        raise ConfigError(f"{directory} already exists; pass overwrite=True to replace it.")
    query_tower = spec.query_tower
    modes = [(m, m.training) for m in (query_tower, spec.rating_head) if m is not None]
    for module, _ in modes:
        module.eval()

    # Query preprocessing: the FeatureSet outputs the query tower reads.
    query_fs: FeatureSet | None = None
    if features is not None:
        query_fs = FeatureSet()
        for name in _names(spec.query_inputs):
            if name not in features:
                raise ConfigError(f"query input {name!r} is not an output of the FeatureSet "
                                  f"(outputs: {features.output_names}).")
            query_fs.add(name, features[name], features.input_column(name))
        query_fields = query_fs.input_columns
    else:
        query_fields = _names(spec.query_inputs)

    # Candidates.
    ident, emb = _candidate_arrays(spec, candidates, candidate_key, candidate_identifiers, candidate_embeddings,
                                   features, batch_size)
    if candidate_key is None:
        candidate_key = _default_candidate_key(spec, features)
    ident = _plain(ident)
    dup = pd.Index(ident).duplicated()
    if dup.any():
        raise DataError(f"candidate identifiers must be unique; {int(dup.sum())} repeat, e.g. "
                        f"{ident[dup][:3].tolist()}. De-duplicate the candidate table first.")
    num, dim = emb.shape

    tmp = Path(tempfile.mkdtemp(prefix=f".{directory.name}.", suffix=".tmp", dir=directory.parent
                                if directory.parent.exists() else None))
    try:
        files: list[str] = []
        if query_fs is not None:
            atomic_write_json(tmp / "query_features.json", query_fs.get_config())
            files.append("query_features.json")
        atomic_write_json(tmp / "query_tower.json", tower_config(query_tower))
        weights = _save_weights(query_tower, tmp / "query_tower")
        files += ["query_tower.json", weights]
        (tmp / "candidates").mkdir()
        np.save(tmp / "candidates" / "identifiers.npy", ident, allow_pickle=False)
        np.save(tmp / "candidates" / "embeddings.npy", emb, allow_pickle=False)
        files += ["candidates/identifiers.npy", "candidates/embeddings.npy"]

        seen_info = None
        if seen is not None:
            seen_key = seen_key or (query_fields[0] if len(query_fields) == 1 else None)
            if seen_key is None:
                raise ConfigError("pass seen_key= (the query field that keys the seen table).")
            if candidate_key is None:
                raise ConfigError("pass candidate_key= (the seen table's item column).")
            seen_info = _write_seen(tmp / "seen", seen, seen_key, candidate_key, ident)
            files += [f"seen/{n}" for n in ("keys.npy", "indptr.npy", "indices.npy")]

        head_info = None
        if spec.rating_head is not None:
            atomic_write_json(tmp / "rating_head.json", tower_config(spec.rating_head))
            head_weights = _save_weights(spec.rating_head, tmp / "rating_head")
            files += ["rating_head.json", head_weights]
            head_info = {"config": "rating_head.json", "weights": head_weights, "inputs": "concat(query, candidate)"}

        built = _build_index(index, index_options, emb)
        tuning = None
        if not built.is_exact and tune_recall is not None and hasattr(built, "tune"):
            queries = tune_queries
            if queries is None:
                queries = _default_tune_queries(spec, query_fs, batch_size)
            tuning = built.tune(queries, target_recall=tune_recall, k=min(tune_k, num))  # type: ignore[attr-defined]
        index_files = built.save(tmp / "index")
        files += sorted(str(p.relative_to(tmp)) for p in index_files.rglob("*") if p.is_file())

        manifest: dict[str, Any] = {
            "format": BUNDLE_FORMAT,
            "format_version": BUNDLE_VERSION,
            "recstack_version": _recstack_version(),
            "torch_version": torch.__version__,
            "numpy_version": np.__version__,
            "created_at": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            "model_kind": spec.kind,
            "model_class": f"{type(model).__module__}.{type(model).__qualname__}",
            "embedding_dim": int(dim),
            "num_candidates": int(num),
            "query": {"fields": query_fields, "inputs": spec.query_inputs,
                      "features": "query_features.json" if query_fs is not None else None,
                      "tower": "query_tower.json", "weights": weights},
            "candidates": {"key": candidate_key, "identifiers": "candidates/identifiers.npy",
                           "embeddings": "candidates/embeddings.npy",
                           "identifier_dtype": "str" if ident.dtype.kind == "U" else "int"},
            "seen": seen_info,
            "rating_head": head_info,
            "index": {"dir": "index", "kind": built.kind, "is_exact": built.is_exact,
                      "params": built.describe()["params"],
                      "recall": built.metadata.get("recall"), "tuning": tuning and {
                          k: v for k, v in tuning.items() if k != "curve"}},
            "extra": dict(extra or {}),
            "files": {name: {"sha256": _sha256(tmp / name), "bytes": (tmp / name).stat().st_size}
                      for name in sorted(files)},
        }
        manifest["manifest_sha256"] = _manifest_digest(manifest)
        atomic_write_json(tmp / "manifest.json", manifest)
        _move_into_place(tmp, directory)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    finally:
        for module, training in modes:      # export leaves the model's train/eval modes as they were
            module.train(training)
    return directory


def _recstack_version() -> str:
    import recstack
    return getattr(recstack, "__version__", "unknown")


def _default_candidate_key(spec: ServingSpec, features: FeatureSet | None) -> str | None:
    if spec.candidate_inputs is None or not isinstance(spec.candidate_inputs, str):
        return None
    if features is not None and spec.candidate_inputs in features:
        return features.input_column(spec.candidate_inputs)
    return spec.candidate_inputs


def _candidate_arrays(spec: ServingSpec, candidates: Any, candidate_key: str | None,
                      identifiers: Any, embeddings: Any, features: FeatureSet | None,
                      batch_size: int) -> tuple[np.ndarray, np.ndarray]:
    if embeddings is not None:
        emb = embeddings.detach().cpu().float().numpy() if isinstance(embeddings, torch.Tensor) \
            else np.asarray(embeddings, dtype=np.float32)
        if identifiers is None:
            if candidates is None or candidate_key is None:
                raise ConfigError("with candidate_embeddings pass candidate_identifiers= (or candidates= and "
                                  "candidate_key=).")
            identifiers = _table(candidates, [candidate_key], "candidates")[candidate_key]
        ident = np.asarray(identifiers)
        if emb.ndim != 2 or emb.shape[0] != ident.shape[0]:
            raise DataError(f"{ident.shape[0]} candidate identifiers but embeddings of shape {emb.shape}.")
        return ident, np.ascontiguousarray(emb, dtype=np.float32)
    if candidates is None or spec.candidate_tower is None or spec.candidate_inputs is None:
        raise ConfigError("export needs candidates= (a raw candidate table for the candidate tower) or "
                          "candidate_identifiers= with candidate_embeddings=.")
    key = candidate_key or _default_candidate_key(spec, features)
    if key is None:
        raise ConfigError("pass candidate_key= (the candidate column to return).")
    if features is not None:
        cand_fs = FeatureSet()
        for name in _names(spec.candidate_inputs):
            if name not in features:
                raise ConfigError(f"candidate input {name!r} is not an output of the FeatureSet.")
            cand_fs.add(name, features[name], features.input_column(name))
        table = _table(candidates, list(dict.fromkeys(cand_fs.input_columns + [key])), "candidates")
        inputs = _select(cand_fs.transform({c: table[c] for c in cand_fs.input_columns}), spec.candidate_inputs)
    else:
        cols = _names(spec.candidate_inputs)
        table = _table(candidates, list(dict.fromkeys(cols + [key])), "candidates")
        inputs = _raw_inputs({c: table[c] for c in cols}, spec.candidate_inputs)
    if isinstance(inputs, np.ndarray) or (isinstance(inputs, dict) and any(
            isinstance(v, np.ndarray) for v in inputs.values())):
        # raw object inputs cannot be sliced by embed_in_batches's tensor path; embed in one go.
        with torch.no_grad():
            was = spec.candidate_tower.training
            spec.candidate_tower.eval()
            emb_t = spec.candidate_tower(inputs)
            spec.candidate_tower.train(was)
    else:
        emb_t = embed_in_batches(spec.candidate_tower, inputs, batch_size)
    return np.asarray(table[key]), emb_t.detach().float().contiguous().numpy()


def _write_seen(folder: Path, seen: Any, seen_key: str, candidate_key: str, ident: np.ndarray) -> dict[str, Any]:
    table = _table(seen, [seen_key, candidate_key], "seen")
    keys_raw = pd.Series(np.asarray(table[seen_key])).astype(str).to_numpy()
    items = pd.Index(ident).get_indexer(pd.Series(np.asarray(table[candidate_key])).astype(ident.dtype))
    keep = items >= 0           # interactions with items outside the candidates cannot be excluded
    keys_raw, items = keys_raw[keep], items[keep]
    uniq, key_idx = np.unique(keys_raw, return_inverse=True)
    pairs = np.unique(np.stack([key_idx.astype(np.int64), items.astype(np.int64)]), axis=1)
    counts = np.bincount(pairs[0], minlength=uniq.shape[0])
    indptr = np.zeros(uniq.shape[0] + 1, dtype=np.int64)
    np.cumsum(counts, out=indptr[1:])
    folder.mkdir()
    np.save(folder / "keys.npy", uniq.astype(str), allow_pickle=False)
    np.save(folder / "indptr.npy", indptr, allow_pickle=False)
    np.save(folder / "indices.npy", pairs[1], allow_pickle=False)
    return {"query_field": seen_key, "item_field": candidate_key, "num_keys": int(uniq.shape[0]),
            "num_pairs": int(pairs.shape[1]), "dropped_unknown_items": int((~keep).sum())}


def _build_index(index: str | Index, options: Mapping[str, Any] | None, emb: np.ndarray) -> Index:
    from ..index import make_index
    if isinstance(index, Index):
        ids = index.candidate_ids()
        if index.num_candidates != emb.shape[0] or not np.array_equal(ids, np.arange(emb.shape[0])):
            raise ConfigError("a prebuilt index must hold candidate ids 0..C-1 (positions in the candidate table).")
        return index
    built = make_index(index, **dict(options or {}))
    return built.build(np.arange(emb.shape[0], dtype=np.int64), emb)


@torch.no_grad()
def _default_tune_queries(spec: ServingSpec, query_fs: FeatureSet | None, batch_size: int) -> torch.Tensor | None:
    """Query-tower embeddings of up to 1000 known ids of a single lookup-encoded query input."""
    if query_fs is None or not isinstance(spec.query_inputs, str):
        return None
    layer = query_fs[spec.query_inputs]
    if not isinstance(layer, (StringLookup, IntegerLookup)):
        return None
    size = layer.vocabulary_size()
    first = layer.num_oov_indices
    rng = np.random.default_rng(0)
    picks = np.arange(first, size)
    if picks.shape[0] > 1000:
        picks = np.sort(rng.choice(picks, 1000, replace=False))
    return embed_in_batches(spec.query_tower, torch.from_numpy(picks.astype(np.int64)), batch_size)


def _move_into_place(tmp: Path, directory: Path) -> None:
    """Rename the finished temp dir to ``directory`` (replacing an old bundle)."""
    directory.parent.mkdir(parents=True, exist_ok=True)
    if directory.exists():
        old = directory.with_name(f".{directory.name}.old-{os.getpid()}-{threading.get_ident()}")
        os.replace(directory, old)
        try:
            os.replace(tmp, directory)
        except BaseException:
            os.replace(old, directory)
            raise
        shutil.rmtree(old, ignore_errors=True)
    else:
        if tmp.parent != directory.parent:
            shutil.move(str(tmp), str(directory))
        else:
            os.replace(tmp, directory)


# ------------------------------------------------------------------------------------------
# Loading and serving
# ------------------------------------------------------------------------------------------
class SortedKeys:
    """Exact key -> value lookup by binary search over sorted keys (str or int).

    For request-sized batches this costs ~10 µs, where a pandas ``get_indexer`` spends
    ~0.5 ms building an index from the targets; memory is the sorted key array.
    """

    def __init__(self, keys: np.ndarray, values: np.ndarray | None = None):
        keys = np.asarray(keys)
        if keys.dtype == object:
            keys = keys.astype(str)
        order = np.argsort(keys, kind="stable")
        self.keys = keys[order]
        self.values = (order if values is None else np.asarray(values)[order]).astype(np.int64)

    def lookup(self, query: np.ndarray) -> np.ndarray:
        """[n] values, -1 for keys not present."""
        if self.keys.shape[0] == 0 or len(query) == 0:
            return np.full(len(query), -1, dtype=np.int64)
        try:
            query = np.asarray(query, dtype=str if self.keys.dtype.kind == "U" else np.int64)
        except (TypeError, ValueError, OverflowError):
            return np.full(len(query), -1, dtype=np.int64)
        pos = np.minimum(np.searchsorted(self.keys, query), self.keys.shape[0] - 1)
        return np.where(self.keys[pos] == query, self.values[pos], -1)


class _FastLookup:
    """StringLookup / IntegerLookup.transform for small batches of exact-typed values (same
    result: vocabulary position + num_oov_indices, unknown -> 0); anything else falls back
    to the layer itself (which also raises its errors)."""

    def __init__(self, layer: StringLookup | IntegerLookup):
        self.layer = layer
        vocab = layer.get_vocabulary()[layer.num_oov_indices:]
        self.strings = isinstance(layer, StringLookup)
        keys = np.asarray(vocab, dtype=str if self.strings else np.int64)
        self.table = SortedKeys(keys, np.arange(keys.shape[0]) + layer.num_oov_indices)

    def __call__(self, values: list[Any]) -> torch.Tensor:
        kind = str if self.strings else int
        if self.layer.num_oov_indices == 1 and all(type(v) is kind for v in values):
            codes = self.table.lookup(np.asarray(values, dtype=str if self.strings else np.int64))
            return torch.from_numpy(np.maximum(codes, 0))
        return self.layer.transform(values)


@dataclass
class Recommendation:
    """Top-k result for one query: raw item ids and their scores (descending)."""

    items: list[Any]
    scores: list[float]
    cold_start: bool = False
    oov_fields: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def read_manifest(directory: str | os.PathLike) -> dict[str, Any]:
    """Parse and self-check ``manifest.json`` (no file hashing)."""
    path = Path(directory) / "manifest.json"
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise FileNotFoundError(f"{directory} is not a recstack bundle (no manifest.json); "
                                "create one with recstack.serving.export(model, dir, ...)") from None
    try:
        manifest = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ChecksumError(f"{path} is corrupt (not valid JSON: {exc}); re-export the bundle.") from exc
    if not isinstance(manifest, dict) or manifest.get("format") != BUNDLE_FORMAT:
        raise ConfigError(f"{path} is not a recstack bundle manifest.")
    if manifest.get("manifest_sha256") != _manifest_digest(manifest):
        raise ChecksumError(f"{path} was modified after export (its digest does not match); re-export the bundle.")
    version = manifest.get("format_version")
    if not isinstance(version, int) or version > BUNDLE_VERSION:
        raise ConfigError(f"bundle format version {version!r} is newer than this recstack reads ({BUNDLE_VERSION}); "
                          "upgrade recstack.")
    return manifest


def verify_bundle(directory: str | os.PathLike) -> dict[str, Any]:
    """Check every listed file's size and SHA-256; returns the manifest or raises ChecksumError."""
    directory = Path(directory)
    manifest = read_manifest(directory)
    problems = []
    for name, entry in manifest["files"].items():
        path = directory / name
        if ".." in Path(name).parts or Path(name).is_absolute():
            raise ChecksumError(f"bundle manifest lists an unsafe path {name!r}.")
        if not path.is_file():
            problems.append(f"{name}: missing")
        elif path.stat().st_size != entry["bytes"]:
            problems.append(f"{name}: {path.stat().st_size} bytes, expected {entry['bytes']} (truncated or changed)")
        elif _sha256(path) != entry["sha256"]:
            problems.append(f"{name}: SHA-256 mismatch (file changed)")
    if problems:
        raise ChecksumError(f"bundle {directory} failed verification; refusing to load it: " + "; ".join(problems))
    return manifest


class Bundle:
    """A loaded bundle: ``recommend``, ``similar``, ``predict_rating``. Thread-safe for queries.

    Use :func:`load_bundle` to create one.
    """

    def __init__(self, directory: Path, manifest: dict[str, Any], query_features: FeatureSet | None,
                 query_tower: nn.Module, identifiers: np.ndarray, embeddings: np.ndarray, index: Index,
                 seen: tuple[SortedKeys, np.ndarray, np.ndarray] | None, rating_head: nn.Module | None):
        self.directory = directory
        self.manifest = manifest
        self.query_features = query_features
        self.query_tower = query_tower.eval()
        self.identifiers = identifiers
        self.embeddings = embeddings
        self.index = index
        self.rating_head = rating_head.eval() if rating_head is not None else None
        self._seen = seen
        self._ident_lookup: SortedKeys | None = None          # built on first use (argsort of C ids)
        self._ident_lock = threading.Lock()
        self.query_fields: list[str] = list(manifest["query"]["fields"])
        self.query_inputs: InputSpec = manifest["query"]["inputs"]
        self._oov = _lookup_layers(query_features) if query_features is not None else {}
        self._fast = {name: _FastLookup(query_features[name]) for name in query_features.output_names
                      if isinstance(query_features[name], (StringLookup, IntegerLookup))} if query_features else {}
        self._raw_oov = None
        if query_features is None and isinstance(self.query_inputs, str) and isinstance(query_tower, nn.Sequential) \
                and len(query_tower) and isinstance(query_tower[0], (StringLookup, IntegerLookup)) \
                and query_tower[0].num_oov_indices == 1:
            self._raw_oov = query_tower[0]

    # -- info -------------------------------------------------------------------------------
    @property
    def digest(self) -> str:
        """The manifest digest: identifies this export."""
        return str(self.manifest["manifest_sha256"])

    @property
    def num_candidates(self) -> int:
        return int(self.identifiers.shape[0])

    @property
    def has_rating_head(self) -> bool:
        return self.rating_head is not None

    @property
    def seen_field(self) -> str | None:
        return self.manifest["seen"]["query_field"] if self.manifest.get("seen") else None

    def describe(self) -> dict[str, Any]:
        m = self.manifest
        return {"model_kind": m["model_kind"], "created_at": m["created_at"], "digest": self.digest,
                "recstack_version": m["recstack_version"], "embedding_dim": m["embedding_dim"],
                "num_candidates": m["num_candidates"], "query_fields": self.query_fields,
                "index": {"kind": self.index.kind, "is_exact": self.index.is_exact,
                          "recall": self.index.metadata.get("recall")},
                "has_rating_head": self.has_rating_head, "seen_field": self.seen_field}

    # -- queries ------------------------------------------------------------------------------
    def _as_batch(self, queries: Mapping[str, Any] | Sequence[Mapping[str, Any]]
                  ) -> tuple[list[Mapping[str, Any]], bool]:
        if isinstance(queries, Mapping):
            return [queries], True
        if isinstance(queries, (str, bytes)) or not isinstance(queries, Sequence):
            raise DataError("queries must be a dict of query fields or a list of such dicts.")
        if len(queries) == 0:
            raise DataError("queries is empty; pass at least one query.")
        return list(queries), False

    def _check_fields(self, batch: list[Mapping[str, Any]]) -> None:
        allowed = set(self.query_fields)
        for i, query in enumerate(batch):
            if not isinstance(query, Mapping):
                raise DataError(f"query {i} must be a dict of fields; got {type(query).__name__}.")
            unknown = sorted(set(query) - allowed)
            if unknown:
                raise UnknownFieldError(f"query {i} has unknown field(s) {unknown}; this bundle's queries take "
                                        f"{self.query_fields}.")
            missing = [f for f in self.query_fields if f not in query]
            if missing:
                raise UnknownFieldError(f"query {i} lacks field(s) {missing}; this bundle's queries take "
                                        f"{self.query_fields}.")

    @torch.no_grad()
    def query_embeddings(self, queries: Mapping[str, Any] | Sequence[Mapping[str, Any]]
                         ) -> tuple[torch.Tensor, list[list[str]]]:
        """[B, d] query-tower embeddings of raw queries and, per query, its out-of-vocabulary fields."""
        batch, _ = self._as_batch(queries)
        self._check_fields(batch)
        table = {f: [q[f] for q in batch] for f in self.query_fields}
        oov: list[list[str]] = [[] for _ in batch]
        if self.query_features is not None:
            inputs = self._transform(table)
            for name in self._oov:
                field_name = self.query_features.input_column(name)
                for r in torch.nonzero(inputs[name].reshape(len(batch), -1)[:, 0] == 0).reshape(-1).tolist():
                    oov[r].append(field_name)
            x = _select(inputs, self.query_inputs)
        else:
            x = _raw_inputs(table, self.query_inputs)
            if self._raw_oov is not None:
                codes = self._raw_oov(x)
                for r in torch.nonzero(codes.reshape(-1) == 0).reshape(-1).tolist():
                    oov[r].append(str(self.query_inputs))
        emb = self.query_tower(x)
        if emb.dim() != 2 or emb.shape[0] != len(batch):
            raise DataError(f"the query tower returned shape {tuple(emb.shape)} for {len(batch)} queries.")
        return emb.float(), oov

    def _transform(self, table: dict[str, list[Any]]) -> dict[str, torch.Tensor]:
        """``query_features.transform(table)`` with fast id lookups for request-sized batches."""
        fs = self.query_features
        assert fs is not None
        out: dict[str, torch.Tensor] = {}
        for name in fs.output_names:
            column = fs.input_column(name)
            try:
                fast = self._fast.get(name)
                out[name] = fast(table[column]) if fast is not None else fs[name].transform(table[column])
            except RecstackError as exc:
                raise type(exc)(f"query field {column!r}: {exc}") from exc
        return out

    def _identifier_lookup(self) -> SortedKeys:
        if self._ident_lookup is None:
            with self._ident_lock:
                if self._ident_lookup is None:
                    self._ident_lookup = SortedKeys(self.identifiers)
        return self._ident_lookup

    def item_ids(self, items: Sequence[Any], what: str = "item") -> np.ndarray:
        """Raw item ids -> candidate ids (positions); UnknownItemError listing unknown ones."""
        items = list(items)
        pos = self._identifier_lookup().lookup(self._coerce_items(items))
        if (pos < 0).any():
            bad = [items[i] for i in np.flatnonzero(pos < 0)[:5]]
            raise UnknownItemError(f"unknown {what} id(s) {bad}; the bundle has {self.num_candidates} items.")
        return pos.astype(np.int64)

    def _coerce_items(self, items: list[Any]) -> np.ndarray:
        """Raw ids as the identifier type (ints given as strings, e.g. from a URL, are converted;
        values that cannot be converted match nothing)."""
        if self.identifiers.dtype.kind != "i":
            return np.asarray([str(v) for v in items], dtype=str)
        out = np.full(len(items), np.iinfo(np.int64).min, dtype=np.int64)
        for i, v in enumerate(items):   # short lists (request-sized)
            try:
                out[i] = int(v)
            except (TypeError, ValueError):
                pass
        return out

    def _seen_rows(self, batch: list[Mapping[str, Any]]) -> RowIds | None:
        if self._seen is None:
            return None
        keys, indptr, indices = self._seen
        field_name = self.seen_field
        pos = keys.lookup(np.asarray([str(q.get(field_name)) for q in batch], dtype=str))
        known = pos >= 0
        safe = np.where(known, pos, 0)
        counts = np.where(known, indptr[safe + 1] - indptr[safe], 0)
        out_ptr = np.zeros(len(batch) + 1, dtype=np.int64)
        np.cumsum(counts, out=out_ptr[1:])
        starts = np.repeat(indptr[safe], counts)
        offsets = np.arange(out_ptr[-1]) - np.repeat(out_ptr[:-1], counts)
        return RowIds(out_ptr, np.asarray(indices[starts + offsets], dtype=np.int64))

    def recommend(self, queries: Mapping[str, Any] | Sequence[Mapping[str, Any]], k: int = 10,
                  exclude_seen: bool = True, allow: Sequence[Any] | None = None,
                  exclude: Sequence[Any] | None = None) -> Recommendation | list[Recommendation]:
        """Top-k items for one query (a dict of raw fields) or a list of queries.

        Args:
            queries: ``{"user_id": "42"}`` or a list of such dicts.
            k: items per query (at most the catalogue size; fewer if filters leave fewer).
            exclude_seen: drop the items the query key interacted with (stored in the bundle).
            allow: raw item ids; only these may be returned (same list for every query).
            exclude: raw item ids never to return (unknown ids are ignored).

        Returns:
            a :class:`Recommendation` (or a list, for a list of queries).
        """
        batch, single = self._as_batch(queries)
        if int(k) < 1:
            raise DataError(f"k must be >= 1; got {k}.")
        emb, oov = self.query_embeddings(batch)
        rows = self._seen_rows(batch) if exclude_seen else None
        if exclude:
            extra = self._identifier_lookup().lookup(self._coerce_items(list(exclude)))
            extra = extra[extra >= 0].astype(np.int64)
            lists = RowIds(np.arange(len(batch) + 1, dtype=np.int64) * extra.shape[0], np.tile(extra, len(batch)))
            rows = lists if rows is None else RowIds.concat_rows(rows, lists)
        allow_spec = None
        if allow is not None:
            ids = self.item_ids(allow, "allow-list item")
            allow_spec = RowIds(np.arange(len(batch) + 1, dtype=np.int64) * ids.shape[0], np.tile(ids, len(batch)))
        scores, ids = self.index.search(emb, k=int(k), exclude=rows, allow=allow_spec)
        out = self._results(scores, ids, oov)
        return out[0] if single else out

    def _results(self, scores: torch.Tensor, ids: np.ndarray, oov: list[list[str]] | None = None
                 ) -> list[Recommendation]:
        s = scores.numpy()
        out = []
        for r in range(ids.shape[0]):
            ok = ids[r] >= 0
            out.append(Recommendation(items=self.identifiers[ids[r][ok]].tolist(),
                                      scores=[float(v) for v in s[r][ok]],
                                      cold_start=bool(oov and oov[r]), oov_fields=list(oov[r]) if oov else []))
        return out

    def similar(self, item: Any, k: int = 10, exclude: Sequence[Any] | None = None) -> Recommendation:
        """Item-to-item: the k candidates closest (inner product) to ``item``'s embedding, itself excluded."""
        pos = self.item_ids([item])
        extra = None
        if exclude:
            e = self._identifier_lookup().lookup(self._coerce_items(list(exclude)))
            extra = [e[e >= 0].tolist()]
        scores, ids = self.index.similar(pos, k=int(k), exclude=extra)
        return self._results(scores, ids)[0]

    def predict_rating(self, queries: Mapping[str, Any] | Sequence[Mapping[str, Any]], items: Sequence[Any]
                       ) -> list[float]:
        """Ratings from the rating head: one query (dict) x many items, or B queries x B items pairwise.

        rating = rating_head(cat([query_embedding, candidate_embedding], dim=1)).
        """
        return self.rate(queries, items)[0]

    @torch.no_grad()
    def rate(self, queries: Mapping[str, Any] | Sequence[Mapping[str, Any]], items: Sequence[Any]
             ) -> tuple[list[float], list[list[str]]]:
        """:meth:`predict_rating` plus the out-of-vocabulary fields of each query."""
        if self.rating_head is None:
            raise ConfigError(f"this bundle ({self.manifest['model_kind']}) has no rating head.")
        batch, single = self._as_batch(queries)
        pos = self.item_ids(items)
        emb, oov = self.query_embeddings(batch)
        if single:
            emb = emb.expand(pos.shape[0], -1)
        elif emb.shape[0] != pos.shape[0]:
            raise DataError(f"{emb.shape[0]} queries but {pos.shape[0]} items; pass one query or one item per query.")
        cand = torch.from_numpy(np.ascontiguousarray(self.embeddings[pos], dtype=np.float32))
        out = self.rating_head(torch.cat([emb, cand], dim=1))
        return [float(v) for v in out.reshape(-1)], oov


def load_bundle(directory: str | os.PathLike, verify: bool = True, index: str | None = None,
                mmap: bool = True) -> Bundle:
    """Load a bundle written by :func:`export`.

    Args:
        directory: the bundle directory.
        verify: re-hash every file against the manifest first (refuses tampered or truncated
            bundles with ChecksumError). Leave on; it costs ~1 s per GB.
        index: None (the bundle's index) or "brute_force" to search exactly over the stored
            candidate embeddings instead.
        mmap: memory-map the candidate embeddings (read-only).
    """
    directory = Path(directory)
    manifest = verify_bundle(directory) if verify else read_manifest(directory)
    try:
        q = manifest["query"]
        query_fs = None
        if q.get("features"):
            query_fs = FeatureSet.from_json((directory / q["features"]).read_text(encoding="utf-8"))
        tower = tower_from_config(json.loads((directory / q["tower"]).read_text(encoding="utf-8")))
        _load_weights(tower, directory / q["weights"])
        c = manifest["candidates"]
        identifiers = _load_npy(directory / c["identifiers"])
        embeddings = _load_npy(directory / c["embeddings"], mmap=mmap)
        if embeddings.shape != (manifest["num_candidates"], manifest["embedding_dim"]):
            raise ChecksumError(f"candidate embeddings have shape {embeddings.shape}, the manifest says "
                                f"({manifest['num_candidates']}, {manifest['embedding_dim']}).")
        if index in (None, manifest["index"]["kind"]):
            idx = load_index(directory / manifest["index"]["dir"])
        elif index in ("brute_force", "exact"):
            idx = BruteForce().build(np.arange(embeddings.shape[0]), np.array(embeddings))
        else:
            raise ConfigError(f"index override must be None or 'brute_force'; got {index!r}.")
        seen = None
        if manifest.get("seen"):
            seen = (SortedKeys(_load_npy(directory / "seen" / "keys.npy")),
                    _load_npy(directory / "seen" / "indptr.npy"),
                    _load_npy(directory / "seen" / "indices.npy", mmap=mmap))
        head = None
        if manifest.get("rating_head"):
            h = manifest["rating_head"]
            head = tower_from_config(json.loads((directory / h["config"]).read_text(encoding="utf-8")))
            _load_weights(head, directory / h["weights"])
    except (KeyError, TypeError) as exc:
        raise ConfigError(f"bundle {directory} has a malformed manifest: {exc!r}") from exc
    except json.JSONDecodeError as exc:
        raise ChecksumError(f"bundle {directory} has a corrupt JSON file: {exc}") from exc
    return Bundle(directory, manifest, query_fs, tower, identifiers, embeddings, idx, seen, head)

