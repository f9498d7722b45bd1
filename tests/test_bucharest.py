"""The Bucharest pilot: the Energy Router on the world's inputs (outage → island → black start → resync), its DC
bus balance under drawn profiles and events, the scenario's KPIs beside their targets, determinism with events."""

from __future__ import annotations

import datetime as dt
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from devices import registry

try:  # the family joins the contract on branch integ ("ER and meter in scenarios")
    registry.family("energy_router")
except Exception as exc:  # pragma: no cover - until that commit is merged
    pytest.skip(f"energy_router is not loadable yet: {exc}", allow_module_level=True)

from cosim.events import EventSpec, Schedule
from cosim.pilot_kpis import compute as pilot_compute
from cosim.rundir import read_table
from cosim.run import run
from cosim.scenario import load
from devices.energy_router.model import AC_RAMP, DC_ON, GRID, ISLAND, PRECHARGE, RESYNC
from devices.simulator import DeviceSim

REPO = Path(__file__).resolve().parents[1]
SCENARIO = REPO / "scenarios" / "bucharest.yaml"
START = dt.datetime(2019, 6, 20, tzinfo=dt.timezone(dt.timedelta(hours=3)))
CONFIG = {"on_grid_loss": "black_start", "ac_load_w": 300, "dc_load_w": 100,
          "battery": {"capacity_wh": 5000, "p_charge_max_w": 2500, "p_discharge_max_w": 2500, "soc_init": 0.6}}


def host(config: dict, step_s: int = 1) -> tuple[DeviceSim, str]:
    sim = DeviceSim()
    sim.init("Devices-0", step_size=step_s)
    (ent,) = sim.create(1, "energy_router", config=config, device_id="er")
    sim.setup_done()
    return sim, ent["eid"]


def step(sim: DeviceSim, eid: str, t: int, **inputs: float) -> dict:
    sim.step(t, {eid: {name: {"src": value} for name, value in inputs.items()}}, t + 3600)
    attrs = list(registry.family("energy_router").measurements)
    return sim.get_data({eid: attrs})[eid]


def test_the_family_reads_the_world_sources_of_the_pilot():
    fam = registry.family("energy_router")
    sources = {i.source: i.name for i in fam.inputs}
    assert {"site.pv_w_per_kwp", "site.dc_load_p_w", "point.grid_present"} <= set(sources)
    assert "site.load_p_w" not in sources  # the site's load is drawn at the PCC already (no double count)


def test_outage_island_black_start_and_resync_with_their_timing():
    """Through the device host, 1 s steps: the grid leaves at t = 10 s and comes back at t = 100 s."""
    sim, eid = host(CONFIG)
    schedule = Schedule([EventSpec.model_validate({"kind": "outage", "site": "lab", "from": 10, "duration": 90})],
                        START)
    seen = []
    for t in range(200):
        m = step(sim, eid, t, grid_available=schedule.grid_present("lab", t), pv_w_per_kwp=0.0)
        seen.append((t + 1, int(m["state"]), m["dc_load_w"], m["ac_load_w"], m["v_v"]))
    state = {t: s for t, s, *_ in seen}  # the state at the end of the step [t - 1, t)
    # the relay drops the bus at t = 10 s; black start: precharge 5 s, DC on 2 s, AC ramp 3 s, then the island
    expected = {10: GRID, **dict.fromkeys(range(11, 15), PRECHARGE), 15: DC_ON, 16: DC_ON, 17: AC_RAMP, 18: AC_RAMP,
                19: AC_RAMP, **dict.fromkeys(range(20, 101), ISLAND), **dict.fromkeys(range(101, 160), RESYNC),
                160: GRID, 200: GRID}
    assert {t: state[t] for t in expected} == expected
    served = {t: (dc, ac) for t, _, dc, ac, _ in seen}
    # DC loads from 5 s after the start, AC loads from 10 s after it, at the island's full voltage
    assert served[15] == (0.0, 0.0) and served[16] == (pytest.approx(100.0), 0.0) and served[20][1] == 0.0
    assert served[21] == (pytest.approx(100.0), pytest.approx(300.0))
    assert all(230 * 0.9 <= v <= 230 * 1.1 for t, s, _, _, v in seen if s in (ISLAND, RESYNC) and t > 20)


