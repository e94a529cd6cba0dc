"""Arrow column -> NumPy array (then a tensor), through an optional preprocessing layer, without per-row Python.

* No encoder: numeric / boolean columns convert zero-copy where Arrow allows
  (float64 becomes float32, the training dtype, as in :class:`recstack.Columns`).
* :class:`~recstack.streaming.HashingLookup`: hashes the Arrow buffers directly.
* Any other encoder on a string column: the chunk is dictionary-encoded in
  Arrow, the encoder maps only the chunk's distinct values (U << n Python
  strings), and the codes gather the result: ``out = encoder(uniques)[codes]``.
  This assumes a row-wise encoder (row i of the output depends on value i
  only), which every recstack preprocessing layer is.
* Any other encoder on a numeric column: called on the (zero-copy) NumPy view.
"""

from __future__ import annotations

from typing import Any, Callable, Union

import numpy as np
import torch

from recstack.core.errors import DataError

from ..core.arrow import pyarrow
from ..features.hashing import HashingLookup

Encoder = Union[Callable[[Any], Any], Any]  # a PreprocessingLayer or any row-wise callable


def is_text(arrow_type: Any) -> bool:
    """String or binary Arrow type (either offset width)."""
    types = pyarrow().types
    return (types.is_string(arrow_type) or types.is_large_string(arrow_type)
            or types.is_binary(arrow_type) or types.is_large_binary(arrow_type))


def encode_column(array: Any, encoder: Encoder | None, name: str) -> np.ndarray:
    """One column of a record batch (pyarrow Array [n]) -> writable C-contiguous ndarray [n, ...]
    (``name`` is for error messages)."""
    pa = pyarrow()
    if isinstance(array, pa.ChunkedArray):
        array = array.combine_chunks()
    if encoder is None:
        return _raw_array(array, name)
    if isinstance(encoder, HashingLookup):
        return _as_array(encoder.transform(array), name)
    if pa.types.is_dictionary(array.type) or is_text(array.type):
        if array.null_count == 0:
            return _encode_distinct(array, encoder, name)
    return _as_array(_call(encoder, _numpy(array)), name)


def _encode_distinct(array: Any, encoder: Encoder, name: str) -> np.ndarray:
    """``encoder(distinct values)[codes]``: one encoder call on the chunk's uniques only."""
    pa = pyarrow()
    coded = array if pa.types.is_dictionary(array.type) else pa.compute.dictionary_encode(array)
    uniques = coded.dictionary.to_numpy(zero_copy_only=False)
    mapped = _as_array(_call(encoder, uniques), name)
    return mapped[coded.indices.to_numpy()]


def _call(encoder: Encoder, values: np.ndarray) -> Any:
    transform = getattr(encoder, "transform", None)
    return transform(values) if transform is not None else encoder(values)


def _numpy(array: Any) -> np.ndarray:
    """Arrow -> NumPy (zero-copy for null-free primitive arrays)."""
    return array.to_numpy(zero_copy_only=False)


def _raw_array(array: Any, name: str) -> np.ndarray:
    pa = pyarrow()
    kind = array.type
    if pa.types.is_dictionary(kind) or is_text(kind):
        raise DataError(
            f"Column {name!r} holds strings ({kind}); give it an encoder (e.g. "
            "fit_streaming_vocabulary(...) or HashingLookup(num_bins)) so that no strings reach "
            "the training loop.")
    if not (pa.types.is_integer(kind) or pa.types.is_floating(kind) or pa.types.is_boolean(kind)):
        raise DataError(
            f"Column {name!r} has Arrow type {kind}; only integer, floating and boolean columns "
            "pass through without an encoder (cast it when writing the Parquet file, or add an encoder).")
    if array.null_count:
        raise DataError(
            f"Column {name!r} has {array.null_count} null value(s) in a chunk; fill them when "
            "writing the data or give the column an encoder that maps nulls (HashingLookup: bin 0).")
    return _as_array(_numpy(array), name)


def _as_array(values: Any, name: str) -> np.ndarray:
    """Encoder output (tensor / array) -> writable C-contiguous ndarray, :class:`recstack.Columns`' dtype rules.

    NumPy float64 becomes float32 (the training dtype); a tensor keeps the dtype its encoder chose.
    """
    if isinstance(values, torch.Tensor):
        array = values.detach().cpu().numpy()  # zero-copy on CPU
    else:
        array = np.asarray(values)
        if array.dtype == np.float64:
            array = array.astype(np.float32)
    if array.dtype.kind in "OUS":
        raise DataError(f"The encoder of column {name!r} returned strings ({array.dtype}); it must return numbers.")
    if not array.flags.writeable or not array.flags.c_contiguous:  # Arrow zero-copy views are read-only
        array = np.array(array, copy=True, order="C")
    return array
