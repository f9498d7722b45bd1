"""PROFEV's stochastic dynamic programme (controllers/profev_sdp.py): exactness, limits, presence model."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from controllers.profev_sdp import PresenceModel, SdpBattery, SdpEv, SdpProblem, solve

STEP = 900


def _always(n: int, home: bool) -> PresenceModel:
    return PresenceModel(np.full(n, 1.0 if home else 0.0), np.full(n, 0.0))


def _brute_force(problem: SdpProblem, net: np.ndarray, b0: int, e0: int, home_until: int) -> float:
    """Deterministic presence (home for steps < home_until, then gone): enumerate every decision sequence."""
    pol = solve(problem, net, _always(len(net), True))  # only for the grids and powers per step
    p_ch, p_dis = pol.p_battery_per_step_w
    nb, ne = len(pol.battery_soc), len(pol.ev_soc)
    up = int(problem.battery.p_charge_max_w // p_ch + 1e-9)
    down = int(problem.battery.p_discharge_max_w // p_dis + 1e-9)
    ev_up = int(problem.ev.p_max_w // pol.p_ev_per_step_w + 1e-9)
    target = problem.ev.soc_target
    best = np.inf
    moves = [(db, de) for db in range(-down, up + 1) for de in range(ev_up + 1)]
    for seq in itertools.product(moves, repeat=home_until):
        b, e, cost = b0, e0, 0.0
        for t, (db, de) in enumerate(seq):
            b, e = b + db, e + de
            if not (0 <= b < nb and 0 <= e < ne):
                break
            p = net[t] + (db * p_ch if db >= 0 else db * p_dis) + de * pol.p_ev_per_step_w
            cost += (p / 1000) ** 2 * STEP / 3600
        else:
            short = max(target - pol.ev_soc[e], 0) * problem.ev.capacity_wh / 1000
            cost += short * problem.ev.shortfall_penalty_per_kwh
            best = min(best, cost)
    return best


def test_deterministic_departure_equals_exhaustive_search():
    bat = SdpBattery(4000, 2000, 2000, eta_charge=0.9, eta_discharge=0.9)
    ev = SdpEv(8000, 8000, soc_target=0.75, eta=1.0, away_use_wh_per_h=0, shortfall_penalty_per_kwh=5.0)
    problem = SdpProblem(bat, ev, step_s=STEP, soc_step=0.25, ev_soc_step=0.25)
    net = np.array([1500.0, -2500.0, 800.0])
    presence = PresenceModel(np.array([1.0, 1.0, 0.0]), np.zeros(3))  # leaves after the third step
    pol = solve(problem, net, presence)
    for b0, e0 in [(0, 0), (2, 1), (4, 0), (1, 3)]:
        assert pol.value[0, b0, e0, 1] == pytest.approx(_brute_force(problem, net, b0, e0, 3), rel=1e-9)


@settings(max_examples=25, deadline=None)
@given(st.lists(st.floats(-8000, 8000), min_size=4, max_size=12), st.floats(0, 1), st.floats(0, 1),
       st.booleans())
def test_policy_keeps_limits_and_bounds(net, soc_b, soc_e, home):
    bat = SdpBattery(10_000, 3000, 4000, soc_min=0.1, soc_max=0.9)
    ev = SdpEv(40_000, 7400)
    problem = SdpProblem(bat, ev, step_s=STEP, soc_step=0.05, ev_soc_step=0.05)
    rng = np.random.default_rng(0)
    presence = PresenceModel(rng.uniform(0.5, 1, len(net)), rng.uniform(0, 0.5, len(net)))
    pol = solve(problem, np.array(net), presence)
    b = float(np.clip(soc_b, 0.1, 0.9))
    for t in range(len(net)):
        p_b, p_e = pol.decide(t, b, soc_e, home)
        assert -bat.p_discharge_max_w - 1e-6 <= p_b <= bat.p_charge_max_w + 1e-6
        assert 0 <= p_e <= ev.p_max_w + 1e-6
        if not home:
            assert p_e == 0
        dsoc = p_b * bat.eta_charge if p_b >= 0 else p_b / bat.eta_discharge
        b += dsoc * STEP / 3600 / bat.capacity_wh
        assert bat.soc_min - 1e-9 <= b <= bat.soc_max + 1e-9
        soc_e = min(1.0, soc_e + p_e * ev.eta * STEP / 3600 / ev.capacity_wh)


def test_ev_reaches_its_target_when_departure_is_certain_and_feasible():
    bat = SdpBattery(5000, 2500, 2500)
    ev = SdpEv(40_000, 7400, soc_target=0.8, away_use_wh_per_h=0, shortfall_penalty_per_kwh=1000)
    n = 32  # 8 h plugged, then gone
    presence = PresenceModel(np.r_[np.ones(n - 1), 0.0], np.zeros(n))
    pol = solve(SdpProblem(bat, ev), np.full(n, 300.0), presence)
    soc_e, soc_b = 0.3, 0.5
    for t in range(n):
        p_b, p_e = pol.decide(t, soc_b, soc_e, True)
        soc_e += p_e * ev.eta * STEP / 3600 / ev.capacity_wh
        soc_b += (p_b * bat.eta_charge if p_b >= 0 else p_b / bat.eta_discharge) * STEP / 3600 / bat.capacity_wh
    assert soc_e >= 0.8 - 0.01


def test_battery_absorbs_pv_peak_under_squared_exchange():
    bat = SdpBattery(10_000, 5000, 5000, soc_min=0.0, soc_max=1.0)
    ev = SdpEv(40_000, 0.0)  # no EV power: the battery alone flattens the exchange
    net = np.r_[np.full(8, 2000.0), np.full(8, -4000.0), np.full(8, 2000.0)]
    pol = solve(SdpProblem(bat, ev), net, _always(len(net), False))
    p_pv_peak = pol.decide(10, 0.2, 0.0, False)[0]
    p_evening = pol.decide(18, 0.8, 0.0, False)[0]
    assert p_pv_peak > 2000 and p_evening < -1000


def test_cost_objective_needs_prices_and_shifts_charging_to_cheap_hours():
    bat = SdpBattery(10_000, 5000, 5000)
    ev = SdpEv(40_000, 7400, soc_target=0.6, away_use_wh_per_h=0, shortfall_penalty_per_kwh=10)
    problem = SdpProblem(bat, ev, objective="cost")
    net = np.full(16, 500.0)
    presence = PresenceModel(np.r_[np.ones(15), 0.0], np.zeros(16))
    with pytest.raises(ValueError, match="import_price"):
        solve(problem, net, presence)
    price = np.r_[np.full(8, 0.40), np.full(8, 0.10)]
    pol = solve(problem, net, presence, import_price=price, export_price=np.zeros(16))
    assert pol.decide(0, 0.0, 0.3, True) == (0.0, 0.0)  # empty battery, expensive now, cheap later: wait
    assert pol.decide(8, 0.0, 0.3, True)[1] > 0


def test_presence_estimated_from_sessions():
    # every day home from 18:00 to 07:00 next morning, 30 days, 1-h steps
    sessions = [(d * 86400 + 18 * 3600, d * 86400 + 31 * 3600) for d in range(30)]
    model = PresenceModel.estimate(sessions, step_s=3600, days=31, smoothing=0)
    assert model.p_arrive[17] == pytest.approx(30 / 31)  # away at 17:00 -> home at 18:00 on 30 of 31 days
    assert model.p_stay[6] == pytest.approx(0.0)  # home at 06:00 -> gone at 07:00
    assert model.p_stay[22] == pytest.approx(1.0)
    assert model.p_arrive[12] == pytest.approx(0.0)
    smoothed = PresenceModel.estimate(sessions, step_s=3600, days=31, smoothing=1)
    assert 0 < smoothed.p_stay[6] < 0.1


@pytest.mark.parametrize("bad", [[(10.0, 5.0)], [(float("nan"), 5.0)]])
def test_presence_refuses_bad_sessions(bad):
    with pytest.raises(ValueError, match="must end after it starts"):
        PresenceModel.estimate(bad, step_s=900, days=1)


def test_problem_and_inputs_are_checked():
    bat, ev = SdpBattery(1000, 500, 500), SdpEv(1000, 500)
    with pytest.raises(ValueError, match="grid steps"):
        SdpProblem(bat, ev, soc_step=0)
    with pytest.raises(ValueError, match="SoC limits"):
        SdpProblem(SdpBattery(1000, 500, 500, soc_min=0.9, soc_max=0.5), ev)
    with pytest.raises(ValueError, match="finite"):
        solve(SdpProblem(bat, ev), np.array([1.0, np.nan]), _always(2, True))
    with pytest.raises(ValueError, match="covers 2 steps"):
        solve(SdpProblem(bat, ev), np.ones(3), _always(2, True))
    with pytest.raises(ValueError, match="probabilities"):
        PresenceModel(np.array([1.5]), np.array([0.0]))
    with pytest.raises(ValueError, match="import_limit_w"):
        SdpProblem(bat, ev, import_limit_w=float("nan"))
    with pytest.raises(ValueError, match="over_limit_penalty_per_kwh"):
        SdpProblem(bat, ev, over_limit_penalty_per_kwh=-1.0)
    with pytest.raises(ValueError, match="capped_over_limit_penalty_per_kwh"):
        SdpProblem(bat, ev, capped_over_limit_penalty_per_kwh=float("inf"))
    for capped in (np.ones(3), np.array([1.0, -1.0]), np.array([1.0, np.nan])):
        with pytest.raises(ValueError, match="capped_w"):
            solve(SdpProblem(bat, ev, import_limit_w=500), np.ones(2), _always(2, True), capped_w=capped)


def _battery_run(pol, bat: SdpBattery, soc: float, n: int) -> tuple[np.ndarray, np.ndarray]:
    """The battery's planned powers from ``soc`` and its SoC after each step (EV away)."""
    p, socs = np.zeros(n), np.zeros(n)
    for t in range(n):
        p[t] = pol.decide(t, soc, 0.0, False)[0]
        soc += (p[t] * bat.eta_charge if p[t] >= 0 else p[t] / bat.eta_discharge) * STEP / 3600 / bat.capacity_wh
        socs[t] = soc
    return p, socs


