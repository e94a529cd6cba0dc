"""Former home of the index contract, kept so that ``from recstack.index.base import ...`` keeps working.

The contract is :mod:`recstack.index.contract`, filters :mod:`recstack.index.filters`,
approximate search and tuning :mod:`recstack.index.approximate`, input checks
:mod:`recstack.index.arrays`, the backend table :mod:`recstack.index.registry`.
New code imports from ``recstack.index``.
"""

from ..core.id_lists import IdLists as RowIds
from .approximate import ApproximateIndex, exact_top_k_stream, recall_at_k, recall_per_query
from .arrays import as_ids, as_numpy_f32, check_unique, load_npy
from .contract import INDEX_FORMAT, INDEX_VERSION, Index, read_index_json
from .filters import allow_rows, exclusion_rows
from .registry import load_index

__all__ = ["INDEX_FORMAT", "INDEX_VERSION", "ApproximateIndex", "Index", "RowIds", "allow_rows", "as_ids",
           "as_numpy_f32", "check_unique", "exact_top_k_stream", "exclusion_rows", "load_index", "load_npy",
           "read_index_json", "recall_at_k", "recall_per_query"]
