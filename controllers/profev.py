"""PROFEV as a controller kind: the site's EVs and battery planned by stochastic dynamic programming
(controllers/profev_site.py on controllers/profev_sdp.py), executed by the site's LEVChAg.

Honest by default: everything PROFEV knows comes from before the run or from measurements —

* the EVs' presence chain is estimated from the sessions of the ``history_days`` before the start
  (:func:`simulators.ev_fleet.fleet_history`: the same model and random streams, never the run's days);
* the site's base load (load minus PV, without EVs and battery) is forecast as the mean of the same time of
  day over the ``history_days`` before the start (the site's own profiles, read for those days);
* ``forecast: perfect`` (the run's true base load) exists only as an explicit, labelled bound;
* an EV that declared its departure at plug-in (``declared_departure``, default on) leaves then; the others
  follow the chain (``declared_departure: false`` is the original PROFEV: the chain for every EV).

Each ``step_s`` PROFEV re-plans every EV and the battery when ``replan_s`` has passed; in between the policies
give each EV's power from its measured progress. It also re-plans at the scenario step an EV's plug-in is seen,
between its own steps too: the new EV alone and the battery around it, so the EV waits no longer than under
LEVChAg alone; and when an EV leaves that the plan still counted on, what depended on it (the battery, and
where EVs stay the other EVs).
The EVs' powers go to LEVChAg as one SenML plan (``plan``, valid ``2 step_s``, re-published on every change),
the battery's power to the battery.
"""

from __future__ import annotations

import math
from datetime import timedelta
from typing import TYPE_CHECKING, Any, Literal

import mosaik_api_v3
from mosaik_api_v3.types import CreateResult, Meta
import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

from controllers.levchag import (LevchagParams, plan_to_senml, site_agent, site_import_limit_w, site_wallboxes,
                                 wallbox_views)
from controllers.profev_sdp import PresenceModel, SdpBattery, pooled_presence
from controllers.profev_site import ProfevSite
from controllers.registry import ControllerKind
from devices.wallbox.model import ev_accept_w

if TYPE_CHECKING:  # pragma: no cover
    from cosim.scenario import ControllerSpec
    from cosim.world import WorldBuilder


