"""The one table of index backends: ``INDEXES``, with ``make_index`` and ``load_index`` over it.

Registered names are what ``index.json`` records as ``kind`` (and what bundles,
configs and ``make_index`` use), so a backend class may move between modules
without breaking a saved index. The optional backends are lazy entries: their
module is imported on first use, so ``import recstack.index`` works without
faiss, scann or psycopg. Indexes saved before this table existed recorded the
same names (``brute_force``, ``faiss_ivf``, ``scann``, ``pgvector``,
``pgvector_hnsw``) and load unchanged.

Adding a backend: subclass :class:`~recstack.index.Index` (or ``ApproximateIndex``),
decorate it with ``@register_index("name")`` and, for an optional dependency, add
its module to ``_MODULES`` below.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, TypeVar

from ..core.registry import Registry
from .contract import Index, read_index_json

_MODULES = {
    "brute_force": "recstack.index.brute_force", "exact": "recstack.index.brute_force",
    "bruteforce": "recstack.index.brute_force",
    "faiss_ivf": "recstack.index.faiss_index", "faiss": "recstack.index.faiss_index",
    "scann": "recstack.index.scann_index",
    "pgvector": "recstack.index.pgvector_index",
    "pgvector_hnsw": "recstack.index.pgvector_hnsw",
}

INDEXES: Registry[type[Index]] = Registry("index backend", lazy=_MODULES)

_I = TypeVar("_I", bound=type[Index])


def register_index(name: str, aliases: Iterable[str] = ()) -> Callable[[_I], _I]:
    """Class decorator: register an index backend under ``name`` and set its ``kind`` to it."""
    def apply(cls: _I) -> _I:
        cls.kind = name
        INDEXES.register(name, cls, aliases=aliases)
        return cls
    return apply


def make_index(kind: str = "brute_force", **options: Any) -> Index:
    """An empty index by registered name or alias (case-insensitive): "brute_force" ("exact"),
    "faiss_ivf" ("faiss"), "scann", "pgvector", "pgvector_hnsw"; ``options`` go to its constructor."""
    return INDEXES.get(str(kind).lower())(**options)


def load_index(directory: str | os.PathLike, **param_overrides: Any) -> Index:
    """Load any index saved with ``index.save(directory)``, whatever its kind.

    Args:
        directory: the saved index's folder (``index.json`` and the files it lists).
        param_overrides: constructor parameters that replace the saved ones of the same
            name, e.g. ``dsn=`` for a database-backed index whose connection is the
            caller's; an override of None drops the saved value (the constructor's
            default applies).
    """
    directory = Path(directory)
    state = read_index_json(directory)
    if param_overrides:
        params = {**state.get("params", {}), **param_overrides}
        state = {**state, "params": {k: v for k, v in params.items()
                                     if not (k in param_overrides and param_overrides[k] is None)}}
    return INDEXES.get(str(state["kind"])).restore(directory, state)
