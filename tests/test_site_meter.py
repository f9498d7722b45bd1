"""The Unbundled Smart Meter of a site: a meter device at the site's PCC is the site's SMM.

* The SMX side reads the PCC through it: a controller's ``pcc_p_w`` comes from the meter (over DLMS when the
  meter sits at ``dlms+tcp://``), not from the grid simulator.
* The site's energy KPIs (import, export, peaks, bill) come from its metered registers.

Tolerance of metered versus simulated energies, per energy KPI: one register unit (the registers are
``floor(exact / resolution)``, 1 Wh here) + the first step, which the registers cannot show (the register
before the first step is not recorded) and is taken from the 1-W power reading (<= 0.5 W x one step) + the
power's 1 mW quantisation inside the meter (<= 0.5 mW x the run). Peaks: the 1 W power resolution. A DLMS run
and a sim:// run give identical numbers: the protocol carries the same register integers (exact, see
tests/test_meter_driver.py).
"""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import numpy as np
import pytest

from cosim.kpi import flatten
from cosim.rundir import read_table
from cosim.run import run
from cosim.scenario import ScenarioError, load
from cosim.world import WorldBuilder

REPO = Path(__file__).resolve().parents[1]
FUR = REPO / "scenarios" / "data" / "s4g" / "fur_feeder.json"
STEP_S, HOURS = 300, 2


def scenario(tmp_path: Path, meter_address: str, extra_devices: str = "") -> Path:
    text = f"""
    name: smm
    start: 2019-06-15T09:00:00+02:00
    duration: {HOURS}h
    step: {STEP_S}s
    grid: {{source: dsf-se, path: {FUR}, mode: unbalanced}}
    profiles:
      pv: {{source: s4g-pv, column: fur_denmark}}
      price: {{kind: fixed, import_eur_per_kwh: 0.30, export_eur_per_kwh: 0.08}}
    sites:
      - {{id: h1, bus: bus_002, phase: 2, load: {{column: profile_1, power_factor: 0.95}}}}
      - {{id: h2, bus: bus_002, phase: 1, load: {{column: profile_7, power_factor: 0.95}}}}
    devices:
      - {{id: pv1, family: pv_battery, site: h1, config: {{pv_kwp: 6, ac_max_w: 6000, battery: {{capacity_wh: 3000,
          p_charge_max_w: 1500, p_discharge_max_w: 1500, soc_init: 0.3}}}}}}
      - {{id: smm1, family: meter, site: h1, address: '{meter_address}', config: {{phases: 1, phase: b}}}}
      - {{id: smm2, family: meter, site: h2, address: '{meter_address}', config: {{phases: 1, phase: a}}}}
    {extra_devices}
    controllers:
      - {{id: sc, kind: self_consumption, devices: [pv1]}}
    """
    path = tmp_path / f"smm-{meter_address.split(':')[0]}.yaml"
    path.write_text(textwrap.dedent(text))
    return path


def tolerance_kwh() -> float:
    steps = HOURS * 3600 // STEP_S
    return (1.0 + 0.5 * STEP_S / 3600 + steps * 0.0005 * STEP_S / 3600) / 1000.0


def test_the_smx_reads_the_pcc_through_the_site_meter(tmp_path):
    loaded = load(scenario(tmp_path, "sim://"))
    builder = WorldBuilder(loaded, tmp_path / "build").build()
    try:
        graph = builder.world.entity_graph  # undirected: who is connected to whom
        meter, pcc = builder.devices["smm1"].full_id, builder.sites["h1"].pcc.full_id
        ctl = next(n for n in graph.neighbors(meter) if n.startswith("Baselines"))
        assert builder.sites["h1"].pcc_reading is builder.devices["smm1"]
        assert not graph.has_edge(pcc, ctl)  # the controller no longer reads the grid's point itself
        meta = json.loads((tmp_path / "build" / "meta.json").read_text())
        assert {s["id"]: s["meter"] for s in meta["sites"]} == {"h1": "smm1", "h2": "smm2"}
    finally:
        builder.close()
        builder.world.shutdown()


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("smm")
    out = {}
    for name, address in (("sim", "sim://"), ("dlms", "dlms+tcp://")):
        result = run(load(scenario(tmp, address)), tmp / name, progress=False, report=False)
        assert result.status == "complete", result.error
        out[name] = (result, tmp / name)
    return out


