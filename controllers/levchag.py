"""LEVChAg: the local EV charging agent in a site's SMX. It sets every wallbox's charging limit (a charging
profile when the wallbox is reached over OCPP; the CSMS driver confirms it) each step so that

* the site's import stays within its limit: the EVs get at most ``import_limit_w - (PCC - EVs) - margin_w``,
  where ``PCC - EVs`` is the rest of the site as last measured (load, PV, battery; with the change of the
  battery's setpoint for the next step when the site's battery is PROFEV's), and never more than
  ``site_limit_w`` or the DSO's envelope for the hour (GEVChCon) when one is valid;
* EVs are served least-laxity-first: laxity = time to the declared departure minus the time the remaining
  energy takes at the power the EV accepts now (an EV that declared nothing comes last);
* an EV it charges gets at least the IEC 61851 minimum current (6 A on its phases), otherwise 0: never a limit
  in between (the EVSE would pause it anyway and the power would be lost to the others);
* with a valid plan from the upper layer (PROFEV's per-wallbox powers, SenML), each EV gets at most its planned
  power (rounded to 0 or the minimum), and when the limits above cannot give every EV its plan, the least
  laxity goes first; without one —
  missing, expired or stale, the policy of every local agent (controllers/upper_layer.py) — it falls back to
  its safe schedule: least-laxity-first up to the limits, logged (``events()``, output ``fallback``).

Inputs per wallbox (``Slot``): the wallbox's ``connected``, ``status``, ``p_w``, ``soc``, ``e_session_wh`` and
the EV driver's declaration at plug-in (from the fleet: ``ev_departure_t_s``, ``ev_energy_wanted_wh``,
``ev_p_max_w``, ``ev_phases``). Per site: ``pcc_p_w``, ``plan`` + ``plan_issued_s``, ``envelope`` +
``envelope_issued_s``. Output per wallbox: ``p_max_w`` (time-shifted to the wallbox), rounded down to the
0.1 W resolution of charging profiles so sim:// and OCPP runs see the same limits.
"""

from __future__ import annotations

import logging
import math
import time as _time
from typing import TYPE_CHECKING, Any, cast

import mosaik_api_v3
from mosaik_api_v3.types import CreateResult, Meta
import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from controllers.ev_baselines import SUSPENDED_EV, floor_01
from controllers.ev_scheduling import MIN_CURRENT_A, allocate
from controllers.registry import ControllerKind
from controllers.upper_layer import FallbackLog, plan_age_s, plan_status
from devices.wallbox.model import WallboxConfig, ev_accept_w

if TYPE_CHECKING:  # pragma: no cover
    from cosim.scenario import ControllerSpec
    from cosim.world import WorldBuilder

log = logging.getLogger(__name__)

PLAN_NAME = "p_ev"


class LevchagParams(BaseModel):
    """``params`` of a ``levchag`` controller (or ``profev.params.levchag`` / ``gevchcon.params.levchag``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    import_limit_w: float | None = Field(None, gt=0, description="site import limit; default: the site's "
                                         "contract_import_w (none: only site_limit_w)")
    site_limit_w: float = Field(math.inf, gt=0, description="what the wallboxes may draw together")
    margin_w: float = Field(2000.0, ge=0, description="kept free below the import limit: the rest of the site "
                            "may rise within one control step")
    max_age_s: int = Field(7200, gt=0, description="a plan older than this is stale")


def site_import_limit_w(params: LevchagParams, contract_import_w: float | None) -> float | None:
    """The import limit a site's LEVChAg keeps (and PROFEV's battery plans to): its own ``import_limit_w``, else
    the site's contract; None: no limit."""
    return params.import_limit_w or contract_import_w


# -- the upper layer's plan on the wire (SenML, RFC 8428) --------------------------------------------------------

def plan_to_senml(site: str, t_unix_s: float, valid_s: float, powers_w: dict[str, float]) -> list[dict]:
    """Per-wallbox powers (W) valid from ``t_unix_s`` for ``valid_s`` (SenML ``ut``) as one pack."""
    pack = [{"n": f"{wb}/{PLAN_NAME}", "v": float(p)} for wb, p in powers_w.items()]
    head = {"bn": f"{site}/", "bt": float(t_unix_s), "bu": "W", "ut": float(valid_s)}
    return [{**head, **pack[0]}, *pack[1:]] if pack else [head]


