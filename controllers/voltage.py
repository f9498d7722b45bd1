"""The LiBal site controller: voltage control at the transformer secondary with the grid battery.

Two characteristic curves in the style of EN 50549-1 / IEEE 1547-2018 map the measured voltage (pu) to
set-points, each piecewise linear through four points with a deadband between V2 and V3::

    P(V): (V1, -p1) .. (V2, 0) == (V3, 0) .. (V4, +p4)     volt-watt: discharge when low, charge when high
    Q(V): (V1, -q1) .. (V2, 0) == (V3, 0) .. (V4, +q4)     volt-var: inject when low, absorb when high

(``p1, p4`` as fractions of the battery's discharge/charge rating, ``q1, q4`` of the PCS rating; flat
beyond V1 and V4). Signs follow the framework's load arrow: ``p_w`` + = charging (drawing from the grid,
which lowers the local voltage), ``q_var`` + = absorbing reactive power (also lowers it). IEEE 1547's
default category B volt-var curve (0.92/0.98/1.02/1.08 pu, 44 % of rating) is ``q1 = q4 = 0.44`` here,
with the generator-convention signs flipped.

The set-points then pass a response limit: either a ramp limit (W/s, var/s) or a first-order lag with
time constant ``tau_s`` (the EN 50549 "open-loop response time" is about 3 tau), and finally the battery's
limits: P within what the battery reports available now, Q within what the PCS rating leaves
(``sqrt(S^2 - P^2)``, active power first, as the device does).

:class:`VoltVarWatt` is the pure, vectorised controller; :class:`VoltageSim` its mosaik simulator
(kind ``voltage_control``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal

import mosaik_api_v3
import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

from controllers.registry import ControllerKind

if TYPE_CHECKING:  # pragma: no cover
    from cosim.scenario import ControllerSpec
    from cosim.world import WorldBuilder


class Curve(BaseModel):
    """Four voltages (pu) and the set-points at the ends (fractions of the rating)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    v1: float = 0.92
    v2: float = 0.98
    v3: float = 1.02
    v4: float = 1.08
    low: float = Field(0.44, ge=0, le=1, description="magnitude at V1 and below (discharge / inject)")
    high: float = Field(0.44, ge=0, le=1, description="magnitude at V4 and above (charge / absorb)")
    enabled: bool = True

    @model_validator(mode="after")
    def _order(self) -> "Curve":
        if not self.v1 < self.v2 <= self.v3 < self.v4:
            raise ValueError("expected v1 < v2 <= v3 < v4 (the deadband is [v2, v3])")
        return self

    def __call__(self, v: np.ndarray) -> np.ndarray:
        """The curve's value at ``v`` (fraction of the rating, signed: + = charge / absorb)."""
        if not self.enabled:
            return np.zeros_like(np.asarray(v, dtype=float))
        return np.interp(np.asarray(v, dtype=float), [self.v1, self.v2, self.v3, self.v4],
                         [-self.low, 0.0, 0.0, self.high])


