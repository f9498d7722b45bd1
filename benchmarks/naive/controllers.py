"""Naive controllers: GESSCon, LESSAg with PROFESS, and the LiBal volt-watt/volt-var controller, written plainly.

* GESSCon: once a day, a *new* GESSCon LP (our formulation, :class:`controllers.gesscon.Gesscon`) over all
  sites, fed with the day's perfect forecasts; the schedule of each site goes out as its SenML pack. The
  stored energy reaches GESSCon as 15-minute telemetry (published on change, as the Data Broker carries it).
* LESSAg (``mode: profess``): every 15 minutes each site re-plans its battery with PROFESS against the
  schedule -- the same formulation rebuilt in pyomo (:class:`controllers.profess_pyomo.PyomoProfess`,
  ``persistent=False``) and solved from scratch with HiGHS every cycle, as a straightforward pyomo user does
  (HiGHS's QP needs its feasibility tolerance at 1e-5 on this problem, else it ends in "Solve error"). The
  first planned step is applied, clipped to what the battery can do now; without a valid schedule: the
  rule-based self-consumption fallback.
* Volt-watt / volt-var: the piecewise-linear curves, a ramp limit and the PCS limits, one battery at a time.
"""

from __future__ import annotations

import math
from typing import Any

import mosaik_api_v3
from mosaik_api_v3.types import CreateResult, Meta
import numpy as np

from controllers.gesscon import Gesscon, GessconConfig, GessconSite
from controllers.schedule_codec import HOURS, from_senml, to_senml
from controllers.profess_model import Profess
from controllers.profess_problem import CycleInputs, ProfessProblem, ProfessResult
from controllers.profess_pyomo import PyomoProfess

TELEMETRY_S = 900


class RebuiltPyomoProfess(PyomoProfess):
    """The pyomo model and the HiGHS solver built anew for every cycle."""

    def __init__(self, problem: ProfessProblem) -> None:
        super().__init__(problem, persistent=False)

    def _new_solver(self):
        solver = super()._new_solver()
        solver.config.solver_options["primal_feasibility_tolerance"] = 1e-5
        return solver


class NaiveProfess(Profess):
    """PROFESS's own complementarity guarantee around the rebuilt pyomo model."""

    def __init__(self, problem: ProfessProblem) -> None:  # no production solver here
        self.problem = problem
        self.solver = RebuiltPyomoProfess(problem)
        self.tol_w = 1.0
        self.max_rounds = 6


def _one(sources: dict) -> Any:
    vals = [v for v in sources.values() if v is not None]
    return vals[0] if vals else None


def _num(x: Any) -> float:
    return float("nan") if x is None else float(x)


# ------------------------------------------------------------------------------------------------ GESSCon
GESSCON_META = {
    "api_version": "3.0",
    "type": "time-based",
    "models": {"Ess": {"public": True, "params": ["site"],
                       "attrs": ["e_wh", "schedule", "schedule_issued_s", "pcc_plan_w", "p_schedule_w"]}},
}


