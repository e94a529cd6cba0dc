"""Train and evaluate from Parquet data larger than memory.

* :class:`ParquetSource`: a :class:`~recstack.core.columns.BatchSource` that reads a
  Parquet file or directory in chunks (pyarrow datasets), encodes each chunk
  vectorised, and shuffles with seeded row-group order plus a shuffle buffer;
  memory is bounded by ``chunk_rows + shuffle_buffer``, not the data size.
* :func:`fit_streaming_vocabulary`: a StringLookup / IntegerLookup fitted in one
  streaming pass (counts merged chunk by chunk).
* :class:`HashingLookup`: ids -> bins by a stable hash, with
  :func:`expected_collision_fraction` for the collision rate.

Needs pyarrow (``pip install 'recstack[parquet]'``); importing this package
does not, using it does. See docs/streaming.md.
"""

from ..features.hashing import HashingLookup, collision_fraction, expected_collision_fraction, stable_hash64
from .memory import current_rss_bytes, peak_rss_bytes, ru_maxrss_bytes
from .source import ParquetSource, open_parquet_dataset
from .vocabulary import fit_streaming_vocabularies, fit_streaming_vocabulary, select_tokens

__all__ = [
    "HashingLookup",
    "ParquetSource",
    "collision_fraction",
    "current_rss_bytes",
    "expected_collision_fraction",
    "fit_streaming_vocabularies",
    "fit_streaming_vocabulary",
    "open_parquet_dataset",
    "peak_rss_bytes",
    "ru_maxrss_bytes",
    "select_tokens",
    "stable_hash64",
]
