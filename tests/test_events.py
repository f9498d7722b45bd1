"""Scenario events: validation, the grid's outage and sag, trips, communication losses, events.jsonl, determinism."""

import datetime as dt
import json
import textwrap
from pathlib import Path

import numpy as np
import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from cosim.event_sim import read_events
from cosim.events import EventSpec, Schedule
from cosim.rundir import read_table
from cosim.run import run
from cosim.scenario import ScenarioError, load
from simulators.grid import GridEngine, GridSim
from simulators.grid_loaders import load_dsf_se

REPO = Path(__file__).resolve().parents[1]
FUR = REPO / "scenarios" / "data" / "s4g" / "fur_feeder.json"
START = dt.datetime(2019, 6, 15, tzinfo=dt.timezone(dt.timedelta(hours=2)))

BASE = f"""
name: ev
start: 2019-06-15T00:00:00+02:00
duration: 2h
step: 1min
grid: {{source: dsf-se, path: {FUR}, mode: unbalanced}}
profiles:
  pv: {{source: s4g-pv, column: fur_denmark}}
sites:
  - {{id: h1, grid_load: consumer_4006773, load: {{column: profile_1}}}}
  - {{id: h2, grid_load: consumer_4018368, load: {{column: profile_2}}}}
devices:
  - id: d1
    family: pv_battery
    site: h1
    config: {{pv_kwp: 4, ac_max_w: 5000, battery: {{capacity_wh: 4500, p_charge_max_w: 2400, p_discharge_max_w: 2400}}}}
controllers:
  - {{id: sc, kind: self_consumption}}
events:
  - {{kind: outage, site: h1, from: 10min, duration: 20min}}
  - {{kind: voltage_sag, from: 2019-06-15T00:40:00+02:00, duration: 5min, v_pu: 0.85}}
  - {{kind: device_trip, device: d1, from: 50min, duration: 10min}}
  - {{kind: comm_loss, role: "smx:h1", from: 70min, duration: 10min}}
"""


def write(tmp_path, text, name="s.yaml"):
    p = tmp_path / name
    p.write_text(textwrap.dedent(text))
    return p


def with_events(tmp_path, events, **top):
    data = yaml.safe_load(BASE)
    data["events"] = events
    data.update(top)
    return write(tmp_path, yaml.safe_dump(data, sort_keys=False))


# ---------------------------------------------------------------- validation

def test_events_load_with_durations_and_datetimes(tmp_path):
    sc = load(write(tmp_path, BASE)).scenario
    sch = Schedule(sc.events, sc.start)
    assert [(w.spec.kind, w.t0, w.t1) for w in sch.windows] == [
        ("outage", 600, 1800), ("voltage_sag", 2400, 2700), ("device_trip", 3000, 3600), ("comm_loss", 4200, 4800)]
    assert sch.grid_present("h1", 599) == 1.0 and sch.grid_present("h1", 600) == 0.0
    assert sch.grid_present("h1", 1800) == 1.0 and sch.grid_present("h2", 900) == 1.0
    assert sch.source_v_pu(2400) == 0.85 and sch.source_v_pu(2700) == 1.0
    assert sch.tripped("d1", 3000) and not sch.tripped("d1", 3600)
    assert sch.comm_loss("smx:h1", ()) == [(4200, 4800)] and sch.comm_loss("smx:h2", ()) == []


@pytest.mark.parametrize(("event", "path", "message"), [
    ({"kind": "outage", "site": "nowhere", "from": "1h", "duration": "5min"}, "events[0].site", "id of a site"),
    ({"kind": "device_trip", "device": "ghost", "from": "1h", "duration": "5min"}, "events[0].device",
     "id of a device"),
    ({"kind": "comm_loss", "role": "smx:ghost", "from": "1h", "duration": "5min"}, "events[0].role", "smx:<"),
    ({"kind": "comm_loss", "role": "nonsense", "from": "1h", "duration": "5min"}, "events[0].role", "invalid role"),
    ({"kind": "outage", "site": "h1", "from": "90s", "duration": "5min"}, "events[0].from", "step boundaries"),
    ({"kind": "outage", "site": "h1", "from": "1h", "duration": "30s"}, "events[0].duration", "step boundaries"),
    ({"kind": "outage", "site": "h1", "from": "1h", "duration": 0}, "events[0].duration", "> 0"),
    ({"kind": "outage", "site": "h1", "from": "2019-06-14T23:00:00+02:00", "duration": "5min"}, "events[0].from",
     "at or after the scenario start"),
    ({"kind": "outage", "site": "h1", "from": "2019-06-15T01:00:00", "duration": "5min"}, "events[0].from",
     "timezone"),
    ({"kind": "outage", "from": "1h", "duration": "5min"}, "events[0]", "needs 'site'"),
    ({"kind": "outage", "site": "h1", "v_pu": 0.5, "from": "1h", "duration": "5min"}, "events[0]",
     "'v_pu' does not apply"),
    ({"kind": "comm_loss", "role": "data", "device": "d1", "from": "1h", "duration": "5min"}, "events[0]",
     "exactly one of 'role' or 'device'"),
    ({"kind": "voltage_sag", "from": "1h", "duration": "5min"}, "events[0]", "needs 'v_pu'"),
    ({"kind": "voltage_sag", "v_pu": 1.2, "from": "1h", "duration": "5min"}, "events[0].v_pu", "less than 1"),
    ({"kind": "blackout", "from": "1h", "duration": "5min"}, "events[0].kind", "outage"),
    ({"kind": "outage", "site": "h1", "at": "1h", "duration": "5min"}, "events[0].at", "unknown key"),
])
def test_bad_events_name_file_line_and_key_path(tmp_path, event, path, message):
    p = with_events(tmp_path, [event])
    with pytest.raises(ScenarioError) as err:
        load(p)
    text = str(err.value)
    assert f": {path}: " in text and message in text, text
    assert f"{p}:" in text  # a line number follows the file name


