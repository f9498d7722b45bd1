"""The pilot with every battery behind its real protocol versus sim://, measured in one run.

Fronius inverters over SunSpec Modbus TCP and the LiBal battery over CAN (socketcand) + Modbus RTU, all on
loopback, against the same scenario with in-process models. The figure is the slow-down factor of the
protocol path (a cost, so the goal is an upper bound). A second scenario adds a meter at every PCC (DLMS/COSEM
over the TCP wrapper) and one Energy Router (IEC 61850 MMS): its slow-down, and how far its energy KPIs are from
the sim:// run (the equivalence; tests/test_protocol_equivalence.py asserts it within 10 Wh).

Run: python -m benchmarks.protocol_mode [--quick]
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path
from typing import Any

import yaml

from benchmarks.common import median_spread, print_rows, row
from cosim.kpi import flatten
from cosim.run import run as run_scenario
from cosim.scenario import load

REPO = Path(__file__).resolve().parents[1]
PROTOCOL = {"fronius": "sunspec+tcp://", "libal": "libal://"}
#: a meter at every PCC and one Energy Router on top, over their protocols
METERED = {**PROTOCOL, "meter": "dlms+tcp://", "energy_router": "iec61850://"}
ER_SITE = "consumer_4020330"


def metered_pilot(data: dict, protocol: bool) -> dict:
    """The pilot with a meter at every site's PCC and one Energy Router, over their protocols or sim://."""
    data["devices"] += [{"id": f"smm_{s['id']}", "family": "meter", "site": s["id"]} for s in data["sites"]]
    data["devices"].append({"id": "er", "family": "energy_router", "site": ER_SITE, "config": {"pv_kwp": 3}})
    for dev in data["devices"]:
        dev["address"] = METERED.get(dev["family"], "sim://") if protocol else "sim://"
    return data


def _scenario(tmp: Path, protocol: bool, hours: int, metered: bool = False) -> Path:
    data = yaml.safe_load((REPO / "scenarios" / "fur_skive.yaml").read_text())
    data["grid"]["path"] = str(REPO / "scenarios" / data["grid"]["path"])
    data.pop("variants")
    data.update({"start": "2019-06-15T10:00:00+02:00", "duration": f"{hours}h"})
    if metered:
        data = metered_pilot(data, protocol)
    for dev in data["devices"]:
        if protocol and dev["family"] in PROTOCOL:
            dev["address"] = PROTOCOL[dev["family"]]
    path = tmp / f"{'metered-' if metered else ''}{'wire' if protocol else 'sim'}.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def _run(tmp: Path, protocol: bool, hours: int, n: int, metered: bool = False) -> Any:
    result = run_scenario(load(_scenario(tmp, protocol, hours, metered)), tmp / f"r{n}-{protocol}-{metered}",
                          progress=False, kpis=metered)
    if result.status != "complete":
        raise RuntimeError(f"run failed: {result.error}")
    return result


def _wall(tmp: Path, protocol: bool, hours: int, n: int) -> float:
    return _run(tmp, protocol, hours, n).wall_s / (hours * 60)  # seconds per step


def _max_energy_gap_wh(a: dict, b: dict) -> float:
    """Largest difference of any energy KPI (``*_kwh``) between two runs, in Wh."""
    fa, fb = flatten(a), flatten(b)
    gaps = [abs(fa[k] - fb[k]) * 1000 for k in fa if k.endswith("_kwh") and isinstance(fa[k], float)
            and isinstance(fb.get(k), float)]
    return max(gaps, default=0.0)


def run(quick: bool = False) -> list[dict]:
    hours, reps = (1, 1) if quick else (4, 3)
    with tempfile.TemporaryDirectory() as tmp:
        tmp_path = Path(tmp)
        sim, wire = [], []
        for n in range(reps):
            sim.append(_wall(tmp_path, False, hours, n) * 1000)
            wire.append(_wall(tmp_path, True, hours, n) * 1000)
        m_sim = _run(tmp_path, False, hours, 0, metered=True)
        m_wire = _run(tmp_path, True, hours, 0, metered=True)
    ours, base = median_spread(wire), median_spread(sim)
    steps = hours * 60
    m_ours, m_base = m_wire.wall_s / steps * 1000, m_sim.wall_s / steps * 1000
    n_meters = sum(1 for s in m_wire.kpis["sites"])
    return [
        row("pilot step, 5 Fronius over SunSpec + LiBal over CAN/RTU (per step)", ours, None, "ms"),
        row("pilot step, all sim:// (per step)", base, None, "ms"),
        row("protocol-mode slow-down versus sim://", ours.median / base.median, None, "x", goal_max=10.0),
        row(f"pilot step with {n_meters} meters over DLMS + 1 ER over IEC 61850 + the batteries (per step)",
            m_ours, m_base, "ms"),
        row("meters at every PCC + ER: largest energy-KPI gap protocol vs sim://", _max_energy_gap_wh(
            m_sim.kpis, m_wire.kpis), None, "Wh", goal_max=10.0),
    ]


if __name__ == "__main__":
    print_rows(run(quick="--quick" in sys.argv))
