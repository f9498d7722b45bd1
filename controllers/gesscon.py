"""GESSCon: the grid-side day-ahead plan for every storage system of a feeder.

Once a day GESSCon solves one LP over all sites of the feeder and 24 hours::

    min  sum_s sum_h [ c_imp[h] P_imp[s,h] - c_exp[h] P_exp[s,h]                 (energy bill of each site)
                       + c_deg (P_ch[s,h] + P_dis[s,h])                            (battery wear)
                       + c_curt (PV[s,h] - PV_used[s,h]                           (curtailment, last resort,
                                 + (1-eta_c) P_ch + (1/eta_d-1) P_dis) ]             and conversion losses)
         - c_term sum_s E[s,24]  + c_over sum_h (O_up[h] + O_down[h])              (stored value; overload)
    s.t. Load - PV_used + P_ch - P_dis = P_imp - P_exp                 per site and hour (1 h steps)
         E[h+1] = k (E[h] + eta_c P_ch - P_dis / eta_d),  E_min <= E <= E_max, E[0] = measured
         0 <= P_imp <= contract import,  0 <= P_exp <= contract export        (per site)
         -S_tr - O_down <= sum_s (P_imp - P_exp) <= S_tr + O_up                (transformer, soft)

(energy in kWh, power in kW inside the solver; the transformer slack ``O`` only appears when no schedule
can respect the limit, with a penalty far above any price, and is reported). Each ESS's schedule is its
24 hourly set-points ``P_ch - P_dis`` (W, + = charging). Simultaneous charge and discharge are removed
as in PROFESS (fix the direction of such hours and re-solve; in practice never needed with a wear cost).

Sign conventions: ours = load arrow (+ = charging). The original GESSCon also sends + = charging (kW):
:func:`to_gesscon_kw` / :func:`from_gesscon_kw` convert the unit only. The original PROFESS uses
``P_ESS_Output`` + = discharging: :func:`gesscon_to_profess_original` negates.

The schedule's wire format (one SenML pack per ESS) is :mod:`controllers.schedule_codec`.
"""

from __future__ import annotations

import logging
import time as _time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

import mosaik_api_v3
from mosaik_api_v3.types import CreateResult
import numpy as np
from pydantic import BaseModel, ConfigDict, Field, field_validator

from controllers.forecast import DEFAULT_FORECAST, ForecastMethod, make_forecaster
from controllers.gesscon_voltage import (
    FeederVoltageModel,
    VoltageLimits,
    VoltageRows,
    plan_within_band,
    sunniest_recent,
)
from controllers.registry import ControllerKind
from devices.battery.params import BatteryRatings, ContractLimits
from controllers.schedule_codec import HOURS, to_senml

if TYPE_CHECKING:  # pragma: no cover
    from cosim.scenario import ControllerSpec
    from cosim.world import WorldBuilder

log = logging.getLogger(__name__)