def plan_from_senml(pack: Any, max_records: int = 1024) -> tuple[float, float, dict[str, float]]:
    """(valid from, valid for, {wallbox: W}) from :func:`plan_to_senml`'s pack; ValueError on anything else."""
    if not isinstance(pack, list) or not pack or len(pack) > max_records:
        raise ValueError(f"a plan is a non-empty list of at most {max_records} SenML records")
    if not isinstance(pack[0], dict) or "bt" not in pack[0] or "ut" not in pack[0]:
        raise ValueError("the first record needs the base time 'bt' and the validity 'ut'")
    bn, bt, bu = "", 0.0, None
    t0, ut = _finite(pack[0]["bt"], "bt"), _finite(pack[0]["ut"], "ut")
    out: dict[str, float] = {}
    for rec in pack:
        if not isinstance(rec, dict):
            raise ValueError("SenML records are objects")
        bn = rec.get("bn", bn)
        bt = _finite(rec.get("bt", bt), "bt")
        bu = rec.get("bu", bu)
        if "n" not in rec and "v" not in rec:
            continue  # a header record (empty plan)
        if not isinstance(bn, str) or not isinstance(rec.get("n"), str) or not rec["n"].endswith(f"/{PLAN_NAME}"):
            raise ValueError(f"record names are '<wallbox>/{PLAN_NAME}'")
        if rec.get("u", bu) != "W":
            raise ValueError("plan values are in W")
        v = _finite(rec.get("v"), "v")
        if v < 0:
            raise ValueError("a charging power is never negative")
        if bt != t0:
            raise ValueError("all records of a plan share its base time")
        out[rec["n"][: -len(PLAN_NAME) - 1]] = v
    if ut <= 0:
        raise ValueError("'ut' must be positive")
    return t0, ut, out


def _finite(x: Any, what: str) -> float:
    if isinstance(x, bool) or not isinstance(x, (int, float)) or not math.isfinite(x):
        raise ValueError(f"{what!r} must be a finite number")
    return float(x)


# -- the decision ------------------------------------------------------------------------------------------------

def decide(wants: np.ndarray, remaining_wh: np.ndarray, accept_w: np.ndarray, p_min_w: np.ndarray,
           departure_s: np.ndarray, now_s: float, step_s: float, budget_w: float,
           target_w: np.ndarray | None = None) -> np.ndarray:
    """Limits (W) for one site: least-laxity-first within ``budget_w``, each EV at >= its minimum or 0.

    ``remaining_wh`` may be inf (nothing declared), ``departure_s`` NaN (nothing declared: last in line).
    ``target_w`` (the upper layer's powers) caps each EV; a target below the minimum that does not finish the
    EV is rounded to the minimum or to 0, whichever is nearer."""
    want = np.where(wants, np.minimum(accept_w, remaining_wh * 3600.0 / step_s), 0.0)
    if target_w is not None:
        t = np.nan_to_num(target_w)
        # a target that finishes the EV is kept (it draws less than the minimum); others are rounded
        t = np.where((t < p_min_w) & (t < want - 1e-6), np.where(t >= p_min_w / 2, p_min_w, 0.0), t)
        want = np.minimum(want, t)
    with np.errstate(invalid="ignore", divide="ignore"):
        laxity = np.where(np.isfinite(departure_s),
                          departure_s - now_s - np.where(np.isfinite(remaining_wh), remaining_wh, 0.0) * 3600.0
                          / np.maximum(accept_w, 1e-9), np.inf)
    # an EV nearly done still draws its minimum power when its step starts (the PCC is measured then): count
    # it at that, not at the little energy it still wants, or the EVs' limits add up to more than the budget
    want = np.where(want > 0, np.maximum(want, np.minimum(p_min_w, accept_w)), want)
    idx = np.flatnonzero(want > 0)
    order = idx[np.lexsort((idx, laxity[idx]))]
    return allocate(order, want, p_min_w, max(budget_w, 0.0))


SLOT_INPUTS = ("connected", "status", "p_w", "soc", "e_session_wh", "ev_departure_t_s", "ev_energy_wanted_wh",
               "ev_p_max_w", "ev_phases")
SITE_INPUTS = ("pcc_p_w", "plan", "plan_issued_s", "envelope", "envelope_issued_s", "battery_set_w")
SITE_OUTPUTS = ("fallback", "budget_w", "ev_p_w", "decide_ms", "plan_age_s")
META = {
    "api_version": "3.0",
    "type": "time-based",
    "models": {
        "Site": {"public": True, "params": ["params", "site", "wallboxes", "import_limit_w", "start_unix_s"],
                 "attrs": [*SITE_INPUTS, *SITE_OUTPUTS]},
        "Slot": {"public": False, "params": [], "attrs": [*SLOT_INPUTS, "p_max_w"]},
    },
    "extra_methods": ["events"],
}


