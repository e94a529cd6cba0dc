"""Reading interaction and feature tables, and checking their columns.

CSV/TSV or Parquet files, or the built-in ``movielens-100k`` (its ratings, movies and users
tables). Column checks raise a :class:`~recstack.core.errors.DataError` that names the config
key, the column, how many values are wrong and where (``row 3 (line 5)``):

* a missing column: with the closest existing column;
* missing ids; missing, non-numeric or infinite ratings, weights or timestamps (timestamps may
  be date strings, converted to Unix seconds); infinite numeric features.

:func:`describe_table` is ``recstack data info``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ..core.errors import DataError, DataNotFoundError, suggest
from .config import BUILTIN_DATASETS, separator_problem

Notify = Callable[[str], None]


# -- reading -------------------------------------------------------------------------------------
@dataclass
class Table:
    """A table read from disk, with the files it came from (for the fingerprint)."""

    frame: pd.DataFrame
    name: str
    files: list[Path]
    csv: bool = False

    def where(self, row: int) -> str:
        """'row 3 (line 5)' for CSV (header = line 1), 'row 3' otherwise (0-based data rows)."""
        return f"row {row} (line {row + 2})" if self.csv else f"row {row}"


def read_table(path: str | Path, separator: str = ",") -> Table:
    """Read a CSV/TSV or Parquet file; a file that is not what its suffix says is a DataError."""
    path = Path(path)
    if not path.exists():
        raise DataNotFoundError(f"{path} does not exist; check the path in the config (relative paths are "
                                "taken from the config file's folder).")
    if path.is_dir():
        raise DataError(f"{path} is a folder; give a CSV or Parquet file (or movielens-100k).")
    suffix = path.suffix.lower()
    if suffix in (".parquet", ".pq"):
        try:
            frame = pd.read_parquet(path)
        except ImportError as exc:
            raise DataError(f"reading {path.name} needs a Parquet engine: pip install pyarrow ({exc})") from None
        except Exception as exc:  # pyarrow raises ArrowInvalid, OSError, ArrowNotImplementedError, ...
            raise DataError(f"{path} is not a readable Parquet file ({_first_line(exc)}); check that it was "
                            "written as Parquet, or give a .csv file.") from None
        return Table(frame, path.name, [path])
    if suffix in (".csv", ".tsv", ".txt", ".dat"):
        sep = "\t" if suffix == ".tsv" else separator
        problem = separator_problem(sep)
        if problem:
            raise DataError(f"{path.name}: {problem}.")
        try:
            frame = pd.read_csv(path, sep=sep, low_memory=False)
        except pd.errors.EmptyDataError:
            raise DataError(f"{path.name} is empty (no header, no rows).") from None
        except (pd.errors.ParserError, UnicodeDecodeError, ValueError) as exc:
            raise DataError(f"{path.name} is not a readable CSV file: {_first_line(exc)}") from None
        return Table(frame, path.name, [path], csv=True)
    raise DataError(f"{path.name}: unknown table format {suffix!r}; use .csv, .tsv or .parquet.")


def _first_line(exc: BaseException) -> str:
    """An exception's message on one line (parsers' messages may span several)."""
    return " ".join(str(exc).split())[:300] or type(exc).__name__


def read_builtin(name: str, part: str) -> Table:
    """``movielens-100k`` tables: "interactions" (ratings, TFDS columns), "items" (movies), "users";
    ``movielens-1m`` / ``movielens-20m``: ratings (``user_id``, ``movie_id``, ``user_rating``,
    ``timestamp``), movies (``movie_id``, ``movie_title``) and (1M only) users."""
    if name != "movielens-100k":
        return _read_large_movielens(name, part)
    from ..datasets import load_movielens_100k

    data = load_movielens_100k(progress=False)
    files = [data.source / f for f in ("u.data", "u.item", "u.user")]
    if part == "items":
        return Table(data.movies.drop(columns=["movie_genres"]), f"{name} movies", files)
    if part == "users":
        cols = ["user_id", "raw_user_age", "bucketized_user_age", "user_gender", "user_occupation_text",
                "user_zip_code"]
        users = data.ratings[cols].drop_duplicates("user_id").reset_index(drop=True)
        return Table(users, f"{name} users", files)
    return Table(data.ratings.drop(columns=["movie_genres"]), f"{name} ratings", files)


def _read_large_movielens(name: str, part: str) -> Table:
    from ..datasets.movielens_large import load_movielens_1m, load_movielens_20m

    data = (load_movielens_1m if name == "movielens-1m" else load_movielens_20m)(progress=False)
    names = ("ratings.dat", "movies.dat", "users.dat") if name == "movielens-1m" else ("ratings.csv", "movies.csv")
    files = [data.source / f for f in names]
    if part == "items":
        return Table(data.movies.drop(columns=["movie_genres"]), f"{name} movies", files)
    if part == "users":
        if data.users is None:
            raise DataError(f"{name} has no users table; remove data.users from the config.")
        return Table(data.users, f"{name} users", files)
    return Table(data.ratings, f"{name} ratings", files)


def read_source(source: str, separator: str, part: str) -> Table:
    """A file path, or ``part`` ("interactions", "items", "users") of a built-in dataset."""
    return read_builtin(source, part) if source in BUILTIN_DATASETS else read_table(source, separator)


def require_columns(table: Table, wanted: dict[str, str]) -> None:
    """``wanted``: config key -> column name. Missing ones raise, with the closest existing column."""
    available = [str(c) for c in table.frame.columns]
    problems = [f"column {col!r} ({key}) not found{suggest(col, available)}"
                for key, col in wanted.items() if col not in table.frame.columns]
    if problems:
        raise DataError(f"{table.name}: " + "; ".join(problems) + f". Columns in the file: {', '.join(available)}.")


def id_strings(table: Table, column: str, key: str) -> pd.Series:
    """An id column as strings; missing ids raise. Whole floats print as ints ("7", not "7.0")."""
    values = table.frame[column]
    missing = values.isna().to_numpy()
    if missing.any():
        rows = np.flatnonzero(missing)
        raise DataError(f"{table.name}: column {column!r} ({key}) has {len(rows)} missing id(s), first at "
                        f"{', '.join(table.where(int(r)) for r in rows[:3])}; drop or fill those rows.")
    if pd.api.types.is_float_dtype(values) and np.all(np.mod(values.to_numpy(), 1) == 0):
        values = values.astype(np.int64)
    return values.astype(str).reset_index(drop=True)


def numeric_column(table: Table, column: str, key: str, allow_missing: bool = False) -> pd.Series:
    """A column as float64; text that is not a number raises naming rows and values."""
    raw = table.frame[column]
    values = pd.to_numeric(raw, errors="coerce")
    bad = (values.isna() & raw.notna()).to_numpy()
    if bad.any():
        rows = np.flatnonzero(bad)
        examples = ", ".join(f"{raw.iat[r]!r} at {table.where(int(r))}" for r in rows[:3])
        raise DataError(f"{table.name}: column {column!r} ({key}) must be numeric but has {len(rows)} "
                        f"non-numeric value(s): {examples}.")
    missing = values.isna().to_numpy()
    if missing.any() and not allow_missing:
        rows = np.flatnonzero(missing)
        raise DataError(f"{table.name}: column {column!r} ({key}) has {len(rows)} missing value(s), first at "
                        f"{', '.join(table.where(int(r)) for r in rows[:3])}; drop or fill those rows.")
    values = values.astype(np.float64).reset_index(drop=True)
    infinite = np.isinf(values.to_numpy())
    if infinite.any():
        rows = np.flatnonzero(infinite)
        examples = ", ".join(f"{values.iat[r]:g} at {table.where(int(r))}" for r in rows[:3])
        raise DataError(f"{table.name}: column {column!r} ({key}) has {len(rows)} infinite value(s): {examples}; "
                        "values must be finite numbers.")
    return values


def timestamp_column(table: Table, column: str) -> pd.Series:
    """Numbers as they are (e.g. Unix seconds); date strings become Unix seconds (int64).

    A column of mostly numbers is numeric: its other values are reported as non-numeric (not the
    numbers as "not dates")."""
    raw = table.frame[column]
    if pd.api.types.is_datetime64_any_dtype(raw):
        return _datetime_seconds(raw).reset_index(drop=True)
    numbers = pd.to_numeric(raw, errors="coerce")
    if pd.api.types.is_numeric_dtype(raw) or numbers.notna().all():
        return numeric_column(table, column, "data.columns.timestamp")
    parsed = pd.to_datetime(raw, errors="coerce", utc=True, format="mixed")
    if int(numbers.notna().sum()) > int(parsed.notna().sum()):  # mostly numbers: report the few that are not
        return numeric_column(table, column, "data.columns.timestamp")
    bad = (parsed.isna() & raw.notna()).to_numpy()
    if bad.any() or raw.isna().any():
        rows = np.flatnonzero(bad | raw.isna().to_numpy())
        examples = ", ".join(f"{raw.iat[r]!r} at {table.where(int(r))}" for r in rows[:3])
        raise DataError(f"{table.name}: column {column!r} (data.columns.timestamp) must hold numbers or dates; "
                        f"{len(rows)} value(s) are neither: {examples}.")
    return _datetime_seconds(parsed).reset_index(drop=True)


def _datetime_seconds(values: pd.Series) -> pd.Series:
    if values.dt.tz is None:
        values = values.dt.tz_localize("UTC")
    return ((values - pd.Timestamp(0, tz="UTC")) // pd.Timedelta(seconds=1)).astype(np.int64)


def describe_table(path: str | Path, columns: dict[str, str] | None = None, separator: str = ",") -> dict[str, Any]:
    """Statistics for ``recstack data info``: rows, users, items, density, rating and timestamp ranges.

    ``path``: a CSV/Parquet file, an ml-100k directory (with u.data) or ``movielens-100k``.
    ``columns``: role -> column; missing roles are guessed from common names.
    """
    path_str = str(path)
    if path_str in BUILTIN_DATASETS:
        table = read_builtin(path_str, "interactions")
    elif Path(path).is_dir():
        from ..datasets import read_movielens_100k

        if not (Path(path) / "u.data").exists():
            raise DataError(f"{path} is a folder without u.data; pass a CSV/Parquet file or an ml-100k folder.")
        data = read_movielens_100k(path)
        table = Table(data.ratings.drop(columns=["movie_genres"]), f"{Path(path).name} (ml-100k)",
                      [Path(path) / "u.data"])
    else:
        table = read_table(path, separator)
    frame = table.frame
    mapping = dict(columns or {})
    guesses = {"user": ("user", "user_id", "userId", "userid", "UserID", "customer_id"),
               "item": ("item", "item_id", "itemId", "movie_id", "movieId", "movie_title", "product_id"),
               "rating": ("rating", "user_rating", "score", "stars"),
               "timestamp": ("timestamp", "time", "ts", "date", "datetime")}
    for role, names in guesses.items():
        if role not in mapping:
            found = next((n for n in names if n in frame.columns), None)
            if found is not None:
                mapping[role] = found
    require_columns(table, {f"--{role}": col for role, col in mapping.items()})
    info: dict[str, Any] = {"source": str(path), "rows": int(len(frame)), "columns": [str(c) for c in frame.columns],
                            "mapping": mapping}
    if "user" in mapping:
        info["users"] = int(frame[mapping["user"]].nunique())
    if "item" in mapping:
        info["items"] = int(frame[mapping["item"]].nunique())
    if "user" in mapping and "item" in mapping:
        pairs = frame[[mapping["user"], mapping["item"]]]
        info["duplicate_pairs"] = int(pairs.duplicated().sum())
        info["density"] = float(len(pairs.drop_duplicates()) / max(info["users"] * info["items"], 1))
    if "rating" in mapping:
        r = numeric_column(table, mapping["rating"], "--rating", allow_missing=True)
        counts = r.value_counts().sort_index()
        info["rating"] = {"min": float(r.min()), "max": float(r.max()), "mean": float(r.mean()),
                          "std": float(r.std(ddof=0)), "missing": int(r.isna().sum())}
        if len(counts) <= 20:
            info["rating"]["distribution"] = {f"{k:g}": int(v) for k, v in counts.items()}
    if "timestamp" in mapping:
        t = timestamp_column(table, mapping["timestamp"])
        info["timestamp"] = {"min": _number(t.min()), "max": _number(t.max())}
        if 1e8 < float(t.min()) and float(t.max()) < 1e10:  # looks like Unix seconds
            info["timestamp"]["min_utc"] = pd.Timestamp(float(t.min()), unit="s", tz="UTC").isoformat()
            info["timestamp"]["max_utc"] = pd.Timestamp(float(t.max()), unit="s", tz="UTC").isoformat()
    return info


def _number(value: Any) -> int | float:
    value = float(value)
    return int(value) if value.is_integer() else value


__all__ = ["Notify", "Table", "describe_table", "id_strings", "numeric_column", "read_builtin", "read_source",
           "read_table", "require_columns", "timestamp_column"]
