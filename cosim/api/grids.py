"""Uploaded grids: a DSF-SE document (the original S4G simulation engine's JSON) or a pandapower JSON network.

A grid is checked in full when it is posted (the loaders of :mod:`simulators.grid_loaders`, every problem with its
key path) and kept as a file; each run loads its own fresh model from it, since a run adds connection points to
the net. :func:`single_line` lays the grid out for the GUI's single-line view: a tree from the source, depth
left to right, leaves top to bottom, parents centred on their children (bus geodata is rarely present and
never in DSF-SE files).
"""

from __future__ import annotations

import uuid
from collections import defaultdict, deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from devices import wire_json
from simulators.grid_loaders import GridLoadError, GridModel, load_dsf_se, load_pandapower_json

from .errors import ApiError

#: pandapower's JSON names the classes it rebuilds; only these are accepted from the network (from_json would
#: import and instantiate whatever a document names)
_PANDAPOWER_CLASSES = {("pandapower.auxiliary", "pandapowerNet"), ("pandas.core.frame", "DataFrame"),
                       ("pandas.core.series", "Series")}
MAX_GRID_BYTES = 16 << 20
MAX_DEPTH = 64


@dataclass
class StoredGrid:
    id: str
    kind: str  # "dsf-se" | "pandapower"
    path: Path
    document: dict[str, Any]
    name: str
    buses: int
    lines: int
    loads: int
    layout: dict[str, Any] = field(default_factory=dict)

    def model(self) -> GridModel:
        """A fresh model (a run owns and changes its net)."""
        return load_dsf_se(self.path) if self.kind == "dsf-se" else load_pandapower_json(self.path)

    def summary(self) -> dict[str, Any]:
        return {"id": self.id, "kind": self.kind, "name": self.name, "buses": self.buses, "lines": self.lines,
                "loads": self.loads}


def parse_body(body: bytes) -> dict[str, Any]:
    if not body:
        raise ApiError(400, "empty body: expected a DSF-SE or pandapower JSON grid")
    try:
        doc = wire_json.loads(body, max_bytes=MAX_GRID_BYTES, max_depth=MAX_DEPTH)
    except wire_json.WireDecodeError as exc:
        raise ApiError(400, f"not acceptable JSON: {exc.reason}") from None
    if not isinstance(doc, dict):
        raise ApiError(422, f"expected a JSON object (a DSF-SE or pandapower grid), found {type(doc).__name__}")
    return doc


def kind_of(doc: dict[str, Any]) -> str:
    if "common" in doc or "radials" in doc:
        return "dsf-se"
    if "_module" in doc or "_object" in doc:
        _check_pandapower_classes(doc)
        return "pandapower"
    raise ApiError(422, "expected a DSF-SE grid (keys 'common' and 'radials') or a pandapower JSON network "
                        "(keys '_module', '_class', '_object')")


def _check_pandapower_classes(doc: Any) -> None:
    stack = [doc]
    while stack:
        x = stack.pop()
        if isinstance(x, dict):
            if "_module" in x or "_class" in x:
                pair = (x.get("_module"), x.get("_class"))
                if pair not in _PANDAPOWER_CLASSES:
                    raise ApiError(422, f"pandapower JSON may only hold networks, data frames and series; found "
                                        f"{str(pair[0])[:60]}.{str(pair[1])[:60]}")
            stack.extend(x.values())
        elif isinstance(x, list):
            stack.extend(x)


def store_grid(doc: dict[str, Any], raw: bytes, folder: Path) -> StoredGrid:
    """Check ``doc`` with the loader of its kind and keep it under ``folder``; ApiError(422) names the problem."""
    kind = kind_of(doc)
    gid = uuid.uuid4().hex[:12]
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{gid}.json"
    path.write_bytes(raw)
    try:
        model = load_dsf_se(path) if kind == "dsf-se" else load_pandapower_json(path)
        if kind == "pandapower" and len(model.net.ext_grid) != 1:
            raise ApiError(422, "a pandapower grid needs exactly one external grid (the source)")
    except GridLoadError as exc:
        path.unlink(missing_ok=True)
        where = f" at '{exc.key_path}'" if exc.key_path else ""
        raise ApiError(422, f"grid{where}: expected {exc.expected}, found {exc.found}") from None
    except ApiError:
        path.unlink(missing_ok=True)
        raise
    except Exception as exc:  # pandas/pandapower on malformed tables: still the client's input
        path.unlink(missing_ok=True)
        raise ApiError(422, f"grid not usable: {type(exc).__name__}: {str(exc)[:200]}") from None
    name = str((doc.get("common") or {}).get("id", "")) if kind == "dsf-se" else str(model.net.name or "")
    return StoredGrid(gid, kind, path, doc if kind == "dsf-se" else {}, name or gid, len(model.bus_names),
                      len(model.line_names), len(model.loads), single_line(model))


def single_line(model: GridModel) -> dict[str, Any]:
    """Buses with x (depth from the source) and y (leaf order), and the branches between them."""
    net = model.net
    name_of = dict(zip(model.bus_index, model.bus_names, strict=True))
    branches: list[dict[str, Any]] = []
    for name, idx in zip(model.line_names, model.line_index, strict=True):
        row = net.line.loc[idx]
        branches.append({"name": name, "kind": "line", "from": name_of[int(row.from_bus)],
                         "to": name_of[int(row.to_bus)]})
    for name, idx in zip(model.trafo_names, model.trafo_index, strict=True):
        row = net.trafo.loc[idx]
        branches.append({"name": name, "kind": "trafo", "from": name_of[int(row.hv_bus)],
                         "to": name_of[int(row.lv_bus)]})
    adjacent: dict[str, list[str]] = defaultdict(list)
    for br in branches:
        adjacent[br["from"]].append(br["to"])
        adjacent[br["to"]].append(br["from"])
    root = model.slack_bus or model.bus_names[0]
    depth, children, order = {root: 0}, defaultdict(list), [root]
    queue = deque([root])
    while queue:
        b = queue.popleft()
        for nb in adjacent[b]:
            if nb not in depth:
                depth[nb] = depth[b] + 1
                children[b].append(nb)
                order.append(nb)
                queue.append(nb)
    y: dict[str, float] = {}
    stack, leaf = [root], 0.0
    while stack:  # depth-first, so the leaves of one branch sit next to each other
        b = stack.pop()
        if not children[b]:
            y[b], leaf = leaf, leaf + 1.0
        stack.extend(reversed(children[b]))
    for b in reversed(order):  # breadth-first order reversed: children before their parent
        if children[b]:
            y[b] = sum(y[c] for c in children[b]) / len(children[b])
    for b in model.bus_names:  # islands (not fed): their own row each, after the tree
        if b not in y:
            depth[b], y[b], leaf = 0, leaf, leaf + 1.0
    load_buses = {load.bus for load in model.loads}
    buses = [{"name": b, "x": depth[b], "y": y[b], "vn_kv": model.bus_vn_kv[b], "load": b in load_buses,
              "source": b == root} for b in model.bus_names]
    return {"buses": buses, "branches": branches}
