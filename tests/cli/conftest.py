"""Tiny generated interaction data and config files for the CLI tests."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import yaml


def make_ratings(n_users: int = 40, n_items: int = 24, per_user: int = 8, seed: int = 0) -> pd.DataFrame:
    """Each user rates ``per_user`` distinct items, mostly from a taste cluster; timestamps increase per user."""
    rng = np.random.default_rng(seed)
    rows = []
    for u in range(n_users):
        cluster = u % 4
        pool = [i for i in range(n_items) if i % 4 == cluster]
        others = [i for i in range(n_items) if i % 4 != cluster]
        picks = list(rng.choice(pool, min(per_user - 2, len(pool)), replace=False)) + \
            list(rng.choice(others, 2, replace=False))
        for t, item in enumerate(picks):
            rows.append((f"u{u}", f"m{item}", float(rng.integers(1, 6)), 1_600_000_000 + 1000 * u + t))
    return pd.DataFrame(rows, columns=["userId", "movieId", "rating", "timestamp"])


def make_items(n_items: int = 24) -> pd.DataFrame:
    words = ["space", "love", "war", "crime"]
    return pd.DataFrame({"movieId": [f"m{i}" for i in range(n_items)],
                         "genre": [f"g{i % 4}" for i in range(n_items)],
                         "year": [1980 + i for i in range(n_items)],
                         "title": [f"The {words[i % 4]} story part {i}" for i in range(n_items)]})


BASE: dict[str, Any] = {
    "name": "t",
    "data": {"interactions": "ratings.csv",
             "columns": {"user": "userId", "item": "movieId", "rating": "rating", "timestamp": "timestamp"}},
    "split": {"method": "leave-last-out"},
    "model": {"kind": "two_tower", "embedding_dim": 8},
    "optimizer": {"name": "adagrad", "learning_rate": 0.2},
    "training": {"epochs": 2, "batch_size": 64},
    "evaluation": {"ks": [1, 5, 10]},
    "output": {"plots": False},
}


def merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        else:
            out[key] = value
    return out


@pytest.fixture(autouse=True)
def _cli_tests_use_one_thread(one_thread):
    """Every CLI test runs with one intra-op thread (see tests/conftest.py)."""


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    """tmp_path with ratings.csv (40 users x 8 ratings) and items.parquet/items.csv."""
    make_ratings().to_csv(tmp_path / "ratings.csv", index=False)
    make_items().to_csv(tmp_path / "items.csv", index=False)
    return tmp_path


@pytest.fixture
def write_config(workdir: Path):
    """write_config(extra: dict, name="config.yaml") -> path of BASE merged with ``extra``."""
    def write(extra: dict[str, Any] | None = None, name: str = "config.yaml") -> Path:
        extra = dict(extra or {})
        base = BASE if "kind" not in extra.get("model", {}) else {**BASE, "model": {}}  # a new kind: new params
        config = merge(base, extra)
        config.setdefault("output", {})["runs_dir"] = str(workdir / "runs")
        path = workdir / name
        path.write_text(yaml.safe_dump(config, sort_keys=False))
        return path
    return write
