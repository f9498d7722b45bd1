"""LESSAg: follows a fresh schedule, corrects in real time, falls back on missing / stale schedules."""

import numpy as np
import pytest

from controllers.schedule_codec import to_senml
from controllers.lessag import LessagParams, LessagSim

T0 = 1_560_556_800  # UNIX time of the run start


def make(n=1, **params):
    sim = LessagSim()
    sim.init("L", step_size=60)
    ents = sim.create(n, "Lessag", params=params, start_unix_s=T0)
    return sim, [e["eid"] for e in ents]


def inp(pack=None, issued=None, pcc=500.0, batt=0.0, ca=2400.0, da=2400.0, pcc_plan=None):
    d = {"pcc_p_w": {"g": pcc}, "batt_p_w": {"d": batt}, "p_charge_avail_w": {"d": ca},
         "p_discharge_avail_w": {"d": da}}
    if pack is not None:
        d["schedule"] = {"G": pack}
    if issued is not None:
        d["schedule_issued_s"] = {"G": issued}
    if pcc_plan is not None:
        d["pcc_plan_w"] = {"G": pcc_plan}
    return d


SCHED = np.where(np.arange(24) < 12, 1500.0, -1000.0)
PACK = to_senml("dev", T0, SCHED)


def test_direct_mode_follows_the_current_hour():
    sim, (e,) = make()
    sim.step(3600 * 2 + 60, {e: inp(PACK, 0)}, 10**6)
    assert sim.get_data({e: ["p_set_w", "fallback"]})[e] == {"p_set_w": 1500.0, "fallback": 0.0}
    sim.step(3600 * 13, {e: inp(PACK, 0)}, 10**6)
    assert sim.get_data({e: ["p_set_w"]})[e]["p_set_w"] == -1000.0


def test_setpoint_is_clipped_to_the_available_power():
    sim, (e,) = make()
    sim.step(60, {e: inp(PACK, 0, ca=800.0)}, 10**6)
    assert sim.get_data({e: ["p_set_w"]})[e]["p_set_w"] == 800.0


def test_pcc_correction_moves_towards_the_planned_exchange():
    sim, (e,) = make(pcc_gain=0.5)
    # plan: exchange -200 W with the battery charging 1500 W; measured PCC 300 W with the battery at 1500 W
    # -> the rest of the site needs 500 W more than forecast: hold would be 1000 W; half way: 1250 W.
    sim.step(60, {e: inp(PACK, 0, pcc=300.0, batt=1500.0, pcc_plan=-200.0)}, 10**6)
    assert sim.get_data({e: ["p_set_w"]})[e]["p_set_w"] == pytest.approx(1250.0)


def test_import_cap_discharges_against_what_the_meter_reads():
    # schedule: charge 1500 W; the meter reads 7500 W with the battery charging 1500 W (an EV nobody forecast):
    # the rest of the site draws 6000 W, so a 5000 W cap needs the battery to deliver 1000 W
    sim, (e,) = make(import_cap_w=5000.0)
    sim.step(60, {e: inp(PACK, 0, pcc=7500.0, batt=1500.0)}, 10**6)
    assert sim.get_data({e: ["p_set_w"]})[e]["p_set_w"] == pytest.approx(-1000.0)
    # below the cap the schedule stands; beyond the battery's power the cap gives way to the availability
    sim.step(120, {e: inp(PACK, 0, pcc=2000.0, batt=1500.0)}, 10**6)
    assert sim.get_data({e: ["p_set_w"]})[e]["p_set_w"] == 1500.0
    sim.step(180, {e: inp(PACK, 0, pcc=9000.0, batt=0.0, da=2400.0)}, 10**6)
    assert sim.get_data({e: ["p_set_w"]})[e]["p_set_w"] == -2400.0
    # in fallback (no schedule) too: self-consumption already drives the PCC to zero, the cap never raises it
    sim.step(240, {e: inp(None, None, pcc=9000.0, batt=0.0)}, 10**6)
    assert sim.get_data({e: ["p_set_w"]})[e]["p_set_w"] == -2400.0
    with pytest.raises(ValueError):
        LessagParams(import_cap_w=0.0)


@pytest.mark.parametrize("case", ["missing", "stale", "expired"])
def test_fallback_to_self_consumption_is_logged_and_recorded(case):
    sim, (e,) = make(max_age_s=3600)
    t = 1800
    if case == "missing":
        data = inp(None, None, pcc=700.0, batt=0.0)
    elif case == "stale":
        t = 3 * 3600
        data = inp(PACK, 0, pcc=700.0)  # issued at 0, 3 h old > 1 h
    else:
        t = 25 * 3600
        data = inp(PACK, 24 * 3600 + 600, pcc=700.0)  # fresh, but covers the previous day only
    sim.step(t, {e: data}, 10**6)
    out = sim.get_data({e: ["p_set_w", "fallback"]})[e]
    assert out["fallback"] == 1.0
    assert out["p_set_w"] == pytest.approx(-700.0)  # self-consumption: discharge what the site imports
    ev = sim.events()
    assert ev and ev[-1]["event"] == "fallback" and ev[-1]["reason"] == case and ev[-1]["t_s"] == t


def test_resume_after_fallback_is_logged_once():
    sim, (e,) = make(max_age_s=3600)
    sim.step(0, {e: inp(None)}, 10**6)
    sim.step(60, {e: inp(None)}, 10**6)
    sim.step(120, {e: inp(PACK, 100)}, 10**6)
    sim.step(180, {e: inp(PACK, 100)}, 10**6)
    kinds = [x["event"] for x in sim.events()]
    assert kinds == ["fallback", "resume"]
    assert sim.get_data({e: ["fallback"]})[e]["fallback"] == 0.0


