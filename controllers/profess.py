"""PROFESS as a mosaik controller: receding-horizon MPC of one site's battery, one entity per battery.

The optimisation itself is :mod:`controllers.profess_model`; this module feeds it each control cycle
(forecasts, prices, the measured stored energy), applies the first planned step and wires the
controller into a scenario (kind ``profess``).

Timing: the simulator steps with the scenario step; every ``step_s`` seconds (the MPC step, a multiple of
the scenario step) it re-plans over ``horizon_s``. In between it holds the planned power of the current
MPC step, clipped each scenario step to what the battery reports it can deliver now. Observations are
strictly causal: the load and PV seen during MPC step k are averaged and handed to the forecaster only
when step k+1 starts.
"""

from __future__ import annotations

import logging
import math
import time as _time
from typing import TYPE_CHECKING, Any, Literal

import mosaik_api_v3
from mosaik_api_v3.types import CreateResult, Meta
import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

from controllers.forecast import DEFAULT_FORECAST, ForecastMethod, make_forecaster
from controllers.profess_model import Profess, solve_many
from controllers.profess_problem import (PRESETS, CycleInputs, ObjectiveName, ObjectiveWeights, ProfessProblem,
                                         ProfessResult, SiteBattery)
from controllers.registry import ControllerKind

if TYPE_CHECKING:  # pragma: no cover
    from cosim.scenario import ControllerSpec
    from cosim.world import WorldBuilder

log = logging.getLogger(__name__)


