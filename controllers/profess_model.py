"""PROFESS: the optimisation problem of one site (battery + PV + load + grid connection) over a horizon.

Two formulations of the *same* problem live here:

* :class:`HighsProfess` writes the LP/QP directly against ``highspy`` once and, each control cycle, only
  changes bounds, costs and the objective offset in place (vectorised), then re-solves from the previous
  basis (optionally shifted by the steps that have passed). This is the production path.
* :class:`PyomoProfess` states the problem as a pyomo ``ConcreteModel`` with mutable ``Param``\\ s, in the
  natural variables of the original PROFESS models (separate import and export), and solves it with
  pyomo's HiGHS interface (``pyomo.contrib.solver`` persistent ``highs``), either persistently
  (``update_parameters``) or rebuilt from scratch each cycle. It is the independent formulation that the
  tests compare objective values against, and the "naive" baseline of the benchmark.

Units inside the solvers are kW, kWh and hours (well scaled); the public API is in W, Wh and seconds.
Sign convention: ours (load arrow): battery power + = charging, grid power + = import.
The original PROFESS used ``P_ESS_Output`` + = discharging; see :func:`to_original_ess_power`.

Objective (minimised), h = step length in hours, P in kW, t = 0..N-1::

    J =  w_grid  * h * sum P_grid[t]^2                                   (min grid exchange, original)
       + w_waste * h * sum (PV_avail[t] - PV_used[t]                      (curtailed PV ...
                            + (1-eta_c) P_ch[t] + (1/eta_d - 1) P_dis[t]) (... + conversion losses)
       + w_abs   * h * sum |P_grid[t]|                                   (max self-production, original)
       + w_bill  * h * sum (c_imp[t] max(P_grid,0) - c_exp[t] max(-P_grid,0))       (energy bill, EUR)
       + w_sched * h * sum_{t: schedule known} (P_ch[t] - P_dis[t] - S[t])^2     (follow GESSCon)
       + w_volt  * h * sum ((v_base[t] + s * P_grid[t] - 1) / 0.01)^2    (PCC voltage in %, linear proxy)
       + (c_deg + c_tie) * h * sum (P_ch[t] + P_dis[t])                  (battery wear, EUR/kWh throughput;
                                                                          c_tie = 1e-4 picks one direction)
       - c_term  * E[N]                                                  (value of the stored energy, EUR/kWh)

subject to, for every step t::

    P_ch - P_dis - PV_used - P_grid = -Load                     (power balance at the PCC)
    E[t+1] = k (E[t] + eta_c h P_ch - h P_dis / eta_d)          (k = self-discharge over one step)
    E_min <= E[t+1] <= E_max,  0 <= P_ch <= P_ch_max,  0 <= P_dis <= P_dis_max
    0 <= PV_used <= PV_avail,  -export_limit <= P_grid <= import_limit
    -ac_max <= P_ch - P_dis - PV_used <= ac_max                 (hybrid inverter AC rating, optional)
    P_ch <= PV_avail                                            (when grid charging is not allowed)

Simultaneous charge and discharge are excluded without binaries: see docs/controllers/profess.md for the
argument (waste objective = curtailment + losses, so dissipating energy through the battery is never
cheaper than curtailing; any throughput cost makes it strictly dearer). Each result reports
``simultaneous_w`` (max over t of min(P_ch, P_dis)) so that the claim is checked on every solve.
"""

from __future__ import annotations

import time as _time
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from devices.battery.params import BatteryRatings, ContractLimits

# Voltage deviation is penalised in percent of nominal: ((v - 1) / V_SCALE)^2.
V_SCALE = 0.01

ObjectiveName = Literal["min_grid_exchange", "max_self_consumption", "max_self_production", "min_bill",
                        "follow_schedule", "voltage"]


