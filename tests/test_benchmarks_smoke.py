"""Smoke test of the benchmark command: every module runs and every row is well formed. Timings are figures,
never pass/fail, so nothing here asserts on a time.

Runs ``python -m benchmarks --quick`` for the whole-scenario race, the framework overhead, memory and scaling
modules with S4G_BENCH_TINY=1 (the smallest sizes that still exercise every code path: 5-10 simulated minutes,
child runs in-process), in a subprocess, and checks the JSON it writes.
"""

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
MODULES = ["memory", "overhead", "race", "scaling"]
ROW_KEYS = {"benchmark", "figure", "ours", "baseline", "unit", "ratio", "goal", "met", "spread", "n"}

pytest.importorskip("mosaik_components.pandapower", reason="the race's naive side needs mosaik-pandapower-2")


def _number_or_none(x) -> bool:
    return x is None or (isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x))


@pytest.mark.timeout(240)
def test_benchmark_command_quick_runs_and_rows_are_well_formed(tmp_path):
    out = tmp_path / "bench.json"
    env = {**os.environ, "S4G_BENCH_TINY": "1"}
    proc = subprocess.run([sys.executable, "-m", "benchmarks", "--quick", "--only", *MODULES, "--json", str(out)],
                          cwd=ROOT, env=env, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-4000:]
    data = json.loads(out.read_text())
    assert data["failed"] == []
    assert data["quick"] is True and data["machine"]["cores"] >= 1
    rows = data["rows"]
    assert {r["benchmark"] for r in rows} == set(MODULES)
    for r in rows:
        assert set(r) >= ROW_KEYS, r
        assert isinstance(r["figure"], str) and r["figure"] and isinstance(r["unit"], str)
        assert r["ours"] is not None and _number_or_none(r["ours"]), r
        for key in ("baseline", "ratio", "spread"):
            assert _number_or_none(r[key]), (key, r)
        assert r["met"] in (True, False, None)
        assert (r["goal"] is None) == (r["met"] is None) or r["ratio"] is None, r
    race = [r for r in rows if r["benchmark"] == "race"]
    agreement = next(r for r in race if "KPI agreement" in r["figure"])
    assert agreement["met"] is True, race[0].get("notes")  # both runs give the same KPIs: the race counts


@pytest.mark.timeout(240)
def test_api_benchmark_quick_rows(tmp_path):
    """The API benchmark (its own server, a bare FastAPI baseline) runs and gives a baseline for every row."""
    out = tmp_path / "api.json"
    proc = subprocess.run([sys.executable, "-m", "benchmarks", "--quick", "--only", "api", "--json", str(out)],
                          cwd=ROOT, env={**os.environ, "S4G_BENCH_TINY": "1"}, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-4000:]
    data = json.loads(out.read_text())
    assert data["failed"] == [] and data["rows"]
    for r in data["rows"]:
        assert set(r) >= ROW_KEYS, r
        assert _number_or_none(r["ours"]) and r["ours"] > 0, r
        assert _number_or_none(r["baseline"]) and r["baseline"] > 0, r  # every API figure beside its baseline
    figures = " ".join(r["figure"] for r in data["rows"])
    for what in ("status", "table", "POST grid", "clients polling"):
        assert what in figures, what
