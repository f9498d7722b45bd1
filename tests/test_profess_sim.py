"""PROFESS as a mosaik controller in a hand-written world: device + profiles + controller, one day."""

from typing import ClassVar

import mosaik
import mosaik_api_v3
import numpy as np
import pytest

from controllers.forecast import block_means
from controllers.profess import ProfessParams, ProfessSim
from simulators.profiles import load_profile, pv_profile

START = "2019-06-15T00:00:00+02:00"
STEP = 60
DAY = 86400
BATT = {"capacity_wh": 4500, "p_charge_max_w": 2400, "p_discharge_max_w": 2400, "eta_charge": 0.96,
        "eta_discharge": 0.96, "soc_min": 0.05, "soc_max": 1.0, "soc_init": 0.3}

META = {"api_version": "3.0", "type": "time-based",
        "models": {"Series": {"public": True, "params": ["values", "attr"], "attrs": ["p_w", "w_per_kwp"]},
                   "Meter": {"public": True, "params": [], "attrs": ["load_p_w", "dev_p_w", "p_w", "v_pu"]},
                   "Log": {"public": True, "params": [], "attrs": [], "any_inputs": True}}}


class ScriptedSim(mosaik_api_v3.Simulator):
    """Series outputs scripted values; Meter sums load and device into the PCC; Log keeps its inputs."""

    log: ClassVar[list] = []

    def __init__(self):
        super().__init__(META)
        self.series, self.kind, self.pcc = {}, {}, {}

    def init(self, sid, time_resolution=1.0, **_):
        return self.meta

    def create(self, num, model, values=None, attr=None):
        eid = f"{model}{len(self.kind)}"
        self.kind[eid] = model
        if model == "Series":
            self.series[eid] = (np.asarray(values, float), attr)
        return [{"eid": eid, "type": model}]

    def step(self, time, inputs, max_advance):
        self.t = time
        for eid, attrs in inputs.items():
            vals = {a: sum(v for v in s.values() if v is not None) for a, s in attrs.items()}
            if self.kind[eid] == "Meter":
                self.pcc[eid] = vals.get("load_p_w", 0.0) + vals.get("dev_p_w", 0.0)
            else:
                ScriptedSim.log.append((time, vals))
        return time + STEP

    def get_data(self, outputs):
        out = {}
        for eid, _attrs in outputs.items():
            if self.kind[eid] == "Series":
                v, attr = self.series[eid]
                out[eid] = {attr: float(v[min(self.t // STEP, v.size - 1)])}
            else:
                out[eid] = {"p_w": self.pcc.get(eid, 0.0), "v_pu": 1.0}
        return out


def run_world(tmp_path, params: dict | None, days: float = 1.0):
    ScriptedSim.log = []
    dur = int(days * DAY)
    horizon = 2 * DAY
    load = load_profile("s4g-residential", "profile_121", start=START, duration_s=dur + horizon, step_s=STEP)
    pv = pv_profile("s4g-pv", "fur_denmark", start=START, duration_s=dur + horizon, step_s=STEP)
    world = mosaik.World({"Devices": {"python": "devices.simulator:DeviceSim"},
                          "Test": {"python": "tests.test_profess_sim:ScriptedSim"},
                          "Profess": {"python": "controllers.profess:ProfessSim"}},
                         skip_greetings=True, configure_logging=False)
    devices = world.start("Devices", step_size=STEP, events_path=str(tmp_path / "events.jsonl"))
    test = world.start("Test")  # sources
    sink = world.start("Test")  # meter and log (a second instance: no simulator-level cycle)
    house = devices.pv_battery(config={"pv_kwp": 5, "ac_max_w": 5000, "battery": BATT}, device_id="house")
    load_e = test.Series(values=load.tolist(), attr="p_w")
    pv_e = test.Series(values=pv.tolist(), attr="w_per_kwp")
    meter = sink.Meter()
    log = world.start("Test").Log()  # a third instance: the log sees everything, feeds nothing
    world.connect(pv_e, house, ("w_per_kwp", "pv_w_per_kwp"))
    world.connect(load_e, meter, ("p_w", "load_p_w"))
    world.connect(house, meter, ("p_w", "dev_p_w"))
    world.connect(house, log, "p_w", "soc", "e_wh", "batt_p_w")
    world.connect(load_e, log, ("p_w", "load_p_w"))
    if params is not None:
        p = ProfessParams.model_validate(params)
        ctl_sim = world.start("Profess", step_size=STEP)
        f = p.step_s // STEP
        ctl = ctl_sim.Profess(
            params=p.model_dump(),
            battery={k: BATT[k] for k in BATT if k != "soc_init"} | {"inverter_ac_max_w": 5000, "contract_import_w": 17000},
            pv_kwp=5, pv_eta=0.97, load_truth_w=block_means(load, f).tolist(),
            pv_truth_w_per_kwp=block_means(pv, f).tolist(), import_eur_per_kwh=[0.30] * (len(load) // f),
            export_eur_per_kwh=[0.08] * (len(load) // f))
        world.connect(house, ctl, "e_wh", "p_charge_avail_w", "p_discharge_avail_w")
        world.connect(meter, ctl, ("p_w", "pcc_p_w"), "v_pu")
        world.connect(load_e, ctl, ("p_w", "load_p_w"))
        world.connect(pv_e, ctl, ("w_per_kwp", "pv_w_per_kwp"))
        world.connect(ctl, house, ("p_set_w", "batt_p_w"), time_shifted=True, initial_data={"p_set_w": 0.0})
        world.connect(ctl, log, "p_set_w", "ok")
    world.run(until=dur, print_progress=False)
    world.shutdown()
    rows = [v for _, v in sorted(ScriptedSim.log, key=lambda r: r[0])]
    merged = {}
    for t, v in ScriptedSim.log:
        merged.setdefault(t, {}).update(v)
    ts = sorted(merged)
    arr = {k: np.array([merged[t].get(k, np.nan) for t in ts]) for k in ("p_w", "soc", "load_p_w", "p_set_w", "ok")}
    assert rows
    return arr


@pytest.mark.parametrize("forecast,ratio", [("perfect", 0.3), ("persistence", 1.0)])
def test_profess_in_a_closed_loop_reduces_grid_exchange(tmp_path, forecast, ratio):
    base = run_world(tmp_path / "base", None)
    mpc = run_world(tmp_path / "mpc", {"objective": "min_grid_exchange", "step_s": 900, "forecast": forecast})
    pcc_base = base["load_p_w"] + base["p_w"]
    pcc_mpc = mpc["load_p_w"] + mpc["p_w"]
    assert np.all(mpc["soc"] >= 0.05 - 1e-9) and np.all(mpc["soc"] <= 1.0 + 1e-9)
    assert np.nanmin(mpc["ok"]) == 1.0  # every cycle solved
    assert np.sum(pcc_mpc**2) < ratio * np.sum(pcc_base**2)
    assert np.nanmax(np.abs(mpc["p_set_w"])) <= 2400 + 1e-6


def test_params_validation():
    with pytest.raises(ValueError):
        ProfessParams(step_s=7)  # does not divide a day
    with pytest.raises(ValueError):
        ProfessParams(step_s=900, horizon_s=1000)
    with pytest.raises(ValueError):
        ProfessParams.model_validate({"objective": "min_grid_exchange", "unknown": 1})
    sim = ProfessSim()
    sim.init("P", step_size=600)
    with pytest.raises(ValueError):  # the MPC step must be a multiple of the scenario step
        sim.create(1, "Profess", params={"step_s": 900},
                   battery={"capacity_wh": 1, "p_charge_max_w": 1, "p_discharge_max_w": 1})
