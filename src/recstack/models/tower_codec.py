"""Towers as JSON without pickle: ``tower_config(module) -> JSON``, ``tower_from_config(JSON) -> module``.

The one codec for every saved ``nn.Module`` in recstack: a serving bundle's
query tower and rating head (:mod:`recstack.serving`) and a
:class:`~recstack.index.BruteForce` index's query model
(:mod:`recstack.index.query_model`) are both stored as this JSON plus their
``state_dict``. Loading rebuilds the architecture from the JSON (no user code,
no pickle, no import) and then loads the weights. A config is
``{"type": name, "config": {...}}`` and nests for containers. ``name`` is a stable
name from :data:`TOWERS` (the one table of this family), never an import path:
moving a class to another module does not break what was saved with it. The
import-path names that bundles of format version 1 and saved indexes recorded
(``"torch.nn.Linear"``, ``"recstack.features"``,
``"recstack.cli.feature_towers.FeatureTower"``, ...) are aliases of the stable
names, so those still load.

Built in:

* ``torch.nn``: sequential, torch_embedding, linear, layer_norm, dropout, flatten,
  leaky_relu, softplus, and the activations relu, sigmoid, tanh, elu, gelu, selu,
  identity (these store no arguments, so a non-default one, e.g. ``ELU(alpha=2)``, is refused).
* ``recstack.layers``: embedding, dense, mlp (an MLP whose layers are not uniform is
  stored as the sequential of its layers: same forward, same state_dict keys).
* ``recstack.features`` preprocessing layers ("preprocessing", their own ``get_config``),
  so a tower like ``nn.Sequential(StringLookup(...), Embedding(...))`` takes raw ids.
* ``recstack.models``: feature_tower (the towers of ``recstack train``); sasrec_encoder,
  gru4rec_encoder and history_query_tower (the query tower of next-item bundles), and
  and the fold-in queries of history bundles: multi_hot_query (EASE, item-KNN), ials_fold_in,
  multvae_fold_in (with recvae_encoder), scaled_concat_query (the ensemble) and
  user_history_query (a two-tower history user tower).

Any other module class plugs in by implementing the protocol

    def get_config(self) -> dict          # JSON: constructor arguments; nested modules
                                          # as tower_config(sub) dicts
    @classmethod
    def from_config(cls, config) -> Self  # same architecture: identical state_dict keys/shapes

and being registered under a stable name (``register_tower(cls, name="my_tower")``,
or ``@register_tower(name="my_tower")``) before saving and before loading.

Weights: :func:`save_npz_state` / :func:`load_npz_state` write and read a
``state_dict`` as a plain ``.npz`` (read back with ``allow_pickle=False``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ..core.errors import ConfigError, DataError
from ..core.registry import Registry
from ..features.base import PreprocessingLayer, layer_from_config
from ..layers.dense import _ACTIVATIONS, MLP, Dense
from ..layers.embedding import Embedding
from ..layers.sequence import GRU4RecEncoder, SASRecEncoder
from .feature_tower import FeatureTower
from .history_tower import HistoryQueryTower, MultiHotQuery, MultVAEFoldInQuery, ScaledConcatQuery, UserHistoryQuery
from .ials import IALSFoldInQuery
from .multvae import RecVAEEncoder

Config = dict[str, Any]
_Encoder = Callable[[nn.Module], Config]
_Decoder = Callable[[Config], nn.Module]

__all__ = ["TOWERS", "TowerCodec", "load_npz_state", "register_tower", "registered_towers", "save_npz_state",
           "tower_config", "tower_from_config"]

_REGISTER = ("recstack.models.tower_codec.register_tower (the same function as recstack.serving.register_tower "
             "and recstack.index.register_query_layer)")


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

    def matches(self, module: Any) -> bool:
        return isinstance(module, self.cls) if self.subclasses else type(module) is self.cls

    def encode(self, module: nn.Module) -> Config:
        return self.to_config(module) if self.to_config else module.get_config()  # type: ignore[operator]

    def decode(self, config: Config) -> nn.Module:
        return self.from_config(config) if self.from_config else self.cls.from_config(config)  # type: ignore[attr-defined]


#: The tower family: stable name -> :class:`TowerCodec` (bundles' towers, BruteForce's query model).
TOWERS: Registry[TowerCodec] = Registry("tower type")


def register_tower(cls: type[nn.Module] | None = None, name: str | None = None, *, to_config: _Encoder | None = None,
                   from_config: _Decoder | None = None, aliases: Iterable[str] = ()) -> Any:
    """Register a module class under the stable ``name`` (usable as a decorator).

    Without ``to_config``/``from_config`` the class must implement ``get_config()`` and
    the classmethod ``from_config(config)``. The name is what saved bundles and indexes
    record, so keep it when the class moves. Registering a class again under its name is
    allowed; another class under a taken name is a ConfigError.

    Example:
        >>> register_tower(MyTower, name="my_tower")
        >>> @register_tower(name="my_other_tower")
        ... class MyOtherTower(nn.Module): ...
    """
    if name is None:
        raise ConfigError("register_tower needs the stable name= the saved configs record.")

    def apply(klass: type[nn.Module]) -> type[nn.Module]:
        lacks = [method for method, given in (("get_config()", to_config), ("from_config(config)", from_config))
                 if given is None and not callable(getattr(klass, method.split("(")[0], None))]
        if lacks:
            raise ConfigError(f"{klass.__name__} must implement {' and '.join(lacks)}, or pass to_config= and "
                              "from_config= to register_tower.")
        existing = TOWERS.loaded().get(name)
        if existing is not None and _qualified(existing.cls) != _qualified(klass):
            raise ConfigError(f"tower type name {name!r} is already registered for {_qualified(existing.cls)}; "
                              f"register {klass.__name__} under another stable name.")
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


def _defaults_only(m: nn.Module) -> Config:
    """``{}`` for a module equal to its class's default construction; its arguments are not stored,
    so anything else (``ELU(alpha=2.0)``) would come back different and is refused."""
    if repr(m) != repr(type(m)()):
        raise ConfigError(f"{m!r} has non-default arguments, which its JSON description cannot store; "
                          "use the default, or register a module that stores them.")
    return {}


def _activation_name(module: nn.Module) -> str:
    try:
        name = _ACT_NAMES[type(module)]
    except KeyError:
        raise ConfigError(f"activation {type(module).__name__} has no name in recstack.layers "
                          f"(named: {sorted(set(_ACTIVATIONS))}).") from None
    _defaults_only(module)
    return name


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


def _uniform_mlp(m: MLP) -> Config | None:
    """MLP constructor arguments that rebuild ``m``, or None when its layers are not what they give."""
    dense = list(m)
    if not all(type(d) is Dense and d.bias is not None for d in dense) or len({d.l2 for d in dense}) > 1:
        return None
    acts = {_activation_name(d.act) for d in dense[:-1]}
    if len(acts) > 1:
        return None
    final = _activation_name(dense[-1].act)
    return {"in_features": dense[0].in_features, "layer_sizes": [d.out_features for d in dense],
            "activation": acts.pop() if acts else "relu",
            "final_activation": None if final == "identity" else final, "l2": dense[0].l2}


def _mlp_config(m: nn.Module) -> Config:
    assert isinstance(m, MLP)
    config = _uniform_mlp(m)
    if config is None:     # tower_config stores such an MLP as the sequential of its layers instead
        raise ConfigError("this MLP's layers are not the ones MLP(...) builds; describe it as an nn.Sequential.")
    return config


def _linear_config(m: nn.Module) -> Config:
    assert isinstance(m, nn.Linear)
    return {"in_features": m.in_features, "out_features": m.out_features, "bias": m.bias is not None}


def _layernorm_config(m: nn.Module) -> Config:
    assert isinstance(m, nn.LayerNorm)
    return {"normalized_shape": list(m.normalized_shape), "eps": m.eps,
            "elementwise_affine": m.elementwise_affine, "bias": getattr(m, "bias", None) is not None}


def _builtin(name: str, cls: type[nn.Module], enc: _Encoder, dec: _Decoder, old: str) -> None:
    """A built-in codec; ``old`` is the import-path name format-1 bundles and saved indexes recorded."""
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
    _builtin(_name, _act, _defaults_only, lambda c, _a=_act: _a(), f"torch.nn.{_act.__name__}")

register_tower(FeatureTower, name="feature_tower", aliases=("recstack.cli.feature_towers.FeatureTower",))
# next-item bundles: the sequence encoders and the history -> query wrapper
register_tower(SASRecEncoder, name="sasrec_encoder")
register_tower(GRU4RecEncoder, name="gru4rec_encoder")
TOWERS.register("history_query_tower", TowerCodec(
    HistoryQueryTower, lambda m: {"encoder": tower_config(m.encoder)},
    lambda c: HistoryQueryTower(tower_from_config(c["encoder"]))))
register_tower(MultiHotQuery, name="multi_hot_query")
register_tower(IALSFoldInQuery, name="ials_fold_in")
TOWERS.register("recvae_encoder", TowerCodec(
    RecVAEEncoder, lambda m: {"in_features": m.layers[0].in_features, "hidden": m.layers[0].out_features,
                              "depth": len(m.layers), "latent_dim": m.head.out_features // 2},
    lambda c: RecVAEEncoder(int(c["in_features"]), int(c["hidden"]), int(c["depth"]), int(c["latent_dim"]))))
TOWERS.register("multvae_fold_in", TowerCodec(
    MultVAEFoldInQuery, lambda m: {"num_items": m.rows.num_items, "latent_dim": m.latent_dim,
                                   "encoder": tower_config(m.encoder), "decoder_hidden": tower_config(m.decoder_hidden)},
    lambda c: MultVAEFoldInQuery(int(c["num_items"]), int(c["latent_dim"]), tower_from_config(c["encoder"]),
                                 tower_from_config(c["decoder_hidden"])).eval()))
TOWERS.register("user_history_query", TowerCodec(
    UserHistoryQuery, lambda m: {"tower": tower_config(m.tower)}, lambda c: UserHistoryQuery(tower_from_config(c["tower"]))))
TOWERS.register("scaled_concat_query", TowerCodec(
    ScaledConcatQuery, lambda m: {"towers": [tower_config(t) for t in m.towers], "factors": list(m.factors)},
    lambda c: ScaledConcatQuery([tower_from_config(t) for t in c["towers"]], [float(f) for f in c["factors"]])))


# -- encode / decode ---------------------------------------------------------------------------------
def tower_config(module: nn.Module) -> Config:
    """JSON description of ``module`` (architecture only; weights go in the state_dict).

    Raises:
        ConfigError: the module (or a part of it) has no registered type, naming it.
    """
    if type(module) is MLP and _uniform_mlp(module) is None:
        return {"type": "sequential", "config": {"layers": [tower_config(x) for x in module]}}
    for name, codec in TOWERS.loaded().items():
        if codec.matches(module):
            return {"type": name, "config": codec.encode(module)}
    what = _qualified(type(module))
    if callable(getattr(module, "get_config", None)) and callable(getattr(type(module), "from_config", None)):
        raise ConfigError(f"{what} implements get_config/from_config but is not registered; call "
                          f"{_REGISTER}: register_tower({type(module).__name__}, name=...) with a stable name "
                          "before saving and before loading.")
    if not isinstance(module, nn.Module):
        what = f"{what} (not a torch module)"
    raise ConfigError(
        f"cannot describe a {what} as JSON. Savable are nn.Sequential of recstack.layers / torch.nn layers / "
        f"recstack.features layers, recstack's towers (registered types: {', '.join(registered_towers())}), "
        f"and modules implementing get_config() + from_config(config) registered with {_REGISTER}.")


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
        raise ConfigError(f"unknown tower type {name!r}; register it with {_REGISTER} "
                          f"(known: {', '.join(registered_towers())}).")
    if not isinstance(body, dict):
        raise ConfigError(f"the config of tower type {name!r} must be a JSON object; got {type(body).__name__}.")
    try:
        return TOWERS.get(name).decode(body)
    except (KeyError, TypeError, ValueError) as exc:
        raise ConfigError(f"malformed config for tower type {name!r}: {exc!r}") from exc


# -- weights ------------------------------------------------------------------------------------------
def save_npz_state(module: nn.Module, path: Path) -> None:
    """Write ``module.state_dict()`` to ``path`` as an uncompressed ``.npz`` (np.savez)."""
    state = {k: v.detach().cpu().contiguous().numpy() for k, v in module.state_dict().items()}
    with open(path, "wb") as handle:
        np.savez(handle, **state)


def load_npz_state(path: Path) -> dict[str, torch.Tensor]:
    """Inverse of :func:`save_npz_state`: name -> tensor, read with ``allow_pickle=False``.

    Raises:
        DataError: the archive holds pickled objects (they are never unpickled).
    """
    try:
        with np.load(path, allow_pickle=False) as data:
            return {k: torch.from_numpy(np.array(data[k])) for k in data.files}
    except ValueError as exc:
        raise DataError(f"{path} is not a plain numpy archive ({exc}); refusing to unpickle it.") from exc
