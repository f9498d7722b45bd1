"""GESSCon: feasibility (transformer and contract limits), 24 set-points per ESS, SenML, signs, mosaik."""

import numpy as np
import pytest

from controllers.gesscon import (Gesscon, GessconConfig, GessconSim, GessconSite, from_gesscon_kw,
                                 gesscon_to_profess_original, to_gesscon_kw)
from controllers.schedule_codec import HOURS, from_senml, schedule_value, to_senml


def feeder(n_sites: int, seed: int = 0, contract_export_w: float = 4000.0):
    rng = np.random.default_rng(seed)
    sites = [GessconSite(id=f"s{i}", capacity_wh=4500 + 1000 * rng.random(), p_charge_max_w=2400,
                         p_discharge_max_w=2400, eta_charge=0.96, eta_discharge=0.96, soc_min=0.05, soc_max=1.0,
                         contract_import_w=9000, contract_export_w=contract_export_w) for i in range(n_sites)]
    h = np.arange(HOURS)
    fc = {}
    for s in sites:
        load = 300 + 600 * rng.random(HOURS) + 1200 * np.exp(-((h - 19) / 2.0) ** 2)
        pv = np.maximum(0, np.sin(np.pi * (h - 5) / 15)) * (3000 + 3000 * rng.random())
        fc[s.id] = {"load_w": load, "pv_w": pv}
    prices = {"import": np.where((h >= 17) & (h < 21), 0.45, 0.28), "export": np.full(HOURS, 0.08)}
    states = {s.id: 0.3 * s.capacity_wh for s in sites}
    return sites, fc, prices, states


def test_plan_gives_24_setpoints_per_ess_within_all_limits():
    sites, fc, prices, states = feeder(12, seed=1)
    tr = 12000.0
    g = Gesscon(sites, GessconConfig(transformer_limit_w=tr))
    plan = g.plan(1.5e9, fc, prices, states)
    last = g.last
    assert last.status == "optimal"
    assert set(plan) == {s.id for s in sites}
    for s in sites:
        p = plan[s.id]
        assert p.shape == (HOURS,)
        assert np.all(p <= s.p_charge_max_w + 1e-6) and np.all(p >= -s.p_discharge_max_w - 1e-6)
        e = last.e_wh[s.id]
        assert np.all(e[1:] >= s.soc_min * s.capacity_wh - 1e-6) and np.all(e[1:] <= s.soc_max * s.capacity_wh + 1e-6)
        pcc = last.pcc_w[s.id]
        assert np.all(pcc <= s.contract_import_w + 1e-6) and np.all(pcc >= -s.contract_export_w - 1e-6)
        # the planned exchange is the site balance with the schedule (+ = charging)
        used_pv = fc[s.id]["pv_w"] - 0  # curtailment only as a last resort; check the balance bound instead
        assert np.all(pcc >= fc[s.id]["load_w"] - used_pv + p - 1e-6)
    assert np.all(np.abs(last.transformer_w) <= tr + 1e-6)
    assert np.max(last.overload_w) <= 1e-9
    assert last.extra["complementarity_rounds"] == 0


def test_transformer_limit_changes_the_plan_and_holds():
    sites, fc, prices, states = feeder(10, seed=2, contract_export_w=10000)
    free = Gesscon(sites, GessconConfig()).solve(fc, prices, states)
    peak_export = -free.transformer_w.min()
    limit = 0.7 * peak_export
    tight = Gesscon(sites, GessconConfig(transformer_limit_w=limit)).solve(fc, prices, states)
    assert peak_export > 0
    assert tight.status == "optimal"
    assert np.all(np.abs(tight.transformer_w) <= limit + 1e-6)
    assert tight.objective >= free.objective - 1e-9


def test_infeasible_transformer_limit_is_reported_as_overload_not_a_crash():
    sites, fc, prices, states = feeder(4, seed=3)
    plan = Gesscon(sites, GessconConfig(transformer_limit_w=10.0, curtail_penalty_eur_per_kwh=1e3)).solve(
        fc, prices, states)
    assert plan.status == "optimal"
    assert plan.overload_w.max() > 0


