"""Describable towers: ``tower_config(module) -> JSON`` and ``tower_from_config(JSON) -> module``.

A bundle stores a tower as this JSON plus its ``state_dict``; loading rebuilds
the architecture from the JSON (no user code, no pickle, no import) and then
loads the weights. A config is ``{"type": name, "config": {...}}`` and nests for
containers. ``name`` is a stable name from the :data:`TOWERS` registry (the one
table of this family), never an import path: moving a class to another module
does not break the bundles saved with it. The import-path names that bundles
of format version 1 recorded (``"torch.nn.Linear"``,
``"recstack.cli.feature_towers.FeatureTower"``, ...) are aliases of the stable
names, so those bundles still load.

Built in:

* ``torch.nn``: sequential, torch_embedding, linear, layer_norm, dropout, flatten,
  and the activations relu, sigmoid, tanh, elu, gelu, selu, leaky_relu, softplus, identity.
* ``recstack.layers``: embedding, dense, mlp.
* ``recstack.features`` preprocessing layers ("preprocessing", their own ``get_config``),
  so a tower like ``nn.Sequential(StringLookup(...), Embedding(...))`` takes raw ids.
* ``recstack.models``: feature_tower (the towers of ``recstack train``).

Any other module class plugs in by implementing the protocol

    def get_config(self) -> dict          # JSON: constructor arguments; nested modules
                                          # as tower_config(sub) dicts
    @classmethod
    def from_config(cls, config) -> Self  # same architecture: identical state_dict keys/shapes

and being registered under a stable name (``register_tower(cls, name="my_tower")``,
or ``@register_tower(name="my_tower")``) before export and before loading.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from torch import nn

from ..core.errors import ConfigError
from ..core.registry import Registry
from ..features.base import PreprocessingLayer, layer_from_config
from ..layers.dense import _ACTIVATIONS, MLP, Dense
from ..layers.embedding import Embedding
from ..models.feature_tower import FeatureTower

Config = dict[str, Any]
_Encoder = Callable[[nn.Module], Config]
_Decoder = Callable[[Config], nn.Module]

__all__ = ["TOWERS", "TowerCodec", "register_tower", "registered_towers", "tower_config", "tower_from_config"]


@dataclass(frozen=True)
class TowerCodec:
    """How one module class is written to and rebuilt from JSON.

    Args:
        cls: the module class (matched exactly, or any subclass with ``subclasses``).
        to_config: module -> JSON config; None = the module's own ``get_config()``.
        from_config: JSON config -> module; None = ``cls.from_config(config)``.
        subclasses: also describe subclasses of ``cls`` (the preprocessing layers,
            whose own config names their class).
    """

    cls: type[nn.Module]
    to_config: _Encoder | None = None
    from_config: _Decoder | None = None
    subclasses: bool = False

    def matches(self, module: nn.Module) -> bool:
        return isinstance(module, self.cls) if self.subclasses else type(module) is self.cls

    def encode(self, module: nn.Module) -> Config:
        return self.to_config(module) if self.to_config else module.get_config()  # type: ignore[operator]

    def decode(self, config: Config) -> nn.Module:
        return self.from_config(config) if self.from_config else self.cls.from_config(config)  # type: ignore[attr-defined]


#: The serving-tower family: stable name -> :class:`TowerCodec`.
TOWERS: Registry[TowerCodec] = Registry("serving tower")


def register_tower(cls: type[nn.Module] | None = None, *, name: str, to_config: _Encoder | None = None,
                   from_config: _Decoder | None = None, aliases: Iterable[str] = ()) -> Any:
    """Register a module class for bundling under the stable ``name`` (usable as a decorator).

    Without ``to_config``/``from_config`` the class must implement ``get_config()`` and
    the classmethod ``from_config(config)``. The name is what bundles record, so keep it
    when the class moves.
    """
    def apply(klass: type[nn.Module]) -> type[nn.Module]:
        if to_config is None and not (hasattr(klass, "get_config") and hasattr(klass, "from_config")):
            raise ConfigError(f"{klass.__name__} must implement get_config() and from_config(config), "
                              "or pass to_config=/from_config= to register_tower.")
        if name in TOWERS.loaded() and _qualified(TOWERS.get(name).cls) != _qualified(klass):
            raise ConfigError(f"serving tower name {name!r} is already taken by {_qualified(TOWERS.get(name).cls)}; "
                              f"register {klass.__name__} under another name.")
        TOWERS.register(name, TowerCodec(klass, to_config, from_config), aliases=aliases)
        return klass
    return apply(cls) if cls is not None else apply


def _qualified(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


def registered_towers() -> list[str]:
    """The stable names of every registered tower type."""
    return TOWERS.names()


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


def _builtin(name: str, cls: type[nn.Module], enc: _Encoder, dec: _Decoder, old: str) -> None:
    """A built-in codec; ``old`` is the import-path name format-1 bundles recorded."""
    TOWERS.register(name, TowerCodec(cls, enc, dec), aliases=(old,))


_builtin("sequential", nn.Sequential, lambda m: {"layers": [tower_config(x) for x in m]},
         lambda c: nn.Sequential(*[tower_from_config(x) for x in c["layers"]]), "torch.nn.Sequential")
TOWERS.register("preprocessing", TowerCodec(PreprocessingLayer, lambda m: m.get_config(), layer_from_config,
                                            subclasses=True), aliases=("recstack.features",))
_builtin("embedding", Embedding, _embedding_config, lambda c: Embedding(**c), "recstack.layers.Embedding")
_builtin("torch_embedding", nn.Embedding, _embedding_config, lambda c: nn.Embedding(**c), "torch.nn.Embedding")
_builtin("dense", Dense, _dense_config, lambda c: Dense(**c), "recstack.layers.Dense")
_builtin("mlp", MLP, _mlp_config, lambda c: MLP(**c), "recstack.layers.MLP")
_builtin("linear", nn.Linear, _linear_config, lambda c: nn.Linear(**c), "torch.nn.Linear")
_builtin("layer_norm", nn.LayerNorm, _layernorm_config, lambda c: nn.LayerNorm(**c), "torch.nn.LayerNorm")
_builtin("dropout", nn.Dropout, lambda m: {"p": m.p}, lambda c: nn.Dropout(**c), "torch.nn.Dropout")  # type: ignore[attr-defined]
_builtin("flatten", nn.Flatten, lambda m: {"start_dim": m.start_dim, "end_dim": m.end_dim},  # type: ignore[attr-defined]
         lambda c: nn.Flatten(**c), "torch.nn.Flatten")
_builtin("leaky_relu", nn.LeakyReLU, lambda m: {"negative_slope": m.negative_slope},  # type: ignore[attr-defined]
         lambda c: nn.LeakyReLU(**c), "torch.nn.LeakyReLU")
_builtin("softplus", nn.Softplus, lambda m: {"beta": m.beta, "threshold": m.threshold},  # type: ignore[attr-defined]
         lambda c: nn.Softplus(**c), "torch.nn.Softplus")
for _name, _act in (("relu", nn.ReLU), ("sigmoid", nn.Sigmoid), ("tanh", nn.Tanh), ("elu", nn.ELU),
                    ("gelu", nn.GELU), ("selu", nn.SELU), ("identity", nn.Identity)):
    _builtin(_name, _act, lambda m: {}, lambda c, _a=_act: _a(), f"torch.nn.{_act.__name__}")

register_tower(FeatureTower, name="feature_tower", aliases=("recstack.cli.feature_towers.FeatureTower",))


# -- encode / decode ---------------------------------------------------------------------------------
def tower_config(module: nn.Module) -> Config:
    """JSON description of ``module`` (architecture only; weights go in the state_dict)."""
    for name, codec in TOWERS.loaded().items():
        if codec.matches(module):
            return {"type": name, "config": codec.encode(module)}
    if callable(getattr(module, "get_config", None)) and callable(getattr(type(module), "from_config", None)):
        raise ConfigError(f"{_qualified(type(module))} implements get_config/from_config but is not registered; "
                          f"call recstack.serving.register_tower({type(module).__name__}, name=...) with a "
                          "stable name before export and before loading.")
    raise ConfigError(
        f"cannot describe a {_qualified(type(module))} for a bundle: supported are "
        "nn.Sequential of recstack.layers / torch.nn layers / recstack.features layers, recstack's "
        f"towers ({', '.join(registered_towers())}), and registered modules implementing get_config() + "
        "from_config(config) (see recstack.serving.tower_registry).")


def tower_from_config(config: Config) -> nn.Module:
    """Rebuild an (untrained) module from :func:`tower_config` output.

    Raises:
        ConfigError: an unknown type name (only registered names and their aliases are
            accepted; nothing is imported), or a malformed config.
    """
    if not isinstance(config, dict) or "type" not in config or "config" not in config:
        raise ConfigError('a tower config must be a dict with "type" and "config" keys.')
    name, body = config["type"], config["config"]
    if not isinstance(name, str) or name not in TOWERS:
        raise ConfigError(f"unknown tower type {name!r}; register it with recstack.serving.register_tower "
                          f"(known: {', '.join(registered_towers())}).")
    if not isinstance(body, dict):
        raise ConfigError(f"the config of tower type {name!r} must be a JSON object; got {type(body).__name__}.")
    try:
        return TOWERS.get(name).decode(body)
    except (KeyError, TypeError, ValueError) as exc:
        raise ConfigError(f"malformed config for tower type {name!r}: {exc!r}") from exc
