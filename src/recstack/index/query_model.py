"""Query models saved without pickle: registered layer names + JSON config + a tensor file.

A :class:`~recstack.index.BruteForce` may hold the model that maps raw queries to
embeddings (TFRS's ``BruteForce(user_model)``), e.g.
``nn.Sequential(StringLookup(vocabulary=users), Embedding(n, 32))``, so that raw ids
go in and candidate ids come out. Saving writes

    query_model.json   {"type": registered name, "config": {...}}, nested for containers
    query_model.npz    the state_dict tensors (read back with allow_pickle=False)

and loading rebuilds the architecture from the JSON (no user code runs, nothing is
unpickled), then loads the tensors strictly (names and shapes must match).

What can be saved (``QUERY_LAYERS``, one table; the names are those of the serving
bundle's tower configs):

* ``torch.nn.Sequential`` of savable modules; ``recstack.layers.MLP`` is stored as
  the Sequential of its Dense layers (same forward, same state_dict keys);
* ``recstack.features`` preprocessing layers (their ``get_config``: vocabularies,
  boundaries, statistics are JSON);
* ``torch.nn.Embedding`` / ``recstack.layers.Embedding``, ``torch.nn.Linear`` /
  ``recstack.layers.Dense``, ``torch.nn.LayerNorm``, ``torch.nn.Dropout``, and the
  activations ReLU, Sigmoid, Tanh, ELU, GELU, SELU, Identity with default arguments;
* any module class registered with :func:`register_query_layer` under a stable
  name, implementing ``get_config() -> dict`` (JSON) and ``from_config(config)``.

Anything else makes :func:`save_query_model` raise a ConfigError saying so.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ..core.errors import ConfigError, DataError
from ..core.io import atomic_write_json
from ..core.registry import Registry
from ..features.base import PreprocessingLayer, layer_from_config
from ..layers.dense import _ACTIVATIONS, MLP, Dense
from ..layers.embedding import Embedding

Config = dict[str, Any]

SAVABLE = ("nn.Sequential of recstack.features preprocessing layers, torch.nn / recstack.layers Embedding, "
           "Linear / Dense, MLP, LayerNorm, Dropout and default activations, plus module classes registered "
           "with recstack.index.register_query_layer(cls, name) (they implement get_config() and "
           "from_config(config))")


@dataclass(frozen=True)
class LayerCodec:
    """How one module class becomes JSON and back (weights travel separately)."""

    cls: type[nn.Module]
    to_config: Callable[[nn.Module], Config]
    from_config: Callable[[Config], nn.Module]


QUERY_LAYERS: Registry[LayerCodec] = Registry("query model layer")
_SEQUENTIAL = "torch.nn.Sequential"
_FEATURES = "recstack.features"


def register_query_layer(cls: type[nn.Module], name: str, to_config: Callable[[nn.Module], Config] | None = None,
                         from_config: Callable[[Config], nn.Module] | None = None) -> type[nn.Module]:
    """Make ``cls`` savable inside a query model under the stable ``name``.

    Without ``to_config`` / ``from_config`` the class must implement ``get_config()``
    (a JSON dict of constructor arguments) and the classmethod ``from_config(config)``
    rebuilding the same architecture (identical state_dict names and shapes).
    """
    if to_config is None or from_config is None:
        if not (callable(getattr(cls, "get_config", None)) and callable(getattr(cls, "from_config", None))):
            raise ConfigError(f"{cls.__name__} must implement get_config() and from_config(config), or pass "
                              "to_config= and from_config= to register_query_layer.")
    existing = QUERY_LAYERS.loaded().get(name)
    if existing is not None and existing.cls is not cls:
        raise ConfigError(f"query model layer {name!r} is already registered for {existing.cls.__qualname__}; "
                          "choose another stable name.")
    QUERY_LAYERS.register(name, LayerCodec(cls, to_config or (lambda m: m.get_config()),  # type: ignore[operator]
                                           from_config or cls.from_config))  # type: ignore[attr-defined]
    return cls


# -- built-in codecs -------------------------------------------------------------------------------
_ACTIVATION_NAMES = {cls: name for name, cls in reversed(list(_ACTIVATIONS.items()))}


def _default_only(m: nn.Module) -> nn.Module:
    """``m`` itself, if it equals its class's default construction (its arguments are not stored)."""
    if repr(m) != repr(type(m)()):
        raise ConfigError(f"{m!r} has non-default arguments, which a saved query model cannot store.")
    return m


def _activation(m: nn.Module) -> str:
    name = _ACTIVATION_NAMES.get(type(_default_only(m)))
    if name is None:
        raise ConfigError(f"activation {type(m).__name__} has no name in recstack.layers; savable: "
                          f"{sorted(set(_ACTIVATIONS))}.")
    return name


def _no_arguments(m: nn.Module) -> Config:
    _default_only(m)
    return {}


