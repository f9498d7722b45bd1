"""Progress of a run: the world builder names each build stage, the recorder reports each recorded step
(cosim.recorder ``on_step``) to a monitor.

While the world is built the monitor shows the stage and its elapsed time (a SimBench grid and its profiles take
seconds); while it runs, simulated time, the speed factor versus real time and the ETA. It is also where a Ctrl-C
request is noticed: it raises :class:`RunInterrupted` after the recorder wrote a whole step, so the recorder can
close a consistent, readable run directory. Wall time counts from the monitor's creation, so start-up is in it;
``build_s`` is the part spent before the first step.
"""

from __future__ import annotations

import datetime as dt
import threading
import time

from rich.console import Console
from rich.progress import (BarColumn, Progress, ProgressColumn, SpinnerColumn, Task, TaskID, TextColumn,
                           TimeElapsedColumn, TimeRemainingColumn)
from rich.text import Text


class RunInterrupted(Exception):
    """The user asked to stop (Ctrl-C); raised at a step boundary."""


class _SimTimeColumn(ProgressColumn):
    def render(self, task: Task) -> Text:
        return Text(task.fields.get("sim_time", ""), style="cyan")


class _SpeedColumn(ProgressColumn):
    def render(self, task: Task) -> Text:
        elapsed = task.elapsed or 0.0
        factor = task.completed / elapsed if elapsed > 0 else 0.0
        return Text(f"x{factor:,.0f} real time", style="green")


class RunMonitor:
    """Receives build stages and simulated time; draws progress if ``show``; remembers wall time, build time,
    the build's warnings and a stop request."""

    def __init__(self, start: dt.datetime, duration_s: int, show: bool = True, console: Console | None = None,
                 stop: threading.Event | None = None) -> None:
        self.start = start
        self.stop = stop  # set from another thread (a study's cancel): stop at the next step, like Ctrl-C
        self.duration_s = duration_s
        self.show = show
        self.console = console
        self.stop_requested = False
        self.t_s = 0
        self.steps = 0
        self.warnings: list[str] = []
        self.stages: list[tuple[str, float]] = []  # (stage, seconds since the monitor was created)
        self._t0 = time.perf_counter()
        self._t_run: float | None = None
        self._last_draw = 0.0
        self._progress: Progress | None = None
        self._task: TaskID | None = None
        self._build: Progress | None = None
        self._build_task: TaskID | None = None

    # -- building -------------------------------------------------------------------------------------------
    def stage(self, text: str | None) -> None:
        """The world builder starts ``text`` (e.g. "grid 1-LV-semiurb4--0-sw"), shown with a spinner; None: the
        build is over (or failed)."""
        if text is None:
            self._end_build()
            return
        self.stages.append((text, time.perf_counter() - self._t0))
        if not self.show:
            return
        if self._build is None:
            self._build = Progress(SpinnerColumn(), TextColumn("[bold]building the world:[/] {task.description}"),
                                   TimeElapsedColumn(), transient=True, console=self.console)
            self._build.start()
            self._build_task = self._build.add_task(text, total=None)
        else:
            assert self._build_task is not None  # added with the spinner
            self._build.update(self._build_task, description=text)

    def warn(self, text: str) -> None:
        """A build warning (e.g. grid loads left at 0 W): kept for meta.json and printed at once."""
        self.warnings.append(text)
        if self.show:
            target = self._build.console if self._build is not None else (self.console or Console(stderr=True))
            target.print(f"[yellow]warning:[/] {text}")

    def _end_build(self) -> None:
        if self._build is not None:
            self._build.stop()
            self._build = None

    # -- running --------------------------------------------------------------------------------------------
    def __enter__(self) -> RunMonitor:
        self._end_build()
        self._t_run = time.perf_counter()
        if self.show:
            self._progress = Progress(TextColumn("[bold]simulating"), BarColumn(), _SimTimeColumn(), _SpeedColumn(),
                                      TextColumn("ETA"), TimeRemainingColumn(), transient=True, console=self.console)
            self._progress.start()
            self._task = self._progress.add_task("run", total=self.duration_s, sim_time="")
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Stop drawing (also after a build that failed before the run started)."""
        self._end_build()
        if self._progress is not None:
            self._progress.stop()
            self._progress = None

    @property
    def wall_s(self) -> float:
        """Seconds since the monitor was created: building the world and running it."""
        return time.perf_counter() - self._t0

    @property
    def build_s(self) -> float:
        """Seconds spent before the first step (the whole wall time while the world is still being built)."""
        return (self._t_run if self._t_run is not None else time.perf_counter()) - self._t0

    def update(self, t_s: int) -> None:
        self.t_s = t_s
        self.steps += 1
        if self.stop_requested or (self.stop is not None and self.stop.is_set()):
            raise RunInterrupted(f"stopped by the user at t={t_s} s")
        now = time.perf_counter()
        if self._progress is not None and (now - self._last_draw > 0.1 or t_s >= self.duration_s):
            self._last_draw = now
            sim_time = (self.start + dt.timedelta(seconds=t_s)).strftime("%Y-%m-%d %H:%M")
            assert self._task is not None  # added with the bar
            self._progress.update(self._task, completed=t_s, sim_time=sim_time)