class ProfessParams(BaseModel):
    """``params`` of a ``profess`` controller in a scenario."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    objective: ObjectiveName = "min_grid_exchange"
    weights: ObjectiveWeights | None = Field(None, description="override the objective's preset weights")
    step_s: int = Field(900, gt=0, description="MPC step: 60, 300, 900 or 3600 s (a multiple of the scenario step)")
    horizon_s: int = Field(86400, gt=0)
    forecast: ForecastMethod = Field(DEFAULT_FORECAST, description="load and PV forecaster; 'perfect' reads the "
                                     "true future: the oracle, an upper bound for studies")
    degradation_eur_per_kwh: float = Field(0.02, ge=0)
    terminal_value_eur_per_kwh: float = Field(0.0, ge=0)
    voltage_sensitivity_pu_per_kw: float = Field(0.0, description="dV/dP at the PCC, e.g. -0.002 pu per kW import")
    engine: Literal["auto", "highs", "ipm", "pyomo"] = "auto"

    @model_validator(mode="after")
    def _steps(self) -> ProfessParams:
        if 86400 % self.step_s:
            raise ValueError("step_s must divide a day (e.g. 60, 300, 900, 3600)")
        if self.horizon_s % self.step_s:
            raise ValueError("horizon_s must be a multiple of step_s")
        return self

    def problem(self, battery: SiteBattery) -> ProfessProblem:
        return ProfessProblem(
            battery=battery, step_s=self.step_s, horizon_steps=self.horizon_s // self.step_s,
            weights=self.weights or PRESETS[self.objective], degradation_eur_per_kwh=self.degradation_eur_per_kwh,
            terminal_value_eur_per_kwh=self.terminal_value_eur_per_kwh,
            voltage_sensitivity_pu_per_kw=self.voltage_sensitivity_pu_per_kw)


INPUTS = ("e_wh", "p_charge_avail_w", "p_discharge_avail_w", "load_p_w", "pv_w_per_kwp", "pcc_p_w", "v_pu")
OUTPUTS = ("p_set_w", "objective", "solve_ms", "ok", "soc_plan_end")

META = {
    "api_version": "3.0",
    "type": "time-based",
    "models": {
        "Profess": {
            "public": True,
            "params": ["params", "battery", "pv_kwp", "pv_eta", "pv_max_w", "load_truth_w", "pv_truth_w_per_kwp",
                       "import_eur_per_kwh", "export_eur_per_kwh", "start_tod_s"],
            "attrs": [*INPUTS, *OUTPUTS],
        },
    },
    "extra_methods": ["plans"],
}
# many sites as one entity over vectors (``sites``: one dict of the Profess params per site; element i: site i)
META["models"]["Group"] = {"public": True, "params": ["sites"], "attrs": [*INPUTS, *OUTPUTS]}  # type: ignore[index]


class _Site:
    """One PROFESS instance: solver, forecasters, the current plan."""

    def __init__(self, params: ProfessParams, battery: SiteBattery, pv_kwp: float, pv_eta: float,
                 pv_max_w: float | None, load_truth_w, pv_truth_w_per_kwp, import_eur_per_kwh,
                 export_eur_per_kwh, start_tod_s: int) -> None:
        self.params = params
        self.problem = params.problem(battery)
        self.profess = Profess(self.problem, params.engine)
        self.n = self.problem.horizon_steps
        self.pv_kwp, self.pv_eta = float(pv_kwp), float(pv_eta)
        self.pv_max_w = float(pv_max_w) if pv_max_w else np.inf
        none = np.zeros(1)  # a site without a load (or PV) profile: perfect foresight of nothing
        self.load_fc = make_forecaster(params.forecast, params.step_s,
                                       truth=none if load_truth_w is None else np.asarray(load_truth_w, float),
                                       start_tod_s=start_tod_s)
        self.pv_fc = make_forecaster(
            params.forecast, params.step_s,
            truth=none if pv_truth_w_per_kwp is None else np.asarray(pv_truth_w_per_kwp, float),
            start_tod_s=start_tod_s)
        self.ci = None if import_eur_per_kwh is None else np.asarray(import_eur_per_kwh, float)
        self.ce = None if export_eur_per_kwh is None else np.asarray(export_eur_per_kwh, float)
        self.acc = {"load": [0.0, 0], "pv": [0.0, 0]}
        self.k_acc = 0
        self.plan = None
        self.plan_k = -1
        self.objective = float("nan")
        self.solve_ms = 0.0
        self.ok = 0.0
        self.p_set_w = 0.0

    @property
    def plan(self) -> ProfessResult | None:
        """The adopted plan (set here or by a controller that plans with this site, e.g. LESSAg)."""
        return self._plan

    @plan.setter
    def plan(self, res: ProfessResult | None) -> None:
        self._plan = res
        self.plan_p_w: list[float] = [] if res is None else res.p_batt_plan_w.tolist()  # read every scenario step

    def _window(self, arr: np.ndarray | None, k: int) -> np.ndarray | float:
        if arr is None:
            return 0.0
        idx = np.clip(np.arange(k, k + self.n), 0, arr.size - 1)
        return arr[idx]

    def observe(self, k: int, load_w: float, pv_w_per_kwp: float) -> None:
        """Close the accumulation of MPC step ``k_acc`` when step ``k`` begins; then add this sample."""
        if k != self.k_acc:
            for key, fc in (("load", self.load_fc), ("pv", self.pv_fc)):
                total, count = self.acc[key]
                if count:
                    fc.observe(self.k_acc, total / count)
                self.acc[key] = [0.0, 0]
            self.k_acc = k
        if math.isfinite(load_w):  # math's test: this runs per site and scenario step
            self.acc["load"][0] += load_w
            self.acc["load"][1] += 1
        if math.isfinite(pv_w_per_kwp):
            self.acc["pv"][0] += pv_w_per_kwp
            self.acc["pv"][1] += 1

    def cycle_inputs(self, k: int, e_wh: float, charge_avail: float, discharge_avail: float, pcc_p_w: float,
                     v_pu: float) -> CycleInputs:
        """What the optimisation of MPC step ``k`` knows: the forecasts, prices and the measurements now."""
        load = self.load_fc.forecast(k, self.n)
        pv = np.minimum(self.pv_fc.forecast(k, self.n) * self.pv_kwp, self.pv_max_w) * self.pv_eta
        s = self.problem.voltage_sensitivity_pu_per_kw
        v_base = v_pu - s * pcc_p_w / 1e3 if np.isfinite(v_pu) and np.isfinite(pcc_p_w) else 1.0
        return CycleInputs(load_w=load, pv_w=pv, e0_wh=e_wh, import_eur_per_kwh=self._window(self.ci, k),
                           export_eur_per_kwh=self._window(self.ce, k), v_base_pu=v_base,
                           p_charge_avail_w=charge_avail if np.isfinite(charge_avail) else None,
                           p_discharge_avail_w=discharge_avail if np.isfinite(discharge_avail) else None)

    def plan_cycle(self, k: int, e_wh: float, charge_avail: float, discharge_avail: float, pcc_p_w: float,
                   v_pu: float, t_s: int) -> None:
        inp = self.cycle_inputs(k, e_wh, charge_avail, discharge_avail, pcc_p_w, v_pu)
        t0 = _time.perf_counter()
        res = self.profess.solve(inp, t_s)
        self.take(res, k, t_s, (_time.perf_counter() - t0) * 1e3)

    def take(self, res: ProfessResult, k: int, t_s: int, solve_ms: float) -> None:
        """Adopt the plan of MPC step ``k`` if the solve succeeded; otherwise keep the previous one."""
        self.solve_ms = solve_ms
        if res.status == "optimal":
            self.plan, self.plan_k = res, k
            self.objective = res.objective
            self.ok = 1.0
        else:
            log.warning("PROFESS at t=%s s: %s; keeping the previous plan", t_s, res.status)
            self.ok = 0.0

    def setpoint(self, k: int, charge_avail: float, discharge_avail: float) -> float:
        if self.plan is None or not 0 <= k - self.plan_k < self.n:
            p = 0.0
        else:
            p = self.plan_p_w[k - self.plan_k]
        hi = charge_avail if math.isfinite(charge_avail) else math.inf
        lo = -discharge_avail if math.isfinite(discharge_avail) else -math.inf
        self.p_set_w = float(min(max(p, lo), hi))  # np.clip's order, without its overhead on scalars (every step)
        return self.p_set_w


def _output(s: _Site, attr: str) -> Any:
    if attr == "p_set_w":
        return s.p_set_w
    if attr == "objective":
        return s.objective
    if attr == "solve_ms":
        return s.solve_ms
    if attr == "ok":
        return s.ok
    if attr == "soc_plan_end":
        return float(s.plan.soc[-1]) if s.plan is not None else float("nan")
    return None


class ProfessSim(mosaik_api_v3.Simulator):
    def __init__(self) -> None:
        super().__init__(META)
        self.sites: dict[str, _Site] = {}
        self.groups: dict[str, list[_Site]] = {}
        self.step_size = 60

    def init(self, sid: str, time_resolution: float = 1.0, step_size: int = 60, **_: Any) -> Meta:
        self.step_size = int(step_size)
        return self.meta

    # mosaik passes the model's parameters by keyword (narrower than the base's **model_params)
    def create(self, num: int, model: str, params: dict | None = None, battery: dict | None = None,  # type: ignore[override]
               pv_kwp: float = 0.0, pv_eta: float = 1.0, pv_max_w: float | None = None, load_truth_w=None,
               pv_truth_w_per_kwp=None, import_eur_per_kwh=None, export_eur_per_kwh=None,
               start_tod_s: int = 0, sites: list[dict] | None = None) -> list[CreateResult]:
        if model == "Group":
            out: list[CreateResult] = []
            for _ in range(num):
                eid = f"Group_{len(self.groups)}"
                self.groups[eid] = [self._site(**kw) for kw in sites or []]
                out.append({"eid": eid, "type": model})
            return out
        created: list[CreateResult] = []
        for _ in range(num):
            eid = f"Profess_{len(self.sites)}"
            self.sites[eid] = self._site(params, battery, pv_kwp, pv_eta, pv_max_w, load_truth_w, pv_truth_w_per_kwp,
                                         import_eur_per_kwh, export_eur_per_kwh, start_tod_s)
            created.append({"eid": eid, "type": model})
        return created

    def _site(self, params: dict | None = None, battery: dict | None = None, pv_kwp: float = 0.0,
              pv_eta: float = 1.0, pv_max_w: float | None = None, load_truth_w=None, pv_truth_w_per_kwp=None,
              import_eur_per_kwh=None, export_eur_per_kwh=None, start_tod_s: int = 0) -> _Site:
        p = ProfessParams.model_validate(params or {})
        if p.step_s % self.step_size:
            raise ValueError(f"PROFESS step_s ({p.step_s} s) must be a multiple of the scenario step "
                             f"({self.step_size} s)")
        b = SiteBattery.model_validate(battery or {})
        return _Site(p, b, pv_kwp, pv_eta, pv_max_w, load_truth_w, pv_truth_w_per_kwp, import_eur_per_kwh,
                     export_eur_per_kwh, start_tod_s)

    def step(self, time: int, inputs: dict, max_advance: int) -> int:
        for eid, site in self.sites.items():
            vals = dict.fromkeys(INPUTS, np.nan)
            for name, sources in inputs.get(eid, {}).items():
                got = [v for v in sources.values() if v is not None]
                if got:
                    vals[name] = float(sum(got))
            self._step_site(site, vals, time)
        for eid, sites in self.groups.items():
            vectors = {}
            for name, sources in inputs.get(eid, {}).items():
                (value,) = sources.values()  # one vector source each (the world connects exactly one)
                if value is not None:
                    vectors[name] = np.asarray(value, dtype=np.float64).reshape(len(sites)).tolist()
            self._step_group(sites, [{name: vectors[name][i] if name in vectors else np.nan for name in INPUTS}
                                     for i in range(len(sites))], time)
        return time + self.step_size

    @staticmethod
    def _step_site(site: _Site, vals: dict[str, float], time: int) -> None:
        k = ProfessSim._observe(site, vals, time)
        if time % site.params.step_s == 0 and ProfessSim._measured(site, vals):
            site.plan_cycle(k, vals["e_wh"], vals["p_charge_avail_w"], vals["p_discharge_avail_w"],
                            vals["pcc_p_w"], vals["v_pu"], time)
        site.setpoint(k, vals["p_charge_avail_w"], vals["p_discharge_avail_w"])

    @staticmethod
    def _step_group(sites: list[_Site], vals: list[dict[str, float]], time: int) -> None:
        """:meth:`_step_site` for every site of a Group, the optimisations of the sites due now in one batched
        solve (:func:`controllers.profess_model.solve_many`): the same plans, without the Python of each solve."""
        ks = [ProfessSim._observe(site, v, time) for site, v in zip(sites, vals)]
        due = [i for i, (site, v) in enumerate(zip(sites, vals))
               if time % site.params.step_s == 0 and ProfessSim._measured(site, v)]
        if due:
            inputs = [sites[i].cycle_inputs(ks[i], vals[i]["e_wh"], vals[i]["p_charge_avail_w"],
                                            vals[i]["p_discharge_avail_w"], vals[i]["pcc_p_w"], vals[i]["v_pu"])
                      for i in due]
            results = solve_many([sites[i].profess for i in due], inputs, time)
            for i, res in zip(due, results):
                sites[i].take(res, ks[i], time, res.solve_s * 1e3)
        for site, k, v in zip(sites, ks, vals):
            site.setpoint(k, v["p_charge_avail_w"], v["p_discharge_avail_w"])

    @staticmethod
    def _observe(site: _Site, vals: dict[str, float], time: int) -> int:
        """Hand the site this step's load and PV; its MPC step."""
        k = time // site.params.step_s
        site.observe(k, vals["load_p_w"], vals["pv_w_per_kwp"])
        return k

    @staticmethod
    def _measured(site: _Site, vals: dict[str, float]) -> bool:
        """Whether the battery's stored energy is known; if not, the site reports ok = 0 and keeps its previous plan."""
        if np.isfinite(vals["e_wh"]):
            return True
        site.ok = 0.0
        return False

    def get_data(self, outputs: dict) -> dict:
        data = {}
        for eid, attrs in outputs.items():
            group = self.groups.get(eid)
            if group is not None:
                data[eid] = {attr: np.array([_output(s, attr) for s in group], dtype=np.float64) for attr in attrs}
            else:
                data[eid] = {attr: _output(self.sites[eid], attr) for attr in attrs}
        return data

    def plans(self) -> dict[str, dict]:
        """The latest plan of every entity (power W + = charge, SoC trajectory, objective); a Group's sites as
        ``Group_n[i]``."""
        sites = dict(self.sites) | {f"{g}[{i}]": s for g, group in self.groups.items() for i, s in enumerate(group)}
        return {eid: {"p_batt_w": s.plan.p_batt_plan_w.tolist(), "soc": s.plan.soc.tolist(),
                      "objective": s.plan.objective} for eid, s in sites.items() if s.plan is not None}