class VoltageParams(BaseModel):
    """``params`` of a ``voltage_control`` controller."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    volt_watt: Curve = Curve(v1=0.90, v2=0.97, v3=1.03, v4=1.08, low=1.0, high=1.0)
    volt_var: Curve = Curve()
    response: Literal["ramp", "first_order", "none"] = "ramp"
    ramp_w_per_s: float = Field(1000.0, gt=0)
    ramp_var_per_s: float = Field(1000.0, gt=0)
    tau_s: float = Field(10.0, gt=0, description="first-order time constant")
    bus: str | None = Field(None, description="measure at this bus of the grid (default: the battery's own connection)")


class VoltVarWatt:
    """Vectorised controller for N batteries (one voltage measurement each)."""

    def __init__(self, params: VoltageParams, p_charge_max_w, p_discharge_max_w, s_max_va) -> None:
        self.params = params
        self.p_charge_max_w = np.atleast_1d(np.asarray(p_charge_max_w, dtype=float))
        self.p_discharge_max_w = np.atleast_1d(np.asarray(p_discharge_max_w, dtype=float))
        self.s_max_va = np.atleast_1d(np.asarray(s_max_va, dtype=float))
        n = self.s_max_va.size
        self.p_w = np.zeros(n)
        self.q_var = np.zeros(n)

    def target(self, v_pu) -> tuple[np.ndarray, np.ndarray]:
        """Static set-points of the curves (before response limits and availability)."""
        v = np.asarray(v_pu, dtype=float)
        fp = self.params.volt_watt(v)
        p = np.where(fp >= 0, fp * self.p_charge_max_w, fp * self.p_discharge_max_w)
        q = self.params.volt_var(v) * self.s_max_va
        return p, q

    def step(self, v_pu, dt_s: float, p_charge_avail_w=None, p_discharge_avail_w=None) -> tuple[np.ndarray, np.ndarray]:
        """Advance by ``dt_s`` towards the curves' set-points; NaN voltage holds the previous set-points."""
        v = np.asarray(v_pu, dtype=float)
        p_t, q_t = self.target(np.where(np.isfinite(v), v, 1.0))
        p_t = np.where(np.isfinite(v), p_t, self.p_w)
        q_t = np.where(np.isfinite(v), q_t, self.q_var)
        pr = self.params
        if pr.response == "ramp":
            dp, dq = pr.ramp_w_per_s * dt_s, pr.ramp_var_per_s * dt_s
            p = self.p_w + np.clip(p_t - self.p_w, -dp, dp)
            q = self.q_var + np.clip(q_t - self.q_var, -dq, dq)
        elif pr.response == "first_order":
            a = 1.0 - np.exp(-dt_s / pr.tau_s)
            p = self.p_w + a * (p_t - self.p_w)
            q = self.q_var + a * (q_t - self.q_var)
        else:
            p, q = p_t, q_t
        hi = self.p_charge_max_w if p_charge_avail_w is None else np.minimum(self.p_charge_max_w, np.nan_to_num(
            np.asarray(p_charge_avail_w, dtype=float), nan=0.0))
        lo = self.p_discharge_max_w if p_discharge_avail_w is None else np.minimum(self.p_discharge_max_w, np.nan_to_num(
            np.asarray(p_discharge_avail_w, dtype=float), nan=0.0))
        p = np.clip(p, -lo, hi)
        q_room = np.sqrt(np.maximum(self.s_max_va**2 - p**2, 0.0))
        q = np.clip(q, -q_room, q_room)
        self.p_w, self.q_var = p, q
        return p.copy(), q.copy()


INPUTS = ("v_pu", "p_charge_avail_w", "p_discharge_avail_w")
META = {
    "api_version": "3.0",
    "type": "time-based",
    "models": {"VoltVarWatt": {"public": True,
                               "params": ["params", "p_charge_max_w", "p_discharge_max_w", "s_max_va"],
                               "attrs": [*INPUTS, "p_w", "q_var", "v_seen_pu"]}},
}


class VoltageSim(mosaik_api_v3.Simulator):
    """All entities with the same params share one vectorised :class:`VoltVarWatt`."""

    def __init__(self) -> None:
        super().__init__(META)
        self.eids: list[str] = []
        self.groups: list[tuple[VoltVarWatt, list[int]]] = []
        self._cfg: list[tuple[dict, float, float, float]] = []
        self.step_size = 60
        self.last_t: int | None = None
        self.v = np.zeros(0)

    def init(self, sid: str, time_resolution: float = 1.0, step_size: int = 60, **_: Any) -> dict:
        self.step_size = int(step_size)
        return self.meta

    def create(self, num: int, model: str, params: dict | None = None, p_charge_max_w: float = 0.0,
               p_discharge_max_w: float = 0.0, s_max_va: float = 0.0) -> list[dict]:
        out = []
        for _ in range(num):
            eid = f"VoltVarWatt_{len(self.eids)}"
            self.eids.append(eid)
            self._cfg.append((params or {}, p_charge_max_w, p_discharge_max_w, s_max_va))
            out.append({"eid": eid, "type": model})
        return out

    def setup_done(self) -> None:
        groups: dict[str, list[int]] = {}
        for i, (params, *_r) in enumerate(self._cfg):
            groups.setdefault(VoltageParams.model_validate(params).model_dump_json(), []).append(i)
        for key, idx in groups.items():
            cfg = [self._cfg[i] for i in idx]
            ctl = VoltVarWatt(VoltageParams.model_validate_json(key), [c[1] for c in cfg], [c[2] for c in cfg],
                              [c[3] for c in cfg])
            self.groups.append((ctl, idx))
        self.v = np.full(len(self.eids), np.nan)

    def step(self, time: int, inputs: dict, max_advance: int) -> int:
        if not self.groups and self.eids:
            self.setup_done()
        n = len(self.eids)
        idx = {eid: i for i, eid in enumerate(self.eids)}
        arr = {name: np.full(n, np.nan) for name in INPUTS}
        for eid, attrs in inputs.items():
            for name, sources in attrs.items():
                got = [v for v in sources.values() if v is not None]
                if got:
                    arr[name][idx[eid]] = float(np.mean(got)) if name == "v_pu" else float(sum(got))
        dt = self.step_size if self.last_t is None else time - self.last_t
        self.last_t = time
        self.v = arr["v_pu"]
        for ctl, members in self.groups:
            m = np.array(members)
            ca, da = arr["p_charge_avail_w"][m], arr["p_discharge_avail_w"][m]
            ctl.step(arr["v_pu"][m], dt, np.where(np.isfinite(ca), ca, ctl.p_charge_max_w),
                     np.where(np.isfinite(da), da, ctl.p_discharge_max_w))
        return time + self.step_size

    def get_data(self, outputs: dict) -> dict:
        where = {}
        for g, (ctl, members) in enumerate(self.groups):
            for j, i in enumerate(members):
                where[self.eids[i]] = (ctl, j, i)
        data = {}
        for eid, attrs in outputs.items():
            ctl, j, i = where[eid] if eid in where else (None, 0, self.eids.index(eid))
            row = {}
            for a in attrs:
                if a == "p_w":
                    row[a] = float(ctl.p_w[j]) if ctl else 0.0
                elif a == "q_var":
                    row[a] = float(ctl.q_var[j]) if ctl else 0.0
                elif a == "v_seen_pu":
                    row[a] = float(self.v[i]) if self.v.size else float("nan")
            data[eid] = row
        return data


