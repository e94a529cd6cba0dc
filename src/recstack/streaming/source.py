"""ParquetSource: a :class:`~recstack.core.columns.BatchSource` that reads Parquet in chunks.

Memory is bounded by the chunk size and the shuffle buffer, not by the size of
the data: at any time the process holds the record batch being decoded (and
the compressed pages of the column chunks being read), the shuffle buffer, and
the batch being trained on. Files are found and described by
``pyarrow.dataset``; row groups are read by ``pyarrow.parquet.ParquetFile``.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from recstack.core.columns import Batch
from recstack.core.errors import ConfigError, DataError, DataNotFoundError

from ..core.arrow import pyarrow
from .encode import Encoder, encode_column

__all__ = ["ParquetSource", "open_parquet_dataset", "read_pieces", "row_group_pieces"]

Arrays = dict[str, np.ndarray]  # a chunk or batch before it becomes tensors


def open_parquet_dataset(data: Any) -> Any:
    """A ``pyarrow.dataset.FileSystemDataset`` of Parquet files.

    Args:
        data: a Parquet file, a directory of Parquet files (searched recursively;
            names starting with "." or "_" are ignored, as Spark / Arrow do), a
            list of files, or an existing Parquet ``pyarrow.dataset.Dataset``.
    Raises:
        DataNotFoundError: a path does not exist.
        DataError: a file is not Parquet, or there are no Parquet files.
    """
    pa = pyarrow()
    ds = pa.dataset
    if isinstance(data, ds.Dataset):
        if not isinstance(data, ds.FileSystemDataset) or not isinstance(data.format, ds.ParquetFileFormat):
            raise ConfigError(f"Need a Parquet FileSystemDataset; got {type(data).__name__} ({data!r:.80}).")
        dataset = data
    else:
        paths = [Path(p) for p in data] if isinstance(data, (list, tuple)) else [Path(data)]
        for path in paths:
            if not path.exists():
                raise DataNotFoundError(f"No such Parquet file or directory: {path}")
        where = ", ".join(map(str, paths[:3])) + (" ..." if len(paths) > 3 else "")
        try:
            dataset = ds.dataset([str(p) for p in paths] if len(paths) > 1 else str(paths[0]),
                                 format="parquet")
        except (pa.ArrowInvalid, OSError) as exc:
            raise DataError(f"{where} is not a Parquet file or a directory of Parquet files: {exc}") from exc
    if not dataset.files:
        raise DataError(f"No Parquet files in {data}; write some (e.g. pyarrow.parquet.write_table) or fix the path.")
    return dataset


Piece = tuple[str, int]  # (file path, row group index)


def row_group_pieces(dataset: Any) -> tuple[list[Piece], list[int]]:
    """Every non-empty (file, row group), files sorted by path, and its row count (footers only)."""
    pa = pyarrow()
    pieces: list[Piece] = []
    rows: list[int] = []
    for fragment in sorted(dataset.get_fragments(), key=lambda f: f.path):
        try:
            metadata = fragment.metadata
        except (pa.ArrowInvalid, OSError) as exc:
            raise DataError(f"{fragment.path} is not a readable Parquet file: {exc}") from exc
        for group in range(metadata.num_row_groups):
            count = metadata.row_group(group).num_rows
            if count:
                pieces.append((fragment.path, group))
                rows.append(count)
    return pieces, rows


def read_pieces(dataset: Any, pieces: Iterable[Piece], columns: list[str], chunk_rows: int) -> Iterator[Any]:
    """Record batches of at most ``chunk_rows`` rows of ``columns``, row group after row group, in order.

    Reads with ``ParquetFile.iter_batches``, which decodes a row group batch by
    batch and holds nothing once a batch is dropped. (``Dataset.to_batches``
    reads ahead without bound when the consumer is slow, apache/arrow#39808: its
    Arrow allocations reached ~150 MiB on a 16M-row file here, against <= 16 MiB
    for this reader.) Only one file is open at a time: an open ``ParquetFile``
    keeps ~10 MiB of buffers after reading a 1M-row row group, so keeping the 8
    files of a shuffled order open cost ~80 MiB of RSS; reopening costs a footer
    read per row group. Batches are cast to the dataset schema when a file's
    types differ, so every chunk has the same dtypes.
    """
    pa = pyarrow()
    target = pa.schema([dataset.schema.field(c) for c in columns])
    path_open, reader = None, None
    try:
        for path, group in pieces:
            if path != path_open:  # consecutive row groups of one file share the reader
                if reader is not None:
                    reader.close()
                reader, path_open = pa.parquet.ParquetFile(dataset.filesystem.open_input_file(path)), path
            for batch in reader.iter_batches(batch_size=chunk_rows, row_groups=[group], columns=columns):
                if batch.num_rows:
                    yield batch if batch.schema.equals(target) else _cast(batch, target)
    finally:  # also when the consumer stops early
        if reader is not None:
            reader.close()


def _cast(batch: Any, schema: Any) -> Any:
    """A record batch with another file's column types cast to the dataset schema (e.g. int32 -> int64)."""
    pa = pyarrow()
    try:
        return pa.Table.from_batches([batch]).cast(schema).combine_chunks().to_batches()[0]
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
        raise DataError(f"A Parquet file's columns {batch.schema} do not convert to the dataset's {schema}: {exc}") \
            from exc


