"""EV scheduling on arrays: the exact simulation, the hindsight bound, the MPC and PROFEV on a small day."""

import numpy as np
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from controllers.ev_scheduling import (EqualShare, ExpectedArrivals, Fleet, PeakMpc, PriorityShare,
                                       RemainingSessions, SimilarDays, Uncontrolled, billing_period, hindsight_lp,
                                       min_site_limit, simulate)
from controllers.profev_sdp import pooled_presence
from controllers.profev_site import ProfevPolicy


def _fleet(n=8, seed=0) -> Fleet:
    rng = np.random.default_rng(seed)
    arrival = rng.integers(28, 44, n)
    departure = arrival + rng.integers(8, 36, n)
    p_max = rng.choice([3700.0, 7400.0, 11_000.0], n)
    energy = np.minimum(rng.uniform(2000, 15_000, n), 0.6 * p_max * (departure - arrival) / 4)
    return Fleet(900, 96, arrival, departure, energy, p_max, np.where(p_max <= 7400, 1380.0, 4140.0),
                 np.full(n, 50_000.0), rng.uniform(0.2, 0.6, n))


def test_uncontrolled_delivers_what_is_asked_and_the_simulation_keeps_physics():
    f = _fleet()
    res = simulate(f, Uncontrolled())
    assert np.allclose(res.delivered_wh, f.energy_wh, rtol=1e-9)
    assert np.all(res.power_w <= f.p_max_w + 1e-6)
    steps = np.arange(f.n_steps)[:, None]
    assert np.all(res.power_w[(steps < f.arrival) | (steps >= f.departure)] == 0)  # only while plugged in
    # a limit below the minimum current pauses the EV (IEC 61851)
    paused = simulate(f, lambda st: np.where(st.present, f.p_min_w - 1.0, 0.0))
    assert paused.delivered_wh.sum() == 0


def test_taper_near_full_limits_what_an_ev_takes():
    f = Fleet(900, 8, np.array([0]), np.array([8]), np.array([20_000.0]), np.array([11_000.0]),
              np.array([4140.0]), np.array([20_000.0]), np.array([0.85]))
    res = simulate(f, Uncontrolled())
    assert res.power_w[0, 0] < 11_000.0  # above cv_soc the EV draws less than its charger could
    assert res.delivered_wh[0] < 20_000.0 * 0.15 / 0.92 + 1.0  # never more than the battery can hold


def test_hindsight_bound_is_below_every_schedule_that_delivers_everything():
    f = _fleet(seed=3)
    bound = hindsight_lp(f)
    assert bound.unmet_wh == pytest.approx(0.0, abs=1e-6)
    for policy in (Uncontrolled(), PeakMpc(), PriorityShare(min_site_limit(f, lambda L: PriorityShare(L))[0])):
        res = simulate(f, policy)
        if res.delivered_wh.sum() >= f.energy_wh.sum() - 1e-3:
            assert res.peak_w >= bound.peak_w - 1e-3


def test_mpc_and_heuristics_at_a_sufficient_limit_deliver_the_energy():
    f = _fleet(seed=5)
    total = f.energy_wh.sum()
    # with a peak floor (from history in the benchmark; here the bound) the MPC charges early enough
    assert simulate(f, PeakMpc(peak_w=hindsight_lp(f).peak_w)).delivered_wh.sum() >= 0.999 * total
    assert simulate(f, PeakMpc()).delivered_wh.sum() >= 0.99 * total  # without one it defers, and loses a little
    limit, res = min_site_limit(f, lambda L: EqualShare(L))
    assert res.delivered_wh.sum() >= 0.999 * total and res.peak_w <= limit + 1e-6
    limit, res = min_site_limit(f, lambda L: PriorityShare(L, "edf"))
    assert res.peak_w <= limit + 1e-6


def test_profev_with_declared_departures_serves_a_small_day():
    f = _fleet(seed=7)
    sessions = [(a * 900.0, d * 900.0) for a, d in zip(f.arrival, f.departure)] * 5
    pol = ProfevPolicy(pooled_presence(sessions, step_s=900), 900, declared_departure=True,
                       shortfall_penalty_per_kwh=1000.0)
    res = simulate(f, pol)
    assert res.delivered_wh.sum() >= 0.99 * f.energy_wh.sum()
    assert res.peak_w <= simulate(f, Uncontrolled()).peak_w + 1e-6