def test_site_energy_kpis_come_from_the_metered_registers(runs):
    result, run_dir = runs["sim"]
    sites, dev = read_table(run_dir, "sites"), read_table(run_dir, "devices")
    tol = tolerance_kwh()
    for site, meter in (("h1", "smm1"), ("h2", "smm2")):
        k = result.kpis["sites"][site]
        pcc = sites.get(site, "pcc_p_w")
        exact_import = float(np.sum(np.maximum(pcc, 0))) * STEP_S / 3.6e6
        exact_export = float(np.sum(np.maximum(-pcc, 0))) * STEP_S / 3.6e6
        assert k["import_kwh"] == pytest.approx(exact_import, abs=tol)
        assert k["export_kwh"] == pytest.approx(exact_export, abs=tol)
        # and they really are the registers: the last register minus the one before the first step
        e = dev.get(meter, "e_import_wh")
        p0 = max(dev.get(meter, "p_w")[0], 0.0)
        assert k["import_kwh"] == pytest.approx((e[-1] - e[0] + p0 * STEP_S / 3600) / 1000, abs=1e-12)
        assert k["peak_import_kw"] == pytest.approx(max(float(pcc.max()), 0) / 1000, abs=0.0005 + 1e-12)
        assert k["bill_eur"] == pytest.approx(0.30 * exact_import - 0.08 * exact_export, abs=0.30 * tol)
    # the PV site exported during the day, the other one only imported: both directions are exercised
    assert result.kpis["sites"]["h1"]["export_kwh"] > 0.05 and result.kpis["sites"]["h2"]["import_kwh"] > 0.1


def test_a_dlms_run_gives_the_sim_kpis(runs):
    (sim, _), (wire, wire_dir) = runs["sim"], runs["dlms"]
    a, b = flatten(sim.kpis), flatten(wire.kpis)
    compared = [k for k, v in a.items() if isinstance(v, float) and not k.startswith("run.")]
    assert len(compared) > 40
    for key in compared:
        assert b[key] == pytest.approx(a[key], abs=1e-9), key
    wire_dev = read_table(wire_dir, "devices")
    assert set(wire_dev.get("smm1", "available")) == {1.0}  # read over DLMS every step


def test_two_meters_at_one_site_are_refused(tmp_path):
    extra = "  - {id: smm3, family: meter, site: h1}"
    with pytest.raises(ScenarioError) as err:
        load(scenario(tmp_path, "sim://", extra))
    message = str(err.value)
    assert "devices[3].site" in message and "smm1" in message and "smm3" in message


def test_register_steps_unwrap_a_rollover_and_take_the_first_step_from_power():
    from cosim.kpi import _register_steps

    # a 4-digit Wh register rolling over between the second and third reading
    steps = _register_steps(np.array([9990.0, 9998.0, 3.0, 10.0]), first_wh=5.0)
    np.testing.assert_array_equal(steps, [5.0, 8.0, 5.0, 7.0])


def test_a_family_that_meters_its_point_neither_injects_nor_lacks_registers():
    from devices.base import Capabilities
    from devices.family import METERED, Family
    from devices.meter.model import MeterBank, MeterConfig

    common = dict(name="m", config=MeterConfig, bank=MeterBank, capabilities=lambda c: Capabilities(()))
    with pytest.raises(ValueError, match="meters its point"):
        Family(**common, measurements=METERED, injects=True, meters_point=True)
    with pytest.raises(ValueError, match="e_export_wh"):
        Family(**common, measurements=("p_w", "q_var", "e_import_wh"), injects=False, meters_point=True)
    assert Family(**common, measurements=METERED, injects=False, meters_point=True).meters_point
