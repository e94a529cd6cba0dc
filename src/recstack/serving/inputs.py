"""Raw tables to tower inputs, shared by export (candidates) and queries (requests)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd
import torch

from ..core.errors import DataError
from ..models.serving_spec import InputSpec

__all__ = ["input_names", "raw_inputs", "select", "table_columns"]


def input_names(spec: InputSpec) -> list[str]:
    """The column names of an input spec (one name, or a list of names)."""
    return [spec] if isinstance(spec, str) else list(spec)


def select(inputs: Mapping[str, Any], spec: InputSpec) -> Any:
    """The tower's argument: one column for a str spec, a dict of columns for a list."""
    return inputs[spec] if isinstance(spec, str) else {n: inputs[n] for n in spec}


def table_columns(values: Any, columns: list[str], what: str) -> dict[str, Any]:
    """``columns`` of a DataFrame or dict of columns; DataError naming the missing ones."""
    if isinstance(values, pd.DataFrame):
        missing = [c for c in columns if c not in values.columns]
        if missing:
            raise DataError(f"{what} lacks column(s) {missing}; it has {list(values.columns)}.")
        return {c: values[c].to_numpy() for c in columns}
    if isinstance(values, Mapping):
        missing = [c for c in columns if c not in values]
        if missing:
            raise DataError(f"{what} lacks column(s) {missing}; it has {list(values)}.")
        return {c: values[c] for c in columns}
    raise DataError(f"{what} must be a pandas DataFrame or a dict of columns; got {type(values).__name__}.")


def raw_inputs(table: Mapping[str, Any], spec: InputSpec) -> Any:
    """Raw-mode tower inputs: numeric columns as tensors (int64 / float32), others as object arrays."""
    def conv(v: Any) -> Any:
        arr = np.asarray(v.cpu() if isinstance(v, torch.Tensor) else v)
        if arr.dtype.kind in "iub":
            return torch.from_numpy(arr.astype(np.int64))
        if arr.dtype.kind == "f":
            return torch.from_numpy(arr.astype(np.float32))
        return arr.astype(object)
    return select({k: conv(v) for k, v in table.items()}, spec)
