"""Small Parquet datasets and a tiny two-tower model shared by the streaming tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

import recstack
from recstack.layers import Embedding
from recstack.metrics import FactorizedTopK
from recstack.tasks import Retrieval


def interactions(n: int = 1000, seed: int = 0, users: int = 20, items: int = 15) -> dict[str, np.ndarray]:
    """user / item / timestamp / rating columns; each user prefers two items (learnable)."""
    rng = np.random.default_rng(seed)
    user = rng.integers(0, users, n)
    return {
        "user": user,
        "item": (user * 3 + rng.integers(0, 2, n)) % items,
        "timestamp": rng.integers(874_724_710, 893_286_638, n),
        "rating": rng.integers(1, 6, n).astype(np.float64),
    }


def write_parquet(path: Path, columns: dict[str, np.ndarray], row_group_size: int = 128,
                  files: int = 1) -> Path:
    """``columns`` as one file (``path``) or as ``files`` files in directory ``path``, split in row order.

    File names sort in row order, which is the order ParquetSource reads them in.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.table(columns)
    if files == 1:
        pq.write_table(table, path, row_group_size=row_group_size)
        return path
    path.mkdir(parents=True, exist_ok=True)
    bounds = np.linspace(0, table.num_rows, files + 1).astype(int)
    for k in range(files):
        part = table.slice(bounds[k], bounds[k + 1] - bounds[k])
        pq.write_table(part, path / f"part-{k:03d}.parquet", row_group_size=row_group_size)
    return path


class TwoTower(recstack.Model):
    """Two embedding tables, Retrieval task with FactorizedTopK over all items."""

    def __init__(self, num_users: int = 20, num_items: int = 15, dim: int = 8, metrics: bool = True):
        super().__init__()
        self.user = Embedding(num_users, dim)
        self.item = Embedding(num_items, dim)
        items = torch.arange(num_items)
        topk = FactorizedTopK(recstack.TowerCandidates(self.item, items), items, ks=(1, 5)) if metrics else None
        self.task = Retrieval(metrics=topk)

    def compute_loss(self, batch, training=False):
        return self.task(self.user(batch["user"]), self.item(batch["item"]), candidate_ids=batch["item"])
