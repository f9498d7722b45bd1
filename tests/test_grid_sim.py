"""GridSim in hand-written mosaik worlds, and its plain-Python API."""

from __future__ import annotations

import copy
import json
import math
from pathlib import Path
from typing import Any, ClassVar

import mosaik
import mosaik_api_v3
import numpy as np
import pandapower as pp
import pytest
from mosaik.starters import PythonStarter

from simulators.grid import GridEngine, GridSim
from simulators.grid_loaders import GridLoadError, load_dsf_se, load_simbench
from simulators.powerflow import PowerFlowDiverged

FUR = Path(__file__).resolve().parents[1] / "scenarios" / "data" / "s4g" / "fur_feeder.json"
SEMIURB4 = "1-LV-semiurb4--0-sw"
STEP_S = 60


class Source(mosaik_api_v3.Simulator):
    """Loads with a schedule {time_s: p_w} (the last value at or before the current time holds)."""

    def __init__(self) -> None:
        super().__init__({"type": "time-based", "models": {
            "Source": {"public": True, "params": ["p_w", "q_var"], "attrs": ["p_w", "q_var"]}}})
        self.schedules: dict[str, tuple[dict[int, float], float]] = {}
        self.time = 0

    def init(self, sid: str, time_resolution: float = 1.0, **params: Any) -> dict:
        return self.meta

    def create(self, num: int, model: str, p_w: dict[int, float] | float = 0.0, q_var: float = 0.0) -> list[dict]:
        out = []
        for _ in range(num):
            eid = f"src{len(self.schedules)}"
            self.schedules[eid] = (p_w if isinstance(p_w, dict) else {0: p_w}, q_var)
            out.append({"eid": eid, "type": model})
        return out

    def step(self, time: int, inputs: dict, max_advance: int) -> int:
        self.time = time
        return time + STEP_S

    def get_data(self, outputs: dict[str, list[str]]) -> dict:
        data = {}
        for eid, attrs in outputs.items():
            schedule, q_var = self.schedules[eid]
            p_w = schedule[max(t for t in schedule if t <= self.time)]
            data[eid] = {attr: (p_w if attr == "p_w" else q_var) for attr in attrs}
        return data


class Recorder(mosaik_api_v3.Simulator):
    """Keeps every input per step; the last instance is reachable through ``Recorder.last``."""

    last: ClassVar[Recorder]

    def __init__(self) -> None:
        super().__init__({"type": "time-based", "models": {
            "Recorder": {"public": True, "params": [], "attrs": [], "any_inputs": True}}})
        self.log: dict[int, dict[str, dict[str, Any]]] = {}
        Recorder.last = self

    def create(self, num: int, model: str) -> list[dict]:
        return [{"eid": "rec", "type": model}]

    def step(self, time: int, inputs: dict, max_advance: int) -> int:
        self.log[time] = {f"{src}.{attr}": value for attrs in inputs.values() for attr, sources in attrs.items()
                          for src, value in sources.items()}
        return time + STEP_S


def value(rec: dict[str, Any], eid: str, attr: str) -> Any:
    """The recorded value of entity ``eid`` (any simulator) and attribute ``attr``."""
    (hit,) = [v for k, v in rec.items() if k.endswith(f".{eid}.{attr}")]
    return hit


def make_world() -> mosaik.World:
    return mosaik.World({
        "Grid": {"python": "simulators.grid:GridSim"},
        "Source": PythonStarter(Source),
        "Recorder": PythonStarter(Recorder),
    })


def entities(grid: Any) -> dict[str, Any]:
    return {child.eid: child for child in grid.children}


# ------------------------------------------------------------------------------------------ mosaik worlds