def test_senml_pack_round_trip_and_table_format():
    v = np.linspace(-2400, 2400, HOURS)
    pack = to_senml("fronius_1", 1_560_556_800, v)
    assert len(pack) == HOURS
    assert pack[0]["bn"] == "fronius_1/" and pack[0]["bu"] == "W" and pack[0]["bt"] == 1_560_556_800
    assert all(r["n"] == "p_set" for r in pack) and [r["t"] for r in pack] == [3600 * h for h in range(HOURS)]
    ess, t0, back = from_senml(pack)
    assert ess == "fronius_1" and t0 == 1_560_556_800 and np.allclose(back, v)
    assert schedule_value(pack, 1_560_556_800 + 3600 * 5 + 10) == pytest.approx(v[5])
    assert schedule_value(pack, 1_560_556_800 - 1) is None
    assert schedule_value(pack, 1_560_556_800 + 86400) is None
    with pytest.raises(ValueError):
        from_senml(pack[:5])
    with pytest.raises(ValueError):
        from_senml([{**pack[0], "u": "Wh"}] + pack[1:])


def test_sign_and_unit_conversions_with_the_original_gesscon_and_profess():
    ours = np.array([2000.0, -1500.0])  # W, + = charging
    kw = to_gesscon_kw(ours)  # original GESSCon: kW, + = charging
    assert np.allclose(kw, [2.0, -1.5])
    assert np.allclose(from_gesscon_kw(kw), ours)
    assert np.allclose(gesscon_to_profess_original(kw), [-2.0, 1.5])  # PROFESS ESS_Control: + = discharging


def test_cheap_hours_charge_expensive_hours_discharge():
    sites, fc, prices, states = feeder(3, seed=4)
    for s in sites:
        fc[s.id]["pv_w"] = np.zeros(HOURS)
    plan = Gesscon(sites, GessconConfig()).plan(0.0, fc, prices, states)
    peak = (np.arange(HOURS) >= 17) & (np.arange(HOURS) < 21)
    for p in plan.values():
        assert p[peak].sum() < 0  # discharging (our sign: - = discharge) when import is expensive


def test_mosaik_wrapper_plans_at_start_and_outputs_the_current_hour():
    sites, fc, prices, states = feeder(3, seed=5)
    sim = GessconSim()
    sim.init("G", step_size=900)
    truth = {s.id: {"load_w": np.tile(fc[s.id]["load_w"], 2).tolist(),
                    "pv_w_per_kwp": np.tile(fc[s.id]["pv_w"] / 5.0, 2).tolist()} for s in sites}
    ent = sim.create(1, "Feeder", params={"transformer_limit_w": 8000}, sites=[s.model_dump() for s in sites],
                     pv_kwp={s.id: 5.0 for s in sites}, truth=truth,
                     import_eur_per_kwh=np.tile(prices["import"], 2).tolist(),
                     export_eur_per_kwh=np.tile(prices["export"], 2).tolist(), start_unix_s=1_560_556_800)
    kids = [c["eid"] for c in ent[0]["children"]]
    inputs = {k: {"e_wh": {"dev.x": states[k.split(".", 1)[1]]}} for k in kids}
    sim.step(0, inputs, 86400)
    out0 = sim.get_data({k: ["p_schedule_w", "schedule", "schedule_issued_s"] for k in kids})
    sim.step(3600 * 3, {}, 86400)
    out3 = sim.get_data({k: ["p_schedule_w"] for k in kids})
    plans = sim.plans()["Feeder_0"]
    for k in kids:
        sid = k.split(".", 1)[1]
        assert len(out0[k]["schedule"]) == HOURS and out0[k]["schedule_issued_s"] == 0
        assert out0[k]["p_schedule_w"] == pytest.approx(plans[sid][0])
        assert out3[k]["p_schedule_w"] == pytest.approx(plans[sid][3])
        assert from_senml(out0[k]["schedule"])[1] == 1_560_556_800


