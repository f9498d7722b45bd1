"""The Bucharest site controller: an Energy Router's battery, PV limit, grid-port limit and DC-link exchange.

Kind ``er_site`` (params :class:`ErSiteParams`), one entity per controlled Energy Router (a family with the
setpoints ``batt_p_w``, ``pv_limit_w``, ``p_limit_w``, ``link_p_w`` and ``mode``). It sees the router's and its
site's PCC measurements of the previous step over the site's SMX role (the same SenML topics as every local loop)
and sends setpoints that apply one step later. The router's own modes (island, black start, resynchronisation)
run in the router; while it is not grid-connected the controller holds its commands.

``strategy``:

- ``s4g``: self-consumption with the battery (``batt_p_w``: the site's PCC towards 0), a reserve for outages
  (``soc_reserve``); **congestion avoidance**: in the peak hours the PCC import is capped at ``import_limit_w``
  (the grid port is limited, the battery covers the rest) and the battery is charged to ``soc_peak`` before them;
  **curtailment avoidance**: a PV surplus the battery cannot store and the PCC must not export (over
  ``export_limit_w``) goes over the DC link to the neighbour's router (``neighbour``) while the neighbour draws
  from its grid, and only then is PV limited (mode RPPT, ``pv_limit_w``).
- ``rule_based``: self-consumption with the battery only (the usual home-battery rule); no reserve, no peak
  hours, no link, no curtailment.

(The router without any controller runs its firmware's self-consumption: the "no ER control" variant.)
"""

from __future__ import annotations

import datetime as dt
from typing import TYPE_CHECKING, Any, Literal
from zoneinfo import ZoneInfo

import mosaik_api_v3
from mosaik_api_v3.types import Meta
import numpy as np
from pydantic import BaseModel, ConfigDict, Field, field_validator

from cosim.controller_kinds import ControllerKind

if TYPE_CHECKING:  # pragma: no cover
    from cosim.build_context import BuildContext
    from cosim.scenario import ControllerSpec

GRID_STATE = 6  # the router's state code when grid-connected (devices/energy_router: STATE_NAMES)
MODE_RPPT, MODE_MPPT = 2, 3
INPUTS = ("pcc_p_w", "p_w", "batt_p_w", "soc", "pv_p_w", "pv_curtail_w", "state", "nb_p_w", "nb_soc", "nb_state")
OUTPUTS = ("batt_set_w", "link_set_w", "nb_link_set_w", "p_limit_set_w", "pv_limit_set_w", "mode_set")
_CLOCK = r"^(([01]\d|2[0-3]):[0-5]\d|24:00)$"