@pytest.fixture(scope="module")
def semiurb4_run() -> dict[str, Any]:
    """A 3-step balanced run on SimBench semiurb4: three sources, two of them summed on one load."""
    world = make_world()
    try:
        grid = world.start("Grid", step_size=STEP_S).Grid(source="simbench", code=SEMIURB4)
        ents = entities(grid)
        loads = [eid for eid in ents if eid.startswith("load:")]
        buses = [eid for eid in ents if eid.startswith("bus:")]
        src = world.start("Source")
        a = src.Source(p_w={0: 5e3, 60: 12e3, 120: -3e3}, q_var=800.0)
        b = src.Source(p_w={0: 2e3, 60: 1e3, 120: 4e3})
        c = src.Source(p_w={0: 7e3})
        world.connect(a, ents[loads[0]], "p_w", "q_var")
        world.connect(b, ents[loads[0]], "p_w")  # summed with a
        world.connect(c, ents[loads[5]], "p_w")
        rec = world.start("Recorder").Recorder()
        world.connect(grid, rec, "bus_v_pu", "line_loading_pct", "trafo_loading_pct", "p_slack_w", "losses_w",
                      "v_min_pu")
        world.connect(ents[loads[0]], rec, "p_w", "q_var", "v_pu")
        world.connect(ents[buses[3]], rec, "v_pu")
        world.run(until=3 * STEP_S)
    finally:
        world.shutdown()
    return {"log": Recorder.last.log, "loads": loads, "buses": buses, "grid": grid}


def reference_semiurb4(p_w: dict[int, float], q_var: dict[int, float]) -> pp.pandapowerNet:
    """pandapower on the same state: static injections zero (the default policy), driven loads as given."""
    net = copy.deepcopy(load_simbench(SEMIURB4).net)
    net.load[["p_mw", "q_mvar"]] = 0.0
    net.sgen[["p_mw", "q_mvar"]] = 0.0
    for k, p in p_w.items():
        net.load.loc[net.load.index[k], "p_mw"] = p * 1e-6
    for k, q in q_var.items():
        net.load.loc[net.load.index[k], "q_mvar"] = q * 1e-6
    pp.runpp(net, numba=False)
    return net


@pytest.mark.parametrize(("t", "p0_w", "p5_w"), [(0, 7e3, 7e3), (60, 13e3, 7e3), (120, 1e3, 7e3)])
def test_balanced_world_matches_runpp(semiurb4_run, t, p0_w, p5_w):
    rec = semiurb4_run["log"][t]
    load0 = semiurb4_run["loads"][0]
    assert value(rec, load0, "p_w") == pytest.approx(p0_w)  # sources a + b summed
    assert value(rec, load0, "q_var") == pytest.approx(800.0)
    net = reference_semiurb4({0: p0_w, 5: p5_w}, {0: 800.0})
    bus_v = value(rec, "grid", "bus_v_pu")
    assert isinstance(bus_v, np.ndarray) and bus_v.dtype == np.float64 and len(bus_v) == len(net.bus)
    np.testing.assert_allclose(bus_v, net.res_bus.vm_pu.to_numpy(), atol=1e-6, rtol=0)
    np.testing.assert_allclose(value(rec, "grid", "line_loading_pct"), net.res_line.loading_percent, atol=1e-4)
    np.testing.assert_allclose(value(rec, "grid", "trafo_loading_pct"), net.res_trafo.loading_percent, atol=1e-4)
    assert value(rec, "grid", "p_slack_w") == pytest.approx(net.res_ext_grid.p_mw.sum() * 1e6, abs=0.1)
    losses_w = (net.res_line.pl_mw.sum() + net.res_trafo.pl_mw.sum()) * 1e6
    assert value(rec, "grid", "losses_w") == pytest.approx(losses_w, abs=0.1)
    assert value(rec, "grid", "v_min_pu") == pytest.approx(net.res_bus.vm_pu.min(), abs=1e-6)
    assert value(rec, load0, "v_pu") == pytest.approx(net.res_bus.vm_pu.at[net.load.bus.iloc[0]], abs=1e-6)


def test_bus_entity_equals_its_vector_entry(semiurb4_run):
    bus_k = 3
    for rec in semiurb4_run["log"].values():
        assert value(rec, semiurb4_run["buses"][bus_k], "v_pu") == value(rec, "grid", "bus_v_pu")[bus_k]


