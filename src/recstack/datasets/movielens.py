"""MovieLens 100K, parsed into pandas tables with the TFDS ``movielens/100k-*`` schema.

The data is never bundled (its licence forbids redistribution): it is read
from a directory the caller names, or downloaded from GroupLens into a local
cache after its SHA-256 is checked. Parsing is vectorised (``pandas.read_csv``
plus array lookups); the only Python-level loop runs once per *movie* to build
its genre list.
"""

from __future__ import annotations

import csv
import io
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd

from recstack.core.io import atomic_write_bytes, sha256_file
from recstack.datasets.download import Fetch, extract_zip, fetch_verified, resolve_cache_dir
from recstack.core.errors import DataError, DataNotFoundError

ML_100K_URL = "https://files.grouplens.org/datasets/movielens/ml-100k.zip"
ML_100K_SHA256 = "50d2a982c66986937beb9ffb3aa76efe955bf3d5c6b761f4e3a7cd717c6a3229"
ML_100K_SIZE = 4924029
DATA_ENV_VAR = "RECSTACK_DATA_DIR"
REQUIRED_FILES = ("u.data", "u.item", "u.user")
_CACHE_SUBDIR = "ml-100k"
_ZIP_NAME = "ml-100k.zip"

#: TFDS ``movie_genres`` ClassLabel names; a genre's id is its index here (Drama = 7).
GENRE_LABELS: tuple[str, ...] = (
    "Action", "Adventure", "Animation", "Children", "Comedy", "Crime", "Documentary",
    "Drama", "Fantasy", "Film-Noir", "Horror", "IMAX", "Musical", "Mystery", "Romance",
    "Sci-Fi", "Thriller", "War", "Western", "(no genres listed)", "Unknown",
)
# u.item's 19 genre flags, in file order, spelled as TFDS labels them.
_ITEM_GENRES = (
    "Unknown", "Action", "Adventure", "Animation", "Children", "Comedy", "Crime",
    "Documentary", "Drama", "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery",
    "Romance", "Sci-Fi", "Thriller", "War", "Western",
)
_FLAG_GENRE_IDS = np.array([GENRE_LABELS.index(g) for g in _ITEM_GENRES], dtype=np.int64)

#: TFDS ``user_occupation_label`` ClassLabel names; the label id is the index here (doctor = 4).
OCCUPATION_LABELS: tuple[str, ...] = (
    "academic/educator", "artist", "clerical/admin", "customer service",
    "doctor/health care", "entertainment", "executive/managerial", "farmer", "homemaker",
    "lawyer", "librarian", "other/not specified", "programmer", "retired",
    "sales/marketing", "scientist", "self-employed", "student", "technician/engineer",
    "tradesman/craftsman", "unemployed", "writer",
)
#: u.user occupation text -> TFDS label (the 100K names merged into the 1M label set).
OCCUPATION_TEXT_TO_LABEL: dict[str, str] = {
    "administrator": "clerical/admin", "artist": "artist", "doctor": "doctor/health care",
    "educator": "academic/educator", "engineer": "technician/engineer",
    "entertainment": "entertainment", "executive": "executive/managerial",
    "healthcare": "doctor/health care", "homemaker": "homemaker", "lawyer": "lawyer",
    "librarian": "librarian", "marketing": "sales/marketing", "none": "other/not specified",
    "other": "other/not specified", "programmer": "programmer", "retired": "retired",
    "salesman": "sales/marketing", "scientist": "scientist", "student": "student",
    "technician": "technician/engineer", "writer": "writer",
}
#: TFDS ``bucketized_user_age``: the largest threshold <= age, or 1 below the first.
AGE_THRESHOLDS: tuple[int, ...] = (18, 25, 35, 45, 50, 56)

_DATA_COLUMNS = ["user_id", "movie_id", "rating", "timestamp"]
_ITEM_COLUMNS = ["movie_id", "movie_title", "release_date", "video_release_date", "imdb_url",
                 *(f"genre_{i}" for i in range(len(_ITEM_GENRES)))]
_USER_COLUMNS = ["user_id", "age", "gender", "occupation", "zip_code"]