def test_objective_equals_the_pyomo_formulation_solved_from_scratch():
    from benchmarks.gesscon_solve import pyomo_gesscon

    sites, fc, prices, states = feeder(6, seed=7)
    cfg = GessconConfig(transformer_limit_w=3000.0)
    plan = Gesscon(sites, cfg).solve(fc, prices, states)
    ref = pyomo_gesscon(sites, cfg, fc, prices, states)
    assert plan.status == "optimal"
    assert abs(plan.objective - ref) <= 1e-6 * max(1.0, abs(ref))


def _perfect_feeder(step_s, **params):
    sites, fc, prices, _ = feeder(3, seed=7)
    sim = GessconSim()
    sim.init("G", step_size=step_s)
    truth = {s.id: {"load_w": np.tile(fc[s.id]["load_w"], 3).tolist(),
                    "pv_w_per_kwp": np.tile(fc[s.id]["pv_w"] / 5.0, 3).tolist()} for s in sites}
    ent = sim.create(1, "Feeder", params={"transformer_limit_w": 8000, **params}, sites=[s.model_dump() for s in sites],
                     pv_kwp={s.id: 5.0 for s in sites}, truth=truth,
                     import_eur_per_kwh=np.tile(prices["import"], 3).tolist(),
                     export_eur_per_kwh=np.tile(prices["export"], 3).tolist(), start_unix_s=1_560_556_800)
    return sim, ent[0]["eid"], [c["eid"] for c in ent[0]["children"]]


@pytest.mark.parametrize("plan_at_s", [0, 1800])
def test_perfect_foresight_steps_only_when_an_output_can_change_and_outputs_as_every_step(plan_at_s):
    """With perfect foresight the observations are not needed: the Feeder steps at its plan's hours only, and what a
    receiver reads at each scenario step (the latest output) is what it reads when the Feeder steps every time."""
    step = 300
    every, feid, kids = _perfect_feeder(step, forecast="perfect", plan_at_s=plan_at_s)
    sparse_sim, _, _ = _perfect_feeder(step, forecast="perfect", plan_at_s=plan_at_s)
    attrs = {feid: ["objective", "overload_w", "transformer_plan_w"]} | {
        k: ["p_schedule_w", "schedule", "schedule_issued_s", "pcc_plan_w"] for k in kids}

    def inputs(t):  # the stored energy changes every step: each plan must read it at its own time
        return {k: {"e_wh": {"dev.x": 1000.0 + i * 300 + t / 100}, "load_p_w": {"l": 500.0 + t % 7},
                    "pv_w_per_kwp": {"p": 100.0}} for i, k in enumerate(kids)}

    steps_taken, nxt = [], 0
    for t in range(0, 2 * 86400, step):
        every.step(t, inputs(t), 10**6)  # stepped every time whatever it asks for
        if t == nxt:
            nxt = sparse_sim.step(t, inputs(t), 10**6)
            steps_taken.append(t)
            assert nxt > t and nxt % step == 0
        got, want = sparse_sim.get_data(attrs), every.get_data(attrs)
        assert repr(got) == repr(want), t  # repr: NaN (no plan yet) equals NaN
    assert steps_taken == [0] + [h * 3600 + plan_at_s for h in range(48) if h * 3600 + plan_at_s > 0]
    assert every.plans() == sparse_sim.plans() and every.feeders[feid].issued_s == 86400 + plan_at_s


def test_forecasters_that_learn_from_observations_step_every_scenario_step():
    sim, _, kids = _perfect_feeder(300, forecast="persistence")
    assert sim.step(0, {k: {"e_wh": {"d": 1000.0}} for k in kids}, 10**6) == 300
    assert sim.step(300, {}, 10**6) == 600
