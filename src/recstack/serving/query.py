"""A loaded serving bundle and its queries: ``recommend``, ``similar``, ``predict_rating``.

:func:`recstack.serving.load_bundle` builds a :class:`Bundle` from a bundle folder
(written by :func:`recstack.serving.export`); this module answers queries with it.

Query values are taken as they are, never guessed at: a field that feeds an id
lookup takes a string or an integer (an integer is matched by its decimal
string in a string vocabulary); a boolean, a float or ``None`` there is an
error, not an out-of-vocabulary user. Numeric fields take finite numbers.

Cold start: a query whose lookup features fall outside the vocabulary gets the
out-of-vocabulary embedding row (index 0 of StringLookup/IntegerLookup), so it
still receives recommendations (the OOV row is trained on whatever unknown
values training saw, otherwise it stays near its random init, i.e. a generic
query); the result says ``cold_start=True`` and names the fields in
``oov_fields``. Such queries have no seen-items list.
"""

from __future__ import annotations

import math
import re
import threading
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ..core.errors import ConfigError, DataError, RecstackError
from ..core.id_lists import IdLists
from ..features.base import PreprocessingLayer
from ..features.feature_set import FeatureSet
from ..features.lookup import IntegerLookup, StringLookup
from ..index import Index
from ..models.serving_spec import InputSpec
from .exact_search import ExactSearch
from .inputs import raw_inputs, select

__all__ = ["Bundle", "Recommendation", "SortedKeys", "UnknownFieldError", "UnknownItemError"]


