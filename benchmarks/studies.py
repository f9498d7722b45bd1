"""Studies on Dask: speed-up from 1 to 2 workers and the engine's overhead per variant.

    python -m benchmarks.studies [--quick]

Full: a 32-variant study of the Fur/Skive pilot, one simulated day each (seed x LiBal capacity, the base
rule-based controller), run three ways in one process: directly (``cosim.run.run`` on each variant's scenario,
one after the other: the baseline), as a study on a LocalCluster of 1 worker and on one of 2 workers. The workers
are started and warmed up (the simulation stack imported) before the clock starts; the cluster start is reported
apart. ``--quick`` (and S4G_BENCH_TINY=1): 4 variants of the tiny test scenario, 20 simulated minutes.

Goals (issue 17): speed-up >= 1.8x on 2 workers; engine overhead per variant <= 5 % of the direct run. The direct
runs and the study runs are minutes apart: on a shared machine their load differs, so two rows load hardly moves
stand beside the wall-time comparison: the "engine's own share" compares, within the same study run, the client's
wall time per variant with the co-simulation time measured inside each task (``run_s``: ``cosim.run.run`` and the
KPIs); the CPU rows compare CPU seconds per variant -- the worker process's (the task and the worker's own
threads) against the direct run's, and the client's (which holds a LocalCluster's scheduler) per variant.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import yaml

from benchmarks.common import print_rows, row

ROOT = Path(__file__).resolve().parents[1]
PILOT = ROOT / "scenarios" / "fur_skive.yaml"
TINY = ROOT / "tests" / "study_data" / "tiny.yaml"


def study_doc(quick: bool) -> dict:
    if quick:
        return {"name": "bench_tiny", "scenario": {"path": str(TINY)},
                "axes": [{"name": "seed", "key": "seed", "values": [1, 2]},
                         {"name": "capacity_kwh", "key": "devices[id=libal].config.battery.capacity_wh",
                          "values": [50, 100], "scale": 1000}],
                "kpis": ["grid.v_minutes_outside_10pct", "grid.losses_kwh"]}
    return {"name": "bench_fur_32", "scenario": {"path": str(PILOT)}, "until": "1d",
            "axes": [{"name": "seed", "key": "seed", "values": list(range(1, 9))},
                     {"name": "capacity_kwh", "key": "devices[id=libal].config.battery.capacity_wh",
                      "values": [50, 100, 150, 200], "scale": 1000}],
            "kpis": ["grid.v_minutes_outside_10pct", "grid.losses_kwh", "total.bill_eur"]}


def _direct(runner) -> tuple[float, float, int]:
    """Every variant run directly (load + run + KPIs, as the task does), one after the other."""
    from cosim.run import run
    from cosim.scenario import load
    from cosim.study.variants import _rewrite_paths, document

    variants = runner.plan()
    with tempfile.TemporaryDirectory(prefix="s4g-bench-direct-") as tmp:
        texts = []
        for v in variants:
            doc = document(runner.ls, runner.base, v)
            texts.append(_rewrite_paths(doc, runner.base_dir, lambda p: str(p.resolve())))
        # warm-up: the first run in a process pays the imports; the study's workers are warmed up too
        first = Path(tmp) / "warm.yaml"
        first.write_text(texts[0])
        run(load(first), Path(tmp) / "warm", progress=False, report=False)
        t0, cpu0 = time.perf_counter(), time.process_time()
        for i, text in enumerate(texts):
            path = Path(tmp) / f"v{i}.yaml"
            path.write_text(text)
            result = run(load(path), Path(tmp) / f"run{i}", progress=False, report=False)
            assert result.status == "complete", result.error
        return time.perf_counter() - t0, time.process_time() - cpu0, len(texts)


def _study(study_path: Path, out: Path, workers: int) -> dict:
    from cosim.study import StudyRunner, load

    runner = StudyRunner(load(study_path), out, workers=workers, warm=True)
    status = runner.run()
    assert status.state == "complete" and status.failed == 0, status
    table = runner.table()
    return {"run_s": runner.timing["run_s"], "pool_s": runner.timing["pool_start_s"] + runner.timing.get("warm_s", 0),
            "n": status.done, "table": table, "sim_s": float(table["run_s"].sum()),
            "worker_cpu_s": sum(r["cpu_s"] for r in runner.results.values()),
            "client_cpu_s": runner.timing["run_cpu_s"]}


def run(quick: bool = False) -> list[dict]:
    from cosim.study import StudyRunner, load

    quick = quick or os.environ.get("S4G_BENCH_TINY") == "1"
    with tempfile.TemporaryDirectory(prefix="s4g-bench-study-") as tmp_name:
        tmp = Path(tmp_name)
        study_path = tmp / "study.yaml"
        study_path.write_text(yaml.safe_dump(study_doc(quick), sort_keys=False))
        # the direct baseline runs before and after the 1-worker study (their mean brackets it in time): runs
        # minutes apart differ by several per cent on a shared machine, which would pass for engine overhead
        before = _direct(StudyRunner(load(study_path), tmp / "plan", workers=0))
        one = _study(study_path, tmp / "w1", 1)
        after = _direct(StudyRunner(load(study_path), tmp / "plan2", workers=0))
        two = _study(study_path, tmp / "w2", 2)
    n = before[2]
    direct_s, direct_cpu = (before[0] + after[0]) / 2, (before[1] + after[1]) / 2
    cols = [c for c in one["table"].columns if c not in ("wall_s", "run_s")]
    same = one["table"][cols].sort_values("variant").reset_index(drop=True).equals(
        two["table"][cols].sort_values("variant").reset_index(drop=True))
    label = f"{n} variants ({'tiny, 20 min' if quick else 'Fur/Skive, 1 d'} each)"
    per_direct = direct_s / n
    per_one = one["run_s"] / n
    overhead_pct = 100.0 * (per_one / per_direct - 1.0)
    return [
        row(f"study wall time, 1 worker: {label}", one["run_s"], None, "s"),
        row(f"study wall time, 2 workers: {label}", two["run_s"], None, "s"),
        row("speed-up 2 workers vs 1", one["run_s"] / two["run_s"], None, "x", goal_min=1.8, lower_is_better=False),
        row("per variant: direct run (baseline, mean of before and after) vs study engine on 1 worker", per_one,
            per_direct, "s"),
        row("direct run per variant: after the 1-worker study vs before it (run-to-run drift)",
            after[0] / n, before[0] / n, "s"),
        row("engine overhead per variant vs the direct run", overhead_pct, None, "%", goal_max=5.0),
        # the same on one worker without the direct baseline's timing: client wall time per variant against the
        # co-simulation's own time inside the task (scheduling, bundle, scenario load, KPIs, result transfer)
        row("engine's own share per variant on 1 worker (wall vs simulation in the task)",
            100.0 * (one["run_s"] / one["sim_s"] - 1.0), None, "%", goal_max=5.0),
        row("CPU per variant: worker process (task + Dask threads) on 1 worker vs the direct run",
            one["worker_cpu_s"] / n, direct_cpu / n, "s"),
        row("engine CPU overhead per variant vs the direct run (worker CPU)",
            100.0 * (one["worker_cpu_s"] / direct_cpu - 1.0), None, "%", goal_max=5.0),
        row("client + scheduler CPU per variant on 1 worker (share of the direct run's CPU)",
            100.0 * one["client_cpu_s"] / direct_cpu, None, "%"),
        row("LocalCluster start + warm-up (2 workers, not in the times above)", two["pool_s"], None, "s"),
        row("same table on 1 and 2 workers (1 = yes)", 1.0 if same else 0.0, None, "bool", goal_min=1.0,
            lower_is_better=False),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    print_rows(run(args.quick), title="studies")


if __name__ == "__main__":
    main()
