"""The LiBal site controller: voltage control at the transformer secondary with the grid battery.

Two characteristic curves in the style of EN 50549-1 / IEEE 1547-2018 map the measured voltage (pu) to
set-points, each piecewise linear through four points with a deadband between V2 and V3::

    P(V): (V1, -p1) .. (V2, 0) == (V3, 0) .. (V4, +p4)     volt-watt: discharge when low, charge when high
    Q(V): (V1, -q1) .. (V2, 0) == (V3, 0) .. (V4, +q4)     volt-var: inject when low, absorb when high

(``p1, p4`` as fractions of the battery's discharge/charge rating, ``q1, q4`` of the PCS rating; flat
beyond V1 and V4), evaluated at ``v - (v_ref_pu - 1)``: the reference moves both curves. Signs follow the
framework's load arrow: ``p_w`` + = charging (drawing from the grid,
which lowers the local voltage), ``q_var`` + = absorbing reactive power (also lowers it). IEEE 1547's
default category B volt-var curve (0.92/0.98/1.02/1.08 pu, 44 % of rating) is ``q1 = q4 = 0.44`` here,
with the generator-convention signs flipped.

The set-points then pass a response limit: either a ramp limit (W/s, var/s) or a first-order lag with
time constant ``tau_s`` (the EN 50549 "open-loop response time" is about 3 tau), and finally the battery's
limits: P within what the battery reports available now, Q within what the PCS rating leaves
(``sqrt(S^2 - P^2)``, active power first, as the device does).

**On a DSO setpoint.** The reference and the curves can be moved while the run goes: the scenario's ``dso`` list
(``{at: 12h, v_ref_pu: 0.98, volt_watt: {...}}``) is what the DSO publishes, one SenML pack per change on the
Control Broker (records ``v_ref_pu``, ``volt_watt.v1`` .. ``volt_watt.high``, ``volt_watt.enabled``, the same for
``volt_var``); the controller applies a pack from the next step, and refuses (keeps its settings, logs) one that
does not make valid curves. **A planned base power**: when GESSCon plans this battery too, its hourly set-point
arrives as ``p_base_w`` and the volt-watt curve adds to it (the plan is the operating point, the curve the local
correction). **Anywhere on the feeder**: the voltage is measured at the battery's own connection (its site's PCC, or
the bus the device is connected to) unless ``bus`` names another one, so moving the battery down the feeder is the
one line ``bus: <node>`` on the device.

:class:`VoltVarWatt` is the pure, vectorised controller; :class:`VoltageSim` its mosaik simulator
(kind ``voltage_control``).
"""

from __future__ import annotations

import functools
import json
import logging
from typing import TYPE_CHECKING, Annotated, Any, Literal

import mosaik_api_v3
from mosaik_api_v3.types import CreateResult, Meta
import numpy as np
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, model_validator

from controllers.registry import ControllerKind
from controllers.wiring import battery_base
from devices.arrays import clip
from cosim.durations import whole_seconds

if TYPE_CHECKING:  # pragma: no cover
    from cosim.scenario import ControllerSpec
    from cosim.world import WorldBuilder

log = logging.getLogger(__name__)
SimSeconds = Annotated[int, BeforeValidator(whole_seconds)]


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
    def _order(self) -> Curve:
        if not self.v1 < self.v2 <= self.v3 < self.v4:
            raise ValueError("expected v1 < v2 <= v3 < v4 (the deadband is [v2, v3])")
        return self

    def __call__(self, v: np.ndarray) -> np.ndarray:
        """The curve's value at ``v`` (fraction of the rating, signed: + = charge / absorb)."""
        if not self.enabled:
            return np.zeros_like(np.asarray(v, dtype=float))
        return np.interp(np.asarray(v, dtype=float), *_curve_points(self.v1, self.v2, self.v3, self.v4, self.low,
                                                                    self.high))


@functools.lru_cache(maxsize=64)
def _curve_points(v1: float, v2: float, v3: float, v4: float, low: float, high: float) -> tuple[np.ndarray, np.ndarray]:
    """A curve's interpolation points as arrays, made once (np.interp would convert lists on every call)."""
    xp, fp = np.array([v1, v2, v3, v4], dtype=float), np.array([-low, 0.0, 0.0, high], dtype=float)
    xp.flags.writeable = fp.flags.writeable = False
    return xp, fp


