"""The meter and the Energy Router in a scenario, wired from their declarations alone (sim://)."""

from __future__ import annotations

import textwrap
from pathlib import Path

import numpy as np

from cosim.run import run
from cosim.rundir import read_table
from cosim.scenario import load

REPO = Path(__file__).resolve().parents[1]
FUR = REPO / "scenarios" / "data" / "s4g" / "fur_feeder.json"

SCENARIO = f"""
name: meter_er
start: 2019-06-15T10:00:00+02:00
duration: 1h
step: 5min
grid: {{source: dsf-se, path: {FUR}, mode: unbalanced}}
profiles: {{pv: {{source: s4g-pv, column: fur_denmark}}}}
sites:
  - {{id: h, bus: bus_002, phase: 2, load: {{column: profile_1, power_factor: 0.95}}}}
devices:
  - {{id: smm, family: meter, site: h, config: {{phases: 1, phase: b}}}}
  # a full battery: self-consumption cannot store the PV, the ER exports it
  - {{id: er, family: energy_router, site: h, config: {{pv_kwp: 3, battery: {{capacity_wh: 5000,
      p_charge_max_w: 2500, p_discharge_max_w: 2500, soc_max: 0.95, soc_init: 0.95}}}}}}
"""


def test_a_meter_at_the_pcc_and_an_er_behind_it(tmp_path):
    path = tmp_path / "s.yaml"
    path.write_text(textwrap.dedent(SCENARIO))
    loaded = load(path)
    result = run(loaded, tmp_path / "run", progress=False, report=False)
    assert result.status == "complete"
    dev, sites = read_table(tmp_path / "run", "devices"), read_table(tmp_path / "run", "sites")
    pcc, load_w, er_p = sites.get("h", "pcc_p_w"), sites.get("h", "load_p_w"), dev.get("er", "p_w")
    # the ER injects at the PCC (PV on its DC bus exports), the meter does not
    assert np.all(er_p < 0)
    np.testing.assert_allclose(pcc, load_w + er_p, atol=1e-6)
    # the meter reads the solution of the same step, in its 1 W resolution
    assert np.all(np.abs(dev.get("smm", "p_w") - pcc) <= 0.5)
    # its clock runs from the scenario start (the build context): the end of each step
    start = loaded.scenario.start.timestamp()
    np.testing.assert_array_equal(dev.get("smm", "clock_unix_s"), start + dev.t_s + 300)