def test_an_event_after_the_end_of_a_shortened_run_is_valid(tmp_path):
    sc = load(write(tmp_path, BASE), overrides={"duration": "30min"}).scenario
    assert len(sc.events) == 4  # they simply do not happen within the run


@given(windows=st.lists(st.tuples(st.integers(0, 50), st.integers(1, 20)), max_size=6),
       t=st.integers(0, 80))
@settings(max_examples=100, deadline=None)
def test_schedule_answers_equal_brute_force(windows, t):
    specs = [EventSpec.model_validate({"kind": "outage", "site": "a" if i % 2 else "b", "from": t0 * 60,
                                       "duration": d * 60}) for i, (t0, d) in enumerate(windows)]
    sch = Schedule(specs, START)
    for site in ("a", "b"):
        inside = any(s.site == site and s.start <= t * 60 < s.start + s.duration for s in specs)
        assert sch.grid_present(site, t * 60) == (0.0 if inside else 1.0)
    edges = sch.transitions(t * 60)
    assert all((w.t0 if e == "start" else w.t1) == t * 60 for e, w in edges)


# ---------------------------------------------------------------- the grid

@pytest.mark.parametrize("mode", ["balanced", "unbalanced"])
def test_an_open_point_draws_nothing_and_the_rest_of_the_feeder_goes_on(mode):
    sim = GridSim()
    sim.init("Grid-0", step_size=60)
    sim.create(1, "Grid", source="dsf-se", path=str(FUR), mode=mode)
    loads = {"load:consumer_4006773": {"p_w": {"x": 4000.0}, "q_var": {"x": 500.0}},
             "load:consumer_4018368": {"p_w": {"x": 3000.0}}}
    sim.step(0, {**loads, "load:consumer_4006773": {**loads["load:consumer_4006773"], "grid_present": {"e": 0.0}}}, 60)
    attrs = ["p_w", "q_var", "v_pu", "v_a_pu", "v_b_pu", "v_c_pu", "p_a_w", "grid_present"]
    opened = sim.get_data({"load:consumer_4006773": attrs, "load:consumer_4018368": ["v_pu", "grid_present"],
                           "grid": ["bus_v_pu", "p_slack_w"]})
    assert all(opened["load:consumer_4006773"][a] == 0.0 for a in attrs)
    assert opened["load:consumer_4018368"]["grid_present"] == 1.0
    # the same feeder with that load simply at zero: identical power flow for everyone else
    ref = GridEngine(load_dsf_se(FUR), mode=mode)
    ref.set_load("consumer_4018368", p_w=3000.0)
    res = ref.solve()
    np.testing.assert_allclose(opened["grid"]["bus_v_pu"], res.v_pu, atol=1e-9)
    assert opened["grid"]["p_slack_w"] == pytest.approx(res.p_slack_w, abs=1e-3)
    # closing it again: the site's power is drawn as before
    sim.step(60, {"load:consumer_4006773": {"grid_present": {"e": 1.0}}}, 60)
    closed = sim.get_data({"load:consumer_4006773": ["p_w", "v_pu"]})["load:consumer_4006773"]
    assert closed["p_w"] == 4000.0 and 0.9 < closed["v_pu"] < 1.0


@pytest.mark.parametrize("mode", ["balanced", "unbalanced"])
def test_a_sag_scales_the_source_and_both_solvers_agree(mode):
    engines = {solver: GridEngine(load_dsf_se(FUR), mode=mode, solver=solver) for solver in ("fast", "pandapower")}
    out = {}
    for solver, eng in engines.items():
        eng.set_load("consumer_4006773", p_w=4000.0, q_var=300.0)
        first = eng.solve()
        nominal, nominal_pos = first.v_abc_pu.copy(), first.v_pu.copy()
        eng.set_source_v_pu(0.8)
        sagged = eng.solve()
        eng.set_source_v_pu(1.0)
        back = eng.solve().v_abc_pu
        np.testing.assert_allclose(back, nominal, atol=1e-9, equal_nan=True)
        out[solver] = sagged.v_abc_pu
        slack = eng.model.bus_names.index(eng.model.slack_bus)
        # the source's positive-sequence voltage is what the sag sets (its phases follow the unbalance)
        assert sagged.v_pu[slack] == pytest.approx(0.8 * nominal_pos[slack], abs=1e-9)
        assert np.nanmax(sagged.v_abc_pu) < 0.81
    np.testing.assert_allclose(out["fast"], out["pandapower"], atol=1e-6, equal_nan=True)
    with pytest.raises(ValueError, match="> 0"):
        engines["fast"].set_source_v_pu(0.0)


