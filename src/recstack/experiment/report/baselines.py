"""The popularity baseline on a run's own split, for a run whose metrics.json has none.

A run that evaluated its baselines itself records them in metrics.json (``baselines``), and
the report uses those. For older runs the report recomputes popularity from the run folder
alone: item counts from seen.pt (one per user who had the item before the test split), scored
under the run's protocols on the run's test rows, exactly as the ``popularity`` kind is
evaluated. The counts are of (user, item) pairs, so with ``data.duplicates: keep-all`` a
repeated rating counts once here (the popularity kind counts rows); the report says which
figures it shows. Costs milliseconds (one bincount and one evaluation).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import torch

from ...core.columns import Columns
from ..config import NEXT_ITEM_PROTOCOLS
from ..evaluation import evaluate_run
from ..model_kinds import MODEL_KINDS, PopularityParams
from ..building import model_context
from ..saved_run import LoadedRun
from ..schema import ModelConfig

POPULARITY = "popularity"


def recompute_popularity(loaded: LoadedRun) -> dict[str, dict[str, float]]:
    """``{protocol: metrics}`` of the popularity baseline fitted on the run's seen items and
    evaluated on its test split under the run's protocols (next-item protocols need histories.pt)."""
    config = dataclasses.replace(loaded.config, model=ModelConfig(POPULARITY, PopularityParams()))
    protocols = [p for p in config.evaluation.protocols if p not in NEXT_ITEM_PROTOCOLS or loaded.histories is not None]
    test = loaded.test_columns()
    ctx = model_context(config, loaded.pre, None, False, False, histories=loaded.histories)
    model = MODEL_KINDS.get(POPULARITY).builder(ctx, config.model.params)
    users, items = loaded.seen.pairs()
    model.fit(Columns({"user": torch.from_numpy(users), "item": torch.from_numpy(items),
                       "query_key": torch.from_numpy(users)}))
    model.eval()
    result: dict[str, Any] = evaluate_run(config, model, test, loaded.pre, loaded.seen, protocols, with_loss=False,
                                          histories=loaded.histories)
    return result["protocols"]


__all__ = ["POPULARITY", "recompute_popularity"]