def _build(builder: "WorldBuilder", spec: "ControllerSpec", params: VoltageParams) -> None:
    from devices import registry as device_registry

    sim = builder.sim("Voltage", "controllers.voltage:VoltageSim")
    found = False
    for dev in builder.select_devices(spec.devices, needs_battery=True):
        fam = device_registry.family(dev.family)
        if "q_var" not in fam.setpoints:
            continue  # only a PCS with P and Q set-points (the grid battery family)
        cfg = fam.parse_config(dev.config)
        s_max = float(getattr(cfg, "s_max_va", max(cfg.battery.p_charge_max_w, cfg.battery.p_discharge_max_w)))
        ctl = builder.add_entity(sim.VoltVarWatt(params=params.model_dump(), p_charge_max_w=cfg.battery.p_charge_max_w,
                                                 p_discharge_max_w=cfg.battery.p_discharge_max_w, s_max_va=s_max))
        device = builder.devices[dev.id]
        site = builder.site_of(dev.id)
        smx = f"smx:{site.spec.id}" if site is not None else "smx"  # the local loop's broker
        if params.bus is not None:
            buses = {c.eid.removeprefix("bus:"): c for c in builder.grid_children.get("Bus", [])}
            if params.bus not in buses:
                raise builder.loaded.error(("controllers",), f"controller {spec.id!r}: no bus {params.bus!r} in the grid")
            builder.connect(buses[params.bus], ctl, "v_pu", role=smx, sender_kind="device")
        else:
            meter = site.pcc if site is not None else _device_load(builder, dev.id)
            builder.connect(meter, ctl, "v_pu", role=smx, sender_kind="device")
        builder.connect(device, ctl, "p_charge_avail_w", "p_discharge_avail_w", role=smx, sender_kind="device")
        builder.connect(ctl, device, "p_w", "q_var", role=smx, sender_kind="agent", time_shifted=True,
                        initial_data={"p_w": 0.0, "q_var": 0.0})
        for attr in ("p_w", "q_var", "v_seen_pu"):
            builder.record(ctl, attr, "controllers", f"{spec.id}/{dev.id}.{attr}")
        found = True
    if not found:
        raise builder.loaded.error(("controllers",), f"controller {spec.id!r}: no battery with P and Q set-points "
                                   "(family 'battery') among its devices")


def _device_load(builder: "WorldBuilder", device_id: str):
    """The grid's Load entity of a device connected to a bus (``load:dev:<id>``)."""
    for c in builder.grid_children.get("Load", []):
        if c.eid.removeprefix("load:") == f"dev:{device_id}":
            return c
    raise KeyError(f"the grid has no connection entity for device {device_id!r}")


VOLTAGE_CONTROL = ControllerKind("voltage_control", VoltageParams, _build,
                                 "LiBal site controller: volt-watt / volt-var curves with deadband and ramp limits")
