"""Atomic file writes, checksums and the one safe reader of tensor files.

A write goes to a temporary file in the destination directory, is flushed to
disk, then renamed over the destination: readers see the old file or the new
one, never half of one, and an interrupted write leaves the old file intact.

:func:`load_tensors` is the only place recstack calls ``torch.load``: always with
``weights_only=True``, and with recstack's own message when a file is refused
(torch's suggests ``weights_only=False``, i.e. running the file's code).
"""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import re
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any, Iterator

import torch

from .errors import UnsafeFileError


@contextmanager
def atomic_open(path: str | os.PathLike, mode: str = "wb") -> Iterator[IO[Any]]:
    """Open a temporary sibling of ``path`` for writing; rename it over ``path`` on success.

    On an exception the temporary file is removed and ``path`` is untouched.
    """
    if "w" not in mode:
        raise ValueError(f"atomic_open only writes; got mode {mode!r}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, mode, **({} if "b" in mode else {"encoding": "utf-8"})) as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically."""
    with atomic_open(path, "wb") as handle:
        handle.write(data)


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | os.PathLike, obj: Any, indent: int = 2) -> None:
    """Serialise ``obj`` as JSON and write it atomically (keys kept in insertion order)."""
    atomic_write_text(path, json.dumps(obj, indent=indent, ensure_ascii=False) + "\n")


def sha256_file(path: str | os.PathLike, chunk_size: int = 1 << 20) -> str:
    """Hex SHA-256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(chunk_size), b""):
            digest.update(block)
    return digest.hexdigest()


def load_tensors(path: str | os.PathLike, map_location: Any = "cpu") -> Any:
    """Read a ``torch.save`` file that holds only tensors, numbers, strings and containers of them
    (what :meth:`recstack.Model.save_weights` and ``torch.save(model.state_dict(), path)`` write).

    Never unpickles other Python objects (that could run code from the file).

    Raises:
        FileNotFoundError: no file at ``path``.
        UnsafeFileError: the file needs other objects, or is not a PyTorch file (truncated,
            another format); the message says which and what to do.
    """
    try:
        return torch.load(Path(path), map_location=map_location, weights_only=True)
    except (FileNotFoundError, IsADirectoryError, PermissionError):
        raise
    except pickle.UnpicklingError as exc:  # refused by the weights-only unpickler
        raise UnsafeFileError(
            f"{path}: refused, {_refusal_reason(str(exc))}. recstack reads only tensors, numbers, strings and "
            "lists/dicts of them from a file and never unpickles other objects, which could run code. Re-save "
            "the tensors with the code that made the file, e.g. torch.save(model.state_dict(), path).") from None
    except Exception as exc:  # zip / EOF / key errors from a truncated or foreign file
        raise UnsafeFileError(
            f"{path}: not a readable PyTorch file ({type(exc).__name__}: {_first_line(exc)}). Pass a file "
            "written by torch.save or Model.save_weights; if it was one, this copy is incomplete.") from None


def _refusal_reason(message: str) -> str:
    """What torch's weights-only unpickler refused, without its advice to turn the check off."""
    found = re.search(r"Unsupported global: GLOBAL ([\w.]+)", message)
    if found:
        return f"it contains a pickled Python object ({found.group(1)}), not only tensors"
    return "it is not a tensor-only PyTorch file (the unpickler found an unsupported instruction)"


def _first_line(exc: BaseException) -> str:
    lines = [line for line in str(exc).splitlines() if line.strip() and "weights_only" not in line]
    return lines[0][:200] if lines else "no details"