def _column_mapping(columns: Mapping[str, str] | Sequence[str]) -> dict[str, str]:
    """raw column -> batch column; a sequence of names keeps the names."""
    if isinstance(columns, str):
        raise ConfigError(
            f"columns must be a list of names or a mapping raw -> batch name; got the string {columns!r}.")
    mapping = dict(columns) if isinstance(columns, Mapping) else {c: c for c in columns}
    if not mapping:
        raise ConfigError("ParquetSource needs at least one column.")
    targets = list(mapping.values())
    duplicated = sorted({t for t in targets if targets.count(t) > 1})
    if duplicated:
        raise ConfigError(f"Several raw columns map to the batch column(s) {duplicated}; batch names must be unique.")
    return mapping


def epoch_rng(seed: int, epoch: int) -> np.random.Generator:
    """The random generator of one shuffled epoch, a pure function of (seed, epoch).

    NumPy's PCG64 seeded by ``SeedSequence([seed, epoch])`` (both mod 2^64): the
    same stream on every platform, and single-threaded (no OpenMP in the data path).
    """
    return np.random.default_rng([seed % 2**64, epoch % 2**64])


class ParquetSource:
    """Batches read from Parquet in chunks of ``chunk_rows`` rows, encoded on the fly.

    Implements :class:`~recstack.core.columns.BatchSource`, so ``model.fit(source)``
    and ``model.evaluate(source)`` stream it. Every batch has exactly
    ``batch_size`` rows (rows carry over from one chunk to the next) except a
    smaller last one, dropped with ``drop_remainder``.

    Shuffling (``shuffle=True``), a pure function of (seed, epoch):

    1. The row groups of all files are visited in a random order (a
       permutation drawn from :func:`epoch_rng`).
    2. Rows pass through a shuffle buffer of B = ``shuffle_buffer`` rows with
       the semantics of ``tf.data.Dataset.shuffle`` (vectorised per chunk, see
       :class:`ShuffleBuffer`): once B rows are buffered, each incoming row
       replaces a uniformly chosen buffered row, which goes out. At the end
       the buffer is emptied in random order.

    Quality / memory trade-off: every row that goes out is a uniform draw from
    the B buffered rows, and a row stays in the buffer for a geometric number
    of steps with mean B, so it comes out at most B rows earlier than its
    position in the (row-group-shuffled) stream and typically within a few B
    later; rows of one row group therefore stay close unless B is comparable
    to the row-group size. B >= the number of rows is a uniform shuffle (and holds
    everything in memory); B = 0 only permutes within each chunk. A B of a few
    row groups is usually enough when the row groups are themselves in random
    order, e.g. files written from a pre-shuffled table (pre-shuffled shards).
    Memory: B rows of encoded columns, allocated once, plus about two chunks.

    Args:
        data: Parquet file, directory, list of files or pyarrow Parquet dataset.
        columns: raw column -> batch column name (a list keeps the names).
        encoders: batch column name -> encoder for that column: a recstack
            preprocessing layer (``StringLookup`` / ``IntegerLookup`` from
            :func:`fit_streaming_vocabulary`, :class:`HashingLookup`,
            ``Normalization``, ...) or any row-wise callable on a NumPy array.
            Columns without one must be numeric (float64 becomes float32).
        chunk_rows: rows per record batch read from Parquet (C).
        shuffle_buffer: rows held by the shuffle buffer (B), when shuffling.

    Example::

        source = ParquetSource("ratings/", {"user_id": "user", "movie_id": "item"},
                               encoders={"user": HashingLookup(2**20), "item": item_lookup})
        model.fit(source, batch_size=4096, epochs=3, seed=0)
    """

    def __init__(self, data: Any, columns: Mapping[str, str] | Sequence[str],
                 encoders: Mapping[str, Encoder] | None = None, *, chunk_rows: int = 65_536,
                 shuffle_buffer: int = 262_144):
        for label, value, low in (("chunk_rows", chunk_rows, 1), ("shuffle_buffer", shuffle_buffer, 0)):
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ConfigError(f"{label} must be an int >= {low}; got {value!r}.")
        self._dataset = open_parquet_dataset(data)
        self.columns = _column_mapping(columns)
        available = self._dataset.schema.names
        missing = [c for c in self.columns if c not in available]
        if missing:
            raise DataError(f"Column(s) {missing} not in the Parquet data {data}; available columns: {available}")
        self.encoders = self._check_encoders(dict(encoders or {}))
        self.chunk_rows = chunk_rows
        self.shuffle_buffer = shuffle_buffer
        self._pieces, self._piece_rows = row_group_pieces(self._dataset)
        self._num_rows = sum(self._piece_rows)
        if self._num_rows == 0:
            raise DataError(f"The Parquet data {data} has no rows.")

    def _check_encoders(self, encoders: dict[str, Encoder]) -> dict[str, Encoder]:
        names = list(self.columns.values())
        unknown = [k for k in encoders if k not in names]
        if unknown:
            raise ConfigError(f"Encoders for {unknown}, which are not batch columns; batch columns: {names}")
        for name, encoder in encoders.items():
            if getattr(encoder, "is_fitted", True) is False:
                raise ConfigError(f"The encoder of {name!r} ({type(encoder).__name__}) is not fitted; fit it "
                                  "first, e.g. with recstack.streaming.fit_streaming_vocabulary.")
            if not callable(encoder):
                raise ConfigError(f"The encoder of {name!r} must be callable; got {type(encoder).__name__}.")
        return encoders

    # BatchSource ------------------------------------------------------------------------
    @property
    def num_rows(self) -> int:
        """Rows in all files, from the Parquet footers (no data is read)."""
        return self._num_rows

    @property
    def num_row_groups(self) -> int:
        return len(self._pieces)

    @property
    def dataset(self) -> Any:
        """The underlying ``pyarrow.dataset.FileSystemDataset``."""
        return self._dataset

    def num_batches(self, batch_size: int, drop_remainder: bool = False) -> int:
        if drop_remainder:
            return self._num_rows // batch_size
        return -(-self._num_rows // batch_size)

    def epoch_batches(self, batch_size: int, *, shuffle: bool, seed: int, epoch: int,
                      drop_remainder: bool = False) -> Iterator[Batch]:
        """The batches of one epoch: file order when not ``shuffle``, else the shuffle in the class docstring."""
        if batch_size <= 0:
            raise DataError(f"batch_size must be positive; got {batch_size}.")
        if not shuffle:
            chunks = self._chunks(range(len(self._pieces)))
        else:
            rng = epoch_rng(seed, epoch)
            order = rng.permutation(len(self._pieces)).tolist()
            chunks = shuffle_chunks(self._chunks(order), self.shuffle_buffer, rng)
        return _to_torch(rebatch(chunks, batch_size, drop_remainder))

    # Reading --------------------------------------------------------------------------
    def _chunks(self, order: Iterable[int]) -> Iterator[Arrays]:
        """Encoded record batches of the row groups in ``order``."""
        raw = list(self.columns)
        names = [self.columns[c] for c in raw]
        encoders = [self.encoders.get(n) for n in names]
        for record_batch in read_pieces(self._dataset, (self._pieces[i] for i in order), raw, self.chunk_rows):
            yield {name: encode_column(record_batch.column(i), encoder, name)
                   for i, (name, encoder) in enumerate(zip(names, encoders))}

    def __repr__(self) -> str:
        return (f"ParquetSource(files={len(self._dataset.files)}, row_groups={len(self._pieces)}, "
                f"num_rows={self._num_rows}, columns={self.columns}, chunk_rows={self.chunk_rows}, "
                f"shuffle_buffer={self.shuffle_buffer})")


# Batch plumbing: NumPy arrays (single-threaded, no OpenMP contention), one Python step per
# chunk or per batch, never per row; tensors are made zero-copy at the end. ---------------------
def _to_torch(batches: Iterable[Arrays]) -> Iterator[Batch]:
    for batch in batches:
        yield {k: torch.from_numpy(v) for k, v in batch.items()}


def _rows(batch: Arrays) -> int:
    return next(iter(batch.values())).shape[0]


def _slice(batch: Arrays, start: int, stop: int) -> Arrays:
    return {k: v[start:stop] for k, v in batch.items()}


def _take(batch: Arrays, index: np.ndarray) -> Arrays:
    return {k: v[index] for k, v in batch.items()}


def _concat(parts: list[Arrays]) -> Arrays:
    if len(parts) == 1:
        return parts[0]
    return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}


