"""Reading a bundle as a sandbox: only listed files, inside the bundle folder, sizes checked first.

A bundle is a folder people download and share, so its manifest is untrusted
input: its SHA-256 digest proves the files are the ones it lists, not that the
lister is friendly. :class:`BundleFiles` is the only way the loader touches a
bundle's files, and it enforces:

* every name is a relative POSIX path without ``..``, ``.``, empty parts or
  backslashes, and resolves (symlinks followed) to a path inside the bundle
  folder - an absolute path, a ``..`` or a symlink leading out is refused;
* a file is read only if the manifest lists it, and the folder holds nothing
  the manifest does not list (an extra ``index/identifiers.npy`` is refused,
  not read);
* before a file is opened it must be a regular file (no device, FIFO or socket)
  whose size is the listed size; ``/dev/zero`` is refused without reading;
* ``.npy`` files: the header (at most 10 kB, pickled dtypes refused) must
  describe exactly the bytes that follow, so the array allocated is the file on
  disk; callers then bound shapes by the manifest (``expect``).

Nothing here opens a network connection or reads the environment.
"""

from __future__ import annotations

import json
import math
import os
import stat
from collections.abc import Mapping
from pathlib import Path, PurePosixPath
from typing import Any, BinaryIO

import numpy as np

from ..core.errors import ChecksumError
from ..core.io import sha256_file

#: manifest.json has no manifest entry of its own; this bounds what is read of it.
MAX_MANIFEST_BYTES = 64 << 20
#: numpy's own default bound on a .npy header.
MAX_NPY_HEADER = 10_000

__all__ = ["BundleFiles", "MAX_MANIFEST_BYTES", "UnsafeBundleError", "check_name", "npy_header", "read_regular"]


class UnsafeBundleError(ChecksumError):
    """A bundle asks for something loading never does: a path outside its folder, an unlisted
    or non-regular file, a size that is not the listed one, a pickle, connection details."""


def check_name(name: object, what: str = "file") -> str:
    """``name`` if it is a safe relative path inside a bundle, else UnsafeBundleError."""
    if not isinstance(name, str) or not name:
        raise UnsafeBundleError(f"bundle manifest names a {what} by {name!r}; names must be non-empty strings.")
    parts = name.split("/")
    if (PurePosixPath(name).is_absolute() or "\\" in name or "\x00" in name or ":" in parts[0]
            or any(p in ("", ".", "..") for p in parts)):
        raise UnsafeBundleError(f"bundle manifest names the {what} {name!r}: only relative paths inside the "
                                "bundle (no '/' at the start, no '..', no '.', no '\\') are read. Refusing the "
                                "bundle; re-export it with recstack.serving.export.")
    return name


def resolve_inside(root: Path, name: str, what: str = "file") -> Path:
    """The real path of ``root/name`` (symlinks resolved); UnsafeBundleError if it leaves ``root``."""
    real = Path(os.path.realpath(root / check_name(name, what)))
    if real != root and root not in real.parents:
        raise UnsafeBundleError(f"bundle {what} {name!r} resolves to {real}, outside the bundle folder {root} "
                                "(a symlink leading out?); refusing the bundle.")
    return real


def _regular_stat(path: Path, name: str) -> os.stat_result:
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise ChecksumError(f"bundle file {name} is missing; re-export the bundle.") from None
    if not stat.S_ISREG(st.st_mode):
        raise UnsafeBundleError(f"bundle file {name} is not a regular file (a device, FIFO, socket or folder); "
                                "refusing to read it.")
    return st


