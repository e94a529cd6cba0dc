"""Interactions and feature tables, validated, and the train/validation/test splits.

Input: a table of interactions (:mod:`recstack.experiment.tables` reads it) with a column
mapping (user, item, optional rating, timestamp, weight), and optional item and user feature
tables (categorical columns, numeric columns, one text column).

Policies (each one is reported with counts when it applies):

* **Duplicate (user, item) rows**: ``data.duplicates`` = keep-last (default; last
  row of each pair in file order), keep-first, keep-all or error.
* **Filters** (after the duplicates, RecBole 1.2.1's order): ``data.min_rating`` keeps the rows
  rated >= it, then ``data.k_core`` keeps the k-core (:func:`recstack.datasets.k_core`); what each
  dropped (rows, users, items) is in ``stats["filters"]``. A filter that leaves nothing is a
  DataError saying which setting to relax.
* **Feature tables**: missing categorical values become the category ''; missing numeric
  values the column mean; a repeated id keeps its first row.
* **Empty splits** (train, validation or test): a DataError saying how to fix it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ..core.errors import DataError
from ..datasets import k_core, leave_last_out, per_user_random_split, random_split, temporal_split
from ..datasets.sequences import build_histories
from .config import DataConfig, FeatureTableConfig, SplitConfig
from .tables import Notify, id_strings, numeric_column, read_source, require_columns, timestamp_column

ROLES = ("user", "item", "rating", "timestamp", "weight", "split")
#: The values of a split column (``split.method: column``).
SPLIT_PARTS = ("train", "validation", "test")


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
    table = read_source(config.interactions, config.csv_separator, "interactions")
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
    if "split" in mapping:
        out["split"] = _split_column(table, mapping["split"])
    stats: dict[str, Any] = {"rows_read": len(out)}
    out = _handle_duplicates(out, config.duplicates, table.name, notify, stats)
    stats["rows_after_duplicates"] = len(out)
    out = _apply_filters(out, config, table.name, notify, stats)
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


def _split_column(table: Any, column: str) -> np.ndarray:
    """The split column's values as str, each one of :data:`SPLIT_PARTS`."""
    values = table.frame[column].astype(str).str.strip().to_numpy()
    bad = ~np.isin(values, SPLIT_PARTS)
    if bad.any():
        first = int(np.flatnonzero(bad)[0])
        found = sorted(set(values[bad].tolist()))[:5]
        raise DataError(f"{table.name}: column {column!r} (data.columns.split) holds {int(bad.sum())} value(s) other "
                        f"than {', '.join(SPLIT_PARTS)}, first {values[first]!r} at {table.where(first)} "
                        f"(other values: {found}); write each row's part as one of those words.")
    return values


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


def _apply_filters(df: pd.DataFrame, config: DataConfig, name: str, notify: Notify,
                   stats: dict[str, Any]) -> pd.DataFrame:
    """``data.min_rating``, then ``data.k_core``; ``stats["filters"]`` records what each dropped."""
    if config.min_rating is None and config.k_core is None:
        return df
    start = {"rows": len(df), "users": int(df["user"].nunique()), "items": int(df["item"].nunique())}
    report: dict[str, Any] = {}
    if config.min_rating is not None:
        threshold = config.min_rating
        if "rating" not in df:
            raise DataError(f"data.min_rating {threshold:g} keeps the interactions rated >= it, but no rating column "
                            "is mapped: set data.columns.rating, or remove data.min_rating.")
        keep = (df["rating"] >= threshold).to_numpy()
        if not keep.any():
            raise DataError(f"{name}: data.min_rating {threshold:g} keeps no interaction (the {len(df):,} ratings "
                            f"range from {df['rating'].min():g} to {df['rating'].max():g}); lower data.min_rating "
                            "or remove it.")
        kept = df.loc[keep].reset_index(drop=True)
        report["min_rating"] = {"value": threshold, **_dropped(df, kept)}
        notify(f"{name}: data.min_rating {threshold:g} removed {len(df) - len(kept):,} interaction(s) rated below "
               f"it; {len(kept):,} left.")
        df = kept
    if config.k_core is not None:
        k = config.k_core
        core = k_core(df["user"].to_numpy(), df["item"].to_numpy(), k)
        if not core.keep.any():
            most_user = int(df["user"].value_counts().max())
            most_item = int(df["item"].value_counts().max())
            after = f" rated >= {config.min_rating:g}" if config.min_rating is not None else ""
            relax = "lower data.k_core" + (" or data.min_rating" if config.min_rating is not None else "")
            raise DataError(f"{name}: data.k_core {k} leaves no interactions: removing the users and items with "
                            f"fewer than {k} interactions among the {len(df):,} rows{after} removes them all "
                            f"({core.passes} passes; before it the most any user had was {most_user}, any item "
                            f"{most_item}); {relax}, or use more data.")
        kept = df.loc[core.keep].reset_index(drop=True)
        report["k_core"] = {"k": k, "passes": core.passes, **_dropped(df, kept)}
        notify(f"{name}: data.k_core {k} removed {len(df) - len(kept):,} interaction(s), {core.users_dropped:,} "
               f"user(s) and {core.items_dropped:,} item(s) in {core.passes} passes; {len(kept):,} interactions "
               "left.")
        df = kept
    report["total"] = {"rows_dropped": start["rows"] - len(df),
                       "users_dropped": start["users"] - int(df["user"].nunique()),
                       "items_dropped": start["items"] - int(df["item"].nunique())}
    stats["filters"] = report
    return df


