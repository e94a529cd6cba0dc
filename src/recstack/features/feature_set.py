"""FeatureSet: a named collection of preprocessing layers applied to table columns."""

from __future__ import annotations

import json
import os
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator, Mapping

import pandas as pd
import torch

from recstack.core.io import atomic_write_json
from recstack.core.errors import ConfigError, DataError, RecstackError
from recstack.features.base import PreprocessingLayer, layer_from_config

__all__ = ["FeatureSet"]

Table = pd.DataFrame | Mapping[str, Any]
_FORMAT = "recstack.FeatureSet"
_VERSION = 1


class FeatureSet:
    """Outputs ``name -> layer(table[input_column])``.

    Build with a dict (output name = input column) and/or ``add``, which lets
    one column feed several outputs::

        fs = FeatureSet({"user_id": StringLookup(), "movie_title": StringLookup()})
        fs.add("timestamp_bucket", Discretization(num_bins=1000), "timestamp")
        fs.add("timestamp_norm", Normalization(), "timestamp")
        batch = fs.fit_transform(df)   # {"user_id": LongTensor [n], ..., "timestamp_norm": float32 [n]}

    A table is a pandas DataFrame or a dict of equal-length 1-D arrays / lists / Series.
    """

    def __init__(self, layers: Mapping[str, PreprocessingLayer] | None = None) -> None:
        self._features: dict[str, tuple[str, PreprocessingLayer]] = {}
        for name, layer in (layers or {}).items():
            self.add(name, layer)

    def add(self, output_name: str, layer: PreprocessingLayer, input_column: str | None = None) -> FeatureSet:
        """Register ``output_name = layer(table[input_column])`` (column defaults to output_name); returns self."""
        if not isinstance(output_name, str) or not output_name:
            raise ConfigError(f"FeatureSet: output names must be non-empty strings, got {output_name!r}")
        if output_name in self._features:
            raise ConfigError(f"FeatureSet: output {output_name!r} is already defined")
        if not isinstance(layer, PreprocessingLayer):
            raise ConfigError(
                f"FeatureSet: output {output_name!r} needs a recstack.features layer, got {type(layer).__name__}"
            )
        column = output_name if input_column is None else input_column
        if not isinstance(column, str) or not column:
            raise ConfigError(f"FeatureSet: input column names must be non-empty strings, got {column!r}")
        self._features[output_name] = (column, layer)
        return self

    # -- access -------------------------------------------------------------------------------
    def __getitem__(self, output_name: str) -> PreprocessingLayer:
        try:
            return self._features[output_name][1]
        except KeyError:
            raise KeyError(f"no output {output_name!r}; outputs: {list(self._features)}") from None

    def __contains__(self, output_name: object) -> bool:
        return output_name in self._features

    def __iter__(self) -> Iterator[str]:
        return iter(self._features)

    def __len__(self) -> int:
        return len(self._features)

    @property
    def output_names(self) -> list[str]:
        """Output names in insertion order."""
        return list(self._features)

    def input_column(self, output_name: str) -> str:
        """The table column that feeds ``output_name``."""
        self[output_name]
        return self._features[output_name][0]

    @property
    def input_columns(self) -> list[str]:
        """Distinct input columns, in first-use order."""
        return list(dict.fromkeys(col for col, _ in self._features.values()))

    @property
    def is_fitted(self) -> bool:
        """True when every layer is fitted."""
        return all(layer.is_fitted for _, layer in self._features.values())

    def __repr__(self) -> str:
        lines = [f"  {name!r} <- {col!r}: {layer!r}" for name, (col, layer) in self._features.items()]
        return "FeatureSet(\n" + "\n".join(lines) + "\n)" if lines else "FeatureSet()"

    # -- fit / transform --------------------------------------------------------------------
    def _columns(self, table: Table, action: str) -> dict[str, Any]:
        """Validate the table and return the needed columns by name."""
        if not self._features:
            raise ConfigError("FeatureSet has no features; add some with add(output_name, layer, input_column)")
        if isinstance(table, (pd.DataFrame, Mapping)):
            available = [str(c) for c in table.keys()]
        else:
            raise DataError(
                f"FeatureSet.{action} expects a pandas DataFrame or a dict of columns, got {type(table).__name__}"
            )
        columns: dict[str, Any] = {}
        for output, (col, _) in self._features.items():
            if col not in table:
                raise DataError(
                    f"FeatureSet.{action}: input column {col!r} (for output {output!r}) not found; "
                    f"available columns: {available}"
                )
            columns[col] = table[col]
        lengths = {col: _length(values) for col, values in columns.items()}
        if len(set(lengths.values())) > 1:
            raise DataError(f"FeatureSet.{action}: columns have different lengths: {lengths}")
        if not lengths or next(iter(lengths.values())) == 0:
            raise DataError(f"FeatureSet.{action}: the table is empty (0 rows)")
        return columns

    def fit(self, table: Table, refit: bool = False) -> FeatureSet:
        """Fit each layer on its input column; returns self.

        Layers that already have their state (explicit ``vocabulary=`` / boundaries /
        mean and variance, or loaded from a config) are kept unless ``refit=True``.
        Layers are fitted in insertion order; if one raises, those before it stay fitted.
        """
        columns = self._columns(table, "fit")
        for output, (col, layer) in self._features.items():
            if layer.is_fitted and not refit:
                continue
            with _context(output, col):
                layer.fit(columns[col])
        return self

    def transform(self, table: Table) -> dict[str, torch.Tensor]:
        """Table with n rows -> {output_name: tensor with leading dimension n}."""
        columns = self._columns(table, "transform")
        out: dict[str, torch.Tensor] = {}
        for output, (col, layer) in self._features.items():
            with _context(output, col):
                out[output] = layer.transform(columns[col])
        return out

    def fit_transform(self, table: Table, refit: bool = False) -> dict[str, torch.Tensor]:
        """``fit(table, refit)`` then ``transform(table)``."""
        return self.fit(table, refit=refit).transform(table)

    # -- persistence --------------------------------------------------------------------------
    def get_config(self) -> dict[str, Any]:
        """Plain-JSON description: every output, its input column and its layer config."""
        return {
            "class": "FeatureSet",
            "format": _FORMAT,
            "version": _VERSION,
            "features": [
                {"output": name, "input": col, "layer": layer.get_config()}
                for name, (col, layer) in self._features.items()
            ],
        }

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> FeatureSet:
        """Inverse of ``get_config``."""
        if not isinstance(config, Mapping) or config.get("class") != "FeatureSet":
            raise ConfigError('not a FeatureSet config (expected a dict with "class": "FeatureSet")')
        if config.get("version", _VERSION) > _VERSION:
            raise ConfigError(
                f"FeatureSet config version {config['version']} is newer than this recstack supports ({_VERSION})"
            )
        fs = cls()
        try:
            for entry in config["features"]:
                fs.add(entry["output"], layer_from_config(entry["layer"]), entry["input"])
        except (KeyError, TypeError) as exc:
            raise ConfigError(f"malformed FeatureSet config: {exc!r}") from exc
        return fs

    def to_json(self, indent: int | None = 2) -> str:
        """``get_config()`` as JSON text."""
        return json.dumps(self.get_config(), indent=indent, ensure_ascii=False)

    @classmethod
    def from_json(cls, text: str) -> FeatureSet:
        """Inverse of ``to_json``."""
        try:
            return cls.from_config(json.loads(text))
        except json.JSONDecodeError as exc:
            raise ConfigError(f"not valid FeatureSet JSON: {exc}") from exc

    def save(self, path: str | os.PathLike) -> Path:
        """Write the config as JSON, atomically (a crash leaves the old file intact); returns the path."""
        path = Path(path)
        atomic_write_json(path, self.get_config())
        return path

    @classmethod
    def load(cls, path: str | os.PathLike) -> FeatureSet:
        """Read a FeatureSet written by ``save``."""
        path = Path(path)
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            raise FileNotFoundError(f"no FeatureSet file at {path}") from None
        except UnicodeDecodeError as exc:
            raise ConfigError(f"{path} is not a FeatureSet file: it is binary, not UTF-8 JSON text (byte "
                              f"{exc.start} is 0x{exc.object[exc.start]:02x}). Pass the .json file that "
                              "FeatureSet.save wrote.") from None
        try:
            return cls.from_json(text)
        except ConfigError as exc:
            raise ConfigError(f"{path}: {exc}") from exc


def _length(values: Any) -> int:
    try:
        return len(values)
    except TypeError:
        raise DataError(f"FeatureSet: columns must be 1-D sequences, got {type(values).__name__}") from None


@contextmanager
def _context(output: str, column: str) -> Iterator[None]:
    """Re-raise layer errors naming the output / column they came from (same exception class)."""
    try:
        yield
    except RecstackError as exc:
        raise type(exc)(f"output {output!r} (column {column!r}): {exc}") from exc