class NaiveGesscon(mosaik_api_v3.Simulator):
    """One entity per storage site; the simulator plans all of them together once a day."""

    def __init__(self) -> None:
        super().__init__(GESSCON_META)
        self.sites: dict[str, GessconSite] = {}
        self.held_e: dict[str, float] = {}
        self.plan: Any = None
        self.packs: dict[str, list] = {}
        self.issued_s = -1
        self.time = 0

    # mosaik passes the simulator's own parameters by keyword (narrower than the base's **kwargs)
    def init(self, sid: str, time_resolution: float = 1.0, step_size: int = 60, config: dict | None = None,  # type: ignore[override]
             pv_kwp: dict | None = None, load_truth_w: dict | None = None, pv_truth_w_per_kwp: dict | None = None,
             import_eur_per_kwh=None, export_eur_per_kwh=None, start_unix_s: float = 0.0, plan_at_s: int = 0) -> Meta:
        self.step_size = int(step_size)
        self.config = GessconConfig.model_validate(config or {})
        self.pv_kwp = pv_kwp or {}
        self.load_truth = {k: np.asarray(v, float) for k, v in (load_truth_w or {}).items()}
        self.pv_truth = {k: np.asarray(v, float) for k, v in (pv_truth_w_per_kwp or {}).items()}
        self.ci = np.asarray(import_eur_per_kwh, float)
        self.ce = np.asarray(export_eur_per_kwh, float)
        self.start_unix_s = float(start_unix_s)
        self.plan_at_s = int(plan_at_s)
        return self.meta

    # mosaik passes the model's own parameters by keyword (narrower than the base's **kwargs)
    def create(self, num: int, model: str, site: dict | None = None) -> list[CreateResult]:  # type: ignore[override]
        s = GessconSite.model_validate(site)
        self.sites[s.id] = s
        return [{"eid": s.id, "type": model}]

    def step(self, time: int, inputs: dict, max_advance: int) -> int:
        self.time = time
        for sid, attrs in inputs.items():  # telemetry: sampled every 15 minutes, sent when the value changed
            e = _one(attrs.get("e_wh", {}))
            if time % TELEMETRY_S == 0 and e is not None and e != self.held_e.get(sid):
                self.held_e[sid] = e
        if time >= self.plan_at_s and (time - self.plan_at_s) % 86400 == 0:
            self._plan_day(time)
        return time + self.step_size

    def _window(self, arr: np.ndarray, k: int) -> np.ndarray:
        return arr[np.clip(np.arange(k, k + HOURS), 0, arr.size - 1)]

    def _plan_day(self, time: int) -> None:
        k = time // 3600
        fc = {sid: {"load_w": self._window(self.load_truth[sid], k),
                    "pv_w": self._window(self.pv_truth[sid], k) * self.pv_kwp[sid]} for sid in self.sites}
        prices = {"import": self._window(self.ci, k), "export": self._window(self.ce, k)}
        e0 = {sid: e for sid, e in self.held_e.items() if math.isfinite(e)}
        core = Gesscon(list(self.sites.values()), self.config)  # a fresh LP every day
        day_start = self.start_unix_s + time
        plan = core.solve(fc, prices, e0)
        if plan.status != "optimal":
            return
        self.plan, self.issued_s, self.plan_t = plan, time, time
        self.packs = {sid: to_senml(sid, day_start, v) for sid, v in plan.setpoints_w.items()}

    def get_data(self, outputs: dict) -> dict:
        data = {}
        h = (self.time - self.plan_t) // 3600 if self.plan is not None else -1
        have = self.plan is not None and 0 <= h < HOURS
        for sid, attrs in outputs.items():
            row: dict[str, Any] = {}
            for a in attrs:
                if a == "schedule":
                    row[a] = self.packs.get(sid)
                elif a == "schedule_issued_s":
                    row[a] = self.issued_s
                elif a == "pcc_plan_w":
                    row[a] = float(self.plan.pcc_w[sid][h]) if have else float("nan")
                elif a == "p_schedule_w":
                    row[a] = float(self.plan.setpoints_w[sid][h]) if have else 0.0
            data[sid] = row
        return data


# ------------------------------------------------------------------------------------------------ LESSAg
LESSAG_INPUTS = ("schedule", "schedule_issued_s", "pcc_p_mw", "batt_p_w", "e_wh", "p_charge_avail_w",
                 "p_discharge_avail_w")
LESSAG_META = {
    "api_version": "3.0",
    "type": "time-based",
    "models": {"Agent": {"public": True,
                         "params": ["problem", "pv_kwp", "pv_eta", "pv_max_w", "load_truth_w", "pv_truth_w_per_kwp",
                                    "import_eur_per_kwh", "export_eur_per_kwh", "start_unix_s", "max_age_s"],
                         "attrs": [*LESSAG_INPUTS, "p_set_w", "fallback"]}},
}