@dataclass(frozen=True, eq=False)  # eq=False: DataFrames have no single truth value.
class MovieLens100K:
    """MovieLens 100K in the TFDS ``movielens/100k-ratings`` / ``100k-movies`` schema.

    ``ratings`` has one row per line of u.data, in file order (100000 rows):
    ``user_id``, ``movie_id``, ``movie_title``, ``user_occupation_text``,
    ``user_zip_code`` (str); ``movie_genres`` (list of int, ids into
    :data:`GENRE_LABELS`); ``timestamp`` (int64); ``user_rating``,
    ``raw_user_age``, ``bucketized_user_age`` (float32); ``user_gender`` (bool,
    True for "M"); ``user_occupation_label`` (int64, id into
    :data:`OCCUPATION_LABELS`).

    ``movies`` has one row per line of u.item, in file order (1682 rows):
    ``movie_id``, ``movie_title`` (str), ``movie_genres`` (list of int).

    Rows of the same movie share one genre list object: treat them as read-only.
    ``source`` is the directory the files were read from.
    """

    ratings: pd.DataFrame
    movies: pd.DataFrame
    source: Path


def load_movielens_100k(
    data_dir: str | os.PathLike[str] | None = None,
    *,
    cache_dir: str | os.PathLike[str] | None = None,
    download: bool = True,
    progress: bool = True,
    url: str = ML_100K_URL,
    sha256: str = ML_100K_SHA256,
    fetch: Fetch | None = None,
) -> MovieLens100K:
    """Load MovieLens 100K, downloading it into the cache if it is nowhere on disk.

    Sources, first match wins: ``data_dir``; ``$RECSTACK_DATA_DIR``; the cache
    ``(cache_dir or $RECSTACK_CACHE_DIR or ~/.cache/recstack)/ml-100k``; a
    download of ``url`` (when ``download``), checked against ``sha256`` before
    it is written or extracted. ``url``, ``sha256`` and ``fetch`` (``url ->
    bytes``) exist for mirrors and tests. ``progress`` shows a download bar.

    Raises :class:`DataNotFoundError` when a named directory lacks a file or
    the data can be neither found nor downloaded, :class:`ChecksumError` when
    the download's hash is wrong, and :class:`DataError` on malformed files.
    See :class:`MovieLens100K` for the columns.
    """
    source = _locate(
        data_dir, cache_dir=cache_dir, download=download,
        fetch_data=lambda: fetch_verified(
            url, sha256, fetch=fetch, progress=progress,
            # The size is only known for the official archive.
            size=ML_100K_SIZE if sha256.lower() == ML_100K_SHA256 else None),
        url=url, sha256=sha256,
    )
    return read_movielens_100k(source)


def read_movielens_100k(directory: str | os.PathLike[str]) -> MovieLens100K:
    """Parse u.data, u.item and u.user in ``directory`` (no lookup, no download)."""
    directory = _require_files(Path(directory).expanduser(), "data_dir")
    movies, genres = _parse_items(directory / "u.item")
    users = _parse_users(directory / "u.user")
    ratings = _parse_ratings(directory / "u.data", movies, genres, users)
    movies_out = pd.DataFrame({
        "movie_id": movies["movie_id"],
        "movie_title": movies["movie_title"],
        "movie_genres": genres,
    })
    return MovieLens100K(ratings=ratings, movies=movies_out, source=directory)


# --- finding the files -------------------------------------------------------------------


def _missing_files(directory: Path) -> list[str]:
    return [name for name in REQUIRED_FILES if not (directory / name).is_file()]


def _require_files(directory: Path, origin: str) -> Path:
    """Return ``directory`` if it holds every required file, else raise naming what is missing."""
    hint = f"It must be a directory holding {', '.join(REQUIRED_FILES)} (the unzipped ml-100k)."
    if not directory.is_dir():
        raise DataNotFoundError(f"MovieLens 100K {origin} {directory} does not exist. {hint}")
    missing = _missing_files(directory)
    if missing:
        raise DataNotFoundError(
            f"MovieLens 100K {origin} {directory} is missing {', '.join(missing)}. {hint}")
    return directory


