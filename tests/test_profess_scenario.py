"""The controller kinds wired by the world builder: PROFESS, GESSCon + LESSAg and the voltage controller
in a short run of the Fur feeder (a variant of scenarios/fur_skive.yaml)."""

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from cosim import scenario
from cosim.run import run

ROOT = Path(__file__).resolve().parents[1]

CONTROLLERS = yaml.safe_load("""
- id: profess
  kind: profess
  devices: [fronius_4006773, fronius_4018215]
  params: {objective: min_bill, step_s: 900}
- id: gesscon
  kind: gesscon
  devices: [fronius_4011906, fronius_4009331, fronius_4021012]
  params: {transformer_limit_w: 100000, lessag: {pcc_gain: 0.5}}
- id: vc
  kind: voltage_control
  devices: [libal]
  params: {volt_watt: {v1: 0.9, v2: 0.995, v3: 1.0, v4: 1.05, low: 1.0, high: 1.0}}
""")
# the voltage-controlled battery sits at a feeder node, where voltage moves
GRID_BATTERY = {"id": "libal", "family": "battery", "bus": "node_a16",
                "config": {"battery": {"capacity_wh": 60000, "p_charge_max_w": 30000, "p_discharge_max_w": 30000,
                                       "soc_init": 0.5}, "s_max_va": 40000}}


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    data = yaml.safe_load((ROOT / "scenarios" / "fur_skive.yaml").read_text(encoding="utf-8"))
    data["grid"]["path"] = str(ROOT / "scenarios" / data["grid"]["path"])
    data.update({"duration": "2h", "start": "2019-06-15T11:00:00+02:00", "controllers": CONTROLLERS})
    data["devices"] = [d for d in data["devices"] if d["id"] != "libal"] + [GRID_BATTERY]
    data.pop("variants")
    path = tmp_path_factory.mktemp("sc") / "fur_controllers.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    out = tmp_path_factory.mktemp("run")
    res = run(scenario.load(path), out, progress=False, kpis=False)
    assert res.status == "complete", res.error
    return out


def test_kinds_are_wired_and_recorded(run_dir):
    ctl = pd.read_parquet(run_dir / "timeseries" / "controllers.parquet")
    dev = pd.read_parquet(run_dir / "timeseries" / "devices.parquet")
    for d in ("fronius_4006773", "fronius_4018215"):
        assert ctl[f"profess/{d}.solve_ms"].max() < 1000
        assert np.isfinite(ctl[f"profess/{d}.objective"]).all()
    for d in ("fronius_4011906", "fronius_4009331", "fronius_4021012"):
        assert (ctl[f"gesscon/{d}.fallback"] == 0).all()  # a fresh schedule from the start
        assert np.isfinite(ctl[f"gesscon/{d}.p_schedule_w"]).all()
    assert ctl["gesscon.solve_ms"].iloc[0] < 1000
    # voltage control: a tight curve around 1.0 pu makes the grid battery act on the measured voltage
    assert ctl["vc/libal.v_seen_pu"].between(0.9, 1.1).all()
    assert ctl["vc/libal.p_w"].abs().max() > 0
    # setpoints are applied from the next step (time-shifted) and never rejected by the devices
    assert (dev[[c for c in dev.columns if c.endswith(".rejected")]].to_numpy() == 0).all()
    for d in ("fronius_4006773", "fronius_4011906"):
        soc = dev[f"{d}.soc"]
        assert soc.between(0.05 - 1e-9, 1.0 + 1e-9).all()