class _Agent:
    def __init__(self, problem: dict, pv_kwp: float, pv_eta: float, pv_max_w: float | None, load_truth_w,
                 pv_truth_w_per_kwp, import_eur_per_kwh, export_eur_per_kwh, start_unix_s: float,
                 max_age_s: int) -> None:
        self.problem = ProfessProblem.model_validate(problem)
        self.profess = NaiveProfess(self.problem)
        self.n = self.problem.horizon_steps
        self.mpc_s = self.problem.step_s
        self.pv_kwp, self.pv_eta = pv_kwp, pv_eta
        self.pv_max_w = pv_max_w if pv_max_w else math.inf
        self.load = np.asarray(load_truth_w, float)
        self.pv = np.asarray(pv_truth_w_per_kwp, float)
        self.ci = np.asarray(import_eur_per_kwh, float)
        self.ce = np.asarray(export_eur_per_kwh, float)
        self.start_unix_s = start_unix_s
        self.max_age_s = max_age_s
        self.plan: ProfessResult | None = None
        self.plan_k = -1
        self.p_set_w = 0.0
        self.fallback = 0.0

    def window(self, arr: np.ndarray, k: int) -> np.ndarray:
        return arr[np.clip(np.arange(k, k + self.n), 0, arr.size - 1)]

    def step(self, time: int, x: dict) -> None:
        ca, da = _num(x.get("p_charge_avail_w")), _num(x.get("p_discharge_avail_w"))
        hi = ca if math.isfinite(ca) else math.inf
        lo = -da if math.isfinite(da) else -math.inf
        schedule = None
        pack = x.get("schedule")
        t0: float | None
        v: np.ndarray | None
        if pack:
            try:
                t0, v = from_senml(pack)[1:]
            except ValueError:
                t0 = v = None
            issued = _num(x.get("schedule_issued_s"))
            age = time - issued if math.isfinite(issued) and issued >= 0 else math.nan
            h = math.floor((self.start_unix_s + time - t0) / 3600.0) if t0 is not None and v is not None else -1
            if v is not None and 0 <= h < v.size and math.isfinite(age) and age <= self.max_age_s:
                schedule = (t0, v)
        if schedule is None:  # rule-based self-consumption: the battery takes over the PCC's exchange
            target = _num(x.get("batt_p_w")) - _num(x.get("pcc_p_mw")) * 1e6
            p = min(max(target, -da), ca)
            self.fallback = 1.0
        else:
            self.fallback = 0.0
            k = time // self.mpc_s
            if time % self.mpc_s == 0 or self.plan is None:
                self.replan(k, schedule, x, ca, da)
            p = float(self.plan.p_batt_plan_w[k - self.plan_k]) if (
                self.plan is not None and 0 <= k - self.plan_k < self.n) else 0.0
            p = min(max(p, lo), hi)
        self.p_set_w = p if math.isfinite(p) else 0.0

    def replan(self, k: int, schedule: tuple, x: dict, ca: float, da: float) -> None:
        e_wh = _num(x.get("e_wh"))
        if not math.isfinite(e_wh):
            return
        t0, v = schedule
        tt = self.start_unix_s + k * self.mpc_s + self.mpc_s * np.arange(self.n)
        h = np.floor((tt - t0) / 3600.0).astype(int)
        sched = np.where((h >= 0) & (h < v.size), v[np.clip(h, 0, v.size - 1)], np.nan)
        pv = np.minimum(self.window(self.pv, k) * self.pv_kwp, self.pv_max_w) * self.pv_eta
        inp = CycleInputs(load_w=self.window(self.load, k), pv_w=pv, e0_wh=e_wh,
                          import_eur_per_kwh=self.window(self.ci, k), export_eur_per_kwh=self.window(self.ce, k),
                          schedule_w=sched, p_charge_avail_w=ca if math.isfinite(ca) else None,
                          p_discharge_avail_w=da if math.isfinite(da) else None)
        res = self.profess.solve(inp, k * self.mpc_s)
        if res.status == "optimal":
            self.plan, self.plan_k = res, k


class NaiveLessag(mosaik_api_v3.Simulator):
    def __init__(self) -> None:
        super().__init__(LESSAG_META)
        self.agents: dict[str, _Agent] = {}

    # mosaik passes the simulator's own parameters by keyword (narrower than the base's **kwargs)
    def init(self, sid: str, time_resolution: float = 1.0, step_size: int = 60) -> Meta:  # type: ignore[override]
        self.step_size = int(step_size)
        return self.meta

    def create(self, num: int, model: str, **params: Any) -> list[CreateResult]:
        eid = f"Agent_{len(self.agents)}"
        self.agents[eid] = _Agent(**params)
        return [{"eid": eid, "type": model}]

    def step(self, time: int, inputs: dict, max_advance: int) -> int:
        for eid, agent in self.agents.items():
            x = {name: _one(src) for name, src in inputs.get(eid, {}).items()}
            agent.step(time, x)
        return time + self.step_size

    def get_data(self, outputs: dict) -> dict:
        return {eid: {a: getattr(self.agents[eid], a) for a in attrs} for eid, attrs in outputs.items()}


