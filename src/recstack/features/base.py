"""Common base class and input coercion for the preprocessing layers.

Every layer is a parameter-free ``torch.nn.Module``: it can sit first in an
``nn.Sequential`` and be called on raw values (strings, ids, timestamps). Its
learned state (vocabulary, boundaries, mean/variance) lives in plain Python /
NumPy attributes and is saved through ``get_config()`` as plain JSON, never
through pickle or ``state_dict``.
"""

from __future__ import annotations

import json
from typing import Any, ClassVar, TypeVar

import numpy as np
import pandas as pd
import torch
from torch import nn

from recstack.core.errors import ConfigError, DataError, NotFittedError
from recstack.core.registry import Registry

__all__ = ["PREPROCESSING_LAYERS", "PreprocessingLayer", "layer_from_config", "registered_layers"]

_L = TypeVar("_L", bound="PreprocessingLayer")

# The one table of preprocessing layers: stable name -> class. A layer's saved config records
# its registered name under the "class" key (the names are the class names, as the configs
# written before this table existed already say). HashingLookup is a lazy entry: its module
# is imported on first use, so this module never imports it (no import cycle).
PREPROCESSING_LAYERS: Registry[type[PreprocessingLayer]] = Registry(
    "preprocessing layer", lazy={"HashingLookup": "recstack.features.hashing"}
)

# pandas.api.types.infer_dtype results that can be read as numbers.
_NUMERIC_KINDS = frozenset(
    {"integer", "floating", "mixed-integer-float", "decimal", "boolean", "empty"}
)


class PreprocessingLayer(nn.Module):
    """Base class: a parameter-free module with ``fit`` / ``transform`` / config round trip.

    Subclasses implement ``fit``, ``transform``, ``is_fitted``, ``get_config`` and
    ``_from_config``, and are registered under a stable name with
    ``@PREPROCESSING_LAYERS.register("Name")`` so that saved configs can rebuild them.
    ``forward`` is ``transform``, so ``layer(values)`` works.
    Outputs are created on the device the module was moved to with ``.to(device)``
    (CPU by default), so ``nn.Sequential(lookup, nn.Embedding(...)).to("cuda")`` works.
    """

    def __init__(self) -> None:
        super().__init__()
        # Empty, non-persistent buffer: tracks .to(device) without adding
        # parameters or state_dict entries.
        self.register_buffer("_device_anchor", torch.empty(0), persistent=False)

    # -- to implement ---------------------------------------------------------------
    @property
    def is_fitted(self) -> bool:
        """True once the layer has its state (from ``fit`` or from constructor arguments)."""
        raise NotImplementedError

    def fit(self: _L, values: Any) -> _L:
        """Learn the layer's state from a 1-D batch of values (Keras ``adapt``); returns self."""
        raise NotImplementedError

    def transform(self, values: Any) -> torch.Tensor:
        """Map a batch of raw values to a tensor."""
        raise NotImplementedError

    def get_config(self) -> dict[str, Any]:
        """Plain-JSON dict with a "class" key (``self.registered_name()``) and the fitted state."""
        raise NotImplementedError

    @classmethod
    def _from_config(cls: type[_L], config: dict[str, Any]) -> _L:
        raise NotImplementedError

    # -- shared -----------------------------------------------------------------------
    def registered_name(self) -> str:
        """The stable name this layer's class is registered under (the "class" key of its config)."""
        return PREPROCESSING_LAYERS.name_of(self)

    def forward(self, values: Any) -> torch.Tensor:  # noqa: D102 - same as transform
        return self.transform(values)

    def fit_transform(self, values: Any) -> torch.Tensor:
        """``fit(values)`` then ``transform(values)``."""
        return self.fit(values).transform(values)

    @classmethod
    def from_config(cls: type[_L], config: dict[str, Any]) -> _L:
        """Rebuild a layer from ``get_config()`` output.

        Called on a registered class, the config's "class" must name that class; called on
        the base class (or another unregistered parent such as the lookups' common base) it
        dispatches on ``config["class"]`` like ``layer_from_config``, provided the named class
        is a subclass of ``cls``.
        """
        name = _config_name(config)
        target = PREPROCESSING_LAYERS.get(name)
        if target is not cls and (_is_registered(cls) or not issubclass(target, cls)):
            raise ConfigError(
                f"config is for class {name!r}, not {cls.__name__!r}; "
                "use recstack.features.layer_from_config to rebuild any layer"
            )
        body = {k: v for k, v in config.items() if k != "class"}
        try:
            return target._from_config(body)  # type: ignore[return-value]
        except KeyError as exc:
            raise ConfigError(f"{name} config is missing key {exc.args[0]!r}") from exc

    def to_json(self, indent: int | None = None) -> str:
        """``get_config()`` as JSON text."""
        return json.dumps(self.get_config(), indent=indent, ensure_ascii=False)

    @classmethod
    def from_json(cls: type[_L], text: str) -> _L:
        """Inverse of ``to_json`` (dispatches on "class" when called on the base class)."""
        try:
            config = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ConfigError(f"not valid JSON layer config: {exc}") from exc
        return cls.from_config(config)

    def _require_fitted(self) -> None:
        if not self.is_fitted:
            raise NotFittedError(
                f"{type(self).__name__} is not fitted: call fit(values) first, "
                f"or construct it with its state ({self._state_hint})"
            )

    # What to pass to the constructor instead of calling fit (for the message above).
    _state_hint: ClassVar[str] = "explicit state"

    def _output(self, array: np.ndarray) -> torch.Tensor:
        """NumPy result -> tensor on this module's device (zero-copy on CPU)."""
        tensor = torch.from_numpy(np.ascontiguousarray(array))
        device = self._device_anchor.device
        return tensor if device.type == "cpu" else tensor.to(device)


