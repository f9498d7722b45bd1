"""GESSCon day-ahead plan for a feeder of 50 sites: solve time, against the same LP stated in pyomo.

``python -m benchmarks.gesscon_solve [--quick]``

50 household sites (4.5-6.5 kWh, 2.4 kW batteries, 3-6 kWp PV, S4G residential load profiles and the Fur PV
profile for 15 June), a time-of-use tariff, a transformer limit of 0.8 kW per site (40 kW for 50 sites) that
binds at midday (unconstrained, the plan would export about 50 kW). Ours: the
highspy model built once per feeder (:class:`controllers.gesscon.Gesscon`), each day's data changed in place;
baseline: the same LP written in pyomo and built and solved with HiGHS every day (what a straightforward
implementation does). Both give the same objective (checked). ``--quick``: 10 sites as well as 50, fewer
repetitions.
"""

from __future__ import annotations

import argparse
import time
from typing import cast

import numpy as np

from benchmarks.common import median_spread, print_rows, row
from controllers.gesscon import Gesscon, GessconConfig, GessconSite
from controllers.schedule_codec import HOURS

START = "2019-06-15T00:00:00+02:00"


def feeder(n_sites: int, seed: int = 0):
    from simulators.profiles import load_profile, price_profile, pv_profile

    rng = np.random.default_rng(seed)
    pv1 = pv_profile("s4g-pv", "fur_denmark", start=START, duration_s=86400, step_s=3600)
    sites, fc, states = [], {}, {}
    for i in range(n_sites):
        s = GessconSite(id=f"site_{i}", capacity_wh=4500 + 2000 * rng.random(), p_charge_max_w=2400,
                        p_discharge_max_w=2400, eta_charge=0.96, eta_discharge=0.96, soc_min=0.05, soc_max=1.0,
                        self_discharge_per_day=0.001, contract_import_w=17000, contract_export_w=6000)
        sites.append(s)
        load = load_profile("s4g-residential", f"profile_{1 + 7 * i}", start=START, duration_s=86400, step_s=3600)
        fc[s.id] = {"load_w": load, "pv_w": pv1 * (3 + 3 * rng.random()) * 0.97}
        states[s.id] = (0.2 + 0.3 * rng.random()) * s.capacity_wh
    periods = [{"from": "00:00", "to": "07:00", "import": 0.22, "export": 0.06},
               {"from": "07:00", "to": "17:00", "import": 0.30, "export": 0.08},
               {"from": "17:00", "to": "21:00", "import": 0.42, "export": 0.08},
               {"from": "21:00", "to": "24:00", "import": 0.30, "export": 0.08}]
    ci, ce = price_profile("tou", start=START, duration_s=86400, step_s=3600, periods=periods)
    return sites, fc, {"import": ci, "export": ce}, states