def test_battery_discharges_where_the_net_load_exceeds_the_import_limit():
    # a morning bump above a 15 kW contract; without the limit the squared exchange only shaves it part way
    bat = SdpBattery(40_000, 10_000, 10_000, soc_min=0.1, soc_max=0.9)
    net = np.r_[np.full(8, 9000.0), np.full(4, 19_000.0), np.full(12, 9000.0)]
    n = len(net)
    problem = SdpProblem(bat, SdpEv(1.0, 0.0), soc_step=0.01, import_limit_w=15_000)
    p, _ = _battery_run(solve(problem, net, _always(n, False)), bat, 0.3, n)
    assert np.all(net + p <= 15_000 + 1e-6)
    assert np.all(p[8:12] <= -4000 + 1e-6)  # it discharges what would exceed the contract


def test_battery_never_charges_above_the_import_limit_to_shave_a_later_peak():
    # the building near a 15 kW contract all day, an evening peak far above it: flattening the squared exchange
    # charges on top of the building (above the contract); knowing it, the battery charges only within it
    bat = SdpBattery(40_000, 10_000, 10_000, soc_min=0.1, soc_max=0.9)
    net = np.r_[np.full(12, 13_000.0), np.full(4, 30_000.0), np.full(8, 13_000.0)]
    n = len(net)
    free, _ = _battery_run(solve(SdpProblem(bat, SdpEv(1.0, 0.0), soc_step=0.01), net, _always(n, False)),
                           bat, 0.1, n)
    assert np.max((net + free)[net < 15_000]) > 15_000
    problem = SdpProblem(bat, SdpEv(1.0, 0.0), soc_step=0.01, import_limit_w=15_000)
    p, _ = _battery_run(solve(problem, net, _always(n, False)), bat, 0.1, n)
    assert np.all((net + p)[net < 15_000] <= 15_000 + 1e-6)
    assert p[:12].sum() > 0 and np.all(p[12:16] < 0)  # it still charges within the contract for the peak


