"""Memory: peak resident memory of the Fur/Skive ``full`` run, and how it grows with the number of steps.

    python -m benchmarks.memory [--quick]

Each run happens in a fresh Python process (so nothing of an earlier run, and none of this process's imports,
is counted): the child loads the scenario, runs it with :func:`cosim.run.run` into a temporary run directory and
reports its peak RSS (``resource.getrusage``, ``ru_maxrss``) and its RSS at every simulated hour (sampled by the
run's own progress clock). The full benchmark runs 1, 7 and 28 days; ``--quick`` 30 min, 1 h and 2 h.

What it must show: memory does not grow with the number of steps beyond the recorded results. The recorder keeps
at most ``flush_rows`` rows per table in memory (Parquet row groups go to disk), so the growth per simulated day
between the 7- and the 28-day run should be close to zero; the goal is <= 1 MB per simulated day (28 days would
then add < 30 MB).

The child is also what :mod:`benchmarks.race` uses for our side of the race (``run_child``): its wall time is
measured around the whole run (scenario loading, world building, stepping, closing the run directory), with the
wall time of every simulated day from the run's own clock. Results are cached per process, so when both modules
run in one ``python -m benchmarks`` the race reuses the 1- and 7-day runs made here instead of repeating them.
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks.common import print_rows, row

ROOT = Path(__file__).resolve().parents[1]
PILOT = ROOT / "benchmarks" / "scenarios" / "fur_skive_race.yaml"  # the pilot as first measured, kept frozen
VARIANT = "full"
GOAL_MB_PER_DAY = 1.0
_CACHE: dict[tuple, dict[str, Any]] = {}


def tiny() -> bool:
    """S4G_BENCH_TINY=1 (the smoke test): the smallest sizes that still exercise every code path."""
    return os.environ.get("S4G_BENCH_TINY") == "1"


# ---------------------------------------------------------------------------------------------- the child
def _rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def _peak_mb() -> float:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # KiB on Linux


_MARKS: list[list[tuple[int, float, float]]] = []  # the marks list of the run in progress (one at a time)
_STEPPING: list[float] = []  # start and end of World.run of the run in progress
_STEPPING_CPU: list[float] = []  # the same as CPU time of this process (less sensitive to a busy machine)


def _hook_clock() -> None:
    """Sample wall time and RSS at every simulated hour from the run's own progress clock (installed once)."""
    from cosim import progress

    if getattr(progress.RunMonitor.update, "_bench_hook", False):
        return
    original = progress.RunMonitor.update

    def update(self: Any, t_s: int) -> None:
        original(self, t_s)
        if t_s % 3600 == 0 and _MARKS:
            _MARKS[-1].append((int(t_s), time.perf_counter(), _rss_mb()))

    update._bench_hook = True  # type: ignore[attr-defined]
    progress.RunMonitor.update = update  # type: ignore[method-assign]

    import mosaik.scenario

    world_run = mosaik.scenario.World.run

    def run(self: Any, *args: Any, **kwargs: Any) -> Any:  # stepping = World.run, as on the naive side
        _STEPPING.append(time.perf_counter())
        _STEPPING_CPU.append(time.process_time())
        try:
            return world_run(self, *args, **kwargs)
        finally:
            _STEPPING.append(time.perf_counter())
            _STEPPING_CPU.append(time.process_time())

    mosaik.scenario.World.run = run  # type: ignore[method-assign]


def child_main(scenario: str, variant: str, duration_s: int, out: str, overrides: str) -> dict[str, Any]:
    """Run one scenario in this (normally fresh) process; returns timings and memory as a dict."""
    t0 = time.perf_counter()
    from cosim import run as run_mod
    from cosim.scenario import load

    _hook_clock()
    marks: list[tuple[int, float, float]] = []
    _MARKS.append(marks)
    _STEPPING.clear()
    _STEPPING_CPU.clear()
    rss_start = _rss_mb()
    try:
        loaded = load(Path(scenario), {"duration": duration_s, **json.loads(overrides or "{}")},
                      variant=variant or None)
        result = run_mod.run(loaded, Path(out), progress=False, kpis=False, report=False)
    finally:
        _MARKS.remove(marks)
    wall = time.perf_counter() - t0
    if result.status != "complete":
        raise RuntimeError(f"run {result.status}: {result.error}")
    start, end = _STEPPING[0], _STEPPING[-1]
    return {"wall_s": wall, "run_s": end - start, "run_cpu_s": _STEPPING_CPU[-1] - _STEPPING_CPU[0],
            "steps": result.steps, "end_s": end - t0,
            "marks": [(t, w - t0, m) for t, w, m in marks], "rss_start_mb": rss_start,
            "rss_stepped_mb": marks[-1][2] if marks else _rss_mb(), "rss_end_mb": _rss_mb(), "peak_rss_mb": _peak_mb()}


_BASE: Path | None = None


def _base_dir() -> Path:
    """One temporary folder per benchmark process for the run directories (removed when the process exits)."""
    global _BASE
    if _BASE is None:
        import atexit
        import shutil

        _BASE = Path(tempfile.mkdtemp(prefix="s4g-bench-"))
        atexit.register(shutil.rmtree, _BASE, True)
    return _BASE