def _nan_to_zero(x: Any) -> np.ndarray:
    """``np.nan_to_num(x, nan=0.0)`` as float array, without its cost when every value is finite already."""
    a = np.asarray(x, dtype=float)
    finite = np.isfinite(a)
    if finite.all():
        return a
    if not np.isinf(a).any():  # NaN only (no input this step): what nan_to_num does, without its overhead
        return np.where(finite, a, 0.0)
    return np.nan_to_num(a, nan=0.0)


class DsoUpdate(BaseModel):
    """A change the DSO publishes at ``at`` (duration from the run start): any of reference and curves."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    at: SimSeconds
    v_ref_pu: float | None = Field(None, ge=0.9, le=1.1)
    volt_watt: Curve | None = None
    volt_var: Curve | None = None


class VoltageParams(BaseModel):
    """``params`` of a ``voltage_control`` controller."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    volt_watt: Curve = Curve(v1=0.90, v2=0.97, v3=1.03, v4=1.08, low=1.0, high=1.0)
    volt_var: Curve = Curve()
    v_ref_pu: float = Field(1.0, ge=0.9, le=1.1, description="the curves are evaluated at v - (v_ref_pu - 1)")
    response: Literal["ramp", "first_order", "none"] = "ramp"
    ramp_w_per_s: float = Field(1000.0, gt=0)
    ramp_var_per_s: float = Field(1000.0, gt=0)
    tau_s: float = Field(10.0, gt=0, description="first-order time constant")
    bus: str | None = Field(None, description="measure at this bus of the grid (default: the battery's own connection)")
    dso: list[DsoUpdate] = Field(default_factory=list, description="settings the DSO publishes on the Control Broker")

    def curve_settings(self) -> dict[str, Any]:
        """What the DSO may move (the rest stays the scenario's)."""
        return {"v_ref_pu": self.v_ref_pu, "volt_watt": self.volt_watt.model_dump(),
                "volt_var": self.volt_var.model_dump()}


# --- the DSO's settings as SenML (RFC 8428) on the Control Broker ----------------------------------------------

def settings_pack(controller_id: str, t_unix_s: float, update: DsoUpdate) -> list[dict]:
    """One SenML pack with the fields an update sets (names relative to ``bn = "<controller>/"``)."""
    recs: list[dict] = []
    if update.v_ref_pu is not None:
        recs.append({"n": "v_ref_pu", "v": update.v_ref_pu})
    for name in ("volt_watt", "volt_var"):
        curve = getattr(update, name)
        if curve is not None:
            for key, value in curve.model_dump().items():
                recs.append({"n": f"{name}.{key}", "vb": value} if isinstance(value, bool)
                            else {"n": f"{name}.{key}", "v": float(value)})
    if not recs:
        raise ValueError("a DSO update sets nothing")
    recs[0] = {"bn": f"{controller_id}/", "bt": float(t_unix_s), **recs[0]}
    return recs


