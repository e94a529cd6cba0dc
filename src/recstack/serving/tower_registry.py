"""Describable towers: ``tower_config(module) -> JSON`` and ``tower_from_config(JSON) -> module``.

A bundle stores a tower as this JSON plus its ``state_dict``; loading rebuilds
the architecture from the JSON (no user code, no pickle) and then loads the
weights. A config is ``{"type": name, "config": {...}}`` and nests for
containers.

Built in:

* ``torch.nn``: Sequential, Embedding, Linear, LayerNorm, Dropout, Identity, Flatten,
  and the activations ReLU, Sigmoid, Tanh, ELU, GELU, SELU, LeakyReLU, Softplus.
* ``recstack.layers``: Embedding, Dense, MLP.
* ``recstack.features`` preprocessing layers (their own ``get_config``), so a tower
  like ``nn.Sequential(StringLookup(...), Embedding(...))`` takes raw ids.

Any other module class plugs in by implementing the protocol

    def get_config(self) -> dict          # JSON: constructor arguments; nested modules
                                          # as tower_config(sub) dicts
    @classmethod
    def from_config(cls, config) -> Self  # same architecture: identical state_dict keys/shapes

and either being registered (``register_tower(cls)`` / ``@register_tower``) or
living in a ``recstack.*`` module (resolved by its import path, which is the
path recstack's own towers, e.g. ``recstack.models.towers.QueryTower``, take
without registering; nothing outside ``recstack.`` is ever imported from a
config).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any

from torch import nn

from ..core.errors import ConfigError
from ..features.base import PreprocessingLayer, layer_from_config
from ..layers.dense import _ACTIVATIONS, MLP, Dense
from ..layers.embedding import Embedding

Config = dict[str, Any]
_Encoder = Callable[[nn.Module], Config]
_Decoder = Callable[[Config], nn.Module]

# name -> (class, encoder, decoder); encoder/decoder None = the module's own protocol.
_REGISTRY: dict[str, tuple[type[nn.Module], _Encoder | None, _Decoder | None]] = {}


def register_tower(cls: type[nn.Module] | None = None, *, name: str | None = None,
                   to_config: _Encoder | None = None, from_config: _Decoder | None = None) -> Any:
    """Register a module class for bundling (usable as a decorator).

    Without ``to_config``/``from_config`` the class must implement ``get_config()`` and
    the classmethod ``from_config(config)``.
    """
    def apply(klass: type[nn.Module]) -> type[nn.Module]:
        if to_config is None and not (hasattr(klass, "get_config") and hasattr(klass, "from_config")):
            raise ConfigError(f"{klass.__name__} must implement get_config() and from_config(config), "
                              "or pass to_config=/from_config= to register_tower.")
        _REGISTRY[name or _qualified(klass)] = (klass, to_config, from_config)
        return klass
    return apply(cls) if cls is not None else apply


def _qualified(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


def registered_towers() -> list[str]:
    return sorted(_REGISTRY)


# -- built-in encoders ----------------------------------------------------------------------------
_ACT_NAMES = {cls: name for name, cls in reversed(list(_ACTIVATIONS.items()))}


def _activation_name(module: nn.Module) -> str:
    try:
        return _ACT_NAMES[type(module)]
    except KeyError:
        raise ConfigError(f"activation {type(module).__name__} has no name in recstack.layers") from None


def _embedding_config(m: nn.Module) -> Config:
    assert isinstance(m, nn.Embedding)
    cfg = {"num_embeddings": m.num_embeddings, "embedding_dim": m.embedding_dim, "padding_idx": m.padding_idx,
           "max_norm": m.max_norm, "norm_type": m.norm_type, "scale_grad_by_freq": m.scale_grad_by_freq,
           "sparse": m.sparse}
    if isinstance(m, Embedding):
        cfg.update({"l2": m.l2, "init_scale": m.init_scale})
    return cfg


def _dense_config(m: nn.Module) -> Config:
    assert isinstance(m, Dense)
    return {"in_features": m.in_features, "out_features": m.out_features, "activation": _activation_name(m.act),
            "bias": m.bias is not None, "l2": m.l2}


def _mlp_config(m: nn.Module) -> Config:
    assert isinstance(m, MLP)
    dense = list(m)
    if not all(isinstance(d, Dense) for d in dense):
        raise ConfigError("an MLP whose layers were replaced cannot be described; wrap it in nn.Sequential.")
    acts = {_activation_name(d.act) for d in dense[:-1]}
    if len(acts) > 1 or len({d.l2 for d in dense}) > 1 or not all(d.bias is not None for d in dense):
        raise ConfigError("this MLP has mixed activations/l2/bias; describe it as an nn.Sequential of Dense.")
    final = _activation_name(dense[-1].act)
    return {"in_features": dense[0].in_features, "layer_sizes": [d.out_features for d in dense],
            "activation": acts.pop() if acts else "relu",
            "final_activation": None if final == "identity" else final, "l2": dense[0].l2}


def _linear_config(m: nn.Module) -> Config:
    assert isinstance(m, nn.Linear)
    return {"in_features": m.in_features, "out_features": m.out_features, "bias": m.bias is not None}


def _layernorm_config(m: nn.Module) -> Config:
    assert isinstance(m, nn.LayerNorm)
    return {"normalized_shape": list(m.normalized_shape), "eps": m.eps,
            "elementwise_affine": m.elementwise_affine, "bias": getattr(m, "bias", None) is not None}


def _builtin(cls: type[nn.Module], name: str, enc: _Encoder, dec: _Decoder) -> None:
    _REGISTRY[name] = (cls, enc, dec)


_builtin(Embedding, "recstack.layers.Embedding", _embedding_config, lambda c: Embedding(**c))
_builtin(nn.Embedding, "torch.nn.Embedding", _embedding_config, lambda c: nn.Embedding(**c))
_builtin(Dense, "recstack.layers.Dense", _dense_config, lambda c: Dense(**c))
_builtin(MLP, "recstack.layers.MLP", _mlp_config, lambda c: MLP(**c))
_builtin(nn.Linear, "torch.nn.Linear", _linear_config, lambda c: nn.Linear(**c))
_builtin(nn.LayerNorm, "torch.nn.LayerNorm", _layernorm_config, lambda c: nn.LayerNorm(**c))
_builtin(nn.Dropout, "torch.nn.Dropout", lambda m: {"p": m.p}, lambda c: nn.Dropout(**c))  # type: ignore[attr-defined]
_builtin(nn.Flatten, "torch.nn.Flatten", lambda m: {"start_dim": m.start_dim, "end_dim": m.end_dim},  # type: ignore[attr-defined]
         lambda c: nn.Flatten(**c))
_builtin(nn.LeakyReLU, "torch.nn.LeakyReLU", lambda m: {"negative_slope": m.negative_slope},  # type: ignore[attr-defined]
         lambda c: nn.LeakyReLU(**c))
_builtin(nn.Softplus, "torch.nn.Softplus", lambda m: {"beta": m.beta, "threshold": m.threshold},  # type: ignore[attr-defined]
         lambda c: nn.Softplus(**c))
for _act in (nn.ReLU, nn.Sigmoid, nn.Tanh, nn.ELU, nn.GELU, nn.SELU, nn.Identity):
    _builtin(_act, f"torch.nn.{_act.__name__}", lambda m: {}, lambda c, _a=_act: _a())


# -- encode / decode ---------------------------------------------------------------------------------
def tower_config(module: nn.Module) -> Config:
    """JSON description of ``module`` (architecture only; weights go in the state_dict)."""
    if isinstance(module, PreprocessingLayer):
        return {"type": "recstack.features", "config": module.get_config()}
    if type(module) is nn.Sequential:
        return {"type": "torch.nn.Sequential", "config": {"layers": [tower_config(m) for m in module]}}
    for name, (cls, enc, _) in _REGISTRY.items():
        if type(module) is cls:
            return {"type": name, "config": enc(module) if enc else module.get_config()}  # type: ignore[operator]
    if callable(getattr(module, "get_config", None)) and callable(getattr(type(module), "from_config", None)):
        name = _qualified(type(module))
        if not name.startswith("recstack."):
            raise ConfigError(f"{name} implements get_config/from_config but is not in recstack; "
                              f"call recstack.serving.register_tower({type(module).__name__}) before export "
                              "and before loading.")
        return {"type": name, "config": module.get_config()}
    raise ConfigError(
        f"cannot describe a {type(module).__module__}.{type(module).__qualname__} for a bundle: supported are "
        "nn.Sequential of recstack.layers / torch.nn layers / recstack.features layers, and modules "
        "implementing get_config() + from_config(config) (see recstack.serving.tower_registry).")


def tower_from_config(config: Config) -> nn.Module:
    """Rebuild an (untrained) module from :func:`tower_config` output."""
    if not isinstance(config, dict) or "type" not in config or "config" not in config:
        raise ConfigError('a tower config must be a dict with "type" and "config" keys.')
    name, body = config["type"], config["config"]
    try:
        if name == "recstack.features":
            return layer_from_config(body)
        if name == "torch.nn.Sequential":
            return nn.Sequential(*[tower_from_config(c) for c in body["layers"]])
        if name in _REGISTRY:
            cls, _, dec = _REGISTRY[name]
            return dec(body) if dec else cls.from_config(body)  # type: ignore[attr-defined]
        cls = _resolve(name)
        return cls.from_config(body)  # type: ignore[attr-defined]
    except (KeyError, TypeError) as exc:
        raise ConfigError(f"malformed config for tower type {name!r}: {exc!r}") from exc


def _resolve(name: str) -> type[nn.Module]:
    """Import ``recstack.<module>.<Class>`` named in a config (recstack modules only)."""
    module_name, _, qualname = name.rpartition(".")
    if not name.startswith("recstack.") or not module_name or not qualname.isidentifier():
        raise ConfigError(f"unknown tower type {name!r}; register it with recstack.serving.register_tower "
                          f"(known: {', '.join(registered_towers())}).")
    try:
        cls = getattr(importlib.import_module(module_name), qualname)
    except (ImportError, AttributeError):
        raise ConfigError(f"tower type {name!r} is not available in this recstack version.") from None
    if not (isinstance(cls, type) and issubclass(cls, nn.Module) and callable(getattr(cls, "from_config", None))):
        raise ConfigError(f"{name} is not a module class with from_config(config).")
    return cls