# ---------------------------------------------------------------- a run with events

@pytest.fixture(scope="module")
def event_run(tmp_path_factory):
    d = tmp_path_factory.mktemp("events")
    p = write(d, BASE)
    result = run(load(p), d / "run", progress=False, report=False)
    assert result.status == "complete", result.error
    return d / "run"


def test_events_appear_in_events_jsonl_and_meta(event_run):
    events = read_events(event_run)
    assert [(e["t_s"], e["kind"], e["edge"]) for e in events] == [
        (600, "outage", "start"), (1800, "outage", "end"), (2400, "voltage_sag", "start"),
        (2700, "voltage_sag", "end"), (3000, "device_trip", "start"), (3600, "device_trip", "end"),
        (4200, "comm_loss", "start"), (4800, "comm_loss", "end")]
    assert events[0]["site"] == "h1" and events[2]["v_pu"] == 0.85 and events[6]["role"] == "smx:h1"
    meta = json.loads((event_run / "meta.json").read_text())
    assert [e["kind"] for e in meta["events"]] == ["outage", "voltage_sag", "device_trip", "comm_loss"]


def test_outage_opens_the_pcc_and_no_step_is_lost(event_run):
    sites = read_table(event_run, "sites")
    t = sites.t_s
    assert np.array_equal(t, np.arange(0, 7200, 60))  # every step recorded, outage or not
    out = (t >= 600) & (t < 1800)
    present = sites.get("h1", "grid_present")
    assert np.array_equal(present, np.where(out, 0.0, 1.0))
    assert np.all(sites.get("h1", "pcc_p_w")[out] == 0.0) and np.all(sites.get("h1", "v_pu")[out] == 0.0)
    assert np.all(np.abs(sites.get("h1", "pcc_p_w")[~out]) > 0)
    assert np.all(sites.get("h2", "v_pu")[out] > 0.95)  # the neighbour stays supplied
    for table in ("grid", "devices", "controllers"):
        assert np.array_equal(read_table(event_run, table).t_s, t)
        for name, col in read_table(event_run, table).columns.items():
            assert np.isfinite(col).all(), name


def test_sag_trip_and_comm_loss_act_in_their_windows(event_run):
    t = read_table(event_run, "sites").t_s
    grid = read_table(event_run, "grid")
    sag = (t >= 2400) & (t < 2700)
    assert np.array_equal(grid.get("grid", "v_source_pu"), np.where(sag, 0.85, 1.0))
    v2 = read_table(event_run, "sites").get("h2", "v_pu")
    assert np.all(v2[sag] < 0.86) and np.all(v2[~sag] > 0.95)
    dev = read_table(event_run, "devices")
    trip = (t >= 3000) & (t < 3600)
    assert np.array_equal(dev.get("d1", "tripped"), trip.astype(float))
    pcc, load_ = read_table(event_run, "sites").get("h1", "pcc_p_w"), read_table(event_run, "sites").get("h1", "load_p_w")
    np.testing.assert_allclose(pcc[trip], load_[trip], atol=1e-6)  # the tripped device's power is not drawn
    # comm loss on the site's SMX: the battery holds the setpoint it had when the link went down
    batt = dev.get("d1", "batt_p_w")
    lost = (t >= 4260) & (t < 4860)  # setpoints apply one step later
    assert np.ptp(batt[lost]) == 0.0
    assert np.ptp(batt[(t >= 4860) & (t < 5400)]) > 0.0


def test_runs_with_events_are_deterministic(tmp_path, event_run):
    p = write(tmp_path, BASE)
    again = run(load(p), tmp_path / "again", progress=False, report=False)
    assert again.status == "complete"
    for table in ("sites", "grid", "devices", "controllers"):
        a, b = read_table(event_run, table), read_table(tmp_path / "again", table)
        assert a.columns.keys() == b.columns.keys()
        for name in a.columns:
            np.testing.assert_array_equal(a.columns[name], b.columns[name], err_msg=name)
    strip = [dict(e.items()) for e in read_events(event_run)]
    assert strip == read_events(tmp_path / "again")


def test_comm_loss_on_a_device_link_cuts_its_flows(tmp_path, event_run):
    """The device's every controller flow is on its site's SMX: a loss on the device equals one on the role."""
    data = yaml.safe_load(BASE)
    data["events"][3] = {"kind": "comm_loss", "device": "d1", "from": "70min", "duration": "10min"}
    p = write(tmp_path, yaml.safe_dump(data, sort_keys=False))
    res = run(load(p), tmp_path / "dev", progress=False, report=False)
    assert res.status == "complete"
    a, b = read_table(event_run, "devices"), read_table(tmp_path / "dev", "devices")
    np.testing.assert_array_equal(a.get("d1", "batt_p_w"), b.get("d1", "batt_p_w"))