def _locate(
    data_dir: str | os.PathLike[str] | None,
    *,
    cache_dir: str | os.PathLike[str] | None,
    download: bool,
    fetch_data: Callable[[], bytes],
    url: str,
    sha256: str,
) -> Path:
    """The directory to read, fetching and extracting into the cache if need be."""
    if data_dir is not None:
        return _require_files(Path(data_dir).expanduser(), "data_dir")
    from_env = os.environ.get(DATA_ENV_VAR)
    if from_env:
        # A set variable is an explicit choice: a typo in it should fail, not trigger a download.
        return _require_files(Path(from_env).expanduser(), f"${DATA_ENV_VAR}")

    cache_root = resolve_cache_dir(cache_dir)
    target = cache_root / _CACHE_SUBDIR
    if not _missing_files(target):
        return target
    zip_path = cache_root / _ZIP_NAME
    if not _verified_or_removed(zip_path, sha256):
        if not download:
            raise DataNotFoundError(_not_found(target, url, f"it is not in the cache ({target}) "
                                               "and download=False"))
        try:
            data = fetch_data()
        except OSError as exc:  # URLError, timeouts, DNS failures: all OSError.
            raise DataNotFoundError(_not_found(target, url, f"downloading {url} failed ({exc})")) \
                from exc
        atomic_write_bytes(zip_path, data)
    extract_zip(zip_path, target, member_dir=_CACHE_SUBDIR)
    missing = _missing_files(target)
    if missing:
        raise DataError(f"{zip_path} does not contain ml-100k/{', ml-100k/'.join(missing)}")
    return target


def _verified_or_removed(path: Path, sha256: str) -> bool:
    """True if ``path`` exists with the right hash; a file with the wrong hash is deleted."""
    if not path.is_file():
        return False
    if sha256_file(path) == sha256.lower():
        return True
    path.unlink()  # A stale or corrupt archive must never be extracted.
    return False


def _not_found(target: Path, url: str, reason: str) -> str:
    return (f"MovieLens 100K not found: {reason}. Pass data_dir= (a directory holding "
            f"{', '.join(REQUIRED_FILES)}) or set {DATA_ENV_VAR}, or download {url} manually "
            f"and unzip it into {target.parent} (creating {target}).")


# --- parsing -------------------------------------------------------------------------------


def _read_table(path: Path, sep: str, names: list[str]) -> pd.DataFrame:
    """Read a headerless ``sep``-separated latin-1 file as all-str columns ``names``.

    Field counts are checked per line first, so the error names the line and
    read_csv's rows line up 1:1 with file lines.
    """
    text = path.read_bytes().decode("latin-1").replace("\r\n", "\n").rstrip("\n")
    if not text:
        raise DataError(f"{path} is empty")
    fields = pd.Series(text.split("\n")).str.count(re.escape(sep)).to_numpy() + 1
    sep_name = "tab" if sep == "\t" else repr(sep)
    _fail_first(fields != len(names), path,
                lambda i: f"expected {len(names)} {sep_name}-separated fields, got {fields[i]}")
    return pd.read_csv(
        io.StringIO(text), sep=sep, header=None, names=names, dtype=str, engine="c",
        na_filter=False, quoting=csv.QUOTE_NONE, lineterminator="\n", skip_blank_lines=False,
    )


def _fail_first(bad: np.ndarray | pd.Series, path: Path, describe: Callable[[int], str]) -> None:
    """Raise DataError for the first True in ``bad`` (row i is file line i + 1)."""
    rows = np.flatnonzero(np.asarray(bad, dtype=bool))
    if rows.size:
        i = int(rows[0])
        raise DataError(f"{path}, line {i + 1}: {describe(i)}")


def _numeric(table: pd.DataFrame, column: str, path: Path, *, integer: bool) -> pd.Series:
    """``table[column]`` as numbers; the first non-numeric (or non-integer) cell raises."""
    values = pd.to_numeric(table[column], errors="coerce")  # junk -> NaN, checked below
    as_float = values.to_numpy(dtype=np.float64, na_value=np.nan)
    bad = ~np.isfinite(as_float)
    if integer:
        bad |= np.isfinite(as_float) & (as_float != np.floor(as_float))
    kind = "an integer" if integer else "a number"
    _fail_first(bad, path, lambda i: f"{column} {table[column].iat[i]!r} is not {kind}")
    return values


def _check_ids(table: pd.DataFrame, path: Path, what: str) -> None:
    """Empty or duplicate ids raise (a duplicate would silently repeat ratings in the join)."""
    ids = table[f"{what}_id"]
    _fail_first(ids.eq("").to_numpy(), path, lambda i: f"empty {what} id")
    _fail_first(ids.duplicated().to_numpy(), path, lambda i: f"duplicate {what} id {ids.iat[i]!r}")


