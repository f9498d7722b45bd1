"""The layers of the house, checked from the code (like import-linter's layers and independence contracts).

devices, simulators <- cosim <- controllers, hil_bench <- benchmarks; the CLI on top. Every import counts (module
level, in functions, under TYPE_CHECKING). No two modules may import each other, directly or around a circle, and
nothing in cosim/, simulators/ or devices/ may reach up to controllers/, hil_bench/ or benchmarks/ -- neither by
import nor by naming a ``"package.module:Name"`` in a string (a plug-in named by string is imported on first use;
such names do not make circles, since nothing is imported at import time, but they do cross layers).

KNOWN_* list what other branches of the same wave remove; the lead deletes each entry when that branch lands (the
test fails on an entry that no longer exists, so the list cannot go stale). Keep them short.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("cosim", "simulators", "devices", "controllers", "hil_bench", "benchmarks", "s4g")
LOWER = {"cosim", "simulators", "devices"}
UPPER = {"controllers", "hil_bench", "benchmarks", "s4g"}
_SPEC = re.compile(r"^([a-z_][a-z0-9_]*(?:\.[a-z_][a-z0-9_]*)*):[A-Za-z_][A-Za-z0-9_]*$")

#: circles being broken on other branches (branch that removes it)
KNOWN_CIRCLES: dict[frozenset[str], str] = {}
#: upward arrows being removed on other branches
KNOWN_UPWARD: dict[tuple[str, str], str] = {}


def _modules() -> dict[str, Path]:
    mods = {}
    for pkg in PACKAGES:
        for f in (REPO / pkg).rglob("*.py"):
            parts = list(f.relative_to(REPO).with_suffix("").parts)
            mods[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = f
    return mods


def import_graph(named: bool = False) -> dict[str, set[str]]:
    """module -> the project modules it imports (``named``: also those it names in a "module:Name" string)."""
    mods = _modules()

    def resolve(name: str) -> str | None:
        while name and name not in mods:
            name = name.rpartition(".")[0]
        return name or None

    edges: dict[str, set[str]] = {m: set() for m in mods}
    for mod, path in mods.items():
        pkg = mod if path.name == "__init__.py" else mod.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    anchor = pkg.split(".")[: len(pkg.split(".")) - (node.level - 1)]
                    base = ".".join(anchor + ([base] if base else []))
                targets = [f"{base}.{a.name}" for a in node.names]
            elif (named and isinstance(node, ast.Constant) and isinstance(node.value, str)
                  and (m := _SPEC.match(node.value))):
                targets = [m.group(1)]
            for target in targets:
                found = resolve(target)
                if found and found != mod and found.split(".")[0] in PACKAGES:
                    edges[mod].add(found)
    return edges


def circles(edges: dict[str, set[str]]) -> list[frozenset[str]]:
    """Strongly connected components with more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[frozenset[str]] = []
    counter = 0
    for root in sorted(edges):
        if root in index:
            continue
        work = [(root, iter(sorted(edges[root])))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            v, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(edges[child]))))
                elif child in on_stack:
                    low[v] = min(low[v], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[v])
            if low[v] == index[v]:
                comp = set()
                while True:
                    w = stack.pop()
                    on_stack.discard(w)
                    comp.add(w)
                    if w == v:
                        break
                if len(comp) > 1:
                    out.append(frozenset(comp))
    return out


def upward(edges: dict[str, set[str]]) -> set[tuple[str, str]]:
    return {(a, b) for a, bs in edges.items() for b in bs if a.split(".")[0] in LOWER and b.split(".")[0] in UPPER}


def test_no_circle_in_the_import_graph():
    found = set(circles(import_graph()))
    new = [sorted(c) for c in found - set(KNOWN_CIRCLES)]
    assert not new, f"modules that import each other (around a circle): {new}"
    gone = [f"{sorted(c)} ({why})" for c, why in KNOWN_CIRCLES.items() if c not in found]
    assert not gone, f"known circles that no longer exist: delete them from KNOWN_CIRCLES: {gone}"


def test_no_arrow_from_a_lower_layer_up():
    found = upward(import_graph(named=True))
    new = sorted(found - set(KNOWN_UPWARD))
    assert not new, f"cosim/, simulators/ or devices/ import (or name) an upper layer: {new}"
    gone = [f"{a} -> {b} ({why})" for (a, b), why in KNOWN_UPWARD.items() if (a, b) not in found]
    assert not gone, f"known upward arrows that no longer exist: delete them from KNOWN_UPWARD: {gone}"


def test_the_checker_sees_what_it_must():
    """The graph is computed, not assumed: a circle and an upward arrow in a toy graph are found."""
    toy = {"cosim.a": {"cosim.b"}, "cosim.b": {"cosim.c"}, "cosim.c": {"cosim.a", "controllers.x"},
           "controllers.x": set()}
    assert circles(toy) == [frozenset({"cosim.a", "cosim.b", "cosim.c"})]
    assert upward(toy) == {("cosim.c", "controllers.x")}
    edges = import_graph(named=True)
    assert "devices.base" in edges["devices.registry"]  # a plain import
    assert "cosim.scenario" in edges["cosim.world"]
    assert "devices.fronius.driver" in edges["devices.fronius.model"]  # named in the family's "module:Class"
    assert "devices.fronius.driver" not in import_graph()["devices.fronius.model"]
