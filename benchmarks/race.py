"""The whole-scenario race: the Fur/Skive pilot (``full`` variant) run by our framework and by a naive composition.

    python -m benchmarks.race [--quick]

The scenario: 27 households on the real Fur feeder (unbalanced power flow), 5 Fronius PV + battery houses with
PROFESS (MPC, 15-minute cycles over 24 h) executing the GESSCon day-ahead plan through LESSAg, PV on every other
roof, the Skive site with 75 kWp PV and the LiBal grid battery under volt-watt/volt-var control, 1-minute steps;
as shipped, the field data and the schedules also travel over the embedded MQTT broker (our side only -- the
naive side has no broker, which only makes its job easier).

The baseline is :mod:`benchmarks.naive`: mosaik with the public mosaik-pandapower-2 adapter (``runpp_3ph`` every
step), plain one-object-per-device simulators over the same physics, PROFESS rebuilt in pyomo and solved with
HiGHS every cycle. Its grid alone costs 0.1-0.2 s per step, so it races over 1 day (``--quick``: 2 hours) while
ours runs all 7 days (``--quick``: the same 2 hours) and the comparison is per simulated day. Both sides also run
the same horizon once, and the race counts only if every KPI of that pair (:func:`cosim.kpi.compute` on both run
directories) agrees within ``REL_TOL`` (relative) or ``ABS_TOL`` (absolute, for values near zero).

Timing: each side in a fresh process. The headline compares stepping time (``world.run``) per simulated day: our
7-day run, made ``WEEK_REPEATS`` times, gives one sample per simulated day (median and spread, from the runs' own
clocks), the naive day is one sample (it alone takes minutes). End to end (load the scenario, build the world,
step, close the run directory; not the KPI computation afterwards) is reported too, the week's as the median of
its runs, and is what the real-time factor uses.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks.common import Stat, median_spread, print_rows, row
from benchmarks.memory import PILOT, ROOT, VARIANT, run_child, tiny

REL_TOL = 1e-3  # 0.1 %: the two PROFESS solvers agree to ~1e-5 of the objective, the power flows to ~1e-9 pu
ABS_TOL = 1e-6
GOAL_RATIO = 20.0  # issue 17: twice the first goal, with the embedded broker
GOAL_REALTIME = 10_000.0  # issue 17: 7 days in about a minute, end to end
WEEK_S = 7 * 86400
# the week runs this many times (fresh processes): one run's end-to-end time swings by +-10 % on a shared 2-core
# machine, so the real-time factor is the median run's
WEEK_REPEATS = 3
DIRECT = {"messaging": {"default": "direct"}}


def per_day_factor(duration_s: int) -> float:
    """Scale a run's time to one simulated day (runs shorter than a day are reported as they are)."""
    return 86400 / duration_s if duration_s >= 86400 else 1.0
SKIP_KPIS = {"run.wall_time_s", "run.status", "run.scenario"}
# where and when an extreme occurred: between nearly equal values (two buses within 1e-9 pu) either answer is
# right; the extreme values themselves are compared
WHERE = ("_bus", "_t_s", "_line", "_trafo")


# ---------------------------------------------------------------------------------------------- naive child
def _naive_child(scenario: str, variant: str, duration_s: int, out: str) -> dict[str, Any]:
    t0 = time.perf_counter()
    from benchmarks.naive import run as naive_run
    from cosim.scenario import load

    loaded = load(Path(scenario), {"duration": duration_s}, variant=variant)
    res = naive_run(loaded, Path(out))
    wall = time.perf_counter() - t0
    from benchmarks.naive.grid import adapter_version

    return {"wall_s": wall, "run_s": res.run_s, "steps": res.steps, "adapter": adapter_version()}


def run_naive(duration_s: int, out: Path) -> dict[str, Any]:
    if tiny():  # the smoke test: in this process
        return _naive_child(str(PILOT), VARIANT, duration_s, str(out))
    cmd = [sys.executable, "-m", "benchmarks.race", "--naive-child", str(PILOT), VARIANT, str(duration_s), str(out)]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"naive run failed:\n{proc.stderr[-3000:]}")
    res = json.loads([x for x in proc.stdout.splitlines() if x.startswith("{")][-1])
    return res