def _parse_items(path: Path) -> tuple[pd.DataFrame, pd.Series]:
    """u.item -> (table, per-movie genre id lists as an object Series)."""
    items = _read_table(path, "|", _ITEM_COLUMNS)
    _check_ids(items, path, "movie")
    flags = items[_ITEM_COLUMNS[5:]]
    _fail_first(~flags.isin(["0", "1"]).all(axis=1).to_numpy(), path,
                lambda i: f"genre flags must be 0 or 1, got {'|'.join(flags.iloc[i])}")
    rows, cols = np.nonzero(flags.to_numpy() == "1")  # row-major: genres stay in flag order
    counts = np.bincount(rows, minlength=len(items))
    per_movie = np.split(_FLAG_GENRE_IDS[cols], np.cumsum(counts)[:-1])
    # One list per movie (1682), not per rating; pd.Series keeps them as list objects.
    genres = pd.Series([ids.tolist() for ids in per_movie], dtype=object)
    return items, genres


def _parse_users(path: Path) -> pd.DataFrame:
    """u.user -> table with validated ``age`` (float), ``gender`` and ``occupation``."""
    users = _read_table(path, "|", _USER_COLUMNS)
    _check_ids(users, path, "user")
    users["age"] = _numeric(users, "age", path, integer=False).astype(np.float64)
    _fail_first(~users["gender"].isin(["M", "F"]).to_numpy(), path,
                lambda i: f"gender {users['gender'].iat[i]!r} is not 'M' or 'F'")
    _fail_first(~users["occupation"].isin(list(OCCUPATION_TEXT_TO_LABEL)).to_numpy(), path,
                lambda i: f"unknown occupation {users['occupation'].iat[i]!r}; known: "
                          f"{', '.join(OCCUPATION_TEXT_TO_LABEL)}")
    return users


def _lookup(ids: pd.Series, index: pd.Index, path: Path, what: str, source: str) -> np.ndarray:
    """Row positions of ``ids`` in ``index``; an id that is absent raises naming its line."""
    positions = index.get_indexer(ids)
    _fail_first(positions < 0, path,
                lambda i: f"rating refers to unknown {what} id {ids.iat[i]!r} (not in {source})")
    return positions


def _take(values: pd.Series, positions: np.ndarray) -> pd.Series:
    """``values`` at ``positions`` with a fresh index (Series.take keeps the str dtype)."""
    return values.take(positions).reset_index(drop=True)


def _bucketize_age(age: np.ndarray) -> np.ndarray:
    thresholds = np.asarray(AGE_THRESHOLDS)
    idx = np.searchsorted(thresholds, age, side="right") - 1  # largest threshold <= age
    return np.where(idx >= 0, thresholds[np.maximum(idx, 0)], 1).astype(np.float32)


def _parse_ratings(path: Path, movies: pd.DataFrame, genres: pd.Series,
                   users: pd.DataFrame) -> pd.DataFrame:
    """u.data joined with its movie and user, in file order (see :class:`MovieLens100K`)."""
    data = _read_table(path, "\t", _DATA_COLUMNS)
    rating = _numeric(data, "rating", path, integer=False)
    timestamp = _numeric(data, "timestamp", path, integer=True)
    m = _lookup(data["movie_id"], pd.Index(movies["movie_id"]), path, "movie", "u.item")
    u = _lookup(data["user_id"], pd.Index(users["user_id"]), path, "user", "u.user")

    age = users["age"].to_numpy()[u]
    label_names = users["occupation"].map(OCCUPATION_TEXT_TO_LABEL)
    label_ids = label_names.map({name: i for i, name in enumerate(OCCUPATION_LABELS)})
    return pd.DataFrame({
        "user_id": data["user_id"],
        "movie_id": data["movie_id"],
        "movie_title": _take(movies["movie_title"], m),
        "movie_genres": _take(genres, m),
        "timestamp": timestamp.to_numpy(dtype=np.int64),
        "user_rating": rating.to_numpy(dtype=np.float32),
        "raw_user_age": age.astype(np.float32),
        "bucketized_user_age": _bucketize_age(age),
        "user_gender": users["gender"].eq("M").to_numpy()[u],
        "user_occupation_label": label_ids.to_numpy(dtype=np.int64)[u],
        "user_occupation_text": _take(users["occupation"], u),
        "user_zip_code": _take(users["zip_code"], u),
    })
