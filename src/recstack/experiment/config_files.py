"""Config files: reading YAML/TOML/JSON, ``--set`` overrides, and the configs shipped with recstack.

``load_config(spec)`` takes a path (``my.yaml``, as always) or the name of a config shipped
in the package (``basic-retrieval``: the file ``recstack/configs/basic_retrieval.yaml``,
package data in the wheel). A spec that is an existing file, ends in a config suffix or
contains a path separator is a path; anything else is a name. Data paths of a file are taken
relative to that file; those of a shipped config relative to the working directory (so the
``my-ratings`` template reads ``ratings.csv`` from where it is run).
"""

from __future__ import annotations

import copy
import json
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..core.errors import ConfigError, suggest
from .config import BUILTIN_DATASETS, ExperimentConfig, parse_config

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10: the backport, a declared dependency there
    import tomli as tomllib

if TYPE_CHECKING:  # pragma: no cover - importlib.resources.abc is new in Python 3.11
    from importlib.resources.abc import Traversable

SUFFIXES = (".yaml", ".yml", ".toml", ".json")
#: Largest config file read (configs are a few KB; this stops a wrong path from being read whole).
MAX_CONFIG_BYTES = 1 << 20
#: Largest number of values a YAML document may expand to through its aliases (a config holds hundreds).
MAX_YAML_VALUES = 100_000


# -- shipped configs -------------------------------------------------------------------------------
@dataclass(frozen=True)
class ShippedConfig:
    """A config file in ``recstack/configs``: its name (the file stem, ``_`` -> ``-``) and file."""

    name: str
    file: Traversable

    def text(self) -> str:
        return self.file.read_text(encoding="utf-8")

    def description(self) -> str:
        """The file's ``description:`` (read without validating the rest)."""
        raw = _parse_text(self.text(), ".yaml", f"{self.name} (shipped)")
        return str(raw.get("description") or "")


def shipped_configs() -> dict[str, ShippedConfig]:
    """Every config shipped with recstack, by name, sorted."""
    folder = resources.files("recstack").joinpath("configs")
    found = {}
    for entry in folder.iterdir():
        if entry.is_file() and entry.name.endswith(".yaml"):
            name = entry.name[: -len(".yaml")].replace("_", "-")
            found[name] = ShippedConfig(name, entry)
    return dict(sorted(found.items()))


def shipped_config(name: str) -> ShippedConfig:
    """The shipped config called ``name`` (``basic-retrieval``; ``basic_retrieval`` works too)."""
    configs = shipped_configs()
    key = name.replace("_", "-")
    if key not in configs:
        raise ConfigError(f"no config file and no shipped config named {name!r}{suggest(key, list(configs))}; "
                          f"shipped configs: {', '.join(configs)} (recstack configs lists them), or give a path "
                          "to a .yaml/.toml/.json file.")
    return configs[key]


def is_path(spec: str | os.PathLike) -> bool:
    """Whether ``spec`` names a file (exists, has a config suffix or a path separator) rather than a
    shipped config."""
    if isinstance(spec, os.PathLike):
        return True
    text = str(spec)
    return (Path(text).is_file() or text.lower().endswith(SUFFIXES) or os.sep in text
            or (os.altsep is not None and os.altsep in text))


# -- reading ---------------------------------------------------------------------------------------
def read_config_file(path: str | os.PathLike) -> dict[str, Any]:
    """Parse a .yaml/.yml, .toml or .json file into a dict (no validation yet)."""
    path = Path(path)
    if path.is_dir():
        raise ConfigError(f"{path} is a folder, not a config file; give a .yaml/.toml/.json file or a shipped "
                          "config's name (recstack configs lists them).")
    if not path.exists():
        raise ConfigError(f"config file {path} does not exist.")
    if not path.is_file():
        raise ConfigError(f"{path} is not a regular file; give a .yaml/.toml/.json config file.")
    size = path.stat().st_size
    if size > MAX_CONFIG_BYTES:
        raise ConfigError(f"{path} is {size:,} bytes; a config file is at most {MAX_CONFIG_BYTES:,} bytes (configs "
                          "are a few hundred lines; is this the right file?).")
    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path} is not UTF-8 text ({exc.reason} at byte {exc.start}); a config file is YAML, "
                          "TOML or JSON text.") from None
    return _parse_text(text, path.suffix.lower(), str(path))


def _parse_text(text: str, suffix: str, label: str) -> dict[str, Any]:
    try:
        if suffix in (".yaml", ".yml"):
            raw = load_yaml(text, label)
        elif suffix == ".toml":
            raw = tomllib.loads(text)
        elif suffix == ".json":
            raw = json.loads(text)
        else:
            raise ConfigError(f"{label}: unknown config format {suffix!r}; use .yaml, .yml, .toml or .json.")
    except ConfigError:
        raise
    except RecursionError:
        raise ConfigError(f"{label} nests its values too deeply to be a config.") from None
    except Exception as exc:  # yaml.YAMLError, tomllib.TOMLDecodeError, json.JSONDecodeError
        raise ConfigError(f"{label} is not valid {suffix.lstrip('.').upper()}: {_one_line(exc)}") from None
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{label}: the top level must be a mapping of sections, got {type(raw).__name__}.")
    return raw