class UnknownItemError(DataError, KeyError):
    """An item id is not in the bundle's candidates."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class UnknownFieldError(DataError):
    """A query names fields the bundle does not take, or lacks required ones."""


def _lookup_layers(fs: FeatureSet) -> dict[str, PreprocessingLayer]:
    """Outputs whose layer maps unknown values to an OOV index 0."""
    return {name: fs[name] for name in fs.output_names
            if isinstance(fs[name], (StringLookup, IntegerLookup)) and fs[name].num_oov_indices == 1}


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

    def accepts(self, values: list[Any]) -> bool:
        """Whether the table answers exactly as the layer would: exact-typed values, and no NUL
        character in a string (numpy's fixed-width strings drop trailing NULs, so "u1\\x00"
        would match "u1")."""
        if self.layer.num_oov_indices != 1:
            return False
        if self.strings:
            return all(type(v) is str and "\x00" not in v for v in values)
        return all(type(v) is int for v in values)

    def codes(self, values: list[Any]) -> torch.Tensor:
        """[n] int64 lookup codes of values that :meth:`accepts`."""
        codes = self.table.lookup(np.asarray(values, dtype=str if self.strings else np.int64))
        return torch.from_numpy(np.maximum(codes, 0))

    def __call__(self, values: list[Any]) -> torch.Tensor:
        return self.codes(values) if self.accepts(values) else self.layer.transform(values)


@dataclass
class Recommendation:
    """Top-k result for one query: raw item ids and their scores (descending)."""

    items: list[Any]
    scores: list[float]
    cold_start: bool = False
    oov_fields: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


_INTEGER = re.compile(r"-?[0-9]+")


def _check_value(row: int, name: str, value: Any, is_id: bool) -> None:
    """DataError unless ``value`` is a str / int (id fields) or a finite number / str (others)."""
    if isinstance(value, (bool, np.bool_)) or value is None:
        ok = False
    elif is_id:
        ok = isinstance(value, (str, int, np.integer))
    else:
        ok = isinstance(value, (str, int, np.integer)) or (
            isinstance(value, (float, np.floating)) and math.isfinite(value))
    if not ok:
        kind = "an id (a string or an integer)" if is_id else "a string or a finite number"
        raise DataError(f"query {row}: field {name!r} takes {kind}; got {value!r} ({type(value).__name__}).")


def _check_k(k: Any) -> int:
    if isinstance(k, (bool, np.bool_)) or not isinstance(k, (int, np.integer)) or k < 1:
        raise DataError(f"k must be an integer >= 1; got {k!r}.")
    return int(k)


class Bundle:
    """A loaded bundle: ``recommend``, ``similar``, ``predict_rating``. Thread-safe for queries.

    Use :func:`recstack.serving.load_bundle` to create one.
    """

    def __init__(self, directory: Path, manifest: dict[str, Any], query_features: FeatureSet | None,
                 query_tower: nn.Module, identifiers: np.ndarray, embeddings: np.ndarray, index: Index,
                 seen: tuple[SortedKeys, IdLists] | None, rating_head: nn.Module | None):
        self.directory = directory
        self.manifest = manifest
        self.query_features = query_features
        self.query_tower = query_tower.eval()
        self.identifiers = identifiers
        self.embeddings = embeddings
        self.index = index
        self.rating_head = rating_head.eval() if rating_head is not None else None
        self._seen = seen
        self.history: Any = None    # HistoryStore of a next-item bundle (set by load_bundle)
        self._exact = ExactSearch.for_index(index)            # request-path search, same results
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
        # Raw mode with a lookup first: codes from the sorted table, then the rest of the tower
        # (one lookup per request instead of two through pandas, ~0.3 ms each).
        self._raw_fast = None
        if self._raw_oov is not None:
            self._raw_fast = (_FastLookup(self._raw_oov), nn.Sequential(*list(query_tower)[1:]).eval())
        # Fields that feed an id lookup take ids (str / int), never floats or booleans.
        if query_features is not None:
            self._id_fields = {query_features.input_column(name) for name in self._fast}
        else:
            first = query_tower[0] if isinstance(query_tower, nn.Sequential) and len(query_tower) else None
            self._id_fields = {self.query_inputs} if isinstance(first, (StringLookup, IntegerLookup)) and \
                isinstance(self.query_inputs, str) else set()

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
            for name, value in query.items():
                _check_value(i, name, value, name in self._id_fields)

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
            emb = self.query_tower(select(inputs, self.query_inputs))
        elif self._raw_fast is not None and self._raw_fast[0].accepts(table[self.query_inputs]):
            lookup, rest = self._raw_fast
            codes = lookup.codes(table[self.query_inputs])
            for r in np.flatnonzero(codes.numpy() == 0).tolist():
                oov[r].append(str(self.query_inputs))
            emb = rest(codes)
        else:
            # Strings as an object array: numpy's fixed-width strings would drop trailing NULs.
            x = raw_inputs({f: np.array(v, dtype=object) if all(type(s) is str for s in v) else v
                            for f, v in table.items()}, self.query_inputs)
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
        pos = self._positions(items)
        if (pos < 0).any():
            bad = [items[i] for i in np.flatnonzero(pos < 0)[:5]]
            raise UnknownItemError(f"unknown {what} id(s) {bad}; the bundle has {self.num_candidates} items.")
        return pos.astype(np.int64)

    def _positions(self, items: list[Any]) -> np.ndarray:
        """[n] candidate positions of raw ids, -1 for unknown ones. Integers match integer
        identifiers, and so do their decimal strings (e.g. from a URL); for string identifiers
        an integer matches its decimal string. Booleans and floats match nothing."""
        integer = self.identifiers.dtype.kind == "i"
        valid = np.ones(len(items), dtype=bool)
        keys = np.zeros(len(items), dtype=np.int64) if integer else np.empty(len(items), dtype=object)
        for i, v in enumerate(items):   # short lists (request-sized)
            if isinstance(v, (bool, np.bool_)) or not isinstance(v, (str, int, np.integer)):
                valid[i] = False
            elif not integer:
                keys[i] = str(v)
            elif (isinstance(v, str) and not _INTEGER.fullmatch(v)) or not -2**63 <= int(v) < 2**63:
                valid[i] = False
            else:
                keys[i] = int(v)
        pos = self._identifier_lookup().lookup(keys if integer else keys.astype(str))
        return np.where(valid, pos, -1)

    def _seen_rows(self, batch: list[Mapping[str, Any]]) -> IdLists | None:
        """The seen lists of the batch's keys, one row per query (unknown keys: empty)."""
        if self._seen is None:
            return None
        keys, lists = self._seen
        field_name = self.seen_field
        return lists.take(keys.lookup(np.asarray([str(q.get(field_name)) for q in batch], dtype=str)))

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
        k = _check_k(k)
        emb, oov = self.query_embeddings(batch)
        rows = self._seen_rows(batch) if exclude_seen else None
        extra = None
        if exclude:
            extra = self._positions(list(exclude))
            extra = extra[extra >= 0].astype(np.int64)
        allowed = self.item_ids(allow, "allow-list item") if allow is not None else None
        if self._exact is not None and self._exact.applies(emb):
            scores, ids = self._exact.search(emb, k, exclude=rows, exclude_all=extra, allow=allowed)
        else:
            if extra is not None:
                lists = IdLists.same(extra, len(batch))
                rows = lists if rows is None else rows.union(lists)
            allow_spec = None if allowed is None else IdLists.same(allowed, len(batch))
            scores, ids = self.index.search(emb, k=k, exclude=rows, allow=allow_spec)
        out = self._results(scores, ids, oov)
        return out[0] if single else out

    def _results(self, scores: torch.Tensor, ids: np.ndarray, oov: list[list[str]] | None = None
                 ) -> list[Recommendation]:
        s = scores.numpy()
        out = []
        for r in range(ids.shape[0]):
            ok = ids[r] >= 0
            out.append(Recommendation(items=self.identifiers[ids[r][ok]].tolist(), scores=s[r][ok].tolist(),
                                      cold_start=bool(oov and oov[r]), oov_fields=list(oov[r]) if oov else []))
        return out

    def similar(self, item: Any, k: int = 10, exclude: Sequence[Any] | None = None) -> Recommendation:
        """Item-to-item: the k candidates closest (inner product) to ``item``'s embedding, itself excluded."""
        k = _check_k(k)
        pos = self.item_ids([item])
        extra = None
        if exclude:
            e = self._positions(list(exclude))
            extra = [e[e >= 0].tolist()]
        scores, ids = self.index.similar(pos, k=k, exclude=extra)
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


