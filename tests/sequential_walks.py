"""Tiny generated next-item data for the pipeline tests: users walking an item ring."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml

NUM_ITEMS = 20


def walks(num_users: int = 120, seed: int = 0) -> pd.DataFrame:
    """Each user walks the ring of items i0..i19 with a fixed step of 1 or 2, 6-10 steps (no item twice): the
    next item is last + step, so the last item alone leaves it a coin flip (what item-to-item
    transitions see) and popularity knows nothing (every item about equally frequent)."""
    rng = np.random.default_rng(seed)
    rows = []
    for u in range(num_users):
        step, start, length = int(rng.integers(1, 3)), int(rng.integers(0, NUM_ITEMS)), int(rng.integers(6, 11))
        for t in range(length):
            rows.append((f"u{u}", f"i{(start + step * t) % NUM_ITEMS}", 1_600_000_000 + 60 * t))
    return pd.DataFrame(rows, columns=["user", "item", "time"])


def sequential_config(folder: Path, model: dict[str, Any], **sections: Any) -> Path:
    """A leave-one-out config over ``folder/walks.csv`` (written if missing) for ``model``."""
    if not (folder / "walks.csv").exists():
        walks().to_csv(folder / "walks.csv", index=False)
    config: dict[str, Any] = {
        "name": model["kind"],
        "data": {"interactions": "walks.csv", "columns": {"user": "user", "item": "item", "timestamp": "time"}},
        "split": {"method": "leave-one-out"},
        "model": model,
        "optimizer": {"name": "adam", "learning_rate": 0.01},
        "training": {"epochs": 25, "batch_size": 32, "threads": 1},
        "evaluation": {"ks": [1, 5, 10]},
        "output": {"plots": False, "runs_dir": str(folder / "runs")},
    }
    for key, value in sections.items():
        config[key] = {**config.get(key, {}), **value}
    text = yaml.safe_dump(config, sort_keys=False)
    path = folder / f"{model['kind']}-{hashlib.sha256(text.encode()).hexdigest()[:10]}.yaml"
    path.write_text(text)
    return path


SASREC = {"kind": "sasrec", "max_length": 8, "embedding_dim": 32, "num_blocks": 1, "num_heads": 2, "dropout": 0.0}
GRU4REC = {"kind": "gru4rec", "max_length": 8, "embedding_dim": 32, "dropout": 0.0}
