"""The hybrid boundary: which devices are real, and the safety layer every protocol driver sits behind.

**Which device is what** (:func:`plan_devices`), decided by its address alone:

* ``sim://`` -- simulated in-process, as offline (no protocol, no wall clock);
* a protocol scheme without a host (``sunspec+tcp://``, ``libal://``, ``ocpp16://``) -- *hosted*: the bench
  starts the family's virtual device on loopback and clocks it by wall time;
* a protocol address with a host -- *real*: hardware or an external emulator (``s4g device serve``); the bench
  starts nothing, checks it is reachable before the run and arms it in its safe state;
* ``replay://RUN_DIR/device`` -- a recording of a device from an earlier bench run.

**The boundary driver** (:class:`BoundaryDriver`) wraps each protocol driver of the device host (through
``DeviceSim``'s ``driver_wrapper`` hook) and runs the wrapped driver on the bench's I/O loop. In front of the
wire it enforces the operator's limits (refused, never clipped), holds the controller's setpoints while the
device is faulted or after an emergency stop, and runs the two watchdogs:

* device watchdog -- a device that stops answering (DeviceUnavailable, or two protocol errors in a row) is
  *faulted* at once: its controller setpoints are held, the boundary tries its safe setpoint
  (``Family.safe_setpoint``) right away and then every cycle in the background, and the device's own
  fallback is armed beforehand where its protocol has one (SunSpec ``InOutWRte_RvrtTms`` = two cycles).
  When it answers again the safe setpoint is confirmed first, then the controller takes over at the next step.
* controller watchdog -- a device that got setpoints and then none for ``controller_timeout_cycles`` steps
  gets its safe setpoint; the controller's next setpoint ends that. Where the device has its own fallback
  armed (SunSpec revert timer), that timer then hands it back to its default mode (a Fronius: local
  self-consumption) two cycles later, as it would without the bench.

A refused setpoint leaves the device as it was; where its revert timer is armed, the boundary writes the last
accepted setpoint again (source ``hold``) so that the timer, meant for a lost link, does not take over.

It also paces the reads (at ``read_at`` of each cycle), logs every exchange to the device I/O log, and
records bench events.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import math
import time
from dataclasses import dataclass
from typing import Any, Literal, TypeVar
from collections.abc import Awaitable, Callable, Mapping
from urllib.parse import parse_qs

from devices import registry
from devices.base import (Address, DeviceError, DeviceUnavailable, Driver, Measurement, ProtocolError, Setpoint,
                          SetpointRejected)
from devices.family import Family
from devices.io_loop import IoLoop
from hil_bench.config import BenchSpec, DeviceLimits
from hil_bench.realtime import Pacer, StepTiming, TimingLog
from hil_bench.records import EventSink, IoLog
from hil_bench.safety import ControllerWatch, DeviceHealth, check_limits

T = TypeVar("T")
Kind = Literal["sim", "hosted", "real", "replay"]
REVERT_SCHEMES = ("sunspec+tcp",)


@dataclass
class Wire:
    """When one operation went on the wire and how long it took (perf_counter seconds)."""

    started: float = math.nan
    duration_s: float = math.nan


@dataclass
class DevicePlan:
    """One device of the scenario as the bench sees it."""

    id: str
    family: Family
    kind: Kind
    address: str  # as in the scenario
    site: str  # site id, else "bus-<bus>" (for topics)
    timeout_s: float
    limits: DeviceLimits | None = None
    driver_address: str = ""  # what the device host connects to (hosted: the loopback address)

    @property
    def protocol(self) -> bool:
        return self.kind != "sim"


def device_kind(address: str) -> Kind:
    addr = Address.parse(address)
    if addr.scheme == "sim":
        return "sim"
    if addr.scheme == "replay":
        return "replay"
    return "hosted" if addr.is_virtual_request else "real"


def with_revert(address: str, revert_s: int) -> str:
    """Arm the device's own fallback: SunSpec's revert timer, unless the address sets one already."""
    addr = Address.parse(address)
    if addr.scheme not in REVERT_SCHEMES or "revert_s" in parse_qs(addr.query):
        return address
    return f"{address}{'&' if addr.query else '?'}revert_s={int(revert_s)}"


def plan_devices(loaded: Any, spec: BenchSpec) -> dict[str, DevicePlan]:
    """Classify every device of ``loaded`` (a LoadedScenario) and check the bench section against them."""
    sc = loaded.scenario
    plans: dict[str, DevicePlan] = {}
    for d in sc.devices:
        plans[d.id] = DevicePlan(d.id, registry.family(d.family), device_kind(d.address), d.address,
                                 d.site or f"bus-{d.bus}", spec.driver_timeout_s(sc.step, d.timeout_s),
                                 spec.limits.get(d.id))
    for dev_id in spec.limits:
        if dev_id not in plans:
            raise loaded.error(("bench", "limits", dev_id), "expected the id of a device in 'devices'", dev_id)
    for i, drill in enumerate(spec.drills):
        plan = plans.get(drill.device)
        if plan is None:
            raise loaded.error(("bench", "drills", i, "device"), "expected the id of a device in 'devices'",
                               drill.device)
        if not plan.protocol:
            raise loaded.error(("bench", "drills", i, "device"), "drills act on protocol devices, not sim://",
                               drill.device)
        if drill.fault == "device_silent" and plan.kind != "hosted":
            raise loaded.error(("bench", "drills", i, "fault"), "device_silent needs a device the bench hosts "
                               "(an address without a host)", drill.fault)
    for dev_id, address in spec.device_clocks.items():
        plan = plans.get(dev_id)
        if plan is None or plan.kind != "real":
            raise loaded.error(("bench", "device_clocks", dev_id), "expected the id of a device with a host in "
                               "its address (a served device that follows the bench's clock)", address)
    return plans


class Boundary:
    """Every protocol device's boundary driver, the step the run is at, and the emergency stop."""

    def __init__(self, spec: BenchSpec, step_s: int, plans: Mapping[str, DevicePlan], io: IoLoop, pacer: Pacer,
                 timing: TimingLog, iolog: IoLog, events: EventSink) -> None:
        self.spec = spec
        self.step_s = step_s
        self.cycle_s = spec.cycle_s(step_s)
        self.plans = plans
        self.io = io
        self.pacer = pacer
        self.timing = timing
        self.iolog = iolog
        self.events = events
        self.drivers: dict[str, BoundaryDriver] = {}
        self.t_s = 0
        self.skip = False
        self.estopped = False
        self.silent_controllers: set[str] = set()  # drills
        self.row: StepTiming | None = None
        self._slots: asyncio.Semaphore | None = None

    def slots(self) -> asyncio.Semaphore:
        """On the bench loop: at most ``io_concurrency`` operations on the wire; the others queue (not timed)."""
        if self._slots is None:
            self._slots = asyncio.Semaphore(self.spec.io_concurrency)
        return self._slots

    # -- device host hook ------------------------------------------------------------------------------------
    def wrap(self, eid: str, driver: Driver) -> Driver:
        """``DeviceSim``'s driver_wrapper: put the safety boundary in front of ``driver``."""
        plan = self.plans[eid]
        wrapped = BoundaryDriver(self, plan, driver)
        self.drivers[eid] = wrapped
        self.iolog.ensure(eid)
        return wrapped

    # -- steps ---------------------------------------------------------------------------------------------
    def begin_step(self, row: StepTiming) -> None:
        self.t_s, self.row = row.t_s, row
        self.skip = row.action != "run"

    def note(self, row_field: str, value: float) -> None:
        row = self.row
        if row is not None:
            current = getattr(row, row_field)
            setattr(row, row_field, value if math.isnan(current) else max(current, value))

    def count(self, row_field: str) -> None:
        row = self.row
        if row is not None:
            setattr(row, row_field, getattr(row, row_field) + 1)

    # -- safe states -------------------------------------------------------------------------------------------
    def safe_all(self, source: str, *, seal: bool = True, timeout_s: float = 10.0) -> dict[str, str]:
        """Write every protocol device's safe setpoint now (any thread); device id -> "ok" or the error."""
        drivers = list(self.drivers.values())
        if not drivers or self.io.loop.is_closed():
            return {}

        async def _all() -> list[str]:
            return await asyncio.gather(*(d.seal_and_safe(source, seal=seal) for d in drivers))

        try:
            results = self.io.run(_all(), timeout_s=timeout_s)
        except TimeoutError:
            results = ["timed out"] * len(drivers)
        return {d.plan.id: r for d, r in zip(drivers, results)}

    def emergency_stop(self, reason: str) -> dict[str, str]:
        self.estopped = True
        report = self.safe_all("estop")
        for dev, result in report.items():
            self.events.emit(self.t_s, dev, "emergency_stop", f"{reason}: safe setpoint "
                             f"{dict(self.plans[dev].family.safe_setpoint)} -> {result}")
        return report