def test_garbled_schedule_is_rejected_and_falls_back():
    sim, (e,) = make()
    sim.step(60, {e: inp([{"bn": "x/", "n": "p_set", "v": "a lot"}], 0)}, 10**6)
    assert sim.get_data({e: ["fallback"]})[e]["fallback"] == 1.0


def test_vectorised_over_entities():
    sim, eids = make(3)
    data = {eids[0]: inp(PACK, 0), eids[1]: inp(None, pcc=-400.0), eids[2]: inp(PACK, 0, ca=100.0)}
    sim.step(60, data, 10**6)
    out = sim.get_data({e: ["p_set_w", "fallback"] for e in eids})
    assert [out[e]["p_set_w"] for e in eids] == [1500.0, 400.0, 100.0]
    assert [out[e]["fallback"] for e in eids] == [0.0, 1.0, 0.0]


def test_profess_mode_follows_the_schedule_through_the_optimiser():
    sim = LessagSim()
    sim.init("L", step_size=60)
    battery = {"capacity_wh": 4500, "p_charge_max_w": 2400, "p_discharge_max_w": 2400, "soc_min": 0.05,
               "soc_max": 1.0}
    n = 3 * 24
    (ent,) = sim.create(1, "Lessag", params={"mode": "profess", "profess": {"objective": "follow_schedule",
                                                                          "step_s": 3600, "forecast": "perfect"}},
                        start_unix_s=T0, battery=battery, pv_kwp=0.0, load_truth_w=[400.0] * n,
                        pv_truth_w_per_kwp=[0.0] * n, import_eur_per_kwh=[0.0] * n, export_eur_per_kwh=[0.0] * n)
    e = ent["eid"]
    sched = np.zeros(24)
    sched[:2] = 1000.0  # feasible: 2 kWh into a battery with 3.5 kWh of room
    d = inp(to_senml("dev", T0, sched), 0)
    d["e_wh"] = {"d": 1000.0}
    sim.step(0, {e: d}, 10**6)
    out = sim.get_data({e: ["p_set_w", "fallback"]})[e]
    assert out["fallback"] == 0.0
    assert out["p_set_w"] == pytest.approx(1000.0, abs=15.0)  # 0.02 EUR/kWh wear: 990 W is optimal


def test_params():
    with pytest.raises(ValueError):
        LessagParams(pcc_gain=2.0)
    with pytest.raises(ValueError):
        LessagParams.model_validate({"mode": "direct", "oops": 1})


def _profess_sites(*sites):
    sim = LessagSim()
    sim.init("L", step_size=60)
    battery = {"capacity_wh": 4500, "p_charge_max_w": 2400, "p_discharge_max_w": 2400, "soc_min": 0.05,
               "soc_max": 1.0}
    n = 3 * 24
    eids = [sim.create(1, "Lessag", params={"mode": "profess", "profess": {"objective": "follow_schedule",
                                                                          "step_s": 3600, "forecast": "perfect"}},
                       start_unix_s=T0, battery=battery, pv_kwp=3.0, load_truth_w=[400.0 + 50 * j] * n,
                       pv_truth_w_per_kwp=list(np.clip(np.sin(np.arange(n) / 24 * 2 * np.pi), 0, None) * 700),
                       import_eur_per_kwh=[0.3] * n, export_eur_per_kwh=[0.08] * n)[0]["eid"]
            for j in sites]
    return sim, eids


def _site_inputs(j, t):
    sched = np.where(np.arange(24) < 6 + j, 800.0 - 300 * j, -600.0)
    d = inp(to_senml("dev", T0, sched), 0, ca=2400.0 - 700 * j)
    d["e_wh"] = {"d": float("nan") if (j == 2 and t == 0) else 1000.0 + 500 * j + t / 60}
    return d


def test_profess_sites_plan_in_one_batched_solve_with_the_plans_of_single_sites(monkeypatch):
    """Sites of one simulator are planned together (one solve_many per step); each site's set-points are those
    it gets alone, bit for bit. A site whose stored energy is unknown has no plan yet and re-plans when it is."""
    import controllers.profess_model as pm

    calls = []
    real = pm.solve_many
    monkeypatch.setattr(pm, "solve_many", lambda sites, inputs, t_s=None: calls.append(len(sites)) or
                        real(sites, inputs, t_s))
    together, eids = _profess_sites(0, 1, 2)
    alone = [_profess_sites(j) for j in range(3)]
    for t in (0, 60, 3600, 3660):
        together.step(t, {e: _site_inputs(j, t) for j, e in enumerate(eids)}, 10**6)
        got = together.get_data({e: ["p_set_w"] for e in eids})
        for j, (sim, (e,)) in enumerate(alone):
            sim.step(t, {e: _site_inputs(j, t)}, 10**6)
            assert got[eids[j]]["p_set_w"] == sim.get_data({e: ["p_set_w"]})[e]["p_set_w"]
    # per step the batch, then the single sites: t=0 the sites 0 and 1, 60 the third (now measured), 3600 all
    # three; 3660 holds the plans
    assert calls == [2, 1, 1, 1, 1, 3, 1, 1, 1]
    assert together.get_data({eids[1]: ["p_set_w"]})[eids[1]]["p_set_w"] != 0.0
