"""A run's data, ready to train on: read, validated, split, preprocessed and encoded."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from ..core.columns import Columns
from ..core.exclusions import Exclusions
from ..core.id_lists import IdLists
from .config import ExperimentConfig
from .interactions import InteractionData, Splits, load_data, split_data
from .preprocessing import (
    Preprocessing,
    encode,
    feature_tables,
    fit_preprocessing,
    item_labels,
    prepare_evaluation_split,
    seen_items,
)
from .next_item import ordered_histories
from .reporter import Reporter
from .run_dir import fingerprint


@dataclass
class Prepared:
    """Encoded splits and everything derived from the data."""

    data: InteractionData
    splits: Splits
    pre: Preprocessing
    train: Columns
    validation: Columns | None
    test: Columns
    seen_train: Exclusions        # training rows per user (validation protocol)
    seen_before_test: Exclusions  # training + validation rows per user (test protocol, recommend)
    histories_train: IdLists      # the training items per user in time order (next-item validation)
    histories_before_test: IdLists  # training + validation items per user in time order (histories.pt)
    tables: dict[str, dict[str, torch.Tensor]]
    labels: list[str] | None
    info: dict[str, Any] = field(default_factory=dict)
    timestamps: torch.Tensor | None = None  # what time features are fitted on (see ModelContext)


def prepare(config: ExperimentConfig, reporter: Reporter, pre: Preprocessing | None = None) -> Prepared:
    """Read, validate, split, fit (or reuse ``pre``) and encode the data of ``config``."""
    data = load_data(config.data, reporter.note)
    splits = split_data(data.frame, config.split)
    if pre is None:
        pre = fit_preprocessing(data, splits, config.features)
    test_frame = prepare_evaluation_split(splits.test, pre, "test", reporter.note)
    val_frame = (prepare_evaluation_split(splits.validation, pre, "validation", reporter.note)
                 if splits.validation is not None else None)
    train = encode(splits.train, pre)
    validation = encode(val_frame, pre) if val_frame is not None else None
    test = encode(test_frame, pre)
    seen_train = seen_items([train], pre.num_users)
    before_test = [train] + ([validation] if validation is not None else [])
    seen_before_test = seen_items(before_test, pre.num_users)
    histories_train = ordered_histories([train], pre.num_users)
    histories_before_test = ordered_histories(before_test, pre.num_users) if validation is not None \
        else histories_train
    frame = data.frame
    info = {
        "files": fingerprint(data.files),
        "rows": {"read": data.stats["rows_read"], "after_duplicates": data.stats["rows_after_duplicates"],
                 **({"after_filters": data.stats["rows"]} if "filters" in data.stats else {}),
                 "train": len(splits.train), "validation": 0 if val_frame is None else len(val_frame),
                 "test": len(test_frame)},
        "duplicates": {"rows": data.stats.get("duplicate_rows", 0),
                       "removed": data.stats.get("duplicate_rows_removed", 0), "policy": config.data.duplicates},
        **({"filters": data.stats["filters"]} if "filters" in data.stats else {}),
        "users": int(frame["user"].nunique()), "items": int(frame["item"].nunique()),
        "vocabulary": {"users": pre.num_users - 1, "items": pre.num_items - 1, "fitted_on": config.features.vocabulary},
        "cold_start": {"test_rows_unknown_user": int((test.get("user") == 0).sum()),
                       "test_rows_dropped_unknown_item": len(splits.test) - len(test_frame)},
    }
    fit_rows = frame if config.features.vocabulary == "all" else splits.train
    timestamps = (torch.from_numpy(fit_rows["timestamp"].to_numpy(np.float64, copy=True))
                  if "timestamp" in fit_rows else None)
    return Prepared(data, splits, pre, train, validation, test, seen_train, seen_before_test, histories_train,
                    histories_before_test, feature_tables(pre, data), item_labels(pre, data), info, timestamps)


__all__ = ["Prepared", "prepare"]