def test_unbalanced_world_single_phase_load_sags_phase_a():
    world = make_world()
    try:
        grid = world.start("Grid", step_size=STEP_S).Grid(
            source="dsf-se", path=str(FUR), mode="unbalanced",
            extra_loads=[{"id": "ev", "bus": "node_a20", "phase": 1}])
        ents = entities(grid)
        src = world.start("Source").Source(p_w={0: 0.0, 60: 10e3})
        world.connect(src, ents["load:ev"], "p_w")
        rec = world.start("Recorder").Recorder()
        world.connect(ents["bus:node_a20"], rec, "v_a_pu", "v_b_pu", "v_c_pu")
        world.connect(ents["load:ev"], rec, "v_pu")
        world.connect(grid, rec, "bus_v_a_pu")
        world.run(until=2 * STEP_S)
    finally:
        world.shutdown()
    before, after = Recorder.last.log[0], Recorder.last.log[60]
    drop = {ph: value(before, "bus:node_a20", f"v_{ph}_pu") - value(after, "bus:node_a20", f"v_{ph}_pu")
            for ph in "abc"}
    assert drop["a"] > 0.02
    assert drop["a"] > 3 * abs(drop["b"]) and drop["a"] > 3 * abs(drop["c"])
    assert value(after, "load:ev", "v_pu") == pytest.approx(value(after, "bus:node_a20", "v_a_pu"))
    assert len(value(after, "grid", "bus_v_a_pu")) == sum(1 for e in ents if e.startswith("bus:"))


def test_absurd_load_raises_power_flow_diverged():
    world = make_world()
    try:
        grid = world.start("Grid", step_size=STEP_S).Grid(source="dsf-se", path=str(FUR))
        src = world.start("Source").Source(p_w=5e6)
        world.connect(src, entities(grid)["load:consumer_4018368"], "p_w")
        with pytest.raises(PowerFlowDiverged, match=r"t=0 s.*consumer_4018368=5000000 W"):
            world.run(until=STEP_S)
    finally:
        world.shutdown()


@pytest.mark.parametrize(
    ("content", "key_path", "found"),
    [
        (None, "", "no such file"),
        ("{not json", "line 1 column 2", "property name"),
        ("missing-key", "radials[0].powerLines[3].bus1", "missing"),
    ],
)
def test_grid_file_errors_name_file_and_key(tmp_path, content, key_path, found):
    path = tmp_path / "grid.json"
    if content == "missing-key":
        data = json.loads(FUR.read_text())
        del data["radials"][0]["powerLines"][3]["bus1"]
        path.write_text(json.dumps(data))
    elif content is not None:
        path.write_text(content)
    world = make_world()
    try:
        with pytest.raises(GridLoadError) as err:
            world.start("Grid").Grid(source="dsf-se", path=str(path))
    finally:
        world.shutdown()
    assert err.value.key_path == key_path
    assert str(path) in str(err.value) and found in str(err.value)


# ------------------------------------------------------------------------------------------ plain API


@pytest.fixture()
def fur_sim() -> GridSim:
    sim = GridSim()
    sim.init("Grid-0", time_resolution=1.0, step_size=900)
    sim.create(1, "Grid", source="dsf-se", path=str(FUR), extra_loads=[{"id": "wallbox", "bus": "node_a9"}])
    return sim


def test_load_without_input_keeps_its_value(fur_sim):
    assert fur_sim.step(0, {"load:wallbox": {"p_w": {"src.a": 11e3}, "q_var": {"src.a": 0.0}}}, 3600) == 900
    first = fur_sim.get_data({"load:wallbox": ["p_w", "v_pu"]})["load:wallbox"]
    fur_sim.step(900, {}, 3600)
    second = fur_sim.get_data({"load:wallbox": ["p_w", "v_pu"]})["load:wallbox"]
    assert first == second and first["p_w"] == 11e3 and first["v_pu"] < 0.99
    fur_sim.step(1800, {"load:wallbox": {"q_var": {"src.a": 2e3}}}, 3600)  # only q changes; p stays
    third = fur_sim.get_data({"load:wallbox": ["p_w", "q_var", "v_pu"]})["load:wallbox"]
    assert third["p_w"] == 11e3 and third["q_var"] == 2e3 and third["v_pu"] < first["v_pu"]


