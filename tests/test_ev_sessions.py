"""EV session models (simulators/ev_sessions.py) and their use by the fleet: the published figures are
reproduced, weekdays and weekends differ, multi-week runs work, history never shows the run's days."""

import numpy as np
import pytest

from simulators.ev_fleet import EVFleetSim, fleet_history, read_sessions, session_kpis
from simulators.ev_sessions import MODELS, WORKPLACE, UserProfile, draw_day, model
from tests.test_ev_fleet import run_fleet

MONDAY = "2024-03-04T00:00:00+01:00"


def _mode_h(x: np.ndarray) -> float:
    """Mode of a sample of hours: 10-minute histogram smoothed over 50 minutes."""
    h, edges = np.histogram(x, bins=np.arange(0, 30, 1 / 6))
    i = int(np.argmax(np.convolve(h, np.ones(5) / 5, "same")))
    return float((edges[i] + edges[i + 1]) / 2)


@pytest.mark.parametrize("weekday, arrival_h, departure_h", [(2, 8 + 51 / 60, 17 + 12 / 60),
                                                             (6, 13 + 45 / 60, 16 + 13 / 60)])
def test_workplace_model_reproduces_the_published_figures(weekday, arrival_h, departure_h):
    rng = np.random.default_rng(3)
    drawn = [s for _ in range(300) for s in draw_day(WORKPLACE, rng, 100, weekday)]
    arrivals = np.array([s.arrival_h for s in drawn])
    departures = arrivals + np.array([s.dwell_h for s in drawn])
    assert _mode_h(arrivals) == pytest.approx(arrival_h, abs=0.25)
    assert _mode_h(departures) == pytest.approx(departure_h, abs=0.25)
    assert np.mean([s.energy_wh for s in drawn]) == pytest.approx(8400, rel=0.03)


def test_day_types_differ_and_counts_follow_evs_per_day():
    rng = np.random.default_rng(0)
    assert len(draw_day(WORKPLACE, rng, 40, 0)) == 40
    assert len(draw_day(WORKPLACE, rng, 40, 6)) == round(40 * WORKPLACE.weekend.ratio) < 40
    assert draw_day(WORKPLACE, rng, 0, 0) == []


def test_bad_models_and_names_are_refused():
    with pytest.raises(ValueError, match="unknown session model 'nope'; known: workplace"):
        model("nope")
    with pytest.raises(ValueError, match="arrival"):
        UserProfile("x", 1.0, 25.0, 1.0, 2.0, 0.1, 8.0, 0.5)
    with pytest.raises(ValueError, match="unknown session model"):
        EVFleetSim().create(1, "Site", session_model="nope")
    assert set(MODELS) == {"workplace"}


def test_fleet_with_the_model_runs_for_weeks_with_weekend_sessions(tmp_path):
    path = tmp_path / "s.jsonl"
    run_fleet(path, days=14, step=900, kind="commercial", connectors=40, evs_per_day=20,
              session_model="workplace", unplug_when_done=True, power=lambda t, bay, out: 7000.0 * out["ev_plugged"])
    sessions, _ = read_sessions(path)
    by_day = np.bincount([s["t_arrival_s"] // 86400 for s in sessions], minlength=14)
    assert list(by_day[[0, 1, 2, 3, 4, 7, 8]]) == [20] * 7
    assert list(by_day[[5, 6, 12, 13]]) == [4] * 4  # Saturdays and Sundays: 0.2 x 20
    k = session_kpis(path)
    assert k["arrivals"] == 2 * (5 * 20 + 2 * 4)
    # 7 kW for everyone: served unless the stay is too short for the energy (a short visit)
    short = sum(s["e_wanted_wh"] > 7000 * (s["t_departure_s"] - s["t_plug_s"]) / 3600 for s in sessions)
    assert k["arrivals"] - short - 2 <= k["sessions_served"] <= k["arrivals"] - short + 2
    assert k["energy_ratio"] > 0.95
    assert 0 <= k["wait_first_charge_mean_s"] <= 900


def test_served_share_and_waiting_to_first_charge(tmp_path):
    path = tmp_path / "w.jsonl"
    # nothing charges before 10:00: everyone who came earlier waited for the first charge
    run_fleet(path, days=1, step=300, kind="commercial", connectors=40, evs_per_day=30, session_model="workplace",
              power=lambda t, bay, out: 3700.0 * out["ev_plugged"] * (t >= 10 * 3600))
    sessions, _ = read_sessions(path)
    for s in sessions:
        if s["t_first_charge_s"] is not None:
            assert s["t_first_charge_s"] >= max(s["t_plug_s"], 10 * 3600)
            assert s["wait_first_charge_s"] == s["t_first_charge_s"] - s["t_arrival_s"]
        else:
            assert s["e_delivered_wh"] == 0 and s["wait_first_charge_s"] > 0
        assert s["served_95"] == (s["e_delivered_wh"] >= 0.95 * s["e_wanted_wh"] - 1e-6)
    k = session_kpis(path)
    assert 0 < k["sessions_served"] < k["arrivals"]
    assert k["wait_first_charge_mean_s"] > k["waiting_mean_s"]


def test_history_is_deterministic_and_never_the_runs_own_days():
    kw = dict(start=MONDAY, timezone="Europe/Rome", seed=5, step_s=900,
              sites=[{"kind": "commercial", "connectors": 10, "evs_per_day": 12, "session_model": "workplace"},
                     {"kind": "residential", "connectors": 4}], index=0, days=15)
    a, b = fleet_history(**kw), fleet_history(**kw)
    assert [(e.t_arrival_s, e.energy_wanted_wh) for e in a] == [(e.t_arrival_s, e.energy_wanted_wh) for e in b]
    assert a and all(e.t_departure_s <= 0 for e in a if e.t_arrival_s < -86400)
    assert max(e.t_arrival_s for e in a) < -86400  # day -1 and the run are not in it
    assert len(a) == 10 * 12 + 4 * 2  # days -15 (a Sunday) to -2: 10 working days, 4 weekend days