def test_the_seamless_router_islands_at_once_and_one_step_equals_many():
    for cfg, first in (({**CONFIG, "on_grid_loss": "island"}, ISLAND), (CONFIG, ISLAND)):
        fine, eid = host(cfg, 1)
        coarse, eid2 = host(cfg, 60)
        for t in range(60):
            a = step(fine, eid, t, grid_available=0.0)
        b = step(coarse, eid2, 0, grid_available=0.0)
        assert int(a["state"]) == int(b["state"]) == first
        assert a["e_unserved_wh"] == pytest.approx(b["e_unserved_wh"], abs=1e-9)
        assert a["soc"] == pytest.approx(b["soc"], abs=1e-12)


profile = st.fixed_dictionaries({"pv": st.floats(0, 1000), "dc": st.floats(0, 600), "limit": st.sampled_from(
    [None, 0.0, 500.0]), "batt": st.sampled_from([None, -2000.0, 0.0, 1500.0])})


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(steps=st.lists(profile, min_size=5, max_size=40),
       outages=st.lists(st.tuples(st.integers(0, 39), st.integers(1, 15)), max_size=3),
       trips=st.lists(st.tuples(st.integers(0, 39), st.integers(1, 5)), max_size=1),
       dt_s=st.sampled_from([1, 10, 60]), soc0=st.floats(0.12, 0.95))
def test_dc_bus_balances_to_rounding_under_profiles_and_events(steps, outages, trips, dt_s, soc0):
    events = [EventSpec.model_validate({"kind": "outage", "site": "lab", "from": a * dt_s, "duration": d * dt_s})
              for a, d in outages]
    events += [EventSpec.model_validate({"kind": "device_trip", "device": "er", "from": a * dt_s,
                                         "duration": d * dt_s}) for a, d in trips]
    schedule = Schedule(events, START)
    cfg = {**CONFIG, "battery": {**CONFIG["battery"], "soc_init": soc0}}
    sim, eid = host(cfg, dt_s)
    bank = sim.banks["energy_router"][0]
    e_prev = float(bank.battery.e_wh[0])
    for k, s in enumerate(steps):
        t = k * dt_s
        present = schedule.grid_present("lab", t) * (0.0 if schedule.tripped("er", t) else 1.0)
        inputs = {"grid_available": present, "pv_w_per_kwp": s["pv"], "dc_load_demand_w": s["dc"]}
        if s["batt"] is not None:
            inputs["batt_p_w"] = s["batt"]
        if s["limit"] is not None:
            inputs["p_limit_w"] = s["limit"]
        m = step(sim, eid, t, **inputs)
        scale = 3000.0 + 2 * s["pv"] + s["dc"]
        assert abs(bank.dc_imbalance_w()[0]) <= 1e-9 * scale  # pv + inverter + link = battery + loads + aux
        assert all(np.isfinite(v) for v in m.values())  # an outage never loses a recorded value
        if present == 0.0:
            assert m["p_w"] == 0.0 and int(m["state"]) != GRID  # nothing crosses an open PCC
        # the battery's energy moves by what its cells took (the bank's own bookkeeping)
        e_now = float(bank.battery.e_wh[0])
        assert 0.1 * 5000 - 1e-6 <= e_now <= 0.95 * 5000 + 1e-6 or e_now == pytest.approx(e_prev)
        e_prev = e_now
        # served never exceeds demand; what is not served is counted
        assert m["dc_load_w"] <= s["dc"] + 1e-9 and m["unserved_w"] >= -1e-9


# ---------------------------------------------------------------- the scenario (a short evening around the outage)