def read_regular(path: Path, name: str, size: int | None = None, limit: int | None = None) -> bytes:
    """The bytes of the regular file ``path``: exactly ``size`` bytes, or at most ``limit``.

    Checked before reading (stat) and on the open descriptor (fstat), so nothing unbounded
    is ever read; ``O_NOFOLLOW`` and ``O_NONBLOCK`` keep a swapped-in symlink or FIFO from
    redirecting or blocking the read.
    """
    _regular_stat(path, name)
    flags = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0)
    try:
        fd = os.open(path, flags)
    except OSError as exc:
        raise UnsafeBundleError(f"bundle file {name} cannot be opened safely ({exc}); refusing the bundle.") from None
    with os.fdopen(fd, "rb") as handle:
        st = os.fstat(handle.fileno())
        if not stat.S_ISREG(st.st_mode):
            raise UnsafeBundleError(f"bundle file {name} is not a regular file; refusing to read it.")
        if size is not None and st.st_size != size:
            raise ChecksumError(f"bundle file {name} has {st.st_size} bytes, the manifest lists {size} "
                                "(truncated or changed); re-export the bundle.")
        if limit is not None and st.st_size > limit:
            raise UnsafeBundleError(f"bundle file {name} has {st.st_size} bytes, over the {limit}-byte limit "
                                    "for it; refusing to read it.")
        data = handle.read(st.st_size + 1)
    if len(data) != st.st_size:
        raise ChecksumError(f"bundle file {name} changed while it was read; retry or re-export the bundle.")
    return data


def npy_header(handle: BinaryIO, name: str) -> tuple[tuple[int, ...], np.dtype, int]:
    """(shape, dtype, data offset) of an open .npy file; pickled (object) dtypes are refused."""
    fmt = np.lib.format
    try:
        version = fmt.read_magic(handle)
        if version == (1, 0):
            shape, _, dtype = fmt.read_array_header_1_0(handle, max_header_size=MAX_NPY_HEADER)
        elif version == (2, 0):
            shape, _, dtype = fmt.read_array_header_2_0(handle, max_header_size=MAX_NPY_HEADER)
        else:
            raise ValueError(f"unsupported .npy format version {version}")
    except (ValueError, SyntaxError, TypeError) as exc:
        raise UnsafeBundleError(f"bundle file {name} is not a plain .npy array ({exc}); refusing it.") from None
    if dtype.hasobject:
        raise UnsafeBundleError(f"bundle file {name} holds Python objects (dtype {dtype}), which only unpickling "
                                "could read; recstack never unpickles. Refusing the bundle.")
    return tuple(int(n) for n in shape), dtype, handle.tell()