def registered_layers() -> list[str]:
    """Names of the layer classes ``layer_from_config`` can rebuild (lazy entries included)."""
    return PREPROCESSING_LAYERS.names()


def layer_from_config(config: dict[str, Any]) -> PreprocessingLayer:
    """Rebuild any preprocessing layer from its ``get_config()`` dict (dispatches on the "class" key).

    Raises:
        ConfigError: not a dict with a "class" key, or the name is not a registered layer
            (the message names the closest registered one).
    """
    return PreprocessingLayer.from_config(config)


def _is_registered(cls: type) -> bool:
    return any(value is cls for value in PREPROCESSING_LAYERS.loaded().values())


def _config_name(config: Any) -> str:
    if not isinstance(config, dict) or not isinstance(config.get("class"), str):
        raise ConfigError('a layer config must be a dict with a "class" key naming the layer '
                          f"(one of {registered_layers()})")
    return config["class"]


# ------------------------------------------------------------------------------------
# Input coercion. All return 1-D NumPy arrays and raise DataError with the layer
# name in the message; none loops over rows in Python on the common paths.
# ------------------------------------------------------------------------------------
def to_1d_array(values: Any, layer: str) -> np.ndarray:
    """list / tuple / ndarray / Series / Index / tensor -> 1-D ndarray (any dtype)."""
    if isinstance(values, (str, bytes)):
        raise DataError(
            f"{layer} expects a 1-D batch of values, got a single {type(values).__name__} "
            f"{values[:50]!r}; wrap it in a list: [value]"
        )
    if isinstance(values, pd.DataFrame):
        raise DataError(
            f"{layer} expects a 1-D batch (one column), got a DataFrame with columns "
            f"{list(values.columns)}; pass one column, e.g. df[{str(values.columns[0])!r}]"
        )
    if isinstance(values, torch.Tensor):
        array = values.detach().cpu().numpy()
    elif isinstance(values, (pd.Series, pd.Index)):
        array = values.to_numpy()
    elif isinstance(values, (list, tuple)):
        try:
            # dtype=object when the first item is a string: avoids a fixed-width
            # '<U' copy and keeps mixed input for str() conversion.
            first = values[0] if len(values) else None
            array = np.asarray(values, dtype=object if isinstance(first, (str, bytes)) else None)
        except ValueError as exc:  # ragged nested lists
            raise DataError(f"{layer} expects a 1-D batch of scalars; got nested sequences") from exc
    else:
        array = np.asarray(values)
    if array.ndim != 1:
        what = "a scalar" if array.ndim == 0 else f"an array of shape {tuple(array.shape)}"
        raise DataError(
            f"{layer} expects a 1-D batch of values, got {what}"
            + ("; wrap it in a list: [value]" if array.ndim == 0 else "; flatten it or pass one column")
        )
    return array


def _check_no_nested(array: np.ndarray, layer: str) -> None:
    kind = pd.api.types.infer_dtype(array, skipna=True)
    if kind == "mixed":
        bad = pd.Series(array).map(lambda v: isinstance(v, (list, tuple, dict, set, np.ndarray)))
        if bad.any():
            raise DataError(f"{layer} expects a 1-D batch of scalars; got nested sequences")


