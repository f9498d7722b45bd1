"""EV scheduling: peak and energy of every algorithm on the same sessions, PROFEV's solve time and the value of
its stochastic solution, LEVChAg's decision time, GEVChCon against a genetic algorithm.

``python -m benchmarks.ev_scheduling [--quick] [--tune]`` (``--tune``: only the MPC's forecast settings, chosen
by leave-one-out on the history days)

Sessions: a workplace car park, 50 EVs per working day (``workplace`` session model, fitted to published
statistics; EVs of the fleet's generic types, 3.7-11 kW on-board chargers, 22 kW wallboxes), 15-minute steps.
The 10 working days before the test days (20 of them; the quick run: the first) are the history every causal
method learns from; each test day is
then charged by every algorithm through the same exact CC-CV simulation with the IEC 61851 minimum current.
Energy is counted against what each EV could physically take during its stay (its request, capped at what
uncontrolled charging delivers), as in the EV-scheduling literature. Algorithms:

* uncontrolled; equal share, earliest deadline first, least laxity first at a site limit set from history (the
  median over the history days of the lowest limit that delivered 99.9 %);
* our MPC (controllers/ev_scheduling.py PeakMpc: min-peak LP each step over the EVs present, their declared
  energy and departure, and the arrivals still expected today: as many sessions as the history's daily counts
  say are still to come after today's arrivals so far, spread like the history's later sessions;
  RemainingSessions), and beside it the earlier MPCs: the later sessions of the 5 history days whose arrived
  energy so far is nearest today's x 0.9 (SimilarDays), the history's mean sessions scaled by how heavy today
  has been so far, and the EVs present only with the peak floor = the median of the history days' optimal
  peaks; and our MPC under a hard site limit (least laxity first's limit from history): never above it, what it
  could not give counted;
* PROFEV (controllers/profev_site.py; chain from history; with and without the declared departures);
* the hindsight optimum: the min-peak LP knowing every session (a lower bound: the minimum current relaxed).

The literature's reference (ACN-Sim, Lee et al.): uncontrolled 99 kW, MPC 36.3 kW at 99.95 % energy, offline
optimum 33.4 kW. Goal here: our MPC within 10 % of the hindsight peak at >= 99.9 % energy.
"""

from __future__ import annotations

import dataclasses
import math
import time
from typing import Any
from collections.abc import Callable

import numpy as np

from benchmarks.common import median_spread, print_rows, row
from controllers.ev_scheduling import (EqualShare, ExpectedArrivals, Fleet, PeakMpc, Policy, PriorityShare,
                                       RemainingSessions, SimilarDays, Uncontrolled, billing_period, highs_with_lp,
                                       hindsight_lp, min_site_limit, simulate)

START = "2019-07-01T00:00:00+02:00"  # a Monday; the history is the days before
STEP_S = 900
MPC_ADAPT_PRIOR = 1.0  # the intensity estimate's prior weight (days of history energy); chosen on the 5-day mean
# SimilarDays: how many nearest history days, and their scale; chosen by leave-one-out on the history days
# (--tune: each history day charged with the other 9 as its history; the lowest worst day), never on the test days
MPC_SIMILAR_K, MPC_SIMILAR_SCALE = 5, 0.9
# RemainingSessions' scale, chosen the same way (--tune: 0.8 / 0.9 / 1.0 / 1.1)
MPC_REMAINING_SCALE = 1.0
N_TEST = 20
OUR_MPC = "our MPC (min-peak LP, the sessions still to come by today's count so far)"


def our_mpc(hist: list[Fleet], **kw: Any) -> PeakMpc:
    return PeakMpc(expected=RemainingSessions(hist, MPC_REMAINING_SCALE), **kw)


def similar_mpc(hist: list[Fleet], k: int = MPC_SIMILAR_K, scale: float = MPC_SIMILAR_SCALE) -> PeakMpc:
    """Our MPC until 2026-12-07: the later sessions of the history days most like today so far."""
    return PeakMpc(expected=SimilarDays(hist, k, scale))


def per_day(days: list[Fleet], bounds: list[float], make: Callable[[int, Fleet], Policy]) -> tuple[np.ndarray, float]:
    """Each day charged by a fresh ``make(i, day)``: its peak over ``bounds[i]``, and the least energy share (%)."""
    res = [simulate(f, make(i, f)) for i, f in enumerate(days)]
    return (np.array([x.peak_w / b for x, b in zip(res, bounds)]),
            100 * min(float(x.delivered_wh.sum() / f.energy_wh.sum()) for x, f in zip(res, days)))


def mean_worst_energy(days: list[Fleet], bounds: list[float],
                      make: Callable[[int, Fleet], Policy]) -> tuple[float, float, float]:
    r, energy = per_day(days, bounds, make)
    return float(r.mean()), float(r.max()), energy


