"""MovieLens 1M and 20M: the standard next-item benchmarks (SASRec, BERT4Rec, HSTU tables).

Like :mod:`recstack.datasets.movielens` (100K) the data is never bundled: it is read from a
directory the caller names, then ``$RECSTACK_ML_1M_DIR`` / ``$RECSTACK_ML_20M_DIR``, then the
cache, then downloaded from GroupLens with its SHA-256 checked before anything is written.
The hashes and sizes are those pinned by TensorFlow Datasets (its
``url_checksums/movielens.txt``, which pins the 100K archive with the hash this package
already uses).

Tables are kept numeric and lean, since ML-20M has 20,000,263 ratings: ``ratings`` has
``user_id``, ``movie_id`` (int64, the file's ids), ``user_rating`` (float32) and
``timestamp`` (int64, seconds), one row per line in file order; titles and genres live in
``movies`` (``movie_id``, ``movie_title``, ``movie_genres`` = list of ids into
:data:`~recstack.datasets.movielens.GENRE_LABELS`); ML-1M's ``users`` table has
``user_id``, ``user_gender`` (True for "M"), ``bucketized_user_age`` (the file's age code:
1, 18, 25, 35, 45, 50, 56), ``user_occupation_label`` (id into
:data:`~recstack.datasets.movielens.OCCUPATION_LABELS`), ``user_occupation_text`` and
``user_zip_code``. Join by id where needed. Ratings are parsed by pandas' C reader with
numeric dtypes; only when that fails is the file re-read as text to name the bad line.
"""

from __future__ import annotations

import csv
import io
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from recstack.core.errors import DataError
from recstack.datasets.archives import Archive, locate, require_files
from recstack.datasets.download import Fetch
from recstack.datasets.movielens import GENRE_LABELS, OCCUPATION_LABELS, _fail_first, _numeric

ML_1M = Archive(
    title="MovieLens 1M", url="https://files.grouplens.org/datasets/movielens/ml-1m.zip",
    sha256="a6898adb50b9ca05aa231689da44c217cb524e7ebd39d264c56e2832f2c54e20", size=5917549,
    folder="ml-1m", required=("ratings.dat", "movies.dat", "users.dat"), env_var="RECSTACK_ML_1M_DIR")
ML_20M = Archive(
    title="MovieLens 20M", url="https://files.grouplens.org/datasets/movielens/ml-20m.zip",
    sha256="96f243c338a8665f6bcc89c53edf6ee39162a846940de6b7c8c48aeada765ff3", size=198702078,
    folder="ml-20m", required=("ratings.csv", "movies.csv"), env_var="RECSTACK_ML_20M_DIR")

#: ML-1M occupation codes (its README) -> the TFDS label; both student codes map to "student".
ML_1M_OCCUPATIONS: tuple[str, ...] = (
    "other", "academic/educator", "artist", "clerical/admin", "college/grad student", "customer service",
    "doctor/health care", "executive/managerial", "farmer", "homemaker", "K-12 student", "lawyer",
    "programmer", "retired", "sales/marketing", "scientist", "self-employed", "technician/engineer",
    "tradesman/craftsman", "unemployed", "writer",
)
_OCCUPATION_LABEL_IDS = np.array([
    OCCUPATION_LABELS.index({"other": "other/not specified", "college/grad student": "student",
                             "K-12 student": "student"}.get(text, text)) for text in ML_1M_OCCUPATIONS])
_AGE_CODES = (1, 18, 25, 35, 45, 50, 56)
# ML-1M spells "Children's"; the TFDS label (and ML-20M) is "Children".
_GENRE_IDS = {**{name: i for i, name in enumerate(GENRE_LABELS)}, "Children's": GENRE_LABELS.index("Children")}
_FIELD_SEP = "\x1f"  # ML-1M's "::" becomes this one-byte separator for pandas' C reader


