"""One variant, run where a worker is: unpack the bundle, write the scenario, run it, keep what the study asks.

:func:`run_variant` is the only function a Dask worker executes; it takes plain data (the bundle's files, the
patched scenario text, :class:`TaskOptions`) and returns a plain dict, so it runs the same in-process, on a
LocalCluster and on a remote cluster. A scenario error or a failing simulator gives ``status: "failed"`` with the
error text: one bad variant never ends the study.

Cancelling: every task of a study carries the study's stop key; :func:`request_stop` (called in this process for
the inline pool, on every worker by ``Client.run`` for Dask) sets that key's flag, which the co-simulation checks
between steps. The variant then ends within one step as ``status: "cancelled"`` (neither failed nor complete: it
runs again on ``--resume``), and a task that had not started yet returns at once.
"""

from __future__ import annotations

import fnmatch
import math
import shutil
import tempfile
import threading
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cosim.study.variants import unpack

_STOPS: dict[str, threading.Event] = {}
_STOPS_LOCK = threading.Lock()


def stop_flag(key: str) -> threading.Event:
    """The flag of a study's stop key in this process (made on first use)."""
    with _STOPS_LOCK:
        return _STOPS.setdefault(key, threading.Event())


def request_stop(key: str) -> None:
    """Stop every variant of the study ``key`` running (or about to run) in this process."""
    stop_flag(key).set()


def forget_stop(key: str) -> None:
    with _STOPS_LOCK:
        _STOPS.pop(key, None)


@dataclass(frozen=True)
class TaskOptions:
    kpis: tuple[str, ...]
    keep_tables: tuple[str, ...] = ()  # tables whose Parquet bytes come back (per-variant time series)
    lifetime: dict[str, Any] | None = None


def _json_number(v: Any) -> Any:
    if isinstance(v, float) and not math.isfinite(v):
        return None
    return v


def pick_kpis(flat: dict[str, Any], wanted: tuple[str, ...]) -> dict[str, Any]:
    """The KPIs asked for; a pattern with ``*`` keeps every matching key, an exact key absent from the run is None."""
    out: dict[str, Any] = {}
    for key in wanted:
        if any(ch in key for ch in "*?["):
            for k in sorted(fnmatch.filter(flat, key)):
                out[k] = _json_number(flat[k])
        else:
            out[key] = _json_number(flat.get(key))
    return out


def run_variant(bundle_token: str, files: dict[str, bytes], variant_id: str, text: str,
                options: TaskOptions, stop_key: str | None = None) -> dict[str, Any]:
    """Run one variant from its scenario text; never raises for a problem of the variant itself."""
    from cosim import kpi
    from cosim.run import run
    from cosim.scenario import ScenarioError, load

    t0, cpu0 = time.perf_counter(), time.process_time()
    stop = stop_flag(stop_key) if stop_key is not None else None
    if stop is not None and stop.is_set():
        return {"id": variant_id, "status": "cancelled", "error": "cancelled before it started", "kpis": {},
                "tables": {}, "wall_s": 0.0, "run_s": None, "steps": 0}
    folder = unpack(bundle_token, files)
    work = Path(tempfile.mkdtemp(prefix=f"{variant_id}-", dir=folder))
    scenario_path = folder / f"{work.name}.yaml"  # next to files/: the bundle's relative paths resolve
    out: dict[str, Any] = {"id": variant_id, "status": "failed", "error": None, "kpis": {}, "tables": {},
                           "wall_s": None, "run_s": None, "steps": 0}
    try:
        scenario_path.write_text(text, encoding="utf-8")
        try:
            loaded = load(scenario_path)
        except ScenarioError as exc:
            out["error"] = "invalid scenario: " + str(exc).replace(str(scenario_path), f"variant {variant_id}")
            return out
        t_run = time.perf_counter()
        result = run(loaded, work / "run", progress=False, kpis=False, report=False, stop=stop)
        out["run_s"] = time.perf_counter() - t_run
        out["steps"] = result.steps
        if result.status == "interrupted" and stop is not None and stop.is_set():
            out["status"], out["error"] = "cancelled", f"cancelled after {result.steps} steps"
            return out
        if result.status == "interrupted":  # Ctrl-C in this process (--workers 0): stop the study, record nothing
            raise KeyboardInterrupt
        if result.status != "complete":
            out["error"] = result.error or f"run {result.status}"
            return out
        flat = kpi.flatten(kpi.compute(result.run_dir))  # not in run(): a cancelled run needs none
        out["run_s"] = time.perf_counter() - t_run  # run + KPIs: what `s4g run` does (the benchmarks' baseline)
        kpis = pick_kpis(flat, options.kpis)
        run_dir = work / "run"
        if options.lifetime:
            from cosim.study.post import lifetime_kpis

            kpis |= lifetime_kpis(run_dir, options.lifetime)
        out["kpis"] = kpis
        for name in options.keep_tables:
            path = run_dir / "timeseries" / f"{name}.parquet"
            if path.is_file():
                out["tables"][name] = path.read_bytes()
        for name in ("meta.json",):
            if options.keep_tables and (run_dir / name).is_file():
                out["tables"][name] = (run_dir / name).read_bytes()
        out["status"] = "complete"
        return out
    except Exception as exc:  # a bug or a simulator failure in this variant: record it, the study goes on
        out["error"] = f"{type(exc).__name__}: {exc}"
        out["traceback"] = traceback.format_exc(limit=20)
        return out
    finally:
        out["wall_s"] = time.perf_counter() - t0
        # CPU of this process meanwhile, the worker's own threads included: what the variant cost its core
        out["cpu_s"] = time.process_time() - cpu0
        shutil.rmtree(work, ignore_errors=True)
        scenario_path.unlink(missing_ok=True)


__all__ = ["TaskOptions", "pick_kpis", "run_variant"]
