"""Baselines for EV charging control, to compare smart charging against.

* uncontrolled: every wallbox at its hardware maximum (the EV charges at full power from plug-in).
* equal share: a site limit divided equally among the EVs that want power; when the share would fall below
  what an EV can take (IEC 61851 minimum current), the first EVs (by wallbox order) get the minimum and the
  rest pause until a share frees up.

Plain functions on arrays plus one small mosaik simulator (``EVBaseline``: a ``Site`` entity whose child
``Slot`` entities are wired one-to-one to wallboxes: wallbox -> slot ``connected``, ``status`` (time-shifted),
slot -> wallbox ``p_max_w``). Setpoints are rounded down to 0.1 W, the resolution of OCPP charging profiles,
so a sim:// and an OCPP run receive identical limits.
"""

from __future__ import annotations

import math
from typing import Any

import mosaik_api_v3
from mosaik_api_v3.types import CreateResult, Meta
import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from controllers.registry import ControllerKind

SUSPENDED_EV = 4  # the EV does not want more (wallbox status code)


def floor_01(x: np.ndarray) -> np.ndarray:
    return np.floor(np.asarray(x, dtype=float) * 10.0 + 1e-6) / 10.0


def uncontrolled_limits(p_hw_max_w: np.ndarray) -> np.ndarray:
    """Full power everywhere."""
    return floor_01(p_hw_max_w)


def equal_share_limits(wants: np.ndarray, site_limit_w: float, p_hw_max_w: np.ndarray,
                       p_min_w: np.ndarray) -> np.ndarray:
    """Per-wallbox power limits sharing ``site_limit_w`` equally among the wallboxes whose EV ``wants`` power.

    Wallboxes without such an EV get 0: an arriving EV starts at the next control cycle, so the site limit
    holds even when several EVs arrive at once (the controller sees measurements one step late).
    """
    wants = np.asarray(wants, dtype=bool)
    hw = np.asarray(p_hw_max_w, dtype=float)
    p_min = np.asarray(p_min_w, dtype=float)
    n = int(wants.sum())
    limits = np.zeros(hw.shape)
    if n == 0:
        return limits
    idx = np.flatnonzero(wants)
    share = site_limit_w / n
    if share < float(np.max(p_min[idx])):
        k = int(site_limit_w // float(np.max(p_min[idx]))) if np.max(p_min[idx]) > 0 else n
        idx = idx[:k]
        share = site_limit_w / k if k else 0.0
    limits[idx] = np.minimum(share, hw[idx])
    return floor_01(np.maximum(limits, 0.0))


META = {
    "api_version": "3.0",
    "type": "time-based",
    "models": {
        "Site": {"public": True, "params": ["kind", "n", "site_limit_w", "p_hw_max_w", "p_min_w"], "attrs": []},
        "Slot": {"public": False, "params": [], "attrs": ["connected", "status", "p_max_w"]},
    },
}


class EVBaselineSim(mosaik_api_v3.Simulator):
    def __init__(self) -> None:
        super().__init__(META)
        self.sites: dict[str, dict[str, Any]] = {}
        self.slot_of: dict[str, tuple[str, int]] = {}
        self.step_size = 60

    def init(self, sid: str, time_resolution: float = 1.0, step_size: int = 60, **_: Any) -> Meta:
        self.step_size = int(step_size)
        return self.meta

    # mosaik passes the model's parameters by keyword (narrower than the base's **model_params)
    def create(self, num: int, model: str, kind: str = "equal_share", n: int = 1, site_limit_w: float = math.inf,  # type: ignore[override]
               p_hw_max_w: float = 22_080.0, p_min_w: float = 4_140.0) -> list[CreateResult]:
        if kind not in ("equal_share", "uncontrolled"):
            raise ValueError(f"kind must be 'equal_share' or 'uncontrolled', not {kind!r}")
        out: list[CreateResult] = []
        for _ in range(num):
            eid = f"{kind}_{len(self.sites)}"
            self.sites[eid] = {"kind": kind, "limit": float(site_limit_w), "hw": np.full(n, float(p_hw_max_w)),
                               "min": np.full(n, float(p_min_w)), "wants": np.zeros(n, dtype=bool),
                               "out": floor_01(np.full(n, float(p_hw_max_w)))}
            children: list[CreateResult] = []
            for i in range(n):
                cid = f"{eid}.slot_{i}"
                self.slot_of[cid] = (eid, i)
                children.append({"eid": cid, "type": "Slot"})
            out.append({"eid": eid, "type": "Site", "children": children})
        return out

    def step(self, time: int, inputs: dict, max_advance: int) -> int:
        for cid, attrs in inputs.items():
            eid, i = self.slot_of[cid]
            conn = next(iter(attrs.get("connected", {0: 0.0}).values()))
            status = next(iter(attrs.get("status", {0: 0.0}).values()))
            ok = conn is not None and math.isfinite(conn) and conn > 0.5
            self.sites[eid]["wants"][i] = ok and not (status is not None and status == SUSPENDED_EV)
        for site in self.sites.values():
            if site["kind"] == "uncontrolled":
                site["out"] = uncontrolled_limits(site["hw"])
            else:
                site["out"] = equal_share_limits(site["wants"], site["limit"], site["hw"], site["min"])
        return time + self.step_size

    def get_data(self, outputs: dict) -> dict:
        data = {}
        for cid, attrs in outputs.items():
            eid, i = self.slot_of[cid]
            data[cid] = {a: float(self.sites[eid]["out"][i]) for a in attrs if a == "p_max_w"}
        return data


# -- scenario wiring (controllers.registry) ----------------------------------------------------------------------

class _EvLimitParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    site_limit_w: float = Field(math.inf, gt=0, description="power the wallboxes may draw together")
    p_min_w: float = Field(4_140.0, ge=0, description="below this an EV is paused (6 A x 3 x 230 V)")


def _build(kind: str):
    def build(builder: Any, spec: Any, params: _EvLimitParams) -> None:
        from devices import registry as device_registry

        wallboxes = [d for d in builder.select_devices(spec.devices) if d.family == "wallbox"]
        if not wallboxes:
            raise builder.loaded.error(("controllers",), f"controller {spec.id!r} controls no wallbox")
        fam = device_registry.family("wallbox")
        hw_max = [fam.capabilities(fam.parse_config(d.config)).setpoints["p_max_w"].max for d in wallboxes]
        site = builder.sim("EVBaselines", "controllers.ev_baselines:EVBaselineSim").Site(
            kind=kind, n=len(wallboxes), site_limit_w=params.site_limit_w, p_hw_max_w=min(hw_max),
            p_min_w=params.p_min_w)
        builder.add_entity(site)
        for slot, dev in zip(site.children, wallboxes):
            device = builder.devices[dev.id]
            builder.add_entity(slot)
            builder.world.connect(device, slot, "connected", "status")
            builder.world.connect(slot, device, "p_max_w", time_shifted=True, initial_data={"p_max_w": min(hw_max)})
            builder.record(slot, "p_max_w", "controllers", f"{spec.id}/{dev.id}.p_max_w")

    return build


EV_UNCONTROLLED = ControllerKind("ev_uncontrolled", _EvLimitParams, _build("uncontrolled"),
                                 "every EV charges at full power from plug-in (reference)")
EV_EQUAL_SHARE = ControllerKind("ev_equal_share", _EvLimitParams, _build("equal_share"),
                                "the site limit is shared equally among the EVs that want power")
