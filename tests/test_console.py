"""What `s4g run` prints: the scenario in words, the KPI table first (sites on request), a timing line that counts
start-up, where the results are; a failed run says what failed and prints no KPI table. Grid loads without a site
follow the grid's own profiles (SimBench) or are reported as left at 0 W."""

from __future__ import annotations

import json

import numpy as np
import pyarrow.parquet as pq
import yaml

from s4g import cli
from tests.test_run import REPO, pilot

BOLZANO = REPO / "scenarios" / "bolzano_commercial.yaml"


def test_run_prints_kpis_timing_and_paths(tmp_path, capsys):
    path = pilot(tmp_path, duration="10min")
    out_dir = tmp_path / "r"
    assert cli.main(["run", str(path), "--out", str(out_dir), "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "10 min at 1 min steps" in out  # durations for people, not "0.00694444 d"
    assert "self-consumption" in out and "peak import at the transformer" in out
    assert "total.self_consumption_ratio" not in out and "per site" not in out
    timing = next(line for line in out.splitlines() if line.startswith("complete: 10 steps"))
    assert "(10 min simulated)" in timing and "start-up" in timing and "simulation" in timing
    assert f"run directory: {out_dir}" in out and f"report: {out_dir / 'report' / 'report.html'}" in out
    meta = json.loads((out_dir / "meta.json").read_text())
    run_json = json.loads((out_dir / "run.json").read_text())
    assert 0 < meta["build_s"] < run_json["wall_s"]  # the printed and stored wall time include start-up
    assert cli.main(["report", str(out_dir), "--sites"]) == 0
    assert "per site" in capsys.readouterr().out


def test_failed_run_says_what_failed_and_prints_no_kpis(tmp_path, capsys, monkeypatch):
    from simulators.grid import GridSim

    step = GridSim.step

    def failing(self, time, inputs, max_advance):
        if time >= 300:
            raise RuntimeError("power flow exploded on purpose")
        return step(self, time, inputs, max_advance)

    monkeypatch.setattr(GridSim, "step", failing)
    path = pilot(tmp_path, duration="10min")
    assert cli.main(["run", str(path), "--out", str(tmp_path / "r"), "--no-progress", "--no-report"]) == 1
    captured = capsys.readouterr()
    assert "run failed at step 6" in captured.err and "power flow exploded on purpose" in captured.err
    assert "error.log" in captured.err
    assert "KPIs:" not in captured.out and "energy imported" not in captured.out
    assert "failed: 5 steps" in captured.out and "run directory:" in captured.out


def test_grid_loads_without_a_site_warn_where_the_grid_has_no_profiles(tmp_path):
    from cosim.run import run
    from cosim.scenario import load

    data = yaml.safe_load(pilot(tmp_path).read_text())
    dropped = data["sites"].pop(3)["id"]
    data["devices"] = [d for d in data["devices"] if d.get("site") != dropped]
    data["controllers"][0]["devices"] = [d for d in data["controllers"][0]["devices"] if d != f"fronius_{dropped[9:]}"]
    data["duration"] = "5min"
    path = tmp_path / "dropped.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    result = run(load(path), tmp_path / "r", progress=False, report=False)
    assert result.status == "complete"
    warnings = json.loads((tmp_path / "r" / "meta.json").read_text())["warnings"]
    assert len(warnings) == 1 and "1 loads of the grid file" in warnings[0] and dropped in warnings[0]
    data["grid"]["static_loads"] = "zero"  # the user's explicit choice is silent
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    run(load(path), tmp_path / "z", progress=False, report=False, kpis=False)
    assert json.loads((tmp_path / "z" / "meta.json").read_text())["warnings"] == []


def test_simbench_loads_without_a_site_follow_their_own_profiles(tmp_path):
    """Bolzano lists one site; the grid's 41 other loads draw their SimBench profiles (not 0 W)."""
    from cosim.run import run
    from cosim.scenario import load

    result = run(load(BOLZANO, {"duration": 600}), tmp_path / "r", progress=False, report=False, kpis=False)
    assert result.status == "complete"
    meta = json.loads((tmp_path / "r" / "meta.json").read_text())
    assert len(meta["grid"]["profile_loads"]) == 41 and meta["warnings"] == []
    grid = pq.read_table(tmp_path / "r" / "timeseries" / "grid.parquet").to_pandas()
    sites = pq.read_table(tmp_path / "r" / "timeseries" / "sites.parquet").to_pandas()
    others = grid["grid.p_slack_w"] - sites["commercial.pcc_p_w"] - grid["grid.losses_w"]
    assert np.all(others > 5000)  # the other loads draw their share of the feeder (tens of kW at night)
