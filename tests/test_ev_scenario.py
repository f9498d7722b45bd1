"""The Bolzano-like commercial scenario runs from its scenario file in sim:// and over OCPP with equal EV KPIs.

Tolerance (as established for the wallbox family, tests/test_wallbox_cosim.py): counts, waiting and
plug/unplug times exactly; energies within 0.1 Wh per run — meter values travel with 3 decimals and the
equal-share limits are already rounded to the 0.1 W resolution of charging profiles.
"""

from pathlib import Path

import pytest
import yaml

from cosim.run import run
from cosim.scenario import load

REPO = Path(__file__).resolve().parents[1]


def _scenario(tmp_path: Path, address: str) -> Path:
    data = yaml.safe_load((REPO / "scenarios" / "bolzano_commercial.yaml").read_text())
    data["sites"] = [s for s in data["sites"] if s["id"] == "commercial"]  # the EV site alone keeps it fast
    data.update({"start": "2019-06-17T07:00:00+02:00", "duration": "5h", "step": "5min"})
    for dev in data["devices"]:
        if dev["family"] == "wallbox":
            dev["address"] = address
    path = tmp_path / f"{address.split(':')[0]}.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


@pytest.mark.parametrize("address", ["ocpp16://", "ocpp201://"])
def test_ocpp_run_equals_sim_run(tmp_path, address):
    sim = run(load(_scenario(tmp_path, "sim://")), tmp_path / "sim", progress=False, report=False)
    wire = run(load(_scenario(tmp_path, address)), tmp_path / "wire", progress=False, report=False)
    assert sim.status == wire.status == "complete"
    a, b = sim.kpis["ev"]["total"], wire.kpis["ev"]["total"]
    assert a["arrivals"] > 5 and a["energy_delivered_wh"] > 10_000  # EVs really charged in the window
    for key in ("arrivals", "served", "services_completed", "n_waited", "waiting_mean_s", "waiting_max_s"):
        assert b[key] == a[key], key
    for key in ("energy_delivered_wh", "unmet_energy_wh", "energy_wanted_wh"):
        assert b[key] == pytest.approx(a[key], abs=0.1), key
    assert b["peak_charging_w"] == pytest.approx(a["peak_charging_w"], abs=1e-3)
    # and the site's PCC saw the same charging power
    assert wire.kpis["sites"]["commercial"]["import_kwh"] == pytest.approx(
        sim.kpis["sites"]["commercial"]["import_kwh"], abs=1e-3)