def apply_settings(params: VoltageParams, pack: list[dict]) -> VoltageParams:
    """The params after a settings pack; ValueError (nothing applied) if the pack or the curves it makes are
    invalid. Bounded, typed decoding is cosim.messaging.senml's."""
    from cosim.messaging import senml

    try:
        records = senml.decode(json.dumps(pack).encode(), strict_units=False)
    except (senml.SenMLError, TypeError, ValueError) as exc:
        raise ValueError(f"settings pack: {exc}") from None
    current = params.curve_settings()
    for rec in records:
        field = rec.name.rsplit("/", 1)[-1]
        value = rec.boolean if rec.boolean is not None else rec.value
        if field == "v_ref_pu":
            current["v_ref_pu"] = value
        elif "." in field and field.split(".", 1)[0] in ("volt_watt", "volt_var"):
            curve, key = field.split(".", 1)
            if key not in current[curve]:
                raise ValueError(f"settings pack: unknown field {field!r}")
            current[curve][key] = value
        else:
            raise ValueError(f"settings pack: unknown field {field!r}")
    try:
        return params.model_copy(update={"v_ref_pu": VoltageParams(v_ref_pu=current["v_ref_pu"]).v_ref_pu,
                                         "volt_watt": Curve(**current["volt_watt"]),
                                         "volt_var": Curve(**current["volt_var"])})
    except ValidationError as exc:
        raise ValueError(f"settings pack refused: {exc.errors()[0]['msg']}") from None


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

    def target(self, v_pu, p_base_w=None) -> tuple[np.ndarray, np.ndarray]:
        """Static set-points of the curves (before response limits and availability), on top of ``p_base_w``."""
        v = np.asarray(v_pu, dtype=float) - (self.params.v_ref_pu - 1.0)
        fp = self.params.volt_watt(v)
        p = np.where(fp >= 0, fp * self.p_charge_max_w, fp * self.p_discharge_max_w)
        if p_base_w is not None:
            p = p + _nan_to_zero(p_base_w)
        q = self.params.volt_var(v) * self.s_max_va
        return p, q

    def step(self, v_pu, dt_s: float, p_charge_avail_w=None, p_discharge_avail_w=None,
             p_base_w=None) -> tuple[np.ndarray, np.ndarray]:
        """Advance by ``dt_s`` towards the curves' set-points; NaN voltage holds the previous set-points."""
        v = np.asarray(v_pu, dtype=float)
        p_t, q_t = self.target(np.where(np.isfinite(v), v, 1.0), p_base_w)
        p_t = np.where(np.isfinite(v), p_t, self.p_w)
        q_t = np.where(np.isfinite(v), q_t, self.q_var)
        pr = self.params
        if pr.response == "ramp":
            dp, dq = pr.ramp_w_per_s * dt_s, pr.ramp_var_per_s * dt_s
            p = self.p_w + clip(p_t - self.p_w, -dp, dp)
            q = self.q_var + clip(q_t - self.q_var, -dq, dq)
        elif pr.response == "first_order":
            a = 1.0 - np.exp(-dt_s / pr.tau_s)
            p = self.p_w + a * (p_t - self.p_w)
            q = self.q_var + a * (q_t - self.q_var)
        else:
            p, q = p_t, q_t
        hi = self.p_charge_max_w if p_charge_avail_w is None else np.minimum(self.p_charge_max_w,
                                                                             _nan_to_zero(p_charge_avail_w))
        lo = self.p_discharge_max_w if p_discharge_avail_w is None else np.minimum(self.p_discharge_max_w,
                                                                                   _nan_to_zero(p_discharge_avail_w))
        p = clip(p, -lo, hi)
        q_room = np.sqrt(np.maximum(self.s_max_va**2 - p**2, 0.0))
        q = clip(q, -q_room, q_room)
        self.p_w, self.q_var = p, q
        return p.copy(), q.copy()


def _mean(values: list[Any]) -> float:
    """``float(np.mean(values))``; one Python float (the usual case: one source) without numpy's overhead
    (``+ 0.0`` as in numpy's sum, which turns -0.0 into 0.0)."""
    if len(values) == 1 and type(values[0]) is float:
        return values[0] + 0.0
    return float(np.mean(values))