# ------------------------------------------------------------------------------------------------ volt-watt / volt-var
VOLT_META = {
    "api_version": "3.0",
    "type": "time-based",
    "models": {"VoltVarWatt": {"public": True, "params": ["params", "p_charge_max_w", "p_discharge_max_w", "s_max_va"],
                               "attrs": ["v_pu", "p_charge_avail_w", "p_discharge_avail_w", "p_w", "q_var"]}},
}


def _curve(c: dict, v: float) -> float:
    if not c.get("enabled", True):
        return 0.0
    return float(np.interp(v, [c["v1"], c["v2"], c["v3"], c["v4"]], [-c["low"], 0.0, 0.0, c["high"]]))


class _VoltVarWatt:
    def __init__(self, params: dict, p_charge_max_w: float, p_discharge_max_w: float, s_max_va: float) -> None:
        self.params = params
        self.pc_max, self.pd_max, self.s_max = p_charge_max_w, p_discharge_max_w, s_max_va
        self.p_w = 0.0
        self.q_var = 0.0

    def step(self, v: float, dt: float, ca: float, da: float) -> None:
        pr = self.params
        if math.isfinite(v):
            fp = _curve(pr["volt_watt"], v)
            p_t = fp * (self.pc_max if fp >= 0 else self.pd_max)
            q_t = _curve(pr["volt_var"], v) * self.s_max
        else:  # no measurement: hold
            p_t, q_t = self.p_w, self.q_var
        if pr["response"] == "ramp":
            dp, dq = pr["ramp_w_per_s"] * dt, pr["ramp_var_per_s"] * dt
            p = self.p_w + min(max(p_t - self.p_w, -dp), dp)
            q = self.q_var + min(max(q_t - self.q_var, -dq), dq)
        elif pr["response"] == "first_order":
            a = 1.0 - math.exp(-dt / pr["tau_s"])
            p, q = self.p_w + a * (p_t - self.p_w), self.q_var + a * (q_t - self.q_var)
        else:
            p, q = p_t, q_t
        hi = min(self.pc_max, ca if math.isfinite(ca) else self.pc_max)
        lo = min(self.pd_max, da if math.isfinite(da) else self.pd_max)
        p = min(max(p, -lo), hi)
        room = math.sqrt(max(self.s_max**2 - p**2, 0.0))
        self.p_w, self.q_var = p, min(max(q, -room), room)


class NaiveVoltage(mosaik_api_v3.Simulator):
    def __init__(self) -> None:
        super().__init__(VOLT_META)
        self.ctl: dict[str, _VoltVarWatt] = {}
        self.last_t: int | None = None

    # mosaik passes the simulator's own parameters by keyword (narrower than the base's **kwargs)
    def init(self, sid: str, time_resolution: float = 1.0, step_size: int = 60) -> Meta:  # type: ignore[override]
        self.step_size = int(step_size)
        return self.meta

    def create(self, num: int, model: str, **params: Any) -> list[CreateResult]:
        eid = f"VoltVarWatt_{len(self.ctl)}"
        self.ctl[eid] = _VoltVarWatt(**params)
        return [{"eid": eid, "type": model}]

    def step(self, time: int, inputs: dict, max_advance: int) -> int:
        dt = self.step_size if self.last_t is None else time - self.last_t
        self.last_t = time
        for eid, ctl in self.ctl.items():
            x = inputs.get(eid, {})
            vs = [v for v in x.get("v_pu", {}).values() if v is not None]
            ctl.step(float(np.mean(vs)) if vs else math.nan, dt, _num(_one(x.get("p_charge_avail_w", {}))),
                     _num(_one(x.get("p_discharge_avail_w", {}))))
        return time + self.step_size

    def get_data(self, outputs: dict) -> dict:
        return {eid: {a: getattr(self.ctl[eid], a) for a in attrs} for eid, attrs in outputs.items()}
