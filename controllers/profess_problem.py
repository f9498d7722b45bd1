"""PROFESS's optimisation problem for one site (battery + PV + load + grid connection) over a horizon:
its parameters, one cycle's inputs and result, and the mapping of those inputs to solver units.

Every formulation (:mod:`controllers.profess_highs`, :mod:`controllers.profess_ipm`,
:mod:`controllers.profess_pyomo`) solves exactly this problem.

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

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

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
class PreparedInputs:
    """One cycle's inputs in solver units; for many sites at once (:func:`prepare_many`) every array has a leading
    site axis and ``e0`` is an array."""

    load: np.ndarray  # kW
    pv: np.ndarray
    ci: np.ndarray  # EUR/kWh
    ce: np.ndarray
    sched: np.ndarray  # kW, NaN = unknown
    vbase: np.ndarray
    e0: float | np.ndarray  # kWh
    pc_max: np.ndarray  # kW per step: rating, first-step availability, grid-charging rule, forbidden steps
    pd_max: np.ndarray


def _vec(x, n: int, name: str) -> np.ndarray:
    a = np.broadcast_to(np.asarray(x, dtype=float), (n,)) if np.ndim(x) == 0 else np.asarray(x, dtype=float)
    if a.shape != (n,):
        raise ValueError(f"{name}: expected {n} values, got {a.shape}")
    return a


def prepare(problem: ProfessProblem, inp: CycleInputs) -> PreparedInputs:
    """One site's cycle inputs in solver units (:func:`prepare_many` of one site)."""
    d = prepare_many(problem, [inp])
    return PreparedInputs(d.load[0], d.pv[0], d.ci[0], d.ce[0], d.sched[0], d.vbase[0], float(d.e0[0]),  # type: ignore[index]
                          d.pc_max[0], d.pd_max[0])


def prepare_many(problem: ProfessProblem, inputs: Sequence[CycleInputs]) -> PreparedInputs:
    """The cycle inputs of many sites with this problem in solver units, one row per site."""
    n = problem.horizon_steps
    b = problem.battery

    def rows(name: str, values) -> np.ndarray:
        return np.array([_vec(v, n, name) for v in values]).reshape(len(inputs), n)

    load = rows("load_w", [i.load_w for i in inputs]) / 1e3
    pv = np.maximum(rows("pv_w", [i.pv_w for i in inputs]), 0.0) / 1e3
    ci = rows("import_eur_per_kwh", [i.import_eur_per_kwh for i in inputs])
    ce = rows("export_eur_per_kwh", [i.export_eur_per_kwh for i in inputs])
    # Net metering per step is convex only if export pays at most what import costs; a meter measures the
    # net, so paying more for export than import is not a physical arbitrage: cap it (documented).
    ce = np.minimum(ce, ci)
    unknown = np.full(n, np.nan)
    sched = rows("schedule_w", [unknown if i.schedule_w is None else _vec(i.schedule_w, n, "schedule_w") / 1e3
                                for i in inputs])
    vbase = rows("v_base_pu", [i.v_base_pu for i in inputs])
    for name, arr in (("load_w", load), ("pv_w", pv), ("prices", ci), ("prices", ce), ("v_base_pu", vbase)):
        if not np.all(np.isfinite(arr)):
            raise ValueError(f"{name} has non-finite values")
    pc0 = np.array([b.p_charge_max_w if i.p_charge_avail_w is None else min(b.p_charge_max_w,
                                                                             max(i.p_charge_avail_w, 0.0))
                    for i in inputs], dtype=float)
    pd0 = np.array([b.p_discharge_max_w if i.p_discharge_avail_w is None else min(b.p_discharge_max_w,
                                                                                   max(i.p_discharge_avail_w, 0.0))
                    for i in inputs], dtype=float)
    pc_max = np.full((len(inputs), n), b.p_charge_max_w / 1e3)
    pd_max = np.full((len(inputs), n), b.p_discharge_max_w / 1e3)
    pc_max[:, 0], pd_max[:, 0] = pc0 / 1e3, pd0 / 1e3
    if not b.allow_grid_charging:
        pc_max = np.minimum(pc_max, pv)
    for i, inp in enumerate(inputs):
        if inp.forbid_charge is not None:
            pc_max[i] = np.where(np.asarray(inp.forbid_charge, dtype=bool), 0.0, pc_max[i])
        if inp.forbid_discharge is not None:
            pd_max[i] = np.where(np.asarray(inp.forbid_discharge, dtype=bool), 0.0, pd_max[i])
    e0 = np.array([float(i.e0_wh) for i in inputs]) / 1e3
    return PreparedInputs(load, pv, ci, ce, sched, vbase, e0, pc_max, pd_max)


def linear_costs(problem: ProfessProblem, d: PreparedInputs) -> tuple[np.ndarray, np.ndarray, Any]:
    """Per-cycle objective coefficients of P_grid and of its import part, and the objective offset (a float; for
    many sites an array, one per site)."""
    w, h = problem.weights, problem.h
    cost_pg = h * (w.bill * d.ce - w.grid_abs)
    cost_gi = h * (w.bill * (d.ci - d.ce) + 2 * w.grid_abs)
    offset = h * w.waste * np.sum(d.pv, axis=-1)
    if w.voltage > 0:
        s = problem.voltage_sensitivity_pu_per_kw
        a = d.vbase - 1.0
        cost_pg = cost_pg + h * w.voltage * 2 * a * s / V_SCALE**2
        offset = offset + h * w.voltage * np.sum(a**2, axis=-1) / V_SCALE**2
    return (np.asarray(cost_pg, dtype=float), np.asarray(cost_gi, dtype=float),
            offset if np.ndim(offset) else float(offset))


def first_energy_bounds(problem: ProfessProblem, e0: Any) -> tuple[Any, Any]:
    """The first planned energy may lie outside the window if the battery starts outside it (floats; for many
    sites arrays)."""
    b = problem.battery
    emin, emax = b.soc_min * b.capacity_wh / 1e3, b.soc_max * b.capacity_wh / 1e3
    k = problem.kappa
    if np.ndim(e0):
        return np.minimum(emin, k * e0), np.maximum(emax, k * e0)
    return min(emin, k * e0), max(emax, k * e0)
