"""Preprocessing fitted on a run's data, and the encoded columns the models train on.

* **Vocabularies** are fitted on the training rows (``features.vocabulary: train``)
  or on all rows (``all``), plus every id of the feature tables; index 0 is
  "unknown" (OOV).
* **Cold start** in validation/test: users never seen in training are mapped to
  the unknown-user index 0 (plus their features when the users table has them)
  and *still evaluated*; items that are neither in the training rows nor in the
  item table cannot be ranked (they have no embedding and no features), so
  their rows are *dropped* from the evaluation split.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pandas as pd
import torch

from ..core.columns import Columns
from ..core.errors import DataError
from ..core.exclusions import Exclusions
from ..features import FeatureSet, Normalization, StringLookup, TextVectorization
from .config import FeaturesConfig
from .interactions import InteractionData, Splits
from .model_kinds import FeatureSpec
from .tables import Notify


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


__all__ = ["Preprocessing", "encode", "feature_tables", "fit_preprocessing", "item_labels",
           "prepare_evaluation_split", "seen_items"]
