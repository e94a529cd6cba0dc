"""A generic validator that builds typed dataclasses from plain mappings (parsed YAML/TOML/JSON).

It knows nothing about experiments: :mod:`recstack.experiment.config` declares the schema as
dataclasses and calls :func:`parse_dataclass`. Every problem is appended to an ``errors`` list
with its dotted path (``training.epochs: expected an integer, got 'ten' (str)``), so a config
reports all of its mistakes at once instead of the first one.

Supported field types: ``bool``, ``int``, ``float`` (ints accepted; inf and NaN refused), ``str``, ``Any``,
``Literal[...]``, ``X | None``, unions of those, ``list[X]``, ``dict[str, X]`` and nested
dataclasses.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from collections.abc import Mapping
from typing import Any, Literal

from ..core.errors import suggest


def parse_dataclass(cls: type, raw: Any, where: str, errors: list[str], skip: typing.AbstractSet[str] = frozenset(),
                    context: str = "") -> Any:
    """Build dataclass ``cls`` from ``raw``, appending problems to ``errors`` (returns None on failure).

    Args:
        cls: the dataclass; every field's type hint must be one of the supported types.
        raw: the mapping to read (anything else is reported).
        where: dotted path of ``raw`` in the whole document ("" at the top level).
        errors: problems found so far; this call appends to it.
        skip: field names the caller parses itself (neither read nor reported as unknown).
        context: appended to "unknown key" messages (e.g. " for model kind 'two_tower'").
    """
    label = where or "the top level"
    if not isinstance(raw, Mapping):
        errors.append(f"{label}: expected a mapping, got {describe(raw)}")
        return None
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.name not in skip}
    kwargs: dict[str, Any] = {}
    for key, value in raw.items():
        path = f"{where}.{key}" if where else str(key)
        if key not in fields:
            valid = sorted([*fields, *skip])
            errors.append(f"{path}: unknown key{context}{suggest(str(key), valid)}; valid keys here: "
                          f"{', '.join(valid)}")
            continue
        ok, converted = convert(hints[key], value, path, errors)
        if ok:
            kwargs[key] = converted
    for name, f in fields.items():
        if name not in kwargs and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            if name not in raw:  # a present-but-invalid value was reported already
                path = f"{where}.{name}" if where else name
                errors.append(f"{path}: missing required key")
    try:
        return cls(**kwargs)
    except TypeError:
        return None  # a required field is missing; already reported


def convert(hint: Any, value: Any, path: str, errors: list[str]) -> tuple[bool, Any]:
    """(ok, value converted to ``hint``); on failure the reason is appended to ``errors``."""
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if hint is Any:
        return True, value
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return True, None
        options = [a for a in args if a is not type(None)]
        if len(options) == 1:
            return convert(options[0], value, path, errors)
        trial: list[str] = []
        for option in options:
            ok, converted = convert(option, value, path, trial)
            if ok:
                return True, converted
        errors.append(f"{path}: expected {type_name(hint)}, got {describe(value)}")
        return False, None
    if origin is Literal:
        if value in args and not isinstance(value, bool):
            return True, value
        allowed = ", ".join(repr(a) for a in args)
        errors.append(f"{path}: must be one of {allowed}; got {value!r}{suggest(str(value), [str(a) for a in args])}")
        return False, None
    if origin is list:
        if not isinstance(value, (list, tuple)):
            errors.append(f"{path}: expected a list of {type_name(args[0])}, got {describe(value)}")
            return False, None
        out, ok_all = [], True
        for i, item in enumerate(value):
            ok, converted = convert(args[0], item, f"{path}[{i}]", errors)
            ok_all &= ok
            out.append(converted)
        return ok_all, out
    if origin is dict:
        if not isinstance(value, Mapping):
            errors.append(f"{path}: expected a mapping of {type_name(args[1])}, got {describe(value)}")
            return False, None
        mapping, ok_all = {}, True
        for key, item in value.items():
            if not isinstance(key, str):
                errors.append(f"{path}: keys must be strings, got {describe(key)}")
                ok_all = False
                continue
            ok, converted = convert(args[1], item, f"{path}.{key}", errors)
            ok_all &= ok
            mapping[key] = converted
        return ok_all, mapping
    if dataclasses.is_dataclass(hint):
        result = parse_dataclass(hint, value, path, errors)
        return result is not None, result
    if hint is bool:
        if isinstance(value, bool):
            return True, value
    elif hint is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return True, value
    elif hint is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            if not math.isfinite(value):
                errors.append(f"{path}: must be a finite number, got {value}")
                return False, None
            return True, float(value)
    elif hint is str:
        if isinstance(value, str):
            return True, value
    else:  # pragma: no cover - a field type this parser does not know
        raise TypeError(f"unsupported config field type {hint!r} at {path}")
    errors.append(f"{path}: expected {type_name(hint)}, got {describe(value)}")
    return False, None


def type_name(hint: Any) -> str:
    """Words for a type hint: "an integer", "a list of a number", "one of 'a', 'b'"."""
    names = {bool: "true/false", int: "an integer", float: "a number", str: "a string", Any: "a value"}
    if hint in names:
        return names[hint]
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        parts = [type_name(a) for a in args if a is not type(None)]
        return " or ".join(parts) + (" or null" if type(None) in args else "")
    if origin is list:
        return f"a list of {type_name(args[0])}"
    if origin is dict:
        return f"a mapping of {type_name(args[1])}"
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in args)
    if dataclasses.is_dataclass(hint):
        return "a mapping"
    return str(hint)


def describe(value: Any) -> str:
    """A value as an error message shows it: "'ten' (str)", "true (a boolean)", "null"."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return f"{str(value).lower()} (a boolean)"
    if isinstance(value, (dict, list)):
        return f"a {'mapping' if isinstance(value, dict) else 'list'} ({value!r:.60})"
    return f"{value!r} ({type(value).__name__})"


__all__ = ["convert", "describe", "parse_dataclass", "type_name"]
