"""Finding a dataset that ships as one zip: a named directory, an environment variable, the
cache, or a checksum-verified download extracted into the cache.

:func:`locate` is the lookup of :func:`recstack.datasets.load_movielens_100k` written for
any :class:`Archive`, so each loader states only its URL, hash, folder and files.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from recstack.core.errors import DataError, DataNotFoundError
from recstack.core.io import atomic_write_bytes, sha256_file
from recstack.datasets.download import Fetch, extract_zip, fetch_verified, resolve_cache_dir


@dataclass(frozen=True)
class Archive:
    """A dataset zip: where it comes from and what it must contain.

    ``folder`` is the archive's top-level folder, whose contents become
    ``<cache>/<folder>``; ``required`` are the file names the folder must hold; ``env_var``
    names a directory that replaces the lookup (a set variable is an explicit choice: a
    typo in it fails instead of downloading); ``size`` is the official archive's byte count.
    """

    title: str
    url: str
    sha256: str
    size: int
    folder: str
    required: tuple[str, ...]
    env_var: str


def missing_files(archive: Archive, directory: Path) -> list[str]:
    """The required files that ``directory`` lacks."""
    return [name for name in archive.required if not (directory / name).is_file()]


def require_files(archive: Archive, directory: Path, origin: str) -> Path:
    """``directory`` if it holds every required file, else DataNotFoundError naming what is missing."""
    hint = f"It must be a directory holding {', '.join(archive.required)} (the unzipped {archive.folder})."
    if not directory.is_dir():
        raise DataNotFoundError(f"{archive.title} {origin} {directory} does not exist. {hint}")
    missing = missing_files(archive, directory)
    if missing:
        raise DataNotFoundError(f"{archive.title} {origin} {directory} is missing {', '.join(missing)}. {hint}")
    return directory


def locate(
    archive: Archive,
    data_dir: str | os.PathLike[str] | None = None,
    *,
    cache_dir: str | os.PathLike[str] | None = None,
    download: bool = True,
    progress: bool = True,
    url: str | None = None,
    sha256: str | None = None,
    fetch: Fetch | None = None,
) -> Path:
    """The directory to read ``archive`` from; first match wins.

    ``data_dir``; ``$<archive.env_var>``; the cache ``(cache_dir or $RECSTACK_CACHE_DIR or
    ~/.cache/recstack)/<folder>``; a cached zip whose SHA-256 matches; a download of ``url``
    (default the archive's; when ``download``), checked against ``sha256`` in memory before
    it is written, then extracted atomically. A cached zip with the wrong hash is deleted.

    Raises:
        DataNotFoundError: a named directory lacks a file, or the data is nowhere and cannot
            be downloaded. ChecksumError: the download's hash differs. DataError: the
            archive lacks a required file.
    """
    if data_dir is not None:
        return require_files(archive, Path(data_dir).expanduser(), "data_dir")
    from_env = os.environ.get(archive.env_var)
    if from_env:
        return require_files(archive, Path(from_env).expanduser(), f"${archive.env_var}")
    url = archive.url if url is None else url
    sha256 = (archive.sha256 if sha256 is None else sha256).lower()
    cache_root = resolve_cache_dir(cache_dir)
    target = cache_root / archive.folder
    if not missing_files(archive, target):
        return target
    zip_path = cache_root / f"{archive.folder}.zip"
    if zip_path.is_file() and sha256_file(zip_path) != sha256:
        zip_path.unlink()  # A stale or corrupt archive is never extracted.
    if not zip_path.is_file():
        hint = (f"Pass data_dir= (a directory holding {', '.join(archive.required)}) or set {archive.env_var}, or "
                f"download {url} yourself and unzip it into {cache_root} (creating {target}).")
        if not download:
            raise DataNotFoundError(f"{archive.title} not found: it is not in the cache ({target}) and "
                                    f"download=False. {hint}")
        try:
            data = fetch_verified(url, sha256, fetch=fetch, progress=progress,
                                  size=archive.size if sha256 == archive.sha256 else None)
        except OSError as exc:  # URLError, timeouts, DNS failures: all OSError.
            raise DataNotFoundError(f"{archive.title} not found: downloading {url} failed ({exc}). {hint}") from exc
        atomic_write_bytes(zip_path, data)
    extract_zip(zip_path, target, member_dir=archive.folder)
    missing = missing_files(archive, target)
    if missing:
        raise DataError(f"{zip_path} does not contain {archive.folder}/{f', {archive.folder}/'.join(missing)}")
    return target


__all__ = ["Archive", "locate", "missing_files", "require_files"]
