"""Input checks shared by every index backend: vectors, ids, and ``.npy`` files read without pickle.

Every backend converts what it is given through these functions, so that a NaN
embedding, a repeated id or a pickled array is refused the same way (and with the
same message) whichever index is used.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..core.errors import DataError, ShapeError


def check_finite(x: np.ndarray | torch.Tensor, what: str, ids: np.ndarray | None = None) -> None:
    """DataError naming the first row of ``x`` [n, d] that holds a NaN or an infinity.

    Non-finite vectors would score NaN against every query, and a NaN ties with (or
    beats) everything in a top-k, so they are refused instead of ranked.
    """
    ok = torch.isfinite(x).all(dim=1) if isinstance(x, torch.Tensor) else np.isfinite(x).all(axis=1)
    if bool(ok.all()):
        return
    ok_np = ok.cpu().numpy() if isinstance(ok, torch.Tensor) else ok
    bad = np.flatnonzero(~ok_np)
    row = int(bad[0])
    values = np.asarray(x[row].detach().cpu() if isinstance(x, torch.Tensor) else x[row])
    value = values[~np.isfinite(values)][0]
    name = f" (id {int(ids[row])})" if ids is not None and ids.shape[0] > row else ""
    raise DataError(f"{what} row {row}{name} is not finite ({value}); {bad.shape[0]} of {ok_np.shape[0]} rows "
                    "hold NaN or inf. Indexes need finite vectors: check the tower that produced them "
                    "(a diverged model outputs NaN) or drop those rows.")


def as_numpy_f32(x: Any, what: str = "embeddings", finite: bool = True) -> np.ndarray:
    """Tensor / array -> C-contiguous float32 [n, d] ndarray (no copy when already one);
    with ``finite`` (default) a DataError names the first row holding NaN or inf."""
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu()
        x = x.float().numpy() if x.dtype != torch.float32 else x.numpy()
    arr = np.ascontiguousarray(np.asarray(x), dtype=np.float32)
    if arr.ndim != 2:
        raise ShapeError(f"{what} must be 2-D [n, d]; got shape {tuple(arr.shape)}.")
    if finite:
        check_finite(arr, what)
    return arr


def as_ids(ids: Any, n: int | None = None, what: str = "ids") -> np.ndarray:
    """Integer ids -> int64 [n] ndarray."""
    if isinstance(ids, torch.Tensor):
        ids = ids.detach().cpu().numpy()
    arr = np.asarray(ids)
    if arr.ndim != 1:
        raise ShapeError(f"{what} must be 1-D; got shape {tuple(arr.shape)}.")
    if arr.size and arr.dtype.kind not in "iu":
        raise DataError(f"{what} must be integers (encode raw ids first); got dtype {arr.dtype}.")
    if n is not None and arr.shape[0] != n:
        raise ShapeError(f"{n} embeddings but {arr.shape[0]} {what}.")
    return arr.astype(np.int64, copy=False)


def checked_ids(ids: Any, x: np.ndarray | torch.Tensor) -> np.ndarray:
    """What every ``build(ids, embeddings)`` checks of candidate embeddings ``x`` [C, d] and their
    ``ids``: at least one row, every value finite, ids unique; returns ids [C] (0..C-1 when None)."""
    if x.shape[0] == 0:
        raise DataError("build got no candidates (embeddings have 0 rows).")
    ids = np.arange(x.shape[0], dtype=np.int64) if ids is None else as_ids(ids, x.shape[0], "candidate ids")
    check_finite(x, "candidate embeddings", ids)
    check_unique(ids, "candidate ids")
    return ids


def build_inputs(ids: Any, embeddings: Any) -> tuple[np.ndarray, np.ndarray]:
    """Checked build inputs for numpy backends: (ids [C] int64, embeddings [C, d] float32)."""
    x = as_numpy_f32(embeddings, "candidate embeddings", finite=False)
    return checked_ids(ids, x), x


def check_unique(ids: np.ndarray, what: str = "ids") -> np.ndarray:
    """Sorted copy of ``ids``; DataError naming the first repeated id and the rows holding it."""
    order = np.argsort(ids, kind="stable")
    sorted_ids = ids[order]
    repeat = np.flatnonzero(sorted_ids[1:] == sorted_ids[:-1])
    if repeat.size:
        first = sorted_ids[repeat[0]]
        rows = np.sort(order[sorted_ids == first])
        count = np.unique(sorted_ids[repeat]).size
        raise DataError(f"{what} must be unique: id {int(first)} is at rows {rows[:5].tolist()} "
                        f"({count} id(s) repeat). Give each candidate one id (drop or merge duplicates).")
    return sorted_ids


def load_npy(path: Path, mmap: bool = False) -> np.ndarray:
    """``np.load`` without pickle; optionally memory-mapped (read-only)."""
    try:
        return np.load(path, allow_pickle=False, mmap_mode="r" if mmap else None)
    except FileNotFoundError:
        raise FileNotFoundError(f"index file {path} is missing") from None
    except ValueError as exc:
        raise DataError(f"{path} is not a plain numpy array file ({exc}); refusing to unpickle it.") from exc