INPUTS = ("v_pu", "p_charge_avail_w", "p_discharge_avail_w", "p_base_w")
META = {
    "api_version": "3.0",
    "type": "time-based",
    "models": {"VoltVarWatt": {"public": True,
                               "params": ["params", "p_charge_max_w", "p_discharge_max_w", "s_max_va"],
                               "attrs": [*INPUTS, "settings", "p_w", "q_var", "v_seen_pu", "v_ref_pu"]}},
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
        self.refused = 0
        self._last_pack: dict[int, Any] = {}
        self.time = 0

    def init(self, sid: str, time_resolution: float = 1.0, step_size: int = 60, **_: Any) -> Meta:
        self.step_size = int(step_size)
        return self.meta

    # mosaik passes the model's parameters by keyword (narrower than the base's **model_params)
    def create(self, num: int, model: str, params: dict | None = None, p_charge_max_w: float = 0.0,  # type: ignore[override]
               p_discharge_max_w: float = 0.0, s_max_va: float = 0.0) -> list[CreateResult]:
        out: list[CreateResult] = []
        for _ in range(num):
            eid = f"VoltVarWatt_{len(self.eids)}"
            self.eids.append(eid)
            self._cfg.append((params or {}, p_charge_max_w, p_discharge_max_w, s_max_va))
            out.append({"eid": eid, "type": model})
        return out

    def setup_done(self) -> None:
        self._group()
        self.v = np.full(len(self.eids), np.nan)

    def _group(self) -> None:
        """Entities with equal params share one vectorised controller (regrouped when the DSO moves one)."""
        state = {}
        for ctl, members in self.groups:
            for j, i in enumerate(members):
                state[i] = (ctl.p_w[j], ctl.q_var[j])
        groups: dict[str, list[int]] = {}
        for i, (params, *_r) in enumerate(self._cfg):
            groups.setdefault(VoltageParams.model_validate(params).model_dump_json(), []).append(i)
        self.groups = []
        for key, idx in groups.items():
            cfg = [self._cfg[i] for i in idx]
            ctl = VoltVarWatt(VoltageParams.model_validate_json(key), [c[1] for c in cfg], [c[2] for c in cfg],
                              [c[3] for c in cfg])
            for j, i in enumerate(idx):
                ctl.p_w[j], ctl.q_var[j] = state.get(i, (0.0, 0.0))
            self.groups.append((ctl, idx))

    def _apply_settings(self, i: int, pack: Any) -> bool:
        """A DSO settings pack for entity ``i``: True if its params changed."""
        params = VoltageParams.model_validate(self._cfg[i][0])
        try:
            new = apply_settings(params, pack)
        except ValueError as exc:
            log.warning("%s: DSO settings refused, keeping the current ones: %s", self.eids[i], exc)
            self.refused += 1
            return False
        if new == params:
            return False
        self._cfg[i] = (new.model_dump(), *self._cfg[i][1:])
        return True

    def step(self, time: int, inputs: dict, max_advance: int) -> int:
        self.time = time
        if not self.groups and self.eids:
            self.setup_done()
        n = len(self.eids)
        idx = {eid: i for i, eid in enumerate(self.eids)}
        arr = {name: np.full(n, np.nan) for name in INPUTS}
        regroup = False
        for eid, attrs in inputs.items():
            for name, sources in attrs.items():
                got = [v for v in sources.values() if v is not None]
                if name == "settings":
                    for pack in got:  # a subscriber holds the last message: act on a new one only
                        if pack != self._last_pack.get(idx[eid]):
                            self._last_pack[idx[eid]] = pack
                            regroup |= self._apply_settings(idx[eid], pack)
                elif got:
                    arr[name][idx[eid]] = _mean(got) if name == "v_pu" else float(sum(got))
        if regroup:
            self._group()
        dt = self.step_size if self.last_t is None else time - self.last_t
        self.last_t = time
        self.v = arr["v_pu"]
        for ctl, members in self.groups:
            m = np.array(members)
            ca, da = arr["p_charge_avail_w"][m], arr["p_discharge_avail_w"][m]
            ctl.step(arr["v_pu"][m], dt, np.where(np.isfinite(ca), ca, ctl.p_charge_max_w),
                     np.where(np.isfinite(da), da, ctl.p_discharge_max_w), arr["p_base_w"][m])
        return time + self.step_size

    def get_data(self, outputs: dict) -> dict:
        where = {}
        for _g, (group_ctl, members) in enumerate(self.groups):
            for j, i in enumerate(members):
                where[self.eids[i]] = (group_ctl, j, i)
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
                elif a == "v_ref_pu":
                    row[a] = float(ctl.params.v_ref_pu) if ctl else 1.0
            data[eid] = row
        return data


DSO_META = {"api_version": "3.0", "type": "time-based",
            "models": {"Dso": {"public": True, "params": ["controller_id", "updates", "start_unix_s"],
                               "attrs": ["settings"]}}}


class DsoSim(mosaik_api_v3.Simulator):
    """The DSO side: publishes each scheduled update as a SenML settings pack when it is due (None otherwise).
    A simulator of its own: a link between two entities of one simulator would be a cycle for mosaik."""

    def __init__(self) -> None:
        super().__init__(DSO_META)
        self.entities: dict[str, tuple[str, list[DsoUpdate], float]] = {}
        self.step_size = 60
        self.time = 0

    def init(self, sid: str, time_resolution: float = 1.0, step_size: int = 60, **_: Any) -> Meta:
        self.step_size = int(step_size)
        return self.meta

    # mosaik passes the model's parameters by keyword (narrower than the base's **model_params)
    def create(self, num: int, model: str, controller_id: str = "dso", updates: list | None = None,  # type: ignore[override]
               start_unix_s: float = 0.0) -> list[CreateResult]:
        out: list[CreateResult] = []
        for _ in range(num):
            eid = f"Dso_{len(self.entities)}"
            self.entities[eid] = (controller_id, [DsoUpdate.model_validate(u) for u in updates or []], start_unix_s)
            out.append({"eid": eid, "type": model})
        return out

    def step(self, time: int, inputs: dict, max_advance: int) -> int:
        self.time = time
        return time + self.step_size

    def get_data(self, outputs: dict) -> dict:
        data = {}
        for eid in outputs:
            cid, updates, start = self.entities[eid]
            due = [u for u in updates if u.at == self.time]
            data[eid] = {"settings": settings_pack(cid, start + self.time, due[-1]) if due else None}
        return data


def _build(builder: WorldBuilder, spec: ControllerSpec, params: VoltageParams) -> None:
    from devices import registry as device_registry

    sim = builder.sim("Voltage", "controllers.voltage:VoltageSim")
    found = False
    for dev in builder.select_devices(spec.devices, needs_battery=True):
        fam = device_registry.family(dev.family)
        if "q_var" not in fam.setpoints:
            continue  # only a PCS with P and Q set-points (the grid battery family)
        cfg: Any = fam.parse_config(dev.config)  # a family with a battery: its config has ``battery``
        s_max = float(getattr(cfg, "s_max_va", max(cfg.battery.p_charge_max_w, cfg.battery.p_discharge_max_w)))
        ctl = builder.add_entity(sim.VoltVarWatt(params=params.model_dump(), p_charge_max_w=cfg.battery.p_charge_max_w,
                                                 p_discharge_max_w=cfg.battery.p_discharge_max_w, s_max_va=s_max))
        device = builder.devices[dev.id]
        site = builder.site_of(dev.id)
        smx = f"smx:{site.spec.id}" if site is not None else "smx"  # the local loop's broker
        if params.bus is not None:
            buses = {c.eid.removeprefix("bus:"): c for c in builder.grid_children.get("Bus", [])}
            if params.bus not in buses:
                raise builder.loaded.error(("controllers",),
                                           f"controller {spec.id!r}: no bus {params.bus!r} in the grid")
            builder.connect(buses[params.bus], ctl, "v_pu", role=smx, sender_kind="device")
        else:
            meter = site.pcc if site is not None else _device_load(builder, dev.id)
            builder.connect(meter, ctl, "v_pu", role=smx, sender_kind="device")
        builder.connect(device, ctl, "p_charge_avail_w", "p_discharge_avail_w", role=smx, sender_kind="device")
        builder.connect(ctl, device, "p_w", "q_var", role=smx, sender_kind="agent", time_shifted=True,
                        initial_data={"p_w": 0.0, "q_var": 0.0})
        if params.dso:  # the DSO's settings come down the Control Broker as SenML
            dso_sim = builder.sim("VoltageDso", "controllers.voltage:DsoSim")
            dso = builder.add_entity(dso_sim.Dso(controller_id=spec.id, updates=[u.model_dump() for u in params.dso],
                                                 start_unix_s=builder.scenario.start.timestamp()))
            builder.connect(dso, ctl, "settings", role="control", sender_kind="controller")
        battery_base(builder, dev.id, follower=ctl)  # a GESSCon plan of this battery becomes its base power
        for attr in ("p_w", "q_var", "v_seen_pu", "v_ref_pu"):
            builder.record(ctl, attr, "controllers", f"{spec.id}/{dev.id}.{attr}")
        found = True
    if not found:
        raise builder.loaded.error(("controllers",), f"controller {spec.id!r}: no battery with P and Q set-points "
                                   "(family 'battery') among its devices")


def _device_load(builder: WorldBuilder, device_id: str):
    """The grid's Load entity of a device connected to a bus (``load:dev:<id>``)."""
    for c in builder.grid_children.get("Load", []):
        if c.eid.removeprefix("load:") == f"dev:{device_id}":
            return c
    raise KeyError(f"the grid has no connection entity for device {device_id!r}")


VOLTAGE_CONTROL = ControllerKind("voltage_control", VoltageParams, _build,
                                 "LiBal site controller: volt-watt / volt-var curves with deadband and ramp limits")