# ---------------------------------------------------------------------------------------------- KPI agreement
def _flat(d: dict, prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flat(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def compare_kpis(ours: dict, naive: dict) -> dict[str, Any]:
    """Every KPI of both runs: numbers within REL_TOL/ABS_TOL, everything else equal. Returns the worst case."""
    a, b = _flat(ours), _flat(naive)
    keys = sorted(k for k in set(a) | set(b) if k not in SKIP_KPIS and not k.endswith(WHERE))
    worst: tuple[float, str | None] = (0.0, None)
    bad, n = [], 0
    for k in keys:
        x, y = a.get(k), b.get(k)
        if isinstance(x, bool) or isinstance(y, bool) or not isinstance(x, (int, float)) \
                or not isinstance(y, (int, float)):
            if x != y and not (isinstance(x, list) and x == y):
                bad.append((k, x, y))
            continue
        n += 1
        diff = abs(x - y)
        rel = diff / max(abs(x), abs(y)) if max(abs(x), abs(y)) > 0 else 0.0
        if diff > ABS_TOL and rel > worst[0]:
            worst = (rel, k)
        if diff > ABS_TOL and rel > REL_TOL:
            bad.append((k, x, y))
    return {"n": n, "worst_rel": worst[0], "worst_key": worst[1], "disagree": bad, "agree": not bad}


# ---------------------------------------------------------------------------------------------- the race
def run(quick: bool) -> list[dict]:
    from cosim import kpi

    if tiny():
        same, ours_long, label, long_label = 600, 600, "10 min", "10 min"  # shares memory's 10-min run
    elif quick:
        same, ours_long, label, long_label = 7200, 7200, "2 h", "2 h"
    else:
        same, ours_long, label, long_label = 86400, WEEK_S, "1 day", "7 days"
    tmp = Path(tempfile.mkdtemp(prefix="s4g-race-"))
    try:
        naive = run_naive(same, tmp / "naive")
        k_naive = kpi.compute(tmp / "naive")
        ours_same = run_child(same)
        agreement = compare_kpis(kpi.compute(ours_same["run_dir"]), k_naive)
        # what-if: the same scenario with every broker role on "direct" (a mosaik connection; by design the
        # results do not depend on the broker, and the KPIs are checked against the naive run again)
        direct = run_child(same, overrides=DIRECT) if not tiny() else None
        agree_direct = compare_kpis(kpi.compute(direct["run_dir"]), k_naive) if direct else None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    ours_long_res = ours_same if ours_long == same else run_child(ours_long)
    longs = [ours_long_res] + ([run_child(ours_long, repeat=i) for i in range(1, WEEK_REPEATS)]
                               if ours_long == WEEK_S else [])
    long_wall: Stat | float = median_spread([r["wall_s"] for r in longs]) if len(longs) > 1 else longs[0]["wall_s"]
    long_wall_s = long_wall.median if isinstance(long_wall, Stat) else long_wall
    void = "" if agreement["agree"] else " [VOID: KPIs disagree]"
    if same >= 86400:  # per simulated day, stepping only (world.run), both sides
        figure = f"race: Fur/Skive {VARIANT}, stepping time per simulated day, ours ({long_label}) vs naive ({label})"
        unit = "s/day"
        days = [d for r in longs for d in r["day_s"]]
        ours_stat: Stat | float = median_spread(days) if len(days) >= 2 else ours_long_res["run_s"] * 86400 / ours_long
        naive_step = naive["run_s"] * 86400 / same
    else:
        figure = f"race: Fur/Skive {VARIANT}, stepping time for {label} simulated, ours vs naive"
        unit = "s"
        ours_stat, naive_step = ours_same["run_s"], naive["run_s"]
    rows = [
        row(figure + void, ours_stat, naive_step, unit, goal_ratio=GOAL_RATIO),
        row(f"race: same horizon ({label}) end to end (load, build, run, close), ours vs naive{void}",
            ours_same["wall_s"], naive["wall_s"], "s", goal_ratio=GOAL_RATIO if same >= 86400 else None),
        row(f"race: ours, {long_label} end to end (load, build, run, close)"
            + (f", median of {len(longs)} runs (spread: max - min)" if len(longs) > 1 else ""), long_wall, None, "s",
            goal_max=WEEK_S / GOAL_REALTIME if ours_long == WEEK_S else None),
        row(f"race: speed versus real time, end to end, ours ({long_label}"
            + (", the median run" if len(longs) > 1 else "") + f") vs naive ({label})",
            ours_long / long_wall_s, same / naive["wall_s"], "x", goal_min=GOAL_REALTIME, lower_is_better=False),
        row(f"race: KPI agreement, worst relative difference of {agreement['n']} KPIs ({agreement['worst_key']})",
            agreement["worst_rel"], None, "-", goal_max=REL_TOL),
    ]
    if direct is not None:
        assert agree_direct is not None  # compared whenever there is a direct run
        ok = "" if agree_direct["agree"] else " [VOID: KPIs disagree]"
        rows.append(row(f"race (what-if, message bus on direct): stepping time for {label}, ours vs naive; KPIs agree "
                        f"within {agree_direct['worst_rel']:.1e}{ok}", direct["run_s"] * per_day_factor(same),
                        naive["run_s"] * per_day_factor(same), unit if same >= 86400 else "s", goal_ratio=GOAL_RATIO))
        rows.append(row(f"race (what-if, message bus on direct): speed versus real time, end to end ({label})",
                        same / direct["wall_s"], same / naive["wall_s"], "x", goal_min=GOAL_REALTIME,
                        lower_is_better=False))
        rows[-2]["met"] = bool(rows[-2]["met"]) and agree_direct["agree"]
    for r in rows[:2]:
        if r["met"] is not None:
            r["met"] = bool(r["met"]) and agreement["agree"]
    for r in rows:
        r["notes"] = {"naive": f"{naive.get('adapter')}, runpp_3ph every step; PROFESS in pyomo + HiGHS rebuilt "
                               "every cycle", "kpi_disagreements": agreement["disagree"][:10]}
    return rows


def _main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--naive-child":
        scenario, variant, duration, out = sys.argv[2:6]
        print(json.dumps(_naive_child(scenario, variant, int(duration), out)), flush=True)
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    rows = run(parser.parse_args().quick)
    print_rows(rows, title="whole-scenario race")
    for r in rows[-1:]:
        if r["notes"]["kpi_disagreements"]:
            print("KPIs that disagree:", r["notes"]["kpi_disagreements"])


if __name__ == "__main__":
    _main()
