"""Run folders as serving bundles with a history query tower: next-item runs (sasrec, gru4rec)
and the fold-in kinds (ease, itemknn, ials, multvae and ensembles of those: :data:`FOLD_IN_TOWERS`).

The bundle holds (all listed in its manifest, see :mod:`recstack.serving.export`):

* ``query_tower.json`` + weights: :class:`~recstack.models.history_tower.HistoryQueryTower`
  over the run's encoder, rebuilt on load from registered names (``history_query_tower``,
  ``sasrec_encoder`` / ``gru4rec_encoder``);
* the candidates: the catalogue's raw item ids (item id j at position j - 1) and their output
  embeddings, searched exactly by the index;
* ``history/``: each user's stored history (the run's histories.pt: items before the test
  split, in time order), ``max_length``, and the training popularity that ranks an empty
  history (counts; equal counts by lower item id, as ``recstack recommend``).

A fold-in bundle (:func:`export_fold_in_bundle`) has the same layout with the kind's fold-in query
as its query tower (:class:`~recstack.models.history_tower.MultiHotQuery` for EASE and item-KNN,
:class:`~recstack.models.ials.IALSFoldInQuery` for iALS, ``MultVAEFoldInQuery`` for Mult-VAE,
``ScaledConcatQuery`` of those for an ensemble), the catalogue's ``item_embeddings`` (EASE: the
columns of B; iALS: the item factors; Mult-VAE: the output layer's rows and bias) as the candidates, each user's items before the test
split (``seen.pt``; their order does not matter to these queries) as the stored histories, and
``max_length`` at least the catalogue's size, so every item of a history counts.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..core.errors import RecstackError
from ..core.id_lists import IdLists
from ..models.history_tower import (HistoryQueryTower, MultiHotQuery, MultVAEFoldInQuery, ScaledConcatQuery,
                                     UserHistoryQuery)
from ..models.ials import IALSFoldInQuery
from .next_item import require_histories

__all__ = ["FOLD_IN_KINDS", "FOLD_IN_TOWERS", "export_fold_in_bundle", "export_history_bundle"]


def _multi_hot(model: Any, pre: Any) -> torch.nn.Module:
    return MultiHotQuery(pre.num_items)


def _ials(model: Any, pre: Any) -> torch.nn.Module:
    return IALSFoldInQuery.of(model)


def _multvae(model: Any, pre: Any) -> torch.nn.Module:
    return MultVAEFoldInQuery.of(model)


def _two_tower(model: Any, pre: Any) -> torch.nn.Module:
    if getattr(model.query_tower, "history", None) is None:
        raise RecstackError("a two_tower model folds in histories only when trained with model.user_history "
                            "(its user tower then reads the user's items).")
    return UserHistoryQuery(model.query_tower)


def _ensemble(model: Any, pre: Any) -> torch.nn.Module:
    kinds = [kind.name for kind in model.member_kinds]
    cannot = sorted({k for k, m in zip(kinds, model.members)
                     if k not in FOLD_IN_TOWERS or k == "ensemble" or not getattr(m, "reads_histories", True)})
    if cannot:
        raise RecstackError(f"this ensemble cannot be bundled: its member kind(s) {', '.join(cannot)} do not fold "
                            f"in histories; an ensemble of {', '.join(k for k in FOLD_IN_KINDS if k != 'ensemble')} "
                            "members (or two_tower with model.user_history) can.")
    towers = [FOLD_IN_TOWERS[k](member, pre) for k, member in zip(kinds, model.members)]
    return ScaledConcatQuery(towers, model.query_factors.tolist())


#: kind -> its fold-in query tower (the same queries as the kind's ``history_query``): EASE's and
#: item-KNN's multi-hot row, iALS's user solve with the item factors fixed, Mult-VAE's encoded
#: row, and the ensemble's members' towers scaled by w_m / σ_m.
FOLD_IN_TOWERS = {"ease": _multi_hot, "itemknn": _multi_hot, "ials": _ials, "multvae": _multvae,
                  "ensemble": _ensemble, "two_tower": _two_tower}
#: The kinds whose bundle is a history bundle by default (a two_tower's is one on request only:
#: ``recstack export --queries histories``; its default bundle queries users by id).
FOLD_IN_KINDS = ("ease", "itemknn", "ials", "multvae", "ensemble")


@torch.no_grad()
def export_history_bundle(serving: Any, loaded: Any, bundle_dir: Path) -> Path:
    """Write ``loaded`` (a run of a sequential kind) to ``bundle_dir`` as a next-item bundle."""
    model, config = loaded.model, loaded.config
    if getattr(model, "features", ()):
        raise RecstackError(f"model kind {config.model.kind!r} with per-position item features cannot be bundled "
                            "yet; export a model trained without model.features.")
    # rows of histories.pt are user ids (0 = unknown user, never stored), in time order
    histories = require_histories(loaded.histories, f"export of model kind {config.model.kind!r}")
    popularity = torch.floor(model.popularity[1:]).float().numpy()  # training counts (tie-break: position)
    return _write(serving, loaded, bundle_dir, HistoryQueryTower(model.encoder), histories, popularity,
                  int(model.max_length))


@torch.no_grad()
def export_fold_in_bundle(serving: Any, loaded: Any, bundle_dir: Path) -> Path:
    """Write ``loaded`` (a run of a :data:`FOLD_IN_KINDS` kind) to ``bundle_dir`` as a history
    bundle whose query tower folds a history in (module docstring)."""
    pre, seen = loaded.pre, loaded.seen                         # seen rows: user ids (0 = unknown, empty)
    counts = np.bincount(seen.ids, minlength=pre.num_items)[1:].astype(np.float32)
    tower = FOLD_IN_TOWERS[loaded.config.model.kind](loaded.model, pre)
    if isinstance(tower, UserHistoryQuery):   # the tower's own stored histories and window
        table = tower.tower.history_table.cpu().numpy()         # [U, L] latest first, 0-padded
        stored = _stored_histories(seen, table)
        return _write(serving, loaded, bundle_dir, tower, stored, counts, int(tower.tower.history_length))
    longest = int(seen.counts.max()) if seen.num_rows else 1
    return _write(serving, loaded, bundle_dir, tower, seen, counts, max(pre.num_items, longest))


def _stored_histories(seen: IdLists, table: np.ndarray) -> IdLists:
    """Each user's stored history for a two-tower history bundle: the seen items the [U, L]
    latest-first history table does not hold (older, any order), then the table's row oldest
    first (repeats kept: the tower pools every copy). The serving path queries the last L items,
    which are the table's row, and excludes every stored item, as ``recommend --user
    --exclude-seen`` excludes the seen ones."""
    num_users, num_items = table.shape[0], int(max(seen.ids.max(initial=0), table.max(initial=0))) + 1
    flipped = table[:, ::-1]
    t_rows, t_cols = np.nonzero(flipped)                        # row-major: each row oldest first
    t_items = flipped[t_rows, t_cols]
    s_rows = np.repeat(np.arange(seen.num_keys), seen.counts)
    in_table = np.isin(s_rows * num_items + seen.ids, t_rows * num_items + t_items)
    rows = np.concatenate([s_rows[~in_table], t_rows])
    items = np.concatenate([seen.ids[~in_table], t_items]).astype(np.int64)
    part = np.concatenate([np.zeros((~in_table).sum(), dtype=np.int64), np.ones(t_rows.shape[0], dtype=np.int64)])
    order = np.lexsort((part, rows))                            # stable: each part keeps its order
    indptr = np.zeros(num_users + 1, dtype=np.int64)
    np.cumsum(np.bincount(rows, minlength=num_users), out=indptr[1:])
    return IdLists(indptr, items[order])


def _write(serving: Any, loaded: Any, bundle_dir: Path, tower: torch.nn.Module, stored: Any,
           popularity: np.ndarray, max_length: int) -> Path:
    """The bundle of ``tower`` over the catalogue's item embeddings (item id j at position j - 1),
    with ``stored`` (IdLists by user id) as the users' histories and ``popularity`` [V - 1] as the
    ranking of an empty history."""
    model, pre, config = loaded.model, loaded.pre, loaded.config
    embeddings = model.item_embeddings(pre.catalogue()).float()     # catalogue: item ids 1..V-1
    item_ids = np.asarray(pre.items.get_vocabulary()[1:], dtype=str)
    users = np.arange(1, stored.num_keys)
    lists = stored.take(users)
    history = {"max_length": max_length, "user_field": config.data.columns.user,
               "users": np.asarray(pre.users.lookup_inverse(users), dtype=str),
               "indptr": lists.indptr, "items": lists.ids.astype(np.int64) - 1, "popularity": popularity}
    spec = serving.ServingSpec(query_tower=tower, query_inputs="history", kind=config.model.kind)
    result = serving.export(spec, bundle_dir, candidate_key=config.data.columns.item,
                            candidate_identifiers=item_ids, candidate_embeddings=embeddings, history=history,
                            extra={"run_dir": str(loaded.run.root), "experiment": config.name,
                                   "model_kind": config.model.kind})
    return Path(result)
