"""Progress of a run: the recorder reports each recorded step to a monitor (cosim.recorder ``on_step``).

The monitor shows simulated time, the speed factor versus real time and the ETA, and is where a Ctrl-C
request is noticed: it raises :class:`RunInterrupted` after the recorder wrote a whole step, so the recorder
can close a consistent, readable run directory.
"""

from __future__ import annotations

import datetime as dt
import time

from rich.progress import BarColumn, Progress, ProgressColumn, Task, TextColumn, TimeRemainingColumn
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
    """Receives simulated time; draws a progress bar if ``show``; remembers wall time and a stop request."""

    def __init__(self, start: dt.datetime, duration_s: int, show: bool = True) -> None:
        self.start = start
        self.duration_s = duration_s
        self.show = show
        self.stop_requested = False
        self.t_s = 0
        self.steps = 0
        self._t0 = time.perf_counter()
        self._last_draw = 0.0
        self._progress: Progress | None = None
        self._task = None

    def __enter__(self) -> "RunMonitor":
        self._t0 = time.perf_counter()
        if self.show:
            self._progress = Progress(TextColumn("[bold]simulating"), BarColumn(), _SimTimeColumn(), _SpeedColumn(),
                                      TextColumn("ETA"), TimeRemainingColumn(), transient=True)
            self._progress.start()
            self._task = self._progress.add_task("run", total=self.duration_s, sim_time="")
        return self

    def __exit__(self, *exc: object) -> None:
        if self._progress is not None:
            self._progress.stop()

    @property
    def wall_s(self) -> float:
        return time.perf_counter() - self._t0

    def update(self, t_s: int) -> None:
        self.t_s = t_s
        self.steps += 1
        if self.stop_requested:
            raise RunInterrupted(f"stopped by the user at t={t_s} s")
        now = time.perf_counter()
        if self._progress is not None and (now - self._last_draw > 0.1 or t_s >= self.duration_s):
            self._last_draw = now
            sim_time = (self.start + dt.timedelta(seconds=t_s)).strftime("%Y-%m-%d %H:%M")
            self._progress.update(self._task, completed=t_s, sim_time=sim_time)