def load_yaml(text: str, label: str) -> Any:
    """``yaml.safe_load(text)``, refusing documents whose aliases expand beyond :data:`MAX_YAML_VALUES`.

    PyYAML shares the node of an anchor (``&a``) among its aliases (``*a``), so a few lines of
    nested aliases (a "billion laughs" file) describe a document of 10^9 values: loading is fast,
    but everything that walks the result (validation, copying, printing) takes minutes. The
    expanded size is counted on the composed node graph, once per node (linear in the file), and
    a document over the bound is refused before anything is constructed.
    """
    import yaml

    loader = yaml.SafeLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        size = _expanded_size(node, label)
        if size > MAX_YAML_VALUES:
            raise ConfigError(f"{label}: the YAML expands to more than {MAX_YAML_VALUES:,} values through its "
                              "aliases (*name), far more than any config holds; refusing it (a 'billion laughs' "
                              "file?). Write the values out or use fewer nested aliases.")
        return loader.construct_document(node)
    finally:
        loader.dispose()


def _expanded_size(root: Any, label: str) -> int:
    """Number of values of the document ``root`` describes with every alias expanded (capped just
    above :data:`MAX_YAML_VALUES`); a node that contains itself is refused."""
    import yaml

    sizes: dict[int, int] = {}
    stack: list[tuple[Any, bool]] = [(root, False)]
    open_nodes: set[int] = set()
    while stack:
        node, children_done = stack.pop()
        key = id(node)
        if key in sizes:
            continue
        if isinstance(node, yaml.SequenceNode):
            children = list(node.value)
        elif isinstance(node, yaml.MappingNode):
            children = [part for pair in node.value for part in pair]
        else:
            sizes[key] = 1
            continue
        if children_done:
            open_nodes.discard(key)
            sizes[key] = min(1 + sum(sizes[id(c)] for c in children), MAX_YAML_VALUES + 1)
            continue
        if key in open_nodes:
            raise ConfigError(f"{label}: the YAML contains an alias to a collection inside itself (a "
                              "recursive structure); a config cannot hold one.")
        open_nodes.add(key)
        stack.append((node, True))
        for child in children:
            if id(child) in open_nodes:
                raise ConfigError(f"{label}: the YAML contains an alias to a collection inside itself (a "
                                  "recursive structure); a config cannot hold one.")
            if id(child) not in sizes:
                stack.append((child, False))
    return sizes[id(root)]


def _one_line(exc: Exception) -> str:
    """A parser's error on one line: the problem and where (YAML errors span several lines)."""
    problem = getattr(exc, "problem", None)
    mark = getattr(exc, "problem_mark", None)
    if problem and mark is not None:
        context = getattr(exc, "context", None)
        return f"{problem}{f' ({context})' if context else ''} at line {mark.line + 1}, column {mark.column + 1}"
    return " ".join(str(exc).split())


def apply_overrides(raw: dict[str, Any], overrides: Sequence[str]) -> dict[str, Any]:
    """Apply ``--set a.b.c=value`` overrides (values parsed as YAML: 5, 0.1, true, null, [64, 32]).

    Returns a new dict; missing intermediate sections are created.
    """
    import yaml

    out = copy.deepcopy(raw)
    for item in overrides:
        key, sep, text = item.partition("=")
        key = key.strip()
        if not sep or not key or any(not part for part in key.split(".")):
            raise ConfigError(f"--set expects KEY=VALUE with a dotted KEY (e.g. training.epochs=5); got {item!r}.")
        try:
            value = load_yaml(text, f"--set {item!r}") if text.strip() else None
        except yaml.YAMLError as exc:
            raise ConfigError(f"--set {item!r}: the value is not valid YAML ({_one_line(exc)}).") from None
        node = out
        parts = key.split(".")
        for depth, part in enumerate(parts[:-1]):
            child = node.get(part)
            if child is None:
                child = node[part] = {}
            elif not isinstance(child, dict):
                raise ConfigError(f"--set {item!r}: {'.'.join(parts[:depth + 1])} is a value, not a section.")
            node = child
        node[parts[-1]] = value
    return out


def load_config(spec: str | os.PathLike, overrides: Sequence[str] = ()) -> ExperimentConfig:
    """Read (a file or a shipped config by name), override, validate and resolve the data paths."""
    raw, source, base = read_raw_config(spec, overrides)
    config = parse_config(raw, source=source)
    return resolve_paths(config, base)


def read_raw_config(spec: str | os.PathLike, overrides: Sequence[str] = ()) -> tuple[dict[str, Any], str, Path]:
    """(the overridden mapping, its source label, the folder relative data paths are taken from) of
    a config file or a shipped config's name, before validation (what :func:`load_config` parses)."""
    if is_path(spec):
        path = Path(spec)
        raw, source, base = read_config_file(path), str(path), path.parent
    else:
        shipped = shipped_config(str(spec))
        raw = _parse_text(shipped.text(), ".yaml", shipped.name)
        source, base = shipped.name, Path.cwd()
    return apply_overrides(raw, overrides), source, base


def resolve_paths(config: ExperimentConfig, base: Path) -> ExperimentConfig:
    """Make data paths absolute (relative ones are taken from ``base``)."""
    def resolve(value: str) -> str:
        if value in BUILTIN_DATASETS:
            return value
        p = Path(value).expanduser()
        return str(p if p.is_absolute() else (base / p).resolve())

    config.data.interactions = resolve(config.data.interactions)
    for table in (config.data.items, config.data.users):
        if table is not None:
            table.path = resolve(table.path)
    return config


__all__ = ["MAX_CONFIG_BYTES", "MAX_YAML_VALUES", "ShippedConfig", "apply_overrides", "is_path", "load_config",
           "load_yaml", "read_config_file", "read_raw_config", "resolve_paths", "shipped_config", "shipped_configs"]