class GessconSite(BatteryRatings, ContractLimits):
    """One site with an ESS, as GESSCon knows it (W, Wh); the shared parameter names of devices/battery/params.py."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str


class GessconConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    transformer_limit_w: float | None = Field(None, gt=0, description="limit on |sum of site exchanges|")
    degradation_eur_per_kwh: float = Field(0.02, ge=0)
    terminal_value_eur_per_kwh: float | None = Field(
        None, ge=0, description="value of stored energy at the day's end; default: the day's mean export price")
    curtail_penalty_eur_per_kwh: float = Field(1.0, ge=0)
    overload_penalty_eur_per_kwh: float = Field(100.0, gt=0)


# --- conversions ---------------------------------------------------------------------------------------

def to_gesscon_kw(p_w):
    """Ours (W, + = charging) -> original GESSCon (kW, + = charging)."""
    return np.asarray(p_w, dtype=float) / 1e3


def from_gesscon_kw(p_kw):
    """Original GESSCon (kW, + = charging) -> ours (W, + = charging)."""
    return np.asarray(p_kw, dtype=float) * 1e3


def gesscon_to_profess_original(p_kw):
    """Original GESSCon set-point (kW, + = charging) -> original PROFESS ``ESS_Control`` (kW, + = discharging)."""
    return -np.asarray(p_kw, dtype=float)


# --- the optimisation ------------------------------------------------------------------------------------

@dataclass
class GessconPlan:
    status: str
    setpoints_w: dict[str, np.ndarray]  # + = charging, 24 values
    pcc_w: dict[str, np.ndarray]  # planned site exchange, + = import
    e_wh: dict[str, np.ndarray]  # 25 values
    transformer_w: np.ndarray  # planned sum of exchanges per hour
    overload_w: np.ndarray
    objective: float
    solve_s: float
    extra: dict = field(default_factory=dict)


class Gesscon:
    """The feeder's day-ahead storage plan (pure: no I/O, no clock)."""

    def __init__(self, sites: list[GessconSite], config: GessconConfig | None = None) -> None:
        import highspy
        from scipy import sparse

        if not sites:
            raise ValueError("GESSCon needs at least one site with an ESS")
        ids = [s.id for s in sites]
        if len(set(ids)) != len(ids):
            raise ValueError("site ids must be unique")
        self.sites = list(sites)
        self.config = config or GessconConfig()
        self._hs = highspy
        S, H = len(sites), HOURS
        self.S = S
        # Columns, site-major: [pc, pd, pv, gi, ge, e] blocks of H per site, then O_up, O_down (H each).
        self.nb = 6
        base = np.arange(S)[:, None] * self.nb * H
        h = np.arange(H)[None, :]
        self.c_pc, self.c_pd, self.c_pv, self.c_gi, self.c_ge, self.c_e = (base + i * H + h for i in range(6))
        off = S * self.nb * H
        self.c_ou = off + np.arange(H)
        self.c_od = off + H + np.arange(H)
        ncol = off + 2 * H
        kap = np.array([1.0 - s.self_discharge_per_day / 24.0 for s in sites])[:, None] * np.ones((1, H))
        ec = np.array([s.eta_charge for s in sites])[:, None] * np.ones((1, H))
        ed = np.array([s.eta_discharge for s in sites])[:, None] * np.ones((1, H))
        rs = np.arange(S)[:, None] * 2 * H
        self.r_bal = rs + h
        self.r_soc = rs + H + h
        self.r_tr = 2 * S * H + np.arange(H)
        nrow = 2 * S * H + H
        ent = [
            (self.r_bal, self.c_pc, 1.0), (self.r_bal, self.c_pd, -1.0), (self.r_bal, self.c_pv, -1.0),
            (self.r_bal, self.c_gi, -1.0), (self.r_bal, self.c_ge, 1.0),
            (self.r_soc, self.c_e, 1.0), (self.r_soc, self.c_pc, -kap * ec), (self.r_soc, self.c_pd, kap / ed),
            (self.r_soc[:, 1:], self.c_e[:, :-1], -kap[:, 1:]),
            (np.broadcast_to(self.r_tr, (S, H)), self.c_gi, 1.0), (np.broadcast_to(self.r_tr, (S, H)), self.c_ge, -1.0),
            (self.r_tr, self.c_ou, -1.0), (self.r_tr, self.c_od, 1.0),
        ]
        rows = np.concatenate([np.ravel(r) for r, _, _ in ent])
        cols = np.concatenate([np.ravel(c) for _, c, _ in ent])
        vals = np.concatenate([np.ravel(np.broadcast_to(np.asarray(v, float), np.shape(c))) for _, c, v in ent])
        a = sparse.csc_matrix((vals, (rows, cols)), shape=(nrow, ncol))
        a.sort_indices()
        self._kappa = kap[:, 0]
        self.ncol, self.nrow = ncol, nrow
        inf = highspy.kHighsInf
        lo, hi = np.zeros(ncol), np.full(ncol, inf)
        for i, s in enumerate(sites):
            hi[self.c_pc[i]] = s.p_charge_max_w / 1e3
            hi[self.c_pd[i]] = s.p_discharge_max_w / 1e3
            hi[self.c_gi[i]] = s.contract_import_w / 1e3 if s.contract_import_w else inf
            hi[self.c_ge[i]] = s.contract_export_w / 1e3 if s.contract_export_w else inf
            lo[self.c_e[i]] = s.soc_min * s.capacity_wh / 1e3
            hi[self.c_e[i]] = s.soc_max * s.capacity_wh / 1e3
        self._lo0, self._hi0 = lo, hi
        tr = self.config.transformer_limit_w / 1e3 if self.config.transformer_limit_w else inf
        rlo = np.zeros(nrow)
        rhi = np.zeros(nrow)
        rlo[self.r_tr], rhi[self.r_tr] = -tr, tr
        lp = highspy.HighsLp()
        lp.num_col_, lp.num_row_ = ncol, nrow
        lp.col_cost_ = np.zeros(ncol)
        lp.col_lower_, lp.col_upper_ = lo, hi
        lp.row_lower_, lp.row_upper_ = rlo, rhi
        lp.a_matrix_.format_ = highspy.MatrixFormat.kColwise
        lp.a_matrix_.start_ = a.indptr.astype(np.int32)
        lp.a_matrix_.index_ = a.indices.astype(np.int32)
        lp.a_matrix_.value_ = a.data
        lp.a_matrix_.num_col_, lp.a_matrix_.num_row_ = ncol, nrow
        hs = highspy.Highs()
        hs.setOptionValue("output_flag", False)
        hs.setOptionValue("threads", 1)
        hs.passModel(lp)
        self.highs = hs

    def plan(self, day_start: float, site_forecasts: dict[str, dict[str, np.ndarray]], prices: dict[str, np.ndarray],
             battery_states: dict[str, float]) -> dict[str, np.ndarray]:
        """24 hourly set-points (W, + = charging) per site.

        ``site_forecasts[site] = {"load_w": 24 values, "pv_w": 24 values}``; ``prices = {"import": 24,
        "export": 24}`` (EUR/kWh); ``battery_states[site]`` = stored energy (Wh). ``day_start`` (UNIX s)
        is only recorded (``self.last.extra``) for the SenML packs."""
        self.last = self.solve(site_forecasts, prices, battery_states)
        self.last.extra["day_start"] = day_start
        return self.last.setpoints_w

    def solve(self, site_forecasts, prices, battery_states, voltage: VoltageRows | None = None) -> GessconPlan:
        """``voltage``: the feeder's voltage limits, linear in the sites' battery powers (gesscon_voltage.py)."""
        t0 = _time.perf_counter()
        cfg, S, H = self.config, self.S, HOURS
        load = np.zeros((S, H))
        pv = np.zeros((S, H))
        e0 = np.zeros(S)
        for i, s in enumerate(self.sites):
            fc = site_forecasts.get(s.id, {})
            load[i] = np.asarray(fc.get("load_w", np.zeros(H)), float)[:H] / 1e3
            pv[i] = np.maximum(np.asarray(fc.get("pv_w", np.zeros(H)), float)[:H], 0.0) / 1e3
            e0[i] = float(battery_states.get(s.id, 0.5 * (s.soc_min + s.soc_max) * s.capacity_wh)) / 1e3
        ci = np.broadcast_to(np.asarray(prices.get("import", 0.0), float), (H,))
        ce = np.minimum(np.broadcast_to(np.asarray(prices.get("export", 0.0), float), (H,)), ci)
        term = cfg.terminal_value_eur_per_kwh if cfg.terminal_value_eur_per_kwh is not None else float(np.mean(ce))
        cost = np.zeros(self.ncol)
        # Wasted energy is penalised alike whether curtailed or lost in conversion: otherwise charging and
        # discharging at once would "avoid" curtailment (see the module docstring).
        ec = np.array([s.eta_charge for s in self.sites])[:, None]
        ed = np.array([s.eta_discharge for s in self.sites])[:, None]
        cost[self.c_pc] = cfg.degradation_eur_per_kwh + cfg.curtail_penalty_eur_per_kwh * (1 - ec)
        cost[self.c_pd] = cfg.degradation_eur_per_kwh + cfg.curtail_penalty_eur_per_kwh * (1 / ed - 1)
        cost[self.c_pv] = -cfg.curtail_penalty_eur_per_kwh
        cost[self.c_gi] = ci[None, :]
        cost[self.c_ge] = -ce[None, :]
        cost[self.c_e[:, -1]] -= term
        cost[self.c_ou] = cost[self.c_od] = cfg.overload_penalty_eur_per_kwh
        offset = cfg.curtail_penalty_eur_per_kwh * float(pv.sum())
        lo, hi = self._lo0.copy(), self._hi0.copy()
        hi[self.c_pv] = pv
        emin, emax = lo[self.c_e[:, 0]], hi[self.c_e[:, 0]]
        lo[self.c_e[:, 0]] = np.minimum(emin, self._kappa * e0)
        hi[self.c_e[:, 0]] = np.maximum(emax, self._kappa * e0)
        rlo = np.zeros(self.nrow)
        rhi = np.zeros(self.nrow)
        tr = cfg.transformer_limit_w / 1e3 if cfg.transformer_limit_w else self._hs.kHighsInf
        rlo[self.r_bal] = rhi[self.r_bal] = -load
        rlo[self.r_soc[:, 0]] = rhi[self.r_soc[:, 0]] = self._kappa * e0
        rlo[self.r_tr], rhi[self.r_tr] = -tr, tr
        hs = self.highs
        idx = np.arange(self.ncol, dtype=np.int32)
        ridx = np.arange(self.nrow, dtype=np.int32)
        forbid_c = np.zeros((S, H), bool)
        forbid_d = np.zeros((S, H), bool)
        rounds = 0
        n_v = self._add_voltage_rows(voltage) if voltage is not None else 0
        while True:
            hi_r = hi.copy()
            hi_r[self.c_pc[forbid_c]] = 0.0
            hi_r[self.c_pd[forbid_d]] = 0.0
            hs.changeColsBounds(self.ncol, idx, lo, hi_r)
            hs.changeRowsBounds(self.nrow, ridx, rlo, rhi)  # type: ignore[attr-defined]
            hs.changeColsCost(self.ncol, idx, cost)
            hs.changeObjectiveOffset(offset)
            hs.run()
            status = hs.getModelStatus()
            if status != self._hs.HighsModelStatus.kOptimal:
                break
            x = np.asarray(hs.getSolution().col_value)
            pc, pd = x[self.c_pc], x[self.c_pd]
            both = np.minimum(pc, pd) > 1e-6
            if not both.any() or rounds >= 6:
                break
            forbid_d |= both & (pc >= pd)
            forbid_c |= both & (pc < pd)
            rounds += 1
        v_slack = 0.0
        if n_v:
            if status == self._hs.HighsModelStatus.kOptimal:
                v_slack = float(np.max(x[self.ncol:self.ncol + 2 * n_v], initial=0.0))
            hs.deleteRows(n_v, np.arange(self.nrow, self.nrow + n_v, dtype=np.int32))
            hs.deleteCols(2 * n_v, np.arange(self.ncol, self.ncol + 2 * n_v, dtype=np.int32))
        solve_s = _time.perf_counter() - t0
        if status != self._hs.HighsModelStatus.kOptimal:
            zero = {s.id: np.zeros(H) for s in self.sites}
            return GessconPlan(hs.modelStatusToString(status), zero,
                               {s.id: load[i] * 1e3 for i, s in enumerate(self.sites)},
                               {s.id: np.full(H + 1, e0[i] * 1e3) for i, s in enumerate(self.sites)},
                               load.sum(axis=0) * 1e3, np.zeros(H), float("nan"), solve_s)
        net = (x[self.c_gi] - x[self.c_ge]) * 1e3
        e = np.concatenate([e0[:, None], x[self.c_e]], axis=1) * 1e3
        return GessconPlan(
            status="optimal",
            setpoints_w={s.id: (pc[i] - pd[i]) * 1e3 for i, s in enumerate(self.sites)},
            pcc_w={s.id: net[i] for i, s in enumerate(self.sites)},
            e_wh={s.id: e[i] for i, s in enumerate(self.sites)},
            transformer_w=net.sum(axis=0),
            overload_w=(x[self.c_ou] + x[self.c_od]) * 1e3,
            objective=float(hs.getInfo().objective_function_value),
            solve_s=solve_s,
            extra={"complementarity_rounds": rounds, "curtailed_wh": float((pv - x[self.c_pv]).sum() * 1e3),
                   "voltage_rows": n_v, "v_violation_pu": v_slack},
        )

    def _add_voltage_rows(self, v: VoltageRows) -> int:
        """Rows ``lo <= sum_b coef[b] (P_ch - P_dis)[b, h] + s_lo - s_hi <= hi`` with penalised slacks."""
        k = int(v.hour.size)
        if k == 0:
            return 0
        if v.coef.shape != (k, self.S):
            raise ValueError(f"voltage rows: expected coefficients for {self.S} batteries, got {v.coef.shape}")
        hs = self.highs
        n = 2 * k
        hs.addCols(n, np.full(n, v.penalty), np.zeros(n), np.full(n, self._hs.kHighsInf), 0,
                   np.zeros(n, dtype=np.int32), np.zeros(0, dtype=np.int32), np.zeros(0))
        starts: list[int] = []
        index: list[int] = []
        value: list[float] = []
        for j in range(k):
            starts.append(len(index))
            h = int(v.hour[j])
            for b in range(self.S):
                if v.coef[j, b] != 0.0:
                    index += [int(self.c_pc[b, h]), int(self.c_pd[b, h])]
                    value += [float(v.coef[j, b]), -float(v.coef[j, b])]
            index += [self.ncol + 2 * j, self.ncol + 2 * j + 1]
            value += [1.0, -1.0]
        hs.addRows(k, np.asarray(v.lo, float), np.asarray(v.hi, float), len(index), np.asarray(starts, np.int32),
                   np.asarray(index, np.int32), np.asarray(value, float))
        return k

    def senml(self, plan: GessconPlan | None = None, day_start: float | None = None) -> dict[str, list[dict]]:
        plan = plan or self.last
        t0 = plan.extra.get("day_start", 0.0) if day_start is None else day_start
        return {sid: to_senml(sid, t0, v) for sid, v in plan.setpoints_w.items()}