def missing_error(array: np.ndarray, mask: np.ndarray, layer: str) -> DataError:
    """DataError describing missing (None/NaN) values at ``mask``."""
    rows = np.flatnonzero(mask)
    return DataError(
        f"{layer} got {len(rows)} missing value(s) (None/NaN), first at row(s) "
        f"{rows[:5].tolist()}; fill or drop them first (e.g. series.fillna(...))"
    )


def to_str_array(values: Any, layer: str) -> np.ndarray:
    """1-D batch -> object ndarray of ``str``. bytes are decoded as UTF-8, other scalars use ``str()``.

    Missing values (None, NaN, pd.NA) raise DataError rather than becoming "None"/"nan" tokens.
    """
    array = to_1d_array(values, layer)
    if array.dtype.kind == "U":
        return array.astype(object)
    if array.dtype.kind == "S":
        try:
            return np.char.decode(array, "utf-8").astype(object)
        except UnicodeDecodeError as exc:
            raise DataError(f"{layer} got bytes that are not valid UTF-8: {exc}") from exc
    if array.dtype.kind in "iub":
        return array.astype(str).astype(object)
    if array.dtype.kind == "f":
        if np.isnan(array).any():
            raise missing_error(array, np.isnan(array), layer)
        return array.astype(str).astype(object)
    if array.dtype != object:  # pandas "str" extension arrays come back as object already
        array = array.astype(object)
    kind = pd.api.types.infer_dtype(array, skipna=False)
    if kind in ("string", "empty"):
        return array
    missing = pd.isna(array)
    if missing.any():
        raise missing_error(array, missing, layer)
    _check_no_nested(array, layer)
    series = pd.Series(array, dtype=object)
    if kind == "bytes":
        try:
            return series.str.decode("utf-8").to_numpy(dtype=object)
        except UnicodeDecodeError as exc:
            raise DataError(f"{layer} got bytes that are not valid UTF-8: {exc}") from exc
    # Mixed scalars (rare): per-element conversion is unavoidable here.
    return series.map(
        lambda v: v.decode("utf-8") if isinstance(v, bytes) else str(v)
    ).to_numpy(dtype=object)


def _numeric_object(array: np.ndarray, layer: str, target: str) -> np.ndarray:
    kind = pd.api.types.infer_dtype(array, skipna=True)
    if kind not in _NUMERIC_KINDS and not kind.startswith("integer"):
        sample = array[:3].tolist()
        raise DataError(f"{layer} expects {target} values, got {kind} values such as {sample!r}")
    missing = pd.isna(array)
    if missing.any():
        raise missing_error(array, missing, layer)
    _check_no_nested(array, layer)
    return array


def to_float_array(values: Any, layer: str, *, allow_inf: bool = True) -> np.ndarray:
    """1-D batch of numbers -> float64 ndarray. NaN (and inf unless allowed) raise DataError."""
    array = to_1d_array(values, layer)
    if array.dtype == object:
        array = _numeric_object(array, layer, "numeric")
    elif array.dtype.kind not in "iufb":
        raise DataError(f"{layer} expects numeric values, got dtype {array.dtype}")
    array = array.astype(np.float64, copy=False)
    bad = ~np.isfinite(array) if not allow_inf else np.isnan(array)
    if bad.any():
        if np.isnan(array).any():
            raise missing_error(array, np.isnan(array), layer)
        rows = np.flatnonzero(bad)
        raise DataError(f"{layer} got {len(rows)} infinite value(s), first at row(s) {rows[:5].tolist()}")
    return array


def to_int_array(values: Any, layer: str) -> np.ndarray:
    """1-D batch of integers -> int64 ndarray. Floats must be whole numbers; NaN raises DataError."""
    array = to_1d_array(values, layer)
    if array.dtype == object:
        array = _numeric_object(array, layer, "integer")
        array = array.astype(np.float64) if pd.api.types.infer_dtype(array) != "integer" else array
    if array.dtype.kind == "f":
        if np.isnan(array).any():
            raise missing_error(array, np.isnan(array), layer)
        whole = np.isfinite(array) & (array == np.round(array))
        if not whole.all():
            rows = np.flatnonzero(~whole)
            raise DataError(
                f"{layer} expects integer values, got non-integers such as "
                f"{array[rows[:3]].tolist()!r} (row(s) {rows[:5].tolist()})"
            )
    elif array.dtype.kind not in "iub":
        raise DataError(f"{layer} expects integer values, got dtype {array.dtype}")
    return array.astype(np.int64, copy=False)
