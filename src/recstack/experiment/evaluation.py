"""Test-split evaluation of a trained model under the evaluation protocols.

* "all-items": every test row ranks its item among the whole catalogue (TFRS's top-k
  accuracy; recall@k equals it).
* "exclude-seen": rows are grouped per user (``query_key``) for recall/NDCG/MRR, and each
  user's items from before the test split are removed from the ranking (the positive itself
  never is).
* "next-item", "next-item-sampled": each user's held-out item ranked given the user's history
  (HR@K, NDCG@K, MRR per user, averaged): see :mod:`recstack.experiment.next_item`.
"""

from __future__ import annotations

from typing import Any

import torch

from ..core.columns import Columns
from ..core.exclusions import Exclusions
from ..metrics import FactorizedTopK
from ..training.model import Model
from ..core.id_lists import IdLists
from .config import NEXT_ITEM_PROTOCOLS, ExperimentConfig
from .model_kinds import MODEL_KINDS
from .next_item import evaluate_next_item, require_histories
from .preprocessing import Preprocessing


@torch.no_grad()
def evaluate_protocol(model: Model, test: Columns, catalogue: torch.Tensor, protocol: str,
                      seen: Exclusions | None, ks: tuple[int, ...] | list[int], batch_size: int = 4096) -> dict[str, float]:
    """FactorizedTopK of ``model`` on ``test`` under one protocol (see the module docstring):
    ``protocol`` "all-items" or "exclude-seen" (which removes ``seen`` per query key).
    Returns ``{"factorized_top_k/<metric>": value}``."""
    was_training = model.training
    model.eval()
    try:
        device = next(iter(test.values())).device
        candidates = torch.cat([model.item_embeddings(catalogue[i:i + 8192].to(device))
                                for i in range(0, catalogue.shape[0], 8192)])
        per_user = protocol == "exclude-seen"
        metric = FactorizedTopK(candidates, catalogue.to(device), ks=ks, exclude=seen if per_user else None)
        contextual = callable(getattr(model, "query_embeddings", None))
        for batch in test.batches(batch_size):
            queries = model.query_embeddings(batch) if contextual else model.user_embeddings(batch["user"])
            metric.update_state(queries, model.item_embeddings(batch["item"]),
                                true_candidate_ids=batch["item"],
                                query_keys=batch["query_key"] if per_user else None)
        return metric.result()
    finally:
        if was_training:
            model.train()


def evaluate_run(config: ExperimentConfig, model: Model, test: Columns, pre: Preprocessing, seen: Exclusions,
                 protocols: list[str], with_loss: bool = True, histories: IdLists | None = None) -> dict[str, Any]:
    """{"protocols": {name: metrics}, "test": {loss, rmse, ...} (with_loss), "test_rows": n}.

    ``histories``: the items per user before the test split in time order (the next-item protocols)."""
    out: dict[str, Any] = {"test_rows": test.num_rows, "protocols": {}}
    e = config.evaluation
    for protocol in protocols:
        if protocol in NEXT_ITEM_PROTOCOLS:
            out["protocols"][protocol] = evaluate_next_item(
                model, MODEL_KINDS.get(config.model.kind), test, require_histories(histories, f"protocol {protocol}"),
                protocol, e.next_item, e.ks, pre.num_items, e.batch_size)
        else:
            out["protocols"][protocol] = evaluate_protocol(model, test, pre.catalogue(), protocol, seen, e.ks,
                                                           e.batch_size)
    if with_loss:
        losses = model.evaluate(test, batch_size=config.evaluation.batch_size, distributed_data=False)
        out["test"] = {k: v for k, v in losses.items() if not k.startswith("factorized_top_k/")}
    return out


__all__ = ["evaluate_protocol", "evaluate_run"]