# --- mosaik wrapper --------------------------------------------------------------------------------------

class GessconParams(BaseModel):
    """``params`` of a ``gesscon`` controller in a scenario."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    transformer_limit_w: float | None = Field(None, gt=0)
    degradation_eur_per_kwh: float = Field(0.02, ge=0)
    terminal_value_eur_per_kwh: float | None = Field(None, ge=0)
    forecast: ForecastMethod = Field(DEFAULT_FORECAST, description="load and PV forecaster; 'perfect' reads the "
                                     "true future: the oracle, an upper bound for studies")
    plan_at_s: int = Field(0, ge=0, lt=86400, description="seconds after the run start of the daily planning")
    execute: Literal["lessag", "direct", "none"] = Field(
        "lessag", description="who applies the schedule: a LESSAg per site (default), the device directly, or nobody")
    lessag: dict[str, Any] = Field(default_factory=dict, description="params of the LESSAg agents (see lessag)")
    voltage_limits: VoltageLimits | None = Field(None, description="keep the feeder's voltages in this band in the "
                                                 "plan (a power flow at the forecast, linear in the batteries)")

    @field_validator("lessag")
    @classmethod
    def _lessag(cls, v: dict[str, Any]) -> dict[str, Any]:
        from controllers.lessag import LessagParams

        LessagParams.model_validate(v)
        return v

    def gesscon_config(self) -> GessconConfig:
        return GessconConfig(transformer_limit_w=self.transformer_limit_w,
                             degradation_eur_per_kwh=self.degradation_eur_per_kwh,
                             terminal_value_eur_per_kwh=self.terminal_value_eur_per_kwh)


SITE_INPUTS = ("e_wh", "load_p_w", "pv_w_per_kwp")
SITE_OUTPUTS = ("p_schedule_w", "schedule", "schedule_issued_s", "pcc_plan_w")
META = {
    "api_version": "3.0",
    "type": "time-based",
    "models": {
        "Feeder": {"public": True,
                   "params": ["params", "sites", "pv_kwp", "truth", "import_eur_per_kwh", "export_eur_per_kwh",
                              "start_unix_s", "start_tod_s", "grid", "points", "battery_loads"],
                   "attrs": ["objective", "solve_ms", "overload_w", "transformer_plan_w", "voltage_rows",
                             "v_violation_pu", "v_lin_error_pu"]},
        "Site": {"public": False, "params": [], "attrs": [*SITE_INPUTS, *SITE_OUTPUTS]},
        "Point": {"public": False, "params": [], "attrs": ["load_p_w", "pv_w_per_kwp"]},
    },
    "extra_methods": ["plans"],
}


class _Feeder:
    def __init__(self, eid: str, params: GessconParams, sites: list[GessconSite], pv_kwp: dict[str, float],
                 truth: dict | None, ci, ce, start_unix_s: float, start_tod_s: int) -> None:
        self.eid = eid
        self.params = params
        self.core = Gesscon(sites, params.gesscon_config())
        self.sites = sites
        self.pv_kwp = pv_kwp
        self.start_unix_s = float(start_unix_s)
        self.ci = None if ci is None else np.asarray(ci, float)
        self.ce = None if ce is None else np.asarray(ce, float)
        truth = truth or {}
        self.load_fc = {s.id: make_forecaster(params.forecast, 3600, truth=_arr(truth.get(s.id, {}).get("load_w")),
                                              start_tod_s=start_tod_s) for s in sites}
        self.pv_fc = {s.id: make_forecaster(params.forecast, 3600, truth=_arr(truth.get(s.id, {}).get("pv_w_per_kwp")),
                                            start_tod_s=start_tod_s) for s in sites}
        self.acc = {s.id: {"load": [0.0, 0], "pv": [0.0, 0]} for s in sites}
        self.hour_acc = 0
        self.plan: GessconPlan | None = None
        self.packs: dict[str, list[dict]] = {}
        self.issued_s = -1
        self.plan_t = -1
        self.solve_ms = 0.0
        self.voltage: FeederVoltageModel | None = None
        self.points: list[dict] = []
        self.point_fc: dict[str, tuple] = {}
        self.point_acc: dict[str, dict[str, list]] = {}
        self.v_lin_error_pu = float("nan")

    def watch_voltages(self, grid: dict, points: list[dict], battery_loads: list[str], start_tod_s: int) -> None:
        """Voltage limits in the plan: a grid engine of the scenario's grid, and a forecaster per connection point
        (``points``: id, load (grid load name), pv_kwp (AC), q_per_p of its load)."""
        from simulators.grid import GridEngine
        from simulators.grid_loaders import load_grid

        model = load_grid(grid["source"], path=grid.get("path"), code=grid.get("code"),
                          ampacity_a=grid.get("ampacity_a"))
        engine = GridEngine(model, mode=grid.get("mode", "balanced"), solver=grid.get("solver", "fast"),
                            extra_loads=grid.get("extra_loads") or (), static_loads=grid.get("static_loads", "zero"))
        assert self.params.voltage_limits is not None
        self.voltage = FeederVoltageModel(engine, battery_loads, self.params.voltage_limits)
        self.points = points
        method = self.params.forecast
        for pt in points:
            truth = pt.get("truth") or {}
            self.point_fc[pt["id"]] = (
                make_forecaster(method, 3600, truth=_arr(truth.get("load_w")), start_tod_s=start_tod_s),
                make_forecaster(method, 3600, truth=_arr(truth.get("pv_w_per_kwp")), start_tod_s=start_tod_s))
            self.point_acc[pt["id"]] = {"load": [0.0, 0], "pv": [0.0, 0]}

    def observe_point(self, pid: str, load: float, pv: float) -> None:
        a = self.point_acc[pid]
        for key, v in (("load", load), ("pv", pv)):
            if np.isfinite(v):
                a[key][0] += v
                a[key][1] += 1

    def _close_points(self) -> None:
        for pid, a in self.point_acc.items():
            for key, fc in zip(("load", "pv"), self.point_fc[pid]):
                if a[key][1]:
                    fc.observe(self.hour_acc, a[key][0] / a[key][1])
                a[key] = [0.0, 0]

    def _injections(self, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Hourly injections (W, var) of every grid load at the forecast, batteries idle: (H, loads) each."""
        assert self.voltage is not None
        eng = self.voltage.engine
        p = np.zeros((HOURS, len(eng.load_names)))
        q = np.zeros_like(p)
        for pt in self.points:
            load_fc, pv_fc = self.point_fc[pt["id"]]
            load = load_fc.forecast(k, HOURS)
            j = eng.load_pos[pt["load"]]
            pv = pv_fc.forecast(k, HOURS)
            days = self.voltage.limits.pv_days
            if days:
                pv = np.fmax(pv, sunniest_recent(pv_fc.history, k, HOURS, days))
            p[:, j] += load - pv * pt["pv_kwp"]
            q[:, j] += load * pt["q_per_p"]
        return p, q

    def observe(self, hour: int, sid: str, load: float, pv: float) -> None:
        a = self.acc[sid]
        if np.isfinite(load):
            a["load"][0] += load
            a["load"][1] += 1
        if np.isfinite(pv):
            a["pv"][0] += pv
            a["pv"][1] += 1

    def close_hour(self, hour: int) -> None:
        if hour == self.hour_acc:
            return
        self._close_points()
        for sid, a in self.acc.items():
            for key, fc in (("load", self.load_fc[sid]), ("pv", self.pv_fc[sid])):
                if a[key][1]:
                    fc.observe(self.hour_acc, a[key][0] / a[key][1])
                a[key] = [0.0, 0]
        self.hour_acc = hour

    def plan_day(self, t_s: int, e_wh: dict[str, float]) -> None:
        k = t_s // 3600
        fcs = {s.id: {"load_w": self.load_fc[s.id].forecast(k, HOURS),
                      "pv_w": self.pv_fc[s.id].forecast(k, HOURS) * self.pv_kwp.get(s.id, 0.0)} for s in self.sites}
        prices = {"import": _window(self.ci, k), "export": _window(self.ce, k)}
        day_start = self.start_unix_s + t_s
        if self.voltage is None:
            self.core.last = self.core.solve(fcs, prices, e_wh)
        else:
            p, q = self._injections(k)

            def solve(rows: VoltageRows) -> np.ndarray | None:
                self.core.last = self.core.solve(fcs, prices, e_wh, voltage=rows)
                if self.core.last.status != "optimal":
                    return None
                return np.array([self.core.last.setpoints_w[s.id] for s in self.sites]) / 1e3

            _, self.v_lin_error_pu, solves = plan_within_band(self.voltage, p, q, solve)
            self.core.last.extra |= {"v_lin_error_pu": self.v_lin_error_pu, "voltage_solves": solves}
        self.core.last.extra["day_start"] = day_start
        self.plan = self.core.last
        self.solve_ms = self.plan.solve_s * 1e3
        if self.plan.status != "optimal":
            log.warning("GESSCon at t=%s s: %s; no new schedule", t_s, self.plan.status)
            return
        self.packs = self.core.senml()
        self.issued_s = t_s
        self.plan_t = t_s