@dataclass(frozen=True, eq=False)  # eq=False: DataFrames have no single truth value.
class MovieLensTables:
    """One MovieLens release as tables (see the module docstring for the columns).

    ``users`` is None for ML-20M (it has no user table); ``source`` is the directory read.
    """

    ratings: pd.DataFrame
    movies: pd.DataFrame
    users: pd.DataFrame | None
    source: Path


def load_movielens_1m(data_dir: str | os.PathLike[str] | None = None, *,
                      cache_dir: str | os.PathLike[str] | None = None, download: bool = True,
                      progress: bool = True, url: str | None = None, sha256: str | None = None,
                      fetch: Fetch | None = None) -> MovieLensTables:
    """Load MovieLens 1M (1,000,209 ratings, 6,040 users, 3,706 rated movies).

    Sources and errors as :func:`recstack.datasets.archives.locate` (environment variable
    ``RECSTACK_ML_1M_DIR``); ``url``, ``sha256`` and ``fetch`` are for mirrors and tests.
    """
    return read_movielens_1m(locate(ML_1M, data_dir, cache_dir=cache_dir, download=download, progress=progress,
                                    url=url, sha256=sha256, fetch=fetch))


def load_movielens_20m(data_dir: str | os.PathLike[str] | None = None, *,
                       cache_dir: str | os.PathLike[str] | None = None, download: bool = True,
                       progress: bool = True, url: str | None = None, sha256: str | None = None,
                       fetch: Fetch | None = None) -> MovieLensTables:
    """Load MovieLens 20M (20,000,263 ratings, 138,493 users, 26,744 rated movies; a 190 MiB
    download). Sources as :func:`load_movielens_1m`, with ``RECSTACK_ML_20M_DIR``."""
    return read_movielens_20m(locate(ML_20M, data_dir, cache_dir=cache_dir, download=download, progress=progress,
                                     url=url, sha256=sha256, fetch=fetch))


def read_movielens_1m(directory: str | os.PathLike[str]) -> MovieLensTables:
    """Parse ratings.dat, movies.dat and users.dat ('::'-separated, latin-1) in ``directory``."""
    directory = require_files(ML_1M, Path(directory).expanduser(), "data_dir")
    movies = _movies(_read_dat(directory / "movies.dat", 3), directory / "movies.dat", first_line=1)
    users = _users_1m(directory / "users.dat")
    path = directory / "ratings.dat"
    ratings = _ratings(path, io.StringIO(_dat_text(path)), sep=_FIELD_SEP, header=False)
    _check_refs(ratings, "movie_id", movies, path, "movies.dat", first_line=1)
    _check_refs(ratings, "user_id", users, path, "users.dat", first_line=1)
    return MovieLensTables(ratings, movies, users, directory)


def read_movielens_20m(directory: str | os.PathLike[str]) -> MovieLensTables:
    """Parse ratings.csv and movies.csv (comma-separated with a header, UTF-8) in ``directory``."""
    directory = require_files(ML_20M, Path(directory).expanduser(), "data_dir")
    path = directory / "movies.csv"
    try:
        table = pd.read_csv(path, dtype=str, keep_default_na=False, encoding="utf-8")
    except (ValueError, pd.errors.ParserError) as exc:  # UnicodeDecodeError is a ValueError
        raise DataError(f"{path}: not a valid MovieLens movies.csv ({exc})") from exc
    _check_header(path, list(table.columns), ["movieId", "title", "genres"])
    movies = _movies(table.set_axis(["movie_id", "movie_title", "genres"], axis=1), path, first_line=2)
    path = directory / "ratings.csv"
    ratings = _ratings(path, path, sep=",", header=True)
    _check_refs(ratings, "movie_id", movies, path, "movies.csv", first_line=2)
    return MovieLensTables(ratings, movies, None, directory)


# --- parsing -----------------------------------------------------------------------------------


def _fail_from(bad: np.ndarray, path: Path, describe, first_line: int) -> None:
    """:func:`_fail_first` for a table whose row 0 is file line ``first_line``."""
    pad = np.zeros(first_line - 1, dtype=bool)
    _fail_first(np.r_[pad, np.asarray(bad, dtype=bool)], path, lambda i: describe(i - (first_line - 1)))