def pyomo_gesscon(sites: list[GessconSite], cfg: GessconConfig, fc, prices, states) -> float:
    """The GESSCon LP stated in pyomo (built and solved from scratch); returns the objective."""
    import pyomo.environ as pe
    from pyomo.contrib.solver.solvers.highs import Highs

    m = pe.ConcreteModel()
    S = [s.id for s in sites]
    by = {s.id: s for s in sites}
    m.S = pe.Set(initialize=S)
    m.H = pe.RangeSet(0, HOURS - 1)
    ci = np.asarray(prices["import"], float)
    ce = np.minimum(np.asarray(prices["export"], float), ci)
    term = cfg.terminal_value_eur_per_kwh if cfg.terminal_value_eur_per_kwh is not None else float(np.mean(ce))
    m.pc = pe.Var(m.S, m.H, bounds=lambda m, s, h: (0, by[s].p_charge_max_w / 1e3))
    m.pd = pe.Var(m.S, m.H, bounds=lambda m, s, h: (0, by[s].p_discharge_max_w / 1e3))
    m.pv = pe.Var(m.S, m.H, bounds=lambda m, s, h: (0, max(fc[s]["pv_w"][h], 0) / 1e3))
    m.gi = pe.Var(m.S, m.H,
                  bounds=lambda m, s, h: (0, c / 1e3 if (c := by[s].contract_import_w) else None))
    m.ge = pe.Var(m.S, m.H,
                  bounds=lambda m, s, h: (0, c / 1e3 if (c := by[s].contract_export_w) else None))
    m.e = pe.Var(m.S, pe.RangeSet(1, HOURS))
    m.ou = pe.Var(m.H, within=pe.NonNegativeReals)
    m.od = pe.Var(m.H, within=pe.NonNegativeReals)

    def k(s):
        return 1 - by[s].self_discharge_per_day / 24.0

    def e_prev(m, s, h):
        return states[s] / 1e3 if h == 0 else m.e[s, h]

    m.bal = pe.Constraint(m.S, m.H, rule=lambda m, s, h: fc[s]["load_w"][h] / 1e3 - m.pv[s, h] + m.pc[s, h] - m.pd[s, h]
                          == m.gi[s, h] - m.ge[s, h])
    m.soc = pe.Constraint(m.S, m.H, rule=lambda m, s, h: m.e[s, h + 1] == k(s) * (
        e_prev(m, s, h) + by[s].eta_charge * m.pc[s, h] - m.pd[s, h] / by[s].eta_discharge))

    def window(m, s, h):
        b = by[s]
        lo, hi = b.soc_min * b.capacity_wh / 1e3, b.soc_max * b.capacity_wh / 1e3
        if h == 1:
            lo, hi = min(lo, k(s) * states[s] / 1e3), max(hi, k(s) * states[s] / 1e3)
        return pe.inequality(lo, m.e[s, h], hi)

    m.win = pe.Constraint(m.S, pe.RangeSet(1, HOURS), rule=window)
    if cfg.transformer_limit_w:
        tr = cfg.transformer_limit_w / 1e3
        m.tr = pe.Constraint(m.H, rule=lambda m, h: pe.inequality(
            -tr, sum(m.gi[s, h] - m.ge[s, h] for s in S) - m.ou[h] + m.od[h], tr))
    cp = cfg.curtail_penalty_eur_per_kwh
    m.obj = pe.Objective(expr=sum(
        ci[h] * m.gi[s, h] - ce[h] * m.ge[s, h]
        + cfg.degradation_eur_per_kwh * (m.pc[s, h] + m.pd[s, h])
        + cp * (fc[s]["pv_w"][h] / 1e3 - m.pv[s, h] + (1 - by[s].eta_charge) * m.pc[s, h]
                + (1 / by[s].eta_discharge - 1) * m.pd[s, h])
        for s in S for h in m.H) - term * sum(m.e[s, HOURS] for s in S)
        + cfg.overload_penalty_eur_per_kwh * sum(m.ou[h] + m.od[h] for h in m.H))
    solver = Highs()
    solver.config.solver_options["threads"] = 1
    res = solver.solve(m)
    return float(res.incumbent_objective)


def run(quick: bool) -> list[dict]:
    rows = []
    for n in ((10, 50) if quick else (50,)):
        sites, fc, prices, states = feeder(n)
        cfg_n = GessconConfig(transformer_limit_w=800.0 * n)
        g = Gesscon(sites, cfg_n)
        reps = 5 if quick else 30
        times = []
        for i in range(reps + 2):
            t0 = time.perf_counter()
            plan = g.solve(fc, prices, states)
            if i >= 2:
                times.append(time.perf_counter() - t0)
        assert plan.status == "optimal"
        base_times = []
        pyomo_gesscon(sites, cfg_n, fc, prices, states)  # warm-up (imports, first compilation)
        for _ in range(1 if quick else 3):
            t0 = time.perf_counter()
            ref = pyomo_gesscon(sites, cfg_n, fc, prices, states)
            base_times.append(time.perf_counter() - t0)
        assert abs(plan.objective - ref) <= 1e-6 * max(1.0, abs(ref)), (plan.objective, ref)
        t_build = time.perf_counter()
        Gesscon(sites, cfg_n)
        build_ms = (time.perf_counter() - t_build) * 1e3
        rows.append(row(f"GESSCon day-ahead plan, {n} sites x 24 h: solve (model kept), median",
                        median_spread([t * 1e3 for t in times]), median_spread([t * 1e3 for t in base_times]), "ms",
                        goal_max=1000.0))
        rows.append(row(f"GESSCon {n} sites: building the highspy model (once per feeder)", build_ms, None, "ms"))
        rows.append(row(f"GESSCon {n} sites: peak planned transformer load / limit",
                        float(np.max(np.abs(plan.transformer_w))) / cast(float, cfg_n.transformer_limit_w), None, "-",
                        goal_max=1.0 + 1e-9))
    return rows


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    print_rows(run(parser.parse_args().quick), title="GESSCon solve time")
