"""Writing a serving bundle: ``export(model, dir, ...)``.

A bundle is a directory that needs recstack (and torch/numpy) to serve, but
none of the code that trained the model:

    manifest.json                 schema in recstack.serving.manifest; SHA-256 + size of every other file
    query_features.json           fitted preprocessing of the query fields (FeatureSet JSON)
    query_tower.json              tower architecture by registered names (recstack.models.tower_codec)
    query_tower.safetensors       tower weights (.npz when safetensors is not installed)
    candidates/identifiers.npy    raw candidate ids (str or int), position = candidate id
    candidates/embeddings.npy     float32 [C, d] candidate-tower outputs
    seen/{keys,indptr,indices}.npy  items each query key interacted with (CSR), optional
    rating_head.{json,safetensors}  rating model over [query_emb, candidate_emb], optional
    index/                        the search index (index.json + backend files)

The directory is written as a temporary sibling and renamed into place, so a
reader sees the old bundle or the new one, never half of one. Nothing in it
needs pickle to read.
"""

from __future__ import annotations

import datetime as _dt
import os
import shutil
import tempfile
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn

from ..core.errors import ConfigError, DataError
from ..core.id_lists import IdLists
from ..core.io import atomic_write_json, sha256_file
from ..core.version import __version__
from ..features.feature_set import FeatureSet
from ..features.lookup import IntegerLookup, StringLookup
from ..index import Index, make_index
from ..layers.candidates import embed_in_batches
from ..models.serving_spec import ServingSpec, serving_spec
from ..models.tower_codec import tower_config
from .bundle_index import public_params, write_index
from .inputs import input_names, raw_inputs, select, table_columns
from .manifest import BUNDLE_FORMAT, BUNDLE_VERSION, HISTORY_FILES, SEEN_FILES, manifest_digest
from .weights import save_weights

__all__ = ["export"]


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
    history: Mapping[str, Any] | None = None,
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
        index: "brute_force" (exact), "faiss", "scann", or a built Index over ids 0..C-1
            (e.g. a PgVector; its connection details are not written to the bundle).
        index_options: constructor options of the index.
        tune_recall: for approximate indexes, ``index.tune(target_recall=...)`` on
            query-tower embeddings of up to 1000 known query ids (None: skip).
        overwrite: replace an existing bundle directory.
        extra: JSON metadata stored in the manifest under "extra".
        history: for a next-item bundle (query tower: history of candidate positions + 1,
            left-padded, e.g. :class:`~recstack.models.history_tower.HistoryQueryTower`):
            ``{"max_length": L, "users": [U] str ids, "indptr": [U+1], "items": [n] candidate
            positions in time order, "popularity": [C] float ranking of an empty history}``.
            Written under ``history/`` and listed in the manifest's "history" section.

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
        query_fs = _subset(features, spec.query_inputs, "query")
        query_fields = query_fs.input_columns
    else:
        query_fields = input_names(spec.query_inputs)

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
        weights = save_weights(query_tower, tmp / "query_tower")
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
            seen_info = _write_seen(tmp, seen, seen_key, candidate_key, ident)
            files += list(SEEN_FILES)

        history_info = None
        if history is not None:
            history_info = _write_history(tmp, history, num)
            files += list(HISTORY_FILES)

        head_info = None
        if spec.rating_head is not None:
            atomic_write_json(tmp / "rating_head.json", tower_config(spec.rating_head))
            head_weights = save_weights(spec.rating_head, tmp / "rating_head")
            files += ["rating_head.json", head_weights]
            head_info = {"config": "rating_head.json", "weights": head_weights, "inputs": "concat(query, candidate)"}

        built = _build_index(index, index_options, emb)
        tuning = None
        if not built.is_exact and tune_recall is not None and hasattr(built, "tune"):
            queries = tune_queries
            if queries is None:
                queries = _default_tune_queries(spec, query_fs, batch_size)
            tuning = built.tune(queries, target_recall=tune_recall, k=min(tune_k, num))  # type: ignore[attr-defined]
        files += write_index(built, tmp / "index")

        manifest: dict[str, Any] = {
            "format": BUNDLE_FORMAT,
            "format_version": BUNDLE_VERSION,
            "recstack_version": __version__,
            "torch_version": torch.__version__,
            "numpy_version": np.__version__,
            "created_at": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            "model_kind": spec.kind,
            "model_class": type(model).__name__,
            "embedding_dim": int(dim),
            "num_candidates": int(num),
            "query": {"fields": query_fields, "inputs": spec.query_inputs,
                      "features": "query_features.json" if query_fs is not None else None,
                      "tower": "query_tower.json", "weights": weights},
            "candidates": {"key": candidate_key, "identifiers": "candidates/identifiers.npy",
                           "embeddings": "candidates/embeddings.npy",
                           "identifier_dtype": "str" if ident.dtype.kind == "U" else "int"},
            "seen": seen_info,
            "history": history_info,
            "rating_head": head_info,
            "index": {"dir": "index", "kind": built.kind, "is_exact": built.is_exact,
                      "params": public_params(built.kind, built.describe()["params"]),
                      "recall": built.metadata.get("recall"), "tuning": tuning and {
                          k: v for k, v in tuning.items() if k != "curve"}},
            "extra": dict(extra or {}),
            "files": {name: {"sha256": sha256_file(tmp / name), "bytes": (tmp / name).stat().st_size}
                      for name in sorted(files)},
        }
        manifest["manifest_sha256"] = manifest_digest(manifest)
        atomic_write_json(tmp / "manifest.json", manifest)
        _move_into_place(tmp, directory)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    finally:
        for module, training in modes:      # export leaves the model's train/eval modes as they were
            module.train(training)
    return directory


