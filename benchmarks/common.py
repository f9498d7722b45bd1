"""Shared helpers: repeated measurement with warm-up, one row format, one table printer.

A row is a dict: figure, ours, baseline (measured in the same run, or None), unit, ratio (how many times
better ours is than the baseline), goal (text), met (bool or None), spread (of ours, p90 - p10 or
max - min for few samples), n (samples).
"""

from __future__ import annotations

import asyncio
import statistics
import time
from dataclasses import dataclass
from typing import Any
from collections.abc import Awaitable, Callable, Sequence

from rich.console import Console
from rich.table import Table


@dataclass(frozen=True)
class Stat:
    median: float
    spread: float
    n: int


def median_spread(samples: Sequence[float]) -> Stat:
    xs = sorted(samples)
    if len(xs) >= 10:
        q = statistics.quantiles(xs, n=10)
        spread = q[-1] - q[0]
    else:
        spread = xs[-1] - xs[0]
    return Stat(statistics.median(xs), spread, len(xs))


def percentile(samples: Sequence[float], p: float) -> float:
    xs = sorted(samples)
    if not xs:
        return float("nan")
    k = min(len(xs) - 1, max(0, round(p / 100 * (len(xs) - 1))))
    return xs[k]


def timed(fn: Callable[[], object], repeat: int, warmup: int = 1) -> Stat:
    """Seconds per call of ``fn``: ``warmup`` calls discarded, then ``repeat`` timed calls."""
    for _ in range(warmup):
        fn()
    samples = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - t0)
    return median_spread(samples)


async def sampled(action: Callable[[], Awaitable[object]], n: int, warmup: int = 10) -> list[float]:
    """Wall time of ``n`` awaited calls of ``action`` in s, after ``warmup`` calls that are not kept."""
    samples = []
    for k in range(n + warmup):
        t0 = time.perf_counter()
        await action()
        if k >= warmup:
            samples.append(time.perf_counter() - t0)
    return samples


async def paced(cycles: int, cycle_s: float, one_cycle: Callable[[int], Awaitable[object]]) -> tuple[int, float]:
    """Run ``one_cycle(c)`` at a fixed cycle as a real-time loop would: (cycles whose work overran their deadline,
    the slowest cycle's work in s). An overrun cycle starts the next one at once; no cycle is skipped."""
    missed, worst = 0, 0.0
    start = time.monotonic()
    for c in range(cycles):
        t0 = time.monotonic()
        await one_cycle(c)
        worst = max(worst, time.monotonic() - t0)
        deadline = start + (c + 1) * cycle_s
        if time.monotonic() > deadline:
            missed += 1
        else:
            await asyncio.sleep(deadline - time.monotonic())
    return missed, worst


async def read_write_latencies(driver: Any, n: int) -> tuple[list[float], list[float]]:
    """A protocol driver's read and battery-setpoint write times (s), ``n`` each after a warm-up."""
    from devices.base import Setpoint

    writes = iter(range(1 << 30))
    return (await sampled(driver.read, n),
            await sampled(lambda: driver.write(Setpoint({"batt_p_w": float(100 * (next(writes) % 20) - 1000)})), n))


def _value(x: Stat | float | None) -> float | None:
    return x.median if isinstance(x, Stat) else x


def row(figure: str, ours: Stat | float, baseline: Stat | float | None, unit: str, *,
        goal_ratio: float | None = None, goal_max: float | None = None, goal_min: float | None = None,
        lower_is_better: bool = True) -> dict:
    """One table row. ``goal_ratio``: ours must beat the baseline by that factor; ``goal_max``/``goal_min``:
    an absolute bound on ours."""
    o, b = _value(ours), _value(baseline)
    ratio = None
    if b is not None and o not in (None, 0):
        ratio = b / o if lower_is_better else o / b
    goal, met = None, None
    if goal_ratio is not None and ratio is not None:
        goal, met = f">= {goal_ratio:g}x", ratio >= goal_ratio
    elif goal_max is not None and o is not None:
        goal, met = f"<= {goal_max:g} {unit}", o <= goal_max
    elif goal_min is not None and o is not None:
        goal, met = f">= {goal_min:g} {unit}", o >= goal_min
    return {"figure": figure, "ours": o, "baseline": b, "unit": unit, "ratio": ratio, "goal": goal, "met": met,
            "spread": ours.spread if isinstance(ours, Stat) else None,
            "n": ours.n if isinstance(ours, Stat) else None}


def _fmt(x: float | None) -> str:
    if x is None:
        return "-"
    if abs(x) >= 100:
        return f"{x:,.0f}"
    return f"{x:.3g}"


def markdown_rows(rows: list[dict]) -> str:
    """The table as Markdown (for docs/performance.md and the README), one line per row."""
    lines = ["| benchmark | figure | ours | ± spread | baseline | unit | ratio | goal | met |",
             "|---|---|---:|---:|---:|---|---:|---|---|"]
    for r in rows:
        ratio = f"{r['ratio']:.3g}×" if r.get("ratio") is not None else "–"
        met = {True: "yes", False: "**no**", None: "–"}[r.get("met")]
        cells = [r.get("benchmark", ""), r["figure"].replace("|", "/"), _fmt(r.get("ours")), _fmt(r.get("spread")),
                 _fmt(r.get("baseline")), r["unit"], ratio,
                 (r.get("goal") or "–").replace(">=", "≥").replace("<=", "≤"), met]
        lines.append("| " + " | ".join("–" if c == "-" else c for c in cells) + " |")
    return "\n".join(lines)


def print_rows(rows: list[dict], title: str = "benchmarks") -> None:
    table = Table(title=title)
    for col in ("figure", "ours", "± spread", "baseline", "unit", "ratio", "goal", "met"):
        table.add_column(col, justify="left" if col in ("figure", "unit", "goal") else "right")
    for r in rows:
        met = {True: "[green]yes[/]", False: "[red]no[/]", None: "-"}[r.get("met")]
        ratio = f"{r['ratio']:.3g}x" if r.get("ratio") is not None else "-"
        table.add_row(str(r["figure"]), _fmt(r.get("ours")), _fmt(r.get("spread")), _fmt(r.get("baseline")),
                      str(r["unit"]), ratio, str(r.get("goal") or "-"), met)
    console = Console()
    if not console.is_terminal:  # logs and files: wide enough that rows do not wrap
        console = Console(width=200)
    console.print(table)