class ObjectiveWeights(BaseModel):
    """Weights of the objective terms (see the module docstring for each term's unit)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    grid_exchange: float = Field(0.0, ge=0, description="kW^2 h of grid exchange (sum of P_grid^2)")
    waste: float = Field(0.0, ge=0, description="kWh of curtailed PV plus battery conversion losses")
    grid_abs: float = Field(0.0, ge=0, description="kWh of grid exchange (sum of |P_grid|)")
    bill: float = Field(0.0, ge=0, description="EUR of import cost minus export revenue")
    schedule: float = Field(0.0, ge=0, description="kW^2 h of deviation from the GESSCon schedule")
    voltage: float = Field(0.0, ge=0, description="%^2 h of PCC voltage deviation from nominal")


PRESETS: dict[str, ObjectiveWeights] = {
    "min_grid_exchange": ObjectiveWeights(grid_exchange=1.0),  # original "Minimize Grid Exchange" (ResidentialMinGrid)
    "max_self_consumption": ObjectiveWeights(waste=1.0),  # original "Maximize Self-Consumption" (+ losses, see doc)
    "max_self_production": ObjectiveWeights(grid_abs=1.0),  # original "Maximize Self-Production"
    "min_bill": ObjectiveWeights(bill=1.0),  # original "Minimize Power Bill", with an export price
    "follow_schedule": ObjectiveWeights(schedule=1.0, bill=1.0),  # original *GESSCon models: global + local target
    "voltage": ObjectiveWeights(voltage=1.0, grid_exchange=1e-3),  # original "Voltage Stabilization"
}


class SiteBattery(BatteryRatings, ContractLimits):
    """The site's battery and connection, as the optimiser sees them (W, Wh); parameter names are the shared ones
    of devices/battery/params.py."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    inverter_ac_max_w: float | None = Field(None, gt=0, description="hybrid inverter AC rating (battery + PV)")
    allow_grid_charging: bool = True