def run_child(duration_s: int, *, scenario: Path = PILOT, variant: str = VARIANT,
              overrides: dict | None = None, repeat: int = 0) -> dict[str, Any]:
    """Run the scenario for ``duration_s`` in a fresh process (cached per process; ``repeat`` > 0: another run of
    the same, for a median); ``run_dir`` holds the results until this process ends. With S4G_BENCH_TINY=1 (the smoke
    test) the run happens in this process instead."""
    key = (str(scenario), variant, duration_s, json.dumps(overrides or {}, sort_keys=True), repeat)
    if key in _CACHE:
        return _CACHE[key]
    out = _base_dir() / f"run{len(_CACHE)}"
    args = [str(scenario), variant, str(duration_s), str(out), json.dumps(overrides or {})]
    if tiny():
        res = child_main(args[0], args[1], duration_s, args[3], args[4])
        res["in_process"] = True
    else:
        cmd = [sys.executable, "-m", "benchmarks.memory", "--child", *args]
        proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
        if proc.returncode != 0:
            raise RuntimeError(f"child run failed ({' '.join(cmd)}):\n{proc.stderr[-3000:]}")
        res = json.loads([x for x in proc.stdout.splitlines() if x.startswith("{")][-1])
    res["run_dir"] = str(out)
    res["day_s"] = day_times(res)
    _CACHE[key] = res
    return res


def day_times(res: dict[str, Any], period_s: int = 86400) -> list[float]:
    """Wall time of every full simulated ``period_s`` of a child run (from its hourly clock marks)."""
    at = {t: w for t, w, _ in res["marks"]}
    ends = sorted(t for t in at if t % period_s == 0)
    out = [at[b] - at[a] for a, b in itertools.pairwise(ends) if b - a == period_s]
    last = ends[-1] if ends else None
    if last is not None and res["steps"] and last + period_s <= res["steps"] * 60:  # the final period ends the run
        out.append(res["end_s"] - at[last])
    return out


def growth_mb_per_day(res: dict[str, Any], skip_s: int = 86400) -> float:
    """Least-squares slope of RSS over simulated time (MB per simulated day), after the first ``skip_s``."""
    import numpy as np

    pts = [(t, m) for t, _, m in res["marks"] if t >= skip_s]
    if len(pts) < 2:
        pts = [(t, m) for t, _, m in res["marks"]]
    if len(pts) < 2:
        return float("nan")
    t = np.array([p[0] for p in pts], float) / 86400.0
    m = np.array([p[1] for p in pts], float)
    return float(np.polyfit(t, m, 1)[0])


# ---------------------------------------------------------------------------------------------- the benchmark
def durations(quick: bool) -> list[tuple[int, str]]:
    if tiny():
        return [(300, "5 min"), (600, "10 min")]
    if quick:
        return [(1800, "30 min"), (3600, "1 h"), (7200, "2 h")]
    return [(86400, "1 day"), (7 * 86400, "7 days"), (28 * 86400, "28 days")]


def run(quick: bool) -> list[dict]:
    rows: list[dict] = []
    runs = [(label, secs, run_child(secs)) for secs, label in durations(quick)]
    for label, _secs, res in runs:
        rows.append(row(f"memory: peak RSS of the Fur/Skive {VARIANT} run, {label} (fresh process, incl. closing "
                        "the run directory)", res["peak_rss_mb"], None, "MB"))
        rows.append(row(f"memory: RSS at the last simulated hour of the {label} run (before closing)",
                        res["rss_stepped_mb"], None, "MB"))
    (l1, s1, r1), (l2, s2, r2) = runs[-2], runs[-1]
    days = (s2 - s1) / 86400.0
    per_day = (r2["peak_rss_mb"] - r1["peak_rss_mb"]) / days
    goal = GOAL_MB_PER_DAY if not quick and not tiny() else None  # short runs: warm-up dominates, no verdict
    # closing copies the recorded results into results.duckdb, so this peak grows with the results by design
    rows.append(row(f"memory: peak RSS growth {l1} -> {l2}, per simulated day (incl. closing: the results.duckdb "
                    "copy grows with the recorded results)", per_day, None, "MB/day"))
    stepped = (r2["rss_stepped_mb"] - r1["rss_stepped_mb"]) / days
    rows.append(row(f"memory: RSS growth {l1} -> {l2} before closing, per simulated day", stepped, None, "MB/day",
                    goal_max=goal))
    slope = growth_mb_per_day(r2, skip_s=86400 if s2 > 2 * 86400 else 0)
    if math.isfinite(slope):
        rows.append(row(f"memory: RSS slope within the {l2} run (hourly samples"
                        f"{', after the first day' if s2 > 2 * 86400 else ''})", slope, None, "MB/day", goal_max=goal))
    return rows


def _main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        scenario, variant, duration, out, overrides = sys.argv[2:7]
        print(json.dumps(child_main(scenario, variant, int(duration), out, overrides)), flush=True)
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    print_rows(run(parser.parse_args().quick), title="memory")


if __name__ == "__main__":
    _main()
