"""In-memory columnar data: equal-length tensors, batched by slicing.

Training never touches strings or Python rows: raw tables are encoded once by
the preprocessing layers into tensors, and every batch is a dict of slices (or,
when shuffled, ``index_select`` gathers) of those tensors.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any, Protocol, runtime_checkable

import numpy as np
import torch

from .errors import ColumnNotFoundError, DataError, suggest


class Batch(dict[str, torch.Tensor]):
    """One batch: column name -> tensor slice (a plain dict otherwise).

    Reading a column it does not have raises :class:`~recstack.core.errors.ColumnNotFoundError`
    (a ``KeyError``) that names the missing column and the available ones, instead of a bare
    ``KeyError('item')`` from inside a model's ``compute_loss``.
    """

    __slots__ = ()

    def __missing__(self, name: str) -> torch.Tensor:
        raise ColumnNotFoundError(_missing_message("the batch", name, list(self)))


def _missing_message(where: str, name: object, available: list[str]) -> str:
    hint = suggest(name, available) if isinstance(name, str) else ""
    return (f"{where} has no column {name!r}{hint}; its columns are {sorted(available)}. Name the data's "
            f"columns as the model reads them (e.g. Columns({{{name!r}: ...}})), or change the model's column names.")


def epoch_order(num_rows: int, seed: int, epoch: int) -> torch.Tensor:
    """The shuffle permutation of one epoch, a pure function of (seed, epoch).

    Deriving it from the epoch number (not from a generator advanced epoch by
    epoch) lets a resumed run see exactly the batches of an uninterrupted one.
    """
    gen = torch.Generator().manual_seed((seed * 1_000_003 + epoch) % (2**63 - 1))
    return torch.randperm(num_rows, generator=gen)


@runtime_checkable
class BatchSource(Protocol):
    """What the training loop reads: anything that yields an epoch's batches.

    :class:`Columns` (in memory) implements it; so do streaming sources
    (Parquet read in chunks) and per-rank shards for distributed training.
    ``epoch_batches`` must be a pure function of its arguments so that a
    resumed run sees the batches of an uninterrupted one.
    """

    @property
    def num_rows(self) -> int: ...

    def num_batches(self, batch_size: int, drop_remainder: bool = False) -> int: ...

    def epoch_batches(self, batch_size: int, *, shuffle: bool, seed: int, epoch: int,
                      drop_remainder: bool = False) -> Iterator[Batch]: ...


class Columns(Mapping[str, torch.Tensor]):
    """A read-only mapping of column name -> tensor, all with the same first dimension.

    Args:
        columns: name -> array-like. Numpy arrays and lists are converted with
            ``torch.as_tensor`` (float64 becomes float32, the training dtype). A pandas (or
            polars) DataFrame whose columns are already encoded (integer ids, float features)
            is accepted too; string columns are refused (encode them with a FeatureSet first).

    Example:
        >>> data = Columns({"user": torch.tensor([0, 1, 2]), "item": torch.tensor([5, 6, 7])})
        >>> [b["item"].tolist() for b in data.batches(2)]
        [[5, 6], [7]]
    """

    def __init__(self, columns: Mapping[str, Any]):
        if _is_data_frame(columns):
            columns = {str(name): columns[name].to_numpy() for name in columns.columns}
        if len(columns) == 0:
            raise DataError("Columns needs at least one column; got an empty mapping.")
        tensors: dict[str, torch.Tensor] = {}
        for name, values in columns.items():
            tensors[name] = _to_tensor(name, values)
        lengths = {name: t.shape[0] for name, t in tensors.items()}
        if len(set(lengths.values())) != 1:
            raise DataError(
                f"All columns must have the same number of rows; got {lengths}. "
                "Encode every column from the same table."
            )
        self._columns = tensors
        self._length = next(iter(lengths.values()))

    # Mapping protocol -------------------------------------------------------
    def __getitem__(self, name: str) -> torch.Tensor:
        try:
            return self._columns[name]
        except KeyError:
            raise ColumnNotFoundError(_missing_message("the data", name, list(self._columns))) from None

    def __iter__(self) -> Iterator[str]:
        return iter(self._columns)

    def __len__(self) -> int:
        """Number of columns (Mapping semantics); use :attr:`num_rows` for rows."""
        return len(self._columns)

    @property
    def num_rows(self) -> int:
        return self._length

    def __repr__(self) -> str:
        cols = ", ".join(f"{k}: {tuple(v.shape)} {str(v.dtype).replace('torch.', '')}"
                         for k, v in self._columns.items())
        return f"Columns(num_rows={self._length}, {cols})"

    # Row selection ----------------------------------------------------------
    def take(self, indices: torch.Tensor | np.ndarray | slice) -> "Columns":
        """Rows at ``indices`` (a slice gives views; an index tensor gives copies)."""
        if isinstance(indices, slice):
            return Columns({k: v[indices] for k, v in self._columns.items()})
        index = torch.as_tensor(indices, dtype=torch.long)
        return Columns({k: v.index_select(0, index) for k, v in self._columns.items()})

    def shuffle(self, seed: int) -> "Columns":
        """All rows in a seeded random order (``torch.randperm``)."""
        gen = torch.Generator().manual_seed(seed)
        return self.take(torch.randperm(self._length, generator=gen))

    def select(self, names: list[str]) -> "Columns":
        """A subset of the columns (no copy)."""
        return Columns({n: self[n] for n in names})

    def to(self, device: torch.device | str) -> "Columns":
        return Columns({k: v.to(device) for k, v in self._columns.items()})

    def batches(
        self,
        batch_size: int,
        order: torch.Tensor | None = None,
        drop_remainder: bool = False,
    ) -> Iterator[Batch]:
        """Yield batches as dicts of tensors.

        Args:
            batch_size: rows per batch; the last batch may be smaller unless
                ``drop_remainder``.
            order: optional permutation of row indices (e.g. a shuffle); without
                it batches are contiguous slices (views, no copy).
        """
        if batch_size <= 0:
            raise DataError(f"batch_size must be positive; got {batch_size}.")
        stop = self._length - (self._length % batch_size if drop_remainder else 0)
        for start in range(0, stop, batch_size):
            end = min(start + batch_size, stop)
            if order is None:
                yield Batch({k: v[start:end] for k, v in self._columns.items()})
            else:
                index = order[start:end]
                yield Batch({k: v.index_select(0, index) for k, v in self._columns.items()})

    def num_batches(self, batch_size: int, drop_remainder: bool = False) -> int:
        if drop_remainder:
            return self._length // batch_size
        return -(-self._length // batch_size)

    def epoch_batches(self, batch_size: int, *, shuffle: bool, seed: int, epoch: int,
                      drop_remainder: bool = False) -> Iterator[Batch]:
        """The batches of one epoch: rows in :func:`epoch_order` when ``shuffle``, else in order."""
        order = epoch_order(self._length, seed, epoch) if shuffle else None
        return self.batches(batch_size, order, drop_remainder)


def as_columns(data: "Columns | Mapping[str, Any]", caller: str = "this call") -> Columns:
    """Accept a :class:`Columns` or a plain mapping of arrays (a raw DataFrame: see :func:`as_batch_source`)."""
    if isinstance(data, Columns):
        return data
    _refuse_data_frame(data, caller)
    return Columns(data)


def as_batch_source(data: "BatchSource | Mapping[str, Any]", caller: str = "this call") -> BatchSource:
    """A :class:`BatchSource` as is; a mapping of arrays as :class:`Columns`.

    A pandas/polars DataFrame is refused with a message saying how to encode it: models carry
    no preprocessing, so raw ids in a table (e.g. MovieLens user "42") are not embedding rows,
    and a table of already-encoded columns is one explicit ``recstack.Columns(df)`` away.
    """
    if isinstance(data, Columns) or (not isinstance(data, Mapping) and isinstance(data, BatchSource)):
        return data
    _refuse_data_frame(data, caller)
    return Columns(data)


def _is_data_frame(data: Any) -> bool:
    """pandas or polars DataFrame, recognised without importing either."""
    return type(data).__name__ == "DataFrame" and hasattr(data, "columns") and hasattr(data, "to_numpy")


def _refuse_data_frame(data: Any, caller: str) -> None:
    if _is_data_frame(data):
        raise DataError(
            f"{caller} got a {type(data).__module__.split('.')[0]} DataFrame; models read encoded tensors, not "
            "a raw table. Encode it with the preprocessing fitted on the training table, e.g. "
            "recstack.Columns(feature_set.transform(df)) with a fitted recstack.features.FeatureSet, or, if "
            "its columns already hold encoded integer ids and numeric features, pass recstack.Columns(df).")


def _to_tensor(name: str, values: Any) -> torch.Tensor:
    if isinstance(values, torch.Tensor):
        tensor = values
    else:
        array = np.asarray(values)
        if array.dtype.kind in "OUS":
            raise DataError(
                f"Column {name!r} holds strings ({array.dtype}); encode it first with a "
                "preprocessing layer (e.g. recstack.features.StringLookup) so that no "
                "strings reach the training loop."
            )
        if array.dtype == np.float64:
            array = array.astype(np.float32)
        array = np.ascontiguousarray(array)
        if not array.flags.writeable:  # e.g. pandas 3 copy-on-write views; torch needs writable memory
            array = array.copy()
        tensor = torch.from_numpy(array)
    if tensor.dim() == 0:
        raise DataError(f"Column {name!r} is a scalar; columns need one row per example.")
    return tensor
