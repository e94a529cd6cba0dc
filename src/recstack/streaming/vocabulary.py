"""Vocabularies fitted in one streaming pass over Parquet, as StringLookup / IntegerLookup layers.

Each chunk's values are counted in Arrow (``pyarrow.compute.value_counts``) and
the per-chunk counts are merged by a group-by sum whenever they outgrow the
running totals, so memory is O(distinct values + chunk), never O(rows). The
tokens are then chosen with exactly the rules of ``StringLookup.fit`` (see
:func:`select_tokens`), and the result is an ordinary recstack layer: it
saves, loads and transforms like one fitted in memory.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

import numpy as np

from recstack.core.errors import ConfigError, DataError
from recstack.features.lookup import IntegerLookup, StringLookup

from ..core.arrow import pyarrow
from .encode import is_text
from .source import ParquetSource, open_parquet_dataset, read_pieces, row_group_pieces

__all__ = ["fit_streaming_vocabularies", "fit_streaming_vocabulary", "select_tokens"]

Kind = Literal["auto", "string", "integer"]
Order = Literal["sorted", "frequency"]


def fit_streaming_vocabulary(data: Any, column: str, max_tokens: int | None = None, min_count: int = 1, *,
                             order: Order = "sorted", num_oov_indices: int = 1, kind: Kind = "auto",
                             chunk_rows: int = 262_144) -> StringLookup | IntegerLookup:
    """A StringLookup / IntegerLookup fitted on one column in one pass; see :func:`fit_streaming_vocabularies`."""
    return fit_streaming_vocabularies(data, [column], max_tokens, min_count, order=order,
                                      num_oov_indices=num_oov_indices, kind=kind, chunk_rows=chunk_rows)[column]


def fit_streaming_vocabularies(data: Any, columns: Sequence[str], max_tokens: int | None = None,
                               min_count: int = 1, *, order: Order = "sorted", num_oov_indices: int = 1,
                               kind: Kind = "auto", chunk_rows: int = 262_144
                               ) -> dict[str, StringLookup | IntegerLookup]:
    """Lookups for several columns, counted in a single pass over the data.

    Args:
        data: a :class:`ParquetSource` (``columns`` may then be batch or raw names),
            a Parquet file / directory / list of files, or a pyarrow Parquet dataset.
        columns: the columns to fit.
        max_tokens: cap on ``vocabulary_size()`` (counting the OOV index, as in
            ``StringLookup``): the most frequent values are kept, ties by value.
        min_count: drop values seen fewer times (applied before ``max_tokens``).
        order: "sorted" (ascending values) or "frequency" (count descending).
        num_oov_indices: 1 (unknown -> 0) or 0, as in ``StringLookup``.
        kind: "auto" (string/binary columns -> StringLookup, integer columns ->
            IntegerLookup), "string" (integers become their decimal text, like
            ``StringLookup.fit`` does) or "integer" (whole-valued floats accepted).
        chunk_rows: rows read per record batch.

    Returns:
        column name -> fitted lookup (memory: the distinct values and their counts).

    Raises:
        DataError: a column is missing, has nulls, or has values of the wrong kind.
    """
    if kind not in ("auto", "string", "integer"):
        raise ConfigError(f"kind must be 'auto', 'string' or 'integer'; got {kind!r}.")
    if isinstance(min_count, bool) or not isinstance(min_count, int) or min_count < 1:
        raise ConfigError(f"min_count must be an int >= 1; got {min_count!r}.")
    if isinstance(columns, str):
        columns = [columns]
    dataset, raw = _resolve(data, list(columns))
    kinds = {c: _column_kind(dataset.schema.field(r).type, kind, c) for c, r in zip(columns, raw)}
    # Build the layers first: invalid max_tokens / order fail before the pass, not after it.
    layers: dict[str, StringLookup | IntegerLookup] = {
        c: (StringLookup if kinds[c] == "string" else IntegerLookup)(
            num_oov_indices=num_oov_indices, order=order, max_tokens=max_tokens)
        for c in columns}
    counters = {c: _Counter() for c in columns}
    pieces, _ = row_group_pieces(dataset)
    for record_batch in read_pieces(dataset, pieces, sorted(set(raw)), chunk_rows):
        for c, r in zip(columns, raw):
            values = _coerce(record_batch.column(r), kinds[c], c)
            counters[c].add(values)
    for c in columns:
        tokens, counts = counters[c].result(c)
        layer = layers[c]
        keep = select_tokens(tokens, counts, layer.oov_token if num_oov_indices else None,
                             max_tokens, num_oov_indices, order, min_count)
        if len(keep) == 0:
            raise DataError(f"Column {c!r} has no token seen at least min_count={min_count} times "
                            "(other than the OOV token).")
        layer.set_vocabulary(tokens[keep])
    return layers


def select_tokens(tokens: np.ndarray, counts: np.ndarray, oov_token: Any, max_tokens: int | None,
                  num_oov_indices: int, order: Order, min_count: int = 1) -> np.ndarray:
    """Positions in ascending ``tokens`` to keep, in vocabulary order: the rules of ``StringLookup.fit``.

    ``tokens`` [U] distinct values, sorted ascending; ``counts`` [U] their counts.
    Drops ``oov_token`` (unless None) and counts < min_count; keeps the
    ``max_tokens - num_oov_indices`` most frequent (count descending, ties by
    value ascending); returns them by value ("sorted") or by that rank ("frequency").
    """
    allowed = counts >= min_count
    if oov_token is not None:
        allowed &= tokens != oov_token
    candidates = np.flatnonzero(allowed)
    by_freq = candidates[np.argsort(-counts[candidates], kind="stable")]  # stable: ties stay ascending
    keep = by_freq if max_tokens is None else by_freq[: max_tokens - num_oov_indices]
    return np.sort(keep) if order == "sorted" else keep


class _Counter:
    """Exact value counts of a stream of Arrow arrays; memory O(distinct values + one chunk)."""

    def __init__(self) -> None:
        self._totals: Any = None  # pyarrow Table (values, counts), distinct values
        self._pending: list[Any] = []
        self._pending_rows = 0

    def add(self, values: Any) -> None:
        pa = pyarrow()
        counted = pa.compute.value_counts(values)  # StructArray<values, counts>
        self._pending.append(pa.Table.from_arrays([counted.field("values"), counted.field("counts")],
                                                  names=["values", "counts"]))
        self._pending_rows += len(counted)
        # Merge when pending counts outgrow the totals: amortised O(distinct) work per merge.
        if self._pending_rows > max(len(self._totals) if self._totals is not None else 0, 1 << 16):
            self._merge()

    def _merge(self) -> None:
        pa = pyarrow()
        parts = ([self._totals] if self._totals is not None else []) + self._pending
        if not parts:
            return
        merged = pa.concat_tables(parts).group_by("values").aggregate([("counts", "sum")])
        self._totals = merged.rename_columns(["values", "counts"]).select(["values", "counts"])
        self._pending, self._pending_rows = [], 0

    def result(self, column: str) -> tuple[np.ndarray, np.ndarray]:
        """(distinct values ascending, their counts) as NumPy arrays."""
        self._merge()
        if self._totals is None or len(self._totals) == 0:
            raise DataError(f"Column {column!r} has no values.")
        tokens = self._totals.column("values").to_numpy()
        counts = self._totals.column("counts").to_numpy()
        ascending = np.argsort(tokens, kind="stable")
        return tokens[ascending], counts[ascending]


def _resolve(data: Any, columns: list[str]) -> tuple[Any, list[str]]:
    """(dataset, raw column of each requested column)."""
    if isinstance(data, ParquetSource):
        to_raw = {batch: raw for raw, batch in data.columns.items()}
        dataset = data.dataset
        raw = [to_raw.get(c, c) for c in columns]
    else:
        dataset = open_parquet_dataset(data)
        raw = list(columns)
    available = dataset.schema.names
    missing = [c for c, r in zip(columns, raw) if r not in available]
    if missing:
        raise DataError(f"Column(s) {missing} not in the Parquet data; available columns: {available}")
    return dataset, raw


def _column_kind(arrow_type: Any, kind: Kind, column: str) -> str:
    pa = pyarrow()
    value_type = arrow_type.value_type if pa.types.is_dictionary(arrow_type) else arrow_type
    integer = pa.types.is_integer(value_type)
    if kind == "auto":
        if is_text(value_type):
            return "string"
        if integer:
            return "integer"
        raise DataError(f"Column {column!r} has Arrow type {arrow_type}; a vocabulary needs string or integer "
                        "values (pass kind='integer' for whole-valued floats).")
    if kind == "string" and not (is_text(value_type) or integer):
        raise DataError(f"Column {column!r} has Arrow type {arrow_type}; kind='string' needs strings or integers.")
    if kind == "integer" and not (integer or pa.types.is_floating(value_type)):
        raise DataError(f"Column {column!r} has Arrow type {arrow_type}; kind='integer' needs numbers.")
    return kind


def _coerce(array: Any, kind: str, column: str) -> Any:
    """An Arrow chunk as the lookup's value type: string (UTF-8) or int64; nulls are errors."""
    pa = pyarrow()
    if array.null_count:
        raise DataError(f"Column {column!r} has {array.null_count} null value(s); fill or drop them first "
                        "(the lookups reject missing values), or use HashingLookup (nulls -> 0).")
    if pa.types.is_dictionary(array.type):
        array = array.dictionary_decode()
    target = pa.string() if kind == "string" else pa.int64()
    if kind == "string" and (pa.types.is_large_string(array.type) or pa.types.is_large_binary(array.type)):
        target = pa.large_string()
    try:
        return array.cast(target, safe=True)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
        raise DataError(f"Column {column!r}: values cannot be read as {kind}s ({exc}).") from exc