def _attrs(*names: str) -> Callable[[nn.Module], Config]:
    return lambda m: {n: getattr(m, n) for n in names}


_EMBEDDING = ("num_embeddings", "embedding_dim", "padding_idx", "max_norm", "norm_type", "scale_grad_by_freq",
              "sparse")


def _linear_config(m: nn.Module) -> Config:
    return {"in_features": m.in_features, "out_features": m.out_features, "bias": m.bias is not None}


def _dense_config(m: nn.Module) -> Config:
    assert isinstance(m, Dense)
    return {**_linear_config(m), "activation": _activation(m.act), "l2": m.l2}


def _layer_norm_config(m: nn.Module) -> Config:
    return {"normalized_shape": list(m.normalized_shape), "eps": m.eps,
            "elementwise_affine": m.elementwise_affine, "bias": getattr(m, "bias", None) is not None}


def _builtin(cls: type[nn.Module], name: str, to_config: Callable[[nn.Module], Config]) -> None:
    QUERY_LAYERS.register(name, LayerCodec(cls, to_config, lambda c, _cls=cls: _cls(**c)))


_builtin(nn.Embedding, "torch.nn.Embedding", _attrs(*_EMBEDDING))
_builtin(Embedding, "recstack.layers.Embedding", _attrs(*_EMBEDDING, "l2", "init_scale"))
_builtin(nn.Linear, "torch.nn.Linear", _linear_config)
_builtin(Dense, "recstack.layers.Dense", _dense_config)
_builtin(nn.LayerNorm, "torch.nn.LayerNorm", _layer_norm_config)
_builtin(nn.Dropout, "torch.nn.Dropout", _attrs("p"))
for _act in (nn.ReLU, nn.Sigmoid, nn.Tanh, nn.ELU, nn.GELU, nn.SELU, nn.Identity):
    _builtin(_act, f"torch.nn.{_act.__name__}", _no_arguments)


# -- encode / decode ---------------------------------------------------------------------------------
def query_model_config(module: Any) -> Config:
    """JSON description of ``module`` (architecture only); ConfigError naming what cannot be saved."""
    if isinstance(module, PreprocessingLayer):
        return {"type": _FEATURES, "config": module.get_config()}
    if type(module) is nn.Sequential or type(module) is MLP:
        return {"type": _SEQUENTIAL, "config": {"layers": [query_model_config(m) for m in module]}}
    for name, codec in QUERY_LAYERS.loaded().items():
        if type(module) is codec.cls:
            return {"type": name, "config": codec.to_config(module)}
    what = f"{type(module).__module__}.{type(module).__qualname__}"
    if not isinstance(module, nn.Module):
        what = f"a {what} (not a torch module)"
    raise ConfigError(f"cannot save the query model without pickle: it contains {what}. Savable are {SAVABLE}. "
                      "Register the class, or save the index without its query model (query_model=None) and "
                      "keep the model with your own code.")


def query_model_from_config(config: Config) -> nn.Module:
    """Rebuild an (untrained) module from :func:`query_model_config` output."""
    if not isinstance(config, dict) or not isinstance(config.get("type"), str) or "config" not in config:
        raise ConfigError('a query model config must be a dict with "type" and "config" keys.')
    name, body = config["type"], config["config"]
    try:
        if name == _FEATURES:
            return layer_from_config(body)
        if name == _SEQUENTIAL:
            return nn.Sequential(*[query_model_from_config(c) for c in body["layers"]])
        return QUERY_LAYERS.get(name).from_config(body)
    except (KeyError, TypeError, ValueError) as exc:
        raise ConfigError(f"malformed config for query model layer {name!r}: {exc!r}") from exc


def save_query_model(module: Any, directory: Path, stem: str = "query_model") -> list[str]:
    """Write ``stem.json`` (architecture) and ``stem.npz`` (state_dict) into ``directory``; the file names."""
    config = query_model_config(module)
    state = {k: v.detach().cpu().numpy() for k, v in module.state_dict().items()}
    with open(directory / f"{stem}.npz", "wb") as handle:
        np.savez(handle, **state)
    atomic_write_json(directory / f"{stem}.json", config)
    return [f"{stem}.json", f"{stem}.npz"]


def load_query_model(directory: Path, stem: str = "query_model") -> nn.Module:
    """Inverse of :func:`save_query_model`: the module in eval mode."""
    try:
        config = json.loads((directory / f"{stem}.json").read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{directory / f'{stem}.json'} is not valid JSON: {exc}") from exc
    module = query_model_from_config(config)
    path = directory / f"{stem}.npz"
    try:
        with np.load(path, allow_pickle=False) as data:
            state = {k: torch.from_numpy(np.array(data[k])) for k in data.files}
    except ValueError as exc:
        raise DataError(f"{path} is not a plain numpy archive ({exc}); refusing to unpickle it.") from exc
    try:
        module.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise DataError(f"{path.name} does not fit the query model described in {stem}.json: {exc}") from exc
    return module.eval()
