"""The simulators work in a hand-written mosaik scenario, without the scenario layer (docs/scenario-format.md)."""

from pathlib import Path
from typing import ClassVar

import mosaik
import mosaik_api_v3
import pytest

FUR = Path(__file__).resolve().parents[1] / "scenarios" / "data" / "s4g" / "fur_feeder.json"


class Collector(mosaik_api_v3.Simulator):
    seen: ClassVar[dict] = {}

    def __init__(self):
        super().__init__({"api_version": "3.0", "type": "time-based",
                          "models": {"C": {"public": True, "params": [], "attrs": [], "any_inputs": True}}})

    def init(self, sid, time_resolution=1.0):
        return self.meta

    def create(self, num, model):
        return [{"eid": "c", "type": "C"}]

    def step(self, time, inputs, max_advance):
        Collector.seen[time] = {attr: dict(v) for attr, v in inputs["c"].items()}
        return time + 60

    def get_data(self, outputs):
        return {}


def test_hand_written_world_with_grid_profiles_and_a_device():
    Collector.seen = {}
    world = mosaik.World({"Grid": {"python": "simulators.grid:GridSim"},
                          "Profiles": {"python": "simulators.profiles:ProfileSim"},
                          "Devices": {"python": "devices.simulator:DeviceSim"},
                          "Collector": {"python": "tests.test_hand_written_world:Collector"}},
                         skip_greetings=True, configure_logging=False)
    grid = world.start("Grid", step_size=60).Grid(source="dsf-se", path=str(FUR), mode="unbalanced")
    profiles = world.start("Profiles", start="2019-06-15T12:00:00+02:00", step_size=60,
                           timezone="Europe/Copenhagen")
    load = profiles.Load(source="s4g-residential", column="profile_370")
    pv = profiles.PV(source="s4g-pv", column="fur_denmark")
    house = world.start("Devices", step_size=60).pv_battery(device_id="house",
                                                            config={"pv_kwp": 4, "ac_max_w": 5000})
    pcc = next(e for e in grid.children if e.eid == "load:consumer_4006773")
    sink = world.start("Collector").C()
    world.connect(load, pcc, "p_w", "q_var")
    world.connect(pv, house, ("w_per_kwp", "pv_w_per_kwp"))
    world.connect(house, pcc, "p_w", "q_var")
    world.connect(pcc, sink, "p_w", "v_pu")
    world.connect(house, sink, "pv_p_w")
    world.connect(load, sink, ("p_w", "load_p_w"))
    world.run(until=1800, print_progress=False)

    assert sorted(Collector.seen) == list(range(0, 1800, 60))
    for _t, row in Collector.seen.items():
        pcc_p = row["p_w"][pcc.full_id]
        # the PCC sums the household load and the inverter (PV producing is negative) at midday
        assert pcc_p == pytest.approx(row["load_p_w"][load.full_id] + row["pv_p_w"][house.full_id])
        assert row["pv_p_w"][house.full_id] < 0
        assert 0.9 < row["v_pu"][pcc.full_id] < 1.1
