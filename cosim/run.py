"""Run a scenario offline: build the world, step it with a progress bar, close the run directory.

The run directory is always left readable: on success, on Ctrl-C (status "interrupted", the steps done so
far) and on a failure inside a simulator (status "failed", with the error). KPIs and the report are then
computed from the run directory alone.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import platform
import signal
import sys
import threading
import traceback
from contextlib import contextmanager
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any, cast
from collections.abc import Iterator

from cosim.progress import RunInterrupted, RunMonitor
from cosim.scenario import LoadedScenario
from cosim.world import WorldBuilder

VERSIONED = ("s4g-hil", "mosaik", "mosaik-api-v3", "pandapower", "numpy", "pyarrow", "duckdb", "pydantic", "pyomo",
             "highspy", "pymodbus", "ocpp", "python-can")


@dataclass
class RunResult:
    run_dir: Path
    status: str  # complete | interrupted | failed
    wall_s: float
    steps: int
    kpis: dict[str, Any] | None = None
    error: str | None = None


def versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for name in VERSIONED:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    return out


def default_run_dir(loaded: LoadedScenario, base: Path = Path("runs")) -> Path:
    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    return base / f"{loaded.scenario.name}-{stamp}"


@contextmanager
def _ctrl_c_requests_stop(monitor: RunMonitor) -> Iterator[None]:
    """First Ctrl-C asks for a clean stop at the next step; a second one interrupts at once."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, frame: Any) -> None:
        if monitor.stop_requested:
            raise KeyboardInterrupt
        monitor.stop_requested = True

    previous = signal.signal(signal.SIGINT, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def recorded_steps(run_dir: Path) -> int | None:
    """Steps in the run directory: rows of the grid table (present in every run), None before any."""
    path = run_dir / "timeseries" / "grid.parquet"
    if not path.is_file():
        return None
    import pyarrow.parquet as pq

    return cast("int | None", pq.ParquetFile(path).metadata.num_rows)


#: run.json "messaging.totals": the counters a reader checks first (all counters per role key are in "roles")
MESSAGING_TOTALS = ("published", "sent", "received", "foreign", "lost", "corrupted", "broker_refused",
                    "decode_errors", "rejected", "dead_letters")


def messaging_summary(bus: Any) -> dict[str, Any] | None:
    """The message bus's counters for run.json: totals over the role keys, and every counter per role key."""
    if bus is None:
        return None
    stats = bus.stats()
    totals = {name: sum(int(c.get(name, 0)) for c in stats.values()) for name in MESSAGING_TOTALS}
    return {"brokers": bus.describe(), "totals": totals, "roles": stats,
            "dead_letters_kept": len(bus.dead_letters())}


def _record_messaging(builder: WorldBuilder, run_dir: Path) -> dict[str, Any] | None:
    """After the bus closed: its counters and dead letters into the run directory (Parquet, DuckDB, events)."""
    bus = builder.bus
    if bus is None:
        return None
    from cosim.recorder import record_messaging

    record_messaging(run_dir, bus.stats(), bus.dead_letters())
    return messaging_summary(bus)


def _write_run_json(run_dir: Path, loaded: LoadedScenario, status: str, monitor: RunMonitor, error: str | None,
                    started: dt.datetime, messaging: dict[str, Any] | None = None) -> None:
    steps = recorded_steps(run_dir)
    steps = monitor.steps if steps is None else steps
    info = {
        "scenario": loaded.scenario.name,
        "scenario_file": str(loaded.path),
        "scenario_sha256": loaded.sha256,
        "seed": loaded.scenario.seed,
        "status": status,
        "error": error,
        "started": started.isoformat(timespec="seconds"),
        "wall_s": round(monitor.wall_s, 3),
        "steps_done": steps,
        "simulated_s": steps * loaded.scenario.step,
        "duration_s": loaded.scenario.duration,
        "versions": versions(),
        "argv": sys.argv,
    }
    if messaging is not None:
        info["messaging"] = messaging
    (run_dir / "run.json").write_text(json.dumps(info, indent=1), encoding="utf-8")


def run(loaded: LoadedScenario, run_dir: Path, *, progress: bool = True, kpis: bool = True,
        report: bool = True, stop: threading.Event | None = None) -> RunResult:
    """Run ``loaded`` into ``run_dir``; never leaves the directory half-written. Setting ``stop`` (from another
    thread) ends the run after the step being recorded, as Ctrl-C does: status "interrupted"."""
    sc = loaded.scenario
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "scenario.yaml").write_text(loaded.text, encoding="utf-8")
    started = dt.datetime.now().astimezone()
    monitor = RunMonitor(sc.start, sc.duration, show=progress, stop=stop)
    builder = WorldBuilder(loaded, run_dir, monitor=monitor)
    from cosim.sta.live import start_live  # the scenario's `sensorthings:` section: serve the live run

    live = start_live(sc, run_dir)
    status, error = "complete", None
    try:
        builder.build()
        with monitor, _ctrl_c_requests_stop(monitor):
            # mosaik awaits many conditions that already hold (a predecessor that is ahead): an eager task runs to
            # its first real wait at once instead of a trip through the event loop (~3 % of the race's stepping);
            # the dataflow, and so every result, is the same
            builder.world.loop.set_task_factory(asyncio.eager_task_factory)
            builder.world.run(until=sc.duration, print_progress=False, shutdown=False)
            builder.close_out(sc.duration)
    except (RunInterrupted, KeyboardInterrupt):
        status = "interrupted"
        try:  # the steps done are kept whole: the last one's EV energy too
            builder.close_out(sc.duration)
        except Exception as exc:  # the recorded steps stay readable; say what the session records lack
            error = f"close-out after the stop failed ({type(exc).__name__}: {exc}): the last step's EV energy"
    except Exception as exc:  # a simulator failed: keep what was recorded and say why
        status, error = "failed", f"{type(exc).__name__}: {exc}"
        (run_dir / "error.log").write_text(traceback.format_exc(), encoding="utf-8")
        if not builder.recorder:  # the world was never built: nothing was recorded, no message sent
            _write_run_json(run_dir, loaded, status, monitor, error, started)
            raise
    finally:
        _shutdown(builder)
        if live is not None:
            live.close()
    _write_run_json(run_dir, loaded, status, monitor, error, started, _record_messaging(builder, run_dir))
    result = RunResult(run_dir, status, monitor.wall_s, recorded_steps(run_dir) or 0, error=error)
    if kpis and (run_dir / "timeseries").is_dir():
        from cosim import kpi

        result.kpis = kpi.compute(run_dir)
        if report:
            from cosim import report as report_mod

            report_mod.render(run_dir)
    return result


def _shutdown(builder: WorldBuilder) -> None:
    """Finalize every simulator (closes the recorder and device connections) even after an exception."""
    try:
        _cancel_leftover_tasks(builder.world.loop)
        builder.world.shutdown()  # type: ignore[no-untyped-call]  # mosaik: World.shutdown is unannotated
    except Exception:  # a world that never started has nothing to shut down
        pass
    finally:
        builder.close()


def _cancel_leftover_tasks(loop: asyncio.AbstractEventLoop) -> None:
    """After a failure mosaik leaves its simulator tasks pending; end them instead of letting asyncio warn."""
    if loop.is_closed():
        return
    tasks = [t for t in asyncio.all_tasks(loop) if not t.done()]
    for task in tasks:
        task.cancel()
    if tasks:
        loop.run_until_complete(asyncio.gather(*tasks, return_exceptions=True))