class BundleFiles:
    """The files of one bundle, reachable only through its manifest's ``files`` table.

    Args:
        root: the bundle folder (resolved once; the bundle folder itself may be a symlink).
        files: the manifest's ``{name: {"sha256": hex, "bytes": n}}`` table (already validated
            by :func:`recstack.serving.manifest.validate_manifest`).
    """

    def __init__(self, root: str | os.PathLike, files: Mapping[str, Mapping[str, Any]]):
        self.root = Path(os.path.realpath(root))
        self.files = {check_name(name): entry for name, entry in files.items()}

    def listed(self, name: str) -> bool:
        return name in self.files

    def path(self, name: str) -> Path:
        """The checked real path of the listed file ``name``: inside the bundle, a regular file
        of the listed size. Nothing is read."""
        entry = self.files.get(check_name(name))
        if entry is None:
            raise UnsafeBundleError(f"bundle file {name} is not listed in the manifest; an unlisted file is never "
                                    "read. Re-export the bundle.")
        real = resolve_inside(self.root, name)
        st = _regular_stat(real, name)
        if st.st_size != entry["bytes"]:
            raise ChecksumError(f"bundle file {name} has {st.st_size} bytes, the manifest lists {entry['bytes']} "
                                "(truncated or changed); re-export the bundle.")
        return real

    def check(self, hashes: bool = True) -> None:
        """Every listed file is safe and of its listed size (and SHA-256, with ``hashes``), and
        the folder holds nothing else. Raises ChecksumError naming every problem."""
        self.refuse_unlisted()
        problems = []
        for name, entry in self.files.items():
            try:
                real = self.path(name)
            except UnsafeBundleError:
                raise
            except ChecksumError as exc:
                problems.append(str(exc))
                continue
            if hashes and sha256_file(real) != entry["sha256"]:
                problems.append(f"{name}: SHA-256 mismatch (file changed)")
        if problems:
            raise ChecksumError(f"bundle {self.root} failed verification; refusing to load it: " + "; ".join(problems))

    def refuse_unlisted(self) -> None:
        """UnsafeBundleError for the first file or folder the manifest does not account for."""
        allowed = set(self.files) | {"manifest.json"}
        folders = {str(p) for name in allowed for p in PurePosixPath(name).parents if str(p) != "."}
        for current, dirnames, filenames in os.walk(self.root, followlinks=False):
            base = PurePosixPath(Path(current).relative_to(self.root).as_posix())
            for entry in dirnames:
                rel = str(base / entry) if str(base) != "." else entry
                if rel not in folders:
                    raise UnsafeBundleError(f"bundle {self.root} holds {rel}/, which the manifest does not list; "
                                            "remove it or re-export the bundle (unlisted files are never read).")
            for entry in filenames:
                rel = str(base / entry) if str(base) != "." else entry
                if rel not in allowed:
                    raise UnsafeBundleError(f"bundle {self.root} holds {rel}, which the manifest does not list; "
                                            "remove it or re-export the bundle (unlisted files are never read).")

    # -- reading -----------------------------------------------------------------------------------
    def read_bytes(self, name: str) -> bytes:
        return read_regular(self.path(name), name, size=self.files[name]["bytes"])

    def read_json(self, name: str) -> Any:
        """A listed JSON file, parsed; ChecksumError if it is not JSON."""
        try:
            return json.loads(self.read_bytes(name).decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
            raise ChecksumError(f"bundle file {name} is not valid JSON ({exc}); re-export the bundle.") from None

    def check_npy(self, name: str, expect: tuple[int | None, ...] | None = None, kinds: str = ""
                  ) -> tuple[tuple[int, ...], np.dtype]:
        """(shape, dtype) of a listed .npy file whose header describes exactly its bytes (only the
        header is read).

        Args:
            expect: the shape the manifest implies (None entries: any size).
            kinds: allowed dtype kinds (numpy ``dtype.kind`` letters, e.g. "iu", "f", "U");
                empty = any non-object dtype.
        """
        with open(self.path(name), "rb") as handle:
            shape, dtype, offset = npy_header(handle, name)
        if kinds and dtype.kind not in kinds:
            raise UnsafeBundleError(f"bundle file {name} holds dtype {dtype}; expected kind {kinds!r}.")
        if expect is not None and (len(shape) != len(expect)
                                   or any(e is not None and s != e for s, e in zip(shape, expect))):
            raise UnsafeBundleError(f"bundle file {name} claims shape {shape}; the manifest implies "
                                    f"{tuple('*' if e is None else e for e in expect)}. Refusing the bundle.")
        if offset + math.prod(shape) * dtype.itemsize != self.files[name]["bytes"]:
            raise UnsafeBundleError(f"bundle file {name} claims shape {shape} of {dtype}, which is not the "
                                    f"{self.files[name]['bytes']} bytes it has; refusing the bundle.")
        return shape, dtype

    def load_npy(self, name: str, expect: tuple[int | None, ...] | None = None, kinds: str = "",
                 mmap: bool = False) -> np.ndarray:
        """A listed .npy array, after :meth:`check_npy` (so what is allocated is the file on disk);
        ``mmap``: memory-map it read-only instead of reading it."""
        self.check_npy(name, expect, kinds)
        try:
            return np.load(self.path(name), allow_pickle=False, mmap_mode="r" if mmap else None)
        except ValueError as exc:
            raise UnsafeBundleError(f"bundle file {name} is not a plain numpy array ({exc}); refusing to "
                                    "unpickle it.") from exc
