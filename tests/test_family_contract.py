"""The device-family contract: a family defined outside devices/ (here, in this module) runs in a scenario from its
declaration alone, and validation checks scenarios against declarations.

The test families: ``probe_meter`` observes its connection point (``injects=False``: stepped after the power flow,
so it sees the solution of the same step) and reports its build context; ``probe_lagging`` injects nothing but
declares ``injects=True``, so its ``point.v_pu`` comes from the previous step, as a controller's would.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import textwrap
from pathlib import Path
from collections.abc import Mapping, Sequence

import numpy as np
import pytest
import yaml
from pydantic import BaseModel, ConfigDict

from cosim.run import run
from cosim.rundir import read_table
from cosim.scenario import ScenarioError, load
from devices import registry
from devices.base import Address, Capabilities
from devices.family import DeviceContext, Family, Input, ModelBank
from devices.simulator import DeviceSim

REPO = Path(__file__).resolve().parents[1]
FUR = REPO / "scenarios" / "data" / "s4g" / "fur_feeder.json"


class ProbeConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")


METER_READS = {"seen_p_w": "point.p_w", "seen_q_var": "point.q_var", "seen_v_pu": "point.v_pu",
               "seen_v_b_pu": "point.v_b_pu", "seen_p_a_w": "point.p_a_w", "seen_p_b_w": "point.p_b_w",
               "seen_load_w": "site.load_p_w"}


class MeterBank(ModelBank):
    def __init__(self, configs: list[ProbeConfig], contexts: Sequence[DeviceContext] | None = None) -> None:
        super().__init__(configs, contexts)
        self.values = {name: np.full(self.n, np.nan) for name in METER_READS}

    def step(self, t_s: int, dt_s: int, env: Mapping[str, np.ndarray]) -> None:
        self.values = {name: np.array(env[name], dtype=float) for name in METER_READS}

    def measure(self) -> dict[str, np.ndarray]:
        ctx = self.contexts
        return {
            "m_p_w": self.values["seen_p_w"], "m_q_var": self.values["seen_q_var"],
            "m_v_pu": self.values["seen_v_pu"], "m_v_b_pu": self.values["seen_v_b_pu"],
            "m_p_a_w": self.values["seen_p_a_w"], "m_p_b_w": self.values["seen_p_b_w"],
            "m_load_w": self.values["seen_load_w"],
            "vn_kv": np.array([c.point.vn_kv for c in ctx]), "phase": np.array([c.point.phase for c in ctx]),
            "start_unix_s": np.array([c.start.timestamp() for c in ctx]),
        }


METER = Family(
    name="probe_meter", config=ProbeConfig, bank=MeterBank,
    measurements=("m_p_w", "m_q_var", "m_v_pu", "m_v_b_pu", "m_p_a_w", "m_p_b_w", "m_load_w", "vn_kv", "phase",
                  "start_unix_s"),
    capabilities=lambda cfg: Capabilities(measurements=METER.measurements), injects=False,
    inputs=tuple(Input(name, source) for name, source in METER_READS.items()),
    description="test: a meter at the connection point",
)


class LaggingBank(ModelBank):
    def __init__(self, configs: list[ProbeConfig], contexts: Sequence[DeviceContext] | None = None) -> None:
        super().__init__(configs, contexts)
        self.v = np.full(self.n, np.nan)

    def step(self, t_s: int, dt_s: int, env: Mapping[str, np.ndarray]) -> None:
        self.v = np.array(env["v_in_pu"], dtype=float)

    def measure(self) -> dict[str, np.ndarray]:
        return {"p_w": np.zeros(self.n), "q_var": np.zeros(self.n), "v_seen_pu": self.v}


LAGGING = Family(
    name="probe_lagging", config=ProbeConfig, bank=LaggingBank, measurements=("p_w", "q_var", "v_seen_pu"),
    capabilities=lambda cfg: Capabilities(measurements=LAGGING.measurements), injects=True,
    inputs=(Input("v_in_pu", "point.v_pu"), Input("temp_c", "site.pv_w_per_kwp", required=False, default=-1.0)),
    description="test: an injecting family that reads its point's voltage",
)


@pytest.fixture
def probes():
    registry.register_family("probe_meter", METER)
    registry.register_family("probe_lagging", "tests.test_family_contract:LAGGING")
    yield
    registry.unregister_family("probe_meter")
    registry.unregister_family("probe_lagging")


BASE = f"""
name: contract
start: 2019-06-15T10:00:00+02:00
duration: 30min
step: 5min
grid: {{source: dsf-se, path: {FUR}, mode: unbalanced}}
sites:
  - {{id: h, bus: bus_002, phase: 2, load: {{column: profile_1, power_factor: 0.95}}}}
