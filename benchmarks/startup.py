"""Start-up: seconds from a fresh ``python`` to the first step of the Bolzano pilot (imports, scenario loading,
world building), against the start-up path it replaced.

    python -m benchmarks.startup [--quick]

Each sample is a fresh process (nothing of an earlier sample is in memory), with the on-disk SimBench cache warm
(one untimed run fills it), as on any machine after its first run.

- ours: ``scenarios/bolzano_commercial.yaml`` as it is: one site, the grid's other 41 loads on their SimBench
  profiles (``grid.static_loads: profiles``); the SimBench net and its profiles come from one parse, cached
  (:mod:`simulators.simbench_data`).
- baseline: the start-up before that change: the same scenario with the 41 loads listed as sites by hand, and
  the profiles parsing the SimBench data set again in every process (``simbench.get_simbench_net`` and
  ``get_absolute_values``, ~8 s) while the grid read its cached net.

Goal: ours at least 2x faster. ``--quick`` takes one sample each (the median of three otherwise).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

from benchmarks.common import median_spread, print_rows, row

ROOT = Path(__file__).resolve().parents[1]
PILOT = ROOT / "scenarios" / "bolzano_commercial.yaml"
GOAL_RATIO = 2.0


def hand_listed(scenario: Path, out: Path) -> Path:
    """The pilot as it was written before: every other load of the SimBench grid listed as a site."""
    from simulators import simbench_data

    data = yaml.safe_load(scenario.read_text(encoding="utf-8"))
    names = simbench_data.profiles(data["grid"]["code"]).names["load"]
    data["sites"] += [{"id": n, "grid_load": n, "load": {"source": "simbench", "element": n}} for n in names]
    data["grid"]["static_loads"] = "zero"
    text = yaml.safe_dump(data, sort_keys=False).replace("data/", str(scenario.parent / "data") + "/")
    out.write_text(text, encoding="utf-8")
    return out


def _reparse_profiles() -> None:
    """The profiles' old path: a parse of their own, every process (what the grid loader had cached already)."""
    import simbench

    from simulators import profile_sources, simbench_data

    parsed: dict[str, Any] = {}

    def profiles(code: str) -> simbench_data.SimbenchProfiles:
        if code not in parsed:
            net = simbench.get_simbench_net(code)
            absolute = simbench.get_absolute_values(net, profiles_instead_of_study_cases=True)
            parsed[code] = simbench_data._profiles_from(code, net, absolute)
        return parsed[code]

    profile_sources.simbench_profiles = profiles  # type: ignore[assignment]


def child_main(scenario: str, out: str, baseline: bool) -> dict[str, float]:
    """Load and build in this fresh process; the parent times the whole process."""
    t0 = time.perf_counter()
    if baseline:
        _reparse_profiles()
    from cosim.scenario import load
    from cosim.world import WorldBuilder

    builder = WorldBuilder(load(Path(scenario)), Path(out)).build()
    built = time.perf_counter() - t0
    builder.world.shutdown()
    return {"build_s": built}


def _sample(scenario: Path, baseline: bool) -> float:
    with tempfile.TemporaryDirectory(prefix="s4g-startup-") as tmp:
        code = ("import json, sys; from benchmarks.startup import child_main; "
                "print(json.dumps(child_main(sys.argv[1], sys.argv[2], sys.argv[3] == '1')))")
        t0 = time.perf_counter()
        proc = subprocess.run([sys.executable, "-c", code, str(scenario), str(Path(tmp) / "run"), str(int(baseline))],
                              cwd=ROOT, capture_output=True, text=True, env={**os.environ, "PYTHONWARNINGS": "ignore"})
        wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"start-up child failed:\n{proc.stderr[-3000:]}")
    json.loads(proc.stdout.strip().splitlines()[-1])
    return wall


def run(quick: bool = False) -> list[dict]:
    repeat = 1 if quick else 3
    with tempfile.TemporaryDirectory(prefix="s4g-startup-") as tmp:
        old = hand_listed(PILOT, Path(tmp) / "bolzano_hand_listed.yaml")
        _sample(PILOT, baseline=False)  # fills the on-disk SimBench cache (net and profiles)
        ours = median_spread([_sample(PILOT, baseline=False) for _ in range(repeat)])
        base = median_spread([_sample(old, baseline=True) for _ in range(repeat)])
    return [row("Bolzano start-up: fresh process to the first step", ours, base, "s", goal_ratio=GOAL_RATIO)]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.startup", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args(argv)
    print_rows(run(quick=args.quick), title="start-up")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