def _dropped(before: pd.DataFrame, after: pd.DataFrame) -> dict[str, int]:
    return {"rows_dropped": len(before) - len(after),
            "users_dropped": int(before["user"].nunique()) - int(after["user"].nunique()),
            "items_dropped": int(before["item"].nunique()) - int(after["item"].nunique())}


def load_feature_table(config: FeatureTableConfig, separator: str, side: str,
                       notify: Notify) -> tuple[pd.DataFrame, list[Path]]:
    """A feature table with ``id`` (str) and its feature columns, one row per id (first row kept)."""
    table = read_source(config.path, separator, side)
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
    """Train/test by ``config.method`` and, with ``validation_fraction`` > 0, validation out of train
    (leave-one-out always has its validation item)."""
    if config.method == "leave-one-out":
        return leave_one_out_split(df)
    if config.method == "per-user-random":
        return per_user_random(df, config)
    if config.method == "column":
        return column_split(df)
    train, test = _split(df, config, config.train_fraction, config.seed, "test")
    validation = None
    if config.validation_fraction > 0:
        train, validation = _split(train, config, 1 - config.validation_fraction, config.seed + 1, "validation")
    return Splits(train, validation, test)


def leave_one_out_split(df: pd.DataFrame) -> Splits:
    """Per user with at least 3 interactions: the last (by ``timestamp``, equal timestamps in file
    order) is the test row, the second to last the validation row, the rest training; users with
    fewer are training only. The same rule as :func:`recstack.datasets.sequences.leave_one_out`
    (which it calls on the factorised ids); each part keeps the file order."""
    users = pd.factorize(df["user"])[0]
    items = pd.factorize(df["item"])[0] + 1          # the sequence builder reserves id 0 for padding
    histories = build_histories(users, items, df["timestamp"].to_numpy(np.float64), num_items=int(items.max()) + 1)
    ends = histories.indptr[1:][histories.lengths >= 3]
    if ends.size == 0:
        raise DataError(f"leave-one-out holds out the last two interactions of users with at least 3, but no user of "
                        f"the {len(df)} rows has 3 (the most any user has is {int(histories.lengths.max())}); use "
                        "more data or another split.method.")
    part = np.zeros(len(df), dtype=np.int8)          # 0 train, 1 validation, 2 test
    part[histories.rows[ends - 2]] = 1
    part[histories.rows[ends - 1]] = 2
    train, validation, test = (df.loc[part == k].reset_index(drop=True) for k in range(3))
    return Splits(train, validation, test)


def per_user_random(df: pd.DataFrame, config: SplitConfig) -> Splits:
    """RecBole's general protocol: each user's rows shuffled with ``config.seed`` and cut by
    ``config.ratios`` ([train, validation, test] or [train, test]) with RecBole 1.2.1's rounding
    (:func:`recstack.datasets.per_user_random_split`)."""
    parts = per_user_random_split(df, config.ratios, user_col="user", seed=config.seed)
    train, test = parts[0], parts[-1]
    validation = parts[1] if len(parts) == 3 else None
    if len(test) == 0:
        raise DataError(f"the test split is empty (per-user-random with ratios {list(config.ratios)} of {len(df)} "
                        "rows: every user has too few rows for a test row); use more data or a larger test ratio.")
    return Splits(train, validation, test)


def column_split(df: pd.DataFrame) -> Splits:
    """The parts the ``split`` column names (file order kept; the column itself dropped)."""
    part = df["split"].to_numpy()
    train, validation, test = (df.loc[part == name].drop(columns="split").reset_index(drop=True)
                               for name in SPLIT_PARTS)
    for name, frame in (("train", train), ("test", test)):
        if len(frame) == 0:
            raise DataError(f"the split column (data.columns.split) marks no row {name!r} among the {len(df)} rows "
                            f"(after data filters and duplicates); every run needs {name} rows.")
    return Splits(train, validation if len(validation) else None, test)


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


__all__ = ["InteractionData", "ROLES", "Splits", "leave_one_out_split", "load_data", "load_feature_table",
           "split_data"]
