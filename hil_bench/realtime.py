"""Pacing the co-simulation against the wall clock, and the lateness of every step.

mosaik's own real-time mode polls its clock once per ``rt_factor`` wall seconds and can only warn or raise
when it falls behind. The bench paces instead at the one place where the wall clock matters, the exchange
with the devices: step ``t`` starts its writes at ``T0 + t * rt_factor`` and reads the devices at
``read_at`` of the cycle, so the reading is the mean over ``[t, t + step)`` as offline (the rest of the cycle
is for the grid and the controllers, which run as fast as they can; a late step still leaves its devices half
of that time between write and read). Every step's lateness (start of the
device exchange minus its due time) is kept; a step later than the tolerance triggers the policy:

* ``warn``: record an event and carry on; the following steps catch up by not waiting;
* ``skip``: skip this step's device exchange (measurements are held, setpoints deferred) so the run is
  back on time at once;
* ``stop``: drive every device to its safe state and end the run.

The first steps carry first-time costs (the grid solver's first solve, first writes of every file; by default
two steps and at least the first wall-clock second, ``bench.warmup_steps``): their timing is recorded
(``warmup`` in timing.parquet) but triggers no policy and is left out of the summary statistics.
"""

from __future__ import annotations

import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal
from collections.abc import Callable

import numpy as np

#: histogram bin edges of lateness, seconds (the last bin is open)
HIST_EDGES_S = (0.0, 1e-4, 2e-4, 5e-4, 1e-3, 2e-3, 5e-3, 1e-2, 2e-2, 5e-2, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0)

Action = Literal["run", "skip", "stop"]


@dataclass
class StepTiming:
    """Wall-clock facts of one step's device exchange; times in s relative to the step's due time."""

    t_s: int
    due_s: float  # due time, wall seconds since T0
    late_s: float  # start of the exchange - due time
    action: str  # run | skip | stop
    warmup: bool = False  # one of the first steps (first-time costs): recorded, no policy, not in the summary
    writes_done_s: float = float("nan")  # last write finished
    read_late_s: float = float("nan")  # latest read start - its due time (read_at of the cycle)
    end_s: float = float("nan")  # device step finished
    writes: int = 0
    reads: int = 0
    errors: int = 0


@dataclass
class OpSamples:
    """Durations of driver operations over the whole run (for percentiles)."""

    write_s: list[float] = field(default_factory=list)  # setpoint written and confirmed (read-back)
    read_s: list[float] = field(default_factory=list)


def _ms(x: float) -> float | None:
    return None if x is None or not np.isfinite(x) else round(float(x) * 1000.0, 3)


def percentiles_ms(samples: list[float] | np.ndarray) -> dict[str, float | None]:
    a = np.asarray(samples, dtype=float)
    a = a[np.isfinite(a)]
    if a.size == 0:
        return {"n": 0, "p50_ms": None, "p99_ms": None, "max_ms": None}
    return {"n": int(a.size), "p50_ms": _ms(np.percentile(a, 50)), "p99_ms": _ms(np.percentile(a, 99)),
            "max_ms": _ms(a.max())}


def histogram(late_s: np.ndarray) -> dict[str, list]:
    edges = np.array([*HIST_EDGES_S, np.inf])
    counts, _ = np.histogram(np.clip(late_s, 0.0, None), bins=edges)
    return {"edges_ms": [round(e * 1000.0, 3) for e in HIST_EDGES_S], "counts": [int(c) for c in counts]}