def workplace_days(n_test: int, evs_per_day: int = 50, seed: int = 1,
                   n_hist: int = 10) -> tuple[list[Fleet], list[Fleet], list]:
    """(history fleets, test fleets, history sessions) of working days: ``n_hist`` days, then ``n_test``."""
    from simulators.ev_fleet import fleet_history

    days_back = 14 + 7 * math.ceil(n_test / 5) + 2 + 7 * math.ceil(max(n_hist - 10, 0) / 5)
    evs = fleet_history(start=START, timezone="Europe/Rome", seed=seed, step_s=300,
                        sites=[{"kind": "commercial", "connectors": 200, "evs_per_day": evs_per_day,
                                "session_model": "workplace"}], index=0, days=days_back)
    by_day: dict[int, list] = {}
    for e in evs:
        by_day.setdefault(e.t_arrival_s // 86400, []).append(e)
    working = [d for d in sorted(by_day) if len(by_day[d]) >= evs_per_day]
    hist_days, test_days = working[:n_hist], working[n_hist:n_hist + n_test]

    def fleet(d: int) -> Fleet:
        ss = [dict(t_arrival_s=e.t_arrival_s, t_departure_s=e.t_departure_s, e_wanted_wh=e.energy_wanted_wh,
                   p_max_w=e.p_max_w, phases=e.phases, capacity_wh=e.capacity_wh, soc_arrival=e.soc_arrival)
              for e in by_day[d]]
        f = Fleet.from_sessions(ss, step_s=STEP_S, t0_s=d * 86400, n_steps=96)
        deliverable = simulate(f, Uncontrolled()).delivered_wh
        return dataclasses.replace(f, energy_wh=np.minimum(f.energy_wh, deliverable))

    first = hist_days[0] * 86400
    sessions = [(e.t_arrival_s - first, e.t_departure_s - first) for d in hist_days for e in by_day[d]]
    return [fleet(d) for d in hist_days], [fleet(d) for d in test_days], sessions


def scheduling_table(n_test: int) -> tuple[list[dict], dict]:
    from controllers.profev_sdp import pooled_presence
    from controllers.profev_site import ProfevPolicy

    hist, test, sessions = workplace_days(N_TEST)  # the same history for the quick run: its day is the first
    test = test[:n_test]
    heuristics: dict[str, Callable[[float], Policy]] = {"equal share": lambda lim: EqualShare(lim),
                  "earliest deadline first": lambda lim: PriorityShare(lim, "edf"),
                  "least laxity first": lambda lim: PriorityShare(lim, "llf")}
    limits = {name: float(np.median([min_site_limit(f, mk)[0] for f in hist])) for name, mk in heuristics.items()}
    floor = float(np.median([hindsight_lp(f).peak_w for f in hist]))
    expected = ExpectedArrivals.from_history(hist)
    presence = pooled_presence(sessions, step_s=STEP_S)
    results: dict[str, list[tuple[float, float, float]]] = {}
    profev_ms: list[float] = []
    limit_events = 0

    def record(name: str, f: Fleet, res, bound: float) -> None:
        results.setdefault(name, []).append((res.peak_w, float(res.delivered_wh.sum() / f.energy_wh.sum()),
                                             res.peak_w / bound))

    for f in test:
        h = hindsight_lp(f)
        results.setdefault("hindsight optimum (LP bound)", []).append(
            (h.peak_w, 1.0 - h.unmet_wh / f.energy_wh.sum(), 1.0))
        record("uncontrolled", f, simulate(f, Uncontrolled()), h.peak_w)
        for name, mk in heuristics.items():
            record(f"{name} (limit {limits[name] / 1e3:.1f} kW from history)", f, simulate(f, mk(limits[name])),
                   h.peak_w)
        record(OUR_MPC, f, simulate(f, our_mpc(hist)), h.peak_w)
        record("MPC, expected arrivals from the 5 most similar history days x 0.9 (our MPC until now)", f,
               simulate(f, similar_mpc(hist)), h.peak_w)
        limited = our_mpc(hist, site_limit_w=limits["least laxity first"])
        record(f"our MPC under a hard site limit (least laxity first's, {limits['least laxity first'] / 1e3:.1f} kW)",
               f, simulate(f, limited), h.peak_w)
        limit_events += len(limited.events)
        record("MPC, expected arrivals = history mean x today's intensity", f,
               simulate(f, PeakMpc(expected=expected, adapt_prior=MPC_ADAPT_PRIOR)), h.peak_w)
        record("previous MPC (min-peak LP, EVs present only, floor from history)", f,
               simulate(f, PeakMpc(peak_w=floor)), h.peak_w)
        for declared in (False, True):
            pol = ProfevPolicy(presence, STEP_S, declared_departure=declared, shortfall_penalty_per_kwh=1000.0)
            record("PROFEV" + (" + declared departures" if declared else " (chain only, as the original)"), f,
                   simulate(f, pol), h.peak_w)
            profev_ms += pol.solve_ms
    # the billing-period reading (a demand charge bills the period's highest peak, as in the ACN-Sim study): each
    # algorithm's period peak is the highest of its days'; the bound is the highest daily optimum (days are
    # independent). Our MPC then carries the period's realised peak from day to day (sunk), and may start the
    # period at the highest optimal peak of the history days (known after those days; no parameter to tune)
    history_floor = max(hindsight_lp(f).peak_w for f in hist)
    for name, floor_w in (("our MPC over the billing period (peak so far carried)", 0.0),
                          ("our MPC over the billing period (peak so far carried, at least the history's highest "
                           "optimal day peak)", history_floor)):
        def make(sunk: float, floor_w: float = floor_w) -> Policy:
            return our_mpc(hist, peak_w=max(sunk, floor_w))
        for f, res in zip(test, billing_period(test, make)):
            record(name, f, res, 1.0)
    opt_period = max(v[0] for v in results["hindsight optimum (LP bound)"])
    period = [{"algorithm": name, "period_peak_kw": max(v[0] for v in vals) / 1e3,
               "energy_min_pct": 100 * min(v[1] for v in vals),
               "period_over_optimum": max(v[0] for v in vals) / opt_period} for name, vals in results.items()]
    rows = []
    for name, vals in results.items():
        if "billing period" in name:  # their days hold the period's peak on purpose: read per period only
            continue
        peak = np.mean([v[0] for v in vals]) / 1e3
        energy = 100 * min(v[1] for v in vals)
        ratio = max(v[2] for v in vals)
        rows.append({"algorithm": name, "peak_kw": peak, "energy_min_pct": energy, "peak_over_optimum_max": ratio,
                     "peak_over_optimum_mean": float(np.mean([v[2] for v in vals])),
                     "per_day": [round(v[2], 3) for v in vals]})
    return rows, {"profev_site_solve_ms": profev_ms, "n_test": len(test), "limit_events": limit_events,
                  "n_sessions": int(np.mean([f.n for f in test])), "period": period,
                  "history_floor_kw": history_floor / 1e3}


def fresh_days(n: int = N_TEST) -> dict[str, tuple[float, float, float]]:
    """Out of sample: the ``n`` working days before the benchmark's history (with the 10 before them as their
    history), which chose nothing here. Per MPC: (mean, worst) peak / hindsight optimum, least energy %; and our
    MPC over them as one billing period (the period's peak carried, no floor): (period peak / the highest daily
    optimum, the same, least energy %)."""
    hist, test, _ = workplace_days(3 * n)
    fresh = test[:n]
    b_hist, b_test, _ = workplace_days(n)
    sig = lambda f: (f.n, round(float(f.energy_wh.sum()), 3), int(f.arrival.sum()))  # noqa: E731
    seen = {sig(f) for f in b_hist + b_test}
    if any(sig(f) in seen for f in fresh + hist):
        raise RuntimeError("the fresh days overlap the benchmark's history or test days")
    bound = [hindsight_lp(f).peak_w for f in fresh]
    out = {OUR_MPC: mean_worst_energy(fresh, bound, lambda _i, _f: our_mpc(hist)),
           "MPC, 5 most similar history days x 0.9 (our MPC until now)":
               mean_worst_energy(fresh, bound, lambda _i, _f: similar_mpc(hist))}
    res = billing_period(fresh, lambda sunk: our_mpc(hist, peak_w=sunk))
    period = max(x.peak_w for x in res) / max(bound)
    out["billing period"] = (period, period, 100 * min(float(x.delivered_wh.sum() / f.energy_wh.sum())
                                                       for x, f in zip(res, fresh)))
    return out


def profev_solve_s(repeat: int) -> list[float]:
    """One EV + the site battery, 1 % grids for both, 24 h at 15 min (96 steps), chain and cost objective."""
    from controllers.profev_sdp import PresenceModel, SdpBattery, SdpEv, SdpProblem, solve

    rng = np.random.default_rng(0)
    n = 96
    bat = SdpBattery(10_000, 5000, 5000, soc_min=0.1, soc_max=0.95)
    ev = SdpEv(40_000, 7400, soc_target=0.8)
    problem = SdpProblem(bat, ev, step_s=900, soc_step=0.01, ev_soc_step=0.01)
    presence = PresenceModel(rng.uniform(0.8, 1.0, n), rng.uniform(0.0, 0.2, n))
    net = 1000 + 800 * np.sin(np.linspace(0, 2 * np.pi, n))
    solve(problem, net, presence)  # compile
    out = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        solve(problem, net, presence)
        out.append(time.perf_counter() - t0)
    return out


def levchag_decide_ms(n: int, repeat: int) -> tuple[list[float], list[float]]:
    """LEVChAg's decision for n charge points (every one with an EV): the vectorised core, and the whole
    mosaik step (inputs -> limits) of one site with n wallboxes."""
    from controllers.levchag import LevchagSim, decide

    rng = np.random.default_rng(1)
    rem = rng.uniform(1000, 40_000, n)
    acc = rng.choice([3700.0, 7400.0, 11_000.0, 22_000.0], n)
    pmin = np.where(acc <= 7400, 1380.0, 4140.0)
    dep = rng.uniform(1800, 36_000, n)
    core = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        decide(np.ones(n, bool), rem, acc, pmin, dep, 0.0, 60, 0.3 * acc.sum())
        core.append((time.perf_counter() - t0) * 1e3)
    sim = LevchagSim()
    sim.init("L", step_size=60)
    (site,) = sim.create(1, "Site", site="s", wallboxes=[{"id": f"wb{i}", "p_hw_max_w": 22_080.0} for i in range(n)],
                         import_limit_w=float(0.3 * acc.sum()), start_unix_s=0.0)
    slots = [c["eid"] for c in site["children"]]
    inputs = {site["eid"]: {"pcc_p_w": {"G": 0.0}}}
    for i, s in enumerate(slots):
        inputs[s] = {"connected": {"W": 1.0}, "status": {"W": 2.0}, "p_w": {"W": 0.0}, "soc": {"W": 0.5},
                     "e_session_wh": {"W": 0.0}, "ev_departure_t_s": {"B": float(dep[i])},
                     "ev_energy_wanted_wh": {"B": float(rem[i])}, "ev_p_max_w": {"B": float(acc[i])},
                     "ev_phases": {"B": 3.0}}
    whole = []
    for k in range(repeat):
        t0 = time.perf_counter()
        sim.step(60 * k, inputs, 0)
        sim.get_data({s: ["p_max_w"] for s in slots})
        whole.append((time.perf_counter() - t0) * 1e3)
    return core, whole


def value_of_stochastic_solution(n_days: int) -> dict[str, float]:
    """One household EV + a 10 kWh battery + 5 kWp PV, time-of-use prices; the EV plugs in in the evening
    (known at plug-in) and leaves next morning at a time drawn from the original project's distribution.
    Realised cost per day (EUR, shortfall at 1 EUR/kWh) of: PROFEV's SDP (presence chain from 28 days of history),
    the deterministic MPC on the forecast (the same DP with the EV leaving at the history's mean departure), both
    re-solved hourly, and the hindsight LP (HiGHS, actual departure known: the upper bound on value)."""
    import highspy

    from controllers.profev_sdp import PresenceModel, SdpBattery, SdpEv, SdpProblem, solve
    from simulators.ev_fleet import fleet_history
    from simulators.profiles import load_profile, pv_profile

    step, n = 900, 96
    h = step / 3600
    start = "2019-07-01T12:00:00+02:00"  # horizon: noon to noon
    hist = fleet_history(start=start, timezone="Europe/Rome", seed=3, step_s=step,
                         sites=[{"kind": "residential", "connectors": 1, "plug_probability": 1.0}], index=0,
                         days=28 + n_days + 2)
    hist = sorted(hist, key=lambda e: e.t_arrival_s)
    learn, test = hist[:28], hist[28:28 + n_days]
    t_first = learn[0].t_arrival_s - (learn[0].t_arrival_s % 86400) - 43200
    tod = lambda t: (t - t_first) % 86400  # noqa: E731  seconds after noon
    presence = PresenceModel.estimate([(e.t_arrival_s - t_first, e.t_departure_s - t_first) for e in learn],
                                      step_s=step, days=30)
    mean_dep = int(np.mean([tod(e.t_departure_s) for e in learn]) // step)
    price_in = np.where((np.arange(n) * h + 12) % 24 < 7, 0.18, np.where((np.arange(n) * h + 12) % 24 < 19, 0.30, 0.24))
    price_out = np.full(n, 0.05)
    bat = SdpBattery(10_000, 4000, 4000, soc_min=0.1, soc_max=0.95)
    costs: dict[str, list[float]] = {"sdp": [], "det": [], "lp": []}
    for day, e in enumerate(test):
        t0 = e.t_arrival_s - tod(e.t_arrival_s)  # noon before the arrival
        rel: dict[str, Any] = dict(start="2019-07-01T12:00:00+02:00", duration_s=86400, step_s=step,
                                   timezone="Europe/Rome")
        load = load_profile("s4g-residential", f"profile_{1 + day}", **rel)
        pv = 5 * pv_profile("s4g-pv", "bolzano_italy", **rel)
        net = load - pv
        a, d = int(math.ceil(tod(e.t_arrival_s) / step)), min(int(math.ceil((e.t_departure_s - t0) / step)), n)
        need_wh = e.energy_wanted_wh
        ev = SdpEv(need_wh * 0.92, e.p_max_w, soc_target=1.0, eta=0.92, away_use_wh_per_h=0.0,
                   shortfall_penalty_per_kwh=1.0, p_min_w=1380.0 * e.phases)
        problem = SdpProblem(bat, ev, step_s=step, soc_step=0.01, ev_soc_step=0.01, objective="cost",
                             penalise_at_horizon=True)

        def run(make_presence) -> float:
            soc_b, frac, cost, pol, k0 = 0.5, 0.0, 0.0, None, 0
            for k in range(n):
                home = a <= k < d
                if k % 4 == 0 or k == a:
                    pol, k0 = solve(problem, net[k:], make_presence(k), import_price=price_in[k:],
                                    export_price=price_out[k:]), k
                assert pol is not None  # solved at k = 0 (k % 4 == 0)
                pb, pe = pol.decide(k - k0, soc_b, frac, home)
                pe = pe if home else 0.0
                p = net[k] + pb + pe
                cost += (price_in[k] * p if p > 0 else price_out[k] * p) / 1e3 * h
                soc_b += (pb * bat.eta_charge if pb >= 0 else pb / bat.eta_discharge) * h / bat.capacity_wh
                frac = min(1.0, frac + pe * h / need_wh)
            return cost + max(1.0 - frac, 0.0) * need_wh / 1e3 * ev.shortfall_penalty_per_kwh

        def chain(k: int) -> PresenceModel:
            idx = (k + np.arange(n - k)) % len(presence.p_stay)
            ps = np.where(k + np.arange(n - k) < a - 1, 0.0, presence.p_stay[idx])
            pa = np.where(k + np.arange(n - k) == a - 1, 1.0, 0.0)  # the arrival is known (it plugs in)
            return PresenceModel(ps, pa)

        def forecast(k: int) -> PresenceModel:
            j = k + np.arange(n - k)
            dep = max(mean_dep, k + 1) if k >= a else mean_dep
            return PresenceModel(((j >= a) & (j < dep - 1)).astype(float), (j == a - 1).astype(float))

        costs["sdp"].append(run(chain))
        costs["det"].append(run(forecast))
        costs["lp"].append(_hindsight_cost_lp(highspy, net, price_in, price_out, bat, e, a, d, need_wh, h))
    return {k: float(np.mean(v)) for k, v in costs.items()} | {"days": float(len(test))}


def _hindsight_cost_lp(highspy, net, pin, pout, bat, e, a, d, need_wh, h) -> float:
    """min sum pin*imp - pout*exp + short, battery and EV continuous (kW, kWh)."""
    import scipy.sparse as sp

    n = net.size
    # columns: ch[n], dis[n], ev[n], imp[n], exp[n], e_b[n+1], short
    nc = 5 * n + n + 1 + 1
    ch, dis, ev, imp, ex, eb, sh = (np.arange(n), n + np.arange(n), 2 * n + np.arange(n), 3 * n + np.arange(n),
                                    4 * n + np.arange(n), 5 * n + np.arange(n + 1), 6 * n + 1)
    lo, hi = np.zeros(nc), np.full(nc, np.inf)
    hi[ch], hi[dis] = bat.p_charge_max_w / 1e3, bat.p_discharge_max_w / 1e3
    hi[ev] = 0.0
    hi[ev[a:d]] = e.p_max_w / 1e3
    lo[eb], hi[eb] = bat.soc_min * bat.capacity_wh / 1e3, bat.soc_max * bat.capacity_wh / 1e3
    lo[eb[0]] = hi[eb[0]] = 0.5 * bat.capacity_wh / 1e3
    cost = np.zeros(nc)
    cost[imp], cost[ex], cost[sh] = pin * h, -pout * h, 1.0
    r, c, v, rl, rh = [], [], [], [], []
    row_i = 0
    for t in range(n):  # balance: net + ch - dis + ev = imp - exp
        r += [row_i] * 5
        c += [ch[t], dis[t], ev[t], imp[t], ex[t]]
        v += [1, -1, 1, -1, 1]
        rl.append(-net[t] / 1e3)
        rh.append(-net[t] / 1e3)
        row_i += 1
    for t in range(n):  # storage
        r += [row_i] * 4
        c += [eb[t + 1], eb[t], ch[t], dis[t]]
        v += [1, -1, -bat.eta_charge * h, h / bat.eta_discharge]
        rl.append(0.0)
        rh.append(0.0)
        row_i += 1
    r += [row_i] * (n + 1)  # the EV's energy: sum ev h + short >= need
    c += list(ev) + [sh]
    v += [h] * n + [1.0]
    rl.append(need_wh / 1e3)
    rh.append(np.inf)
    row_i += 1
    hs = highs_with_lp(cost, lo, hi, sp.csc_matrix((v, (r, c)), shape=(row_i, nc)), rl, rh)
    hs.run()
    return float(hs.getInfo().objective_function_value)


def gevchcon_vs_ga(sites: int, seed: int = 0, generations: int = 400) -> dict[str, float]:
    """Three workplace car parks and their buildings on one feeder: the exact QP against the GA."""
    from controllers.gevchcon import FeederInputs, ev_demand_forecast, genetic, min_peak, min_variance, violation_wh

    rng = np.random.default_rng(seed)
    hist, _, sessions = workplace_days(1, evs_per_day=20, seed=seed + 5)
    energy = [e for f in hist for e in f.energy_wh]
    sess = [(a, d, energy[i % len(energy)]) for i, (a, d) in enumerate(sessions)]
    days = [(d, 0) for d in range(20)]
    arrived, due = ev_demand_forecast(sess, days, 0)
    hours = np.arange(24)
    base = np.array([(20_000 + 15_000 * np.exp(-((hours - 13) / 4.0) ** 2)) * rng.uniform(0.7, 1.3)
                     for _ in range(sites)])
    inp = FeederInputs(base, np.tile(due, (sites, 1)) * rng.uniform(0.8, 1.2, (sites, 1)),
                       np.tile(arrived, (sites, 1)), np.full(sites, 60_000.0))
    inp = dataclasses.replace(inp, arrived_wh=inp.due_wh[:, -1:] * arrived / max(arrived[-1], 1))
    q, lp, ga = min_variance(inp), min_peak(inp), genetic(inp, generations=generations)
    return {"qp_std_w": q.std_w, "lp_std_w": lp.std_w, "ga_std_w": ga.std_w, "qp_peak_w": q.peak_w,
            "lp_peak_w": lp.peak_w, "qp_s": q.solve_s, "ga_s": ga.solve_s, "ga_violation_wh": violation_wh(inp, ga.x_w),
            "qp_violation_wh": violation_wh(inp, q.x_w), "uncoordinated_std_w": float(
                (base.sum(axis=0) + np.diff(np.concatenate([[0], arrived]))[None].repeat(sites, 0).sum(axis=0)).std())}


def run(quick: bool) -> list[dict]:
    rows = []
    table, info = scheduling_table(1 if quick else N_TEST)
    opt = next(r for r in table if r["algorithm"].startswith("hindsight"))
    for r in table:
        base = opt["peak_kw"] if not r["algorithm"].startswith("hindsight") else None
        rows.append(row(f"EV peak, {info['n_sessions']} sessions/day x {info['n_test']} days: {r['algorithm']} "
                        f"(energy >= {r['energy_min_pct']:.2f} %, peak/optimum mean {r['peak_over_optimum_mean']:.3f}, "
                        f"worst {r['peak_over_optimum_max']:.3f})",
                        r["peak_kw"], base, "kW", lower_is_better=False))
    mpc = next(r for r in table if r["algorithm"] == OUR_MPC)
    print(f"our MPC under the hard site limit: {info['limit_events']} steps at which the EVs that could not wait "
          "needed more than the limit (recorded, the limit held)")
    for r in table:
        if "MPC" in r["algorithm"]:
            print(f"per day peak / optimum, {r['algorithm']}: {' '.join(map(str, r['per_day']))}")
    rows.append(row("our MPC: worst-day peak / hindsight optimum (goal <= 1.10 at >= 99.9 % energy)",
                    mpc["peak_over_optimum_max"] if mpc["energy_min_pct"] >= 99.9 else math.inf, None, "-",
                    goal_max=1.10))
    rows.append(row("our MPC: mean over the days of peak / hindsight optimum (goal <= 1.10 at >= 99.9 % energy)",
                    mpc["peak_over_optimum_mean"] if mpc["energy_min_pct"] >= 99.9 else math.inf, None, "-",
                    goal_max=1.10))
    if not quick:  # out of sample: days that chose nothing
        for name, (mean, worst, energy) in fresh_days().items():
            if name == "billing period":
                rows.append(row(f"{OUR_MPC} over the same fresh days as one billing period (peak so far carried, "
                                f"no floor; energy >= {energy:.2f} %): period peak / hindsight optimum's", mean, None,
                                "-"))
                continue
            ours = name == OUR_MPC
            rows.append(row(f"{name} on {N_TEST} fresh working days (before the history; energy >= {energy:.2f} %, "
                            f"worst day {worst:.3f}): mean peak / hindsight optimum"
                            + (" (goal <= 1.10 at >= 99.9 % energy)" if ours else ""),
                            mean if energy >= 99.9 or not ours else math.inf, None, "-",
                            goal_max=1.10 if ours else None))
        # where the daily count varies the gain is gone (docs/controllers/ev.md): the goal is marked (not met)
        vary = varying_counts(show=False)
        for name in (OUR_MPC, VARYING_ANNOUNCED):
            mean, worst, energy = vary[name]
            ours = name == OUR_MPC
            rows.append(row(f"{name} where the daily count varies (each day keeps 70-100 % of its sessions; energy >= "
                            f"{energy:.2f} %, worst day {worst:.3f}): mean peak / hindsight optimum", mean, None, "-",
                            goal_max=1.10 if ours else None))
    opt_period = next(r for r in info["period"] if r["algorithm"].startswith("hindsight"))
    for r in info["period"]:
        base = opt_period["period_peak_kw"] if r is not opt_period else None
        rows.append(row(f"EV billing-period peak (the highest of {info['n_test']} days): {r['algorithm']} (energy >= "
                        f"{r['energy_min_pct']:.2f} %, period peak / optimum's {r['period_over_optimum']:.3f})",
                        r["period_peak_kw"], base, "kW", lower_is_better=False))
    carried = [r for r in info["period"] if "billing period" in r["algorithm"]][-1]
    # no goal mark: the floor rule was chosen having seen these days, and on 20 earlier days it did not hold
    # (docs/controllers/ev.md, "The billing-period reading")
    rows.append(row(f"our MPC over the billing period (floor {info['history_floor_kw']:.1f} kW from history): period "
                    "peak / hindsight optimum's", carried["period_over_optimum"], None, "-"))
    rows.append(row("PROFEV site re-plan (all EVs by decomposition), median",
                    median_spread(info["profev_site_solve_ms"]), None, "ms"))
    rows.append(row("PROFEV SDP: one EV + battery, 1 % grids, 96 steps of 15 min", median_spread(
        [t * 1e3 for t in profev_solve_s(3 if quick else 20)]), None, "ms", goal_max=1000.0))
    core, whole = levchag_decide_ms(200, 20 if quick else 200)
    rows.append(row("LEVChAg decision, 200 charge points (core)", median_spread(core), None, "ms"))
    rows.append(row("LEVChAg decision, 200 charge points (mosaik step, inputs to limits)", median_spread(whole), None,
                    "ms", goal_max=100.0))
    v = value_of_stochastic_solution(3 if quick else 20)
    rows.append(row(f"PROFEV realised cost per day, {v['days']:.0f} household days: SDP (presence chain)", v["sdp"],
                    None, "EUR"))
    rows.append(row("same days: deterministic MPC on the forecast departure", v["det"], None, "EUR"))
    rows.append(row("same days: perfect-foresight LP (HiGHS, the bound)", v["lp"], None, "EUR"))
    rows.append(row("value of the stochastic solution (det. MPC - SDP)", v["det"] - v["sdp"], None, "EUR/day"))
    rows.append(row("gap of PROFEV's SDP to the perfect-foresight LP (SDP - LP)", v["sdp"] - v["lp"], None, "EUR/day"))
    g = gevchcon_vs_ga(3, generations=100 if quick else 400)
    rows.append(row("GEVChCon: std of the feeder aggregate over 24 h, exact QP vs genetic algorithm",
                    g["qp_std_w"] / 1e3, g["ga_std_w"] / 1e3, "kW", goal_ratio=1.0))
    rows.append(row(f"GEVChCon: energy bounds the GA breaks (the QP: {g['qp_violation_wh'] / 1e3:.3f})",
                    g["ga_violation_wh"] / 1e3, None, "kWh"))
    rows.append(row("GEVChCon QP solve (3 sites x 24 h)", g["qp_s"] * 1e3, g["ga_s"] * 1e3, "ms"))
    return rows


def tune_on_history(grid: tuple[tuple[int, float], ...] = ((3, 1.0), (4, 1.0), (5, 0.8), (5, 0.9), (5, 0.95),
                                                         (5, 1.0), (5, 1.1), (6, 1.0), (7, 1.0))) -> None:
    """RemainingSessions' scale and SimilarDays' (k, scale) by leave-one-out on the history days only: each history
    day charged by the MPC with the other days as its history; prints the mean and worst peak / optimum per
    setting."""
    hist, _, _ = workplace_days(N_TEST)
    bound = [hindsight_lp(f).peak_w for f in hist]
    def loo(mpc: Callable[[list[Fleet]], Policy]) -> tuple[float, float, float]:
        return mean_worst_energy(hist, bound, lambda i, _f: mpc(hist[:i] + hist[i + 1:]))

    for scale in (0.8, 0.9, 1.0, 1.1):
        mean, worst, _ = loo(lambda h: PeakMpc(expected=RemainingSessions(h, scale)))
        print(f"RemainingSessions x {scale}: leave-one-out peak / optimum mean {mean:.3f}, worst {worst:.3f}",
              flush=True)
    for k, scale in grid:
        mean, worst, _ = loo(lambda h: similar_mpc(h, k, scale))
        print(f"k={k} scale={scale}: leave-one-out peak / optimum mean {mean:.3f}, worst {worst:.3f}", flush=True)


def long_history(n_hist: int = 200, loo_days: int = 40,
                 grid: tuple[tuple[int, float], ...] = ((5, 0.9), (10, 0.9), (20, 0.9), (20, 1.0), (40, 0.9))) -> None:
    """Is the per-day goal a matter of too little history? The same 20 test days with the ``n_hist`` working days
    before them as history (the benchmark: 10): the history's mean as the forecast, and SimilarDays with (k, scale)
    chosen by leave-one-out on the last ``loo_days`` history days (each charged with the other history days),
    never on the test days. Prints each setting's leave-one-out and test figures."""
    hist, test, _ = workplace_days(N_TEST, n_hist=n_hist)
    bound = [hindsight_lp(f).peak_w for f in test]
    score = mean_worst_energy
    mean, worst, energy = score(test, bound, lambda _i, _f: PeakMpc(expected=ExpectedArrivals.from_history(hist)))
    print(f"history mean of {n_hist} days: test peak / optimum mean {mean:.3f}, worst {worst:.3f}, "
          f"energy >= {energy:.2f} %", flush=True)
    mean, worst, energy = score(test, bound, lambda _i, _f: our_mpc(hist))
    print(f"RemainingSessions x {MPC_REMAINING_SCALE} (our MPC) on {n_hist} days: test peak / optimum mean "
          f"{mean:.3f}, worst {worst:.3f}, energy >= {energy:.2f} %", flush=True)
    first = n_hist - loo_days
    loo = hist[first:]
    loo_bound = [hindsight_lp(f).peak_w for f in loo]
    best: tuple[float, int, float] | None = None
    for k, scale in grid:
        def others(i: int, _f: Fleet, k: int = k, scale: float = scale) -> Policy:
            return similar_mpc(hist[:first + i] + hist[first + i + 1:], k, scale)

        def all_days(_i: int, _f: Fleet, k: int = k, scale: float = scale) -> Policy:
            return similar_mpc(hist, k, scale)

        lm, lw, _ = score(loo, loo_bound, others)
        tm, tw, te = score(test, bound, all_days)
        print(f"SimilarDays k={k} x {scale}: leave-one-out mean {lm:.3f} (worst {lw:.3f}); test mean {tm:.3f} "
              f"(worst {tw:.3f}, energy >= {te:.2f} %)", flush=True)
        best = min(best or (lm, k, scale), (lm, k, scale))
    assert best is not None
    print(f"chosen by leave-one-out: k={best[1]} x {best[2]}", flush=True)


def rolling(n: int = 100) -> None:
    """More days than the table's 20: ``n`` working days, each charged with the 10 working days before it as its
    history (a rolling window, as an operator would keep it); prints each MPC's mean peak / optimum with its
    standard error, the worst day, the share of days within 1.10 and the mean of each block of 20 days."""
    hist, test, _ = workplace_days(n)
    days = hist + test
    bound = [hindsight_lp(f).peak_w for f in test]
    mpcs: tuple[tuple[str, Callable[[list[Fleet]], PeakMpc]], ...] = ((OUR_MPC, our_mpc),
                                                                       ("SimilarDays 5 x 0.9", similar_mpc))
    for name, mpc in mpcs:
        r, _ = per_day(test, bound, lambda i, _f: mpc(days[i:i + len(hist)]))
        blocks = " ".join(f"{r[j:j + N_TEST].mean():.3f}" for j in range(0, n, N_TEST))
        print(f"{name}: {n} days, peak / optimum mean {r.mean():.3f} (standard error {r.std(ddof=1) / n ** 0.5:.3f}),"
              f" worst {r.max():.3f}, {100 * np.mean(r <= 1.10):.0f} % of the days within 1.10; per 20 days: {blocks}",
              flush=True)


VARYING_ANNOUNCED = "our MPC told the day's count in advance (bookings: information, not the sessions)"


def varying_counts(keep: tuple[float, float] = (0.7, 1.0), seed: int = 3,
                   show: bool = True) -> dict[str, tuple[float, float, float]]:
    """How the forecasts fare where the daily count varies (the session model's is steady): every history and
    test day keeps each of its sessions with a probability drawn per day from ``keep``. Per MPC: the mean and
    worst peak / optimum and the least energy % on the test days."""
    hist, test, _ = workplace_days(N_TEST)
    rng = np.random.default_rng(seed)

    def thinned(f: Fleet) -> Fleet:
        m = rng.random(f.n) < rng.uniform(*keep)
        return dataclasses.replace(f, **{a: getattr(f, a)[m] for a in ("arrival", "departure", "energy_wh",
                                                                        "p_max_w", "p_min_w", "capacity_wh", "soc0")})

    hist, test = [thinned(f) for f in hist], [thinned(f) for f in test]
    if show:
        print(f"daily counts: history {[f.n for f in hist]}, test {[f.n for f in test]}", flush=True)
    bound = [hindsight_lp(f).peak_w for f in test]
    out = {}
    for name, make in ((OUR_MPC, lambda _i, _f: our_mpc(hist)),
                       ("SimilarDays 5 x 0.9", lambda _i, _f: similar_mpc(hist)),
                       ("history mean", lambda _i, _f: PeakMpc(expected=ExpectedArrivals.from_history(hist))),
                       (VARYING_ANNOUNCED,
                        lambda _i, f: PeakMpc(expected=RemainingSessions(hist, MPC_REMAINING_SCALE, announced=f.n)))):
        out[name] = mean, worst, energy = mean_worst_energy(test, bound, make)
        if show:
            print(f"{name}: peak / optimum mean {mean:.3f}, worst {worst:.3f}, energy >= {energy:.2f} %", flush=True)
    return out


if __name__ == "__main__":
    import argparse

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--tune", action="store_true")
    ap.add_argument("--long-history", action="store_true", help="the MPC with 200 history days instead of 10")
    ap.add_argument("--varying-counts", action="store_true", help="the MPCs where the daily session count varies")
    ap.add_argument("--rolling", action="store_true", help="the MPCs on 100 days, each with the 10 before it")
    args = ap.parse_args()
    if args.tune:
        tune_on_history()
    elif args.long_history:
        long_history()
    elif args.varying_counts:
        varying_counts()
    elif args.rolling:
        rolling()
    else:
        print_rows(run(args.quick), "EV scheduling")
