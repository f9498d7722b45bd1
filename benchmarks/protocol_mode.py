"""The pilot with every battery behind its real protocol versus sim://, measured in one run.

Fronius inverters over SunSpec Modbus TCP and the LiBal battery over CAN (socketcand) + Modbus RTU, all on
loopback, against the same scenario with in-process models. The figure is the slow-down factor of the
protocol path (a cost, so the goal is an upper bound).

Run: python -m benchmarks.protocol_mode [--quick]
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import yaml

from benchmarks.common import median_spread, print_rows, row
from cosim.run import run as run_scenario
from cosim.scenario import load

REPO = Path(__file__).resolve().parents[1]
PROTOCOL = {"fronius": "sunspec+tcp://", "libal": "libal://"}


def _scenario(tmp: Path, protocol: bool, hours: int) -> Path:
    data = yaml.safe_load((REPO / "scenarios" / "fur_skive.yaml").read_text())
    data["grid"]["path"] = str(REPO / "scenarios" / data["grid"]["path"])
    data.pop("variants")
    data.update({"start": "2019-06-15T10:00:00+02:00", "duration": f"{hours}h"})
    for dev in data["devices"]:
        if protocol and dev["family"] in PROTOCOL:
            dev["address"] = PROTOCOL[dev["family"]]
    path = tmp / f"{'wire' if protocol else 'sim'}.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def _wall(tmp: Path, protocol: bool, hours: int, n: int) -> float:
    result = run_scenario(load(_scenario(tmp, protocol, hours)), tmp / f"r{n}-{protocol}", progress=False, kpis=False)
    if result.status != "complete":
        raise RuntimeError(f"run failed: {result.error}")
    return result.wall_s / (hours * 60)  # seconds per step


def run(quick: bool = False) -> list[dict]:
    hours, reps = (1, 1) if quick else (4, 3)
    with tempfile.TemporaryDirectory() as tmp:
        tmp_path = Path(tmp)
        sim, wire = [], []
        for n in range(reps):
            sim.append(_wall(tmp_path, False, hours, n) * 1000)
            wire.append(_wall(tmp_path, True, hours, n) * 1000)
    ours, base = median_spread(wire), median_spread(sim)
    return [
        row("pilot step, 5 Fronius over SunSpec + LiBal over CAN/RTU (per step)", ours, None, "ms"),
        row("pilot step, all sim:// (per step)", base, None, "ms"),
        row("protocol-mode slow-down versus sim://", ours.median / base.median, None, "x", goal_max=10.0),
    ]


if __name__ == "__main__":
    print_rows(run(quick="--quick" in sys.argv))
