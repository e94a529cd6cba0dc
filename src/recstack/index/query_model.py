"""A BruteForce query model saved without pickle: a tower config (JSON) + a tensor file.

A :class:`~recstack.index.BruteForce` may hold the model that maps raw queries to
embeddings (TFRS's ``BruteForce(user_model)``), e.g.
``nn.Sequential(StringLookup(vocabulary=users), Embedding(n, 32))``, so that raw ids
go in and candidate ids come out. Saving writes

    query_model.json   {"type": registered name, "config": {...}}, nested for containers
    query_model.npz    the state_dict tensors (read back with allow_pickle=False)

and loading rebuilds the architecture from the JSON (no user code runs, nothing is
unpickled), then loads the tensors strictly (names and shapes must match).

The JSON is the tower codec of :mod:`recstack.models.tower_codec`, the same one
serving bundles use for their towers: whatever a bundle can hold (``nn.Sequential``
of ``recstack.features`` / ``recstack.layers`` / ``torch.nn`` layers, ``MLP``,
``FeatureTower``, classes registered under a stable name) a query model can hold.
Indexes saved by the previous layout recorded import-path names
(``"torch.nn.Sequential"``, ``"recstack.features"``); they are aliases and load.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from torch import nn

from ..core.errors import ConfigError, DataError
from ..core.io import atomic_write_json
from ..models.tower_codec import load_npz_state, register_tower, save_npz_state, tower_config, tower_from_config

__all__ = ["load_query_model", "register_query_layer", "save_query_model"]

#: ``register_query_layer(cls, name)``: the tower registration (one table for towers and query models).
register_query_layer = register_tower


def save_query_model(module: Any, directory: Path, stem: str = "query_model") -> list[str]:
    """Write ``stem.json`` (architecture) and ``stem.npz`` (state_dict) into ``directory``; the file names.

    Raises:
        ConfigError: a part of ``module`` cannot be described without pickle (the message names it).
    """
    try:
        config = tower_config(module)
    except ConfigError as exc:
        raise ConfigError(f"cannot save the query model without pickle: {exc} Or save the index without its "
                          "query model (query_model=None) and keep the model with your own code.") from None
    save_npz_state(module, directory / f"{stem}.npz")
    atomic_write_json(directory / f"{stem}.json", config)
    return [f"{stem}.json", f"{stem}.npz"]


def load_query_model(directory: Path, stem: str = "query_model") -> nn.Module:
    """Inverse of :func:`save_query_model`: the module in eval mode."""
    try:
        config = json.loads((directory / f"{stem}.json").read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{directory / f'{stem}.json'} is not valid JSON: {exc}") from exc
    module = tower_from_config(config)
    try:
        module.load_state_dict(load_npz_state(directory / f"{stem}.npz"), strict=True)
    except RuntimeError as exc:
        raise DataError(f"{stem}.npz does not fit the query model described in {stem}.json: {exc}") from exc
    return module.eval()