class BoundaryDriver(Driver):
    """The safety boundary in front of one protocol driver (see the module docstring)."""

    def __init__(self, boundary: Boundary, plan: DevicePlan, inner: Driver) -> None:
        super().__init__(inner.address, inner.capabilities, timeout_s=inner.timeout_s)
        self.b = boundary
        self.plan = plan
        self.inner = inner
        self.safe = Setpoint(plan.family.safe_setpoint)
        self.health = DeviceHealth()
        self.watch = ControllerWatch(boundary.step_s, boundary.spec.controller_timeout_cycles)
        self.last: Measurement | None = None
        self.soc: float | None = None
        self.last_written: dict[str, tuple[float, float]] = {}
        self.deferred: Setpoint | None = None
        self.sealed = False  # touched on the bench loop only
        self.rejected = 0
        self.protocol_errors_in_row = 0
        self.identity_info: dict[str, Any] = {}
        self._probe: concurrent.futures.Future[None] | None = None

    # -- plumbing --------------------------------------------------------------------------------------------
    async def _on_bench(self, coro: Awaitable[T]) -> T:
        """Run ``coro`` on the bench I/O loop (where the inner driver and the hosted devices live)."""
        if asyncio.get_running_loop() is self.b.io.loop:
            return await coro
        future: concurrent.futures.Future[T] = asyncio.run_coroutine_threadsafe(coro, self.b.io.loop)  # type: ignore[arg-type]
        return await asyncio.wrap_future(future)

    async def _wire(self, op: Callable[[], Awaitable[T]], wire: Wire, *, slot: bool = True) -> T:
        """On the bench loop: one operation on the wire, timed from when it got a slot (``slot=False``: the
        background probe of a faulted device, which must not make the step's exchange wait behind its timeout)."""
        if not slot:
            return await self._timed(op, wire)
        async with self.b.slots():
            return await self._timed(op, wire)

    @staticmethod
    async def _timed(op: Callable[[], Awaitable[T]], wire: Wire) -> T:
        wire.started = time.perf_counter()
        try:
            return await op()
        finally:
            wire.duration_s = time.perf_counter() - wire.started

    def _log(self, op: str, status: str, source: str, started: float, values: Mapping[str, float] | None = None,
             duration_s: float = math.nan, detail: str = "") -> None:
        self.b.iolog.add(self.plan.id, self.b.t_s, started, op, status, source, values, duration_s, detail)

    @property
    def fallback(self) -> str:
        query = parse_qs(self.address.query)
        if "revert_s" in query:
            return f"the device reverts to its default mode {query['revert_s'][0]} s after the last setpoint " \
                   "(SunSpec InOutWRte_RvrtTms)"
        return "none known"

    # -- Driver --------------------------------------------------------------------------------------------
    async def connect(self) -> None:
        await self._on_bench(self._wire(self.inner.connect, Wire()))
        try:
            self.identity_info = dict(await self._on_bench(self.inner.identity()))
        except DeviceError as exc:
            self.identity_info = {"address": self.address.raw, "error": str(exc)}
        if self.b.spec.arm_safe:
            error = await self._on_bench(self._write_safe("arm"))
            if error is not None:
                raise DeviceUnavailable(f"{self.plan.id}: cannot arm the safe state before the run: {error}")

    async def identity(self) -> Mapping[str, Any]:
        return await self._on_bench(self.inner.identity())

    async def write(self, setpoint: Setpoint) -> None:
        t = self.b.t_s
        started = time.perf_counter()
        if self.plan.id in self.b.silent_controllers:
            self._log("write", "dropped", "controller", started, setpoint.values, detail="drill: controller_silent")
            return
        if self.watch.seen(t):
            self.b.events.emit(t, self.plan.id, "controller_back", "setpoints arrive again")
        if self.b.skip and not self.b.estopped:
            self.deferred = setpoint
            self._log("write", "deferred", "controller", started, setpoint.values, detail="late step skipped")
            return
        await self._controller_write(setpoint, "controller")

    async def _write(self, setpoint: Setpoint) -> None:  # write() is overridden: the whole path is the boundary's
        await self._controller_write(setpoint, "controller")

    async def _controller_write(self, setpoint: Setpoint, source: str) -> None:
        t = self.b.t_s
        started = time.perf_counter()
        self.deferred = None
        try:
            self.capabilities.check(setpoint)
            if self.plan.limits is not None:
                check_limits(self.plan.limits, setpoint.values, t_s=t, soc=self.soc,
                             battery_setpoint=self.plan.family.battery_setpoint, last_written=self.last_written)
        except SetpointRejected as exc:
            self.rejected += 1
            self._log("write", "rejected", source, started, setpoint.values, detail=str(exc))
            self.b.events.emit(t, self.plan.id, "setpoint_refused", str(exc), persist=False)  # host logs it
            await self._hold_last()
            raise
        if self.b.estopped or not self.health.passes_controller:
            why = "emergency stop" if self.b.estopped else f"device {self.health.state}"
            self._log("write", "dropped", source, started, setpoint.values, detail=why)
            return
        wire = Wire()
        try:
            sent = await self._on_bench(self._wire(lambda: self._send(setpoint), wire))
        except DeviceError as exc:
            status = "rejected" if isinstance(exc, SetpointRejected) else "error"
            self.rejected += status == "rejected"
            self._log("write", status, source, wire.started, setpoint.values, wire.duration_s, str(exc))
            self.b.count("errors")
            if isinstance(exc, DeviceUnavailable):
                self._fault(t, exc)
            raise
        if not sent:
            self._log("write", "dropped", source, started, setpoint.values, detail="emergency stop")
            return
        self._log("write", "ok", source, wire.started, setpoint.values, wire.duration_s)
        self.b.timing.add_op("write", wire.duration_s)
        self.b.count("writes")
        self.b.note("writes_done_s", wire.started + wire.duration_s - self.b.pacer.due(t))
        for name, value in setpoint.values.items():
            self.last_written[name] = (t, float(value))

    async def _hold_last(self) -> None:
        """A refused setpoint leaves the device as it was. Where the bench armed the device's revert timer, that
        means writing the last accepted setpoint again, or the timer (meant for a lost link) would take over."""
        armed = "revert_s" in parse_qs(self.address.query)
        if not armed or not self.last_written or not self.health.passes_controller or self.b.estopped:
            return
        last = Setpoint({name: value for name, (_, value) in self.last_written.items()})
        wire = Wire()
        try:
            await self._on_bench(self._wire(lambda: self._send(last), wire))
        except DeviceError as exc:
            self._log("write", "error", "hold", wire.started, last.values, wire.duration_s, str(exc))
            if isinstance(exc, DeviceUnavailable):
                self._fault(self.b.t_s, exc)
            return
        self._log("write", "ok", "hold", wire.started, last.values, wire.duration_s)

    async def _send(self, setpoint: Setpoint) -> bool:
        """On the bench loop: nothing from a controller passes once the device is sealed (emergency stop)."""
        if self.sealed:
            return False
        await self.inner.write(setpoint)
        return True

    async def read(self) -> Measurement:
        t = self.b.t_s
        started = time.perf_counter()
        if (self.b.skip or self.b.estopped) and self.last is not None:
            self._log("read", "held", "bench", started, self.last.values)
            return self.last
        if self.health.state == "faulted":
            msg = f"{self.plan.id}: not answering since t={self.health.since_t:g} s (the bench is probing it)"
            self._log("read", "error", "bench", started, detail=msg)
            raise DeviceUnavailable(msg)
        if self.deferred is not None:  # a setpoint held back by a skipped step goes out before the reading
            try:
                await self._controller_write(self.deferred, "controller")
            except DeviceError:
                pass  # logged and counted; the reading decides whether the device answers
            if self.health.state == "faulted":
                raise DeviceUnavailable(f"{self.plan.id}: not answering (the bench is probing it)")
        delay = self.b.pacer.read_due(t) - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        wire = Wire()
        try:
            m = await self._on_bench(self._wire(self.inner.read, wire))
        except DeviceError as exc:
            self._log("read", "error", "bench", wire.started, duration_s=wire.duration_s, detail=str(exc))
            self.b.count("errors")
            self.protocol_errors_in_row += isinstance(exc, ProtocolError)
            if isinstance(exc, DeviceUnavailable) or self.protocol_errors_in_row >= 2:
                self._fault(t, exc)
            raise
        self.b.note("read_late_s", wire.started - self.b.pacer.read_due(t))
        self.protocol_errors_in_row = 0
        self._log("read", "ok", "bench", wire.started, m.values, wire.duration_s)
        self.b.timing.add_op("read", wire.duration_s)
        self.b.count("reads")
        self.last = m
        soc = m.values.get("soc")
        self.soc = soc if soc is not None and math.isfinite(soc) else self.soc
        if self.watch.check(t):
            error = await self._on_bench(self._write_safe("watchdog"))
            self.b.events.emit(t, self.plan.id, "controller_silent",
                               f"no setpoint for {self.b.spec.controller_timeout_cycles} cycles: safe setpoint "
                               f"{dict(self.safe.values)} -> {error or 'ok'}")
        return m

    async def close(self) -> None:
        if self._probe is not None:
            self._probe.cancel()
        await self._on_bench(self.inner.close())

    # -- safe state --------------------------------------------------------------------------------------------
    async def _write_safe(self, source: str, *, slot: bool = True) -> str | None:
        """On the bench loop: write the safe setpoint (no bench limits: it is always allowed); None if confirmed.
        A device that takes no setpoint (a meter) is always safe: nothing is written."""
        if not self.safe.values:
            return None
        wire = Wire()
        try:
            await self._wire(lambda: self.inner.write(self.safe), wire, slot=slot)
        except DeviceError as exc:
            self._log("write", "error", source, wire.started, self.safe.values, wire.duration_s, str(exc))
            return f"{type(exc).__name__}: {exc}"
        self._log("write", "ok", source, wire.started, self.safe.values, wire.duration_s)
        for name, value in self.safe.values.items():
            self.last_written[name] = (self.b.t_s, float(value))
        return None

    async def seal_and_safe(self, source: str, *, seal: bool = True) -> str:
        """On the bench loop: stop every controller setpoint (if ``seal``) and write the safe setpoint."""
        if seal:
            self.sealed = True
            if source == "estop":
                self.health.go("estop", self.b.t_s, "emergency stop")
        if self._probe is not None:
            self._probe.cancel()
        error = await self._write_safe(source)
        return "ok" if error is None else error

    def _fault(self, t: float, exc: DeviceError) -> None:
        if not self.health.go("faulted", t, str(exc)):
            return
        self.b.events.emit(t, self.plan.id, "device_unavailable",
                           f"{exc}; controller setpoints held, safe setpoint {dict(self.safe.values)} tried every "
                           f"cycle; device's own fallback: {self.fallback}")
        self._probe = asyncio.run_coroutine_threadsafe(self._probe_loop(), self.b.io.loop)

    async def _probe_loop(self) -> None:
        """On the bench loop: until the device answers, try its safe setpoint every cycle."""
        while not self.sealed:
            # outside the I/O slots: a device that does not answer costs its own probe an io_timeout per try, never
            # the healthy devices' exchange (it would make every step late by that much while the device is down)
            error = await self._write_safe("watchdog", slot=False)
            if error is None:
                t = self.b.t_s
                self.health.go("safe", t, "safe setpoint confirmed")
                self.b.events.emit(t, self.plan.id, "safe_state", f"safe setpoint {dict(self.safe.values)} "
                                   "confirmed by the device")
                try:
                    self.last = await self._wire(self.inner.read, Wire(), slot=False)
                except DeviceError:
                    pass
                self.protocol_errors_in_row = 0
                self.health.go("armed", t, "device answers again")
                self.b.events.emit(t, self.plan.id, "device_back", "answers again; the controller takes over "
                                   "at the next step")
                return
            await asyncio.sleep(self.b.cycle_s)
