"""GEVChCon: the exact QP flattens the aggregate at least as well as the LP and the GA, keeps the energy bounds."""

import numpy as np
import pytest

from controllers.gevchcon import (FeederInputs, ev_demand_forecast, genetic, min_peak, min_variance,
                                  violation_wh)


def _inputs(sites=3, seed=0) -> FeederInputs:
    rng = np.random.default_rng(seed)
    h = np.arange(24)
    base = np.array([(15_000 + 10_000 * np.exp(-((h - 12 - i) / 3.0) ** 2)) for i in range(sites)])
    arrive = np.zeros(24)
    arrive[7:10] = [20_000, 30_000, 10_000]
    due = np.zeros(24)
    due[16:19] = [25_000, 25_000, 10_000]
    scale = rng.uniform(0.8, 1.2, (sites, 1))
    return FeederInputs(base, np.cumsum(due)[None] * scale, np.cumsum(arrive)[None] * scale, np.full(sites, 30_000.0))


def test_qp_is_exact_and_beats_lp_and_ga_on_the_original_objective():
    inp = _inputs()
    q, lp, ga = min_variance(inp), min_peak(inp), genetic(inp, generations=150)
    assert violation_wh(inp, q.x_w) == pytest.approx(0.0, abs=1e-3)
    assert q.short_wh.sum() == pytest.approx(0.0, abs=1e-3)
    assert q.std_w <= lp.std_w + 1e-6 and q.std_w <= ga.std_w + 1e-6
    assert lp.peak_w <= q.peak_w + 1e-3
    assert np.allclose(q.aggregate_w, inp.base_w.sum(0) + q.x_w.sum(0))
    # every site gets the energy its EVs need by the end of the day
    assert np.allclose(q.x_w.sum(axis=1), inp.due_wh[:, -1], rtol=1e-6)


@pytest.mark.timeout(120)
def test_degenerate_car_parks_solve_promptly():
    """Regression: the benchmark's three workplace car parks (equal demand shapes, a Hessian singular across
    sites) made HiGHS 1.16's QP cycle for minutes; the ridge makes the QP strictly convex."""
    from benchmarks.ev_scheduling import gevchcon_vs_ga

    r = gevchcon_vs_ga(3, generations=20)
    assert r["qp_violation_wh"] == pytest.approx(0.0, abs=1e-3)
    assert r["qp_std_w"] <= r["lp_std_w"] + 1e-6 and r["qp_std_w"] < r["uncoordinated_std_w"]


def test_infeasible_demand_is_reported_short_not_hidden():
    inp = _inputs()
    tight = FeederInputs(inp.base_w, inp.due_wh, inp.arrived_wh, np.full(3, 2_000.0))
    q = min_variance(tight)
    assert np.all(q.x_w <= 2_000.0 + 1e-6)
    assert q.short_wh.sum() > 0


def test_inputs_are_checked():
    inp = _inputs()
    with pytest.raises(ValueError, match="base_w"):
        min_variance(FeederInputs(inp.base_w[:, :10], inp.due_wh, inp.arrived_wh, inp.p_max_w))
    with pytest.raises(ValueError, match="finite"):
        min_variance(FeederInputs(inp.base_w * np.nan, inp.due_wh, inp.arrived_wh, inp.p_max_w))


def test_demand_forecast_pools_the_same_day_type():
    sessions = [(d * 86400 + 8 * 3600, d * 86400 + 17 * 3600, 10_000.0) for d in range(7)]
    days = [(d, d % 7) for d in range(7)]  # day 0 a Monday
    arrived, due = ev_demand_forecast(sessions, days, weekday=2)
    assert arrived[8] == pytest.approx(10_000) and arrived[7] == 0
    assert due[16] == pytest.approx(10_000) and due[15] == 0
    arrived_we, _ = ev_demand_forecast(sessions, days, weekday=6)
    assert arrived_we[-1] == pytest.approx(10_000)  # the weekend days had sessions too, pooled separately


def test_highs_users_share_one_thread_count():
    """HiGHS keeps the thread count of its first run per process: after GEVChCon, PROFESS still solves."""
    from controllers.profess_highs import HighsProfess
    from controllers.profess_problem import CycleInputs, ProfessProblem, SiteBattery

    min_variance(_inputs())
    pr = ProfessProblem(battery=SiteBattery(capacity_wh=5000, p_charge_max_w=2000, p_discharge_max_w=2000),
                        step_s=3600, horizon_steps=24)
    res = HighsProfess(pr).solve(CycleInputs(load_w=np.full(24, 500.0), pv_w=np.zeros(24), e0_wh=2500.0,
                                             import_eur_per_kwh=0.2, export_eur_per_kwh=0.05))
    assert res.status == "optimal"
