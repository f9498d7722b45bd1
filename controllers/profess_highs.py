"""PROFESS as an LP/QP written once against ``highspy`` and updated in place each control cycle.

Each :meth:`HighsProfess.solve` changes only bounds, costs and the objective offset (vectorised) and
re-solves from the previous basis: the production path for the linear objectives.
"""

from __future__ import annotations

import time as _time

import numpy as np

from controllers.profess_problem import (V_SCALE, CycleInputs, PreparedInputs, ProfessProblem, ProfessResult,
                                         first_energy_bounds, linear_costs, prepare)


class HighsProfess:
    """The problem written once against highspy; each :meth:`solve` updates it in place and re-solves."""

    def __init__(self, problem: ProfessProblem, *, threads: int = 1) -> None:
        import highspy
        from scipy import sparse

        self.problem = problem
        self._hs = highspy
        p, b, w = problem, problem.battery, problem.weights
        n, h, k = p.horizon_steps, p.h, p.kappa
        self.n = n
        inf = highspy.kHighsInf
        self.inf = inf
        ec, ed = b.eta_charge, b.eta_discharge
        self.e_min, self.e_max = b.soc_min * b.capacity_wh / 1e3, b.soc_max * b.capacity_wh / 1e3

        # Column blocks of n each.
        blocks = ["pc", "pd", "pv", "pg", "e"]
        self.has_gi = w.bill > 0 or w.grid_abs > 0
        self.has_d = w.schedule > 0
        if self.has_gi:
            blocks.append("gi")
        if self.has_d:
            blocks.append("d")
        self.col = {name: np.arange(i * n, (i + 1) * n) for i, name in enumerate(blocks)}
        ncol = n * len(blocks)
        t = np.arange(n)

        rows, cols, vals = [], [], []
        row_lo, row_hi = [], []
        self.row: dict[str, np.ndarray] = {}
        nrow = 0

        def add_block(name: str, entries: list[tuple[np.ndarray, np.ndarray, np.ndarray]], lo, hi) -> None:
            nonlocal nrow
            r0 = nrow
            for rr, cc, vv in entries:
                rows.append(rr + r0)
                cols.append(cc)
                vals.append(np.broadcast_to(vv, rr.shape).astype(float))
            self.row[name] = np.arange(r0, r0 + n)
            row_lo.append(np.broadcast_to(lo, (n,)).astype(float))
            row_hi.append(np.broadcast_to(hi, (n,)).astype(float))
            nrow += n

        c = self.col
        one = np.ones(n)
        # Balance: pc - pd - pv - pg = -load (rhs set per cycle).
        add_block("bal", [(t, c["pc"], one), (t, c["pd"], -one), (t, c["pv"], -one), (t, c["pg"], -one)], 0.0, 0.0)
        # SoC: e[t] - k e[t-1] - k ec h pc[t] + k h/ed pd[t] = 0 (t = 0 row carries k e0 on its rhs).
        soc_entries = [(t, c["e"], one), (t, c["pc"], -k * ec * h * one), (t, c["pd"], (k * h / ed) * one)]
        if n > 1:
            soc_entries.append((t[1:], c["e"][:-1], -k * np.ones(n - 1)))
        add_block("soc", soc_entries, 0.0, 0.0)
        if self.has_gi:  # gi >= pg (import part)
            add_block("imp", [(t, c["gi"], one), (t, c["pg"], -one)], 0.0, inf)
        if b.inverter_ac_max_w is not None:
            ac = b.inverter_ac_max_w / 1e3
            add_block("ac", [(t, c["pc"], one), (t, c["pd"], -one), (t, c["pv"], -one)], -ac, ac)
        if self.has_d:  # d - pc + pd = -sched (free row where the schedule is unknown)
            add_block("sch", [(t, c["d"], one), (t, c["pc"], -one), (t, c["pd"], one)], -inf, inf)

        r = np.concatenate(rows)
        cc = np.concatenate(cols)
        v = np.concatenate(vals)
        a = sparse.csc_matrix((v, (r, cc)), shape=(nrow, ncol))
        a.sort_indices()

        col_lo = np.zeros(ncol)
        col_hi = np.full(ncol, inf)
        col_hi[c["pc"]] = b.p_charge_max_w / 1e3
        col_hi[c["pd"]] = b.p_discharge_max_w / 1e3
        col_lo[c["pg"]] = -(b.contract_export_w / 1e3 if b.contract_export_w else inf)
        col_hi[c["pg"]] = b.contract_import_w / 1e3 if b.contract_import_w else inf
        col_lo[c["e"]] = self.e_min
        col_hi[c["e"]] = self.e_max
        if self.has_d:
            col_lo[c["d"]] = -inf
        self._col_lo0, self._col_hi0 = col_lo.copy(), col_hi.copy()

        cost = np.zeros(ncol)
        cost[c["pc"]] = h * (p.throughput_cost + w.waste * (1 - ec))
        cost[c["pd"]] = h * (p.throughput_cost + w.waste * (1 / ed - 1))
        cost[c["pv"]] = -h * w.waste
        cost[c["e"][-1]] -= p.terminal_value_eur_per_kwh
        self._cost0 = cost

        lp = highspy.HighsLp()
        lp.num_col_ = ncol
        lp.num_row_ = nrow
        lp.col_cost_ = cost
        lp.col_lower_ = col_lo
        lp.col_upper_ = col_hi
        lp.row_lower_ = np.concatenate(row_lo)
        lp.row_upper_ = np.concatenate(row_hi)
        lp.a_matrix_.format_ = highspy.MatrixFormat.kColwise
        lp.a_matrix_.start_ = a.indptr.astype(np.int32)
        lp.a_matrix_.index_ = a.indices.astype(np.int32)
        lp.a_matrix_.value_ = a.data
        lp.a_matrix_.num_col_ = ncol
        lp.a_matrix_.num_row_ = nrow

        hs = highspy.Highs()
        hs.setOptionValue("output_flag", False)
        hs.setOptionValue("threads", threads)
        hs.passModel(lp)
        # Hessian (objective 1/2 x'Qx): pg and d carry diagonal terms.
        self.q_pg = h * (w.grid_exchange + w.voltage * (p.voltage_sensitivity_pu_per_kw / V_SCALE) ** 2)
        self.is_qp = self.q_pg > 0 or self.has_d
        if self.is_qp:
            diag = np.zeros(ncol)
            diag[c["pg"]] = 2 * self.q_pg
            if self.has_d:
                diag[c["d"]] = 2 * h * w.schedule
            nz = np.flatnonzero(diag)
            hess = highspy.HighsHessian()
            hess.dim_ = ncol
            hess.format_ = highspy.HessianFormat.kTriangular
            start = np.searchsorted(nz, np.arange(ncol + 1)).astype(np.int32)
            hess.start_ = start
            hess.index_ = nz.astype(np.int32)
            hess.value_ = diag[nz]
            hs.passHessian(hess)
        else:
            hs.setOptionValue("solver", "simplex")
            hs.setOptionValue("presolve", "off")  # re-solves start from the previous basis
        self.highs = hs
        self.ncol, self.nrow = ncol, nrow
        self._solved_once = False
        self._last_t: int | None = None

    # -- per cycle ------------------------------------------------------------------------------------------
    def update(self, inp: CycleInputs) -> PreparedInputs:
        p = self.problem
        c, hs = self.col, self.highs
        d = prepare(p, inp)
        inf = self.inf
        # Row bounds: balance and SoC rhs (and the schedule rows).
        idx = [self.row["bal"], self.row["soc"][:1]]
        lo = [-d.load, np.array([p.kappa * d.e0])]
        hi = [-d.load, np.array([p.kappa * d.e0])]
        if self.has_d:
            known = np.isfinite(d.sched)
            idx.append(self.row["sch"])
            lo.append(np.where(known, -np.nan_to_num(d.sched), -inf))
            hi.append(np.where(known, -np.nan_to_num(d.sched), inf))
        ridx = np.concatenate(idx).astype(np.int32)
        hs.changeRowsBounds(ridx.size, ridx, np.concatenate(lo), np.concatenate(hi))  # type: ignore[attr-defined]
        # Column bounds: PV availability, first-step battery availability, first energy, grid charging.
        col_hi = self._col_hi0.copy()
        col_lo = self._col_lo0.copy()
        col_hi[c["pv"]] = d.pv
        col_hi[c["pc"]] = d.pc_max
        col_hi[c["pd"]] = d.pd_max
        col_lo[c["e"][0]], col_hi[c["e"][0]] = first_energy_bounds(p, d.e0)
        cidx = np.concatenate([c["pv"], c["pc"], c["pd"], c["e"][:1]]).astype(np.int32)
        hs.changeColsBounds(cidx.size, cidx, col_lo[cidx], col_hi[cidx])
        # Costs: prices and the voltage term are linear in pg / gi.
        cost_pg, cost_gi, offset = linear_costs(p, d)
        kcols = [c["pg"]]
        kval = [cost_pg]
        if self.has_gi:
            kcols.append(c["gi"])
            kval.append(cost_gi)
        kidx = np.concatenate(kcols).astype(np.int32)
        hs.changeColsCost(kidx.size, kidx, np.concatenate(kval))
        hs.changeObjectiveOffset(offset)
        return d

    def solve(self, inp: CycleInputs, t_s: int | None = None) -> ProfessResult:
        t0 = _time.perf_counter()
        d = self.update(inp)
        hs = self.highs
        hs.run()
        status = hs.getModelStatus()
        if status != self._hs.HighsModelStatus.kOptimal:
            # A stale basis can stall; retry once from scratch before giving up.
            hs.clearSolver()
            hs.run()
            status = hs.getModelStatus()
        self._solved_once = True
        self._last_t = t_s
        solve_s = _time.perf_counter() - t0
        return self._result(d, status, solve_s)

    def _result(self, d: PreparedInputs, status, solve_s: float) -> ProfessResult:
        hs, c, p = self.highs, self.col, self.problem
        ok = status == self._hs.HighsModelStatus.kOptimal
        if not ok:
            n = self.n
            z = np.zeros(n)
            e = np.full(n + 1, d.e0 * 1e3)
            return ProfessResult(self.highs.modelStatusToString(status), float("nan"), 0.0, z, z, d.load * 1e3, z, e,
                                 e / p.battery.capacity_wh, solve_s)
        x = np.asarray(hs.getSolution().col_value)
        pc, pd = x[c["pc"]], x[c["pd"]]
        e = np.concatenate([[d.e0], x[c["e"]]]) * 1e3
        info = hs.getInfo()
        pc_w = np.maximum(pc, 0.0) * 1e3
        pd_w = np.maximum(pd, 0.0) * 1e3
        return ProfessResult(
            status="optimal",
            objective=float(hs.getInfo().objective_function_value),
            p_batt_w=float(pc_w[0] - pd_w[0]),
            p_charge_w=pc_w,
            p_discharge_w=pd_w,
            p_grid_w=x[c["pg"]] * 1e3,
            pv_used_w=x[c["pv"]] * 1e3,
            e_wh=e,
            soc=e / p.battery.capacity_wh,
            solve_s=solve_s,
            simultaneous_w=float(np.max(np.minimum(pc_w, pd_w))) if pc.size else 0.0,
            iterations=int(info.simplex_iteration_count + info.qp_iteration_count),
        )
