"""End-to-end offline runs: run directory contents, determinism, Ctrl-C, solver paths, physics on the feeder."""

import json
from pathlib import Path

import duckdb
import numpy as np
import pyarrow.parquet as pq
import pytest
import yaml

from cosim import kpi
from s4g import cli
from cosim.run import run
from cosim.scenario import load

REPO = Path(__file__).resolve().parents[1]
PILOT = REPO / "scenarios" / "fur_skive.yaml"


def pilot(tmp_path: Path, name: str = "s.yaml", **changes) -> Path:
    """The pilot scenario, shortened and modified, written next to the test's run directories."""
    data = yaml.safe_load(PILOT.read_text())
    data["grid"]["path"] = str(REPO / "scenarios" / data["grid"]["path"])
    data.update({"start": "2019-06-15T10:00:00+02:00", "duration": "2h"})
    for key, value in changes.items():
        data[key] = value
    path = tmp_path / name
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


@pytest.fixture(scope="module")
def pilot_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("pilot")
    result = run(load(pilot(tmp)), tmp / "run", progress=False, report=True)
    return result


def test_run_directory_is_complete(pilot_run):
    d = pilot_run.run_dir
    assert pilot_run.status == "complete" and pilot_run.steps == 120
    info = json.loads((d / "run.json").read_text())
    assert info["status"] == "complete" and len(info["scenario_sha256"]) == 64 and info["versions"]["mosaik"]
    for table in ("grid", "buses", "sites", "devices", "trafos", "prices", "controllers"):
        assert pq.read_table(d / "timeseries" / f"{table}.parquet").num_rows == 120
    with duckdb.connect(str(d / "results.duckdb"), read_only=True) as con:
        assert con.sql("SELECT count(*) FROM sites").fetchall() == [(120,)]
    assert (d / "kpis.json").is_file() and (d / "report" / "report.html").is_file()
    assert (d / "scenario.yaml").read_text() == (d.parent / "s.yaml").read_text()


def test_energy_balance_at_every_pcc(pilot_run):
    """PCC power = household load + every device behind it, at every step."""
    d = pilot_run.run_dir
    meta = json.loads((d / "meta.json").read_text())
    sites = pq.read_table(d / "timeseries" / "sites.parquet").to_pandas()
    devices = pq.read_table(d / "timeseries" / "devices.parquet").to_pandas()
    for site in meta["sites"]:
        expected = sites[f"{site['id']}.load_p_w"].to_numpy().copy()
        for dev in site["devices"]:
            expected += devices[f"{dev}.p_w"].to_numpy()
        np.testing.assert_allclose(sites[f"{site['id']}.pcc_p_w"], expected, rtol=1e-9, atol=1e-6)


def test_self_consumption_controller_keeps_battery_sites_near_zero_exchange(pilot_run):
    k = pilot_run.kpis
    battery_sites = ["consumer_4006773", "consumer_4018215", "consumer_4011906", "consumer_4009331",
                     "consumer_4021012"]
    for site in battery_sites:
        s = k["sites"][site]
        assert s["import_kwh"] < 0.1 * s["load_kwh"]  # midday with PV: the battery covers the gap
    assert k["grid"]["losses_kwh"] > 0


def test_same_seed_gives_byte_identical_parquet(tmp_path):
    path = pilot(tmp_path, duration="30min")
    a = run(load(path), tmp_path / "a", progress=False, kpis=False)
    b = run(load(path), tmp_path / "b", progress=False, kpis=False)
    assert a.status == b.status == "complete"
    files = sorted(p.name for p in (tmp_path / "a" / "timeseries").glob("*.parquet"))
    assert files
    for name in files:
        assert (tmp_path / "a" / "timeseries" / name).read_bytes() == (tmp_path / "b" / "timeseries" / name).read_bytes()


def test_ctrl_c_leaves_a_readable_partial_run(tmp_path, monkeypatch):
    """A stop request (what the first Ctrl-C sets) ends the run at a step boundary, files readable."""
    from cosim import progress

    original = progress.RunMonitor.update

    def update(self, t_s):
        if t_s == 1800:
            self.stop_requested = True
        original(self, t_s)

    monkeypatch.setattr(progress.RunMonitor, "update", update)
    result = run(load(pilot(tmp_path)), tmp_path / "run", progress=False)
    assert result.status == "interrupted"
    info = json.loads((tmp_path / "run" / "run.json").read_text())
    rows = pq.read_table(tmp_path / "run" / "timeseries" / "sites.parquet").num_rows
    assert info["status"] == "interrupted" and info["steps_done"] == rows
    assert rows in (30, 31)  # the steps completed when the stop was noticed, none half-written
    assert result.kpis is not None and kpi.read(tmp_path / "run")["run"]["status"] == "interrupted"


def test_fast_solver_and_pandapower_give_the_same_results(tmp_path):
    fast = pilot(tmp_path, "fast.yaml", duration="10min")
    data = yaml.safe_load(fast.read_text())
    data["grid"]["solver"] = "pandapower"
    ref = tmp_path / "ref.yaml"
    ref.write_text(yaml.safe_dump(data, sort_keys=False))
    a = run(load(fast), tmp_path / "a", progress=False, kpis=False)
    b = run(load(ref), tmp_path / "b", progress=False, kpis=False)
    va = pq.read_table(tmp_path / "a" / "timeseries" / "buses.parquet").to_pandas()
    vb = pq.read_table(tmp_path / "b" / "timeseries" / "buses.parquet").to_pandas()
    assert a.status == b.status == "complete"
    np.testing.assert_allclose(va.to_numpy(), vb.to_numpy(), atol=1e-6, equal_nan=True)


def test_cli_run_prints_kpis_and_wall_time(tmp_path, capsys):
    path = pilot(tmp_path, duration="10min")
    assert cli.main(["run", str(path), "--out", str(tmp_path / "r"), "--no-report", "--seed", "3"]) == 0
    out = capsys.readouterr().out
    assert "self-consumption" in out and "wall time" in out
    assert json.loads((tmp_path / "r" / "run.json").read_text())["seed"] == 3
    assert cli.main(["report", str(tmp_path / "r")]) == 0
    assert (tmp_path / "r" / "report" / "report.html").is_file()


def test_unknown_grid_load_is_a_scenario_error_with_key_path(tmp_path, capsys):
    data = yaml.safe_load(pilot(tmp_path).read_text())
    data["sites"][3]["grid_load"] = "consumer_0000"
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    assert cli.main(["run", str(path), "--out", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err
    assert "sites[3].grid_load" in err and "consumer_0000" in err and "Traceback" not in err
