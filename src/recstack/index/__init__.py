"""Top-k indexes over candidate embeddings, exact and approximate, behind one interface.

``Index``: ``build(ids, embeddings)``, ``search(queries, k, exclude=None, allow=None)
-> (scores, ids)``, ``similar(ids, k)``, ``save(dir)`` / ``load_index(dir)``,
``is_exact``, ``remove``/``add``. Backends, by registered name (:data:`INDEXES`):

* ``brute_force`` :class:`BruteForce`: exact torch matmul + top-k (no extra dependency).
* ``faiss_ivf`` ``FaissIVF``: IVF-Flat over MIPS->L2-augmented vectors (extra ``recstack[faiss]``).
* ``scann`` ``ScaNN``: Google ScaNN, Linux only (extra ``recstack[scann]``).
* ``pgvector`` / ``pgvector_hnsw`` ``PgVector`` / ``PgVectorHNSW``: PostgreSQL + pgvector
  (extra ``recstack[pgvector]``).

The optional backends are imported on first use, so ``import recstack`` works
without them. Modules: ``contract`` (the Index ABC), ``filters`` (exclude/allow),
``approximate`` (ANN base, tuning), ``arrays`` (input checks), ``registry``,
``query_model`` (BruteForce's saved query model), one module per backend.
"""

from typing import Any

from ..core.id_lists import IdLists
from .approximate import ApproximateIndex, recall_at_k
from .brute_force import BruteForce
from .contract import Index
from .query_model import register_query_layer
from .registry import INDEXES, load_index, make_index, register_index
from .top_k_metric import IndexTopK

RowIds = IdLists   # the per-query-row id lists that exclude= / allow= take

__all__ = ["INDEXES", "ApproximateIndex", "BruteForce", "FaissIVF", "IdLists", "Index", "IndexTopK", "PgVector",
           "PgVectorHNSW", "RowIds", "ScaNN", "load_index", "make_index", "recall_at_k", "register_index",
           "register_query_layer"]

# Classes of the lazily imported backends, by registered name.
_LAZY_CLASSES = {"FaissIVF": "faiss_ivf", "ScaNN": "scann", "PgVector": "pgvector", "PgVectorHNSW": "pgvector_hnsw"}


def __getattr__(name: str) -> Any:
    if name in _LAZY_CLASSES:
        return INDEXES.get(_LAZY_CLASSES[name])
    raise AttributeError(f"module 'recstack.index' has no attribute {name!r}")