def _arr(x):
    return np.zeros(1) if x is None else np.asarray(x, float)  # no profile: perfect foresight of nothing


def _window(arr, k: int):
    if arr is None:
        return np.zeros(HOURS)
    return arr[np.clip(np.arange(k, k + HOURS), 0, arr.size - 1)]


class GessconSim(mosaik_api_v3.Simulator):
    def __init__(self) -> None:
        super().__init__(META)
        self.feeders: dict[str, _Feeder] = {}
        self.site_of: dict[str, tuple[str, str]] = {}  # site eid -> (feeder eid, site id)
        self.point_of: dict[str, tuple[str, str]] = {}  # point eid -> (feeder eid, point id)
        self.step_size = 60
        self.time = 0

    def init(self, sid: str, time_resolution: float = 1.0, step_size: int = 60,  # type: ignore[override]
             **_: Any) -> Any:
        self.step_size = int(step_size)
        return self.meta

    def create(self, num: int, model: str, params: dict | None = None,  # type: ignore[override]
               sites: list[dict] | None = None,
               pv_kwp: dict | None = None, truth: dict | None = None, import_eur_per_kwh=None,
               export_eur_per_kwh=None, start_unix_s: float = 0.0, start_tod_s: int = 0, grid: dict | None = None,
               points: list[dict] | None = None, battery_loads: list[str] | None = None) -> list[CreateResult]:
        if model != "Feeder":
            raise ValueError("create Feeder entities; their Site children come with them")
        p = GessconParams.model_validate(params or {})
        site_models = [GessconSite.model_validate(s) for s in sites or []]
        out: list[CreateResult] = []
        for _ in range(num):
            eid = f"Feeder_{len(self.feeders)}"
            self.feeders[eid] = _Feeder(eid, p, site_models, pv_kwp or {}, truth, import_eur_per_kwh,
                                        export_eur_per_kwh, start_unix_s, start_tod_s)
            children: list[CreateResult] = []
            for s in site_models:
                ceid = f"{eid}.{s.id}"
                self.site_of[ceid] = (eid, s.id)
                children.append({"eid": ceid, "type": "Site"})
            if p.voltage_limits is not None and grid is not None:
                self.feeders[eid].watch_voltages(grid, points or [], battery_loads or [], start_tod_s)
                for pt in points or []:
                    ceid = f"{eid}.point.{pt['id']}"
                    self.point_of[ceid] = (eid, pt["id"])
                    children.append({"eid": ceid, "type": "Point"})
            out.append({"eid": eid, "type": "Feeder", "children": children})
        return out

    def step(self, time: int, inputs: dict, max_advance: int) -> int:
        self.time = time
        hour = time // 3600
        vals: dict[str, dict[str, dict[str, float]]] = {}
        for ceid, attrs in inputs.items():
            if ceid in self.point_of:
                feid, pid = self.point_of[ceid]
                got = {n: [v for v in src.values() if v is not None] for n, src in attrs.items()}
                self.feeders[feid].observe_point(pid, float(sum(got.get("load_p_w", []) or [np.nan])),
                                                 float(sum(got.get("pv_w_per_kwp", []) or [np.nan])))
                continue
            if ceid not in self.site_of:
                continue
            feid, sid = self.site_of[ceid]
            row = {}
            for name, sources in attrs.items():
                present = [v for v in sources.values() if v is not None]
                row[name] = float(sum(present)) if present else np.nan
            vals.setdefault(feid, {})[sid] = row
        for feid, f in self.feeders.items():
            f.close_hour(hour)
            for s in f.sites:
                row = vals.get(feid, {}).get(s.id, {})
                f.observe(hour, s.id, row.get("load_p_w", np.nan), row.get("pv_w_per_kwp", np.nan))
            if (time - f.params.plan_at_s) % 86400 == 0 and time >= f.params.plan_at_s:
                e = {s.id: vals.get(feid, {}).get(s.id, {}).get("e_wh", np.nan) for s in f.sites}
                e = {k: v for k, v in e.items() if np.isfinite(v)}
                f.plan_day(time, e)
        return self._next_step(time)

    def _next_step(self, time: int) -> int:
        """The next scenario step, or, when no feeder needs the per-step observations (perfect foresight reads the
        true series, and no voltage limits look at the observed PV), the next step at which an output can change:
        the outputs follow the hour of the plan (``plan_at_s`` + whole hours), and the plan is made at such a time
        too. mosaik hands the receivers the latest output in between, so every value seen is as with every step."""
        if not self.feeders or any(f.params.forecast != "perfect" or f.voltage is not None
                                   for f in self.feeders.values()):
            return time + self.step_size
        nxt = min(time + (f.params.plan_at_s - time - 1) % 3600 + 1 for f in self.feeders.values())
        return -(-nxt // self.step_size) * self.step_size  # the scenario step at or after it

    def get_data(self, outputs: dict) -> dict:
        data = {}
        for eid, attrs in outputs.items():
            row: dict[str, Any] = {}
            if eid in self.feeders:
                f = self.feeders[eid]
                for a in attrs:
                    if a == "objective":
                        row[a] = f.plan.objective if f.plan else float("nan")
                    elif a == "solve_ms":
                        row[a] = f.solve_ms
                    elif a == "overload_w":
                        row[a] = float(f.plan.overload_w.max()) if f.plan else 0.0
                    elif a == "transformer_plan_w":
                        h = (self.time - f.plan_t) // 3600 if f.plan else -1
                        row[a] = float(f.plan.transformer_w[h]) if f.plan and 0 <= h < HOURS else float("nan")
                    elif a in ("voltage_rows", "v_violation_pu"):
                        row[a] = float(f.plan.extra.get(a, 0.0)) if f.plan else 0.0
                    elif a == "v_lin_error_pu":
                        row[a] = f.v_lin_error_pu
                data[eid] = row
                continue
            if eid in self.point_of:
                data[eid] = {}
                continue
            feid, sid = self.site_of[eid]
            f = self.feeders[feid]
            h = (self.time - f.plan_t) // 3600 if f.plan_t >= 0 else -1
            plan = f.plan if f.plan is not None and f.plan.status == "optimal" and 0 <= h < HOURS else None
            for a in attrs:
                if a == "p_schedule_w":  # 0 without a valid schedule (safe if wired straight to a device)
                    row[a] = float(plan.setpoints_w[sid][h]) if plan is not None else 0.0
                elif a == "pcc_plan_w":
                    row[a] = float(plan.pcc_w[sid][h]) if plan is not None else float("nan")
                elif a == "schedule":
                    row[a] = f.packs.get(sid)
                elif a == "schedule_issued_s":
                    row[a] = f.issued_s
            data[eid] = row
        return data

    def plans(self) -> dict[str, dict[str, list[float]]]:
        return {feid: {sid: v.tolist() for sid, v in f.plan.setpoints_w.items()}
                for feid, f in self.feeders.items() if f.plan is not None}


def _build(builder: WorldBuilder, spec: ControllerSpec, params: GessconParams) -> None:
    from controllers.lessag import LessagParams, wire_lessag
    from controllers.profess import device_battery, price_series, start_tod_s, truth_series
    from controllers.wiring import battery_base, has_follower
    from devices import registry as device_registry

    sc = builder.scenario
    devs = builder.select_devices(spec.devices, needs_battery=True)
    sites, pv_kwp, truth, handles = [], {}, {}, []
    for dev in devs:
        site = builder.site_of(dev.id)  # None: a grid battery on its own bus, planned with no load and no PV
        sb, pv = device_battery(builder, dev)
        sites.append(GessconSite(id=dev.id, capacity_wh=sb.capacity_wh, p_charge_max_w=sb.p_charge_max_w,
                                 p_discharge_max_w=sb.p_discharge_max_w, eta_charge=sb.eta_charge,
                                 eta_discharge=sb.eta_discharge, soc_min=sb.soc_min, soc_max=sb.soc_max,
                                 self_discharge_per_day=sb.self_discharge_per_day,
                                 contract_import_w=sb.contract_import_w, contract_export_w=sb.contract_export_w))
        pv_kwp[dev.id] = pv["pv_kwp"] * pv["pv_eta"] if site is not None else 0.0
        if params.forecast == "perfect" and site is not None:
            truth[dev.id] = {"load_w": truth_series(builder, site.load, "p_w", 3600, 86400),
                             "pv_w_per_kwp": truth_series(builder, site.pv, "w_per_kwp", 3600, 86400)}
        handles.append((dev, site))
    if not sites:
        return
    imp, exp = price_series(builder, 3600, 86400)
    voltage = _voltage_inputs(builder, params, [dev for dev, _ in handles]) if params.voltage_limits else {}
    sim = builder.sim("Gesscon", "controllers.gesscon:GessconSim")
    feeder = builder.add_entity(sim.Feeder(params=params.model_dump(), sites=[s.model_dump() for s in sites],
                                           pv_kwp=pv_kwp, truth=truth or None, import_eur_per_kwh=imp,
                                           export_eur_per_kwh=exp, start_unix_s=sc.start.timestamp(),
                                           start_tod_s=start_tod_s(builder), **voltage))
    children = {c.eid.split(".", 1)[1]: c for c in feeder.children}
    for attr in ("objective", "solve_ms", *(("voltage_rows", "v_violation_pu", "v_lin_error_pu") if voltage else ())):
        builder.record(feeder, attr, "controllers", f"{spec.id}.{attr}")
    for pt in voltage.get("points", []):  # every connection point's load and PV, up the Data Broker
        child = builder.add_entity(children[f"point.{pt['id']}"])
        handle = builder.sites[pt["id"]]
        if handle.load is not None:
            builder.connect(handle.load, child, ("p_w", "load_p_w"), role="data", sender_kind="device", period_s=900)
        if handle.pv is not None and pt["pv_kwp"] > 0:
            builder.world.connect(handle.pv, child, ("w_per_kwp", "pv_w_per_kwp"))
    lessag_params = LessagParams.model_validate(params.lessag)
    for dev, site in handles:
        child = builder.add_entity(children[dev.id])
        device = builder.devices[dev.id]
        # site telemetry goes up over the Data Broker (every 15 min, as field data does)
        builder.connect(device, child, "e_wh", role="data", sender_kind="device", period_s=900)
        if site is not None and site.load is not None:
            builder.connect(site.load, child, ("p_w", "load_p_w"), role="data", sender_kind="device", period_s=900)
        if site is not None and site.pv is not None:
            builder.world.connect(site.pv, child, ("w_per_kwp", "pv_w_per_kwp"))
        builder.record(child, "p_schedule_w", "controllers", f"{spec.id}/{dev.id}.p_schedule_w")
        if has_follower(builder, dev.id):  # a local controller (LiBal's voltage control) adds to the plan
            battery_base(builder, dev.id, schedule=child)
        elif params.execute == "lessag" and site is not None:
            wire_lessag(builder, spec, lessag_params, dev, site, child)
        elif params.execute in ("direct", "lessag"):  # a battery without a site has no LESSAg: the plan directly
            setpoint = device_registry.family(dev.family).battery_setpoint
            if setpoint is None:
                raise ValueError(f"gesscon execute: direct needs a battery; device {dev.id!r} ({dev.family}) takes no "
                                 "battery setpoint")
            builder.connect(child, device, ("p_schedule_w", setpoint), role="control", time_shifted=True,
                            initial_data={"p_schedule_w": 0.0})


def _voltage_inputs(builder: WorldBuilder, params: GessconParams, devs: list) -> dict[str, Any]:
    """What the Feeder needs to plan with the feeder's voltages: the grid as the world built it, every site as a
    connection point (its load, its PV in AC kW, its load's q/p), and the grid load of each planned battery."""
    from controllers.profess import truth_series
    from devices import registry as device_registry

    sc = builder.scenario
    g = sc.grid
    extra = [{"id": s.id, "bus": s.bus, "phase": s.phase} for s in sc.sites if s.bus is not None]
    extra += [{"id": f"dev:{d.id}", "bus": d.bus, "phase": d.phase} for d in sc.devices if d.bus]
    grid = {"source": g.source, "path": str(g.path) if g.path else None, "code": g.code, "mode": g.mode,
            # the engine knows "zero"/"file"; "profiles" drives the file's loads from outside, as in the world
            "solver": g.solver, "extra_loads": extra, "static_loads": "file" if g.static_loads == "file" else "zero",
            "ampacity_a": g.line_ampacity_a or None}
    kwp: dict[str, float] = {}
    for d in sc.devices:
        if d.site is None:
            continue
        cfg = device_registry.family(d.family).parse_config(d.config)
        kwp[d.site] = kwp.get(d.site, 0.0) + float(getattr(cfg, "pv_kwp", 0.0) or 0.0) * float(
            getattr(cfg, "eta_inverter", 1.0))
    points = []
    for s in sc.sites:
        handle = builder.sites[s.id]
        pf = getattr(s.load, "power_factor", None) if s.load is not None else None
        pt = {"id": s.id, "load": s.grid_load or s.id, "pv_kwp": kwp.get(s.id, 0.0),
              "q_per_p": float(np.tan(np.arccos(pf))) if pf else 0.0}
        if params.forecast == "perfect":
            pt["truth"] = {"load_w": truth_series(builder, handle.load, "p_w", 3600, 86400),
                           "pv_w_per_kwp": truth_series(builder, handle.pv, "w_per_kwp", 3600, 86400)}
        points.append(pt)
    battery_loads = [(sc_site.grid_load or sc_site.id) if (sc_site := _site_spec(sc, d)) else f"dev:{d.id}"
                     for d in devs]
    return {"grid": grid, "points": points, "battery_loads": battery_loads}


def _site_spec(sc, dev):
    return next((s for s in sc.sites if s.id == dev.site), None) if dev.site else None


GESSCON = ControllerKind("gesscon", GessconParams, _build,
                         "day-ahead feeder plan of every ESS (24 hourly set-points), executed by LESSAg agents")