class _Site:
    def __init__(self, eid: str, params: LevchagParams, site: str, wallboxes: list[dict], import_limit_w: float | None,
                 start_unix_s: float) -> None:
        self.eid, self.params, self.site = eid, params, site
        self.names = [w["id"] for w in wallboxes]
        n = len(wallboxes)
        self.hw_w = np.array([w["p_hw_max_w"] for w in wallboxes], float)
        self.min_a = np.array([w.get("min_current_a", MIN_CURRENT_A) for w in wallboxes], float)
        self.volt = np.array([w.get("voltage_v", 230.0) for w in wallboxes], float)
        self.phases = np.array([w.get("phases", 3) for w in wallboxes], float)
        self.cv = np.array([w.get("cv_soc", 0.9) for w in wallboxes], float)
        self.floor = np.array([w.get("taper_floor", 0.1) for w in wallboxes], float)
        self.import_limit_w = site_import_limit_w(params, import_limit_w)
        self.start_unix_s = float(start_unix_s)
        self.out = np.zeros(n)
        self.fallback = 0.0
        self.budget_w = 0.0
        self.ev_p_w = 0.0
        self.decide_ms = 0.0
        self.plan_age_s = math.nan
        self._decoded: tuple[Any, Any] = (None, None)
        #: the site battery's setpoint the measured PCC was made with (its controller's initial one is 0 W)
        self._battery_set_w = 0.0

    def _plan(self, pack: Any) -> tuple[float, float, dict[str, float]] | None:
        # decoded once per pack: the pack itself is kept, so a new pack can never pass for it (an id could)
        if pack is not None and self._decoded[0] is pack:
            return self._decoded[1]
        try:
            dec = plan_from_senml(pack) if pack else None
        except ValueError as exc:
            log.warning("LEVChAg %s: rejected plan (%s)", self.site, exc)
            dec = None
        self._decoded = (pack, dec)
        return dec

    def step(self, time: int, step_s: int, slot: dict[str, np.ndarray], site: dict[str, Any]) -> str:
        t0 = _time.perf_counter()
        now_unix = self.start_unix_s + time
        connected = np.nan_to_num(slot["connected"]) > 0.5
        wants = connected & (slot["status"] != SUSPENDED_EV)
        p_w = np.nan_to_num(slot["p_w"])
        self.ev_p_w = float(p_w.sum())
        cap = self.params.site_limit_w
        pcc = site.get("pcc_p_w", math.nan)
        if self.import_limit_w is not None:
            rest = pcc - self.ev_p_w if math.isfinite(pcc) else 0.0  # the site without its EVs
            # our limits act at the next step, and so does the battery's new setpoint (when its controller, PROFEV,
            # tells us): a battery that stops discharging then must not find the EVs charging into its share
            bat = site.get("battery_set_w", math.nan)
            if math.isfinite(bat):
                rest += bat - self._battery_set_w
                self._battery_set_w = bat
            cap = min(cap, self.import_limit_w - rest - self.params.margin_w)
        env = _hourly(site.get("envelope"), now_unix, time, site.get("envelope_issued_s", math.nan), 26 * 3600)
        if env is not None:
            cap = min(cap, env)
        plan = self._plan(site.get("plan"))
        self.plan_age_s = plan_age_s(time, site.get("plan_issued_s", math.nan))
        covers = plan is not None and plan[0] <= now_unix < plan[0] + plan[1]
        reason = plan_status(plan is not None, covers, self.plan_age_s, self.params.max_age_s)
        target = None
        if not reason:
            assert plan is not None  # no reason: the plan exists and covers now
            target = np.array([plan[2].get(n, 0.0) for n in self.names])
        declared = np.nan_to_num(slot["ev_energy_wanted_wh"])
        remaining = np.where(declared > 0, np.maximum(declared - np.nan_to_num(slot["e_session_wh"]), 0.0), np.inf)
        ev_max = np.where(np.nan_to_num(slot["ev_p_max_w"]) > 0, slot["ev_p_max_w"], self.hw_w)
        ev_phases = np.where(np.nan_to_num(slot["ev_phases"]) > 0, np.minimum(slot["ev_phases"], self.phases),
                             self.phases)
        soc = slot["soc"]
        accept = np.minimum(self.hw_w, np.where(np.isfinite(soc), ev_accept_w(np.nan_to_num(soc), ev_max, self.cv,
                                                                               self.floor), ev_max))
        p_min = self.min_a * self.volt * ev_phases
        dep = np.where(np.nan_to_num(slot["ev_departure_t_s"]) > 0, slot["ev_departure_t_s"], np.nan)
        limits = decide(wants, remaining, accept, p_min, dep, time, step_s, cap, target)
        self.out = floor_01(limits)
        self.budget_w = float(max(cap, 0.0))
        self.decide_ms = (_time.perf_counter() - t0) * 1e3
        return reason


