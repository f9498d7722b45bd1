"""A short pilot run with telemetry on the Data Broker, shared by the SensorThings, warehouse and GUI tests."""

from __future__ import annotations

from pathlib import Path

from cosim.run import run
from cosim.scenario import load
from hil_bench.testing import pilot_data, write_scenario

HOUSES = ["fronius_4006773", "fronius_4018215"]
_RUNS: dict[str, Path] = {}


def pilot_run(tmp_root: Path, duration: str = "3h") -> Path:
    """The Fur/Skive pilot, two PV+battery houses and one PV roof, telemetry every 15 min; cached per session."""
    if duration in _RUNS:
        return _RUNS[duration]
    data = pilot_data(start="2019-06-15T10:00:00+02:00", duration=duration, fronius_address="sim://")
    data["devices"] = [d for d in data["devices"] if d["id"] in HOUSES or d["id"] == "pv_4005492"]
    data["controllers"] = [{"id": "sc", "kind": "self_consumption", "devices": HOUSES}]
    data["telemetry"] = {"period": "15min"}
    data.pop("variants", None)
    run_dir = tmp_root / f"pilot-{duration}"
    result = run(load(write_scenario(data, tmp_root / f"pilot-{duration}.yaml")), run_dir, progress=False,
                 kpis=True, report=False)
    assert result.status == "complete", result.error
    _RUNS[duration] = run_dir
    return run_dir