devices:
  - {{id: meter, family: probe_meter, site: h}}
  - {{id: lag, family: probe_lagging, site: h}}
"""


def write(tmp_path: Path, text: str, name: str = "s.yaml") -> Path:
    p = tmp_path / name
    p.write_text(textwrap.dedent(text))
    return p


def mutate(tmp_path: Path, fn) -> Path:
    data = yaml.safe_load(BASE)
    fn(data)
    return write(tmp_path, yaml.safe_dump(data, sort_keys=False), "m.yaml")


def problems(path: Path) -> str:
    with pytest.raises(ScenarioError) as err:
        load(path)
    return str(err.value)


def test_a_family_from_outside_devices_runs_from_its_declaration(tmp_path, probes):
    loaded = load(write(tmp_path, BASE))
    result = run(loaded, tmp_path / "run", progress=False, report=False)
    assert result.status == "complete"
    dev, sites = read_table(tmp_path / "run", "devices"), read_table(tmp_path / "run", "sites")
    assert dev is not None and sites is not None and np.array_equal(dev.t_s, sites.t_s)
    pcc, v, load_w = sites.get("h", "pcc_p_w"), sites.get("h", "v_pu"), sites.get("h", "load_p_w")
    assert np.all(np.abs(load_w) > 1)
    # the meter does not inject: the point draws the household load alone (the lagging probe draws 0 W)
    np.testing.assert_array_equal(pcc, load_w)
    # ...and it reads the power-flow solution of the same step (no lag)
    np.testing.assert_array_equal(dev.get("meter", "m_p_w"), pcc)
    np.testing.assert_array_equal(dev.get("meter", "m_v_pu"), v)
    np.testing.assert_array_equal(dev.get("meter", "m_load_w"), load_w)
    # a single-phase point on phase b: all its power on b, its voltage is phase b's
    np.testing.assert_array_equal(dev.get("meter", "m_p_b_w"), pcc)
    np.testing.assert_array_equal(dev.get("meter", "m_p_a_w"), np.zeros(len(pcc)))
    np.testing.assert_array_equal(dev.get("meter", "m_v_b_pu"), v)
    assert np.all(dev.get("meter", "m_q_var") > 0)  # power factor 0.95, inductive: drawn
    # an injecting family reading point.* sees the previous step (the first step: nominal voltage)
    lag = dev.get("lag", "v_seen_pu")
    assert lag[0] == 1.0
    np.testing.assert_array_equal(lag[1:], v[:-1])
    # the build context: the scenario start and the connection point
    assert set(dev.get("meter", "start_unix_s")) == {loaded.scenario.start.timestamp()}
    assert set(dev.get("meter", "phase")) == {2.0} and set(dev.get("meter", "vn_kv")) == {0.4}


def test_an_optional_input_without_source_takes_its_default(tmp_path, probes):
    sim = DeviceSim()
    sim.init("D", step_size=60)
    sim.create(1, "probe_lagging", device_id="x")
    sim.setup_done()
    sim.step(0, {"x": {"v_in_pu": {"src": 1.02}}}, 0)
    assert sim.devices["x"].bank.v[0] == 1.02


def test_validation_battery_with_a_scheme_it_does_not_speak(tmp_path):
    text = BASE.replace("devices:\n", "devices:\n  - {id: b, family: battery, bus: bus_002, address: 'sunspec+tcp://',"
                        " config: {s_max_va: 5000, battery: {capacity_wh: 9000, p_charge_max_w: 3000, "
                        "p_discharge_max_w: 3000}}}\n")
    text = text.replace("  - {id: meter, family: probe_meter, site: h}\n  - {id: lag, family: probe_lagging, site: h}\n",
                        "")
    path = write(tmp_path, text)
    out = problems(path)
    assert "devices[0].address: family 'battery' does not speak 'sunspec+tcp'" in out
    assert f"{path}:" in out and "sim" in out and "replay" in out
    # the device host refuses it too (a hand-built world)
    sim = DeviceSim()
    sim.init("D", step_size=60)
    with pytest.raises(KeyError, match="does not speak"):
        sim.create(1, "battery", address="sunspec+tcp://", config={"s_max_va": 5000, "battery": {
            "capacity_wh": 9000, "p_charge_max_w": 3000, "p_discharge_max_w": 3000}})


def test_validation_bus_and_grid_load_names_against_the_grid(tmp_path, probes):
    def bad(d):
        d["sites"][0]["bus"] = "bus_999"
        d["sites"].append({"id": "g", "grid_load": "consumer_0"})
        d["devices"].append({"id": "b", "family": "probe_lagging", "bus": "nowhere"})
    out = problems(mutate(tmp_path, bad))
    assert "sites[0].bus: expected a bus of the grid (e.g. bus_001" in out and "'bus_999'" in out
    assert "sites[1].grid_load: expected a load of the grid (e.g. consumer_" in out and "'consumer_0'" in out
    assert "devices[2].bus: expected a bus of the grid" in out and "'nowhere'" in out
    assert "cannot read the grid" not in out  # blamed on the names, not on the grid line


def test_validation_required_inputs_need_a_source(tmp_path, probes):
    def bad(d):
        del d["sites"][0]["load"]  # the meter reads site.load_p_w
        d["devices"].append({"id": "pv", "family": "pv_battery", "site": "h", "config": {"pv_kwp": 3, "ac_max_w": 3000}})
        d["devices"].append({"id": "wb", "family": "wallbox", "site": "h"})
        d["devices"].append({"id": "fr", "family": "pv_battery", "bus": "bus_002", "config": {"pv_kwp": 3, "ac_max_w": 3000}})
    out = problems(mutate(tmp_path, bad))
    assert "devices[0].site: family 'probe_meter' reads 'seen_load_w' from site.load_p_w: give site 'h' a 'load'" in out
    assert "devices[2].site: family 'pv_battery' reads 'pv_w_per_kwp' from site.pv_w_per_kwp: give 'profiles.pv'" in out
    assert "devices[3].id: family 'wallbox' reads the EV it charges from an EV fleet" in out
    assert "devices[4].bus: family 'pv_battery' reads 'pv_w_per_kwp'" in out and "place the device at a 'site'" in out


def test_validation_fleet_members_must_be_fed_by_a_fleet(tmp_path, probes):
    out = problems(mutate(tmp_path, lambda d: d.update(ev_fleets=[{"id": "f", "wallboxes": ["meter"]}])))
    assert "ev_fleets[0].wallboxes[0]: expected the id of a device whose family is fed by an EV fleet" in out
    assert "wallbox" in out


def test_validation_unknown_source(tmp_path):
    odd = Family(name="probe_odd", config=ProbeConfig, bank=LaggingBank, measurements=("p_w", "q_var"),
                 capabilities=lambda cfg: Capabilities(measurements=("p_w", "q_var")), injects=True,
                 inputs=(Input("t_c", "weather.air_c"),))
    registry.register_family("probe_odd", odd)
    try:
        out = problems(write(tmp_path, BASE.replace("probe_meter", "probe_odd").split("  - {id: lag")[0]))
    finally:
        registry.unregister_family("probe_odd")
    assert "devices[0].family: family 'probe_odd' reads 't_c' from weather.air_c, which the world does not offer" in out


def test_declaration_errors_are_caught_when_the_family_is_made():
    kw = dict(config=ProbeConfig, bank=LaggingBank, capabilities=lambda c: Capabilities(measurements=()))
    with pytest.raises(ValueError, match="must measure 'p_w' and 'q_var'"):
        Family(name="x", measurements=("soc",), injects=True, **kw)
    with pytest.raises(ValueError, match=r"not of the form 'scope\.attr'"):
        Input("v", "voltage")
    with pytest.raises(ValueError, match="declared twice"):
        Family(name="x", measurements=(), injects=False, inputs=(Input("v", "point.v_pu"),) * 2, **kw)
    with pytest.raises(ValueError, match="'sim' is every family's"):
        Family(name="x", measurements=(), injects=False, drivers={"sim": "a:b"}, **kw)
    with pytest.raises(TypeError):
        Family(name="x", measurements=(), **kw)  # injects must be said


def test_registry_entry_points_and_run_time_registration():
    assert set(registry.families()) >= {"battery", "fronius", "libal", "pv_battery", "wallbox"}
    assert registry.generic_drivers()["replay"] == "hil_bench.replay:ReplayDriver"
    assert "replay" in registry.schemes_of(registry.family("battery"))
    registry.register_family("other_name", METER)
    try:
        with pytest.raises(ValueError, match="declares name='probe_meter'"):
            registry.families()
    finally:
        registry.unregister_family("other_name")
    assert "probe_meter" not in registry.families()


def test_virtual_device_clock_and_time_base_follow_the_build_context():
    from devices.wallbox.virtual import VirtualWallbox16

    start = dt.datetime(2019, 6, 17, 7, 0, tzinfo=dt.timezone(dt.timedelta(hours=2)))
    ctx = DeviceContext(start, 60, "CP-1")
    vw = VirtualWallbox16(registry.family("wallbox"), registry.family("wallbox").parse_config({}), context=ctx)
    assert vw.device_id == "CP-1" and vw.clock_at(90) == start + dt.timedelta(seconds=90)
    assert vw.bank.contexts == [ctx]


@pytest.mark.parametrize("family, module, cls", [
    ("wallbox", "devices.wallbox.virtual", "VirtualWallbox16"), ("meter", "devices.meter.virtual", "VirtualMeter"),
    ("fronius", "devices.fronius.virtual", "FroniusSunSpecDevice"), ("pv", "devices.pv.virtual", "PvSunSpecDevice"),
    ("fronius", "devices.fronius.solar_api", "FroniusSolarApiDevice"),
    ("libal", "devices.libal.virtual", "LibalVirtualDevice"),
    ("energy_router", "devices.energy_router.virtual", "VirtualEnergyRouter")])
def test_a_virtual_device_refuses_another_familys_config(family, module, cls):
    import importlib

    device_cls = getattr(importlib.import_module(module), cls)
    other = "meter" if family != "meter" else "wallbox"
    wrong = registry.family(other).parse_config({})
    with pytest.raises(TypeError, match=f"{cls} needs a {device_cls.config_type.__name__}, got {type(wrong).__name__}"):
        device_cls(registry.family(family), wrong)


def test_measurement_t_s_is_seconds_since_start_for_sim_and_protocol_drivers():
    """One time base (devices.base): offline, a reading after the step [t, t+dt) carries t + dt, whatever the driver."""
    cfg = {"pv_kwp": 4.0, "battery": {"capacity_wh": 4500, "p_charge_max_w": 2400, "p_discharge_max_w": 2400}}
    sim = DeviceSim()
    sim.init("D", step_size=60)
    sim.create(1, "fronius", address="sim://", config=cfg, device_id="s")
    sim.create(1, "fronius", address="sunspec+tcp://", config=cfg, device_id="p")
    try:
        sim.setup_done()
        for t in (0, 60, 120):
            sim.step(t, {}, 0)
        assert sim.devices["p"].last is not None and sim.devices["p"].last.t_s == 180.0
        driver = sim.drivers()["s"]
        reading = asyncio.run(driver.read())
        assert reading.t_s == 180.0
        assert driver.address == Address.parse("sim://")
    finally:
        sim.close_devices()


def _docs_example() -> Family:
    """The "minimal complete family" of docs/architecture.md, executed as written."""
    import types

    text = (REPO / "docs" / "architecture.md").read_text(encoding="utf-8")
    block = text.split("<!-- example: heater -->", 1)[1].split("```python", 1)[1].split("```", 1)[0]
    module = types.ModuleType("heater_example")
    exec(compile(block, "docs/architecture.md (heater)", "exec"), module.__dict__)
    return module.FAMILY


def test_the_guide_example_is_a_working_family(tmp_path):
    fam = _docs_example()
    registry.register_family("heater", fam)
    try:
        sim = DeviceSim()
        sim.init("D", step_size=60)
        sim.create(1, "heater", config={"p_rated_w": 2000}, device_id="h1")
        sim.setup_done()
        sim.step(0, {"h1": {"p_set_w": {"c": 1000.0}, "v_pu": {"g": 0.9}}}, 0)
        assert sim.get_data({"h1": ["p_w"]})["h1"]["p_w"] == pytest.approx(810.0)
        sim.step(60, {"h1": {"p_set_w": {"c": 2500.0}}}, 0)  # above the rating: refused, not clipped
        assert sim.devices["h1"].rejected == 1
        text = BASE.replace("  - {id: meter, family: probe_meter, site: h}\n  - {id: lag, family: probe_lagging, site: h}",
                            "  - {id: h1, family: heater, site: h, config: {p_rated_w: 2000}}")
        result = run(load(write(tmp_path, text)), tmp_path / "run", progress=False, report=False)
        assert result.status == "complete"
        assert set(read_table(tmp_path / "run", "devices").get("h1", "p_w")) == {0.0}  # no setpoint: off
    finally:
        registry.unregister_family("heater")


def test_the_world_builder_is_the_build_context_controller_kinds_see(tmp_path, probes):
    from cosim.build_context import BuildContext
    from cosim.world import WorldBuilder

    builder = WorldBuilder(load(write(tmp_path, BASE)), tmp_path / "w")
    try:
        assert isinstance(builder, BuildContext)
    finally:
        builder.world.shutdown()
