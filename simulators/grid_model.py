"""What every grid loader returns: a pandapower net with stable, unique names (:class:`GridModel`), and the
error a malformed grid file raises (:class:`GridLoadError`, naming file, key path, expectation and finding)."""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from collections.abc import Mapping
from typing import Any

import pandapower as pp
import pandas as pd

PHASE_LETTERS = ("a", "b", "c")


class GridLoadError(Exception):
    """A grid file is missing, unreadable or malformed."""

    def __init__(self, path: str | os.PathLike[str], key_path: str, expected: str, found: object) -> None:
        self.path = str(path)
        self.key_path = key_path
        self.expected = expected
        self.found = found
        where = f" at '{key_path}'" if key_path else ""
        super().__init__(f"{self.path}{where}: expected {expected}, found {found}")


@dataclass(frozen=True)
class LoadInfo:
    """One load (connection point) of the grid: pandapower element row plus its bus and phase (1..3, None=3-phase)."""

    name: str
    element: str  # "load" (symmetric) or "asymmetric_load"
    index: int
    bus: str
    phase: int | None


@dataclass
class GridModel:
    """A pandapower net with stable, unique names for buses, lines, trafos and loads.

    Name lists are ordered like the pandapower tables (``net.bus.index`` etc.), so position i of
    ``bus_names`` belongs to ``bus_index[i]``.
    """

    net: pp.pandapowerNet
    source: str
    bus_names: list[str]
    bus_index: list[int]
    line_names: list[str]
    line_index: list[int]
    trafo_names: list[str]
    trafo_index: list[int]
    loads: list[LoadInfo]
    slack_bus: str
    bus_vn_kv: dict[str, float]
    ders: list[dict[str, Any]] = field(default_factory=list)
    assumptions: list[str] = field(default_factory=list)

    def bus_idx(self, name: str) -> int:
        try:
            return self.bus_index[self.bus_names.index(name)]
        except ValueError:
            raise KeyError(f"unknown bus {name!r}") from None

    def add_load(self, name: str, bus: str, phase: int | None) -> LoadInfo:
        """Add a zero-power connection point; phase 1..3 -> asymmetric_load on that phase, None -> symmetric load."""
        if any(load.name == name for load in self.loads):
            raise ValueError(f"load name {name!r} already exists")
        if phase not in (None, 1, 2, 3):
            raise ValueError(f"phase must be 1, 2, 3 or None, got {phase!r}")
        bus_i = self.bus_idx(bus)
        if phase is None:
            idx = int(pp.create_load(self.net, bus_i, p_mw=0.0, q_mvar=0.0, name=name))
            info = LoadInfo(name, "load", idx, bus, None)
        else:
            idx = int(pp.create_asymmetric_load(self.net, bus_i, name=name))
            info = LoadInfo(name, "asymmetric_load", idx, bus, phase)
        self.loads.append(info)
        return info


def _unique_names(names: pd.Series, prefix: str) -> list[str]:
    """Element names as given when they are present and unique in their table, else ``<prefix><index>``."""
    raw = [None if (v is None or (isinstance(v, float) and math.isnan(v))) else str(v) for v in names.values]
    counts: dict[str, int] = {}
    for v in raw:
        if v:
            counts[v] = counts.get(v, 0) + 1
    return [v if v and counts[v] == 1 else f"{prefix}{i}" for v, i in zip(raw, names.index, strict=True)]


def model_from_net(
    net: pp.pandapowerNet,
    source: str,
    phase_of_asym: Mapping[int, int | None] | None = None,
    ders: list[dict[str, Any]] | None = None,
) -> GridModel:
    bus_names = _unique_names(net.bus["name"], "bus")
    bus_name_of = dict(zip(net.bus.index, bus_names, strict=True))
    loads: list[LoadInfo] = []
    load_names = _unique_names(net.load["name"], "load")
    for idx, name in zip(net.load.index, load_names, strict=True):
        loads.append(LoadInfo(name, "load", int(idx), bus_name_of[int(net.load.at[idx, "bus"])], None))
    taken = {load.name for load in loads}
    asym_names = _unique_names(net.asymmetric_load["name"], "asymmetric_load")
    for idx, name in zip(net.asymmetric_load.index, asym_names, strict=True):
        phase = (phase_of_asym or {}).get(int(idx), _single_phase_of(net.asymmetric_load.loc[idx]))
        if name in taken:
            name = f"asymmetric_load{idx}"
        loads.append(LoadInfo(name, "asymmetric_load", int(idx), bus_name_of[int(net.asymmetric_load.at[idx, "bus"])],
                              phase))
    eg = net.ext_grid[net.ext_grid.in_service]
    slack = bus_name_of[int(eg.bus.iloc[0])] if len(eg) else ""
    return GridModel(
        net=net,
        source=source,
        bus_names=bus_names,
        bus_index=[int(i) for i in net.bus.index],
        line_names=_unique_names(net.line["name"], "line"),
        line_index=[int(i) for i in net.line.index],
        trafo_names=_unique_names(net.trafo["name"], "trafo"),
        trafo_index=[int(i) for i in net.trafo.index],
        loads=loads,
        slack_bus=slack,
        bus_vn_kv={n: float(v) for n, v in zip(bus_names, net.bus.vn_kv.values, strict=True)},
        ders=list(ders or []),
    )


def _single_phase_of(row: pd.Series) -> int | None:
    """Phase of an asymmetric load that draws on exactly one phase (1..3), else None."""
    used = [k + 1 for k, ph in enumerate(PHASE_LETTERS) if row[f"p_{ph}_mw"] != 0 or row[f"q_{ph}_mvar"] != 0]
    return used[0] if len(used) == 1 else None
