"""Faults on the bench: a device that stops answering or is killed, a silent controller, a setpoint beyond the
operator's limit, emergency stops (``s4g bench stop``, Ctrl-C), and a device that is not there at all.

All runs use the Fur feeder at 200x real time (a 60 s step is a 0.3 s cycle), so "two control cycles" is two
60-second steps of simulated time. Nothing here depends on how fast the machine is: the virtual devices keep the
bench's time (``clock: steps``; the separately served device over its clock link), every assertion is on the
simulated times the bench recorded, and where the bench acts on wall time -- a driver's reply timeout, its
reconnect back-off -- the test gives it a generous deadline (``io_timeout``) or waits for the event it asserts.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from s4g.cli import main as s4g
from cosim.scenario import load
from hil_bench.run import BenchRefused, run_bench
from hil_bench.testing import REPO, pilot_data, serve_fronius, write_scenario

RT = 0.005
# io_timeout: a reply timeout is wall time; half a 0.3 s cycle (the default) on a busy machine would fault healthy
# devices. A silent device is faulted in the step it fails, however long the timeout (asserted below).
BENCH = {"rt_factor": RT, "virtual_step_s": 5, "read_at": 0.6, "tolerance": "50ms", "monitor": {"enabled": False},
         "clock": "steps", "io_timeout": "5s"}
STEP = 60


def small_pilot(keep: list[str], duration: str, bench: dict, addresses: dict[str, str] | None = None) -> dict:
    """The pilot with only the devices ``keep`` (hosted over their protocols unless ``addresses`` says)."""
    data = pilot_data(duration=duration, bench=bench, libal_address="libal://")
    data["devices"] = [d for d in data["devices"] if d["id"] in keep]
    for d in data["devices"]:
        d["address"] = (addresses or {}).get(d["id"], d["address"])
    data["controllers"] = [{"id": "self_consumption", "kind": "self_consumption",
                            "devices": [d["id"] for d in data["devices"] if d["family"] == "fronius"]}]
    data.pop("variants", None)
    return data


def io_rows(run_dir: Path, device: str) -> list[dict]:
    return pq.read_table(run_dir / "device_io" / f"{device}.parquet").to_pylist()


def events(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "events.jsonl").read_text().splitlines()]


def notice_when_back(rt, device: str, back: threading.Event) -> None:
    """Set ``back`` when the bench records that ``device`` answers again (its ``device_back`` event)."""
    emit = rt.events.emit

    def emit_and_notice(t_s, dev, kind, message, **kwargs):
        event = emit(t_s, dev, kind, message, **kwargs)
        if dev == device and kind == "device_back":
            back.set()
        return event

    rt.events.emit = emit_and_notice


def test_watchdogs_and_limits(tmp_path):
    silent, limited, orphan = "fronius_4006773", "fronius_4018215", "fronius_4011906"
    bench = {**BENCH, "limits": {limited: {"p_min_w": -100, "p_max_w": 100}},
             "drills": [{"at": "5min", "device": silent, "fault": "device_silent", "duration": "5min"},
                        {"at": "5min", "device": orphan, "fault": "controller_silent"}]}
    data = small_pilot([silent, limited, orphan], "20min", bench)
    models: dict[int, dict[str, tuple[float, int]]] = {}
    back, came_back = threading.Event(), {}

    def sample(t_s, rt):  # the hosted devices' own physics, as the step ends
        models[t_s] = {dev: (float(h.virtual.fbank.batt_p_w[0]), int(h.virtual.fbank.stor_ctl_mod[0]))
                       for dev, h in rt.hosting.devices.items()}
        if t_s == 0:
            notice_when_back(rt, silent, back)
        if t_s == 600:  # the drill has ended: the run waits here until the watchdog has the device back
            came_back["in_time"] = back.wait(120)  # its driver's reconnect back-off is wall time (up to 5 s)

    result = run_bench(load(write_scenario(data, tmp_path / "drills.yaml")), tmp_path / "run", progress=False,
                       report=False, observers=(sample,))
    assert result.status == "complete", result.error
    assert came_back["in_time"], "the silent device did not come back within 120 s of wall time after the drill"
    run_dir, ev = result.run_dir, events(result.run_dir)

    # a device that stops answering: faulted at once, in its own fallback (SunSpec revert) within two cycles
    down = [e for e in ev if e["device"] == silent and e["kind"] == "device_unavailable"]
    assert [e["t_s"] for e in down] == [300] and "reverts to its default mode 120 s" in down[0]["message"]
    batt, mode = models[300 + 2 * STEP][silent]
    assert mode == 0 or abs(batt) < 1.0  # self-consumption again (revert), or zero power
    # it answers again once the drill has ended at 600 s (the run waited for that at 600 s): confirmed safe first,
    # then controlled again
    back = {e["kind"]: e["t_s"] for e in ev if e["device"] == silent and e["kind"] in ("safe_state", "device_back")}
    assert 600 <= back["safe_state"] <= back["device_back"]
    held = [r for r in io_rows(run_dir, silent) if r["source"] == "controller" and r["status"] == "dropped"]
    assert held and {r["t_s"] for r in held} <= set(range(300, back["device_back"] + 1, STEP))
    assert any(r["op"] == "read" and r["status"] == "ok" and r["t_s"] > back["device_back"]
               for r in io_rows(run_dir, silent))

    # a setpoint beyond the operator's limit is refused before it reaches the wire
    writes = [r for r in io_rows(run_dir, limited) if r["op"] == "write" and r["source"] == "controller"]
    refused = [r for r in writes if r["status"] == "rejected"]
    assert refused and all(r["value"] < -100 and "p_min_w=-100" in r["detail"] for r in refused)
    assert all(-100 <= r["value"] <= 100 for r in writes if r["status"] == "ok")
    assert all(batt >= -100.5 for m in models.values() for batt, _ in [m[limited]])
    recorded = pq.read_table(run_dir / "timeseries" / "devices.parquet").column(f"{limited}.rejected").to_pylist()
    assert recorded[-1] >= len(refused) - 1 and any("p_min_w=-100" in e["message"] for e in ev
                                                    if e["device"] == limited)

    # a controller that goes silent: the device gets its safe setpoint within two cycles
    silence = [e for e in ev if e["device"] == orphan and e["kind"] == "controller_silent"]
    assert [e["t_s"] for e in silence] == [360]  # no setpoint at 300 and 360
    safe = [r for r in io_rows(run_dir, orphan) if r["source"] == "watchdog" and r["status"] == "ok"]
    assert [(r["t_s"], r["value"]) for r in safe] == [(360, 0.0)]
    assert abs(models[420][orphan][0]) < 1.0
    # and the rest of the run went on: every device read at every step it was answering
    assert {r["t_s"] for r in io_rows(run_dir, orphan) if r["op"] == "read" and r["status"] == "ok"} == \
        set(range(0, 20 * 60, STEP))


def test_killed_device(tmp_path):
    real, hosted = "fronius_4006773", "fronius_4018215"
    config = next(d for d in pilot_data()["devices"] if d["id"] == real)["config"]
    with serve_fronius(config, tmp_path, device_id=real, follow_clock=True) as served:
        data = small_pilot([real, hosted], "10min", {**BENCH, "device_clocks": {real: served.clock_address}},
                           {real: served.address})
        path = write_scenario(data, tmp_path / "kill.yaml")
        assert s4g(["bench", "check", str(path)]) == 0  # reachable, identified

        def kill(t_s, rt):
            if t_s == 240:
                served.kill()

        result = run_bench(load(path), tmp_path / "run", progress=False, report=False, observers=(kill,))
    assert result.status == "complete", result.error  # the run goes on without it
    run_dir, ev = result.run_dir, events(result.run_dir)
    down = [e for e in ev if e["device"] == real and e["kind"] == "device_unavailable"]
    assert len(down) == 1 and 240 < down[0]["t_s"] <= 240 + 2 * STEP
    t_fault = down[0]["t_s"]
    bench = json.loads((run_dir / "bench.json").read_text())
    assert bench["devices"][real]["state"] == "faulted" and bench["end_safe"][real] != "ok"
    rows = io_rows(run_dir, real)
    assert not [r for r in rows if r["t_s"] > t_fault and r["source"] == "controller" and r["status"] == "ok"]
    assert any(r["source"] == "watchdog" and r["status"] == "error" for r in rows)  # safe state attempted
    clock = {r["t_s"]: r["status"] for r in rows if r["op"] == "clock"}  # it kept the bench's time until killed
    assert clock == {t: "ok" if t <= 240 else "error" for t in range(0, 600, STEP)}
    devices = pq.read_table(run_dir / "timeseries" / "devices.parquet").to_pydict()
    t = devices["t_s"]
    p_real = [p for ts, p in zip(t, devices[f"{real}.p_w"]) if ts >= t_fault]
    assert p_real and all(p == 0.0 for p in p_real)  # enters the power flow as disconnected
    assert all(p < 0 for p in devices[f"{hosted}.p_w"][1:])  # the other device kept working
    assert {r["t_s"] for r in io_rows(run_dir, hosted) if r["op"] == "read" and r["status"] == "ok"} == \
        set(range(0, 600, STEP))


def test_unreachable_device_refuses_the_run(tmp_path, capsys):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again: nothing listens there
    data = small_pilot(["fronius_4006773"], "5min", BENCH,
                       {"fronius_4006773": f"sunspec+tcp://127.0.0.1:{port}/1"})
    data["devices"][0]["timeout_s"] = 0.5
    path = write_scenario(data, tmp_path / "absent.yaml")
    assert s4g(["bench", "check", str(path)]) == 2
    assert "not reachable" in capsys.readouterr().out
    assert s4g(["bench", "run", str(path), "--out", str(tmp_path / "run"), "--no-progress"]) == 2
    assert not (tmp_path / "run").exists()
    with pytest.raises(BenchRefused, match="fronius_4006773"):
        run_bench(load(path), tmp_path / "run2", progress=False)


def test_emergency_stop_command_drives_every_device_safe(tmp_path):
    devices = ["fronius_4006773", "fronius_4018215", "libal"]
    data = small_pilot(devices, "10min", {**BENCH, "monitor": {"port": 0}})
    stopped = {}

    def stop(t_s, rt):
        if t_s == 180:
            stopped["code"] = s4g(["bench", "stop", str(rt.run_dir)])
            stopped["models"] = {d: h.virtual for d, h in rt.hosting.devices.items()}

    result = run_bench(load(write_scenario(data, tmp_path / "estop.yaml")), tmp_path / "run", progress=False,
                       report=False, observers=(stop,))
    assert stopped["code"] == 0
    assert result.status == "interrupted" and result.exit_code == 130
    assert result.stop_reason.startswith("emergency stop") and result.estop == dict.fromkeys(devices, "ok")
    assert result.steps <= 5  # ended at the step boundary after the stop
    for dev in devices:
        rows = io_rows(result.run_dir, dev)
        estop = [r for r in rows if r["source"] == "estop"]
        assert estop and all(r["status"] == "ok" and r["value"] == 0.0 for r in estop)
        after = [r for r in rows if r["wall_s"] > estop[0]["wall_s"] and r["source"] == "controller"]
        assert all(r["status"] != "ok" for r in after)  # nothing from a controller passed after the stop
    libal = stopped["models"]["libal"]
    assert float(libal.model.setpoints["p_w"][0]) == 0.0
    assert not (result.run_dir / "bench.ctl").exists()
    assert json.loads((result.run_dir / "run.json").read_text())["status"] == "interrupted"


def test_ctrl_c_stops_the_cli_run_safely(tmp_path):
    data = small_pilot(["fronius_4006773"], "30min", {**BENCH, "monitor": {"port": 0}})
    path = write_scenario(data, tmp_path / "ctrl_c.yaml")
    run_dir = tmp_path / "run"
    proc = subprocess.Popen([sys.executable, "-m", "s4g", "bench", "run", str(path), "--out", str(run_dir),
                             "--no-progress", "--no-report"], cwd=REPO, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    try:
        deadline = time.monotonic() + 120
        steps = 0
        while steps < 2:  # wait until it is running (polling its own state endpoint)
            assert proc.poll() is None and time.monotonic() < deadline, proc.stdout.read()
            ctl = run_dir / "bench.ctl"
            if ctl.is_file():
                url = json.loads(ctl.read_text())["url"]
                with urllib.request.urlopen(url + "api/state", timeout=10) as reply:
                    steps = json.loads(reply.read())["steps_done"]
            time.sleep(0.1)
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, out
    assert "emergency stop (SIGINT received): fronius_4006773 ok" in out
    rows = io_rows(run_dir, "fronius_4006773")
    assert [r["status"] for r in rows if r["source"] == "estop"] == ["ok"]
    assert json.loads((run_dir / "run.json").read_text())["status"] == "interrupted"