def _as_numbers(table: pd.DataFrame, column: str, path: Path, first_line: int, *, integer: bool) -> np.ndarray:
    """A str column as numbers, naming the file line of the first bad cell."""
    shifted = pd.concat([pd.DataFrame({column: ["0"] * (first_line - 1)}), table[[column]]], ignore_index=True)
    values = _numeric(shifted, column, path, integer=integer).to_numpy()[first_line - 1:]
    return values.astype(np.int64) if integer else values.astype(np.float64)


def _check_header(path: Path, found: list[str], expected: list[str]) -> None:
    if found != expected:
        raise DataError(f"{path}: expected the header {','.join(expected)}, got {','.join(map(str, found))}")


def _dat_text(path: Path) -> str:
    """An ML-1M .dat file as text with "::" replaced by a one-byte separator."""
    text = path.read_bytes().decode("latin-1").replace("\r\n", "\n").rstrip("\n")
    if not text:
        raise DataError(f"{path} is empty")
    if _FIELD_SEP in text:
        line = text[:text.index(_FIELD_SEP)].count("\n") + 1
        raise DataError(f"{path}, line {line}: unexpected control character \\x1f")
    return text.replace("::", _FIELD_SEP)


def _read_dat(path: Path, num_fields: int) -> pd.DataFrame:
    """An ML-1M .dat file as str columns 0..num_fields-1, field counts checked per line."""
    text = _dat_text(path)
    fields = pd.Series(text.split("\n")).str.count(_FIELD_SEP).to_numpy() + 1
    _fail_first(fields != num_fields, path,
                lambda i: f"expected {num_fields} '::'-separated fields, got {fields[i]}")
    return pd.read_csv(io.StringIO(text), sep=_FIELD_SEP, header=None, dtype=str, engine="c", na_filter=False,
                       quoting=csv.QUOTE_NONE, lineterminator="\n", skip_blank_lines=False)


_RATING_NAMES = ["user_id", "movie_id", "user_rating", "timestamp"]
_RATING_DTYPES = {"user_id": np.int64, "movie_id": np.int64, "user_rating": np.float64, "timestamp": np.int64}


def _ratings(path: Path, source: Path | io.StringIO, *, sep: str, header: bool) -> pd.DataFrame:
    """user_id, movie_id, user_rating (float32), timestamp: a fast numeric read, else a diagnosis."""
    first_line = 2 if header else 1
    try:
        table = pd.read_csv(source, sep=sep, header=0 if header else None, names=_RATING_NAMES,
                            dtype=_RATING_DTYPES, engine="c", quoting=csv.QUOTE_NONE, na_filter=False)
    except (ValueError, pd.errors.ParserError) as exc:
        _diagnose_ratings(path, sep, first_line)
        raise DataError(f"{path}: not a valid ratings file ({exc})") from exc
    if header:
        with path.open(encoding="utf-8", errors="replace") as f:
            _check_header(path, f.readline().rstrip("\r\n").split(","), ["userId", "movieId", "rating", "timestamp"])
    if len(table) == 0:
        raise DataError(f"{path} has no ratings")
    rating = table["user_rating"].to_numpy()
    _fail_from(~np.isfinite(rating), path, lambda i: f"rating {rating[i]} is not a finite number", first_line)
    table["user_rating"] = rating.astype(np.float32)
    return table


def _diagnose_ratings(path: Path, sep: str, first_line: int) -> None:
    """Re-read a ratings file that failed the fast read as text; raise naming its first bad line."""
    text = _dat_text(path) if sep == _FIELD_SEP else path.read_bytes().decode("utf-8", "replace").replace("\r\n", "\n")
    lines = pd.Series(text.rstrip("\n").split("\n")[first_line - 1:])
    fields = lines.str.count(sep).to_numpy() + 1
    _fail_from(fields != 4, path, lambda i: f"expected 4 fields, got {fields[i]}", first_line)
    table = lines.str.split(sep, expand=True).set_axis(_RATING_NAMES, axis=1)
    for column in _RATING_NAMES:
        _as_numbers(table, column, path, first_line, integer=column != "user_rating")