# --- scenario wiring ------------------------------------------------------------------------------------

def device_battery(builder: WorldBuilder, dev_spec) -> tuple[SiteBattery, dict]:
    """The optimiser's view of a device (battery + inverter + site contract) and its PV parameters."""
    from devices import registry as device_registry

    fam = device_registry.family(dev_spec.family)
    cfg: Any = fam.parse_config(dev_spec.config)  # a family with a battery: its config has ``battery``
    bat = cfg.battery
    site = builder.site_of(dev_spec.id)
    site_spec = site.spec if site is not None else None
    ac = getattr(cfg, "ac_max_w", None)
    sb = SiteBattery(
        capacity_wh=bat.capacity_wh, p_charge_max_w=bat.p_charge_max_w, p_discharge_max_w=bat.p_discharge_max_w,
        eta_charge=bat.eta_charge, eta_discharge=bat.eta_discharge, soc_min=bat.soc_min, soc_max=bat.soc_max,
        self_discharge_per_day=bat.self_discharge_per_day,
        contract_import_w=getattr(site_spec, "contract_import_w", None),
        contract_export_w=getattr(site_spec, "contract_export_w", None),
        inverter_ac_max_w=ac, allow_grid_charging=getattr(cfg, "allow_grid_charging", True))
    pv = {"pv_kwp": float(getattr(cfg, "pv_kwp", 0.0) or 0.0), "pv_eta": float(getattr(cfg, "eta_inverter", 1.0)),
          "pv_max_w": getattr(cfg, "pv_mppt_max_w", None)}
    return sb, pv


