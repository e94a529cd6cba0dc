"""Cache directory, checksummed downloads and atomic zip extraction.

Downloads are verified against a SHA-256 *in memory*, before anything touches
the disk, so a corrupt or tampered file never lands in the cache. Writes go
through :mod:`recstack.core.io` and extraction goes to a temporary directory that
is renamed into place: an interrupted run leaves the cache unchanged instead
of leaving half a dataset that a later run would trust.
"""

from __future__ import annotations

import functools
import hashlib
import os
import shutil
import tempfile
import urllib.request
import zipfile
from pathlib import Path, PurePosixPath
from typing import Callable

from recstack.core.io import atomic_write_bytes, sha256_file
from recstack.core.errors import ChecksumError, DataError

#: ``fetch(url) -> bytes``; raises ``OSError`` (``urllib.error.URLError`` is one) when offline.
Fetch = Callable[[str], bytes]

CACHE_ENV_VAR = "RECSTACK_CACHE_DIR"
_CHUNK = 1 << 16


def resolve_cache_dir(cache_dir: str | os.PathLike[str] | None = None) -> Path:
    """The cache root: ``cache_dir``, else ``$RECSTACK_CACHE_DIR``, else ``~/.cache/recstack``.

    The directory is not created here; writers create it when they need it.
    """
    if cache_dir is not None:
        return Path(cache_dir).expanduser()
    from_env = os.environ.get(CACHE_ENV_VAR)
    if from_env:  # An empty variable means "unset", as in most tools.
        return Path(from_env).expanduser()
    return Path.home() / ".cache" / "recstack"


def _fetch(url: str, progress: bool = True) -> bytes:
    """Download ``url`` into memory, with a tqdm bar when ``progress`` and stderr is a terminal.

    (tqdm's ``disable=None``: no bar frames in a log file or a pipe.)

    Network problems surface as ``OSError`` (``URLError``, ``TimeoutError``).
    """
    from tqdm.auto import tqdm  # Imported lazily: only downloads need it.

    with urllib.request.urlopen(url, timeout=60) as response:
        length = response.headers.get("Content-Length")
        total = int(length) if length and length.isdigit() else None
        chunks: list[bytes] = []
        with tqdm(total=total, unit="B", unit_scale=True, desc=url.rsplit("/", 1)[-1],
                  disable=None if progress else True) as bar:
            for chunk in iter(lambda: response.read(_CHUNK), b""):
                chunks.append(chunk)
                bar.update(len(chunk))
    return b"".join(chunks)


def fetch_verified(
    url: str,
    sha256: str,
    *,
    size: int | None = None,
    fetch: Fetch | None = None,
    progress: bool = True,
) -> bytes:
    """Fetch ``url`` and return its bytes only if their SHA-256 equals ``sha256``.

    ``fetch`` replaces the built-in HTTP client (mirrors, tests). Raises
    :class:`ChecksumError` naming the expected and actual hash; the bytes are
    discarded, never written.
    """
    # Looked up at call time so tests can monkeypatch the module-level _fetch.
    fetcher = fetch if fetch is not None else functools.partial(_fetch, progress=progress)
    data = fetcher(url)
    actual = hashlib.sha256(data).hexdigest()
    if actual != sha256.lower():
        size_note = f"; expected {size} bytes" if size is not None else ""
        raise ChecksumError(
            f"SHA-256 mismatch for {url}: expected {sha256.lower()}, got {actual} "
            f"({len(data)} bytes{size_note}). The download was discarded; retry, or "
            f"download and extract it yourself and pass the directory as data_dir=."
        )
    return data


def download_file(
    url: str,
    dest: str | os.PathLike[str],
    *,
    sha256: str,
    size: int | None = None,
    fetch: Fetch | None = None,
    progress: bool = True,
) -> Path:
    """Ensure ``dest`` holds the verified content of ``url``; return ``dest``.

    An existing ``dest`` with the right hash is reused without fetching; one
    with the wrong hash (a stale or corrupt cache entry) is replaced. The new
    file is verified before it is written, and written atomically.
    """
    dest = Path(dest)
    if dest.is_file():
        if sha256_file(dest) == sha256.lower():
            return dest
        dest.unlink()  # Never reuse a file that fails verification.
    atomic_write_bytes(dest, fetch_verified(url, sha256, size=size, fetch=fetch, progress=progress))
    return dest


def _safe_members(archive: zipfile.ZipFile, zip_path: Path) -> list[zipfile.ZipInfo]:
    """The archive's members, refusing any that would land outside the target ("zip slip")."""
    members = archive.infolist()
    for info in members:
        parts = PurePosixPath(info.filename.replace("\\", "/")).parts
        if info.filename.startswith(("/", "\\")) or ".." in parts or (parts and ":" in parts[0]):
            raise DataError(f"{zip_path}: refusing to extract unsafe member path {info.filename!r}")
    return members


def extract_zip(
    zip_path: str | os.PathLike[str],
    dest: str | os.PathLike[str],
    *,
    member_dir: str | None = None,
) -> Path:
    """Extract ``zip_path`` so that ``dest`` appears complete or not at all; return ``dest``.

    The archive is unpacked into a temporary sibling of ``dest`` which is then
    renamed to ``dest``. ``member_dir`` names the archive's top-level folder
    whose *contents* become ``dest`` (``"ml-100k"`` for the MovieLens zip);
    ``None`` uses the archive root. An existing ``dest`` is replaced.
    """
    zip_path, dest = Path(zip_path), Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", suffix=".tmp", dir=dest.parent))
    try:
        try:
            with zipfile.ZipFile(zip_path) as archive:
                archive.extractall(tmp, members=_safe_members(archive, zip_path))
        except zipfile.BadZipFile as exc:
            raise DataError(f"{zip_path} is not a valid zip archive: {exc}") from exc
        root = tmp / member_dir if member_dir else tmp
        if not root.is_dir():
            raise DataError(f"{zip_path} has no top-level folder {member_dir!r}")
        _replace_dir(root, dest)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return dest


def _replace_dir(src: Path, dest: Path) -> None:
    """Rename ``src`` to ``dest``, first moving aside (then deleting) an old ``dest``."""
    if dest.exists():
        # Renaming the old directory away first keeps the window in which
        # ``dest`` is missing to two renames, and never shows a half-deleted one.
        trash = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", suffix=".old", dir=dest.parent))
        os.replace(dest, trash / dest.name)
        shutil.rmtree(trash, ignore_errors=True)
    os.replace(src, dest)