def test_vectors_follow_children_order_and_are_copies(fur_sim):
    fur_sim.step(0, {"load:consumer_4018368": {"p_w": {"x": 3e3}}}, 900)
    data = fur_sim.get_data({"grid": ["bus_v_pu", "line_loading_pct"], "bus:node_a1": ["v_pu", "v_a_pu"]})
    k = fur_sim.engine.model.bus_names.index("node_a1")
    assert data["grid"]["bus_v_pu"][k] == data["bus:node_a1"]["v_pu"] == data["bus:node_a1"]["v_a_pu"]
    data["grid"]["bus_v_pu"][:] = 0.0  # a consumer scribbling on its copy must not change the simulator's results
    assert fur_sim.get_data({"bus:node_a1": ["v_pu"]})["bus:node_a1"]["v_pu"] > 0.9
    assert np.isnan(data["grid"]["line_loading_pct"]).all()  # the Fur file has no line ratings


def test_static_loads_file_keeps_grid_file_values():
    sim = GridSim()
    sim.init("Grid-0")
    sim.create(1, "Grid", source="dsf-se", path=str(FUR), static_loads="file")
    sim.step(0, {}, 60)
    data = sim.get_data({"load:consumer_4006773": ["p_w", "q_var"], "grid": ["bus_v_pu"]})
    assert data["load:consumer_4006773"]["p_w"] == pytest.approx(3e3)
    net = load_dsf_se(FUR).net
    pp.runpp(net, numba=False)
    np.testing.assert_allclose(data["grid"]["bus_v_pu"], net.res_bus.vm_pu.to_numpy(), atol=1e-6)


def test_create_result_carries_topology():
    sim = GridSim()
    sim.init("Grid-0")
    (grid,) = sim.create(1, "Grid", source="dsf-se", path=str(FUR), extra_loads=[{"id": "ev", "bus": "node_a3",
                                                                                  "phase": 2}])
    assert grid["eid"] == "grid" and grid["extra_info"]["slack_bus"] == "bus_001"
    kids = {c["eid"]: c for c in grid["children"]}
    assert [c["type"] for c in grid["children"]][:56] == ["Bus"] * 56
    assert kids["bus:bus_001"]["extra_info"]["vn_kv"] == 10.0
    assert kids["load:consumer_4006773"]["extra_info"] == {"bus": "node_a11", "phase": 1}
    assert kids["load:ev"]["extra_info"] == {"bus": "node_a3", "phase": 2}
    assert kids["trafo:transformer_20082"]["extra_info"] == {"hv_bus": "bus_001", "lv_bus": "bus_002"}
    line = kids["line:powerline_w11"]["extra_info"]
    assert (line["from_bus"], line["to_bus"], line["in_service"]) == ("node_a10", "node_a11", True)
    assert 0 < line["length_km"] < 1  # the report's distances along the feeder
    assert {d["id"] for d in grid["extra_info"]["ders"]} == {"PV_1", "Akku1"}


def test_create_and_input_validation(fur_sim):
    with pytest.raises(ValueError, match="exactly one Grid"):
        fur_sim.create(1, "Grid", source="dsf-se", path=str(FUR))
    with pytest.raises(ValueError, match="takes no inputs"):
        fur_sim.step(0, {"bus:node_a1": {"v_pu": {"x": 1.0}}}, 60)
    with pytest.raises(ValueError, match="takes no inputs"):
        fur_sim.step(0, {"load:nobody": {"p_w": {"x": 1.0}}}, 60)
    with pytest.raises(ValueError, match="unknown; expected p_w or q_var"):
        fur_sim.step(0, {"load:consumer_4006773": {"v_pu": {"x": 1.0}}}, 60)
    for sources in ({"x": math.inf}, {"x": 1.0, "y": math.nan}):
        with pytest.raises(ValueError, match="non-finite"):
            fur_sim.step(0, {"load:consumer_4006773": {"p_w": sources}}, 60)


def test_load_inputs_sum_and_none_keeps_the_last_value(fur_sim):
    """Several sources on one load add up; a source that says None (no value this step) keeps the load's value."""
    eng = fur_sim.engine
    k = eng.load_pos["consumer_4006773"]
    fur_sim.step(0, {"load:consumer_4006773": {"p_w": {"a": 1000.0, "b": -250.0}, "q_var": {"a": 100.0}}}, 60)
    assert eng.p_w[k] == 750.0 and eng.q_var[k] == 100.0
    fur_sim.step(60, {"load:consumer_4006773": {"p_w": {"a": None}, "q_var": {"a": None, "b": 20.0}}}, 60)
    assert eng.p_w[k] == 750.0 and eng.q_var[k] == 20.0
    with pytest.raises(ValueError, match="unknown bus"):
        GridEngine(load_dsf_se(FUR), extra_loads=[{"id": "x", "bus": "nowhere"}])
    with pytest.raises(ValueError, match="phase"):
        GridEngine(load_dsf_se(FUR), extra_loads=[{"id": "x", "bus": "node_a1", "phase": 4}])


