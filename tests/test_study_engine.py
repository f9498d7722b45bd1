"""The study engine end to end on a tiny scenario (20 simulated minutes): the same table in-process and on a
LocalCluster with 2 workers, a failing variant recorded while the others finish, --resume after a kill, a
search, lifetime and economics columns, the report."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import yaml

from cosim.study import StudyRunner, load
from cosim.study.store import StudyDirError
from s4g import cli

DATA = Path(__file__).parent / "study_data"
REPO = Path(__file__).resolve().parents[1]
VOLATILE = ["wall_s", "run_s"]


def write_study(tmp_path: Path, name: str = "s.yaml", **changes) -> Path:
    doc = yaml.safe_load((DATA / "tiny_study.yaml").read_text())
    doc["scenario"]["path"] = str(DATA / "tiny.yaml")
    doc.update(changes)
    path = tmp_path / name
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def table(out: Path) -> pd.DataFrame:
    return pd.read_parquet(out / "table.parquet").drop(columns=VOLATILE).sort_values("variant").reset_index(drop=True)


@pytest.fixture(scope="module")
def inline_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("inline")
    out = tmp / "out"
    study = write_study(tmp, outputs={"runs": [{"pv_kwp": 7, "capacity_kwh": 20}], "tables": ["buses", "devices"]},
                        report={"heatmaps": "all"}, objectives=[{"kpi": "grid.losses_kwh"},
                                                                {"kpi": "total.v_max_pu"}])
    runner = StudyRunner(load(study), out, workers=0)
    status = runner.run()
    return runner, status, out


def test_inline_study_directory(inline_run):
    runner, status, out = inline_run
    assert status.state == "complete" and status.done == 4 and status.failed == 0
    t = table(out)
    assert len(t) == 4 and set(t["status"]) == {"complete"}
    assert {"capacity_kwh", "pv_kwp", "grid.v_minutes_outside_10pct", "devices.libal.soc_min", "target.v10",
            "targets_met"} <= set(t.columns)
    # more PV on the roof, higher voltage maximum; the axis really reached the scenario
    by_pv = t.groupby("pv_kwp")["total.v_max_pu"].max()
    assert by_pv[7] > by_pv[3]
    import duckdb

    with duckdb.connect(str(out / "study.duckdb"), read_only=True) as con:
        assert con.sql("SELECT count(*) FROM variants").fetchall() == [(4,)]
    kept = list((out / "runs").iterdir())
    assert len(kept) == 4  # heat maps for all: buses of every variant; devices only for the one asked
    assert sum((d / "timeseries" / "devices.parquet").is_file() for d in kept) == 1
    page = (out / "report.html").read_text()
    assert "Voltage heat maps" in page and "Pareto front" in page and "every node within" in page
    assert "data:image/png;base64" in page and "src=\"http" not in page  # self-contained
    info = json.loads((out / "study.json").read_text())
    assert info["state"] == "complete" and info["status"]["done"] == 4 and info["bundle_bytes"] > 10000
    assert runner.status_dict()["eta_s"] == 0.0


@pytest.mark.timeout(240)
def test_two_dask_workers_give_the_same_table(inline_run, tmp_path):
    _, _, inline_out = inline_run
    out = tmp_path / "dask"
    study = write_study(tmp_path)
    status = StudyRunner(load(study), out, workers=2).run()
    assert status.state == "complete" and status.done == 4
    a, b = table(inline_out), table(out)
    pd.testing.assert_frame_equal(a, b)


def test_a_failing_variant_is_recorded_and_the_others_finish(tmp_path):
    # every address is valid, but nothing listens on port 9: that variant fails when its world connects
    dead = "libal://127.0.0.1:9/1?can=127.0.0.1:9"
    study = write_study(tmp_path, axes=[{"name": "where", "key": "devices[id=libal].bus",
                                         "values": ["bus_002", "node_a11"]},
                                        {"name": "address", "key": "devices[id=libal].address",
                                         "values": ["sim://", dead]}])
    out = tmp_path / "out"
    status = StudyRunner(load(study), out, workers=0).run()
    assert status.done == 2 and status.failed == 2 and status.state == "complete"
    t = table(out)
    failed = t[t.address == dead]
    assert set(failed.status) == {"failed"} and all("127.0.0.1:9" in err for err in failed.error)
    assert set(t[t.address == "sim://"].status) == {"complete"}
    assert "Failed variants" in (out / "report.html").read_text()
    assert cli.main(["study", str(study), "--workers", "0", "--out", str(tmp_path / "cli"), "--no-progress"]) == 1


def test_an_invalid_variant_stops_before_anything_runs(tmp_path):
    from cosim.scenario import ScenarioError

    study = write_study(tmp_path, axes=[{"name": "c", "key": "devices[id=libal].config.battery.capacity_wh",
                                         "values": [1000, -5]}])
    with pytest.raises(ScenarioError, match="capacity_wh"):
        StudyRunner(load(study), tmp_path / "out", workers=0).run()
    assert not (tmp_path / "out" / "results.jsonl").exists()


def test_existing_directory_needs_resume_and_the_same_study(inline_run, tmp_path):
    runner, _, out = inline_run
    with pytest.raises(StudyDirError, match="--resume"):
        StudyRunner(runner.ls, out, workers=0).run()
    other = write_study(tmp_path, kpis=["grid.losses_kwh"])
    with pytest.raises(StudyDirError, match="changed"):
        StudyRunner(load(other), out, workers=0, resume=True).run()
    status = StudyRunner(runner.ls, out, workers=0, resume=True).run()
    assert status.cached == 4 and status.done == 0


@pytest.mark.timeout(300)
def test_resume_after_a_kill_skips_finished_variants(tmp_path):
    study = write_study(tmp_path, axes=[{"name": "seed", "key": "seed", "values": list(range(6))}])
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "s4g", "study", str(study), "--workers", "0", "--out", str(out), "--no-progress"]
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    results = out / "results.jsonl"
    try:
        deadline = time.monotonic() + 200
        while time.monotonic() < deadline and proc.poll() is None:
            if results.is_file() and len(results.read_text().splitlines()) >= 2:
                break
            time.sleep(0.05)
        assert proc.poll() is None, "the study finished before it could be killed"
        proc.send_signal(signal.SIGKILL)  # a crash: nothing gets to clean up
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    before = [json.loads(line)["id"] for line in results.read_text().splitlines()]
    assert 2 <= len(before) < 6
    done = subprocess.run(cmd + ["--resume"], cwd=REPO, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stderr[-2000:]
    ids = [json.loads(line)["id"] for line in results.read_text().splitlines()]
    assert ids[: len(before)] == before and len(ids) == 6 and len(set(ids)) == 6  # nothing ran twice
    straight = tmp_path / "straight"
    StudyRunner(load(study), straight, workers=0).run()
    pd.testing.assert_frame_equal(table(out), table(straight))


def test_search_lifetime_and_economics(tmp_path):
    study = write_study(
        tmp_path,
        axes=[{"name": "pv_kwp", "key": "devices[id=pv1].config.pv_kwp", "range": {"low": 1, "high": 100}},
              {"name": "mode", "key": "variant", "values": ["idle"]}],
        targets=[{"name": "vmax", "kpi": "total.v_max_pu", "max": 1.02}],
        search={"axis": "pv_kwp", "find": "max", "low": 1, "high": 100, "tolerance": 10, "meets": ["vmax"]},
        lifetime={"devices": ["libal"], "chemistry": "lfp", "years": 10},
        economics={"dso_storage": ["libal"], "years": 10, "reference": {"pv_kwp": 1}})
    runner = StudyRunner(load(study), tmp_path / "out", workers=0)
    status = runner.run()
    assert status.state == "complete" and status.failed == 0
    [b] = runner.searches
    assert b.done and b.answer is not None and 1 <= b.answer < 100
    t = pd.read_parquet(tmp_path / "out" / "table.parquet")
    ok = t[t["pv_kwp"] <= b.answer]
    assert ok["target.vmax"].all() and not t[t["pv_kwp"] > b.answer + 10]["target.vmax"].any()
    s = pd.read_parquet(tmp_path / "out" / "search.parquet")
    assert s["max_pv_kwp"].iloc[0] == b.answer
    assert t["lifetime.libal.soh_10y"].between(0.5, 1.0).all()
    assert (t["eco.case"] == 0).all() and t["eco.tco_dso_eur"].gt(0).all()  # an idle battery is not installed
    ref = t[t["pv_kwp"] == 1].iloc[0]
    assert ref["eco.npv_eur"] == pytest.approx(0.0, abs=1e-6)


def test_economics_axes_share_simulations(tmp_path):
    study = write_study(
        tmp_path,
        axes=[{"name": "case", "cases": {"none": {"devices[id=libal]": None, "controllers": []},
                                         "dso": {}}},
              {"name": "price", "key": "economics.battery_eur_per_kwh", "values": [400, 800]}],
        economics={"dso_storage": ["libal"], "years": 10, "reference": {"case": "none"}})
    runner = StudyRunner(load(study), tmp_path / "out", workers=0)
    status = runner.run()
    assert status.done == 4 and status.failed == 0
    t = pd.read_parquet(tmp_path / "out" / "table.parquet").set_index(["case", "price"])
    # two simulations, four rows: the battery price only changes the economics
    assert t.loc[("dso", 400), "grid.losses_kwh"] == t.loc[("dso", 800), "grid.losses_kwh"]
    assert t.loc[("none", 400), "eco.case"] == 0
    # the battery at the transformer stays idle in 20 minutes: it counts as not installed (case 0)
    assert t.loc[("dso", 400), "eco.tco_dso_eur"] == pytest.approx(t.loc[("none", 400), "eco.tco_dso_eur"], rel=0.5)
    assert t.loc[("none", 800), "eco.npv_eur"] == pytest.approx(0.0, abs=1e-6)


def test_cli_refuses_output_paths_before_running(inline_run, tmp_path, capsys):
    runner, _, out = inline_run
    a_file = tmp_path / "file"
    a_file.write_text("x")
    assert cli.main(["study", str(runner.ls.path), "--out", str(a_file), "--workers", "0"]) == 2
    assert cli.main(["study", str(runner.ls.path), "--out", str(out), "--workers", "0", "--no-progress"]) == 2
    assert "--resume" in capsys.readouterr().err


@pytest.mark.timeout(300)
def test_ctrl_c_leaves_a_directory_that_resumes(tmp_path):
    study = write_study(tmp_path, axes=[{"name": "seed", "key": "seed", "values": list(range(5))}])
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "s4g", "study", str(study), "--workers", "0", "--out", str(out), "--no-progress"]
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    results = out / "results.jsonl"
    deadline = time.monotonic() + 200
    while time.monotonic() < deadline and proc.poll() is None:
        if results.is_file() and results.read_text().count("\n") >= 1:
            break
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    stdout, _ = proc.communicate(timeout=120)
    assert proc.returncode == 130, stdout[-2000:]
    info = json.loads((out / "study.json").read_text())
    assert info["state"] == "interrupted" and "--resume" in stdout
    rows = [json.loads(line) for line in results.read_text().splitlines()]
    assert rows and all(r["status"] == "complete" for r in rows)  # the interrupted variant is not a failure
    assert (out / "table.parquet").is_file()
    done = subprocess.run(cmd + ["--resume"], cwd=REPO, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stderr[-2000:]
    assert len(pd.read_parquet(out / "table.parquet")) == 5
    assert json.loads((out / "study.json").read_text())["status"]["cached"] == len(rows)


@pytest.mark.timeout(300)
def test_terminal_ctrl_c_on_dask_cancels_the_running_variant_without_killing_workers(tmp_path):
    """A terminal's Ctrl-C reaches the whole process group, the LocalCluster's workers included: they must
    leave it to the study process, which stops the running variant within a step and records it cancelled."""
    study = write_study(tmp_path, axes=[{"name": "seed", "key": "seed", "values": list(range(6))}], until="6h")
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "s4g", "study", str(study), "--workers", "1", "--out", str(out), "--no-progress"]
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)  # its own group, as a terminal's foreground job
    results = out / "results.jsonl"
    try:
        deadline = time.monotonic() + 200
        while time.monotonic() < deadline and proc.poll() is None:
            if results.is_file() and results.read_text().count("\n") >= 1:  # the next variant is running now
                break
            time.sleep(0.05)
        os.killpg(proc.pid, signal.SIGINT)
        stdout, stderr = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 130, stderr[-2000:]
    assert "Traceback" not in stderr and "KeyboardInterrupt" not in stderr, stderr[-2000:]
    rows = [json.loads(line) for line in results.read_text().splitlines()]
    statuses = [r["status"] for r in rows]
    assert "lost" not in statuses and "cancelled" in statuses, statuses
    assert rows[0]["status"] == "complete"
    assert json.loads((out / "study.json").read_text())["state"] == "interrupted" and "--resume" in stdout


# ------------------------------------------------------------------------------------- cancel within a variant
def _cancel_at_step(monkeypatch, runner, step):
    """Cancel ``runner`` from inside the co-simulation once a variant reached ``step`` (an event, not a timer)."""
    from cosim.progress import RunMonitor

    update = RunMonitor.update

    def counting(self, t_s):
        update(self, t_s)
        if self.steps == step:
            runner.cancel()

    monkeypatch.setattr(RunMonitor, "update", counting)


def test_cancel_stops_the_running_variant_and_resume_completes(tmp_path, monkeypatch):
    study = write_study(tmp_path, axes=[{"name": "seed", "key": "seed", "values": [0, 1]}], until="1h")
    out = tmp_path / "out"
    runner = StudyRunner(load(study), out, workers=0)
    _cancel_at_step(monkeypatch, runner, 2)
    status = runner.run()
    assert status.state == "interrupted" and status.cancelled == 1 and status.done == status.failed == 0
    rows = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert [r["status"] for r in rows] == ["cancelled"]  # the second variant never started
    assert 2 <= rows[0]["steps"] < 12  # stopped inside the run, not after its 12 steps
    assert json.loads((out / "study.json").read_text())["state"] == "interrupted"
    assert list(table(out).status) == ["cancelled"]
    monkeypatch.undo()
    again = StudyRunner(load(study), out, workers=0, resume=True).run()
    assert again.state == "complete" and again.done == 2 and again.cached == 0  # the cancelled one ran again
    assert set(table(out).status) == {"complete"} and len(table(out)) == 2


def test_cancel_on_dask_stops_the_running_variant(tmp_path):
    # one worker: the short variant first, then a two-day one that the cancel must end well before its 576 steps
    study = write_study(tmp_path, axes=[{"name": "days", "key": "duration", "values": [1200, 172800]}])
    out = tmp_path / "out"
    runner = StudyRunner(load(study), out, workers=1)
    runner.on_result = lambda row: runner.cancel()
    status = runner.run()
    assert status.state == "interrupted" and status.done == 1 and status.cancelled == 1
    rows = {r["axes"]["days"]: r for r in map(json.loads, (out / "results.jsonl").read_text().splitlines())}
    assert rows[1200]["status"] == "complete" and rows[172800]["status"] == "cancelled"
    assert rows[172800]["steps"] < 576
    from cosim.study.store import ResultStore

    assert list(ResultStore(out).load()) == [rows[1200]["id"]]  # --resume reuses the complete one only
