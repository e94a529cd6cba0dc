"""core.registry: names, aliases, lazy entries, reverse lookup, clear errors."""

import sys
import types

import pytest

from recstack.core.errors import ConfigError
from recstack.core.registry import Registry


def test_register_get_alias_and_name_of():
    reg: Registry[type] = Registry("widget")

    @reg.register("square", aliases=("box",))
    class Square:
        pass

    assert reg.get("square") is Square and reg.get("box") is Square
    assert reg.canonical("box") == "square"
    assert reg.name_of(Square) == "square" and reg.name_of(Square()) == "square"
    assert reg.names() == ["square"] and "box" in reg and "circle" not in reg


def test_unknown_name_suggests_the_closest():
    reg: Registry[int] = Registry("widget")
    reg.register("square", 1)
    with pytest.raises(ConfigError, match=r"unknown widget 'sqare' \(did you mean 'square'\?\)"):
        reg.get("sqare")


def test_two_objects_under_one_name_is_an_error():
    reg: Registry[object] = Registry("widget")

    def first(): ...

    def second(): ...

    reg.register("a", first)
    reg.register("a", first)  # the same object again (e.g. a module imported twice) is fine
    with pytest.raises(ConfigError, match="registered twice"):
        reg.register("a", second)


def test_lazy_entry_imports_its_module_on_first_get(monkeypatch):
    reg: Registry[int] = Registry("widget", lazy={"late": "fake_lazy_widget_module"})
    imported = []

    module = types.ModuleType("fake_lazy_widget_module")
    monkeypatch.setitem(sys.modules, "fake_lazy_widget_module", module)
    import importlib

    real = importlib.import_module

    def fake_import(name, *args):
        if name == "fake_lazy_widget_module":
            imported.append(name)
            reg.register("late", 7)
            return module
        return real(name, *args)

    monkeypatch.setattr(importlib, "import_module", fake_import)
    assert "late" in reg and reg.names() == ["late"] and reg.loaded() == {}
    assert reg.get("late") == 7 and imported == ["fake_lazy_widget_module"]
    assert reg.get("late") == 7 and len(imported) == 1


def test_unregistered_object_has_no_name():
    reg: Registry[type] = Registry("widget")
    with pytest.raises(ConfigError, match="not a registered widget"):
        reg.name_of(int)