class ErSiteParams(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    strategy: Literal["s4g", "rule_based"] = "s4g"
    neighbour: str | None = Field(None, description="device id of the neighbour's router on the DC link (s4g)")
    import_limit_w: float | None = Field(None, gt=0, description="PCC import cap in the peak hours (s4g)")
    peak_hours: tuple[str, str] = Field(("17:00", "21:00"), description="[from, to) local time of the cap")
    export_limit_w: float = Field(0.0, ge=0, description="PCC export above this is avoided (s4g)")
    soc_reserve: float = Field(0.3, ge=0, le=1, description="SoC kept for outages outside the peak hours (s4g)")
    soc_peak: float = Field(0.9, ge=0, le=1, description="SoC to reach before the peak hours (s4g)")
    precharge_h: float = Field(3.0, gt=0, le=12, description="hours before the peak in which to reach soc_peak")
    link_min_w: float = Field(20.0, ge=0, description="smallest exchange worth sending over the link")

    @field_validator("peak_hours")
    @classmethod
    def _clock(cls, v: tuple[str, str]) -> tuple[str, str]:
        import re

        for item in v:
            if not re.match(_CLOCK, item):
                raise ValueError(f"expected local clock times HH:MM, found {item!r}")
        return v


def _minutes(hhmm: str) -> int:
    h, m = hhmm.split(":")
    return int(h) * 60 + int(m)


def in_window(minute: int, start: int, end: int) -> bool:
    """Whether a minute of the day is in [start, end) (a window may wrap over midnight)."""
    return start <= minute < end if start <= end else minute >= start or minute < end


class ErSiteSim(mosaik_api_v3.Simulator):
    """One entity per router; setpoints (+ = charge / import, W) from the previous step's measurements."""

    def __init__(self) -> None:
        super().__init__({"api_version": "3.0", "type": "time-based",
                          "models": {"ErSite": {"public": True, "params": ["params", "router", "start", "timezone"],
                                                "attrs": [*INPUTS, *OUTPUTS]}}})
        self.step_size = 60
        self.ents: dict[str, dict[str, Any]] = {}
        self.out: dict[str, dict[str, float]] = {}

    def init(self, sid: str, time_resolution: float = 1.0, step_size: int = 60, **_: Any) -> Meta:
        self.step_size = int(step_size)
        return self.meta

    # mosaik passes the model's parameters by keyword (narrower than the base's **model_params)
    def create(self, num: int, model: str, params: dict, router: dict, start: str, timezone: str | None) -> list:  # type: ignore[override]
        eid = f"er_site_{len(self.ents)}"
        self.ents[eid] = {"p": ErSiteParams.model_validate(params), "router": router,
                          "start": dt.datetime.fromisoformat(start), "tz": ZoneInfo(timezone) if timezone else None}
        self.out[eid] = initial_outputs(router)
        return [{"eid": eid, "type": model}]

    def step(self, time: int, inputs: dict, max_advance: int) -> int:
        for eid, ent in self.ents.items():
            got = {a: _value(s) for a, s in inputs.get(eid, {}).items()}
            self.out[eid] = decide(ent["p"], ent["router"], self._minute(ent, time + self.step_size), got,
                                   self.out[eid])
        return time + self.step_size

    def _minute(self, ent: dict[str, Any], t_s: int) -> int:
        """Local minute of the day at which the setpoints apply."""
        when = ent["start"] + dt.timedelta(seconds=t_s)
        if ent["tz"] is not None:
            when = when.astimezone(ent["tz"])
        return when.hour * 60 + when.minute

    def get_data(self, outputs: dict) -> dict:
        return {eid: {a: self.out[eid][a] for a in attrs} for eid, attrs in outputs.items()}


def initial_outputs(router: dict[str, float]) -> dict[str, float]:
    """What the controller asks before it has seen anything: battery idle, no limits, no exchange."""
    return {"batt_set_w": 0.0, "link_set_w": 0.0, "nb_link_set_w": 0.0, "p_limit_set_w": router["inv_p_max_w"],
            "pv_limit_set_w": router["pv_peak_w"], "mode_set": float(MODE_MPPT)}


def _value(sources: dict[str, Any]) -> float:
    values = [v for v in sources.values() if v is not None]
    return float(sum(values)) if values else float("nan")


def decide(p: ErSiteParams, router: dict[str, float], minute: int, m: dict[str, float],
           held: dict[str, float]) -> dict[str, float]:
    """One step's setpoints from the last measurements ``m`` (NaN: not received) and the last ones sent."""
    nan = float("nan")
    needed = ("pcc_p_w", "batt_p_w", "soc", "state")
    if any(not np.isfinite(m.get(k, nan)) for k in needed) or m["state"] != GRID_STATE:
        return held  # no data, or the router runs its own island / black start / resync: hold the last commands
    cap_c, cap_d = router["p_charge_max_w"], router["p_discharge_max_w"]
    soc, soc_min, soc_max = m["soc"], router["soc_min"], router["soc_max"]
    # self-consumption: the battery takes over the site's net exchange
    target = m["batt_p_w"] - m["pcc_p_w"]
    out = dict(held)
    out.update(link_set_w=0.0, nb_link_set_w=0.0, p_limit_set_w=router["inv_p_max_w"], mode_set=float(MODE_MPPT),
               pv_limit_set_w=router["pv_peak_w"])
    full, empty = soc >= soc_max - 2e-3, soc <= soc_min + 2e-3
    if p.strategy == "rule_based":
        out["batt_set_w"] = _feasible(float(np.clip(target, -cap_d, cap_c)), full, empty)
        return out
    start, end = _minutes(p.peak_hours[0]), _minutes(p.peak_hours[1])
    peak = in_window(minute, start, end)
    before_peak = in_window(minute, (start - int(p.precharge_h * 60)) % 1440, start)
    if peak and p.import_limit_w is not None:
        # congestion: the grid port cannot import more than the cap; the battery covers the rest
        out["p_limit_set_w"] = min(p.import_limit_w, router["inv_p_max_w"])
        target = max(target, 0.0) if m["pcc_p_w"] < 0 else target
    elif before_peak and soc < p.soc_peak:
        # charge towards the peak's level within the hours left, from PV first, the grid making up the rest
        left_h = max(((start - minute) % 1440) / 60.0, 0.25)
        need_w = (p.soc_peak - soc) * router["capacity_wh"] / left_h
        # from the grid only up to the peak's import cap: pre-charging must not make a new peak of its own
        cap = p.import_limit_w if p.import_limit_w is not None else router["inv_p_max_w"]
        room = cap - (m["pcc_p_w"] - m["batt_p_w"])
        target = max(target, min(need_w, room))
    elif soc <= p.soc_reserve:
        target = max(target, 0.0)  # keep the outage reserve: charge from surplus only, never discharge
    batt = _feasible(float(np.clip(target, -cap_d, cap_c)), full, empty)
    out["batt_set_w"] = batt
    # curtailment avoidance: what the PCC would export beyond the limit with this battery power and all the PV
    # available (what is produced plus what is curtailed now)
    curtailed = max(m.get("pv_curtail_w", 0.0), 0.0) if np.isfinite(m.get("pv_curtail_w", nan)) else 0.0
    net = m["pcc_p_w"] - m["batt_p_w"] - curtailed  # the site without its battery, PV unlimited
    excess = -(net + batt) - p.export_limit_w
    if excess > 0 and not peak:
        link = 0.0
        nb_soc = m.get("nb_soc", nan)
        if p.neighbour is not None and m.get("nb_state", nan) == GRID_STATE and np.isfinite(nb_soc) \
                and (nb_soc < router["nb_soc_max"] - 0.01 or m.get("nb_p_w", 0.0) > 0):
            link = min(excess, router["link_max_w"])
        if link >= p.link_min_w:
            out["link_set_w"] = -link  # + = import at this router's terminal
            out["nb_link_set_w"] = link
            excess -= link
        if excess > 1.0:
            # the last resort: limit PV to what is available minus what can go nowhere
            available = max(-m.get("pv_p_w", 0.0), 0.0) + curtailed
            out["mode_set"] = float(MODE_RPPT)
            out["pv_limit_set_w"] = float(max(available - excess, 0.0))
    return out


def _feasible(batt: float, full: bool, empty: bool) -> float:
    """Ask only for what the battery can do: no charge when full, no discharge when empty."""
    return min(batt, 0.0) if full else max(batt, 0.0) if empty else batt


def _build(builder: BuildContext, spec: ControllerSpec, params: BaseModel) -> None:
    from devices import registry as device_registry

    assert isinstance(params, ErSiteParams)
    sim = builder.sim("ErSite", "controllers.er_site:ErSiteSim")
    needed = {"batt_p_w", "pv_limit_w", "p_limit_w", "link_p_w", "mode"}
    nb_ent = None
    if params.neighbour is not None:
        if params.neighbour not in builder.devices:
            raise builder.loaded.error(("controllers",), f"controller {spec.id!r}: neighbour {params.neighbour!r} is "
                                       "not a device of the scenario")
        nb_ent = builder.devices[params.neighbour]
    for dev in builder.select_devices(spec.devices):
        if dev.id == params.neighbour:
            continue
        fam = device_registry.family(dev.family)
        cfg: Any = fam.parse_config(dev.config)
        if not needed <= set(fam.capabilities(cfg).setpoints):
            raise builder.loaded.error(("controllers",), f"controller {spec.id!r} (er_site): device {dev.id!r} of "
                                       f"family {dev.family!r} lacks the setpoints {sorted(needed)}")
        site = builder.site_of(dev.id)
        if site is None:
            raise builder.loaded.error(("controllers",), f"controller {spec.id!r}: device {dev.id!r} has no site")
        nb_cfg: Any = None
        if params.neighbour is not None:
            nb_spec = builder.select_devices([params.neighbour])[0]
            nb_cfg = device_registry.family(nb_spec.family).parse_config(nb_spec.config)
        b = cfg.battery
        router = {"p_charge_max_w": b.p_charge_max_w, "p_discharge_max_w": b.p_discharge_max_w, "soc_min": b.soc_min,
                  "soc_max": b.soc_max, "capacity_wh": b.capacity_wh, "inv_p_max_w": cfg.inv_p_max_w,
                  "pv_peak_w": max(cfg.pv_kwp * 1000.0, 1.0), "link_max_w": cfg.link_max_w,
                  "nb_soc_max": nb_cfg.battery.soc_max if nb_cfg is not None else 1.0}
        ctl = builder.add_entity(sim.ErSite(params=params.model_dump(), router=router,
                                            start=builder.scenario.start.isoformat(),
                                            timezone=builder.scenario.timezone))
        device = builder.devices[dev.id]
        smx = f"smx:{site.spec.id}"
        builder.connect(site.pcc, ctl, ("p_w", "pcc_p_w"), role=smx, sender_kind="device")
        builder.connect(device, ctl, "p_w", "batt_p_w", "soc", "pv_p_w", "pv_curtail_w", "state", role=smx,
                        sender_kind="device")
        pairs = [("batt_set_w", "batt_p_w"), ("p_limit_set_w", "p_limit_w"), ("pv_limit_set_w", "pv_limit_w"),
                 ("mode_set", "mode"), ("link_set_w", "link_p_w")]
        initial = initial_outputs(router)
        builder.connect(ctl, device, *pairs, role=smx, sender_kind="agent", time_shifted=True,
                        initial_data={a: initial[a] for a, _ in pairs})
        if nb_ent is not None:
            builder.connect(nb_ent, ctl, ("p_w", "nb_p_w"), ("soc", "nb_soc"), ("state", "nb_state"), role=smx,
                            sender_kind="device")
            builder.connect(ctl, nb_ent, ("nb_link_set_w", "link_p_w"), role=smx, sender_kind="agent",
                            time_shifted=True, initial_data={"nb_link_set_w": 0.0})
        for attr in OUTPUTS:
            builder.record(ctl, attr, "controllers", f"{spec.id}/{dev.id}.{attr}")


ER_SITE = ControllerKind("er_site", ErSiteParams, _build,
                         "Energy Router site: self-consumption, outage reserve, peak-hour import cap, DC-link exchange "
                         "before curtailment (Bucharest)")
