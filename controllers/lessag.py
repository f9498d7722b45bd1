"""LESSAg: the local agent that executes a GESSCon schedule at one site.

Each scenario step the agent

1. reads the latest schedule (a SenML pack of 24 hourly set-points, + = charging) and when it was issued;
2. if the schedule is missing, does not cover the current hour, or is older than ``max_age_s``, falls back
   to rule-based self-consumption (the PCC is driven to zero) and logs the change (``events()`` and the
   numeric output ``fallback`` = 1) - the policy every local agent shares (controllers/upper_layer.py);
3. otherwise follows it: ``mode="direct"`` takes the current hour's set-point and corrects it in real
   time towards the PCC power GESSCon planned (``pcc_gain`` in [0, 1]: 0 = pure schedule, 1 = hold the
   planned PCC exchange whatever the forecast error); ``mode="profess"`` re-plans with PROFESS every
   ``profess.step_s`` with the schedule-following objective (deviation penalised, the site's own
   objective terms as configured) and applies the first step;
4. clips the result to what the battery reports it can deliver now (``p_charge_avail_w``,
   ``p_discharge_avail_w``).

All entities are stepped together with arrays (the direct mode is fully vectorised).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any, Literal

import mosaik_api_v3
from mosaik_api_v3.types import CreateResult, Meta
import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from controllers.baselines import self_consumption_setpoint
from controllers.schedule_codec import from_senml
from controllers.profess import ProfessParams, _Site
from controllers.registry import ControllerKind
from controllers.upper_layer import FallbackLog, plan_age_s, plan_status

if TYPE_CHECKING:  # pragma: no cover
    from cosim.scenario import ControllerSpec
    from cosim.world import WorldBuilder

log = logging.getLogger(__name__)


class LessagParams(BaseModel):
    """``params`` of a ``lessag`` controller (or ``gesscon.params.lessag``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    mode: Literal["direct", "profess"] = "direct"
    max_age_s: int = Field(26 * 3600, gt=0, description="a schedule older than this is stale")
    pcc_gain: float = Field(0.0, ge=0, le=1, description="direct mode: share of the PCC deviation compensated")
    import_cap_w: float | None = Field(None, gt=0, description="either mode: discharge (or charge less) so that the "
                                       "PCC import the site's meter reads stays at or below this, as far as the "
                                       "battery can (the SMX sees loads no forecast knows, e.g. an EV)")
    profess: ProfessParams = Field(default_factory=lambda: ProfessParams(objective="follow_schedule"))


INPUTS = ("schedule", "schedule_issued_s", "pcc_plan_w", "pcc_p_w", "batt_p_w", "e_wh", "p_charge_avail_w",
          "p_discharge_avail_w", "load_p_w", "pv_w_per_kwp", "v_pu")
OUTPUTS = ("p_set_w", "fallback", "schedule_age_s")
META = {
    "api_version": "3.0",
    "type": "time-based",
    "models": {"Lessag": {"public": True,
                          "params": ["params", "start_unix_s", "battery", "pv_kwp", "pv_eta", "pv_max_w",
                                     "load_truth_w", "pv_truth_w_per_kwp", "import_eur_per_kwh",
                                     "export_eur_per_kwh", "start_tod_s"],
                          "attrs": [*INPUTS, *OUTPUTS]}},
    "extra_methods": ["events"],
}


class LessagSim(mosaik_api_v3.Simulator):
    def __init__(self) -> None:
        super().__init__(META)
        self.eids: list[str] = []
        self.params: list[LessagParams] = []
        self.start_unix: list[float] = []
        self.profess: dict[str, _Site] = {}
        self.step_size = 60
        self.p_set_w = np.zeros(0)
        self.fallback = np.zeros(0)
        self.age_s = np.zeros(0)
        self._log = FallbackLog("LESSAg", "self-consumption")
        # eid -> (content key of the pack, decoded)
        self._decoded: dict[str, tuple[Any, tuple[float, np.ndarray] | None]] = {}

    def init(self, sid: str, time_resolution: float = 1.0, step_size: int = 60, **_: Any) -> Meta:
        self.step_size = int(step_size)
        return self.meta

    # mosaik passes the model's parameters by keyword (narrower than the base's **model_params)
    def create(self, num: int, model: str, params: dict | None = None, start_unix_s: float = 0.0,  # type: ignore[override]
               battery: dict | None = None, pv_kwp: float = 0.0, pv_eta: float = 1.0, pv_max_w: float | None = None,
               load_truth_w=None, pv_truth_w_per_kwp=None, import_eur_per_kwh=None, export_eur_per_kwh=None,
               start_tod_s: int = 0) -> list[CreateResult]:
        p = LessagParams.model_validate(params or {})
        out: list[CreateResult] = []
        for _ in range(num):
            eid = f"Lessag_{len(self.eids)}"
            self.eids.append(eid)
            self.params.append(p)
            self.start_unix.append(float(start_unix_s))
            if p.mode == "profess":
                if battery is None:
                    raise ValueError("LESSAg in profess mode needs the battery description")
                from controllers.profess_problem import SiteBattery

                if p.profess.step_s % self.step_size:
                    raise ValueError("profess.step_s must be a multiple of the scenario step")
                self.profess[eid] = _Site(p.profess, SiteBattery.model_validate(battery), pv_kwp, pv_eta, pv_max_w,
                                          load_truth_w, pv_truth_w_per_kwp, import_eur_per_kwh, export_eur_per_kwh,
                                          start_tod_s)
            out.append({"eid": eid, "type": model})
        n = len(self.eids)
        self.p_set_w = np.zeros(n)
        self.fallback = np.zeros(n)
        self.age_s = np.full(n, np.nan)
        return out

    # -- helpers ----------------------------------------------------------------------------------------
    def _decode(self, eid: str, pack) -> tuple[float, np.ndarray] | None:
        if not pack:
            return None
        try:  # content key: a re-issued pack with other values must be decoded again
            key = (str(pack[0].get("bn")), pack[0].get("bt"), tuple(r.get("v") for r in pack))
        except (AttributeError, TypeError, IndexError):
            key = None
        cached = self._decoded.get(eid)
        if cached is not None and cached[0] == key:
            return cached[1]
        try:
            _, t0, v = from_senml(pack)
            dec = (t0, v)
        except ValueError as exc:
            log.warning("LESSAg %s: rejected schedule (%s)", eid, exc)
            dec = None
        self._decoded[eid] = (key, dec)
        return dec

    def events(self) -> list[dict]:
        """Fallback changes: ``{"t_s", "eid", "event": "fallback"|"resume", "reason"}``."""
        return self._log.events()

    def step(self, time: int, inputs: dict, max_advance: int) -> int:
        n = len(self.eids)
        idx = {eid: i for i, eid in enumerate(self.eids)}
        num = {name: np.full(n, np.nan) for name in INPUTS if name != "schedule"}
        packs: list[Any] = [None] * n
        for eid, attrs in inputs.items():
            i = idx[eid]
            for name, sources in attrs.items():
                got = [v for v in sources.values() if v is not None]
                if not got:
                    continue
                if name == "schedule":
                    packs[i] = got[0]
                else:
                    num[name][i] = float(sum(got))
        sched = np.full(n, np.nan)
        reason = [""] * n
        decoded: list[tuple[float, np.ndarray] | None] = [None] * n
        for i, eid in enumerate(self.eids):
            now = self.start_unix[i] + time
            dec = decoded[i] = self._decode(eid, packs[i])
            self.age_s[i] = plan_age_s(time, num["schedule_issued_s"][i])
            h = int(np.floor((now - dec[0]) / 3600.0)) if dec is not None else -1
            reason[i] = plan_status(dec is not None, dec is not None and 0 <= h < dec[1].size, self.age_s[i],
                                    self.params[i].max_age_s)
            if not reason[i]:
                assert dec is not None  # no reason: the schedule decoded and covers now
                sched[i] = dec[1][h]
        ok = np.isfinite(sched)
        sc = self_consumption_setpoint(num["pcc_p_w"], num["batt_p_w"], num["p_charge_avail_w"],
                                       num["p_discharge_avail_w"])
        gain = np.array([p.pcc_gain for p in self.params])
        # Direct mode: schedule + gain * (battery power that would hold the planned PCC - schedule).
        hold = num["pcc_plan_w"] - (num["pcc_p_w"] - num["batt_p_w"])
        corr = np.where(np.isfinite(hold), gain * (hold - np.nan_to_num(sched)), 0.0)
        p = np.nan_to_num(sched) + corr
        following = []  # the PROFESS sites with a schedule that decoded and covers now
        for i, eid in enumerate(self.eids):
            if eid in self.profess:
                site = self.profess[eid]
                site.observe(time // site.params.step_s, num["load_p_w"][i], num["pv_w_per_kwp"][i])
                dec = decoded[i]
                if ok[i] and dec is not None:
                    following.append((i, site, dec))
        self._plan_due(following, time, num)
        for i, site, _ in following:
            p[i] = site.setpoint(time // site.params.step_s, num["p_charge_avail_w"][i], num["p_discharge_avail_w"][i])
        hi = np.where(np.isfinite(num["p_charge_avail_w"]), num["p_charge_avail_w"], np.inf)
        lo = np.where(np.isfinite(num["p_discharge_avail_w"]), -num["p_discharge_avail_w"], -np.inf)
        p = np.where(ok, p, sc)
        # the import cap acts on the metered PCC: what the site draws besides the battery, plus the battery
        cap = np.array([np.inf if q.import_cap_w is None else q.import_cap_w for q in self.params])
        rest = num["pcc_p_w"] - num["batt_p_w"]
        p = np.where(np.isfinite(rest), np.minimum(p, cap - rest), p)
        p = np.clip(p, lo, hi)
        self.fallback = self._log.update(time, self.eids, reason)
        self.p_set_w = np.where(np.isfinite(p), p, 0.0)
        return time + self.step_size

    def _plan_due(self, following: list[tuple[int, _Site, tuple[float, np.ndarray]]], time: int, num: dict) -> None:
        """Re-plan every following site whose MPC step starts now (or that has no plan yet) and whose stored energy
        is known: all sites of this simulator in one batched solve (:func:`controllers.profess_model.solve_many`,
        the same plans as one solve per site). A failed solve keeps the site's previous plan."""
        from controllers.profess_model import solve_many

        due, inputs = [], []
        for i, site, schedule in following:
            mpc = site.params.step_s
            k = time // mpc
            if (time % mpc == 0 or site.plan is None) and np.isfinite(num["e_wh"][i]):
                due.append((site, k))
                inputs.append(self._cycle_inputs(site, k, self.start_unix[i] + k * mpc, schedule, num, i))
        if not due:
            return
        for (site, k), res in zip(due, solve_many([site.profess for site, _ in due], inputs, time)):
            if res.status == "optimal":
                site.plan, site.plan_k, site.objective, site.ok = res, k, res.objective, 1.0

    @staticmethod
    def _cycle_inputs(site: _Site, k: int, now0: float, schedule: tuple[float, np.ndarray], num: dict, i: int):
        """What PROFESS knows at MPC step ``k`` (starting at UNIX time ``now0``): forecasts, prices, the battery now
        and the schedule's hourly set-points at each planned step (NaN where it says nothing)."""
        from controllers.profess_problem import CycleInputs

        t0, v = schedule
        h = np.floor((now0 + site.params.step_s * np.arange(site.n) - t0) / 3600.0).astype(int)
        sched = np.where((h >= 0) & (h < v.size), v[np.clip(h, 0, v.size - 1)], np.nan)
        load = site.load_fc.forecast(k, site.n)
        pv = np.minimum(site.pv_fc.forecast(k, site.n) * site.pv_kwp, site.pv_max_w) * site.pv_eta
        ca, da = num["p_charge_avail_w"][i], num["p_discharge_avail_w"][i]
        return CycleInputs(load_w=load, pv_w=pv, e0_wh=num["e_wh"][i], import_eur_per_kwh=site._window(site.ci, k),
                           export_eur_per_kwh=site._window(site.ce, k), schedule_w=sched,
                           p_charge_avail_w=ca if np.isfinite(ca) else None,
                           p_discharge_avail_w=da if np.isfinite(da) else None)

    def get_data(self, outputs: dict) -> dict:
        idx = {eid: i for i, eid in enumerate(self.eids)}
        data = {}
        for eid, attrs in outputs.items():
            i = idx[eid]
            row = {}
            for a in attrs:
                if a == "p_set_w":
                    row[a] = float(self.p_set_w[i])
                elif a == "fallback":
                    row[a] = float(self.fallback[i])
                elif a == "schedule_age_s":
                    row[a] = float(self.age_s[i])
            data[eid] = row
        return data


# --- scenario wiring ------------------------------------------------------------------------------------

def wire_lessag(builder: WorldBuilder, spec: ControllerSpec, params: LessagParams, dev, site, schedule_src) -> Any:
    """Create the agent of one device and connect it: schedule source (a GESSCon Site entity), device, PCC."""
    from controllers.profess import device_battery, price_series, start_tod_s, truth_series
    from devices import registry as device_registry

    sim = builder.sim("Lessag", "controllers.lessag:LessagSim")
    extra: dict[str, Any] = {}
    if params.mode == "profess":
        battery, pv = device_battery(builder, dev)
        pp = params.profess
        extra = dict(battery=battery.model_dump(), **pv, start_tod_s=start_tod_s(builder))
        if pp.forecast == "perfect":
            extra["load_truth_w"] = truth_series(builder, site.load, "p_w", pp.step_s, pp.horizon_s)
            extra["pv_truth_w_per_kwp"] = truth_series(builder, site.pv, "w_per_kwp", pp.step_s, pp.horizon_s)
        extra["import_eur_per_kwh"], extra["export_eur_per_kwh"] = price_series(builder, pp.step_s, pp.horizon_s)
    agent = builder.add_entity(sim.Lessag(params=params.model_dump(), start_unix_s=builder.scenario.start.timestamp(),
                                          **extra))
    device = builder.devices[dev.id]
    if schedule_src is not None:
        # GESSCon's schedule comes down over the Control Broker
        builder.connect(schedule_src, agent, "schedule", "schedule_issued_s", "pcc_plan_w", role="control")
    smx = f"smx:{site.spec.id}"  # the site's own SMX broker carries the local loop
    builder.connect(device, agent, "batt_p_w", "e_wh", "p_charge_avail_w", "p_discharge_avail_w", role=smx,
                    sender_kind="device")
    builder.connect(site.pcc_reading, agent, ("p_w", "pcc_p_w"), role=smx, sender_kind="device")
    if site.load is not None:
        builder.world.connect(site.load, agent, ("p_w", "load_p_w"))
    if site.pv is not None:
        builder.world.connect(site.pv, agent, ("w_per_kwp", "pv_w_per_kwp"))
    setpoint = device_registry.family(dev.family).battery_setpoint
    assert setpoint is not None  # a device selected with needs_battery
    builder.connect(agent, device, ("p_set_w", setpoint), role=smx, sender_kind="agent", time_shifted=True,
                    initial_data={"p_set_w": 0.0})
    builder.record(agent, "p_set_w", "controllers", f"{spec.id}/{dev.id}.p_set_w")
    builder.record(agent, "fallback", "controllers", f"{spec.id}/{dev.id}.fallback")
    return agent


def _build(builder: WorldBuilder, spec: ControllerSpec, params: LessagParams) -> None:
    """A stand-alone ``lessag`` controller has no GESSCon in the scenario: it runs in fallback (logged)
    unless the lead routes a schedule to its ``schedule`` input (e.g. from the message bus)."""
    for dev in builder.select_devices(spec.devices, needs_battery=True):
        site = builder.site_of(dev.id)
        if site is None:
            if spec.devices == "*":
                continue
            raise builder.loaded.error(("controllers",), f"controller {spec.id!r}: device {dev.id!r} has no site")
        wire_lessag(builder, spec, params, dev, site, None)


LESSAG = ControllerKind("lessag", LessagParams, _build,
                        "local agent executing a GESSCon schedule (direct or via PROFESS), self-consumption fallback")
