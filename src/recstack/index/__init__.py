"""Top-k indexes over candidate embeddings, exact and approximate, behind one interface.

``Index``: ``build(ids, embeddings)``, ``search(queries, k, exclude=None, allow=None)
-> (scores, ids)``, ``similar(ids, k)``, ``save(dir)`` / ``load_index(dir)``,
``is_exact``, ``remove``/``add``. Implementations:

* :class:`BruteForce`: exact torch matmul + top-k (no extra dependency).
* ``FaissIVF``: IVF-Flat over MIPS->L2-augmented vectors (extra ``recstack[faiss]``).
* ``ScaNN``: Google ScaNN, Linux only (extra ``recstack[scann]``).

The optional backends are imported on first use, so ``import recstack`` works
without them.
"""

from typing import Any

from .base import ApproximateIndex, Index, RowIds, load_index, recall_at_k
from .brute_force import BruteForce
from .top_k_metric import IndexTopK
from .pgvector_index import PgVector, PgVectorHNSW  # noqa: F401 (registers "pgvector", "pgvector_hnsw")

__all__ = ["ApproximateIndex", "BruteForce", "FaissIVF", "Index", "IndexTopK", "RowIds", "ScaNN", "load_index",
           "make_index", "recall_at_k"]

_ALIASES = {"brute_force": "brute_force", "exact": "brute_force", "bruteforce": "brute_force",
            "faiss": "faiss_ivf", "faiss_ivf": "faiss_ivf", "scann": "scann"}


def __getattr__(name: str) -> Any:
    if name == "FaissIVF":
        from .faiss_index import FaissIVF
        return FaissIVF
    if name == "ScaNN":
        from .scann_index import ScaNN
        return ScaNN
    raise AttributeError(f"module 'recstack.index' has no attribute {name!r}")


def make_index(kind: str = "brute_force", **options: Any) -> Index:
    """An empty index by name: "brute_force" (alias "exact"), "faiss" / "faiss_ivf", "scann"."""
    from ..core.errors import ConfigError
    key = _ALIASES.get(str(kind).lower())
    if key is None:
        raise ConfigError(f"unknown index kind {kind!r}; choose one of {sorted(set(_ALIASES))}.")
    if key == "brute_force":
        return BruteForce(**options)
    if key == "faiss_ivf":
        from .faiss_index import FaissIVF
        return FaissIVF(**options)
    from .scann_index import ScaNN
    return ScaNN(**options)