class ProfevParams(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    step_s: int = Field(900, gt=0, description="PROFEV's time step (a multiple of the scenario step)")
    replan_s: int = Field(3600, gt=0, description="re-plan everything this often (and each EV at plug-in)")
    horizon_s: int = Field(86400, gt=0)
    history_days: int = Field(14, ge=1, le=366, description="days before the start the forecasts learn from")
    forecast: Literal["history", "perfect"] = Field("history", description="base load: from history (honest) or "
                                                    "the run's truth (a labelled bound)")
    shortfall_penalty_per_kwh: float = Field(1000.0, gt=0, description="per kWh an EV leaves without (kW²h units)")
    declared_departure: bool = Field(True, description="an EV that declares its departure (app / ISO 15118) "
                                     "leaves then for certain; False: every EV follows the chain (the original)")
    ev_grid: float = Field(0.01, gt=0, le=0.1, description="EV grid step (share of its remaining energy)")
    battery_grid: float = Field(0.01, gt=0, le=0.1, description="battery SoC grid step")
    bays: Literal["auto", "stay", "turn_over"] = Field(
        "auto", description="stay: EVs keep their bay until they leave, PROFEV spreads their charging; turn_over: an "
        "EV frees its bay once charged, so PROFEV plans each EV at what it accepts (finish first; LEVChAg shares the "
        "limit least laxity first) and its battery plan flattens the import; auto: turn_over if the wallboxes' EV "
        "fleet unplugs when done")
    levchag: LevchagParams = Field(default_factory=LevchagParams)

    @model_validator(mode="after")
    def _steps(self) -> ProfevParams:
        if 86400 % self.step_s or self.replan_s % self.step_s or self.horizon_s % self.step_s:
            raise ValueError("step_s must divide a day, and replan_s and horizon_s be multiples of it")
        return self


SLOT_INPUTS = ("connected", "e_session_wh", "soc", "ev_energy_wanted_wh", "ev_p_max_w", "ev_id", "ev_phases",
               "ev_departure_t_s")
SITE_INPUTS = ("e_wh", "p_charge_avail_w", "p_discharge_avail_w")
SITE_OUTPUTS = ("plan", "plan_issued_s", "p_set_w", "solve_ms")
META = {
    "api_version": "3.0",
    "type": "time-based",
    "models": {
        "Site": {"public": True, "params": ["params", "site", "wallboxes", "presence", "base_w", "battery",
                                            "start_unix_s", "import_limit_w"],
                 "attrs": [*SITE_INPUTS, *SITE_OUTPUTS]},
        "Slot": {"public": False, "params": [], "attrs": list(SLOT_INPUTS)},
    },
}


class _Site:
    def __init__(self, params: ProfevParams, site: str, wallboxes: list[dict], presence: dict, base_w: list[float],
                 battery: dict | None, start_unix_s: float, import_limit_w: float | None = None) -> None:
        self.params, self.site = params, site
        self.names = [w["id"] for w in wallboxes]
        self.hw_w = np.array([w["p_hw_max_w"] for w in wallboxes], float)
        self.cv = np.array([w.get("cv_soc", 0.9) for w in wallboxes], float)
        self.floor = np.array([w.get("taper_floor", 0.1) for w in wallboxes], float)
        self.min_w_per_phase = np.array([w.get("min_current_a", 6.0) * w.get("voltage_v", 230.0) for w in wallboxes])
        self.phases = np.array([w.get("phases", 3) for w in wallboxes], float)
        self.battery = SdpBattery(**battery) if battery else None
        # the battery plans to the import limit LEVChAg keeps, less the margin it keeps for the rest of the site
        # (the base load is a forecast: the building may draw more than it says)
        limit = site_import_limit_w(params.levchag, import_limit_w)
        self.plan_limit_w = math.inf if limit is None else limit - params.levchag.margin_w
        self.core = ProfevSite(params.step_s, PresenceModel(np.asarray(presence["p_stay"]),
                                                           np.asarray(presence["p_arrive"])),
                               battery=self.battery, horizon_steps=params.horizon_s // params.step_s,
                               shortfall_penalty_per_kwh=params.shortfall_penalty_per_kwh, ev_grid=params.ev_grid,
                               battery_grid=params.battery_grid,
                               # an EV frees its bay once charged: a bay-hour is what serves the next EV (who may
                               # come any time), so each EV gets what it accepts and finishes first (LEVChAg keeps
                               # the import limit, least laxity first); the battery plans against that profile
                               finish_first=params.bays == "turn_over", import_limit_w=self.plan_limit_w)
        self.base_w = np.asarray(base_w, float)  # whole run + one horizon, per PROFEV step
        self.start_unix_s = float(start_unix_s)
        # the session each plan belongs to: (EV id, at-plan energy)
        self.session: list[tuple[Any, float] | None] = [None] * len(self.names)
        self.last_plan_k = -10 ** 9
        self.plan: list[dict] | None = None
        self.plan_issued_s = -1.0
        self.p_set_w = 0.0
        self.solve_ms = 0.0
        self.powers = dict.fromkeys(self.names, 0.0)  # the plan's per-wallbox powers as last published
        self.solves = {"periodic": 0, "plug_in": 0, "unplug": 0}  # re-plans by their cause

    def _base(self, k: int) -> np.ndarray:
        idx = np.clip(np.arange(k, k + self.core.horizon_steps), 0, self.base_w.size - 1)
        return self.base_w[idx]

    def step(self, time: int, slot: dict[str, np.ndarray], site: dict[str, float]) -> None:
        """Every scenario step: at PROFEV's steps the plan is re-published (and re-solved every ``replan_s``);
        between them only when an EV plugged in or left, and then only for what changed."""
        p = self.params
        k, at_step = time // p.step_s, time % p.step_s == 0
        plugged = np.nan_to_num(slot["connected"]) > 0.5
        e_sess = np.nan_to_num(slot["e_session_wh"])
        ev_id = np.nan_to_num(slot["ev_id"])
        # a session ends when its EV unplugs or the next EV in the queue takes the wallbox (a new id, or the
        # session energy drops); a session starts when a plugged-in wallbox has none
        ended = [i for i, sess in enumerate(self.session)
                 if sess is not None and (not plugged[i] or ev_id[i] != sess[0] or e_sess[i] < sess[1] - 1.0)]
        periodic = at_step and k - self.last_plan_k >= p.replan_s // p.step_s
        if not (at_step or ended or any(plugged[i] and s is None for i, s in enumerate(self.session))):
            return  # nothing changed since the last plan: it stands
        declared = np.nan_to_num(slot["ev_energy_wanted_wh"])
        remaining = np.where(declared > 0, np.maximum(declared - e_sess, 0.0), 10_000.0)
        ev_max = np.where(np.nan_to_num(slot["ev_p_max_w"]) > 0, slot["ev_p_max_w"], self.hw_w)
        soc = slot["soc"]
        accept = np.minimum(self.hw_w, np.where(np.isfinite(soc), ev_accept_w(np.nan_to_num(soc), ev_max, self.cv,
                                                                               self.floor), ev_max))
        ev_phases = np.where(np.nan_to_num(slot["ev_phases"]) > 0, np.minimum(slot["ev_phases"], self.phases),
                             self.phases)
        p_min = self.min_w_per_phase * ev_phases
        dep_s = np.nan_to_num(slot["ev_departure_t_s"])
        dep = [int(math.ceil(d / p.step_s)) if p.declared_departure and d > 0 else None for d in dep_s]
        bsoc = math.nan
        if self.battery is not None and math.isfinite(site.get("e_wh", math.nan)):
            bsoc = site["e_wh"] / self.battery.capacity_wh
        # an EV that left while the plan still counted on it: re-solve what depended on it
        left_early = any(self.core.counted_on_wh(k, i) > 1.0 for i in ended)
        for i in ended:
            self.core.evs.pop(i, None)
            self.session[i] = None
        full = periodic or (left_early and not self.core.finish_first)  # the others were planned around it
        solved = battery_solved = False
        if full:
            evs = {int(i): (float(remaining[i]), float(accept[i]), float(p_min[i]), dep[i])
                   for i in np.flatnonzero(plugged)}
            self.core.plan(k, self._base(k), evs, bsoc)
            self.session = [(ev_id[i], float(e_sess[i])) if plugged[i] else None for i in range(len(self.names))]
            solved = battery_solved = True
            self.solves["periodic" if periodic else "unplug"] += 1
            if periodic:
                self.last_plan_k = k
        elif left_early and self.core.replan_battery(k, self._base(k), bsoc):
            solved = battery_solved = True
            self.solves["unplug"] += 1
        changed = set(ended)
        for i in range(len(self.names)):
            if plugged[i] and self.session[i] is None:  # plugged in since: plan this EV alone, now
                self.core.add_ev(k, i, float(remaining[i]), float(accept[i]), float(p_min[i]), self._base(k), dep[i])
                self.session[i] = (ev_id[i], float(e_sess[i]))
                self.solves["plug_in"] += 1
                changed.add(i)
                solved = True
        if changed - set(ended) and not full and self.core.replan_battery(k, self._base(k), bsoc):
            battery_solved = True  # it was planned around the EVs there were (the morning peak: 38 -> 22 kW)
        if solved:
            self.plan_issued_s = float(time)
            self.solve_ms = self.core.solve_ms
        # at PROFEV's steps and after a full re-plan every EV's power is new; otherwise only the changed ones
        redo = range(len(self.names)) if at_step or full else sorted(changed)
        for i in redo:
            sess = self.session[i]
            w = self.core.ev_power_w(k, i, float(e_sess[i]) - sess[1]) if sess is not None else 0.0
            if p.bays == "turn_over":  # at what each EV accepts now (its taper), until done
                w = min(w, float(accept[i]))
            self.powers[self.names[i]] = w
        self.plan = plan_to_senml(self.site, self.start_unix_s + time, 2 * p.step_s, dict(self.powers))
        if at_step or battery_solved:
            pb = self.core.battery_power_w(k, bsoc)
            hi, lo = site.get("p_charge_avail_w", math.inf), site.get("p_discharge_avail_w", math.inf)
            self.p_set_w = float(np.clip(pb, -lo if math.isfinite(lo) else -math.inf,
                                         hi if math.isfinite(hi) else math.inf))


class ProfevSim(mosaik_api_v3.Simulator):
    def __init__(self) -> None:
        super().__init__(META)
        self.sites: dict[str, _Site] = {}
        self.slot_of: dict[str, tuple[str, int]] = {}
        self.step_size = 60

    def init(self, sid: str, time_resolution: float = 1.0, step_size: int = 60, **_: Any) -> Meta:
        self.step_size = int(step_size)
        return self.meta

    # mosaik passes the model's parameters by keyword (narrower than the base's **model_params)
    def create(self, num: int, model: str, params: dict | None = None, site: str = "site",  # type: ignore[override]
               wallboxes: list[dict] | None = None, presence: dict | None = None, base_w: list[float] | None = None,
               battery: dict | None = None, start_unix_s: float = 0.0,
               import_limit_w: float | None = None) -> list[CreateResult]:
        if model != "Site":
            raise ValueError("create Site entities; their Slot children come with them")
        p = ProfevParams.model_validate(params or {})
        if p.step_s % self.step_size:
            raise ValueError(f"PROFEV step_s ({p.step_s} s) must be a multiple of the scenario step "
                             f"({self.step_size} s)")
        per_day = 86400 // p.step_s
        presence = presence or {"p_stay": [1.0] * per_day, "p_arrive": [0.0] * per_day}
        out: list[CreateResult] = []
        for _ in range(num):
            eid = f"Profev_{len(self.sites)}"
            wbs = list(wallboxes or [])
            self.sites[eid] = _Site(p, site, wbs, presence, base_w or [0.0], battery, start_unix_s, import_limit_w)
            children: list[CreateResult] = []
            for i in range(len(wbs)):
                cid = f"{eid}.slot_{i}"
                self.slot_of[cid] = (eid, i)
                children.append({"eid": cid, "type": "Slot"})
            out.append({"eid": eid, "type": "Site", "children": children})
        return out

    def step(self, time: int, inputs: dict, max_advance: int) -> int:
        slots = {e: {a: np.full(len(s.names), np.nan) for a in SLOT_INPUTS} for e, s in self.sites.items()}
        site_in: dict[str, dict[str, float]] = {e: {} for e in self.sites}
        for eid, attrs in inputs.items():
            vals = {n: [v for v in src.values() if v is not None] for n, src in attrs.items()}
            if eid in self.slot_of:
                seid, i = self.slot_of[eid]
                for n, got in vals.items():
                    if got:
                        slots[seid][n][i] = float(sum(got))
            else:
                site_in[eid] = {n: float(sum(got)) for n, got in vals.items() if got}
        for eid, s in self.sites.items():
            s.step(time, slots[eid], site_in[eid])
        return time + self.step_size

    def get_data(self, outputs: dict) -> dict:
        data = {}
        for eid, attrs in outputs.items():
            s = self.sites[eid]
            row: dict[str, Any] = {}
            for a in attrs:
                if a == "plan":
                    row[a] = s.plan
                elif a in ("plan_issued_s", "p_set_w", "solve_ms"):
                    row[a] = float(getattr(s, a))
            data[eid] = row
        return data


# -- scenario wiring ---------------------------------------------------------------------------------------------

def fleet_presence(builder: WorldBuilder, wallbox_ids: list[str], step_s: int, days: int) -> tuple[dict, list]:
    """The presence chain per step of the day from the history of the fleet these wallboxes belong to, and the
    history's sessions."""
    from simulators.ev_fleet import fleet_history

    sc = builder.scenario
    for index, fleet in enumerate(sc.ev_fleets):  # noqa: B007 - the matched fleet's index is used below
        if set(wallbox_ids) & set(fleet.wallboxes):
            break
    else:
        per_day = 86400 // step_s
        return {"p_stay": [1.0] * per_day, "p_arrive": [0.0] * per_day}, []
    kw = [dict(kind=f.kind, connectors=len(f.wallboxes), evs_per_day=f.evs_per_day,
               unplug_when_done=f.unplug_when_done, working_days=f.working_days, plug_probability=f.plug_probability,
               distance_km_mean=f.distance_km_mean, ev_types=f.ev_types, groups=f.groups, name=f.id,
               session_model=f.session_model) for f in sc.ev_fleets]
    evs = fleet_history(start=sc.start.isoformat(), timezone=sc.timezone, seed=sc.seed, step_s=builder.step_s,
                        sites=kw, index=index, days=days)
    first = -days * 86400 + _midnight_offset_s(builder)
    sessions = [(e.t_arrival_s - first, e.t_departure_s - first) for e in evs]
    model = pooled_presence(sessions, step_s=step_s)
    return {"p_stay": model.p_stay.tolist(), "p_arrive": model.p_arrive.tolist()}, evs


def _midnight_offset_s(builder: WorldBuilder) -> int:
    """Seconds from the local midnight before the start to the start (the chain is per step of the local day)."""
    st = builder.scenario.start
    return -(st.hour * 3600 + st.minute * 60 + st.second)


def base_load_w(builder: WorldBuilder, site_id: str, params: ProfevParams) -> list[float]:
    """The site's load minus its PV (W) per PROFEV step over the run plus one horizon: the mean of the same step
    of the day over the history days (``forecast: history``), or the run's truth (``forecast: perfect``)."""
    from controllers.profess import truth_series
    from devices import registry as device_registry
    from simulators.profiles import load_profile, pv_profile

    sc, site = builder.scenario, builder.sites[site_id]
    kwp = 0.0
    for dev_id in site.devices:
        d = builder.device_specs[dev_id]
        cfg = device_registry.family(d.family).parse_config(d.config)
        kwp += float(getattr(cfg, "pv_kwp", 0.0) or 0.0)
    n = (sc.duration + params.horizon_s) // params.step_s
    if params.forecast == "perfect":
        load = truth_series(builder, site.load, "p_w", params.step_s, params.horizon_s)
        pv = truth_series(builder, site.pv, "w_per_kwp", params.step_s, params.horizon_s)
        lo = np.zeros(n) if load is None else np.asarray(load)[:n]
        pvv = np.zeros(n) if pv is None else np.asarray(pv)[:n]
        return (lo - kwp * pvv).tolist()
    days = params.history_days
    start = sc.start - timedelta(days=days)
    per_day = 86400 // params.step_s
    hist = np.zeros(days * per_day)
    if site.spec.load is not None:
        ref = site.spec.load
        hist += load_profile(ref.source, ref.column, start=start, duration_s=days * 86400, step_s=params.step_s,
                             scale=ref.scale, power_factor=ref.power_factor, path=str(ref.path) if ref.path else None,
                             code=sc.grid.code, element=ref.element, timezone=sc.timezone)
    pv_ref = site.spec.pv_profile or sc.profiles.pv
    if pv_ref is not None and kwp > 0:
        hist -= kwp * pv_profile(pv_ref.source, pv_ref.column, start=start, duration_s=days * 86400,
                                 step_s=params.step_s, scale=pv_ref.scale,
                                 path=str(pv_ref.path) if pv_ref.path else None, code=sc.grid.code,
                                 element=pv_ref.element, timezone=sc.timezone)
    day = hist.reshape(days, per_day).mean(axis=0)  # the start's time of day is step 0 of each history day
    return np.resize(day, n).tolist()


def bays_mode(bays: str, fleets: list, wallbox_ids: list[str]) -> str:
    """``bays`` with ``auto`` resolved: ``turn_over`` if every EV fleet at these wallboxes unplugs its EVs once
    charged (the bays turn over), else ``stay``."""
    if bays != "auto":
        return bays
    mine = [fl for fl in fleets if set(fl.wallboxes) & set(wallbox_ids)]
    return "turn_over" if mine and all(fl.unplug_when_done for fl in mine) else "stay"


def _build(builder: WorldBuilder, spec: ControllerSpec, params: ProfevParams) -> None:
    from devices import registry as device_registry

    if params.step_s % builder.step_s:
        raise builder.loaded.error(("controllers",), f"controller {spec.id!r}: step_s ({params.step_s} s) must be a "
                                   f"multiple of the scenario step ({builder.step_s} s)")
    sim = builder.sim("Profev", "controllers.profev:ProfevSim")
    batteries = {d.site: d for d in builder.select_devices(spec.devices, needs_battery=True) if d.site}
    for site_id, wbs in site_wallboxes(builder, spec).items():
        agent = site_agent(builder, spec, site_id, wbs, params.levchag)
        site_params = params.model_copy(update={"bays": bays_mode(params.bays, builder.scenario.ev_fleets, wbs)})
        presence, _ = fleet_presence(builder, wbs, params.step_s, params.history_days)
        bat_dev = batteries.get(site_id)
        battery = None
        if bat_dev is not None:
            from controllers.profess import device_battery

            sb, _ = device_battery(builder, bat_dev)
            battery = dict(capacity_wh=sb.capacity_wh, p_charge_max_w=sb.p_charge_max_w,
                           p_discharge_max_w=sb.p_discharge_max_w, soc_min=sb.soc_min, soc_max=sb.soc_max,
                           eta_charge=sb.eta_charge, eta_discharge=sb.eta_discharge)
        ctl = builder.add_entity(sim.Site(params=site_params.model_dump(), site=site_id,
                                          wallboxes=wallbox_views(builder, wbs), presence=presence,
                                          base_w=base_load_w(builder, site_id, params), battery=battery,
                                          start_unix_s=builder.scenario.start.timestamp(),
                                          import_limit_w=builder.sites[site_id].spec.contract_import_w))
        smx = f"smx:{site_id}"
        for slot, wid in zip(ctl.children, wbs):
            builder.add_entity(slot)
            builder.connect(builder.devices[wid], slot, "connected", "e_session_wh", "soc", role=smx,
                            sender_kind="device")
            bay = builder.ev_bays.get(wid)
            if bay is not None:
                builder.world.connect(bay, slot, "ev_energy_wanted_wh", "ev_p_max_w", "ev_id", "ev_phases",
                                    "ev_departure_t_s")
        builder.connect(ctl, agent, "plan", "plan_issued_s", role=smx, sender_kind="controller")
        if bat_dev is not None:
            device = builder.devices[bat_dev.id]
            builder.connect(device, ctl, "e_wh", "p_charge_avail_w", "p_discharge_avail_w", role=smx,
                            sender_kind="device")
            setpoint = device_registry.family(bat_dev.family).battery_setpoint
            assert setpoint is not None  # a device selected with needs_battery
            builder.connect(ctl, device, ("p_set_w", setpoint), role=smx, sender_kind="controller",
                            time_shifted=True, initial_data={"p_set_w": 0.0})
            builder.record(ctl, "p_set_w", "controllers", f"{spec.id}/{bat_dev.id}.p_set_w")
            # LEVChAg sees the battery's next power as the EVs' next limits are set (the import limit holds)
            builder.connect(ctl, agent, ("p_set_w", "battery_set_w"), role=smx, sender_kind="controller")
        builder.record(ctl, "solve_ms", "controllers", f"{spec.id}/{site_id}.solve_ms")


PROFEV = ControllerKind("profev", ProfevParams, _build,
                        "EVs and site battery by stochastic dynamic programming (presence chain from session "
                        "history), executed by LEVChAg")