class ShuffleBuffer:
    """``tf.data.Dataset.shuffle`` semantics, vectorised per chunk, in a fixed block of memory.

    The first ``capacity`` rows fill the buffer. After that, for each incoming
    row j (in order) a slot r_j is drawn uniformly from ``[0, capacity)``; the
    row in slot r_j goes out and row j takes its place. A chunk of c rows is
    processed at once: r = integers(capacity, [c]); pick j emits the chunk row of
    the latest earlier pick of the same slot if there is one, else the buffer's
    row r_j; each slot then holds the chunk row of its last pick. Cost
    O(c log c) per chunk (a stable sort of r), memory ``capacity`` rows plus the
    chunk, independent of the data size. ``drain`` empties the buffer in random order.
    """

    def __init__(self, capacity: int, rng: np.random.Generator):
        self.capacity = capacity
        self.rng = rng
        self.buffer: Arrays | None = None
        self.filled = 0

    def push(self, chunk: Arrays) -> Arrays | None:
        """Add a chunk; returns the rows it displaces (as many as it brings once the buffer is full)."""
        size = _rows(chunk)
        if self.buffer is None:
            self.buffer = {k: np.empty((self.capacity, *v.shape[1:]), dtype=v.dtype) for k, v in chunk.items()}
        start = min(self.capacity - self.filled, size)
        if start:
            for k, held in self.buffer.items():
                held[self.filled:self.filled + start] = chunk[k][:start]
            self.filled += start
        return self._exchange(_slice(chunk, start, size)) if start < size else None

    def _exchange(self, incoming: Arrays) -> Arrays:
        assert self.buffer is not None
        slots = self.rng.integers(0, self.capacity, _rows(incoming))
        picks = np.argsort(slots, kind="stable")  # picks grouped by slot, in pick order
        by_slot = slots[picks]
        repeat = by_slot[1:] == by_slot[:-1]
        earlier = np.full(len(slots), -1)
        earlier[picks[1:][repeat]] = picks[:-1][repeat]  # latest earlier pick of the same slot
        from_chunk = np.flatnonzero(earlier >= 0)
        last = np.append(~repeat, True)  # each slot's last pick
        out = {}
        for k, held in self.buffer.items():
            rows = held[slots]
            rows[from_chunk] = incoming[k][earlier[from_chunk]]
            held[by_slot[last]] = incoming[k][picks[last]]
            out[k] = rows
        return out

    def drain(self) -> Arrays | None:
        """The rows still held, in a uniformly random order; the buffer is empty afterwards."""
        if self.buffer is None or self.filled == 0:
            return None
        out = _take(self.buffer, self.rng.permutation(self.filled))
        self.buffer, self.filled = None, 0
        return out