class ProfessProblem(BaseModel):
    """Static structure of one site's MPC problem: battery, horizon, objective weights and costs."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    battery: SiteBattery
    step_s: int = Field(900, gt=0)
    horizon_steps: int = Field(96, gt=0)
    weights: ObjectiveWeights = PRESETS["min_grid_exchange"]
    degradation_eur_per_kwh: float = Field(0.0, ge=0, description="cost per kWh of AC throughput (charge + discharge)")
    terminal_value_eur_per_kwh: float = Field(0.0, ge=0, description="value of each kWh stored at the horizon end")
    tie_break_eur_per_kwh: float = Field(1e-4, ge=0, description="tiny throughput cost: a unique battery direction")
    voltage_sensitivity_pu_per_kw: float = Field(0.0, description="dV/dP_grid at the PCC (negative: import lowers V)")

    @property
    def h(self) -> float:
        return self.step_s / 3600.0

    @property
    def throughput_cost(self) -> float:
        return self.degradation_eur_per_kwh + self.tie_break_eur_per_kwh

    @property
    def kappa(self) -> float:
        return 1.0 - self.battery.self_discharge_per_day * self.step_s / 86400.0


@dataclass
class CycleInputs:
    """What one control cycle knows (arrays of ``horizon_steps`` values, W / EUR per kWh / pu)."""

    load_w: np.ndarray
    pv_w: np.ndarray  # available PV (AC), >= 0
    e0_wh: float
    import_eur_per_kwh: np.ndarray | float = 0.0
    export_eur_per_kwh: np.ndarray | float = 0.0
    schedule_w: np.ndarray | None = None  # GESSCon set-points (+ = charge); NaN where unknown
    v_base_pu: np.ndarray | float = 1.0  # PCC voltage the site would see at zero exchange
    p_charge_avail_w: float | None = None  # what the battery reports it can do now (first step only)
    p_discharge_avail_w: float | None = None
    forbid_charge: np.ndarray | None = None  # steps where charging is not allowed (complementarity repair)
    forbid_discharge: np.ndarray | None = None


@dataclass
class ProfessResult:
    status: str
    objective: float
    p_batt_w: float  # setpoint for the next step, + = charging
    p_charge_w: np.ndarray
    p_discharge_w: np.ndarray
    p_grid_w: np.ndarray
    pv_used_w: np.ndarray
    e_wh: np.ndarray  # N + 1 values, e_wh[0] = initial
    soc: np.ndarray
    solve_s: float
    simultaneous_w: float = 0.0
    iterations: int = 0
    extra: dict = field(default_factory=dict)

    @property
    def p_batt_plan_w(self) -> np.ndarray:
        return self.p_charge_w - self.p_discharge_w


# --- sign conventions -----------------------------------------------------------------------------------

def to_original_ess_power(p_batt_w):
    """Ours (+ = charging) -> original PROFESS ``P_ESS_Output`` (+ = discharging)."""
    return -np.asarray(p_batt_w, dtype=float) if np.ndim(p_batt_w) else -float(p_batt_w)


def from_original_ess_power(p_ess_output_w):
    """Original PROFESS ``P_ESS_Output`` (+ = discharging) -> ours (+ = charging)."""
    return -np.asarray(p_ess_output_w, dtype=float) if np.ndim(p_ess_output_w) else -float(p_ess_output_w)


def to_original_grid_power(p_grid_w):
    """Original ``P_Grid_Output`` is + = import, like ours: identity (kept explicit for the record)."""
    return np.asarray(p_grid_w, dtype=float) if np.ndim(p_grid_w) else float(p_grid_w)


# --- shared input preparation ---------------------------------------------------------------------------

@dataclass
class _Prepared:
    load: np.ndarray  # kW
    pv: np.ndarray
    ci: np.ndarray  # EUR/kWh
    ce: np.ndarray
    sched: np.ndarray  # kW, NaN = unknown
    vbase: np.ndarray
    e0: float  # kWh
    pc_max: np.ndarray  # kW per step: rating, first-step availability, grid-charging rule, forbidden steps
    pd_max: np.ndarray


def _vec(x, n: int, name: str) -> np.ndarray:
    a = np.broadcast_to(np.asarray(x, dtype=float), (n,)) if np.ndim(x) == 0 else np.asarray(x, dtype=float)
    if a.shape != (n,):
        raise ValueError(f"{name}: expected {n} values, got {a.shape}")
    return a


def prepare(problem: ProfessProblem, inp: CycleInputs) -> _Prepared:
    n = problem.horizon_steps
    b = problem.battery
    load = _vec(inp.load_w, n, "load_w") / 1e3
    pv = np.maximum(_vec(inp.pv_w, n, "pv_w"), 0.0) / 1e3
    ci = _vec(inp.import_eur_per_kwh, n, "import_eur_per_kwh")
    ce = _vec(inp.export_eur_per_kwh, n, "export_eur_per_kwh")
    # Net metering per step is convex only if export pays at most what import costs; a meter measures the
    # net, so paying more for export than import is not a physical arbitrage: cap it (documented).
    ce = np.minimum(ce, ci)
    sched = (np.full(n, np.nan) if inp.schedule_w is None else _vec(inp.schedule_w, n, "schedule_w") / 1e3)
    vbase = _vec(inp.v_base_pu, n, "v_base_pu")
    for name, arr in (("load_w", load), ("pv_w", pv), ("prices", ci), ("prices", ce), ("v_base_pu", vbase)):
        if not np.all(np.isfinite(arr)):
            raise ValueError(f"{name} has non-finite values")
    pc0 = b.p_charge_max_w if inp.p_charge_avail_w is None else min(b.p_charge_max_w, max(inp.p_charge_avail_w, 0.0))
    pd0 = (b.p_discharge_max_w if inp.p_discharge_avail_w is None
           else min(b.p_discharge_max_w, max(inp.p_discharge_avail_w, 0.0)))
    pc_max = np.full(n, b.p_charge_max_w / 1e3)
    pd_max = np.full(n, b.p_discharge_max_w / 1e3)
    pc_max[0], pd_max[0] = pc0 / 1e3, pd0 / 1e3
    if not b.allow_grid_charging:
        pc_max = np.minimum(pc_max, pv)
    if inp.forbid_charge is not None:
        pc_max = np.where(np.asarray(inp.forbid_charge, dtype=bool), 0.0, pc_max)
    if inp.forbid_discharge is not None:
        pd_max = np.where(np.asarray(inp.forbid_discharge, dtype=bool), 0.0, pd_max)
    return _Prepared(load, pv, ci, ce, sched, vbase, float(inp.e0_wh) / 1e3, pc_max, pd_max)


def linear_costs(problem: ProfessProblem, d: _Prepared) -> tuple[np.ndarray, np.ndarray, float]:
    """Per-cycle objective coefficients of P_grid and of its import part, and the objective offset."""
    w, h = problem.weights, problem.h
    cost_pg = h * (w.bill * d.ce - w.grid_abs)
    cost_gi = h * (w.bill * (d.ci - d.ce) + 2 * w.grid_abs)
    offset = h * w.waste * float(np.sum(d.pv))
    if w.voltage > 0:
        s = problem.voltage_sensitivity_pu_per_kw
        a = d.vbase - 1.0
        cost_pg = cost_pg + h * w.voltage * 2 * a * s / V_SCALE**2
        offset += h * w.voltage * float(np.sum(a**2)) / V_SCALE**2
    return np.asarray(cost_pg, dtype=float), np.asarray(cost_gi, dtype=float), offset


def _e1_bounds(problem: ProfessProblem, e0: float) -> tuple[float, float]:
    """The first planned energy may lie outside the window if the battery starts outside it."""
    b = problem.battery
    emin, emax = b.soc_min * b.capacity_wh / 1e3, b.soc_max * b.capacity_wh / 1e3
    k = problem.kappa
    return min(emin, k * e0), max(emax, k * e0)


# --- the direct highspy formulation ---------------------------------------------------------------------

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
    def update(self, inp: CycleInputs) -> _Prepared:
        p, w, n, h = self.problem, self.problem.weights, self.n, self.problem.h
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
        hs.changeRowsBounds(ridx.size, ridx, np.concatenate(lo), np.concatenate(hi))
        # Column bounds: PV availability, first-step battery availability, first energy, grid charging.
        col_hi = self._col_hi0.copy()
        col_lo = self._col_lo0.copy()
        col_hi[c["pv"]] = d.pv
        col_hi[c["pc"]] = d.pc_max
        col_hi[c["pd"]] = d.pd_max
        col_lo[c["e"][0]], col_hi[c["e"][0]] = _e1_bounds(p, d.e0)
        cidx = np.concatenate([c["pv"], c["pc"], c["pd"], c["e"][:1]]).astype(np.int32)
        hs.changeColsBounds(cidx.size, cidx, col_lo[cidx], col_hi[cidx])
        # Costs: prices and the voltage term are linear in pg / gi.
        cost_pg, cost_gi, offset = linear_costs(p, d)
        kidx = [c["pg"]]
        kval = [cost_pg]
        if self.has_gi:
            kidx.append(c["gi"])
            kval.append(cost_gi)
        kidx = np.concatenate(kidx).astype(np.int32)
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

    def _result(self, d: _Prepared, status, solve_s: float) -> ProfessResult:
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


# --- the independent pyomo formulation ------------------------------------------------------------------

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
            m.ac = pe.Constraint(m.T, rule=lambda m, t: pe.inequality(-ac, m.P_ch[t] - m.P_dis[t] - m.P_PV_Output[t], ac))

        grid = {t: m.P_imp[t] - m.P_exp[t] for t in m.T}
        s = p.voltage_sensitivity_pu_per_kw
        terms = 0
        if w.grid_exchange:
            terms += w.grid_exchange * h * sum(grid[t] ** 2 for t in m.T)
        if w.waste:
            terms += w.waste * h * sum(m.pv_avail[t] - m.P_PV_Output[t] + (1 - ec) * m.P_ch[t] + (1 / ed - 1) * m.P_dis[t]
                                       for t in m.T)
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

    def _set(self, m, d: _Prepared) -> None:
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
        lo, hi = _e1_bounds(self.problem, d.e0)
        m.e1_lo = lo
        m.e1_hi = hi

    def solve(self, inp: CycleInputs, t_s: int | None = None) -> ProfessResult:
        t0 = _time.perf_counter()
        d = prepare(self.problem, inp)
        if self.persistent:
            m, solver = self._model, self._solver
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

    def _result(self, m, res, d: _Prepared, solve_s: float) -> ProfessResult:
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


# --- a structured interior-point solver for the quadratic objectives --------------------------------------

class BandedQpIpm:
    """Mehrotra predictor-corrector interior-point method for ``min 1/2 x'diag(q)x + c'x, A x = b, l <= x <= u``.

    Made for MPC problems whose rows and columns are ordered by time step: every column touches rows of
    at most two consecutive steps, so the normal matrix ``A H^-1 A'`` is banded (half-bandwidth ``band``)
    and each Newton step is one banded Cholesky factorisation (LAPACK ``pbtrf``), linear in the horizon.
    The sparsity pattern is analysed once; an iteration is a handful of vectorised numpy operations.
    Variables with ``l == u`` are held fixed. All bounds must be finite.

    HiGHS's active-set QP solver needs ~450 iterations and 15-40 ms on the 96-step problem and then
    reports primal infeasibilities of 1e-5 (model status "Solve error"); this method needs ~15-25
    iterations and is exact to the tolerance (duality gap <= ``tol`` relative).
    """

    def __init__(self, a, band: int, tol: float = 1e-10, feas_tol: float = 1e-9, max_iter: int = 150) -> None:
        from scipy import sparse

        a = sparse.csc_matrix(a)
        a.sum_duplicates()
        self.a = a
        self.at = a.T.tocsr()
        self.a_csr = a.tocsr()
        self.m, self.n = a.shape
        self.band = band
        self.tol = tol
        self.feas_tol = feas_tol
        self.max_iter = max_iter
        # For each column k, every pair (i <= j) of its rows contributes a[i,k] a[j,k] / H_k to M[i,j].
        # Lower banded storage: ab[i - j, j] = M[i, j] for i >= j.
        pos, col, coef = [], [], []
        for k in range(self.n):
            lo, hi = a.indptr[k], a.indptr[k + 1]
            rows = a.indices[lo:hi]
            vals = a.data[lo:hi]
            for p in range(len(rows)):
                for q in range(p, len(rows)):
                    i, j = max(rows[p], rows[q]), min(rows[p], rows[q])
                    if i - j > band:
                        raise ValueError(f"column {k} couples rows {j} and {i}: more than the band {band}")
                    pos.append((i - j) * self.m + j)
                    col.append(k)
                    coef.append(vals[p] * vals[q])
        self._pos = np.array(pos, dtype=np.int64)
        self._col = np.array(col, dtype=np.int64)
        self._coef = np.array(coef, dtype=float)
        self._size = (band + 1) * self.m

    def _normal(self, hinv: np.ndarray) -> np.ndarray:
        ab = np.bincount(self._pos, weights=self._coef * hinv[self._col], minlength=self._size)
        return ab.reshape(self.band + 1, self.m)

    def solve(self, q: np.ndarray, c: np.ndarray, b: np.ndarray, l: np.ndarray, u: np.ndarray):
        """Returns ``(x, y, status, iterations)``; status "optimal" or a reason."""
        from scipy.linalg.lapack import dpbtrf as pbtrf, dpbtrs as pbtrs

        a, at = self.a_csr, self.at
        n = self.n
        if not (np.all(np.isfinite(l)) and np.all(np.isfinite(u))):
            raise ValueError("all bounds must be finite")
        if np.any(l > u + 1e-12):
            return np.clip(0.5 * (l + u), l, u), np.zeros(self.m), "infeasible bounds", 0
        fixed = (u - l) <= 1e-9 * (1.0 + np.abs(l))
        u = np.where(fixed, l, u)
        free = (~fixed).astype(float)
        width = np.where(fixed, 1.0, u - l)
        # Start in the middle of each box (fixed variables at their value), unit duals. Fixed variables
        # keep dx = dz = 0 (their H^-1 is zero) and unit slacks, so no masking is needed in the loop.
        x = np.where(fixed, l, l + 0.5 * width)
        zl = free.copy()
        zu = free.copy()
        y = np.zeros(self.m)
        nfree = max(int(free.sum()), 1)
        bnorm = 1.0 + np.max(np.abs(b), initial=0.0)
        cnorm = 1.0 + np.max(np.abs(c), initial=0.0)
        status = "iteration limit"
        it = 0

        def max_step(v, dv):
            neg = dv < 0.0
            if not neg.any():
                return 1.0
            return min(1.0, float(np.min(v[neg] / -dv[neg])))

        for it in range(1, self.max_iter + 1):
            wl = np.where(fixed, 1.0, np.maximum(x - l, 1e-14))
            wu = np.where(fixed, 1.0, np.maximum(u - x, 1e-14))
            rp = b - a @ x
            rd = (c + q * x - (at @ y) - zl + zu) * free
            wz = wl * zl + wu * zu
            mu = float(wz.sum()) / (2 * nfree)
            obj = float(((0.5 * q * x + c) * x).sum())  # no BLAS dot: threaded BLAS stalls on busy machines
            prim = np.abs(rp).max(initial=0.0) / bnorm
            dual = np.abs(rd).max(initial=0.0) / cnorm
            gap = 2 * nfree * mu / (1.0 + abs(obj))
            if prim <= self.feas_tol and dual <= self.feas_tol and gap <= self.tol:
                status = "optimal"
                break
            if gap <= 1e-2 * self.tol and prim <= 1e4 * self.feas_tol and dual <= 1e4 * self.feas_tol:
                status = "optimal"  # stagnated at the accuracy the normal equations allow (< 0.1 W)
                break
            zlw, zuw = zl / wl, zu / wu
            hinv = free / (q + zlw + zuw + fixed + 1e-9)  # 1e-9: primal regularisation caps H^-1
            ab = self._normal(hinv)
            fac, info = pbtrf(ab, lower=1)
            if info != 0:
                # Near the end a row may lose all its free columns to their bounds: regularise slightly.
                ab[0] += 1e-12 * (1.0 + ab[0].max())
                fac, info = pbtrf(ab, lower=1)
                if info != 0:
                    status = "numerical failure"
                    break
            rd_neg = -rd

            def direction(rl, ru):
                hvec = (rd_neg + rl / wl - ru / wu) * free
                rhs = rp - a @ (hinv * hvec)
                dy = pbtrs(fac, rhs, lower=1)[0]
                dx = hinv * (hvec + at @ dy)
                # One step of iterative refinement keeps A dx = rp accurate when H^-1 spans many decades.
                err = rp - a @ dx
                if np.abs(err).max(initial=0.0) > 1e-12 * bnorm:
                    ddy = pbtrs(fac, err, lower=1)[0]
                    dy = dy + ddy
                    dx = dx + hinv * (at @ ddy)
                return dx, dy, rl / wl - zlw * dx, ru / wu + zuw * dx

            # Predictor (affine scaling), then the corrector with Mehrotra's centring.
            dx, dy, dzl, dzu = direction(-wl * zl * free, -wu * zu * free)
            ap = min(max_step(wl, dx), max_step(wu, -dx))
            ad = min(max_step(zl, dzl), max_step(zu, dzu))
            mu_aff = float((((wl + ap * dx) * (zl + ad * dzl) + (wu - ap * dx) * (zu + ad * dzu)) * free).sum()) / (2 * nfree)
            sigma = (mu_aff / mu) ** 3 if mu > 0 else 0.0
            rl = (sigma * mu - wl * zl - dx * dzl) * free
            ru = (sigma * mu - wu * zu + dx * dzu) * free
            dx, dy, dzl, dzu = direction(rl, ru)
            ap = 0.995 * min(max_step(wl, dx), max_step(wu, -dx))
            ad = 0.995 * min(max_step(zl, dzl), max_step(zu, dzu))
            x = x + ap * dx
            y = y + ad * dy
            zl = zl + ad * dzl
            zu = zu + ad * dzu
        return x, y, status, it


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
        cb = ["pc", "pd", "pv", "pg", "e"] + (["gi", "s_imp"] if self.has_gi else []) + (["s_ac"] if self.has_ac else []) \
            + (["d"] if self.has_d else [])
        rb = ["bal", "soc"] + (["imp"] if self.has_gi else []) + (["ac"] if self.has_ac else []) + (["sch"] if self.has_d else [])
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

    def arrays(self, d: _Prepared):
        """(q, c, b, l, u, offset) of one cycle."""
        p, b, w, n, h = self.problem, self.problem.battery, self.problem.weights, self.n, self.problem.h
        c, r = self.col, self.row
        nc = n * self.nc
        lo, hi = np.zeros(nc), np.zeros(nc)
        pcmax, pdmax = d.pc_max, d.pd_max
        hi[c["pc"]] = pcmax
        hi[c["pd"]] = pdmax
        hi[c["pv"]] = d.pv
        # Grid power implied by the balance, within the contract (a step whose contract cannot be met
        # at all keeps the implied range: a forecast above the limit must not make the problem infeasible).
        g_lo, g_hi = d.load - pdmax - d.pv, d.load + pcmax
        if self.has_ac:
            ac = b.inverter_ac_max_w / 1e3
            g_lo, g_hi = np.maximum(g_lo, d.load - ac), np.minimum(g_hi, d.load + ac)
        c_lo = -b.contract_export_w / 1e3 if b.contract_export_w else -np.inf
        c_hi = b.contract_import_w / 1e3 if b.contract_import_w else np.inf
        lo[c["pg"]] = np.where(np.maximum(g_lo, c_lo) <= np.minimum(g_hi, c_hi), np.maximum(g_lo, c_lo), g_lo)
        hi[c["pg"]] = np.where(np.maximum(g_lo, c_lo) <= np.minimum(g_hi, c_hi), np.minimum(g_hi, c_hi), g_hi)
        lo[c["e"]], hi[c["e"]] = self.e_min, self.e_max
        lo[c["e"][0]], hi[c["e"][0]] = _e1_bounds(p, d.e0)
        if self.has_gi:
            lo[c["gi"]] = np.maximum(lo[c["pg"]], 0.0)
            hi[c["gi"]] = np.maximum(hi[c["pg"]], 0.0)
            lo[c["s_imp"]] = 0.0
            hi[c["s_imp"]] = hi[c["gi"]] - lo[c["pg"]]
        if self.has_ac:
            lo[c["s_ac"]], hi[c["s_ac"]] = -b.inverter_ac_max_w / 1e3, b.inverter_ac_max_w / 1e3
        known = np.isfinite(d.sched)
        sched = np.where(known, d.sched, 0.0)
        if self.has_d:
            lo[c["d"]] = -pdmax - sched
            hi[c["d"]] = pcmax - sched
        rhs = np.zeros(n * self.nr)
        rhs[r["bal"]] = -d.load
        rhs[r["soc"][0]] = p.kappa * d.e0
        if self.has_d:
            rhs[r["sch"]] = -sched
        q = np.zeros(nc)
        q[c["pg"]] = 2 * self.q_pg
        if self.has_d:
            q[c["d"]] = 2 * h * w.schedule * known
        cost = self._cost0.copy()
        cost_pg, cost_gi, offset = linear_costs(p, d)
        cost[c["pg"]] = cost_pg
        if self.has_gi:
            cost[c["gi"]] = cost_gi
        return q, cost, rhs, lo, hi, offset

    def solve(self, inp: CycleInputs, t_s: int | None = None) -> ProfessResult:
        t0 = _time.perf_counter()
        p, c = self.problem, self.col
        d = prepare(p, inp)
        q, cost, rhs, lo, hi, offset = self.arrays(d)
        x, _, status, it = self.ipm.solve(q, cost, rhs, lo, hi)
        solve_s = _time.perf_counter() - t0
        if status != "optimal":
            z = np.zeros(self.n)
            e = np.full(self.n + 1, d.e0 * 1e3)
            return ProfessResult(status, float("nan"), 0.0, z, z, d.load * 1e3, z, e, e / p.battery.capacity_wh,
                                 solve_s, iterations=it)
        obj = float(0.5 * np.sum(q * x * x) + cost @ x + offset)
        pc_w = np.maximum(x[c["pc"]], 0.0) * 1e3
        pd_w = np.maximum(x[c["pd"]], 0.0) * 1e3
        e = np.concatenate([[d.e0], x[c["e"]]]) * 1e3
        return ProfessResult("optimal", obj, float(pc_w[0] - pd_w[0]), pc_w, pd_w, x[c["pg"]] * 1e3,
                             x[c["pv"]] * 1e3, e, e / p.battery.capacity_wh, solve_s,
                             simultaneous_w=float(np.max(np.minimum(pc_w, pd_w))), iterations=it)


def make_solver(problem: ProfessProblem, engine: Literal["auto", "highs", "ipm", "pyomo"] = "auto"):
    """The production solver for a problem: HiGHS (warm-started simplex) for LPs, the banded IPM for QPs."""
    w = problem.weights
    is_qp = w.grid_exchange > 0 or w.schedule > 0 or w.voltage > 0
    if engine == "auto":
        engine = "ipm" if is_qp else "highs"
    if engine == "highs":
        return HighsProfess(problem)
    if engine == "ipm":
        return IpmProfess(problem)
    if engine == "pyomo":
        return PyomoProfess(problem)
    raise ValueError(f"unknown engine {engine!r}")


class Profess:
    """PROFESS for one site: the production solver plus the complementarity guarantee.

    The LP/QP relaxation of "never charge and discharge at once" is exact for the objectives and costs
    discussed in docs/controllers/profess.md. Where an objective rewards dissipating energy (e.g. the
    voltage objective above nominal voltage, a schedule that asks to charge a full battery, negative
    prices), the solver may return steps with both P_ch and P_dis > 0. Those steps are then fixed to the
    direction of their net power (the other variable's bound set to zero) and the problem is re-solved,
    until no step has both (at most ``max_rounds`` times). The result is always complementary; in the
    exact cases no re-solve happens.
    """

    def __init__(self, problem: ProfessProblem, engine: Literal["auto", "highs", "ipm", "pyomo"] = "auto",
                 tol_w: float = 1.0, max_rounds: int = 6) -> None:
        self.problem = problem
        self.solver = make_solver(problem, engine)
        self.tol_w = tol_w
        self.max_rounds = max_rounds

    def solve(self, inp: CycleInputs, t_s: int | None = None) -> ProfessResult:
        t0 = _time.perf_counter()
        res = self.solver.solve(inp, t_s)
        rounds = 0
        n = self.problem.horizon_steps
        fc = np.zeros(n, bool) if inp.forbid_charge is None else np.asarray(inp.forbid_charge, bool).copy()
        fd = np.zeros(n, bool) if inp.forbid_discharge is None else np.asarray(inp.forbid_discharge, bool).copy()
        while res.status == "optimal" and res.simultaneous_w > self.tol_w and rounds < self.max_rounds:
            both = np.minimum(res.p_charge_w, res.p_discharge_w) > self.tol_w
            charging = res.p_charge_w >= res.p_discharge_w
            fd |= both & charging
            fc |= both & ~charging
            inp = CycleInputs(**{**inp.__dict__, "forbid_charge": fc, "forbid_discharge": fd})
            res = self.solver.solve(inp, t_s)
            rounds += 1
        res.extra["complementarity_rounds"] = rounds
        res.solve_s = _time.perf_counter() - t0
        return res
