"""PROFESS mapped onto :class:`controllers.banded_qp_ipm.BandedQpIpm`: the production path for the quadratic
objectives (grid exchange, schedule following, voltage)."""

from __future__ import annotations

import time as _time
from collections.abc import Sequence

import numpy as np

from controllers.banded_qp_ipm import BandedQpIpm
from controllers.profess_problem import (V_SCALE, CycleInputs, PreparedInputs, ProfessProblem, ProfessResult,
                                         first_energy_bounds, linear_costs, prepare_many)


class IpmProfess:
    """The PROFESS problem for :class:`BandedQpIpm`: columns and rows ordered by time step.

    Per step: columns pc, pd, pv, pg, e, [gi, s_imp], [s_ac], [d]; rows bal, soc, [imp], [ac], [sch]
    (inequality rows become equalities with a bounded slack). Every bound is finite: the grid power is
    bounded by what the balance implies at each step (intersected with the contract limits).
    """

    def __init__(self, problem: ProfessProblem, tol: float = 1e-10) -> None:
        from scipy import sparse

        self.problem = problem
        p, b, w = problem, problem.battery, problem.weights
        n, h, k = p.horizon_steps, p.h, p.kappa
        self.n = n
        ec, ed = b.eta_charge, b.eta_discharge
        self.has_gi = w.bill > 0 or w.grid_abs > 0
        self.has_ac = b.inverter_ac_max_w is not None
        self.has_d = w.schedule > 0
        cb = ["pc", "pd", "pv", "pg", "e"] + (["gi", "s_imp"] if self.has_gi else []) \
            + (["s_ac"] if self.has_ac else []) + (["d"] if self.has_d else [])
        rb = ["bal", "soc"] + (["imp"] if self.has_gi else []) + (["ac"] if self.has_ac else []) \
            + (["sch"] if self.has_d else [])
        self.nc, self.nr = len(cb), len(rb)
        t = np.arange(n)
        self.col = {name: t * self.nc + i for i, name in enumerate(cb)}
        self.row = {name: t * self.nr + i for i, name in enumerate(rb)}
        c, r = self.col, self.row
        ent = []

        def put(rows, cols, val):
            ent.append((rows, cols, np.broadcast_to(np.asarray(val, dtype=float), rows.shape)))

        put(r["bal"], c["pc"], 1.0)
        put(r["bal"], c["pd"], -1.0)
        put(r["bal"], c["pv"], -1.0)
        put(r["bal"], c["pg"], -1.0)
        put(r["soc"], c["e"], 1.0)
        put(r["soc"], c["pc"], -k * ec * h)
        put(r["soc"], c["pd"], k * h / ed)
        if n > 1:
            put(r["soc"][1:], c["e"][:-1], -k)
        if self.has_gi:
            put(r["imp"], c["gi"], 1.0)
            put(r["imp"], c["pg"], -1.0)
            put(r["imp"], c["s_imp"], -1.0)
        if self.has_ac:
            put(r["ac"], c["pc"], 1.0)
            put(r["ac"], c["pd"], -1.0)
            put(r["ac"], c["pv"], -1.0)
            put(r["ac"], c["s_ac"], -1.0)
        if self.has_d:
            put(r["sch"], c["d"], 1.0)
            put(r["sch"], c["pc"], -1.0)
            put(r["sch"], c["pd"], 1.0)
        rows = np.concatenate([e[0] for e in ent])
        cols = np.concatenate([e[1] for e in ent])
        vals = np.concatenate([e[2] for e in ent])
        a = sparse.csc_matrix((vals, (rows, cols)), shape=(n * self.nr, n * self.nc))
        self.ipm = BandedQpIpm(a, band=self.nr, tol=tol)
        self.e_min, self.e_max = b.soc_min * b.capacity_wh / 1e3, b.soc_max * b.capacity_wh / 1e3
        self.q_pg = h * (w.grid_exchange + w.voltage * (p.voltage_sensitivity_pu_per_kw / V_SCALE) ** 2)
        cost = np.zeros(n * self.nc)
        cost[c["pc"]] = h * (p.throughput_cost + w.waste * (1 - ec))
        cost[c["pd"]] = h * (p.throughput_cost + w.waste * (1 / ed - 1))
        cost[c["pv"]] = -h * w.waste
        cost[c["e"][-1]] -= p.terminal_value_eur_per_kwh
        self._cost0 = cost

    def arrays(self, d: PreparedInputs):
        """(q, c, b, l, u, offset) of one cycle; of many sites' cycles (:func:`prepare_many`): one row per site."""
        p, b, w, n, h = self.problem, self.problem.battery, self.problem.weights, self.n, self.problem.h
        c, r = self.col, self.row
        sites = d.load.shape[:-1]  # () for one site, (count,) for many
        lo, hi = np.zeros((*sites, n * self.nc)), np.zeros((*sites, n * self.nc))
        pcmax, pdmax = d.pc_max, d.pd_max
        hi[..., c["pc"]] = pcmax
        hi[..., c["pd"]] = pdmax
        hi[..., c["pv"]] = d.pv
        # Grid power implied by the balance, within the contract (a step whose contract cannot be met
        # at all keeps the implied range: a forecast above the limit must not make the problem infeasible).
        g_lo, g_hi = d.load - pdmax - d.pv, d.load + pcmax
        ac_max_w = b.inverter_ac_max_w  # not None exactly when self.has_ac
        if ac_max_w is not None:
            ac = ac_max_w / 1e3
            g_lo, g_hi = np.maximum(g_lo, d.load - ac), np.minimum(g_hi, d.load + ac)
        c_lo = -b.contract_export_w / 1e3 if b.contract_export_w else -np.inf
        c_hi = b.contract_import_w / 1e3 if b.contract_import_w else np.inf
        lo[..., c["pg"]] = np.where(np.maximum(g_lo, c_lo) <= np.minimum(g_hi, c_hi), np.maximum(g_lo, c_lo), g_lo)
        hi[..., c["pg"]] = np.where(np.maximum(g_lo, c_lo) <= np.minimum(g_hi, c_hi), np.minimum(g_hi, c_hi), g_hi)
        lo[..., c["e"]], hi[..., c["e"]] = self.e_min, self.e_max
        lo[..., c["e"][0]], hi[..., c["e"][0]] = first_energy_bounds(p, d.e0)
        if self.has_gi:
            lo[..., c["gi"]] = np.maximum(lo[..., c["pg"]], 0.0)
            hi[..., c["gi"]] = np.maximum(hi[..., c["pg"]], 0.0)
            lo[..., c["s_imp"]] = 0.0
            hi[..., c["s_imp"]] = hi[..., c["gi"]] - lo[..., c["pg"]]
        if ac_max_w is not None:
            lo[..., c["s_ac"]], hi[..., c["s_ac"]] = -ac_max_w / 1e3, ac_max_w / 1e3
        known = np.isfinite(d.sched)
        sched = np.where(known, d.sched, 0.0)
        if self.has_d:
            lo[..., c["d"]] = -pdmax - sched
            hi[..., c["d"]] = pcmax - sched
        rhs = np.zeros((*sites, n * self.nr))
        rhs[..., r["bal"]] = -d.load
        rhs[..., r["soc"][0]] = p.kappa * d.e0
        if self.has_d:
            rhs[..., r["sch"]] = -sched
        q = np.zeros((*sites, n * self.nc))
        q[..., c["pg"]] = 2 * self.q_pg
        if self.has_d:
            q[..., c["d"]] = 2 * h * w.schedule * known
        cost = np.repeat(self._cost0[None], int(np.prod(sites)), axis=0).reshape(q.shape)
        cost_pg, cost_gi, offset = linear_costs(p, d)
        cost[..., c["pg"]] = cost_pg
        if self.has_gi:
            cost[..., c["gi"]] = cost_gi
        return q, cost, rhs, lo, hi, offset

    def solve(self, inp: CycleInputs, t_s: int | None = None) -> ProfessResult:
        return self.solve_many([inp], t_s)[0]

    def solve_many(self, inputs: Sequence[CycleInputs], t_s: int | None = None) -> list[ProfessResult]:
        """:meth:`solve` for many sites with this problem: the inputs stacked, one compiled call for all (each site's
        ``solve_s`` is its share of the call)."""
        t0 = _time.perf_counter()
        p, c, n = self.problem, self.col, self.n
        d = prepare_many(p, inputs)
        q, cost, rhs, lo, hi, offset = self.arrays(d)
        x, _, statuses, its = self.ipm.solve_many(q, cost, rhs, lo, hi)
        obj = 0.5 * np.sum(q * x * x, axis=1) + np.sum(cost * x, axis=1) + offset
        pc_w = np.maximum(x[:, c["pc"]], 0.0) * 1e3
        pd_w = np.maximum(x[:, c["pd"]], 0.0) * 1e3
        e = np.concatenate([np.asarray(d.e0)[:, None], x[:, c["e"]]], axis=1) * 1e3
        soc = e / p.battery.capacity_wh
        p_grid_w, pv_w = x[:, c["pg"]] * 1e3, x[:, c["pv"]] * 1e3
        simultaneous = np.max(np.minimum(pc_w, pd_w), axis=1)
        solve_s = (_time.perf_counter() - t0) / len(inputs)
        out = []
        for i, status in enumerate(statuses):
            it = int(its[i])
            if status != "optimal":
                z = np.zeros(n)
                e_i = np.full(n + 1, d.e0[i] * 1e3)  # type: ignore[index]
                out.append(ProfessResult(status, float("nan"), 0.0, z, z, d.load[i] * 1e3, z, e_i,
                                         e_i / p.battery.capacity_wh, solve_s, iterations=it))
            else:
                out.append(ProfessResult("optimal", float(obj[i]), float(pc_w[i, 0] - pd_w[i, 0]), pc_w[i], pd_w[i],
                                         p_grid_w[i], pv_w[i], e[i], soc[i], solve_s,
                                         simultaneous_w=float(simultaneous[i]), iterations=it))
        return out
