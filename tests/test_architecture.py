"""No import cycles anywhere in recstack, deferred imports inside functions included.

The layering itself is the import-linter contract in pyproject.toml (``lint-imports``, run by
``make test``). Its ``acyclic_siblings`` contract finds cycles between sibling modules, but not
one between a package's ``__init__`` and a module inside it (``recstack`` -> ``serving.bundle``
-> ``recstack``); this test checks the whole module graph for any cycle. grimp records every
import statement, those inside functions too, which is what "not even inside a function" asks.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

grimp = pytest.importorskip("grimp", reason="grimp comes with import-linter (the dev extra)")


def import_cycles(package: str) -> list[list[str]]:
    """Strongly connected components of more than one module in ``package``'s import graph.

    Iterative Tarjan over grimp's graph (internal imports only); each component is sorted,
    and the list is sorted, so a failure message is stable.
    """
    graph = grimp.build_graph(package, include_external_packages=False, cache_dir=None)
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []
    for root in sorted(graph.modules):
        if root in index:
            continue
        work = [(root, iter(sorted(graph.find_modules_directly_imported_by(root))))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph.find_modules_directly_imported_by(child)))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    components.append(sorted(component))
    return sorted(components)


def _describe(package: str, components: list[list[str]]) -> str:
    graph = grimp.build_graph(package, include_external_packages=False, cache_dir=None)
    lines = []
    for component in components:
        lines.append("cycle: " + ", ".join(component))
        members = set(component)
        for importer in component:
            for imported in sorted(graph.find_modules_directly_imported_by(importer) & members):
                for detail in graph.get_import_details(importer=importer, imported=imported):
                    lines.append(f"  {importer} -> {imported} (l.{detail['line_number']}: "
                                 f"{detail['line_contents']})")
    return "\n".join(lines)


def test_recstack_has_no_import_cycle() -> None:
    components = import_cycles("recstack")
    assert not components, "import cycles (break each by moving the shared code down a layer):\n" + \
        _describe("recstack", components)


def test_a_cycle_through_an_import_inside_a_function_is_found(tmp_path: Path, monkeypatch) -> None:
    """The checker itself: a deferred import closes a cycle, a plain chain does not."""
    package = tmp_path / "cyclepkg"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "a.py").write_text("from . import b\n")
    (package / "b.py").write_text("def later():\n    from . import a\n    return a\n")
    (package / "c.py").write_text("from . import a\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    assert import_cycles("cyclepkg") == [["cyclepkg.a", "cyclepkg.b"]]
    (package / "b.py").write_text("def later():\n    return 1\n")
    sys.modules.pop("cyclepkg", None)
    assert import_cycles("cyclepkg") == []