def _hourly(pack: Any, now_unix: float, time: int, issued_s: Any, max_age_s: float) -> float | None:
    """The value of an hourly SenML schedule (controllers.gesscon format) valid now, or None."""
    if not pack:
        return None
    from controllers.schedule_codec import from_senml

    try:
        _, t0, v = from_senml(pack)
    except (ValueError, TypeError):
        return None
    h = int(np.floor((now_unix - t0) / 3600.0))
    age = plan_age_s(time, issued_s if isinstance(issued_s, (int, float)) else math.nan)
    if not 0 <= h < v.size or plan_status(True, True, age, max_age_s):
        return None
    return float(v[h])


class LevchagSim(mosaik_api_v3.Simulator):
    def __init__(self) -> None:
        super().__init__(META)
        self.sites: dict[str, _Site] = {}
        self.slot_of: dict[str, tuple[str, int]] = {}
        self.step_size = 60
        self._log = FallbackLog("LEVChAg", "least-laxity-first within the site limits")

    def init(self, sid: str, time_resolution: float = 1.0, step_size: int = 60, **_: Any) -> Meta:
        self.step_size = int(step_size)
        return self.meta

    # mosaik passes the model's parameters by keyword (narrower than the base's **model_params)
    def create(self, num: int, model: str, params: dict | None = None, site: str = "site",  # type: ignore[override]
               wallboxes: list[dict] | None = None, import_limit_w: float | None = None,
               start_unix_s: float = 0.0) -> list[CreateResult]:
        if model != "Site":
            raise ValueError("create Site entities; their Slot children come with them")
        p = LevchagParams.model_validate(params or {})
        out: list[CreateResult] = []
        for _ in range(num):
            eid = f"Levchag_{len(self.sites)}"
            self.sites[eid] = _Site(eid, p, site, list(wallboxes or []), import_limit_w, start_unix_s)
            children: list[CreateResult] = []
            for i in range(len(wallboxes or [])):
                cid = f"{eid}.slot_{i}"
                self.slot_of[cid] = (eid, i)
                children.append({"eid": cid, "type": "Slot"})
            out.append({"eid": eid, "type": "Site", "children": children})
        return out

    def step(self, time: int, inputs: dict, max_advance: int) -> int:
        slots = {eid: {a: np.full(len(s.names), np.nan) for a in SLOT_INPUTS} for eid, s in self.sites.items()}
        site_in: dict[str, dict[str, Any]] = {eid: {} for eid in self.sites}
        for eid, attrs in inputs.items():
            if eid in self.slot_of:
                seid, i = self.slot_of[eid]
                for name, sources in attrs.items():
                    got = [v for v in sources.values() if v is not None]
                    if got:
                        slots[seid][name][i] = float(sum(got))
            else:
                for name, sources in attrs.items():
                    got = [v for v in sources.values() if v is not None]
                    if not got:
                        continue
                    site_in[eid][name] = got[0] if name in ("plan", "envelope") else float(sum(got))
        eids = list(self.sites)
        reasons = [self.sites[e].step(time, self.step_size, slots[e], site_in[e]) for e in eids]
        for e, fb in zip(eids, self._log.update(time, eids, reasons)):
            self.sites[e].fallback = float(fb)
        return time + self.step_size

    def get_data(self, outputs: dict) -> dict:
        data = {}
        for eid, attrs in outputs.items():
            if eid in self.slot_of:
                seid, i = self.slot_of[eid]
                data[eid] = {a: float(self.sites[seid].out[i]) for a in attrs if a == "p_max_w"}
            else:
                s = self.sites[eid]
                data[eid] = {a: float(getattr(s, a)) for a in attrs if a in SITE_OUTPUTS}
        return data

    def events(self) -> list[dict]:
        return self._log.events()


