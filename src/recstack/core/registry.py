"""One registry mechanism for every family of pluggable things.

Model kinds, index backends, preprocessing layers and serving towers each keep
one :class:`Registry`: a table from a stable name to an object (a class or a
builder). Saved artefacts (bundles, run folders, preprocessing JSON) record the
registered *name*, never an import path, so moving a class to another module
never breaks what was saved with it.

Optional backends are registered lazily: ``lazy={"faiss_ivf": "recstack.index.faiss_index"}``
names the module whose import registers the entry, and that module is imported
on the first :meth:`Registry.get` of the name (so ``import recstack`` works without
faiss). Each family's table lives in the layer of the things it holds, so a lazy
import never reaches upwards.

Example::

    INDEXES: Registry[type[Index]] = Registry("index backend", lazy={"faiss_ivf": "recstack.index.faiss_index"})

    @INDEXES.register("brute_force", aliases=("exact",))
    class BruteForce(Index): ...

    INDEXES.get("exact")          # -> BruteForce
    INDEXES.name_of(BruteForce)   # -> "brute_force"
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterable, Mapping
from typing import Generic, TypeVar, overload

from .errors import ConfigError, suggest

T = TypeVar("T")


class Registry(Generic[T]):
    """A name -> object table for one family, with aliases and lazily imported entries.

    Args:
        family: what the entries are, for error messages ("model kind", "index backend").
        lazy: name -> module path; importing the module registers that name. Aliases of
            lazy entries may be listed too (each pointing at the same module).
    """

    def __init__(self, family: str, lazy: Mapping[str, str] | None = None):
        self.family = family
        self._entries: dict[str, T] = {}
        self._aliases: dict[str, str] = {}
        self._lazy: dict[str, str] = dict(lazy or {})

    @overload
    def register(self, name: str, obj: T, *, aliases: Iterable[str] = ()) -> T: ...

    @overload
    def register(self, name: str, obj: None = None, *, aliases: Iterable[str] = ()) -> Callable[[T], T]: ...

    def register(self, name: str, obj: T | None = None, *, aliases: Iterable[str] = ()):
        """Register ``obj`` under ``name`` (and ``aliases``); without ``obj``, a decorator.

        Registering a name twice with a different object is an error (two modules
        claiming one stable name would make saved artefacts ambiguous).
        """

        def add(value: T) -> T:
            existing = self._entries.get(name)
            if existing is not None and existing is not value and _qualname(existing) != _qualname(value):
                raise ConfigError(f"{self.family} {name!r} is registered twice "
                                  f"({_qualname(existing)} and {_qualname(value)}).")
            self._entries[name] = value
            for alias in aliases:
                self._aliases[alias] = name
            return value

        return add if obj is None else add(obj)

    def canonical(self, name: str) -> str:
        """The registered name behind ``name`` (aliases resolved), loading a lazy entry if needed."""
        key = self._aliases.get(name, name)
        if key not in self._entries and key in self._lazy:
            importlib.import_module(self._lazy[key])
            key = self._aliases.get(name, name)
        if key not in self._entries:
            raise ConfigError(f"unknown {self.family} {name!r}{suggest(str(name), self.names())}; "
                              f"choose one of {self.names()}.")
        return key

    def get(self, name: str) -> T:
        """The entry registered as ``name`` (or an alias of it).

        Raises:
            ConfigError: the name is unknown (with the closest valid name), or its
                optional backend is not installed (the ImportError names the extra).
        """
        return self._entries[self.canonical(name)]

    def name_of(self, obj: object) -> str:
        """The registered name of ``obj`` (a registered object, or an instance of a registered class)."""
        for name, value in self._entries.items():
            if value is obj or (isinstance(value, type) and type(obj) is value):
                return name
        raise ConfigError(f"{_qualname(obj)} is not a registered {self.family}: register it under a "
                          f"stable name first (the {self.family} registry's register(name)).")

    def names(self) -> list[str]:
        """Every registered name, lazy ones included (aliases excluded), sorted."""
        return sorted(set(self._entries) | set(self._lazy) - set(self._aliases))

    def loaded(self) -> dict[str, T]:
        """The entries registered so far (lazy ones only once imported)."""
        return dict(self._entries)

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and (name in self._entries or name in self._aliases or name in self._lazy)

    def __repr__(self) -> str:
        return f"Registry({self.family!r}, {self.names()})"


def _qualname(obj: object) -> str:
    target = obj if isinstance(obj, type) or callable(obj) else type(obj)
    return f"{getattr(target, '__module__', '?')}.{getattr(target, '__qualname__', repr(target))}"
