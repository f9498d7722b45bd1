"""The mosaik simulator that hosts any device behind the driver interface.

One mosaik model per device family; an entity is one device with an ``address``. ``sim://`` devices of a
family share one :class:`~devices.family.ModelBank` and are stepped as arrays. Any other address goes
through the protocol driver of a scheme the family speaks; if the address has no host, a virtual device is
started on a free loopback port first, and the co-simulation clocks its model each step. Setpoints outside a
device's capabilities are refused (kept as before), recorded as events and counted in the ``rejected`` output.

Every entity's inputs are the family's declared inputs (by name; a missing one takes its default) and its
setpoints. The world builder gives each device its build context (scenario start, step, connection point).
Measurements carry the simulated time in s since the scenario start (the end of the step just taken): the
host sets each driver's ``clock`` to it (see devices.base, "time base").
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO, cast
from collections.abc import Callable, Iterator

import mosaik_api_v3
from mosaik_api_v3.types import Meta
import numpy as np
from pydantic import BaseModel

from devices import registry, tls
from devices.base import Address, Capabilities, DeviceError, Driver, Limit, Measurement, Setpoint, SetpointRejected
from devices.family import ConnectionPoint, DeviceContext, Family, ModelBank
from devices.io_loop import IoLoop
from devices.sim import SimDriver
from devices.virtual import VirtualDevice

log = logging.getLogger(__name__)

STATUS_ATTRS = ("available", "rejected")
_NO_LIMIT = Limit(0.0, 0.0)
POWER_ATTRS = ("p_w", "q_var")


def _meta() -> dict[str, Any]:
    models = {}
    measured: dict[str, None] = {}
    inputs: dict[str, None] = {}
    for name in registry.families():
        fam = registry.family(name)
        attrs = list(dict.fromkeys([*(i.name for i in fam.inputs), *fam.setpoints, *fam.measurements, *STATUS_ATTRS]))
        models[name] = {
            "public": True,
            "params": ["address", "config", "device_id", "timeout_s", "context"],
            "attrs": attrs,
        }
        measured.update(dict.fromkeys(fam.measurements))
        inputs.update(dict.fromkeys([*(i.name for i in fam.inputs), *fam.setpoints]))
    # many devices' measurements (inputs, setpoints) as vectors (element i: members[i]): one value per step for
    # mosaik, not one per device
    attrs = list(dict.fromkeys([*measured, *STATUS_ATTRS, *inputs]))
    models["Table"] = {"public": True, "params": ["members"], "attrs": attrs}
    return {
        "api_version": "3.0",
        "type": "time-based",
        "models": models,
        "extra_methods": ["drivers", "events", "close_devices"],
    }


@dataclass
class _Device:
    eid: str
    family: Family
    config: BaseModel
    address: Address
    capabilities: Capabilities
    timeout_s: float
    context: DeviceContext
    driver: Driver | None = None
    virtual: VirtualDevice | None = None
    bank: ModelBank | None = None
    index: int = -1
    last: Measurement | None = None
    available: bool = True
    rejected: int = 0
    pending: dict[str, float] = field(default_factory=dict)


def _single(eid: str, attr: str, sources: dict[str, Any]) -> Any:
    """One value per input: two sources giving one setpoint in the same step is an error, not a sum (a source
    that gives None this step, e.g. a command topic nobody wrote to, does not count)."""
    if len(sources) == 1:
        return next(iter(sources.values()))
    given = {k: v for k, v in sources.items() if v is not None}
    if len(given) > 1:
        raise ValueError(f"{eid}.{attr} has {len(given)} sources ({', '.join(given)}); expected exactly one")
    return next(iter(given.values()), None)


def _unbanked_value(dev: _Device, attr: str) -> Any:
    """A status attribute, or a measurement of a device that its driver serves (no model bank)."""
    if attr == "available":
        return dev.available
    if attr == "rejected":
        return dev.rejected
    if dev.last is None and attr in POWER_ATTRS:
        # a device that does not answer counts as 0 W in the power flow; ``available`` says why
        return 0.0
    return dev.last.values.get(attr, math.nan) if dev.last else math.nan


class _Table:
    """Devices whose measurements go out as vectors: those of a model bank gathered by one fancy index each."""

    def __init__(self, members: list[_Device]) -> None:
        self.members = members
        self._plan: list[tuple[str, np.ndarray, np.ndarray]] | None = None  # (family, positions, bank indices)
        self._others: list[tuple[int, _Device]] = []

    def split(self, eid: str, attrs: dict[str, Any]) -> Iterator[tuple[_Device, str, float]]:
        """Vector inputs per member: element i is members[i]'s declared input or setpoint of that name (a member
        without it ignores it; a NaN setpoint is no setpoint, as None is for one device)."""
        for attr, sources in attrs.items():
            value = _single(eid, attr, sources)
            if value is None:
                continue
            vec = np.asarray(value, dtype=np.float64)
            if vec.shape != (len(self.members),):
                raise ValueError(f"{eid}.{attr}: {vec.size} values for {len(self.members)} devices")
            for dev, v in zip(self.members, vec.tolist()):
                if attr in dev.family.input_names or (attr in dev.family.setpoints and not math.isnan(v)):
                    yield dev, attr, v

    def scatter(self, eid: str, attrs: dict[str, Any], env_by_eid: dict[str, dict[str, float]]) -> None:
        """Vector inputs into the members' environment and pending setpoints."""
        for dev, attr, v in self.split(eid, attrs):
            if attr in dev.family.input_names:
                env_by_eid.setdefault(dev.eid, {})[attr] = v
            else:
                dev.pending[attr] = v

    def vector(self, attr: str, arrays: dict[str, dict[str, np.ndarray]]) -> np.ndarray:
        if attr in STATUS_ATTRS:
            return np.array([float(_unbanked_value(d, attr)) for d in self.members], dtype=np.float64)
        if self._plan is None:  # the banks exist from setup_done on
            by_family: dict[str, list[tuple[int, int]]] = {}
            for k, dev in enumerate(self.members):
                if dev.bank is not None:
                    by_family.setdefault(dev.family.name, []).append((k, dev.index))
                else:
                    self._others.append((k, dev))
            self._plan = [(name, np.array([p for p, _ in pairs], dtype=np.int64),
                           np.array([i for _, i in pairs], dtype=np.int64)) for name, pairs in by_family.items()]
        out = np.full(len(self.members), np.nan)
        for name, pos, index in self._plan:
            values = arrays.get(name, {}).get(attr)
            if values is not None:
                out[pos] = values[index]
        for pos_i, dev in self._others:
            value = _unbanked_value(dev, attr)
            out[pos_i] = np.nan if value is None else float(value)
        return out