def _genre_lists(genres: pd.Series, path: Path, first_line: int) -> pd.Series:
    """'A|B|C' strings -> lists of ids into GENRE_LABELS (one list per movie)."""
    parts = genres.str.split("|").explode()
    ids = parts.map(_GENRE_IDS)
    bad = ids.isna().groupby(level=0).any().to_numpy()
    _fail_from(bad, path, lambda i: f"unknown genre in {genres.iat[i]!r}; known: {', '.join(_GENRE_IDS)}",
               first_line)
    counts = parts.groupby(level=0).size().to_numpy()
    per_movie = np.split(ids.to_numpy(dtype=np.int64), np.cumsum(counts)[:-1])
    # One list per movie (27K at most), not per rating.
    return pd.Series([p.tolist() for p in per_movie], dtype=object)


def _movies(table: pd.DataFrame, path: Path, first_line: int) -> pd.DataFrame:
    """(movie_id, movie_title, genres) str table -> movie_id (int64), movie_title, movie_genres."""
    table = table.set_axis(["movie_id", "movie_title", "genres"], axis=1).reset_index(drop=True)
    ids = _as_numbers(table, "movie_id", path, first_line, integer=True)
    _fail_from(pd.Series(ids).duplicated().to_numpy(), path, lambda i: f"duplicate movie id {ids[i]}", first_line)
    return pd.DataFrame({"movie_id": ids, "movie_title": table["movie_title"],
                         "movie_genres": _genre_lists(table["genres"], path, first_line)})


def _users_1m(path: Path) -> pd.DataFrame:
    """users.dat -> user_id, user_gender, bucketized_user_age, occupation label/text, zip code."""
    table = _read_dat(path, 5).set_axis(["user_id", "gender", "age", "occupation", "zip"], axis=1)
    ids = _as_numbers(table, "user_id", path, 1, integer=True)
    _fail_from(pd.Series(ids).duplicated().to_numpy(), path, lambda i: f"duplicate user id {ids[i]}", 1)
    _fail_from(~table["gender"].isin(["M", "F"]).to_numpy(), path,
               lambda i: f"gender {table['gender'].iat[i]!r} is not 'M' or 'F'", 1)
    age = _as_numbers(table, "age", path, 1, integer=True)
    _fail_from(~np.isin(age, _AGE_CODES), path, lambda i: f"age code {age[i]} is not one of {_AGE_CODES}", 1)
    occupation = _as_numbers(table, "occupation", path, 1, integer=True)
    _fail_from((occupation < 0) | (occupation >= len(ML_1M_OCCUPATIONS)), path,
               lambda i: f"occupation code {occupation[i]} is not in 0..{len(ML_1M_OCCUPATIONS) - 1}", 1)
    return pd.DataFrame({
        "user_id": ids,
        "user_gender": table["gender"].eq("M").to_numpy(),
        "bucketized_user_age": age.astype(np.float32),
        "user_occupation_label": _OCCUPATION_LABEL_IDS[occupation],
        "user_occupation_text": pd.Series(np.asarray(ML_1M_OCCUPATIONS, dtype=object)[occupation]),
        "user_zip_code": table["zip"],
    })


def _check_refs(ratings: pd.DataFrame, column: str, table: pd.DataFrame, path: Path, source: str,
                first_line: int) -> None:
    """Every rating's id must be a row of ``table`` (a dangling id would break joins later)."""
    values = ratings[column].to_numpy()
    _fail_from(~np.isin(values, table[column].to_numpy()), path,
               lambda i: f"rating refers to unknown {column.split('_')[0]} id {values[i]} (not in {source})",
               first_line)


__all__ = ["ML_1M", "ML_1M_OCCUPATIONS", "ML_20M", "MovieLensTables", "load_movielens_1m", "load_movielens_20m",
           "read_movielens_1m", "read_movielens_20m"]