def test_expected_arrivals_from_history_keep_the_daily_mean_and_look_only_ahead():
    days = [_fleet(n=6, seed=s) for s in range(4)]
    ex = ExpectedArrivals.from_history(days)
    assert ex.energy_wh.sum() == pytest.approx(np.mean([d.energy_wh.sum() for d in days]))
    assert ex.p_max_w.sum() == pytest.approx(np.mean([d.p_max_w.sum() for d in days]))
    assert len(np.unique(np.stack([ex.arrival, ex.departure]), axis=1)[0]) == ex.arrival.size  # merged
    k = int(np.median(ex.arrival))
    later = ex.after(k, scale=2.0)
    assert np.all(later.arrival > k)
    assert later.energy_wh.sum() == pytest.approx(2.0 * ex.energy_wh[ex.arrival > k].sum())
    # a day exactly as expected so far has intensity 1; twice the energy pushes it up, a prior damps it
    so_far = float(ex.energy_wh[ex.arrival <= k].sum())
    assert ex.intensity(k, so_far, prior=0.5) == pytest.approx(1.0)
    assert 1.0 < ex.intensity(k, 2 * so_far, prior=1.0) < ex.intensity(k, 2 * so_far, prior=0.1) <= 2.0
    with pytest.raises(ValueError):
        ExpectedArrivals.from_history([])


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 10_000), n=st.integers(4, 12), forecast=st.sampled_from(["mean", "intensity",
                                                                                     "remaining"]))
def test_mpc_with_expected_arrivals_keeps_minimum_current_and_delivers(seed, n, forecast):
    history = [_fleet(n=n, seed=seed + 1 + d) for d in range(5)]
    day = _fleet(n=n, seed=seed)
    mpc = (PeakMpc(expected=RemainingSessions(history)) if forecast == "remaining" else
           PeakMpc(expected=ExpectedArrivals.from_history(history), adapt_prior=1.0 if forecast == "intensity" else None))
    budgets = []

    def checked(state):
        limits = mpc(state)
        on = limits > 0
        # IEC 61851: an EV is either paused or given at least its minimum; never an absent EV
        assert np.all(limits[on] >= day.p_min_w[on] - 1e-6) and not np.any(on & ~state.present)
        budgets.append((state.k, mpc.peak_w))
        return limits

    res = simulate(day, checked)
    assert res.delivered_wh.sum() >= 0.999 * day.energy_wh.sum()
    # the site never draws more than the peak the MPC has committed to (its running peak)
    for k, peak in budgets:
        assert res.site_w[k] <= peak + 1e-3
    assert res.peak_w >= hindsight_lp(day).peak_w - 1e-3  # the bound holds


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 10_000), n=st.integers(3, 10), frac=st.floats(0.0, 1.5),
       forecast=st.booleans())
def test_mpc_never_draws_above_its_hard_site_limit_and_records_what_it_could_not_give(seed, n, frac, forecast):
    day = _fleet(n=n, seed=seed)
    limit = frac * hindsight_lp(day).peak_w  # from far below what the EVs need to ample
    expected = ExpectedArrivals.from_history([_fleet(n=n, seed=seed + 1)]) if forecast else None
    mpc = PeakMpc(expected=expected, adapt_prior=1.0 if forecast else None, site_limit_w=limit)
    res = simulate(day, mpc)
    assert np.all(res.site_w <= limit + 1e-3)  # hard: never above, whatever the EVs must have
    for e in mpc.events:  # every cut is an event: what the urgent EVs needed, above the limit, and what was cut
        assert e.must_w > e.limit_w == limit and 0 < e.shortfall_w <= e.must_w
    if not mpc.events:
        assert res.delivered_wh.sum() >= 0.999 * day.energy_wh.sum() or frac < 1.0
    if frac < 0.9:  # below the hindsight optimum's peak the energy cannot all be delivered
        assert res.delivered_wh.sum() < day.energy_wh.sum() - 1.0


def test_mpc_site_limit_ample_changes_nothing_and_bad_limits_are_refused():
    f = _fleet(seed=11)
    free = simulate(f, PeakMpc())
    limited = PeakMpc(site_limit_w=simulate(f, Uncontrolled()).peak_w)
    res = simulate(f, limited)
    assert np.allclose(res.power_w, free.power_w) and not limited.events
    for bad in (-1.0, float("nan"), float("inf")):
        with pytest.raises(ValueError):
            PeakMpc(site_limit_w=bad)


def test_similar_days_match_today_so_far_and_look_only_ahead():
    days = [_fleet(n=4 + 2 * s, seed=s) for s in range(6)]  # heavier and heavier days
    sim = SimilarDays(days, k=2, scale=0.5)
    today = days[4]
    k = int(np.max(today.arrival))  # everything of today has arrived: the same day is the nearest
    assert 4 in sim.nearest(k, today)
    k = int(np.median(today.arrival))
    near = sim.nearest(k, today)
    ahead = sim.after(k, today)
    assert len(near) == 2 and np.all(ahead.arrival > k)
    mean_later = np.mean([d.energy_wh[d.arrival > k].sum() for d in (days[i] for i in near)])
    assert ahead.energy_wh.sum() == pytest.approx(0.5 * mean_later)
    res = simulate(today, PeakMpc(expected=sim))  # the MPC takes it as its forecast
    assert res.delivered_wh.sum() >= 0.999 * today.energy_wh.sum()
    for bad in ([], days):
        with pytest.raises(ValueError):
            SimilarDays(bad, k=0)


