"""The device host in a hand-written mosaik world, and the sim:// driver through the one interface."""

import asyncio
import json
from typing import ClassVar

import mosaik
import mosaik_api_v3
import numpy as np
import pytest

from devices import registry
from devices.base import Address, DeviceUnavailable, Setpoint, SetpointRejected

BATT = {"capacity_wh": 10_000, "p_charge_max_w": 3000, "p_discharge_max_w": 3000, "soc_init": 0.5,
        "eta_charge": 1.0, "eta_discharge": 1.0, "soc_min": 0.0, "soc_max": 1.0}

SCRIPT_META = {"api_version": "3.0", "type": "time-based",
               "models": {"Script": {"public": True, "params": ["values"], "attrs": ["value"]},
                          "Sink": {"public": True, "params": [], "attrs": [], "any_inputs": True}}}


class ScriptSim(mosaik_api_v3.Simulator):
    """Outputs a scripted value per step; the Sink keeps what it receives."""

    received: ClassVar[list] = []

    def __init__(self):
        super().__init__(SCRIPT_META)
        self.scripts = {}

    def init(self, sid, time_resolution=1.0):
        return self.meta

    def create(self, num, model, values=None):
        eid = f"{model}{len(self.scripts)}"
        self.scripts[eid] = values
        return [{"eid": eid, "type": model}]

    def step(self, time, inputs, max_advance):
        self.t = time
        for _eid, attrs in inputs.items():
            ScriptSim.received.append((time, {a: dict(v) for a, v in attrs.items()}))
        return time + 60

    def get_data(self, outputs):
        return {eid: {"value": self.scripts[eid][self.t // 60]} for eid in outputs}


def test_hand_written_world_steps_devices_and_refuses_out_of_range_setpoints(tmp_path):
    ScriptSim.received = []
    world = mosaik.World({"Devices": {"python": "devices.simulator:DeviceSim"},
                          "Script": {"python": "tests.test_device_sim:ScriptSim"}},
                         skip_greetings=True, configure_logging=False)
    devices = world.start("Devices", step_size=60, events_path=str(tmp_path / "events.jsonl"))
    script = world.start("Script")
    house = devices.pv_battery(config={"pv_kwp": 5, "ac_max_w": 5000, "eta_inverter": 1.0, "battery": BATT},
                               device_id="house")
    big = devices.battery(config={"battery": BATT, "s_max_va": 4000}, device_id="big")
    sun = script.Script(values=[0.0, 500.0, 500.0, 500.0])
    house_sp = script.Script(values=[1000.0, 1000.0, 9999.0, -2000.0])  # 9999 W is above the 3000 W rating
    big_sp = script.Script(values=[-3000.0, None, 3000.0, 0.0])
    sink = world.start("Script").Sink()  # its own simulator: no cycle through Script
    world.connect(sun, house, ("value", "pv_w_per_kwp"))
    world.connect(house_sp, house, ("value", "batt_p_w"))
    world.connect(big_sp, big, ("value", "p_w"))
    world.connect(house, sink, "p_w", "batt_p_w", "pv_p_w", "soc", "rejected")
    world.connect(big, sink, "p_w", "soc")
    world.run(until=240, print_progress=False)

    got = dict(ScriptSim.received)  # {t: {attr: {source full id: value}}}
    house_at = {t: {a: v["Devices-0.house"] for a, v in attrs.items() if "Devices-0.house" in v} for t, attrs in got.items()}
    assert house_at[0]["batt_p_w"] == 1000 and house_at[0]["p_w"] == 1000  # night: charging from the grid
    assert house_at[60]["p_w"] == pytest.approx(1000 - 2500)  # 5 kWp at 500 W/kWp, 1 kW into the battery
    assert house_at[120]["batt_p_w"] == 1000 and house_at[120]["rejected"] == 1  # refused: previous kept
    assert house_at[180]["batt_p_w"] == -2000 and house_at[180]["p_w"] == pytest.approx(-4500)
    soc_big = [got[t]["soc"]["Devices-0.big"] for t in sorted(got)]
    # -3000 W for 1 min, kept (None = no new setpoint), then +3000 W, then 0
    assert soc_big == pytest.approx([0.5 - 50 / 10_000, 0.5 - 100 / 10_000, 0.5 - 50 / 10_000, 0.5 - 50 / 10_000])
    events = [json.loads(line) for line in (tmp_path / "events.jsonl").read_text().splitlines()]
    assert events == [{"t_s": 120, "device": "house", "kind": "setpoint_rejected",
                       "message": "batt_p_w=9999 outside [-3000, 3000]"}]


def test_sim_driver_through_the_one_interface():
    fam = registry.family("battery")
    cfg = fam.parse_config({"battery": BATT, "s_max_va": 4000})
    bank = fam.bank([cfg])
    driver = registry.driver_class("sim://")(Address.parse("sim://"), fam.capabilities(cfg), bank=bank, index=0)

    async def scenario():
        with pytest.raises(DeviceUnavailable):
            await driver.read()
        async with driver:
            await driver.write(Setpoint({"p_w": 2000.0}))
            bank.step(0, 3600, {})
            m = await driver.read()
            assert m["p_w"] == 2000 and m["soc"] == pytest.approx(0.7)
            with pytest.raises(SetpointRejected, match="outside"):
                await driver.write(Setpoint({"p_w": 3001.0}))
            with pytest.raises(SetpointRejected, match="not accepted"):
                await driver.write(Setpoint({"frequency_hz": 50.0}))
            with pytest.raises(SetpointRejected, match="not a number"):
                await driver.write(Setpoint({"p_w": float("nan")}))
            assert bank.setpoints["p_w"][0] == 2000.0  # nothing reached the device
        with pytest.raises(DeviceUnavailable):
            await driver.read()

    asyncio.run(scenario())


def test_reactive_power_is_limited_by_the_pcs_rating():
    fam = registry.family("battery")
    bank = fam.bank([fam.parse_config({"battery": BATT, "s_max_va": 5000})])
    bank.setpoints["p_w"][:] = 3000
    bank.setpoints["q_var"][:] = 5000
    bank.step(0, 60, {})
    m = bank.measure()
    assert m["p_w"][0] == 3000 and m["q_var"][0] == pytest.approx(4000)
    assert np.hypot(m["p_w"][0], m["q_var"][0]) <= 5000 + 1e-9


def test_unknown_scheme_and_family_name_what_exists():
    with pytest.raises(KeyError, match="sim"):
        registry.driver_class("pigeon://x")
    with pytest.raises(KeyError, match="pv_battery"):
        registry.family("toaster")


def test_a_protocol_device_that_stops_answering_counts_as_zero_watts_and_is_recorded(tmp_path):
    from devices.simulator import DeviceSim

    sim = DeviceSim()
    sim.init("Devices-0", step_size=60, events_path=str(tmp_path / "events.jsonl"))
    sim.create(1, "fronius", address="sunspec+tcp://", device_id="f",
               config={"pv_kwp": 5, "battery": {"capacity_wh": 4500, "p_charge_max_w": 2400,
                                                 "p_discharge_max_w": 2400}}, timeout_s=0.5)
    sim.setup_done()
    try:
        env = {"f": {"pv_w_per_kwp": {"src": 600.0}, "site_load_w": {"src": 500.0}}}
        sim.step(0, env, 60)
        first = sim.get_data({"f": ["p_w", "soc", "available"]})["f"]
        assert first["available"] is True and first["p_w"] < 0  # PV exporting through the inverter
        sim._io.run(sim.devices["f"].virtual.stop())  # the device goes away mid-run
        sim.devices["f"].virtual = None  # nothing left to clock
        sim.step(60, env, 120)
        second = sim.get_data({"f": ["p_w", "q_var", "soc", "available"]})["f"]
        assert second["available"] is False
        assert second["p_w"] == 0.0 and second["q_var"] == 0.0  # counts as 0 W in the power flow
        assert np.isnan(second["soc"])  # but nothing is invented for what the device would have said
        kinds = [json.loads(line)["kind"] for line in (tmp_path / "events.jsonl").read_text().splitlines()]
        assert "DeviceUnavailable" in kinds
    finally:
        sim.close_devices()


def test_a_table_gives_each_members_measurement_whether_one_bank_or_several():
    """A Table's vectors equal the members' own outputs, for members of one bank in bank order, in another order,
    and across banks (NaN where a member does not measure the attribute)."""
    from devices.simulator import DeviceSim

    sim = DeviceSim()
    sim.init("Devices", step_size=60)
    for k, kwp in enumerate((3.0, 5.0)):
        sim.create(1, "pv_battery", config={"pv_kwp": kwp, "ac_max_w": 5000, "battery": BATT}, device_id=f"pv{k}")
    sim.create(1, "battery", config={"battery": BATT, "s_max_va": 4000}, device_id="store")
    tables = {name: sim.create(1, "Table", members=members)[0]["eid"]
              for name, members in {"in_order": ["pv0", "pv1"], "reversed": ["pv1", "pv0"],
                                    "mixed": ["store", "pv1"]}.items()}
    sim.setup_done()
    sim.step(0, {"pv0": {"pv_w_per_kwp": {"s": 400.0}}, "pv1": {"pv_w_per_kwp": {"s": 600.0}},
                 "store": {"p_w": {"c": 1000.0}}}, 60)
    attrs = ["p_w", "pv_p_w", "soc"]
    own = sim.get_data(dict.fromkeys(("pv0", "pv1", "store"), attrs))
    got = sim.get_data(dict.fromkeys(tables.values(), attrs))
    assert own["pv0"]["pv_p_w"] != own["pv1"]["pv_p_w"]  # the members differ, so order shows
    for name, members in (("in_order", ["pv0", "pv1"]), ("reversed", ["pv1", "pv0"])):
        for attr in attrs:
            assert got[tables[name]][attr].tolist() == [own[m][attr] for m in members]
    mixed = got[tables["mixed"]]
    assert mixed["p_w"].tolist() == [own["store"]["p_w"], own["pv1"]["p_w"]] and mixed["p_w"][0] == 1000.0
    assert np.isnan(mixed["pv_p_w"][0]) and mixed["pv_p_w"][1] == own["pv1"]["pv_p_w"]
