"""Any interaction data: read, validate, split, fit preprocessing, encode.

Input: a CSV or Parquet table of interactions (or the built-in ``movielens-100k``)
with a column mapping (user, item, optional rating, timestamp, weight), and
optional item and user feature tables (categorical columns, numeric columns, one
text column).

Policies (each one is reported with counts when it applies):

* **Missing columns, missing ids, non-numeric ratings/timestamps/weights**: a
  :class:`~recstack.core.errors.DataError` naming the column, the count and examples.
* **Duplicate (user, item) rows**: ``data.duplicates`` = keep-last (default; last
  row of each pair in file order), keep-first, keep-all or error.
* **Vocabularies** are fitted on the training rows (``features.vocabulary: train``)
  or on all rows (``all``), plus every id of the feature tables; index 0 is
  "unknown" (OOV).
* **Cold start** in validation/test: users never seen in training are mapped to
  the unknown-user index 0 (plus their features when the users table has them)
  and *still evaluated*; items that are neither in the training rows nor in the
  item table cannot be ranked (they have no embedding and no features), so
  their rows are *dropped* from the evaluation split.
* **Empty splits** (train, validation or test): a DataError saying how to fix it.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from ..core.columns import Columns
from ..datasets import leave_last_out, random_split, temporal_split
from ..core.errors import DataError, DataNotFoundError, suggest
from ..core.exclusions import Exclusions
from ..features import FeatureSet, Normalization, StringLookup, TextVectorization
from .config import BUILTIN_DATASETS, DataConfig, FeatureTableConfig, FeaturesConfig, SplitConfig
from .model_kinds import FeatureSpec

Notify = Callable[[str], None]
ROLES = ("user", "item", "rating", "timestamp", "weight")


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
    """Read a CSV/TSV or Parquet file."""
    path = Path(path)
    if not path.exists():
        raise DataNotFoundError(f"{path} does not exist; check the path in the config (relative paths are "
                                "taken from the config file's folder).")
    suffix = path.suffix.lower()
    if suffix in (".parquet", ".pq"):
        try:
            frame = pd.read_parquet(path)
        except ImportError as exc:
            raise DataError(f"reading {path.name} needs a Parquet engine: pip install pyarrow ({exc})") from None
        return Table(frame, path.name, [path])
    if suffix in (".csv", ".tsv", ".txt", ".dat"):
        sep = "\t" if suffix == ".tsv" else separator
        try:
            frame = pd.read_csv(path, sep=sep, low_memory=False)
        except (pd.errors.ParserError, UnicodeDecodeError) as exc:
            raise DataError(f"{path.name} is not a readable CSV file: {exc}") from None
        except pd.errors.EmptyDataError:
            raise DataError(f"{path.name} is empty (no header, no rows).") from None
        return Table(frame, path.name, [path], csv=True)
    raise DataError(f"{path.name}: unknown table format {suffix!r}; use .csv, .tsv or .parquet.")


def read_builtin(name: str, part: str) -> Table:
    """``movielens-100k`` tables: "interactions" (ratings, TFDS columns), "items" (movies), "users"."""
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


def _read(source: str, separator: str, part: str) -> Table:
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
    return values.astype(np.float64).reset_index(drop=True)


def timestamp_column(table: Table, column: str) -> pd.Series:
    """Numbers as they are (e.g. Unix seconds); date strings become Unix seconds (int64)."""
    raw = table.frame[column]
    if pd.api.types.is_datetime64_any_dtype(raw):
        return _datetime_seconds(raw).reset_index(drop=True)
    if pd.api.types.is_numeric_dtype(raw) or pd.to_numeric(raw, errors="coerce").notna().all():
        return numeric_column(table, column, "data.columns.timestamp")
    parsed = pd.to_datetime(raw, errors="coerce", utc=True, format="mixed")
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


# -- interactions -------------------------------------------------------------------------------
@dataclass
class InteractionData:
    """Validated interactions with standard columns ``user``, ``item`` (str) and the optional
    ``rating``, ``timestamp``, ``weight`` (float64), in file order."""

    frame: pd.DataFrame
    items: pd.DataFrame | None
    users: pd.DataFrame | None
    files: list[Path]
    stats: dict[str, Any] = field(default_factory=dict)


def load_data(config: DataConfig, notify: Notify) -> InteractionData:
    """Read and validate the interactions and feature tables of ``config``."""
    table = _read(config.interactions, config.csv_separator, "interactions")
    mapping = {role: getattr(config.columns, role) for role in ROLES if getattr(config.columns, role)}
    require_columns(table, {f"data.columns.{role}": col for role, col in mapping.items()})
    if len(table.frame) == 0:
        raise DataError(f"{table.name} has no rows.")
    out = pd.DataFrame({"user": id_strings(table, mapping["user"], "data.columns.user"),
                        "item": id_strings(table, mapping["item"], "data.columns.item")})
    if "rating" in mapping:
        out["rating"] = numeric_column(table, mapping["rating"], "data.columns.rating")
    if "timestamp" in mapping:
        out["timestamp"] = timestamp_column(table, mapping["timestamp"])
    if "weight" in mapping:
        weight = numeric_column(table, mapping["weight"], "data.columns.weight")
        if (weight < 0).any():
            rows = np.flatnonzero((weight < 0).to_numpy())
            raise DataError(f"{table.name}: column {mapping['weight']!r} (data.columns.weight) has {len(rows)} "
                            f"negative weight(s), first at {table.where(int(rows[0]))}; weights must be >= 0.")
        out["weight"] = weight
    stats: dict[str, Any] = {"rows_read": len(out)}
    out = _handle_duplicates(out, config.duplicates, table.name, notify, stats)
    files = list(table.files)
    items = users = None
    if config.items is not None:
        items, item_files = load_feature_table(config.items, config.csv_separator, "items", notify)
        files += [f for f in item_files if f not in files]
    if config.users is not None:
        users, user_files = load_feature_table(config.users, config.csv_separator, "users", notify)
        files += [f for f in user_files if f not in files]
    stats["rows"] = len(out)
    return InteractionData(out, items, users, files, stats)


def _handle_duplicates(df: pd.DataFrame, policy: str, name: str, notify: Notify,
                       stats: dict[str, Any]) -> pd.DataFrame:
    repeated = df.duplicated(["user", "item"], keep="first").to_numpy()
    extra = int(repeated.sum())
    stats["duplicate_rows"] = extra
    if not extra:
        return df
    pairs = int(df.loc[repeated, ["user", "item"]].drop_duplicates().shape[0])
    first = int(np.flatnonzero(repeated)[0])
    what = f"{name}: {extra} duplicate row(s) repeat an earlier (user, item) pair ({pairs} pair(s) affected)"
    if policy == "error":
        raise DataError(f"{what}, e.g. user {df['user'].iat[first]!r}, item {df['item'].iat[first]!r}; "
                        "set data.duplicates to keep-last, keep-first or keep-all.")
    if policy == "keep-all":
        notify(f"{what}: kept all of them (data.duplicates: keep-all).")
        return df
    keep = "last" if policy == "keep-last" else "first"
    notify(f"{what}: kept the {keep} row of each pair and removed {extra} (data.duplicates: {policy}).")
    stats["duplicate_rows_removed"] = extra
    return df.loc[~df.duplicated(["user", "item"], keep=keep).to_numpy()].reset_index(drop=True)


def load_feature_table(config: FeatureTableConfig, separator: str, side: str,
                       notify: Notify) -> tuple[pd.DataFrame, list[Path]]:
    """A feature table with ``id`` (str) and its feature columns, one row per id (first row kept)."""
    table = _read(config.path, separator, side)
    key = f"data.{side}"
    wanted = {f"{key}.id": config.id, **{f"{key}.categorical": c for c in config.categorical},
              **{f"{key}.numeric": c for c in config.numeric}}
    if config.text:
        wanted[f"{key}.text"] = config.text
    require_columns(table, wanted)
    out = pd.DataFrame({"id": id_strings(table, config.id, f"{key}.id")})
    for col in config.categorical:
        values = table.frame[col].reset_index(drop=True)
        missing = int(values.isna().sum())
        if missing:
            notify(f"{table.name}: {missing} missing value(s) in categorical column {col!r} became the "
                   "category '' (their own category).")
        out[f"cat:{col}"] = values.fillna("").astype(str).to_numpy()
    for col in config.numeric:
        values = numeric_column(table, col, f"{key}.numeric", allow_missing=True)
        missing = int(values.isna().sum())
        if missing:
            notify(f"{table.name}: {missing} missing value(s) in numeric column {col!r} were filled with the "
                   "column mean.")
            values = values.fillna(values.mean() if values.notna().any() else 0.0)
        out[f"num:{col}"] = values.to_numpy()
    if config.text:
        out["text"] = table.frame[config.text].fillna("").astype(str).to_numpy()
    repeated = out["id"].duplicated().to_numpy()
    if repeated.any():
        notify(f"{table.name}: {int(repeated.sum())} row(s) repeat an earlier {config.id!r}; kept the first "
               "row of each id.")
        out = out.loc[~repeated].reset_index(drop=True)
    return out, table.files


# -- splits -------------------------------------------------------------------------------------------
@dataclass
class Splits:
    train: pd.DataFrame
    validation: pd.DataFrame | None
    test: pd.DataFrame


def split_data(df: pd.DataFrame, config: SplitConfig) -> Splits:
    """Train/test by ``config.method`` and, with ``validation_fraction`` > 0, validation out of train."""
    train, test = _split(df, config, config.train_fraction, config.seed, "test")
    validation = None
    if config.validation_fraction > 0:
        train, validation = _split(train, config, 1 - config.validation_fraction, config.seed + 1, "validation")
    return Splits(train, validation, test)


def _split(df: pd.DataFrame, config: SplitConfig, fraction: float, seed: int,
           held_out: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    if config.method == "random":
        first, second = random_split(df, train_fraction=fraction, seed=seed)
        how = f"random split with train fraction {fraction:g} of {len(df)} rows"
        fix = "use more data or a fraction further from 0 and 1"
    elif config.method == "temporal":
        first, second = temporal_split(df, train_fraction=fraction, timestamp_col="timestamp")
        how = f"temporal split with train fraction {fraction:g} of {len(df)} rows"
        fix = "use more data or a fraction further from 0 and 1"
    else:
        first, second = leave_last_out(df, user_col="user", timestamp_col="timestamp", n=config.leave_out)
        how = f"leave-last-out (n={config.leave_out}) of {len(df)} rows"
        fix = f"leave-last-out only holds out users with more than {config.leave_out} interaction(s)"
    for part, frame in (("train" if held_out == "test" else "remaining train", first), (held_out, second)):
        if len(frame) == 0:
            raise DataError(f"the {part} split is empty ({how}); {fix}.")
    return first, second


# -- preprocessing ---------------------------------------------------------------------------------
class Preprocessing:
    """Fitted vocabularies and feature layers; saved as one JSON file (no pickle).

    ``users`` / ``items``: StringLookup (OOV index 0). ``user_features`` /
    ``item_features``: FeatureSets over the feature tables (outputs ``cat:<col>``,
    ``num:<col>``, ``text``) or None.
    """

    FORMAT = "recstack.cli.Preprocessing"

    def __init__(self, users: StringLookup, items: StringLookup, user_features: FeatureSet | None = None,
                 item_features: FeatureSet | None = None):
        self.users, self.items = users, items
        self.user_features, self.item_features = user_features, item_features

    @property
    def num_users(self) -> int:
        return self.users.vocabulary_size()

    @property
    def num_items(self) -> int:
        return self.items.vocabulary_size()

    def catalogue(self) -> torch.Tensor:
        """[V - 1] item ids that can be recommended (every known item; 0 = unknown is not one)."""
        return torch.arange(1, self.num_items)

    def feature_spec(self, side: str) -> FeatureSpec:
        features = self.user_features if side == "user" else self.item_features
        if features is None:
            return FeatureSpec()
        spec = FeatureSpec()
        for name in features.output_names:
            layer = features[name]
            if name.startswith("cat:"):
                spec.categorical_sizes.append(layer.vocabulary_size())
            elif name.startswith("num:"):
                spec.num_numeric += 1
            elif name == "text":
                spec.text_vocab_size = layer.vocabulary_size()
                spec.text_length = int(layer.output_sequence_length)
        return spec

    def to_dict(self) -> dict[str, Any]:
        return {"format": self.FORMAT, "version": 1, "users": self.users.get_config(),
                "items": self.items.get_config(),
                "user_features": None if self.user_features is None else self.user_features.get_config(),
                "item_features": None if self.item_features is None else self.item_features.get_config()}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Preprocessing":
        if data.get("format") != cls.FORMAT:
            raise DataError("not a recstack preprocessing file (missing format marker).")

        def features(cfg: Any) -> FeatureSet | None:
            return None if cfg is None else FeatureSet.from_config(cfg)

        return cls(StringLookup.from_config(data["users"]), StringLookup.from_config(data["items"]),
                   features(data["user_features"]), features(data["item_features"]))

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), ensure_ascii=False)


def fit_preprocessing(data: InteractionData, splits: Splits, config: FeaturesConfig) -> Preprocessing:
    """Vocabularies (training rows or all rows, plus feature-table ids) and feature layers."""
    rows = data.frame if config.vocabulary == "all" else splits.train
    user_ids = [rows["user"]] + ([data.users["id"]] if data.users is not None else [])
    item_ids = [rows["item"]] + ([data.items["id"]] if data.items is not None else [])
    users = StringLookup().fit(pd.concat(user_ids, ignore_index=True))
    items = StringLookup().fit(pd.concat(item_ids, ignore_index=True))
    return Preprocessing(users, items, _fit_features(data.users, config), _fit_features(data.items, config))


def _fit_features(table: pd.DataFrame | None, config: FeaturesConfig) -> FeatureSet | None:
    if table is None or len(table.columns) == 1:
        return None
    features = FeatureSet()
    for col in table.columns:
        if col.startswith("cat:"):
            features.add(col, StringLookup(), col)
        elif col.startswith("num:"):
            features.add(col, Normalization(), col)
        elif col == "text":
            features.add(col, TextVectorization(max_tokens=config.text_max_tokens,
                                                output_sequence_length=config.text_max_length), col)
    try:
        return features.fit(table)
    except DataError as exc:
        if "found no tokens" in str(exc):
            raise DataError(f"the text column of the feature table has no words at all: {exc}") from None
        raise


def feature_tables(pre: Preprocessing, data: InteractionData) -> dict[str, dict[str, torch.Tensor]]:
    """Per-id feature tables aligned with the vocabularies (row i = id i; unknown rows stay 0)."""
    out: dict[str, dict[str, torch.Tensor]] = {}
    for side, lookup, features, table in (("user", pre.users, pre.user_features, data.users),
                                          ("item", pre.items, pre.item_features, data.items)):
        if features is None or table is None:
            continue
        encoded = features.transform(table)
        rows = lookup(table["id"])                       # vocabulary index of each table row
        n = lookup.vocabulary_size()
        parts: dict[str, list[torch.Tensor]] = {"categorical": [], "numeric": [], "text": []}
        for name in features.output_names:
            kind = "categorical" if name.startswith("cat:") else "numeric" if name.startswith("num:") else "text"
            parts[kind].append(encoded[name])
        side_tables: dict[str, torch.Tensor] = {}
        if parts["categorical"]:
            side_tables["categorical"] = _scatter(torch.stack(parts["categorical"], 1), rows, n)
        if parts["numeric"]:
            side_tables["numeric"] = _scatter(torch.stack(parts["numeric"], 1).float(), rows, n)
        if parts["text"]:
            side_tables["text"] = _scatter(parts["text"][0], rows, n)
        out[side] = side_tables
    return out


def _scatter(values: torch.Tensor, rows: torch.Tensor, n: int) -> torch.Tensor:
    table = torch.zeros((n, *values.shape[1:]), dtype=values.dtype)
    table[rows] = values
    table[0] = 0  # the unknown id has no features
    return table


# -- encoding ---------------------------------------------------------------------------------------
def encode(df: pd.DataFrame, pre: Preprocessing) -> Columns:
    """Rows -> Columns ``user``, ``item``, ``query_key`` and the optional ``rating``, ``weight``
    (float32) and ``timestamp`` (float64 seconds: Unix times stay exact).

    ``query_key`` is the user id for known users and ``num_users + k`` for the k-th distinct
    unknown user, so per-user metrics never merge different cold-start users.
    """
    users = pre.users(df["user"])
    cold = (users == 0).numpy()
    keys = users.clone()
    if cold.any():
        codes, _ = pd.factorize(df["user"].to_numpy()[cold])
        keys[torch.from_numpy(cold)] = torch.from_numpy(codes.astype(np.int64)) + pre.num_users
    cols: dict[str, Any] = {"user": users, "item": pre.items(df["item"]), "query_key": keys}
    for name in ("rating", "weight"):
        if name in df:
            cols[name] = torch.from_numpy(df[name].to_numpy(np.float32))
    if "timestamp" in df:
        cols["timestamp"] = torch.from_numpy(df["timestamp"].to_numpy(np.float64, copy=True))
    return Columns(cols)


def prepare_evaluation_split(df: pd.DataFrame, pre: Preprocessing, name: str, notify: Notify) -> pd.DataFrame:
    """Report cold-start users (kept, unknown index) and drop rows with items outside the catalogue."""
    known_users = pre.users(df["user"]).numpy() > 0
    known_items = pre.items(df["item"]).numpy() > 0
    if not known_users.all():
        n_users = df.loc[~known_users, "user"].nunique()
        notify(f"cold start: {int((~known_users).sum())} {name} row(s) of {n_users} user(s) never seen in "
               f"training were mapped to the unknown-user index and are still evaluated.")
    if not known_items.all():
        n_items = df.loc[~known_items, "item"].nunique()
        notify(f"cold start: {int((~known_items).sum())} {name} row(s) with {n_items} item(s) that are neither "
               f"in the training rows nor in the item table were dropped: those items cannot be ranked.")
        df = df.loc[known_items].reset_index(drop=True)
        if len(df) == 0:
            raise DataError(f"the {name} split is empty after dropping items unknown to training; use a split "
                            "that keeps items in training (e.g. split.method: leave-last-out), add an item "
                            "table, or set features.vocabulary: all.")
    return df


def seen_items(parts: list[Columns], num_users: int) -> Exclusions:
    """Per known user id, the items of the given (encoded) rows: the "seen" lists.

    Rows of unknown users (id 0) are left out: cold-start users have nothing seen.
    """
    users = torch.cat([p["user"] for p in parts])
    items = torch.cat([p["item"] for p in parts])
    known = (users > 0) & (items > 0)
    return Exclusions.from_pairs(users[known], items[known], num_keys=num_users)


def item_labels(pre: Preprocessing, data: InteractionData) -> list[str] | None:
    """Display text per item id (the item table's text column), or None without one."""
    if data.items is None or "text" not in data.items:
        return None
    labels = np.full(pre.num_items, "", dtype=object)
    labels[pre.items(data.items["id"]).numpy()] = data.items["text"].to_numpy()
    labels[0] = ""
    return labels.tolist()


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


__all__ = ["InteractionData", "Preprocessing", "Splits", "Table", "describe_table", "encode", "feature_tables",
           "fit_preprocessing", "item_labels", "load_data", "prepare_evaluation_split", "read_table",
           "seen_items", "split_data"]
