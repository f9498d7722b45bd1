"""PROFESS sites solved in one batched call (controllers.profess_model.solve_many, the Group entity) give the plans of
one solve per site."""

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from controllers.profess import ProfessSim
from controllers.profess_model import Profess, solve_many
from controllers.profess_problem import PRESETS, CycleInputs, ProfessProblem, SiteBattery

BATTERIES = [
    SiteBattery(capacity_wh=4500, p_charge_max_w=2400, p_discharge_max_w=2400, eta_charge=0.96, eta_discharge=0.96,
                soc_min=0.05, soc_max=1.0, self_discharge_per_day=0.001, inverter_ac_max_w=5000),
    SiteBattery(capacity_wh=9600, p_charge_max_w=4800, p_discharge_max_w=4000, eta_charge=0.95, eta_discharge=0.93,
                soc_min=0.1, soc_max=0.9, contract_import_w=9000, contract_export_w=3000, allow_grid_charging=False),
]
OBJECTIVES = ["min_grid_exchange", "follow_schedule", "voltage", "min_bill"]  # min_bill: a HiGHS site in the batch


@st.composite
def site_cycles(draw):
    """A few sites drawn from a small pool of problems (equal problems share one formulation and one batch), each
    with its own cycle inputs."""
    n = draw(st.sampled_from([12, 24]))
    sites = []
    for _ in range(draw(st.integers(1, 5))):
        arr = lambda lo, hi: np.array(draw(st.lists(st.floats(lo, hi), min_size=n, max_size=n)))  # noqa: E731
        problem = ProfessProblem(battery=BATTERIES[draw(st.integers(0, 1))], step_s=86400 // n, horizon_steps=n,
                                 weights=PRESETS[draw(st.sampled_from(OBJECTIVES))],
                                 degradation_eur_per_kwh=draw(st.sampled_from([0.0, 0.02])),
                                 voltage_sensitivity_pu_per_kw=-0.002)
        b = problem.battery
        inp = CycleInputs(arr(0.0, 6000.0), arr(0.0, 7000.0), draw(st.floats(0.0, 1.0)) * b.capacity_wh,
                          arr(0.0, 0.6), arr(0.0, 0.3), schedule_w=np.where(arr(0, 1) < 0.7, arr(-2400, 2400), np.nan),
                          v_base_pu=arr(0.95, 1.08),
                          p_charge_avail_w=draw(st.none() | st.floats(-100.0, 6000.0)),
                          p_discharge_avail_w=draw(st.none() | st.floats(-100.0, 6000.0)),
                          forbid_charge=draw(st.none() | st.just(arr(0, 1) < 0.2)))
        sites.append((problem, inp))
    return sites


def assert_same_plan(batched, alone) -> None:
    assert batched.status == alone.status
    assert batched.extra["complementarity_rounds"] == alone.extra["complementarity_rounds"]
    if alone.status == "optimal":
        # the same compiled iterations on the same numbers: equal to far below the solver's tolerance (0.1 W)
        np.testing.assert_allclose(batched.p_batt_plan_w, alone.p_batt_plan_w, rtol=0, atol=1e-6)
        np.testing.assert_allclose(batched.p_grid_w, alone.p_grid_w, rtol=0, atol=1e-6)
        np.testing.assert_allclose(batched.e_wh, alone.e_wh, rtol=0, atol=1e-6)
        assert abs(batched.objective - alone.objective) <= 1e-9 * max(1.0, abs(alone.objective))


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(site_cycles())
def test_batched_solve_equals_one_solve_per_site(sites):
    profs = [Profess(problem) for problem, _ in sites]
    batched = solve_many(profs, [inp for _, inp in sites], 0)
    for (problem, inp), res in zip(sites, batched):
        assert_same_plan(res, Profess(problem).solve(inp, 0))


def test_equal_problems_share_one_formulation_and_unequal_ones_do_not():
    a, b = (ProfessProblem(battery=BATTERIES[0], weights=PRESETS["min_grid_exchange"]) for _ in range(2))
    c = ProfessProblem(battery=BATTERIES[1], weights=PRESETS["min_grid_exchange"])
    assert Profess(a).solver is Profess(b).solver
    assert Profess(c).solver is not Profess(a).solver


def _step_inputs(n_sites: int, t: int, rng) -> dict[str, np.ndarray]:
    e = rng.uniform(500, 4000, n_sites)
    if t == 1800:
        e[1] = np.nan  # no measurement at a cycle: that site keeps its plan
    return {"e_wh": e, "p_charge_avail_w": rng.uniform(0, 2400, n_sites),
            "p_discharge_avail_w": np.where(rng.random(n_sites) < 0.2, np.nan, 2400.0),
            "load_p_w": rng.uniform(200, 3000, n_sites), "pv_w_per_kwp": np.full(n_sites, 400.0 + t / 10),
            "pcc_p_w": rng.uniform(-2000, 3000, n_sites), "v_pu": rng.uniform(0.97, 1.04, n_sites)}


def test_group_entity_plans_equal_one_entity_per_site():
    """A Group of sites (batched solves) and one Profess entity per site, stepped with the same inputs through four
    MPC cycles, answer the same setpoints, objectives and plans."""
    sites = [dict(params={"objective": objective, "step_s": 900, "horizon_s": 6 * 3600, "forecast": "persistence"},
                  battery=BATTERIES[i % 2].model_dump(), pv_kwp=5.0, pv_eta=0.97)
             for i, objective in enumerate(["min_grid_exchange", "min_grid_exchange", "voltage", "min_bill",
                                            "min_grid_exchange"])]
    group, single = ProfessSim(), ProfessSim()
    for sim in (group, single):
        sim.init("P", step_size=300)
    (g,) = group.create(1, "Group", sites=sites)
    eids = [e["eid"] for kw in sites for e in single.create(1, "Profess", **kw)]
    rng = np.random.default_rng(7)
    attrs = ["p_set_w", "objective", "ok", "soc_plan_end"]
    for t in range(0, 4 * 900, 300):
        vec = _step_inputs(len(sites), t, rng)
        group.step(t, {g["eid"]: {name: {"src": v} for name, v in vec.items()}}, t + 300)
        single.step(t, {eid: {name: {"src": float(v[i])} for name, v in vec.items()} for i, eid in enumerate(eids)},
                    t + 300)
        got = group.get_data({g["eid"]: attrs})[g["eid"]]
        want = single.get_data(dict.fromkeys(eids, attrs))
        for attr in attrs:
            np.testing.assert_allclose(got[attr], [want[eid][attr] for eid in eids], rtol=1e-9, atol=1e-6)
        if t == 1800:
            assert got["ok"][1] == 0.0 and got["ok"][0] == 1.0  # the site without a measurement kept its plan
    plans = group.plans()
    for i, eid in enumerate(eids):
        np.testing.assert_allclose(plans[f"{g['eid']}[{i}]"]["p_batt_w"], single.plans()[eid]["p_batt_w"], atol=1e-6)