def test_no_limit_is_the_objective_alone():
    bat = SdpBattery(10_000, 3000, 4000, soc_min=0.1, soc_max=0.9)
    ev = SdpEv(40_000, 7400)
    net = np.r_[np.full(6, 2000.0), np.full(6, -3000.0), np.full(6, 4000.0)]
    presence = PresenceModel(np.full(18, 0.9), np.full(18, 0.2))
    a = solve(SdpProblem(bat, ev, soc_step=0.05, ev_soc_step=0.05), net, presence)
    b = solve(SdpProblem(bat, ev, soc_step=0.05, ev_soc_step=0.05, import_limit_w=float("inf")), net, presence)
    high = solve(SdpProblem(bat, ev, soc_step=0.05, ev_soc_step=0.05, import_limit_w=1e9), net, presence)
    for other in (b, high):  # no limit, or one never reached: the very same plan and values
        assert np.array_equal(a.value, other.value)
        assert np.array_equal(a.d_battery, other.d_battery) and np.array_equal(a.d_ev, other.d_ev)


@settings(max_examples=40, deadline=None)
@given(st.lists(st.floats(-6000, 20_000), min_size=4, max_size=16), st.floats(2000, 20_000), st.floats(0.1, 0.9))
def test_battery_never_plans_to_charge_above_the_limit_and_covers_what_it_can(net, limit, soc):
    bat = SdpBattery(20_000, 5000, 6000, soc_min=0.1, soc_max=0.9)
    net = np.array(net)
    n = len(net)
    pol = solve(SdpProblem(bat, SdpEv(1.0, 0.0), soc_step=0.05, import_limit_w=limit), net, _always(n, False))
    soc = 0.1 + 0.05 * round((soc - 0.1) / 0.05)  # on the grid: off it the policy acts for the nearest point
    p, socs = _battery_run(pol, bat, soc, n)
    assert np.all((socs >= bat.soc_min - 1e-9) & (socs <= bat.soc_max + 1e-9))
    assert np.all((p >= -bat.p_discharge_max_w - 1e-6) & (p <= bat.p_charge_max_w + 1e-6))
    over = net + p > limit + 1e-6
    assert np.all(p[over] <= 1e-6)  # above the limit it never charges
    # the penalty is exact: the plan imports no more above the limit than the greedy "discharge what exceeds,
    # as far as the SoC lets" from the same start (which is feasible for the plan)
    step_w = pol.p_battery_per_step_w[1]
    greedy, s = 0.0, soc
    for t in range(n):
        room = min(bat.p_discharge_max_w, (s - bat.soc_min) * bat.capacity_wh * bat.eta_discharge * 4)
        d = min(max(net[t] - limit, 0.0), room)
        d = min(math.ceil(d / step_w - 1e-9) * step_w, math.floor(room / step_w + 1e-9) * step_w)
        greedy += max(net[t] - d - limit, 0.0)
        s -= d / bat.eta_discharge / 4 / bat.capacity_wh
    assert np.maximum(net + p - limit, 0.0).sum() <= greedy + 1e-6


def test_the_battery_covers_the_building_first_where_only_capped_evs_would_exceed_later():
    # energy for one step only (it cannot charge: the building is near the limit): at t=2 the building alone is
    # above the limit, at t=6 the site only is because of EVs LEVChAg will cap; the battery covers t=2
    bat = SdpBattery(10_000, 20_000, 20_000, soc_min=0.1, soc_max=0.9)
    net = np.array([14e3, 14e3, 20e3, 14e3, 14e3, 14e3, 24e3, 14e3])
    capped = np.where(np.arange(8) == 6, 14e3, 0.0)
    problem = SdpProblem(bat, SdpEv(1.0, 0.0), soc_step=0.05, import_limit_w=15_000)
    p, _ = _battery_run(solve(problem, net, _always(8, False), capped_w=capped), bat, 0.25, 8)
    assert p[2] <= -5000 and p[6] == 0 and np.all(p <= 0)
    blind, _ = _battery_run(solve(problem, net, _always(8, False)), bat, 0.25, 8)  # all excess alike: the larger
    assert blind[6] < 0 and blind[2] == 0
