"""Grid step benchmark: our fast power flow versus pandapower's runpp / runpp_3ph on the same load states.

    python -m benchmarks.grid_step [--quick]

Load states are a seeded random walk per load (1-minute co-simulation steps are correlated in time, which is what
the warm start exploits); each load moves by ~300 W per step between -5 kW (PV feed-in) and +10 kW. Timings are
per call after a warm-up (numba JIT of pandapower excluded); the baseline times only the runpp call itself, with the
loads already written to the net. Every baseline state is also solved by us and the voltages compared.
"""

from __future__ import annotations

import argparse
import gc
import time
from dataclasses import dataclass
from pathlib import Path
from collections.abc import Callable

import numpy as np
import pandapower as pp

from simulators.grid_loaders import GridModel, load_dsf_se, load_simbench
from simulators.powerflow import LoadRef, PowerFlow

FUR = Path(__file__).resolve().parents[1] / "scenarios" / "data" / "s4g" / "fur_feeder.json"
GOAL_RATIO = 50.0
GOAL_V_PU = 1e-6


@dataclass
class Timing:
    median_ms: float
    p90_ms: float


def _states(n_loads: int, n_steps: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    p = np.empty((n_steps, n_loads))
    p[0] = rng.uniform(0.0, 4e3, n_loads)
    for k in range(1, n_steps):
        p[k] = np.clip(p[k - 1] + rng.normal(0.0, 300.0, n_loads), -5e3, 10e3)
    return p, 0.3 * np.abs(p)


def _time_calls(call: Callable[[int], object], n: int, warmup: int) -> Timing:
    for k in range(warmup):
        call(k)
    samples = np.empty(n)
    with _no_gc():
        for k in range(n):
            t0 = time.perf_counter()
            call(k)
            samples[k] = time.perf_counter() - t0
    return Timing(float(np.median(samples) * 1e3), float(np.percentile(samples, 90) * 1e3))


class _no_gc:
    """Garbage-collector pauses land on random calls; keep them out of both sides' samples."""

    def __enter__(self) -> None:
        gc.collect()
        gc.disable()

    def __exit__(self, *exc: object) -> None:
        gc.enable()


def _write_loads(net: pp.pandapowerNet, model: GridModel, p_w: np.ndarray, q_var: np.ndarray) -> None:
    """Vectorised writes, so the baseline time is runpp itself and not pandas cell access."""
    sym = np.array([x.element == "load" for x in model.loads])
    if sym.any():
        idx = [x.index for x in model.loads if x.element == "load"]
        net.load.loc[idx, "p_mw"] = p_w[sym] * 1e-6
        net.load.loc[idx, "q_mvar"] = q_var[sym] * 1e-6
    asym = [(k, x) for k, x in enumerate(model.loads) if x.element == "asymmetric_load"]
    if asym:
        rows = [x.index for _, x in asym]
        for ph_k, ph in enumerate("abc", start=1):
            on = np.array([x.phase == ph_k for _, x in asym], dtype=float)
            k = [i for i, _ in asym]
            net.asymmetric_load.loc[rows, f"p_{ph}_mw"] = p_w[k] * 1e-6 * on
            net.asymmetric_load.loc[rows, f"q_{ph}_mvar"] = q_var[k] * 1e-6 * on


def _compare(label: str, model: GridModel, mode: str, n_ours: int, n_base: int) -> list[dict]:
    refs = [LoadRef(x.element, x.index, x.phase) for x in model.loads]  # type: ignore[arg-type]
    fast = PowerFlow(model.net, refs, mode=mode)  # type: ignore[arg-type]
    p, q = _states(len(refs), max(n_ours, n_base) + 10, seed=7)
    ours = _time_calls(lambda k: fast.solve(p[k], q[k]), n_ours, warmup=10)

    net = model.net
    runpp = pp.runpp if mode == "balanced" else pp.runpp_3ph
    max_dv = 0.0

    def baseline(k: int) -> None:
        _write_loads(net, model, p[k], q[k])
        t0 = time.perf_counter()
        runpp(net)
        baseline.elapsed = time.perf_counter() - t0  # type: ignore[attr-defined]

    for k in range(3):  # warm-up: numba JIT compile
        baseline(k)
    samples = np.empty(n_base)
    for k in range(n_base):
        with _no_gc():
            baseline(k)
        samples[k] = baseline.elapsed  # type: ignore[attr-defined]
        res = fast.solve(p[k], q[k])
        if mode == "balanced":
            ref_v = net.res_bus.vm_pu.to_numpy()[None, :]
        else:
            ref_v = net.res_bus_3ph[["vm_a_pu", "vm_b_pu", "vm_c_pu"]].to_numpy().T
        max_dv = max(max_dv, float(np.nanmax(np.abs(res.v_abc_pu[: len(ref_v)] - ref_v))))
    base = Timing(float(np.median(samples) * 1e3), float(np.percentile(samples, 90) * 1e3))
    ref_name = "runpp" if mode == "balanced" else "runpp_3ph"
    rows = []
    for stat in ("median", "p90"):
        o, b = getattr(ours, f"{stat}_ms"), getattr(base, f"{stat}_ms")
        rows.append({"figure": f"{label} {mode}, {stat} per step vs {ref_name}", "ours": o, "baseline": b,
                     "unit": "ms", "ratio": b / o, "goal": f">= {GOAL_RATIO:.0f}x", "met": b / o >= GOAL_RATIO})
    rows.append({"figure": f"{label} {mode}, max |V - V_{ref_name}|", "ours": max_dv, "baseline": 0.0,
                 "unit": "pu", "ratio": None, "goal": f"<= {GOAL_V_PU:g}", "met": max_dv <= GOAL_V_PU})
    return rows


def run(quick: bool = False) -> list[dict]:
    """Rows {figure, ours, baseline, unit, ratio, goal, met} for the benchmark runner."""
    n_ours, n_base = (200, 20) if quick else (2000, 150)
    rows = _compare("SimBench 1-LV-semiurb4", load_simbench("1-LV-semiurb4--0-sw"), "balanced", n_ours, n_base)
    rows += _compare("Fur feeder (DSF-SE)", load_dsf_se(FUR), "unbalanced", n_ours, n_base)
    return rows


def _print(rows: list[dict]) -> None:
    header = f"{'figure':<66} {'ours':>10} {'baseline':>10} {'unit':>4} {'ratio':>7} {'goal':>9}  met"
    print(header)
    print("-" * len(header))
    for r in rows:
        ratio = f"{r['ratio']:.0f}x" if r["ratio"] is not None else "-"
        fmt = "{:>10.3g}" if r["unit"] == "pu" else "{:>10.3f}"
        print(f"{r['figure']:<66} {fmt.format(r['ours'])} {fmt.format(r['baseline'])} {r['unit']:>4} {ratio:>7} "
              f"{r['goal']:>9}  {'yes' if r['met'] else 'NO'}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="few repetitions (CI smoke run)")
    _print(run(quick=parser.parse_args().quick))


if __name__ == "__main__":
    main()