def shuffle_chunks(chunks: Iterable[Arrays], buffer_rows: int, rng: np.random.Generator) -> Iterator[Arrays]:
    """Chunks in shuffle-buffer order (:class:`ShuffleBuffer`); with ``buffer_rows=0`` each chunk is
    only permuted within itself."""
    if buffer_rows == 0:
        for chunk in chunks:
            yield _take(chunk, rng.permutation(_rows(chunk)))
        return
    buffer = ShuffleBuffer(buffer_rows, rng)
    for chunk in chunks:
        out = buffer.push(chunk)
        if out is not None:
            yield out
    rest = buffer.drain()
    if rest is not None:
        yield rest


def rebatch(chunks: Iterable[Arrays], batch_size: int, drop_remainder: bool) -> Iterator[Arrays]:
    """Batches of exactly ``batch_size`` rows from chunks of any size; the last may be smaller
    (dropped when ``drop_remainder``). Batches inside one chunk are views, not copies."""
    pending: list[Arrays] = []
    pending_rows = 0
    for chunk in chunks:
        size = _rows(chunk)
        start = 0
        if pending_rows:
            start = min(batch_size - pending_rows, size)
            pending.append(_slice(chunk, 0, start))
            pending_rows += start
            if pending_rows < batch_size:
                continue
            yield _concat(pending)
            pending, pending_rows = [], 0
        while size - start >= batch_size:
            yield _slice(chunk, start, start + batch_size)
            start += batch_size
        if start < size:
            pending, pending_rows = [_slice(chunk, start, size)], size - start
    if pending_rows and not drop_remainder:
        yield _concat(pending)