class TimingLog:
    """Per-step timing rows and per-operation durations; thread-safe (the monitor reads it live)."""

    def __init__(self, tolerance_s: float) -> None:
        self.tolerance_s = tolerance_s
        self.steps: list[StepTiming] = []
        self.ops = OpSamples()
        self._lock = threading.Lock()

    def add_step(self, row: StepTiming) -> None:
        with self._lock:
            self.steps.append(row)

    def add_op(self, kind: Literal["write", "read"], duration_s: float) -> None:
        with self._lock:
            (self.ops.write_s if kind == "write" else self.ops.read_s).append(duration_s)

    def summary(self) -> dict[str, Any]:
        with self._lock:
            # a negative lateness only comes from a wait cut short by an emergency stop: not a paced step
            paced = [s for s in self.steps if not s.warmup and s.late_s >= 0]
            late = np.array([s.late_s for s in paced], dtype=float)
            read_late = np.array([s.read_late_s for s in paced], dtype=float)
            skipped = sum(1 for s in paced if s.action == "skip")
            writes, reads = list(self.ops.write_s), list(self.ops.read_s)
            steps, warmup = len(self.steps), sum(1 for s in self.steps if s.warmup)
        lat = percentiles_ms(late)
        return {
            "steps": steps,
            "warmup_steps": warmup,
            "tolerance_ms": _ms(self.tolerance_s),
            "lateness": lat,
            "late_steps": int(np.sum(late > self.tolerance_s)),
            "skipped_steps": skipped,
            "histogram": histogram(late),
            "read_lateness": percentiles_ms(read_late),
            "write_roundtrip": percentiles_ms(writes),
            "read_roundtrip": percentiles_ms(reads),
        }

    def write_parquet(self, path: Path) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        with self._lock:
            rows = [asdict(s) for s in self.steps]
        names = [f.name for f in StepTiming.__dataclass_fields__.values()]
        types = {"t_s": pa.int64(), "action": pa.string(), "writes": pa.int32(), "reads": pa.int32(),
                 "errors": pa.int32(), "warmup": pa.bool_()}
        table = pa.table({n: pa.array([r[n] for r in rows], type=types.get(n, pa.float64())) for n in names})
        pq.write_table(table, path, compression="zstd")


class Pacer:
    """Holds the co-simulation to the wall clock at each step's device exchange and applies the late policy."""

    def __init__(self, rt_factor: float, step_s: int, *, tolerance_s: float, policy: str, read_at: float,
                 timing: TimingLog, stop: threading.Event, warmup_steps: int = 0) -> None:
        self.rt_factor = rt_factor
        self.step_s = step_s
        self.cycle_s = rt_factor * step_s
        self.tolerance_s = tolerance_s
        self.policy = policy
        self.read_at = read_at
        self.timing = timing
        self.stop = stop
        self.warmup_steps = warmup_steps
        self.begun = 0
        self.t0: float | None = None  # perf_counter of t = 0
        self.current: StepTiming | None = None
        self._on_start: list[Callable[[float], None]] = []

    def on_start(self, callback: Callable[[float], None]) -> None:
        """``callback(t0)`` when the first step begins (hosted virtual devices start their clocks there)."""
        self._on_start.append(callback)

    def due(self, t_s: float) -> float:
        assert self.t0 is not None
        return self.t0 + t_s * self.rt_factor

    def read_due(self, t_s: float) -> float:
        """When step ``t_s`` reads the devices: ``read_at`` of the cycle after its due time, but for a late step
        at least half of that after it actually started, so the setpoints just written have had time to act
        (a reading taken right after a write would show the previous step again)."""
        due = self.due(t_s) + self.read_at * self.cycle_s
        row = self.current
        if row is not None and row.t_s == t_s and row.late_s > 0:
            due = max(due, self.due(t_s) + row.late_s + 0.5 * self.read_at * self.cycle_s)
        return due

    def begin(self, t_s: int) -> StepTiming:
        """Wait until step ``t_s`` is due (an emergency stop cuts the wait short); decide what the step does."""
        now = time.perf_counter()
        if self.t0 is None:
            self.t0 = now - t_s * self.rt_factor
            for callback in self._on_start:
                callback(self.t0)
        due = self.due(t_s)
        while now < due and not self.stop.is_set():
            self.stop.wait(due - now)
            now = time.perf_counter()
        late = now - due
        warmup = self.begun < self.warmup_steps
        self.begun += 1
        action: Action = "run"
        if late > self.tolerance_s and not self.stop.is_set() and not warmup:
            action = {"warn": "run", "skip": "skip", "stop": "stop"}[self.policy]  # type: ignore[assignment]
        self.current = StepTiming(t_s, due - self.t0, late, action, warmup)
        return self.current

    def end(self, row: StepTiming) -> None:
        row.end_s = time.perf_counter() - self.due(row.t_s)
        self.timing.add_step(row)