# -- scenario wiring ---------------------------------------------------------------------------------------------

def wallbox_views(builder: WorldBuilder, wallbox_ids: list[str]) -> list[dict]:
    """What LEVChAg and PROFEV need to know of each wallbox from its configuration."""
    from devices import registry as device_registry

    fam = device_registry.family("wallbox")
    out = []
    for wid in wallbox_ids:
        cfg = cast(WallboxConfig, fam.parse_config(builder.device_specs[wid].config))
        out.append({"id": wid, "p_hw_max_w": cfg.p_hw_max_w, "min_current_a": cfg.min_current_a,
                    "voltage_v": cfg.voltage_v, "phases": cfg.phases, "cv_soc": cfg.cv_soc,
                    "taper_floor": cfg.taper_floor})
    return out


def site_wallboxes(builder: WorldBuilder, spec: ControllerSpec) -> dict[str, list[str]]:
    """The controller's wallboxes grouped by site (in scenario order)."""
    by_site: dict[str, list[str]] = {}
    for d in builder.select_devices(spec.devices):
        if d.family != "wallbox":
            continue
        if d.site is None:
            raise builder.loaded.error(("controllers",), f"controller {spec.id!r}: wallbox {d.id!r} has no site "
                                       "(LEVChAg keeps a site's import limit)")
        by_site.setdefault(d.site, []).append(d.id)
    if not by_site:
        raise builder.loaded.error(("controllers",), f"controller {spec.id!r} controls no wallbox")
    return by_site


def site_agent(builder: WorldBuilder, spec: ControllerSpec, site_id: str, wallbox_ids: list[str],
               params: LevchagParams) -> Any:
    """The LEVChAg of a site: created and wired once, shared by the kinds that feed it (PROFEV's plan,
    GEVChCon's envelope)."""
    agents = builder.__dict__.setdefault("_levchag_agents", {})
    if site_id in agents:
        agent, have, have_params = agents[site_id]
        if have != wallbox_ids or have_params != params:
            raise builder.loaded.error(("controllers",), f"controller {spec.id!r}: site {site_id!r} already has a "
                                       "LEVChAg with other wallboxes or parameters")
        return agent
    site = builder.sites[site_id]
    sim = builder.sim("Levchag", "controllers.levchag:LevchagSim")
    agent = builder.add_entity(sim.Site(params=params.model_dump(), site=site_id,
                                        wallboxes=wallbox_views(builder, wallbox_ids),
                                        import_limit_w=site.spec.contract_import_w,
                                        start_unix_s=builder.scenario.start.timestamp()))
    smx = f"smx:{site_id}"  # the site's own SMX broker carries the local loop
    builder.connect(site.pcc, agent, ("p_w", "pcc_p_w"), role=smx, sender_kind="device")
    for slot, wid in zip(agent.children, wallbox_ids):
        builder.add_entity(slot)
        device = builder.devices[wid]
        builder.connect(device, slot, "connected", "status", "p_w", "soc", "e_session_wh", role=smx,
                        sender_kind="device")
        bay = builder.ev_bays.get(wid)
        if bay is not None:  # the EV driver's declaration at plug-in (app / ISO 15118)
            builder.world.connect(bay, slot, "ev_departure_t_s", "ev_energy_wanted_wh", "ev_p_max_w", "ev_phases")
        builder.connect(slot, device, "p_max_w", role=smx, sender_kind="agent", time_shifted=True,
                        initial_data={"p_max_w": 0.0})
        builder.record(slot, "p_max_w", "controllers", f"{spec.id}/{wid}.p_max_w")
    for attr in ("fallback", "budget_w", "decide_ms"):
        builder.record(agent, attr, "controllers", f"{spec.id}/{site_id}.{attr}")
    agents[site_id] = (agent, wallbox_ids, params)
    return agent


def _build(builder: WorldBuilder, spec: ControllerSpec, params: LevchagParams) -> None:
    """Stand-alone LEVChAg: no upper layer, so it runs its safe schedule (logged as a fallback)."""
    for site_id, wbs in site_wallboxes(builder, spec).items():
        site_agent(builder, spec, site_id, wbs, params)


LEVCHAG = ControllerKind("levchag", LevchagParams, _build,
                         "local EV agent: wallbox limits least-laxity-first within the site's import limit, "
                         "executing PROFEV's plan and GEVChCon's envelope when they are valid")