def test_billing_period_carries_the_realised_peak_and_a_repeated_day_costs_no_new_peak():
    light, heavy = _fleet(n=4, seed=1), _fleet(n=10, seed=2)
    days = [heavy, light, heavy]
    seen: list[float] = []

    def make(sunk: float) -> PeakMpc:
        seen.append(sunk)
        return PeakMpc(peak_w=sunk)

    res = billing_period(days, make)
    # each day starts from the highest peak of the days before it (the first from nothing); never a later day's
    assert seen == [0.0, res[0].peak_w, max(res[0].peak_w, res[1].peak_w)]
    for f, r in zip(days, res):
        assert r.delivered_wh.sum() >= 0.99 * f.energy_wh.sum()
    # the same day again, with its own peak already paid for, is served without raising the period's peak
    assert res[2].peak_w <= max(res[0].peak_w, res[1].peak_w) + 1e-3  # the budget rounds up by ~1e-6 W a step
    assert res[2].delivered_wh.sum() >= 0.999 * heavy.energy_wh.sum()


def _binomial_posterior_remaining(counts, p, n):
    """E[N - n | n] by the textbook formula, independently of the implementation: P(N) Binom(n; N, p)."""
    from scipy.stats import binom

    values, freq = np.unique(counts, return_counts=True)
    w = freq / freq.sum() * binom.pmf(n, values, p)
    return float(w @ (values - n) / w.sum()) if w.sum() > 0 else None


@settings(max_examples=60, deadline=None)
@given(counts=st.lists(st.integers(0, 14), min_size=1, max_size=8), seed=st.integers(0, 1000),
       k=st.integers(20, 70), n=st.integers(0, 16))
@example(counts=[0, 0], seed=0, k=30, n=2)  # a history without sessions: nothing to come (was NaN)
def test_remaining_sessions_is_the_posterior_mean_of_the_count_still_to_come(counts, seed, k, n):
    days = [_fleet(n=c, seed=seed + i) for i, c in enumerate(counts)]
    rs = RemainingSessions(days)
    arrivals = np.concatenate([d.arrival for d in days])
    p = float(np.mean(arrivals <= k)) if arrivals.size else 1.0
    expected = _binomial_posterior_remaining(counts, p, n)
    got = rs.remaining(k, n)
    if expected is None:  # no history count explains today: the history's mean remainder for the hour
        assert got == pytest.approx(np.mean(counts) * (1 - p))
    else:
        assert got == pytest.approx(expected, rel=1e-9, abs=1e-9)
    assert got >= 0


def test_remaining_sessions_at_a_steady_count_expect_a_busy_afternoon_after_a_thin_morning():
    days = [_fleet(n=10, seed=s) for s in range(8)]  # the site's count is 10 every day
    rs = RemainingSessions(days, scale=1.0)
    k = int(np.median(np.concatenate([d.arrival for d in days])))
    later = np.concatenate([d.energy_wh[d.arrival > k] for d in days]).mean()  # a later session's mean energy
    for n in range(11):
        assert rs.remaining(k, n) == pytest.approx(10 - n)
    assert rs.remaining(k, 12) == pytest.approx(10 * (1 - np.mean(np.concatenate([d.arrival for d in days]) <= k)))
    thin, full = _fleet(n=10, seed=99), _fleet(n=10, seed=98)
    arrival = np.where(np.arange(10) < 2, k - 1, k + 5)  # 2 arrived by k
    thin = Fleet(**{**thin.__dict__, "arrival": arrival, "departure": arrival + 16})
    full = Fleet(**{**full.__dict__, "arrival": np.full(10, k - 1), "departure": np.full(10, k + 20)})  # all 10
    ahead = rs.after(k, thin)
    assert np.all(ahead.arrival > k) and ahead.energy_wh.sum() == pytest.approx(8 * later)
    assert rs.after(k, full).energy_wh.sum() == pytest.approx(0.0)
    mean_later = ExpectedArrivals.from_history(days).after(k).energy_wh.sum()
    assert ahead.energy_wh.sum() > mean_later  # the plain mean expects the usual afternoon
    res = simulate(thin, PeakMpc(expected=rs))
    assert res.delivered_wh.sum() >= 0.999 * thin.energy_wh.sum()
    for bad_days, scale in (([], 1.0), (days, -0.1), (days, float("nan"))):
        with pytest.raises(ValueError):
            RemainingSessions(bad_days, scale)
    # a count announced in advance replaces the history's: 7 announced, 2 arrived, 5 to come
    assert RemainingSessions(days, announced=7).after(k, thin).energy_wh.sum() == pytest.approx(5 * later)
    with pytest.raises(ValueError):
        RemainingSessions(days, announced=-1)