class DeviceSim(mosaik_api_v3.Simulator):
    def __init__(self) -> None:
        super().__init__(_meta())  # type: ignore[no-untyped-call]  # mosaik_api_v3: Simulator.__init__ is unannotated
        self.devices: dict[str, _Device] = {}
        self.banks: dict[str, tuple[ModelBank, list[_Device], dict[str, tuple[np.ndarray, np.ndarray]]]] = {}
        self.measured: dict[str, dict[str, list[float]]] = {}
        self._measured_arrays: dict[str, dict[str, np.ndarray]] = {}
        self.tables: dict[str, _Table] = {}
        self._integer: dict[str, frozenset[str]] = {}  # family -> its setpoints in whole numbers (set-up)
        self.event_log: list[dict[str, Any]] = []
        self._events_file: TextIO | None = None
        self._io: IoLoop | None = None
        self._driver_wrapper: Callable[[str, Driver], Driver] | None = None
        self.step_size = 60
        self.time = 0
        self.clock_s = 0.0  # simulated time of the latest readings (end of the step just taken)

    # -- mosaik API ---------------------------------------------------------------------------------
    def init(self, sid: str, time_resolution: float = 1.0, step_size: int = 60,
             events_path: str | None = None, driver_wrapper: Callable[[str, Driver], Driver] | None = None,
             tls: dict[str, str] | None = None, **_: Any) -> Meta:
        """``driver_wrapper(eid, driver)`` (in-process only) may wrap each protocol driver before it connects,
        e.g. the HIL bench's safety boundary; without it nothing changes. ``tls`` ({"pki", "server", "client"}:
        a PKI directory and two certificate names) serves the virtual devices this host starts with TLS where
        their protocol has it, and their drivers present the client certificate."""
        self.step_size = int(step_size)
        self._driver_wrapper = driver_wrapper
        self._tls = tls
        if events_path:
            Path(events_path).parent.mkdir(parents=True, exist_ok=True)
            self._events_file = open(events_path, "a", encoding="utf-8")  # noqa: SIM115 - held until finalize()
        return self.meta

    # mosaik passes the model's parameters by keyword (narrower than the base's **model_params); the entity
    # dicts are mosaik's JSON
    def create(self, num: int, model: str, address: str = "sim://",  # type: ignore[override]
               config: dict[str, Any] | None = None,
               device_id: str | None = None, timeout_s: float = 2.0,
               context: dict[str, Any] | None = None, members: list[str] | None = None) -> list[dict[str, Any]]:
        """``context`` (JSON-able, from the world builder): ``start`` (ISO 8601 with offset), ``point``
        (``bus``, ``phase``, ``vn_kv``); without one a device gets a stand-alone context. Model ``Table``:
        ``members`` are device ids of this host, whose measurements it gives as vectors."""
        if model == "Table":
            unknown = [m for m in members or [] if m not in self.devices]
            if unknown:
                raise ValueError(f"Table: unknown device(s) {unknown[:3]}")
            out = []
            for _i in range(num):
                eid = f"Table_{len(self.tables)}"
                self.tables[eid] = _Table([self.devices[m] for m in members or []])
                out.append({"eid": eid, "type": model})
            return out
        fam = registry.family(model)
        cfg = fam.parse_config(config or {})
        addr = Address.parse(address)
        if addr.scheme != "sim":
            registry.driver_class(addr, fam)  # refuse a scheme the family does not speak before anything starts
        entities = []
        for _i in range(num):
            eid = device_id if num == 1 and device_id else f"{device_id or model}_{len(self.devices)}"
            if eid in self.devices:
                raise ValueError(f"device id {eid!r} used twice")
            ctx = self._context(eid, context)
            self.devices[eid] = _Device(eid, fam, cfg, addr, fam.capabilities(cfg), timeout_s, ctx)
            entities.append({"eid": eid, "type": model})
        return entities

    def _context(self, eid: str, raw: dict[str, Any] | None) -> DeviceContext:
        if not raw:
            return DeviceContext.standalone(eid, self.step_size)
        point = raw.get("point") or {}
        return DeviceContext(dt.datetime.fromisoformat(raw["start"]), self.step_size, eid,
                             ConnectionPoint(point.get("bus"), point.get("phase"), point.get("vn_kv")))

    def setup_done(self) -> None:
        by_family: dict[str, list[_Device]] = {}
        for dev in self.devices.values():
            if dev.address.scheme == "sim":
                by_family.setdefault(dev.family.name, []).append(dev)
        for name, devs in by_family.items():
            bank = devs[0].family.bank([d.config for d in devs], [d.context for d in devs])
            for i, dev in enumerate(devs):
                dev.bank, dev.index = bank, i
                # the host owns the bank: it hands out views that are open from the start
                dev.driver = SimDriver(dev.address, dev.capabilities, bank=bank, index=i, connected=True)
                dev.driver.clock = self._clock
            limits = {
                sp: (
                    np.array([d.capabilities.setpoints[sp].min if sp in d.capabilities.setpoints else 0.0
                              for d in devs]),
                    np.array([d.capabilities.setpoints[sp].max if sp in d.capabilities.setpoints else 0.0
                              for d in devs]),
                )
                for sp in bank.setpoint_names
            }
            self.banks[name] = (bank, devs, limits)
            self._integer[name] = frozenset(sp for sp in limits if any(
                d.capabilities.setpoints.get(sp, _NO_LIMIT).integer for d in devs))
        remote = [d for d in self.devices.values() if d.address.scheme != "sim"]
        if remote:
            self._io = IoLoop()
            for dev in remote:
                self._open_protocol_device(dev)

    def _clock(self) -> float:
        return self.clock_s

    def step(self, time: int, inputs: dict[str, Any], max_advance: int) -> int:
        self.time = time
        dt = self.step_size
        self.clock_s = float(time + dt)
        env_by_eid: dict[str, dict[str, float]] = {}
        for eid, attrs in inputs.items():
            table = self.tables.get(eid)
            if table is not None:
                table.scatter(eid, attrs, env_by_eid)
                continue
            dev = self.devices[eid]
            fam = dev.family
            for attr, sources in attrs.items():
                value = next(iter(sources.values())) if len(sources) == 1 else _single(eid, attr, sources)
                if attr in fam.input_names:
                    env_by_eid.setdefault(eid, {})[attr] = value
                elif value is not None and attr in fam.bank.setpoint_names:
                    dev.pending[attr] = float(value)
        for name, (bank, devs, limits) in self.banks.items():
            self._apply_bank_setpoints(time, bank, devs, limits, self._integer[name])
            env = {
                inp.name: np.array([env_by_eid.get(d.eid, {}).get(inp.name, inp.default) for d in devs], dtype=float)
                for inp in devs[0].family.inputs
            }
            bank.step(time, dt, env)
            # as Python floats once per step: mosaik wants floats, and one tolist() beats a float() per value
            arrays = {attr: np.asarray(arr, dtype=np.float64) for attr, arr in bank.measure().items()}
            self._measured_arrays[name] = arrays
            self.measured[name] = {attr: arr.tolist() for attr, arr in arrays.items()}
        if self._io is not None:
            self._step_protocol_devices(time, dt, env_by_eid)
        return time + dt

    def get_data(self, outputs: dict[str, Any]) -> dict[str, Any]:
        data: dict[str, dict[str, Any]] = {}
        measured = self.measured
        none: dict[str, list[float]] = {}
        for eid, attrs in outputs.items():
            table = self.tables.get(eid)
            if table is not None:
                data[eid] = {attr: table.vector(attr, self._measured_arrays) for attr in attrs}
                continue
            dev = self.devices[eid]
            out = data[eid] = {}
            arrays = measured.get(dev.family.name, none) if dev.bank is not None else none
            for attr in attrs:
                if dev.bank is not None and attr not in STATUS_ATTRS:
                    values = arrays.get(attr)
                    out[attr] = None if values is None else values[dev.index]
                else:
                    out[attr] = _unbanked_value(dev, attr)
        return data

    def finalize(self) -> None:
        self.close_devices()

    # -- extra methods (in-process callers: world builder, bench) ----------------------------------------
    def drivers(self) -> dict[str, Driver]:
        return {eid: dev.driver for eid, dev in self.devices.items() if dev.driver is not None}

    def events(self) -> list[dict[str, Any]]:
        return list(self.event_log)

    def close_devices(self) -> None:
        if self._io is not None:
            for dev in self.devices.values():
                if dev.bank is None:
                    self._io.gather([a for a in (dev.driver and dev.driver.close(),
                                                 dev.virtual and dev.virtual.stop()) if a], timeout_s=5)
            self._io.close()
            self._io = None
        if self._events_file is not None:
            self._events_file.close()
            self._events_file = None

    # -- internals --------------------------------------------------------------------------------------
    def _event(self, time: int, eid: str, kind: str, message: str) -> None:
        event = {"t_s": time, "device": eid, "kind": kind, "message": message}
        self.event_log.append(event)
        log.warning("t=%ss %s %s: %s", time, eid, kind, message)
        if self._events_file is not None:
            self._events_file.write(json.dumps(event) + "\n")
            self._events_file.flush()

    def _apply_bank_setpoints(self, time: int, bank: ModelBank, devs: list[_Device],
                              limits: dict[str, tuple[np.ndarray, np.ndarray]], integer: frozenset[str]) -> None:
        """``integer``: the setpoints some device of the bank takes in whole numbers only."""
        pending = [(i, d) for i, d in enumerate(devs) if d.pending]
        if not pending:
            return
        for _i, dev in pending:  # rules across setpoints (curves): the whole write is refused, nothing applied
            if dev.capabilities.rules is not None:
                try:
                    dev.capabilities.rules(dev.pending)
                except SetpointRejected as exc:
                    dev.rejected += 1
                    self._event(time, dev.eid, "setpoint_rejected", str(exc))
                    dev.pending.clear()
        pending = [(i, d) for i, d in pending if d.pending]
        written = set().union(*(d.pending for _, d in pending))
        for sp, (lo, hi) in limits.items():
            if sp not in written:  # most of a bank's setpoints are not written in a step
                continue
            given = [(i, d.pending[sp]) for i, d in pending if sp in d.pending]
            idx = np.array([i for i, _ in given], dtype=int)
            values = np.array([v for _, v in given], dtype=float)
            ok = (values >= lo[idx]) & (values <= hi[idx])  # NaN compares False: refused too
            if sp in integer:
                ok &= np.mod(values, 1.0) == 0
            if ok.all():  # the usual step: nothing refused
                bank.setpoints[sp][idx] = values
                continue
            bank.setpoints[sp][idx[ok]] = values[ok]
            for i in idx[~ok]:
                dev = devs[i]
                dev.rejected += 1
                lim = dev.capabilities.setpoints.get(sp)
                allowed = f"[{lim.min:g}, {lim.max:g}]" if lim else "not accepted"
                whole = " (whole numbers only)" if lim and lim.integer else ""
                self._event(time, dev.eid, "setpoint_rejected", f"{sp}={dev.pending[sp]:g} outside {allowed}{whole}")
        for _, d in pending:
            d.pending.clear()

    @staticmethod
    def _env_with_defaults(dev: _Device, env_by_eid: dict[str, dict[str, float]]) -> dict[str, float]:
        return dict(dev.family.input_defaults) | env_by_eid.get(dev.eid, {})

    def _open_protocol_device(self, dev: _Device) -> None:
        assert self._io is not None
        address = dev.address
        if address.is_virtual_request:
            spec = dev.family.virtual.get(address.scheme)
            if spec is None:
                raise ValueError(f"{dev.eid}: family {dev.family.name!r} has no virtual device for scheme "
                                 f"{address.scheme!r}; available: {sorted(dev.family.virtual) or 'none'}")
            cls = registry.load_spec(spec)
            dev.virtual = cls(dev.family, dev.config, context=dev.context)
            address = Address.parse(self._io.run(self._start_virtual(dev.virtual), timeout_s=10))
        driver_cls = registry.driver_class(address, dev.family)
        dev.driver = driver_cls(address, dev.capabilities, timeout_s=dev.timeout_s)
        dev.driver.clock = self._clock
        if self._driver_wrapper is not None:
            dev.driver = self._driver_wrapper(dev.eid, dev.driver)
        self._io.run(dev.driver.connect(), timeout_s=dev.timeout_s + 5)

    async def _start_virtual(self, virtual: VirtualDevice) -> str:
        """Start a virtual device; with ``tls`` and a protocol that has it, as a TLS server whose driver address
        carries the client's certificate."""
        if self._tls is None or not virtual.serves_tls:
            return await virtual.start()
        pki, server, client = self._tls["pki"], self._tls["server"], self._tls["client"]
        address = await virtual.start_secure(tls.server_context(tls.TlsFiles.from_pki(pki, server)))
        return f"{address}{'&' if '?' in address else '?'}pki={pki}&identity={client}"

    def _advance_clocks(self, time: int, dt: int, env_by_eid: dict[str, dict[str, float]]) -> None:
        """Between the writes and the reads of a step: advance the in-process virtual devices over the step (the
        HIL bench overrides this: its virtual devices keep time by the wall clock or by its own steps)."""
        assert self._io is not None
        clocked = [d for d in self.devices.values() if d.bank is None and d.virtual is not None]
        self._io.gather([cast(VirtualDevice, d.virtual).advance(time, dt, self._env_with_defaults(d, env_by_eid))
                         for d in clocked])

    def _step_protocol_devices(self, time: int, dt: int, env_by_eid: dict[str, dict[str, float]]) -> None:
        assert self._io is not None
        remote = [d for d in self.devices.values() if d.bank is None]
        writers = [d for d in remote if d.pending]
        # a device without a model bank is served by its driver (set in create)
        results = self._io.gather([cast(Driver, d.driver).write(Setpoint(d.pending)) for d in writers])
        for dev, res in zip(writers, results):
            if isinstance(res, DeviceError):
                dev.rejected += isinstance(res, SetpointRejected)
                self._event(time, dev.eid, type(res).__name__, str(res))
            elif isinstance(res, BaseException):
                raise res
            dev.pending.clear()
        self._advance_clocks(time, dt, env_by_eid)
        readings = self._io.gather([cast(Driver, d.driver).read() for d in remote])
        for dev, reading in zip(remote, readings):
            if isinstance(reading, Measurement):
                if not dev.available:
                    self._event(time, dev.eid, "available", "device answers again")
                dev.last, dev.available = reading, True
            elif isinstance(reading, DeviceError):
                if dev.available:
                    self._event(time, dev.eid, type(reading).__name__, str(reading))
                dev.last, dev.available = None, False
            else:
                raise reading
