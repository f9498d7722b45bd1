"""EV fleet simulator: arrival statistics, working days, queueing, determinism, sessions file and KPIs."""

import json
from datetime import datetime, timedelta

import numpy as np
import pytest

from controllers.ev_baselines import equal_share_limits, uncontrolled_limits
from simulators.ev_fleet import ENV_OUTPUTS, EVFleetSim, read_sessions, session_kpis

MONDAY = "2024-03-04T00:00:00+01:00"


def run_fleet(path, *, days=1.0, step=60, start=MONDAY, seed=1, power=None, **site) -> EVFleetSim:
    """Drive the simulator without mosaik; ``power(t, bay, outputs)`` plays the wallboxes (W)."""
    sim = EVFleetSim()
    sim.init("Fleet", step_size=step, start=start, seed=seed, sessions_path=str(path))
    (ent,) = sim.create(1, "Site", **site)
    bays = [c["eid"] for c in ent["children"]]
    last = {b: dict.fromkeys(ENV_OUTPUTS, 0.0) for b in bays}
    t = 0
    while t < days * 86_400:
        inputs = {}
        if power is not None and t > 0:
            inputs = {b: {"p_w": {"WB": power(t - step, i, last[b])}} for i, b in enumerate(bays)}
        t_next = sim.step(t, inputs, 0)
        got = sim.get_data({b: list(ENV_OUTPUTS) for b in bays} | {ent["eid"]: ["n_waiting", "n_plugged"]})
        last = {b: got[b] for b in bays}
        t = t_next
    sim.finalize()
    return sim


def test_residential_plug_in_and_unplug_times_follow_the_original_figures(tmp_path):
    path = tmp_path / "res.jsonl"
    run_fleet(path, days=4, step=300, kind="residential", connectors=150, plug_probability=1.0)
    sessions, sites = read_sessions(path)
    start = datetime.fromisoformat(MONDAY)
    plug_h, unplug_h = [], []
    for s in sessions:
        if s["t_arrival_s"] == 0 or s["open_at_end"]:
            continue  # clipped at the start / cut at the end
        plug = start + timedelta(seconds=s["t_plug_s"])
        unplug = start + timedelta(seconds=s["t_unplug_s"])
        plug_h.append(plug.hour + plug.minute / 60 + (24 if plug.hour < 12 else 0))
        unplug_h.append(unplug.hour + unplug.minute / 60)
        assert s["wait_s"] == 0 and s["bay"] is not None  # a household's own wallbox: no queue
    assert len(plug_h) > 300
    assert np.mean(plug_h) == pytest.approx(18.75, abs=0.25) and np.std(plug_h) == pytest.approx(1.3, abs=0.2)
    assert np.mean(unplug_h) == pytest.approx(7 + 20 / 60, abs=0.2) and np.std(unplug_h) == pytest.approx(0.8, abs=0.15)
    assert sites[0]["connectors"] == 150


def test_commercial_evs_come_on_working_days_only_and_runs_are_deterministic(tmp_path):
    saturday = "2024-03-02T00:00:00+01:00"
    run_fleet(tmp_path / "a.jsonl", days=3, step=900, start=saturday, kind="commercial", connectors=30)
    sessions, _ = read_sessions(tmp_path / "a.jsonl")
    assert len(sessions) == 22
    assert all(s["t_arrival_s"] >= 2 * 86_400 for s in sessions)  # Monday only
    run_fleet(tmp_path / "b.jsonl", days=3, step=900, start=saturday, kind="commercial", connectors=30)
    assert (tmp_path / "a.jsonl").read_text() == (tmp_path / "b.jsonl").read_text()
    run_fleet(tmp_path / "c.jsonl", days=3, step=900, start=saturday, seed=2, kind="commercial", connectors=30)
    assert (tmp_path / "a.jsonl").read_text() != (tmp_path / "c.jsonl").read_text()


def test_queueing_when_all_connectors_are_busy(tmp_path):
    # two connectors, EVs leave as soon as they are done: the others wait in FIFO order
    def wallbox(t, bay, out):
        return min(out["ev_p_max_w"], 11_000.0) if out["ev_plugged"] else 0.0

    path = tmp_path / "q.jsonl"
    sim = run_fleet(path, power=wallbox, kind="commercial", connectors=2, unplug_when_done=True)
    k = session_kpis(path)
    assert k["arrivals"] == 22 and k["n_waited"] > 0 and k["waiting_max_s"] > 0
    sessions, _ = read_sessions(path)
    served = [s for s in sessions if s["served"]]
    assert k["served"] == len(served) and k["services_completed"] >= 1
    for s in served:  # energy bookkeeping agrees with the KPIs
        assert s["e_delivered_wh"] <= s["e_wanted_wh"] + 11_000 / 60 + 1e-6
        assert s["t_plug_s"] - s["t_arrival_s"] == s["wait_s"]
    for s in sessions:
        if not s["served"]:
            assert s["e_delivered_wh"] == 0 and s["e_unmet_wh"] == s["e_wanted_wh"]
    assert k["unmet_energy_wh"] == pytest.approx(sum(s["e_unmet_wh"] for s in sessions))
    assert k["peak_charging_w"] == pytest.approx(22_000.0)  # two bays at 11 kW
    assert sim.records()[-1]["record"] == "site"


def test_sessions_file_formats_give_the_same_kpis(tmp_path):
    def wallbox(t, bay, out):
        return 7000.0 if out["ev_plugged"] else 0.0

    run_fleet(tmp_path / "s.jsonl", step=300, power=wallbox, kind="commercial", connectors=5)
    run_fleet(tmp_path / "s.parquet", step=300, power=wallbox, kind="commercial", connectors=5)
    a, b = session_kpis(tmp_path / "s.jsonl"), session_kpis(tmp_path / "s.parquet")
    assert a == pytest.approx(b)
    assert a["energy_delivered_wh"] > 0 and a["peak_charging_w"] <= 35_000
    lines = [json.loads(x) for x in (tmp_path / "s.jsonl").read_text().splitlines()]
    assert {x["record"] for x in lines} == {"session", "site"}


def test_baseline_limits():
    hw = np.full(4, 22_080.0)
    assert list(uncontrolled_limits(hw)) == [22_080.0] * 4
    wants = np.array([True, True, False, True])
    assert list(equal_share_limits(wants, 30_000.0, hw, np.full(4, 4140.0))) == [10_000.0, 10_000.0, 0.0, 10_000.0]
    # below the minimum power: the first two get what there is, the third pauses
    assert list(equal_share_limits(wants, 9_000.0, hw, np.full(4, 4140.0))) == [4500.0, 4500.0, 0.0, 0.0]
    assert list(equal_share_limits(np.zeros(4, bool), 30_000.0, hw, np.full(4, 4140.0))) == [0.0] * 4
    assert equal_share_limits(wants, 10_000.0 / 3 * 3, hw, np.full(4, 100.0))[0] == pytest.approx(3333.3)
