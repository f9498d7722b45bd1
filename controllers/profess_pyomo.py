"""PROFESS stated independently in pyomo: the reference formulation the tests compare objective values
against, and the "naive" baseline of the benchmarks.

It uses the natural variables of the original PROFESS models (separate import and export) and pyomo's
HiGHS interface (``pyomo.contrib.solver`` persistent ``highs``).
"""

from __future__ import annotations

import time as _time

import numpy as np

from controllers.profess_problem import (V_SCALE, CycleInputs, PreparedInputs, ProfessProblem, ProfessResult,
                                         first_energy_bounds, prepare)


class PyomoProfess:
    """The same problem in pyomo, in the original PROFESS variables (separate import and export).

    ``persistent=True``: the model is built once; each cycle sets the mutable Params and calls
    ``update_parameters`` on pyomo's persistent HiGHS interface. ``persistent=False``: the model and the
    solver are rebuilt every cycle (what a straightforward pyomo user does; the benchmark's baseline).
    """

    def __init__(self, problem: ProfessProblem, *, persistent: bool = True) -> None:
        self.problem = problem
        self.persistent = persistent
        self._model = None
        self._solver = None
        if persistent:
            self._model = self._build()
            self._solver = self._new_solver()
            self._solver.set_instance(self._model)

    def _new_solver(self):
        from pyomo.contrib.solver.solvers.highs import Highs

        s = Highs()
        s.config.load_solutions = False
        s.config.raise_exception_on_nonoptimal_result = False
        s.config.solver_options["threads"] = 1
        return s

    def _build(self):
        import pyomo.environ as pe

        p, b, w = self.problem, self.problem.battery, self.problem.weights
        n, h, k = p.horizon_steps, p.h, p.kappa
        ec, ed = b.eta_charge, b.eta_discharge
        m = pe.ConcreteModel()
        m.T = pe.RangeSet(0, n - 1)
        m.TE = pe.RangeSet(0, n)
        mut = dict(mutable=True, initialize=0.0)
        m.P_Load = pe.Param(m.T, **mut)
        m.pv_avail = pe.Param(m.T, **mut)
        m.ci = pe.Param(m.T, **mut)
        m.ce = pe.Param(m.T, **mut)
        m.sched = pe.Param(m.T, **mut)
        m.known = pe.Param(m.T, **mut)  # 1 where the schedule is known
        m.vbase = pe.Param(m.T, mutable=True, initialize=1.0)
        m.e0 = pe.Param(**mut)
        m.pc_max = pe.Param(m.T, mutable=True, initialize=b.p_charge_max_w / 1e3)
        m.pd_max = pe.Param(m.T, mutable=True, initialize=b.p_discharge_max_w / 1e3)
        m.e1_lo = pe.Param(mutable=True, initialize=b.soc_min * b.capacity_wh / 1e3)
        m.e1_hi = pe.Param(mutable=True, initialize=b.soc_max * b.capacity_wh / 1e3)
        emin, emax = b.soc_min * b.capacity_wh / 1e3, b.soc_max * b.capacity_wh / 1e3
        imp = b.contract_import_w / 1e3 if b.contract_import_w else None
        exp = b.contract_export_w / 1e3 if b.contract_export_w else None

        m.P_ch = pe.Var(m.T, bounds=(0, b.p_charge_max_w / 1e3))
        m.P_dis = pe.Var(m.T, bounds=(0, b.p_discharge_max_w / 1e3))
        m.P_PV_Output = pe.Var(m.T, within=pe.NonNegativeReals)
        m.P_imp = pe.Var(m.T, bounds=(0, imp))
        m.P_exp = pe.Var(m.T, bounds=(0, exp))
        m.E = pe.Var(pe.RangeSet(1, n), bounds=lambda m, t: (None, None) if t == 1 else (emin, emax))

        def energy(t):
            return m.e0 if t == 0 else m.E[t]

        m.pv_max = pe.Constraint(m.T, rule=lambda m, t: m.P_PV_Output[t] <= m.pv_avail[t])
        m.balance = pe.Constraint(
            m.T, rule=lambda m, t: m.P_Load[t] + m.P_ch[t] - m.P_dis[t] - m.P_PV_Output[t] == m.P_imp[t] - m.P_exp[t])
        m.soc = pe.Constraint(
            m.T, rule=lambda m, t: m.E[t + 1] == k * (energy(t) + ec * h * m.P_ch[t] - h * m.P_dis[t] / ed))
        m.e1_window = pe.Constraint(rule=lambda m: pe.inequality(m.e1_lo, m.E[1], m.e1_hi))
        m.ch_max = pe.Constraint(m.T, rule=lambda m, t: m.P_ch[t] <= m.pc_max[t])
        m.dis_max = pe.Constraint(m.T, rule=lambda m, t: m.P_dis[t] <= m.pd_max[t])
        if b.inverter_ac_max_w is not None:
            ac = b.inverter_ac_max_w / 1e3
            m.ac = pe.Constraint(
                m.T, rule=lambda m, t: pe.inequality(-ac, m.P_ch[t] - m.P_dis[t] - m.P_PV_Output[t], ac))

        grid = {t: m.P_imp[t] - m.P_exp[t] for t in m.T}
        s = p.voltage_sensitivity_pu_per_kw
        terms = 0
        if w.grid_exchange:
            terms += w.grid_exchange * h * sum(grid[t] ** 2 for t in m.T)
        if w.waste:
            terms += w.waste * h * sum(
                m.pv_avail[t] - m.P_PV_Output[t] + (1 - ec) * m.P_ch[t] + (1 / ed - 1) * m.P_dis[t] for t in m.T)
        if w.grid_abs:
            terms += w.grid_abs * h * sum(m.P_imp[t] + m.P_exp[t] for t in m.T)
        if w.bill:
            terms += w.bill * h * sum(m.ci[t] * m.P_imp[t] - m.ce[t] * m.P_exp[t] for t in m.T)
        if w.schedule:
            terms += w.schedule * h * sum(m.known[t] * (m.P_ch[t] - m.P_dis[t] - m.sched[t]) ** 2 for t in m.T)
        if w.voltage:
            terms += w.voltage * h * sum(((m.vbase[t] + s * grid[t] - 1) / V_SCALE) ** 2 for t in m.T)
        terms += p.throughput_cost * h * sum(m.P_ch[t] + m.P_dis[t] for t in m.T)
        terms -= p.terminal_value_eur_per_kwh * m.E[n]
        m.obj = pe.Objective(expr=terms, sense=pe.minimize)
        return m

    def _set(self, m, d: PreparedInputs) -> None:
        n = self.problem.horizon_steps
        known = np.isfinite(d.sched)
        sched = np.nan_to_num(d.sched)
        for t in range(n):
            m.P_Load[t] = float(d.load[t])
            m.pv_avail[t] = float(d.pv[t])
            m.ci[t] = float(d.ci[t])
            m.ce[t] = float(d.ce[t])
            m.sched[t] = float(sched[t])
            m.known[t] = float(known[t])
            m.vbase[t] = float(d.vbase[t])
            m.pc_max[t] = float(d.pc_max[t])
            m.pd_max[t] = float(d.pd_max[t])
        m.e0 = d.e0
        lo, hi = first_energy_bounds(self.problem, d.e0)
        m.e1_lo = lo
        m.e1_hi = hi

    def solve(self, inp: CycleInputs, t_s: int | None = None) -> ProfessResult:
        t0 = _time.perf_counter()
        d = prepare(self.problem, inp)
        if self.persistent:
            m, solver = self._model, self._solver
            assert solver is not None  # built in __init__ when persistent
            self._set(m, d)
            solver.update_parameters()
            res = solver.solve(m)
        else:
            m = self._build()
            self._set(m, d)
            solver = self._new_solver()
            res = solver.solve(m)
        solve_s = _time.perf_counter() - t0
        return self._result(m, res, d, solve_s)

    def _result(self, m, res, d: PreparedInputs, solve_s: float) -> ProfessResult:
        import pyomo.environ as pe
        from pyomo.contrib.solver.common.results import TerminationCondition

        p, n = self.problem, self.problem.horizon_steps
        if res.termination_condition == TerminationCondition.convergenceCriteriaSatisfied:
            res.solution_loader.load_vars()
        else:
            z = np.zeros(n)
            e = np.full(n + 1, d.e0 * 1e3)
            return ProfessResult(str(res.termination_condition), float("nan"), 0.0, z, z, d.load * 1e3, z, e,
                                 e / p.battery.capacity_wh, solve_s)
        pc = np.array([pe.value(m.P_ch[t]) for t in range(n)]) * 1e3
        pd = np.array([pe.value(m.P_dis[t]) for t in range(n)]) * 1e3
        pg = np.array([pe.value(m.P_imp[t]) - pe.value(m.P_exp[t]) for t in range(n)]) * 1e3
        pv = np.array([pe.value(m.P_PV_Output[t]) for t in range(n)]) * 1e3
        e = np.concatenate([[d.e0], [pe.value(m.E[t]) for t in range(1, n + 1)]]) * 1e3
        return ProfessResult("optimal", float(pe.value(m.obj)), float(pc[0] - pd[0]), pc, pd, pg, pv, e,
                             e / p.battery.capacity_wh, solve_s,
                             simultaneous_w=float(np.max(np.minimum(pc, pd))))
