"""Training runs shared by the single-process and the torch.distributed (gloo) side of the test."""

from __future__ import annotations

import os

import numpy as np
import torch

import recstack
from recstack import Columns
from recstack.experiment.config import RatingTaskConfig, RetrievalTaskConfig, TasksConfig
from recstack.experiment.model_kinds import MODEL_KINDS, ModelContext, TwoTowerParams
from recstack.layers import Embedding
from recstack.metrics import FactorizedTopK
from recstack.models.two_tower import TwoTowerRetrieval
from recstack.tasks import Retrieval

#: (name, Retrieval options, deduplicate_candidates, l2, sparse embedding gradients)
SETTINGS = [
    ("dedup-sum-hits", {"remove_accidental_hits": True}, True, 0.0, False),
    ("plain-mean-temperature-l2", {"reduction": "mean", "temperature": 0.5}, False, 1e-3, False),
    ("sparse-gradients", {}, True, 0.0, True),
]
#: The multi-task tutorial's joint rating + retrieval model as the config path builds it (model kind
#: two_tower with a rating task; its rating MSE is a mean over the batch).
MULTITASK = "multitask"
SETTING_NAMES = [s[0] for s in SETTINGS] + [MULTITASK]


def data(n: int = 360, seed: int = 0) -> Columns:
    rng = np.random.default_rng(seed)
    user = rng.integers(0, 20, n)
    item = (user * 3 + rng.integers(0, 3, n)) % 15
    return Columns({"user": user, "item": item, "weight": rng.uniform(0.5, 1.5, n).astype(np.float32),
                    "rating": rng.integers(1, 6, n).astype(np.float32)})


def build(options: dict, dedup: bool, l2: float, sparse: bool) -> TwoTowerRetrieval:
    torch.manual_seed(0)
    items = torch.arange(15)
    user, item = Embedding(20, 8, l2=l2, sparse=sparse), Embedding(15, 8, sparse=sparse)
    metric = FactorizedTopK(recstack.TowerCandidates(item, items), items, ks=(1, 5))
    return TwoTowerRetrieval(user, item, Retrieval(metrics=metric, **options), "user", "item",
                             candidate_id="item", sample_weight="weight", train_metrics=True,
                             deduplicate_candidates=dedup)


def build_multitask() -> recstack.Model:
    """What `recstack train` builds for a config with a rating task (the multitask config's model)."""
    tasks = TasksConfig(retrieval=RetrievalTaskConfig(weight=0.5), rating=RatingTaskConfig(weight=1.0))
    ctx = ModelContext(num_users=20, num_items=15, catalogue=torch.arange(15), tasks=tasks, ks=(1, 5),
                       has_rating=True, train_metrics=True)
    torch.manual_seed(0)
    return MODEL_KINDS.get("two_tower").builder(ctx, TwoTowerParams(embedding_dim=8, rating_layer_sizes=[16]))


def train_all(epochs: int = 2, global_batch: int = 64) -> dict[str, dict]:
    """Every setting: per-epoch history (losses, train and validation metrics) and final weights."""
    out = {}
    runs = [(name, lambda o=options, d=dedup, r=l2, sp=sparse: build(o, d, r, sp), sparse)
            for name, options, dedup, l2, sparse in SETTINGS]
    runs.append((MULTITASK, build_multitask, False))
    for name, make, sparse in runs:
        model = make()
        history = model.fit(data(), epochs=epochs, batch_size=global_batch, seed=3, verbose=False,
                            optimizer=lambda p: recstack.training.optimizers.Adagrad(p, lr=0.3, fused=not sparse),
                            validation_data=data(seed=1), validation_batch_size=50)
        out[name] = {"history": {k: v for k, v in history.history.items() if "seconds" not in k and "per_second"
                                 not in k},
                     "weights": {k: v.clone() for k, v in model.state_dict().items()},
                     "evaluate": model.evaluate(data(seed=2), batch_size=70)}
    return out


def main(rank: int, world: int, port: int, out_dir: str) -> None:
    """torch.multiprocessing.spawn entry point: join a gloo group and train every setting."""
    os.environ.update({"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "RANK": str(rank),
                       "WORLD_SIZE": str(world), "LOCAL_RANK": str(rank)})
    torch.set_num_threads(1)
    assert recstack.core.distributed.init_from_env(backend="gloo", timeout_s=120)
    try:
        results = train_all()
        torch.save(results, os.path.join(out_dir, f"rank{rank}.pt"))
    finally:
        torch.distributed.destroy_process_group()