def test_plain_python_set_load_equals_the_simulator_input(fur_sim):
    """docs/grid.md's plain-Python path (GridEngine.set_load) and GridSim's mosaik inputs give the same state."""
    engine = GridEngine(load_dsf_se(FUR), mode=fur_sim.engine.mode, extra_loads=[{"id": "wallbox", "bus": "node_a9"}])
    engine.set_load("consumer_4006773", p_w=3000.0, q_var=400.0)
    engine.set_load("consumer_4006773", q_var=None)  # None keeps the value, as a None input does in GridSim
    plain = engine.solve()
    fur_sim.step(0, {"load:consumer_4006773": {"p_w": {"a": 3000.0}, "q_var": {"a": 400.0}}}, 60)
    np.testing.assert_array_equal(engine.p_w, fur_sim.engine.p_w)
    np.testing.assert_array_equal(engine.q_var, fur_sim.engine.q_var)
    np.testing.assert_allclose(plain.v_abc_pu, fur_sim.engine.result.v_abc_pu, atol=1e-12)


def test_points_vectors_add_to_load_inputs_and_equal_the_load_outputs(fur_sim):
    """A Points entity: its p_w/q_var vectors add to the loads' own inputs; its outputs are the Loads' outputs (an
    open point gives 0); bad vectors are refused with the load named."""
    (pts,) = fur_sim.create(1, "Points", loads=["consumer_4006773", "wallbox"])
    eid = pts["eid"]
    eng = fur_sim.engine
    fur_sim.step(0, {eid: {"p_w": {"prof": [1000.0, 2000.0]}, "q_var": {"prof": [10.0, 20.0]}},
                     "load:wallbox": {"p_w": {"dev": -500.0}, "grid_present": {"ev": 0.0}}}, 60)
    assert eng.p_w[eng.load_pos["consumer_4006773"]] == 1000.0 and eng.p_w[eng.load_pos["wallbox"]] == 1500.0
    attrs = ["p_w", "q_var", "v_pu", "v_a_pu", "v_b_pu", "p_a_w", "p_c_w", "grid_present"]
    vec = fur_sim.get_data({eid: attrs})[eid]
    single = fur_sim.get_data({"load:consumer_4006773": attrs, "load:wallbox": attrs})
    for attr in attrs:
        assert list(vec[attr]) == [single["load:consumer_4006773"][attr], single["load:wallbox"][attr]]
    assert vec["p_w"][1] == 0.0 and vec["v_pu"][0] > 0.9  # the wallbox's point is open
    with pytest.raises(ValueError, match=r"load:wallbox\.p_w: non-finite"):
        fur_sim.step(60, {eid: {"p_w": {"prof": [1.0, math.nan]}}}, 60)
    with pytest.raises(ValueError, match="1 values for 2 loads"):
        fur_sim.step(60, {eid: {"p_w": {"prof": [1.0]}}}, 60)
    with pytest.raises(ValueError, match="unknown load"):
        fur_sim.create(1, "Points", loads=["nobody"])


def test_a_load_listed_twice_in_points_gets_both_values(fur_sim):
    """Two elements of a Points vector for one load add up (as two sources would), next to a plain Points entity."""
    (twice,) = fur_sim.create(1, "Points", loads=["consumer_4006773", "consumer_4006773"])
    (once,) = fur_sim.create(1, "Points", loads=["consumer_4018368"])
    fur_sim.step(0, {twice["eid"]: {"p_w": {"prof": [1000.0, 250.0]}}, once["eid"]: {"p_w": {"prof": [300.0]}}}, 60)
    eng = fur_sim.engine
    assert eng.p_w[eng.load_pos["consumer_4006773"]] == 1250.0 and eng.p_w[eng.load_pos["consumer_4018368"]] == 300.0
