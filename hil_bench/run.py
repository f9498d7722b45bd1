"""A bench run: the scenario against the wall clock, with real and hosted devices, safety and timing statistics.

Order of a run (``BenchRuntime.run``):

1. classify the devices (:func:`hil_bench.boundary.plan_devices`) and check every real or replayed one
   (:mod:`hil_bench.check`); one that does not answer, or refuses its safe setpoint, stops everything here
   (:class:`BenchRefused`, exit code 2) -- the answering ones are left armed in their safe state;
2. start the hosted virtual devices on loopback and give the device host their addresses (SunSpec addresses
   get the revert timer of two cycles, driver timeouts fit the cycle); with ``clock: steps``, link the served
   devices that follow the bench's clock (:mod:`hil_bench.clocks`);
3. build the world exactly as offline, with :class:`~hil_bench.devsim.BenchDeviceSim` as device host;
4. serve the live monitor and the control endpoint (``RUN_DIR/bench.ctl``), trap Ctrl-C and SIGTERM;
5. run; then, whatever happened, drive every protocol device to its safe state before anything is closed,
   and write ``timing.parquet``, ``device_io/``, ``bench.json`` and ``run.json`` next to the offline outputs.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import gc
import json
import logging
import signal
import sys
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast
from collections.abc import Callable

from cosim.progress import RunInterrupted, RunMonitor
from cosim.run import recorded_steps, versions
from cosim.scenario import LoadedScenario
from cosim.security.webauth import server_auth as monitor_auth
from cosim.world import OBSERVER_HOST, WorldBuilder
from devices.base import Address
from devices.clock_link import ClockClient
from devices.family import DeviceContext
from devices.io_loop import IoLoop
from hil_bench.boundary import Boundary, DevicePlan, plan_devices, with_revert
from hil_bench.check import CheckResult, check_all
from hil_bench.clocks import CLOCK_LINK_TIMEOUT_S, SteppedClocks
from hil_bench.config import BenchSpec
from hil_bench.control import CTL_FILE, write_ctl
from hil_bench.flow import FlowBus, token
from hil_bench.hosting import Hosting
from hil_bench.realtime import Pacer, StepTiming, TimingLog
from hil_bench.records import EventSink, IoLog

log = logging.getLogger(__name__)

EXIT_OK, EXIT_FAILED, EXIT_REFUSED, EXIT_INTERRUPTED = 0, 1, 2, 130
MAX_LATE_EVENTS = 100  # late-step events written to events.jsonl (all are in timing.parquet)
Observer = Callable[[int, "BenchRuntime"], None]


class BenchRefused(Exception):
    """A device that is not virtual did not answer (or refused its safe setpoint): the run does not start."""

    def __init__(self, checks: list[CheckResult]) -> None:
        self.checks = checks
        bad = [c for c in checks if not c.reachable or c.armed is False]
        super().__init__("the bench does not start: " + "; ".join(
            f"{c.device} at {c.address}: {c.error or 'safe setpoint refused'}" for c in bad))


@dataclass
class BenchResult:
    run_dir: Path
    status: str  # complete | interrupted | failed
    wall_s: float
    steps: int
    timing: dict[str, Any]
    checks: list[CheckResult] = field(default_factory=list)
    kpis: dict[str, Any] | None = None
    error: str | None = None
    stop_reason: str | None = None
    estop: dict[str, str] | None = None

    @property
    def exit_code(self) -> int:
        if self.status == "complete":
            return EXIT_OK
        if self.status == "interrupted" and self.stop_reason and not self.stop_reason.startswith("late"):
            return EXIT_INTERRUPTED
        return EXIT_FAILED


def effective_spec(loaded: LoadedScenario, rt_factor: float | None = None, monitor: bool | None = None,
                   monitor_port: int | None = None) -> BenchSpec:
    # ``bench:`` is a section registered by entry point: the core scenario model does not declare it
    spec = cast(Any, loaded.scenario).bench or BenchSpec()
    mon: dict[str, Any] = {}
    if monitor is not None:
        mon["enabled"] = monitor
    if monitor_port is not None:
        mon["port"] = monitor_port
    update: dict[str, Any] = {"monitor": spec.monitor.model_copy(update=mon)} if mon else {}
    if rt_factor is not None:
        if rt_factor <= 0:
            raise ValueError("the real-time factor must be > 0")
        update["rt_factor"] = rt_factor
    return spec.model_copy(update=update) if update else spec


class BenchRuntime:
    """Everything a bench run holds; the device host, the monitor and the control endpoint talk to it."""

    def __init__(self, loaded: LoadedScenario, run_dir: Path, *, rt_factor: float | None = None,
                 monitor: bool | None = None, monitor_port: int | None = None, progress: bool = True,
                 observers: tuple[Observer, ...] = (), on_ready: Callable[[BenchRuntime], None] | None = None,
                 echo: Callable[[Any], None] | None = None) -> None:
        self.loaded = loaded
        self.scenario = loaded.scenario
        self.run_dir = Path(run_dir)
        self.spec = effective_spec(loaded, rt_factor, monitor, monitor_port)
        self.plans: dict[str, DevicePlan] = plan_devices(loaded, self.spec)
        self.progress = progress
        self.observers = observers
        self.on_ready = on_ready
        self.echo = echo or (lambda _msg: None)
        step = self.scenario.step
        self.stop_event = threading.Event()
        self.timing = TimingLog(self.spec.tolerance)
        self.pacer = Pacer(self.spec.rt_factor, step, tolerance_s=self.spec.tolerance, policy=self.spec.policy,
                           read_at=self.spec.read_at, timing=self.timing, stop=self.stop_event,
                           warmup_steps=self.spec.warmup(step))
        self.run_monitor = RunMonitor(self.scenario.start, self.scenario.duration, show=progress)
        self.status = "starting"
        self.t_s: int | None = None
        self.steps_done = 0
        self.stop_reason: str | None = None
        self.estop_report: dict[str, str] | None = None
        self.end_report: dict[str, str] | None = None
        self.checks: list[CheckResult] = []
        self.monitor_url: str | None = None
        self.io: IoLoop | None = None
        self.hosting: Hosting | None = None
        self.clocks: SteppedClocks | None = None  # clock: steps
        self.boundary: Boundary | None = None
        self.flow: FlowBus | None = None
        self.events: EventSink | None = None
        self.iolog: IoLog | None = None
        self.server: Any = None
        self.device_sim: Any = None  # the BenchDeviceSim, set by itself
        self.observer_sim: Any = None  # the post-grid BenchDeviceSim (families that only observe), if any
        self._estop_lock = threading.Lock()
        self._drill_state: dict[int, bool] = {}
        self._late_events = 0

    # -- the run ---------------------------------------------------------------------------------------------
    def check(self, *, arm: bool) -> list[CheckResult]:
        """Check the real and replayed devices (on the bench loop); with ``arm``, leave them in their safe state."""
        revert = 2 * self.scenario.step
        targets = []
        configs = {d.id: d for d in self.scenario.devices}
        for plan in self.plans.values():
            if plan.kind in ("real", "replay"):
                plan.driver_address = with_revert(plan.address, revert) if self.spec.device_revert else plan.address
                fam = plan.family
                targets.append((plan, fam.parse_config(configs[plan.id].config)))
        self.checks = check_all(targets, self.io, arm=arm)
        return self.checks

    def run(self, *, kpis: bool = True, report: bool = True) -> BenchResult:
        sc = self.scenario
        self.io = IoLoop("s4g-bench-io")
        started = dt.datetime.now().astimezone()
        builder: WorldBuilder | None = None
        status, error = "complete", None
        try:
            checks = self.check(arm=self.spec.arm_safe)
            if any(not c.reachable or c.armed is False for c in checks):
                raise BenchRefused(checks)
            self.run_dir.mkdir(parents=True, exist_ok=True)
            (self.run_dir / "scenario.yaml").write_text(self.loaded.text, encoding="utf-8")
            self.events = EventSink(self.run_dir / "events.jsonl")
            self.iolog = IoLog(self.run_dir)
            self.boundary = Boundary(self.spec, sc.step, self.plans, self.io, self.pacer, self.timing, self.iolog,
                                     self.events)
            self.hosting = Hosting(self.io, self.spec.rt_factor, self.spec.virtual_step_s)
            bench_loaded = self._start_hosted()
            if self.spec.clock == "steps":
                followers = {dev: ClockClient(address, CLOCK_LINK_TIMEOUT_S)
                             for dev, address in self.spec.device_clocks.items()}
                self.clocks = SteppedClocks(self.hosting, followers, self.spec.virtual_step_s, self.iolog)
            self.pacer.on_start(self._clocks_start)
            if self.spec.monitor.enabled:
                self.flow = FlowBus(self.spec.monitor.broker, start=sc.start, seed=sc.seed).open()
            self._serve()
            builder = WorldBuilder(bench_loaded, self.run_dir, monitor=self.run_monitor)
            events = str(self.run_dir / "events.jsonl")
            builder.sim("Devices", "hil_bench.devsim:BenchDeviceSim", events_path=events, bench=self)
            if any(not plan.family.injects for plan in self.plans.values()):  # a meter: stepped after the grid
                builder.sim(OBSERVER_HOST, "hil_bench.devsim:BenchDeviceSim", events_path=events, bench=self,
                            after_grid=True)
            builder.build()
            self._watch_scenario_brokers(builder)
            # Everything built so far lives for the whole run: keep it out of the garbage collector's full
            # passes, which would otherwise stop every thread for tens of ms in the middle of a cycle.
            gc.collect()
            gc.freeze()
            self.status = "running"
            if self.on_ready is not None:
                self.on_ready(self)
            with self.run_monitor, self._signals():
                builder.world.run(until=sc.duration, print_progress=False, shutdown=False)
        except BenchRefused:
            self.status = "refused"
            raise
        except (RunInterrupted, KeyboardInterrupt):
            status = "interrupted"
            if self.stop_reason is None:
                self.stop_reason = "interrupted"
        except Exception as exc:  # keep what was recorded, say why, and still leave the devices safe
            status, error = "failed", f"{type(exc).__name__}: {exc}"
            log.exception("bench run failed")
        finally:
            gc.unfreeze()
            self._finish(builder, status)
        self.status = status
        self._write_outputs(status, error, started)
        result = BenchResult(self.run_dir, status, self.run_monitor.wall_s, recorded_steps(self.run_dir) or 0,
                             self.timing.summary(), self.checks, error=error, stop_reason=self.stop_reason,
                             estop=self.estop_report)
        if self.server is not None:
            try:
                self.server.refresh()
                self.server.close()
            except Exception:  # the run's results are written; the page just goes away
                log.exception("bench: closing the monitor failed")
            self.server = None
        (self.run_dir / CTL_FILE).unlink(missing_ok=True)
        if kpis and (self.run_dir / "timeseries").is_dir():
            from cosim import kpi

            result.kpis = kpi.compute(self.run_dir)
            if report:
                from cosim import report as report_mod

                from hil_bench.report import render as render_bench

                report_mod.render(self.run_dir)
                render_bench(self.run_dir)
        return result

    def _start_hosted(self) -> LoadedScenario:
        """Start the hosted virtual devices and return the scenario the device host should see."""
        assert self.hosting is not None
        sc = self.scenario
        revert = 2 * sc.step
        specs = []
        for d in sc.devices:
            plan = self.plans[d.id]
            if plan.kind == "hosted":
                fam = plan.family
                context = DeviceContext(sc.start, sc.step, d.id)  # its clock on the scenario's calendar
                address = self.hosting.start(d.id, fam, fam.parse_config(d.config), Address.parse(d.address).scheme,
                                             context=context)
                plan.driver_address = with_revert(address, revert) if self.spec.device_revert else address
            elif plan.kind in ("real", "replay") and not plan.driver_address:
                plan.driver_address = plan.address
            if plan.protocol:
                d = d.model_copy(update={"address": plan.driver_address, "timeout_s": plan.timeout_s})
            specs.append(d)
        return dataclasses.replace(self.loaded, scenario=sc.model_copy(update={"devices": specs}))

    def _watch_scenario_brokers(self, builder: WorldBuilder) -> None:
        """The scenario's own broker roles (``messaging:``), if any flow travels on them, go on the monitor too."""
        bus = getattr(builder, "bus", None)
        if bus is None or self.server is None or not self.spec.monitor.enabled:
            return
        from cosim.messaging import topics

        subs = [bus.subscribe(role, "s4g/#", "hil-bench-monitor") for role in topics.ROLES]
        self.server.add_feed(subs, lambda: -1 if self.t_s is None else self.t_s)

    def _clocks_start(self, t0: float) -> None:
        assert self.hosting is not None and self.iolog is not None
        self.iolog.t0 = t0
        if self.clocks is None:  # clock: wall -- with clock: steps the device host advances them every step
            self.hosting.start_clocks(t0)

    def _serve(self) -> None:
        from hil_bench.monitor import MonitorServer

        mon = self.spec.monitor
        self.server = MonitorServer(
            self.snapshot, self.emergency_stop,
            subscription=self.flow.subscribe() if self.flow is not None else None,
            published_t=(lambda: cast(FlowBus, self.flow).published_t) if self.flow is not None else (lambda: -1),
            host=mon.host if mon.enabled else "127.0.0.1", port=mon.port if mon.enabled else 0, page=mon.enabled,
            auth=monitor_auth(mon.users, self.run_dir / "audit.jsonl"))
        try:
            url = self.server.start()
        except OSError as exc:
            raise RuntimeError(f"cannot serve the monitor on {mon.host}:{mon.port}: {exc} "
                               "(--monitor-port 0 picks a free port)") from exc
        # `s4g bench stop` authenticates with a bearer token only the bench host's user can read (ctl file 0600)
        write_ctl(self.run_dir, url, token=self.server.auth.service_token("s4g bench stop", "operator"))
        if mon.enabled:
            self.monitor_url = url
            self.echo(f"live monitor: {url}")

    # -- step hooks (called by BenchDeviceSim on the co-simulation thread) -------------------------------------
    def on_step_start(self, row: StepTiming) -> None:
        assert self.events is not None and self.boundary is not None
        self.t_s = row.t_s
        tol_ms = self.spec.tolerance * 1000
        if row.warmup:
            pass
        elif row.action == "stop":
            self.events.emit(row.t_s, "bench", "late_stop", f"step started {row.late_s * 1000:.1f} ms late "
                             f"(tolerance {tol_ms:g} ms, policy stop): stopping safely")
            self.emergency_stop(f"late step at t={row.t_s} s ({row.late_s * 1000:.1f} ms > {tol_ms:g} ms)",
                                late=True)
        elif row.late_s > self.spec.tolerance:
            self._late_events += 1
            what = "device exchange skipped" if row.action == "skip" else "catching up"
            self.events.emit(row.t_s, "bench", "late_step", f"step started {row.late_s * 1000:.1f} ms late "
                             f"(tolerance {tol_ms:g} ms): {what}", persist=self._late_events <= MAX_LATE_EVENTS)
        self._apply_drills(row.t_s)

    def on_step_end(self, row: StepTiming) -> None:
        self.steps_done += 1
        for observer in self.observers:
            observer(row.t_s, self)

    def _apply_drills(self, t_s: int) -> None:
        assert self.boundary is not None and self.events is not None and self.hosting is not None
        for i, drill in enumerate(self.spec.drills):
            active = drill.active(t_s)
            if self._drill_state.get(i, False) == active:
                continue
            self._drill_state[i] = active
            if drill.fault == "controller_silent":
                (self.boundary.silent_controllers.add if active else self.boundary.silent_controllers.discard)(
                    drill.device)
            else:
                self.hosting.devices[drill.device].set_silent(active)
            self.events.emit(t_s, drill.device, "drill", f"{drill.fault} {'begins' if active else 'ends'}")

    # -- emergency stop ----------------------------------------------------------------------------------------
    def emergency_stop(self, reason: str = "emergency stop", *, late: bool = False) -> dict[str, str]:
        """Drive every protocol device to its safe state now and end the run at the step boundary (any thread)."""
        with self._estop_lock:
            if self.estop_report is not None:
                return self.estop_report
            self.stop_reason = ("late step: " if late else "emergency stop: ") + reason
            self.stop_event.set()
            self.status = "stopping"
            report = self.boundary.emergency_stop(reason) if self.boundary is not None else {}
            self.estop_report = report
            self.run_monitor.stop_requested = True
            self.echo(f"emergency stop ({reason}): " + (", ".join(f"{d} {r}" for d, r in report.items())
                                                          or "no protocol device"))
            return report

    def _signals(self):
        runtime = self

        class _Trap:
            def __enter__(self) -> None:
                self.previous: dict[int, Any] = {}
                if threading.current_thread() is not threading.main_thread():
                    return
                for sig in (signal.SIGINT, signal.SIGTERM):
                    self.previous[sig] = signal.signal(sig, self.handler)

            @staticmethod
            def handler(signum: int, frame: Any) -> None:
                if signum == signal.SIGINT and runtime.stop_event.is_set():
                    raise KeyboardInterrupt  # a second Ctrl-C: out now (the devices are already safe)
                threading.Thread(target=runtime.emergency_stop, args=(f"{signal.Signals(signum).name} received",),
                                 name="s4g-bench-estop", daemon=True).start()

            def __exit__(self, *exc: object) -> None:
                for sig, previous in self.previous.items():
                    signal.signal(sig, previous)

        return _Trap()

    # -- the end -----------------------------------------------------------------------------------------------
    def _finish(self, builder: WorldBuilder | None, status: str) -> None:
        """Safe states first, then close everything (each step even if an earlier one failed)."""
        steps: list[tuple[str, Callable[[], None]]] = []
        if self.boundary is not None and self.estop_report is None:
            steps.append(("safe states", self._end_safe))
        if builder is not None:
            steps.append(("world", lambda: _shutdown_world(builder.world)))
            if hasattr(builder, "close"):  # the scenario's message bus and its embedded broker
                steps.append(("scenario brokers", builder.close))
        clocks, io = self.clocks, self.io
        if clocks is not None and io is not None:
            steps.append(("clock links", lambda: io.run(clocks.close(), timeout_s=10)))
        if self.hosting is not None:
            steps.append(("hosted devices", self.hosting.stop))
        if self.flow is not None:
            steps.append(("broker", self.flow.close))
        if self.iolog is not None:
            steps.append(("device I/O log", self.iolog.close))
        if self.io is not None:
            steps.append(("I/O loop", self.io.close))
        for name, fn in steps:
            try:
                fn()
            except Exception:  # one failed cleanup must not skip the others
                log.exception("bench: closing %s failed", name)

    def _end_safe(self) -> None:
        assert self.boundary is not None and self.events is not None
        self.end_report = self.boundary.safe_all("end")
        for dev, result in self.end_report.items():
            if result != "ok":
                self.events.emit(self.t_s or 0, dev, "end_safe_failed", f"safe setpoint at the end: {result}")

    def snapshot(self) -> dict[str, Any]:
        sc = self.scenario
        devices = []
        sim_devices = {**getattr(self.device_sim, "devices", {}), **getattr(self.observer_sim, "devices", {})}
        for plan in self.plans.values():
            drv = self.boundary.drivers.get(plan.id) if self.boundary is not None else None
            host_dev = sim_devices.get(plan.id)
            state = drv.health.state if drv is not None else ("simulated" if plan.kind == "sim" else "starting")
            devices.append({
                "id": plan.id, "token": token(plan.id), "family": plan.family.name, "kind": plan.kind,
                "site": plan.site,
                "address": plan.driver_address or plan.address, "state": state,
                "faults": drv.health.faults if drv is not None else 0,
                "rejected": host_dev.rejected if host_dev is not None else 0,
                "available": host_dev.available if host_dev is not None else None,
            })
        return {
            "scenario": sc.name, "status": self.status, "start": sc.start.isoformat(), "t_s": self.t_s,
            "steps_done": self.steps_done, "steps_total": sc.steps, "step_s": sc.step,
            "rt_factor": self.spec.rt_factor, "cycle_ms": self.spec.cycle_s(sc.step) * 1000.0,
            "policy": self.spec.policy, "timing": self.timing.summary(), "devices": devices,
            "events": self.events.recent(30) if self.events is not None else [],
            "stop_reason": self.stop_reason, "estop": self.estop_report,
        }

    def _write_outputs(self, status: str, error: str | None, started: dt.datetime) -> None:
        if not self.run_dir.is_dir():
            return
        sc = self.scenario
        self.timing.write_parquet(self.run_dir / "timing.parquet")
        summary = self.timing.summary()
        devices = {}
        for plan in self.plans.values():
            drv = self.boundary.drivers.get(plan.id) if self.boundary is not None else None
            check = next((c for c in self.checks if c.device == plan.id), None)
            devices[plan.id] = {
                "kind": plan.kind, "family": plan.family.name, "address": plan.address,
                "driver_address": plan.driver_address or None,
                "identity": (drv.identity_info if drv is not None else None) or (check.identity if check else None),
                "check": None if check is None else {"reachable": check.reachable, "rtt_ms": check.rtt_ms,
                                                     "error": check.error or None},
                "state": drv.health.state if drv is not None else None,
                "faults": drv.health.faults if drv is not None else 0,
                "refused": drv.rejected if drv is not None else 0,
                "history": [list(h) for h in drv.health.history] if drv is not None else [],
                "limits": plan.limits.model_dump() if plan.limits is not None else None,
            }
        bench = {
            "rt_factor": self.spec.rt_factor, "step_s": sc.step, "cycle_s": self.spec.cycle_s(sc.step),
            "tolerance_s": self.spec.tolerance, "policy": self.spec.policy, "read_at": self.spec.read_at,
            "virtual_step_s": self.spec.virtual_step_s, "status": status, "stop_reason": self.stop_reason,
            "monitor_url": self.monitor_url, "timing": summary, "devices": devices,
            "events": self.events.events if self.events is not None else [],
            "estop": self.estop_report, "end_safe": self.end_report, "spec": self.spec.model_dump(),
        }
        (self.run_dir / "bench.json").write_text(json.dumps(bench, indent=1, default=str), encoding="utf-8")
        steps = recorded_steps(self.run_dir)
        steps = self.steps_done if steps is None else steps
        info = {
            "scenario": sc.name, "scenario_file": str(self.loaded.path), "scenario_sha256": self.loaded.sha256,
            "seed": sc.seed, "status": status, "error": error, "mode": "bench",
            "started": started.isoformat(timespec="seconds"), "wall_s": round(self.run_monitor.wall_s, 3),
            "steps_done": steps, "simulated_s": steps * sc.step, "duration_s": sc.duration,
            "bench": {"rt_factor": self.spec.rt_factor, "stop_reason": self.stop_reason,
                      "lateness_ms": summary["lateness"], "late_steps": summary["late_steps"],
                      "skipped_steps": summary["skipped_steps"], "tolerance_ms": summary["tolerance_ms"]},
            "versions": versions(), "argv": sys.argv,
        }
        (self.run_dir / "run.json").write_text(json.dumps(info, indent=1), encoding="utf-8")


def _shutdown_world(world: Any) -> None:
    """Finalize every simulator; after an interrupted run first end mosaik's pending step tasks cleanly."""
    loop = world.loop
    if not loop.is_closed():
        pending = [t for t in asyncio.all_tasks(loop) if not t.done()]
        for task in pending:
            task.cancel()
        if pending:
            loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
    world.shutdown()


def run_bench(loaded: LoadedScenario, run_dir: Path, **kwargs: Any) -> BenchResult:
    """Convenience: ``BenchRuntime(loaded, run_dir, **options).run(kpis=, report=)``."""
    run_opts = {k: kwargs.pop(k) for k in ("kpis", "report") if k in kwargs}
    return BenchRuntime(loaded, run_dir, **kwargs).run(**run_opts)