EVENING = {"start": "2019-06-20T19:00:00+03:00", "duration": "2h",
           "events": [{"kind": "outage", "site": "lab", "from": "30min", "duration": "45min"}]}


@pytest.fixture(scope="module")
def evening(tmp_path_factory):
    d = tmp_path_factory.mktemp("bucharest")
    res = run(load(SCENARIO, overrides=EVENING), d / "run", progress=False, report=True)
    assert res.status == "complete", res.error
    return d / "run", res


def test_every_variant_of_the_scenario_validates():
    base = load(SCENARIO)
    assert set(base.variants) == {"s4g", "rule_based", "no_control", "profess"}
    for v in base.variants:
        load(SCENARIO, variant=v)


def test_the_outage_runs_island_black_start_resync_and_meets_the_targets(evening):
    run_dir, res = evening
    pilot = res.kpis["pilot"]
    rows = {r["key"]: r for r in pilot["rows"]}
    assert rows["black_start_island_held_min"]["met"] and rows["black_start_island_held_min"]["value"] >= 44
    assert rows["dc_load_held_min"]["met"] and rows["dc_load_held_min"]["value"] >= 44
    assert rows["time_to_restore_s"]["value"] == pytest.approx(60.0, abs=10.0)
    assert rows["mode_changes"]["value"] == 7  # grid → off → precharge → dc_on → ac_ramp → island → resync → grid
    assert 390 <= rows["v_dc_min_v"]["value"] <= rows["v_dc_max_v"]["value"] <= 410
    assert rows["energy_not_served_wh"]["value"] > 0  # the AC loads at the open PCC
    assert rows["storage_service_deviation_pct"]["met"]
    dev = read_table(run_dir, "devices")
    t = dev.t_s
    assert np.array_equal(t, np.arange(0, 7200, 10))  # no recorded step lost
    out = (t >= 1800) & (t < 4500)
    state = dev.get("er_lab", "state")
    assert np.all(np.isin(state[out], (ISLAND,))) and np.all(state[t < 1800] == GRID) and state[-1] == GRID
    assert np.all(dev.get("er_lab", "p_w")[out] == 0.0)
    assert np.all(read_table(run_dir, "sites").get("lab", "pcc_p_w")[out] == 0.0)
    # the meter at the open PCC reads 0 V; the neighbour's meter its supplied PCC
    assert np.all(dev.get("meter_pcc", "v_v")[out] == 0.0) if dev.get("meter_pcc", "v_v") is not None else True
    html = (run_dir / "report" / "report.html").read_text()
    assert "Pilot targets: bucharest" in html and "Energy Router through the outage" in html


def test_determinism_with_events(evening, tmp_path):
    run_dir, _ = evening
    again = run(load(SCENARIO, overrides=EVENING), tmp_path / "again", progress=False, report=False)
    for table in ("sites", "devices", "controllers", "grid"):
        a, b = read_table(run_dir, table), read_table(tmp_path / "again", table)
        for name in a.columns:
            np.testing.assert_array_equal(a.columns[name], b.columns[name], err_msg=name)
    assert again.kpis["pilot"] == json.loads((run_dir / "kpis.json").read_text())["pilot"]


def test_pilot_kpis_need_no_router_to_stay_calm(evening):
    from cosim import kpi

    run_dir, _ = evening
    data = kpi.load(run_dir)
    data.meta["devices"] = [d for d in data.meta["devices"] if d["family"] != "energy_router"]
    rows = pilot_compute(data)["rows"]
    assert rows[0]["met"] is False and rows[0]["value"] is None


def test_s4g_run_prints_the_pilot_targets(tmp_path):
    out = subprocess.run([sys.executable, "-m", "s4g", "run", str(SCENARIO), "--until", "10min", "--no-progress", "--no-report", "--out",
                          str(tmp_path / "r")], capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr
    assert "pilot targets: bucharest" in out.stdout and "storage service deviation" in out.stdout
