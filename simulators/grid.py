"""The grid simulator of the co-simulation spine: a plain mosaik-api-v3 simulator around :class:`GridEngine`.

``GridEngine`` (no mosaik) owns one grid: the loaded :class:`GridModel`, the driven loads (every load of the grid
file plus the connection points the scenario adds) and a :class:`PowerFlow`. ``GridSim`` maps mosaik entities and
attributes onto it; several sources connected to one Load are summed, and a Load without input keeps its value.

A Load entity is a connection point: it takes ``p_w`` / ``q_var`` (load arrow) and offers what a meter at the point
sees after the power flow: the net ``p_w`` / ``q_var`` drawn there, per phase ``p_a_w`` .. ``p_c_w`` (a single-phase
point draws on its phase only, a three-phase one is symmetric), its voltage ``v_pu`` (the point's phase, or the
positive sequence for three-phase points) and the phase voltages ``v_a_pu`` .. ``v_c_pu`` of its bus (balanced
grids: all equal). These are the ``point.*`` sources of the device-family contract (docs/architecture.md).

Events (cosim/events.py): a Load's input ``grid_present`` = 0 opens the point (an outage at a PCC): it draws
nothing in the power flow, the rest of the feeder goes on, and the point reports 0 W and 0 V (the grid is absent on
its side; no NaN). The Grid's input ``v_source_pu`` scales the source (slack) voltage: a sag upstream.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Literal
from collections.abc import Iterable, Mapping, Sequence

import mosaik_api_v3
from mosaik_api_v3.types import CreateResult, Meta
import numpy as np
import pandapower as pp

from simulators.grid_loaders import GridModel, LoadInfo, ensure_three_phase_data, load_grid
from simulators.powerflow import (
    LoadRef,
    Mode,
    PowerFlow,
    PowerFlowDiverged,
    PowerFlowResult,
    Solver,
)

__all__ = ["META", "ExtraLoad", "GridEngine", "GridSim", "PowerFlowDiverged"]

StaticLoads = Literal["zero", "file"]

GRID_SCALARS = ["p_slack_w", "q_slack_var", "losses_w", "v_min_pu", "v_max_pu", "iterations"]
GRID_VECTORS = ["bus_v_pu", "bus_v_a_pu", "bus_v_b_pu", "bus_v_c_pu", "line_loading_pct", "trafo_loading_pct",
                "trafo_p_hv_w"]
#: what a connection point offers (inputs: p_w, q_var)
LOAD_ATTRS = ["p_w", "q_var", "v_pu", "v_a_pu", "v_b_pu", "v_c_pu", "p_a_w", "p_b_w", "p_c_w"]
META: dict[str, Any] = {
    "api_version": "3.0",
    "type": "time-based",
    "models": {
        "Grid": {
            "public": True,
            "params": ["source", "path", "code", "mode", "solver", "extra_loads", "static_loads", "ampacity_a",
                       "lv_z0_over_z1"],
            "attrs": GRID_SCALARS + GRID_VECTORS + ["v_source_pu"],
        },
        "Bus": {"public": False, "params": [], "attrs": ["v_pu", "v_a_pu", "v_b_pu", "v_c_pu"]},
        "Line": {"public": False, "params": [], "attrs": ["loading_pct", "pl_w"]},
        "Trafo": {"public": False, "params": [], "attrs": ["loading_pct", "p_hv_w"]},
        "Load": {"public": False, "params": [], "attrs": LOAD_ATTRS + ["grid_present"]},
        # many Loads' outputs as vectors (element i: loads[i]): one value per step for mosaik instead of one per load
        "Points": {"public": True, "params": ["loads"], "attrs": LOAD_ATTRS + ["grid_present"]},
    },
}


@dataclass(frozen=True)
class ExtraLoad:
    """A connection point the scenario adds: id, bus name, phase 1..3 or None (three-phase symmetric)."""

    id: str
    bus: str
    phase: int | None = None

    @classmethod
    def parse(cls, spec: Mapping[str, Any] | ExtraLoad) -> ExtraLoad:
        if isinstance(spec, ExtraLoad):
            return spec
        if not isinstance(spec, Mapping) or "id" not in spec or "bus" not in spec:
            raise ValueError(f"extra load needs 'id' and 'bus' (and optional 'phase'), got {spec!r}")
        phase = spec.get("phase")
        if phase not in (None, 1, 2, 3):
            raise ValueError(f"extra load {spec['id']!r}: phase must be 1, 2, 3 or None, got {phase!r}")
        return cls(str(spec["id"]), str(spec["bus"]), phase)


class GridEngine:
    """One grid with named loads, stepped by setting load powers and solving (usable without mosaik).

    Takes ownership of ``model``: extra loads are added to its net and, with ``static_loads="zero"``, the file's
    sgens and storage are set to zero.
    """

    def __init__(
        self,
        model: GridModel,
        mode: Mode = "balanced",
        solver: Solver = "fast",
        extra_loads: Iterable[Mapping[str, Any] | ExtraLoad] = (),
        static_loads: StaticLoads = "zero",
    ) -> None:
        if static_loads not in ("zero", "file"):
            raise ValueError(f"static_loads must be 'zero' or 'file', got {static_loads!r}")
        self.model, self.mode = model, mode
        for extra in (ExtraLoad.parse(e) for e in extra_loads):
            if extra.bus not in model.bus_vn_kv:
                raise ValueError(f"extra load {extra.id!r}: unknown bus {extra.bus!r}")
            model.add_load(extra.id, extra.bus, extra.phase)
        self.load_names = [load.name for load in model.loads]
        self.load_pos = {name: k for k, name in enumerate(self.load_names)}
        self.p_w, self.q_var = self._initial_powers(model.net, model.loads, static_loads)
        self.connected = np.ones(len(self.load_names), dtype=bool)  # False: the point is open (an outage)
        if static_loads == "zero":
            _zero_static_injections(model.net)
        if mode == "unbalanced":
            model.assumptions.extend(ensure_three_phase_data(model.net))
        refs = [LoadRef(load.element, load.index, load.phase) for load in model.loads]  # type: ignore[arg-type]
        self.powerflow = PowerFlow(model.net, refs, mode=mode, solver=solver)
        self.result: PowerFlowResult | None = None

    @staticmethod
    def _initial_powers(net: pp.pandapowerNet, loads: Sequence[LoadInfo],
                        static: StaticLoads) -> tuple[np.ndarray, np.ndarray]:
        p, q = np.zeros(len(loads)), np.zeros(len(loads))
        if static == "file":
            for k, load in enumerate(loads):
                row = net[load.element].loc[load.index]
                if load.element == "load":
                    p[k], q[k] = row.p_mw, row.q_mvar
                else:
                    p[k] = row.p_a_mw + row.p_b_mw + row.p_c_mw
                    q[k] = row.q_a_mvar + row.q_b_mvar + row.q_c_mvar
                p[k] *= row.scaling * 1e6  # the driven rows get scaling 1, so fold it into the value
                q[k] *= row.scaling * 1e6
        return p, q

    def set_load(self, name: str, p_w: float | None = None, q_var: float | None = None) -> None:
        k = self.load_pos[name]
        if p_w is not None:
            self.p_w[k] = p_w
        if q_var is not None:
            self.q_var[k] = q_var

    def set_connected(self, name: str, connected: bool) -> None:
        """Open (False) or close a connection point: an open point draws nothing and reports 0 W and 0 V."""
        self.connected[self.load_pos[name]] = connected

    def set_source_v_pu(self, k: float) -> None:
        """The source voltage as a factor of its set value (a sag: < 1)."""
        self.powerflow.set_source_scale(k)

    def drawn(self) -> tuple[np.ndarray, np.ndarray]:
        """The powers the points draw in the power flow (0 at an open point)."""
        return np.where(self.connected, self.p_w, 0.0), np.where(self.connected, self.q_var, 0.0)

    def solve(self) -> PowerFlowResult:
        self.result = self.powerflow.solve(*self.drawn())
        return self.result

    def describe_loads(self) -> str:
        """One line for error messages: total load and the largest consumers."""
        top = np.argsort(-np.abs(self.p_w))[:3]
        largest = ", ".join(f"{self.load_names[k]}={self.p_w[k]:.0f} W" for k in top)
        return f"total load {self.p_w.sum():.0f} W, largest: {largest}"


def _zero_static_injections(net: pp.pandapowerNet) -> None:
    """'zero' policy: file injections the co-simulation does not drive (sgens, storage) draw nothing."""
    for table, cols in (("sgen", ("p_mw", "q_mvar")), ("storage", ("p_mw", "q_mvar")),
                        ("asymmetric_sgen", ("p_a_mw", "p_b_mw", "p_c_mw", "q_a_mvar", "q_b_mvar", "q_c_mvar"))):
        if table in net and len(net[table]):
            for col in cols:
                net[table][col] = 0.0


class GridSim(mosaik_api_v3.Simulator):
    """mosaik simulator: one Grid entity with Bus, Line, Trafo and Load children (time-based)."""

    def __init__(self) -> None:
        super().__init__(META)
        self.sid = ""
        self.step_size = 60
        self.engine: GridEngine | None = None
        self.grid_eid = "grid"
        self._bus_pos: dict[str, int] = {}
        self._line_pos: dict[str, int] = {}
        self._trafo_pos: dict[str, int] = {}
        self._points: dict[str, np.ndarray] = {}  # Points entity -> positions of its loads

    def init(self, sid: str, time_resolution: float = 1.0, step_size: int = 60, **sim_params: Any) -> Meta:
        if int(step_size) <= 0:
            raise ValueError(f"step_size must be a positive integer, got {step_size!r}")
        self.sid, self.step_size = sid, int(step_size)
        return self.meta

    def create(self, num: int, model: str, **params: Any) -> list[CreateResult]:
        if model == "Points":
            return [self._create_points(params.get("loads") or []) for _ in range(num)]
        if model != "Grid":
            raise ValueError(f"unknown model {model!r}; GridSim creates 'Grid'")
        if num != 1 or self.engine is not None:
            raise ValueError("GridSim holds exactly one Grid; start another GridSim instance for another grid")
        source = params.get("source", "simbench")
        grid_model = load_grid(source, path=params.get("path"), code=params.get("code"),
                               ampacity_a=params.get("ampacity_a"), lv_z0_over_z1=params.get("lv_z0_over_z1"))
        self.engine = GridEngine(
            grid_model,
            mode=params.get("mode", "balanced"),
            solver=params.get("solver", "fast"),
            extra_loads=params.get("extra_loads") or (),
            static_loads=params.get("static_loads", "zero"),
        )
        m = grid_model
        self._bus_pos = {f"bus:{n}": k for k, n in enumerate(m.bus_names)}
        self._line_pos = {f"line:{n}": k for k, n in enumerate(m.line_names)}
        self._trafo_pos = {f"trafo:{n}": k for k, n in enumerate(m.trafo_names)}
        self._load_eid_pos = {f"load:{n}": k for n, k in self.engine.load_pos.items()}
        bus_k = {n: k for k, n in enumerate(m.bus_names)}
        self._load_bus = np.array([bus_k[load.bus] for load in m.loads], dtype=np.int64)
        # share of a point's power on each phase: its own phase only, or a third each for three-phase points
        share = np.full((3, len(m.loads)), 1.0 / 3.0)
        for k, load in enumerate(m.loads):
            if load.phase is not None:
                share[:, k] = 0.0
                share[load.phase - 1, k] = 1.0
        self._load_phase_share = share
        return [{"eid": self.grid_eid, "type": "Grid", "children": _children(m),
                 "extra_info": {"slack_bus": m.slack_bus, "source": m.source, "mode": self.engine.mode,
                                "ders": m.ders, "assumptions": list(m.assumptions)}}]

    def _create_points(self, loads: list[str]) -> CreateResult:
        engine = self._require_engine()
        unknown = [n for n in loads if n not in engine.load_pos]
        if unknown:
            raise ValueError(f"Points: unknown load(s) {unknown[:3]}")
        eid = f"points:{len(self._points)}"
        self._points[eid] = np.array([engine.load_pos[n] for n in loads], dtype=np.int64)
        return {"eid": eid, "type": "Points"}

    def step(self, time: int, inputs: dict[str, dict[str, dict[str, Any]]], max_advance: int) -> int:
        engine = self._require_engine()
        targets = {"p_w": engine.p_w, "q_var": engine.q_var}  # written in place: one lookup per input, no calls
        # Points inputs first (vectors, e.g. thousands of load profiles); a Load's own inputs add to them
        base = self._vector_inputs(engine, {eid: a for eid, a in inputs.items() if eid in self._points})
        for attr, (acc, given) in base.items():
            targets[attr][given] = acc[given]
        for eid, attrs in inputs.items():
            if eid in self._points:
                continue
            if eid == self.grid_eid and set(attrs) == {"v_source_pu"}:
                engine.set_source_v_pu(_sum_inputs(eid, "v_source_pu", attrs["v_source_pu"]) or 1.0)
                continue
            k = self._load_eid_pos.get(eid)
            if k is None:
                raise ValueError(f"{eid!r} takes no inputs; only Load entities accept p_w / q_var / grid_present "
                                 "(and the Grid v_source_pu)")
            for attr, sources in attrs.items():
                if attr == "grid_present":
                    present = _sum_inputs(eid, attr, sources)
                    engine.connected[k] = present is None or present > 0.5
                    continue
                target = targets.get(attr)
                if target is None:
                    raise ValueError(f"Load input {attr!r} unknown; expected p_w or q_var")
                total = _sum_inputs(eid, attr, sources)
                if total is not None:
                    if base and attr in base and base[attr][1][k]:
                        total = base[attr][0][k] + total
                    target[k] = total
        try:
            engine.solve()
        except PowerFlowDiverged as exc:
            raise PowerFlowDiverged(f"{self.sid} at t={time} s: {exc}; {engine.describe_loads()}") from exc
        return time + self.step_size

    def _vector_inputs(self, engine: GridEngine, inputs: dict[str, dict[str, dict[str, Any]]],
                       ) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        """attr -> (sum over the Points inputs per load, which loads got one) for p_w / q_var."""
        out: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        n = len(engine.load_names)
        for eid, attrs in inputs.items():
            pos = self._points[eid]
            for attr, sources in attrs.items():
                if attr not in ("p_w", "q_var"):
                    raise ValueError(f"{eid}: input {attr!r} unknown; Points take p_w and q_var vectors")
                acc, given = out.setdefault(attr, (np.zeros(n), np.zeros(n, dtype=bool)))
                for src, value in sources.items():
                    if value is None:
                        continue
                    vec = np.asarray(value, dtype=np.float64)
                    if vec.shape != pos.shape:
                        raise ValueError(f"{eid}.{attr} from {src}: {vec.shape[0] if vec.ndim == 1 else vec.shape} "
                                         f"values for {pos.size} loads")
                    bad = ~np.isfinite(vec)
                    if bad.any():
                        name = engine.load_names[pos[np.argmax(bad)]]
                        raise ValueError(f"load:{name}.{attr}: non-finite input from {src}")
                    np.add.at(acc, pos, vec)
                    given[pos] = True
        return out

    def get_data(self, outputs: dict[str, list[str]]) -> dict[str, dict[str, Any]]:
        engine = self._require_engine()
        res = engine.result
        if res is None:
            raise RuntimeError("get_data before the first step")
        data: dict[str, dict[str, Any]] = {}
        for eid, attrs in outputs.items():
            data[eid] = {attr: self._value(engine, res, eid, attr) for attr in attrs}
        return data

    def _value(self, engine: GridEngine, res: PowerFlowResult, eid: str, attr: str) -> Any:
        if eid == self.grid_eid:
            return engine.powerflow.source_scale if attr == "v_source_pu" else _grid_value(res, attr)
        kind = eid.split(":", 1)[0]
        if kind == "points":
            return self._points_value(engine, res, self._points[eid], attr)
        if kind == "bus":
            k = self._bus_pos[eid]
            return float(res.v_pu[k]) if attr == "v_pu" else float(res.v_abc_pu["abc".index(attr[2]), k])
        if kind == "line":
            k = self._line_pos[eid]
            return float(res.line_loading_pct[k] if attr == "loading_pct" else res.line_pl_w[k])
        if kind == "trafo":
            k = self._trafo_pos[eid]
            return float(res.trafo_loading_pct[k] if attr == "loading_pct" else res.trafo_p_hv_w[k])
        if kind == "load":
            k = engine.load_pos[eid[len("load:"):]]
            if not engine.connected[k]:
                return 0.0  # an open point: nothing drawn, no voltage, no grid
            if attr == "grid_present":
                return 1.0
            if attr in _LOAD_SCALARS:  # (no dict of the three arrays built per value: this runs per load and attr)
                return float((engine.p_w if attr == "p_w" else engine.q_var if attr == "q_var" else res.load_v_pu)[k])
            ph = "abc".index(attr[2])
            if attr.startswith("v_"):
                return float(res.v_abc_pu[ph, self._load_bus[k]])
            return float(engine.p_w[k] * self._load_phase_share[ph, k])
        raise ValueError(f"unknown entity {eid!r}")

    def _points_value(self, engine: GridEngine, res: PowerFlowResult, k: np.ndarray, attr: str) -> np.ndarray:
        """What ``_value`` gives for each Load at positions ``k``, as one vector."""
        if attr == "grid_present":
            value = np.ones(k.size)
        elif attr in _LOAD_SCALARS:
            value = {"p_w": engine.p_w, "q_var": engine.q_var, "v_pu": res.load_v_pu}[attr][k]
        else:
            ph = "abc".index(attr[2])
            value = res.v_abc_pu[ph, self._load_bus[k]] if attr.startswith("v_") \
                else engine.p_w[k] * self._load_phase_share[ph, k]
        return np.where(engine.connected[k], value, 0.0).astype(np.float64)

    def _require_engine(self) -> GridEngine:
        if self.engine is None:
            raise RuntimeError("no Grid created yet")
        return self.engine


_LOAD_SCALARS = ("p_w", "q_var", "v_pu")


def _children(m: GridModel) -> list[CreateResult]:
    """Bus, Line, Trafo and Load entities (in that order) with the topology facts a scenario layer needs."""
    net = m.net
    name_of = dict(zip(m.bus_index, m.bus_names))
    buses: list[CreateResult] = [{"eid": f"bus:{n}", "type": "Bus", "extra_info": {"vn_kv": m.bus_vn_kv[n]}}
                                 for n in m.bus_names]
    lines: list[CreateResult] = [{"eid": f"line:{n}", "type": "Line",
              "extra_info": {"from_bus": name_of[int(net.line.at[i, "from_bus"])],
                             "to_bus": name_of[int(net.line.at[i, "to_bus"])],
                             "length_km": float(net.line.at[i, "length_km"]),
                             "in_service": bool(net.line.at[i, "in_service"])}}
             for n, i in zip(m.line_names, m.line_index)]
    trafos: list[CreateResult] = [{"eid": f"trafo:{n}", "type": "Trafo",
               "extra_info": {"hv_bus": name_of[int(net.trafo.at[i, "hv_bus"])],
                              "lv_bus": name_of[int(net.trafo.at[i, "lv_bus"])]}}
              for n, i in zip(m.trafo_names, m.trafo_index)]
    loads: list[CreateResult] = [{"eid": f"load:{x.name}", "type": "Load",
                                  "extra_info": {"bus": x.bus, "phase": x.phase}} for x in m.loads]
    return buses + lines + trafos + loads


def _sum_inputs(eid: str, attr: str, sources: Mapping[str, Any]) -> float | None:
    if len(sources) == 1:  # the common case: one device or site per load
        (total,) = sources.values()
        if total is None:
            return None
        total = float(total)
    else:
        values = [v for v in sources.values() if v is not None]
        if not values:
            return None
        total = float(sum(values))
    if not math.isfinite(total):
        raise ValueError(f"{eid}.{attr}: non-finite input {sources!r}")
    return total


_GRID_SCALARS = frozenset(("p_slack_w", "q_slack_var", "losses_w", "iterations"))
#: Grid vector attribute -> (result field, phase row or None)
_GRID_VECTORS: dict[str, tuple[str, int | None]] = {
    "bus_v_pu": ("v_pu", None), "bus_v_a_pu": ("v_abc_pu", 0), "bus_v_b_pu": ("v_abc_pu", 1),
    "bus_v_c_pu": ("v_abc_pu", 2), "line_loading_pct": ("line_loading_pct", None),
    "trafo_loading_pct": ("trafo_loading_pct", None), "trafo_p_hv_w": ("trafo_p_hv_w", None),
}


def _grid_value(res: PowerFlowResult, attr: str) -> Any:
    # looked up by name, no dicts of every value built per call (this runs for each attribute every step)
    if attr in _GRID_SCALARS:
        return getattr(res, attr)
    if attr in ("v_min_pu", "v_max_pu"):
        v = res.v_abc_pu[np.isfinite(res.v_abc_pu)]
        return float(v.min() if attr == "v_min_pu" else v.max()) if v.size else math.nan
    vector = _GRID_VECTORS.get(attr)
    if vector is not None:
        field, row = vector
        values = getattr(res, field)
        # a copy: later steps must not change recorded data
        return np.array(values if row is None else values[row], dtype=np.float64)
    raise ValueError(f"unknown Grid attribute {attr!r}")


def main() -> None:
    mosaik_api_v3.start_simulation(GridSim(), "S4G grid simulator (pandapower / fast power flow)")


if __name__ == "__main__":
    main()