def _subset(features: FeatureSet, inputs: Any, what: str) -> FeatureSet:
    """The FeatureSet of the outputs a tower reads."""
    subset = FeatureSet()
    for name in input_names(inputs):
        if name not in features:
            raise ConfigError(f"{what} input {name!r} is not an output of the FeatureSet "
                              f"(outputs: {features.output_names}).")
        subset.add(name, features[name], features.input_column(name))
    return subset


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
            identifiers = table_columns(candidates, [candidate_key], "candidates")[candidate_key]
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
        cand_fs = _subset(features, spec.candidate_inputs, "candidate")
        table = table_columns(candidates, list(dict.fromkeys(cand_fs.input_columns + [key])), "candidates")
        inputs = select(cand_fs.transform({c: table[c] for c in cand_fs.input_columns}), spec.candidate_inputs)
    else:
        cols = input_names(spec.candidate_inputs)
        table = table_columns(candidates, list(dict.fromkeys(cols + [key])), "candidates")
        inputs = raw_inputs({c: table[c] for c in cols}, spec.candidate_inputs)
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


def _write_seen(root: Path, seen: Any, seen_key: str, candidate_key: str, ident: np.ndarray) -> dict[str, Any]:
    """seen/{keys,indptr,indices}.npy: the distinct (key, candidate position) pairs as CSR rows by key."""
    table = table_columns(seen, [seen_key, candidate_key], "seen")
    keys_raw = pd.Series(np.asarray(table[seen_key])).astype(str).to_numpy()
    items = pd.Index(ident).get_indexer(pd.Series(np.asarray(table[candidate_key])).astype(ident.dtype))
    keep = items >= 0           # interactions with items outside the candidates cannot be excluded
    keys_raw, items = keys_raw[keep], items[keep]
    uniq, key_idx = np.unique(keys_raw, return_inverse=True)
    lists = IdLists.from_pairs(key_idx, items, num_keys=uniq.shape[0])     # rows sorted, repeats dropped
    (root / "seen").mkdir()
    for name, array in zip(SEEN_FILES, (uniq.astype(str), lists.indptr, lists.ids)):
        np.save(root / name, array, allow_pickle=False)
    return {"query_field": seen_key, "item_field": candidate_key, "num_keys": int(uniq.shape[0]),
            "num_pairs": int(lists.ids.shape[0]), "dropped_unknown_items": int((~keep).sum())}


def _write_history(root: Path, history: Mapping[str, Any], num: int) -> dict[str, Any]:
    """history/{users,indptr,items,popularity}.npy: stored histories (CSR, time order) and the
    empty-history ranking; checked here so a bundle never holds positions outside the catalogue."""
    users = np.asarray(history["users"]).astype(str)
    indptr = np.asarray(history["indptr"], dtype=np.int64)
    items = np.asarray(history["items"], dtype=np.int64)
    popularity = np.asarray(history["popularity"], dtype=np.float32)
    max_length = int(history["max_length"])
    if indptr.shape != (users.shape[0] + 1,) or indptr[0] != 0 or indptr[-1] != items.shape[0] \
            or (np.diff(indptr) < 0).any():
        raise DataError(f"history indptr must be [{users.shape[0] + 1}] non-decreasing offsets 0..{items.shape[0]}.")
    if items.size and (items.min() < 0 or items.max() >= num):
        raise DataError(f"history items must be candidate positions 0..{num - 1}.")
    if popularity.shape != (num,) or not np.isfinite(popularity).all():
        raise DataError(f"history popularity must be {num} finite numbers (one per candidate).")
    if max_length < 1:
        raise DataError(f"history max_length must be >= 1; got {max_length}.")
    if pd.Index(users).duplicated().any():
        raise DataError("history users must be unique.")
    order = np.argsort(users, kind="stable")    # sorted keys: SortedKeys looks users up by bisection
    lists = IdLists(indptr, items).take(order)
    (root / "history").mkdir()
    for name, array in zip(HISTORY_FILES, (users[order], lists.indptr.astype(np.int64),
                                           lists.ids.astype(np.int64), popularity)):
        np.save(root / name, array, allow_pickle=False)
    user_field = str(history.get("user_field", "user_id"))
    return {"max_length": max_length, "user_field": user_field, "num_users": int(users.shape[0]), "num_items": int(items.shape[0]),
            "fallback": "popularity"}


def _build_index(index: str | Index, options: Mapping[str, Any] | None, emb: np.ndarray) -> Index:
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