def truth_series(builder: WorldBuilder, entity: Any, attr: str, step_s: int, horizon_s: int) -> list[float] | None:
    """The whole run plus one horizon of a profile entity, averaged to the controller's step.

    Uses the profile simulator's ``series`` extra method (the very values the grid will see)."""
    if entity is None:
        return None
    sc = builder.scenario
    profiles = builder.sim("Profiles")
    total = sc.duration + horizon_s
    try:
        fine = np.asarray(profiles.series(entity.eid, attr, 0, total), dtype=float)
    except Exception:  # a time series that ends with the run: repeat its last day over the horizon
        fine = np.asarray(profiles.series(entity.eid, attr, 0, sc.duration), dtype=float)
        day = max(1, min(fine.size, 86400 // sc.step))
        reps = -(-(total // sc.step - fine.size) // day)
        fine = np.concatenate([fine, np.tile(fine[-day:], max(reps, 0))])[: total // sc.step]
    factor = step_s // sc.step
    n = fine.size // factor
    return fine[: n * factor].reshape(n, factor).mean(axis=1).tolist()


def price_series(builder: WorldBuilder, step_s: int, horizon_s: int) -> tuple[list[float] | None, list[float] | None]:
    from simulators.profiles import price_profile

    sc = builder.scenario
    p = sc.profiles.price
    if p is None:
        return None, None
    kw: dict[str, Any] = dict(import_eur_per_kwh=p.import_eur_per_kwh, export_eur_per_kwh=p.export_eur_per_kwh,
              periods=[{"from": q.start, "to": q.end, "import": q.import_eur_per_kwh, "export": q.export_eur_per_kwh}
                       for q in p.periods or []] or None,
              path=str(p.path) if p.path else None)
    n = (sc.duration + horizon_s) // step_s
    try:
        imp, exp = price_profile(p.kind, start=sc.start, duration_s=sc.duration + horizon_s, step_s=step_s, **kw)
    except Exception:  # a price file that ends with the run: repeat its last day over the horizon
        imp, exp = price_profile(p.kind, start=sc.start, duration_s=sc.duration, step_s=step_s, **kw)
        day = max(1, min(len(imp), 86400 // step_s))
        reps = -(-(n - len(imp)) // day)
        imp = np.concatenate([imp, np.tile(imp[-day:], max(reps, 0))])[:n]
        exp = np.concatenate([exp, np.tile(exp[-day:], max(reps, 0))])[:n]
    return np.asarray(imp, float).tolist(), np.asarray(exp, float).tolist()


def start_tod_s(builder: WorldBuilder) -> int:
    st = builder.scenario.start
    return st.hour * 3600 + st.minute * 60 + st.second


def _build(builder: WorldBuilder, spec: ControllerSpec, params: ProfessParams) -> None:
    from devices import registry as device_registry

    if params.step_s % builder.step_s:
        raise builder.loaded.error(("controllers",), f"controller {spec.id!r}: step_s ({params.step_s} s) must be a "
                                   f"multiple of the scenario step ({builder.step_s} s)")
    sim = builder.sim("Profess", "controllers.profess:ProfessSim")
    prices = price_series(builder, params.step_s, params.horizon_s)
    chosen, kwargs = [], []
    for dev in builder.select_devices(spec.devices, needs_battery=True):
        site = builder.site_of(dev.id)
        if site is None:
            if spec.devices == "*":  # "every battery": the ones at a site (a grid battery has no PCC to optimise)
                continue
            raise builder.loaded.error(("controllers",), f"controller {spec.id!r}: device {dev.id!r} has no site; "
                                       "PROFESS optimises a site's exchange")
        battery, pv = device_battery(builder, dev)
        load_truth = pv_truth = None
        if params.forecast == "perfect":
            load_truth = truth_series(builder, site.load, "p_w", params.step_s, params.horizon_s)
            pv_truth = truth_series(builder, site.pv, "w_per_kwp", params.step_s, params.horizon_s)
        chosen.append((dev, site))
        kwargs.append(dict(params=params.model_dump(), battery=battery.model_dump(), **pv, load_truth_w=load_truth,
                           pv_truth_w_per_kwp=pv_truth, import_eur_per_kwh=prices[0],
                           export_eur_per_kwh=prices[1], start_tod_s=start_tod_s(builder)))
    if _build_group(builder, spec, sim, chosen, kwargs):
        return
    for (dev, site), kw in zip(chosen, kwargs):
        ctl = builder.add_entity(sim.Profess(**kw))
        device = builder.devices[dev.id]
        setpoint = device_registry.family(dev.family).battery_setpoint
        assert setpoint is not None  # a device selected with needs_battery
        smx = f"smx:{site.spec.id}"  # the site's SMX broker carries the local loop
        builder.connect(device, ctl, "e_wh", "p_charge_avail_w", "p_discharge_avail_w", role=smx,
                        sender_kind="device")
        if site.meter is None:
            builder.connect(site.pcc, ctl, ("p_w", "pcc_p_w"), "v_pu", role=smx, sender_kind="device")
        else:  # the site's SMM gives the PCC power (over DLMS in protocol mode), the grid its voltage
            builder.connect(site.meter, ctl, ("p_w", "pcc_p_w"), role=smx, sender_kind="device")
            builder.connect(site.pcc, ctl, "v_pu", role=smx, sender_kind="device")
        if site.load is not None:
            builder.world.connect(site.load, ctl, ("p_w", "load_p_w"))
        if site.pv is not None:
            builder.world.connect(site.pv, ctl, ("w_per_kwp", "pv_w_per_kwp"))
        builder.connect(ctl, device, ("p_set_w", setpoint), role=smx, sender_kind="agent", time_shifted=True,
                        initial_data={"p_set_w": 0.0})
        for attr in ("p_set_w", "objective", "solve_ms"):
            builder.record(ctl, attr, "controllers", f"{spec.id}/{dev.id}.{attr}")


def _build_group(builder: WorldBuilder, spec: ControllerSpec, sim: Any, chosen: list, kwargs: list[dict]) -> bool:
    """Many sites on direct connections, each with a load and a PV profile and one battery setpoint name: one Group
    entity over vectors (mosaik's cost is per value and step); the same plans as one entity per site."""
    from devices import registry as device_registry

    setpoints = {device_registry.family(dev.family).battery_setpoint for dev, _ in chosen}
    if len(setpoints) != 1 or any(site.load is None or site.pv is None for _, site in chosen):
        return False
    vectors = builder.vectors([f"smx:{site.spec.id}" for _, site in chosen], [dev.id for dev, _ in chosen])
    if vectors is None:
        return False
    points, table = vectors
    (setpoint,) = setpoints
    assert setpoint is not None  # devices selected with needs_battery
    ctl = builder.add_entity(sim.Group(sites=kwargs))
    builder.world.connect(table, ctl, "e_wh", "p_charge_avail_w", "p_discharge_avail_w")
    builder.world.connect(points, ctl, ("p_w", "pcc_p_w"), "v_pu")
    builder.world.connect(builder.series([site.load for _, site in chosen]), ctl, ("p_w", "load_p_w"))
    builder.world.connect(builder.series([site.pv for _, site in chosen]), ctl, ("w_per_kwp", "pv_w_per_kwp"))
    builder.world.connect(ctl, table, ("p_set_w", setpoint), time_shifted=True,
                          initial_data={"p_set_w": [0.0] * len(chosen)})
    builder.record_group(ctl, ["p_set_w", "objective", "solve_ms"], "controllers",
                         [f"{spec.id}/{dev.id}" for dev, _ in chosen])
    return True


PROFESS = ControllerKind("profess", ProfessParams, _build,
                         "receding-horizon MPC per battery site (PROFESS objectives, HiGHS / banded IPM)")
