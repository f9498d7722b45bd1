"""Hostile and clumsy command lines (issue 12): exit code 2, the option named, what was expected -- no traceback.

Before the fix: ``--until abc|=-5min|0`` and ``--out`` on a file or an unwritable path ended in tracebacks;
``s4g device serve`` crashed on invalid ``--config`` YAML, ``--port 99999`` and a CSMS port in use, and ran
happily with ``--step 0`` (100 % CPU), ``--step -1``, ``--pv-w-per-kwp nan``, ``--unit 999``,
``--daily 25:00-99:99``, ``--csms notaurl`` or a negative EV battery.
"""

import json
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from s4g.cli import main

from .test_scenario_inputs import BASE

REPO = Path(__file__).resolve().parents[2]


def exit_code(argv: list[str]) -> int:
    """main()'s exit code, whether a command returned it or argparse exited."""
    try:
        return main(argv)
    except SystemExit as exc:
        return int(exc.code or 0)


def refused(argv: list[str], capsys, *expected: str) -> str:
    assert exit_code(argv) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err, err
    for text in expected:
        assert text in err, err
    return err


@pytest.fixture()
def scenario(tmp_path) -> str:
    p = tmp_path / "s.yaml"
    p.write_text(yaml.safe_dump(BASE, sort_keys=False), encoding="utf-8")
    return str(p)


# -- s4g run / bench run / forecast / schema --------------------------------------------------------------------
@pytest.mark.parametrize("until,message", [
    ("abc", "expected a duration such as 90 (seconds)"), ("-5min", "not a negative one"),
    ("0", "expected a duration > 0"), ("100000000000d", "at most 3650d"), ("90ms", "whole seconds"),
])
@pytest.mark.parametrize("command", [["run"], ["bench", "run"]])
def test_until(scenario, capsys, until, message, command):
    refused([*command, scenario, f"--until={until}"], capsys, "argument --until", message, f"(found '{until}')")


def test_until_in_seconds_and_units(scenario, tmp_path, capsys):
    assert main(["run", scenario, "--until", "120", "--out", str(tmp_path / "r"), "--no-progress",
                 "--no-report"]) == 0
    assert json.loads((tmp_path / "r" / "run.json").read_text())["duration_s"] == 120


def test_out_on_an_existing_file(scenario, tmp_path, capsys):
    f = tmp_path / "results.txt"
    f.write_text("keep me")
    refused(["run", scenario, "--out", str(f)], capsys, f"--out {f}: exists and is not a directory")
    assert f.read_text() == "keep me"


@pytest.mark.parametrize("where", ["under_a_file", "proc"])
def test_out_on_an_unwritable_path(scenario, tmp_path, capsys, where):
    if where == "under_a_file":
        (tmp_path / "file").write_text("")
        out = tmp_path / "file" / "run"
    else:
        out = Path("/proc/s4g-run")
        if not Path("/proc").is_dir():
            pytest.skip("no /proc")
    refused(["run", scenario, "--out", str(out), "--no-progress"], capsys, f"--out {out}: cannot create the directory")
    refused(["bench", "run", scenario, "--out", str(out), "--no-progress"], capsys, f"--out {out}")


def test_checking_an_output_folder_leaves_nothing_behind(tmp_path):
    from cosim.paths import output_dir

    assert output_dir(tmp_path / "a" / "b" / "c") == tmp_path / "a" / "b" / "c"
    assert not (tmp_path / "a").exists()
    (tmp_path / "kept").mkdir()
    output_dir(tmp_path / "kept")
    assert (tmp_path / "kept").is_dir()


def test_default_run_directory_in_an_unwritable_place(scenario, tmp_path, capsys, monkeypatch):
    (tmp_path / "runs").write_text("not a folder")
    monkeypatch.chdir(tmp_path)
    refused(["run", scenario, "--no-progress"], capsys, "the run directory runs/t-")


def test_bench_options(scenario, capsys):
    refused(["bench", "run", scenario, "--rt-factor", "nan"], capsys, "argument --rt-factor", "expected a finite number > 0")
    refused(["bench", "run", scenario, "--rt-factor", "0"], capsys, "argument --rt-factor")
    refused(["bench", "run", scenario, "--monitor-port", "99999"], capsys, "argument --monitor-port", "0..65535")


def test_seed_out_of_range(scenario, capsys):
    refused(["run", scenario, "--seed", "-1"], capsys, "seed: Input should be greater than or equal to 0")


def test_schema_and_compare_outputs(tmp_path, capsys):
    refused(["schema", "--out", str(tmp_path)], capsys, f"--out {tmp_path}: is a directory")
    refused(["schema", "--out", str(tmp_path / "no" / "such" / "schema.json")], capsys, "does not exist")
    refused(["forecast", str(tmp_path), "--step", "0"], capsys, "argument --step", "expected a duration > 0")


def test_subprocess_has_no_traceback(scenario):
    proc = subprocess.run([sys.executable, "-m", "s4g", "run", scenario, "--until", "abc"], capture_output=True,
                          text=True, cwd=REPO)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr and "argument --until" in proc.stderr


# -- s4g device serve ----------------------------------------------------------------------------------------------
SERVE = {"fronius": ["--port", "0", "--http-port", "0"], "libal": ["--rtu-port", "0", "--can-port", "0"],
         "wallbox": ["--csms", "ws://127.0.0.1:9/"]}


@pytest.mark.parametrize("family", list(SERVE))
@pytest.mark.parametrize("content,message", [
    (b"pv_kwp: [unclosed\n", ":2: not valid YAML"),
    (b"pv_kwp: 4\npv_kwp: 5\n", ":2: pv_kwp: duplicate key (first on line 1)"),
    (b"\xff\xfe binary", ":1: not UTF-8 text"),
    (b"pv_kwp: .inf\n", ":1: pv_kwp: expected a finite number"),
    (b"- a list\n", "expected a mapping of"),
    (b"[" * 5000 + b"]" * 5000, "nested deeper"),
])
def test_serve_config_file(tmp_path, capsys, family, content, message):
    cfg = tmp_path / "device.yaml"
    cfg.write_bytes(content)
    refused(["device", "serve", family, *SERVE[family], "--config", str(cfg)], capsys, f"--config {cfg}", message)


def test_serve_config_values_name_the_key(tmp_path, capsys):
    cfg = tmp_path / "fronius.json"
    cfg.write_text('{"pv_kwp": -5, "pv_kwp": 4}')
    refused(["device", "serve", "fronius", *SERVE["fronius"], "--config", str(cfg)], capsys, "duplicate key 'pv_kwp'")
    cfg.write_text('{"pv_kwp": -5}')
    refused(["device", "serve", "fronius", *SERVE["fronius"], "--config", str(cfg)], capsys,
            f"--config {cfg}: pv_kwp: Input should be greater than or equal to 0 (found -5)")
    refused(["device", "serve", "fronius", *SERVE["fronius"], "--config", str(tmp_path / "missing.yaml")], capsys,
            "cannot read the file")


@pytest.mark.parametrize("argv,message", [
    (["fronius", "--port", "99999"], "argument --port: expected a TCP port 0..65535"),
    (["fronius", "--http-port", "-1"], "argument --http-port"),
    (["libal", "--rtu-port", "65536"], "argument --rtu-port"),
    (["libal", "--can-port", "x"], "argument --can-port"),
    (["csms", "--port", "99999"], "argument --port"),
    (["fronius", "--step", "0"], "argument --step: expected a finite number > 0 and <= 3600 (found '0')"),
    (["fronius", "--step", "-1"], "argument --step"),
    (["libal", "--step", "nan"], "argument --step"),
    (["wallbox", "--csms", "ws://h/", "--step", "0"], "argument --step"),
    (["fronius", "--pv-w-per-kwp", "nan"], "argument --pv-w-per-kwp: expected a finite number >= 0 and <= 2000"),
    (["fronius", "--pv-kwp", "inf"], "argument --pv-kwp"),
    (["fronius", "--site-load-w", "-inf"], "argument --site-load-w"),
    (["libal", "--unit", "999"], "argument --unit: expected a Modbus unit id 1..247 (found '999')"),
    (["libal", "--soc-init", "1.5"], "argument --soc-init"),
    (["wallbox", "--csms", "notaurl"], "argument --csms: expected a websocket URL"),
    (["wallbox", "--csms", "http://h/"], "argument --csms"),
    (["wallbox", "--csms", "ws://h:99999/"], "argument --csms"),
    (["wallbox", "--csms", "ws://h/", "--daily", "25:00-99:99"], "argument --daily: expected HH:MM-HH:MM"),
    (["wallbox", "--csms", "ws://h/", "--daily", "18:45"], "argument --daily"),
    (["wallbox", "--csms", "ws://h/", "--id", "a/b"], "argument --id"),
    (["wallbox", "--csms", "ws://h/", "--plug-at", "-5"], "argument --plug-at"),
    (["wallbox", "--csms", "ws://h/", "--duration", "0"], "argument --duration"),
    (["wallbox", "--csms", "ws://h/", "--ev", "capacity_wh=-40000"], "--ev: EV key capacity_wh must be > 0"),
    (["wallbox", "--csms", "ws://h/", "--ev", "soc=nan"], "--ev: EV key soc must be 0..1"),
    (["wallbox", "--csms", "ws://h/", "--ev", "phases=4"], "--ev: EV key phases must be 1, 2 or 3"),
    (["csms", "--every", "0"], "argument --every"),
    (["csms", "--ids", "CP_1,a b"], "argument --ids"),
    (["csms", "--upstream", "legacy"], "argument --upstream"),
])
def test_serve_options(capsys, argv, message):
    refused(["device", "serve", *argv], capsys, message)


@pytest.fixture()
def busy_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        yield s.getsockname()[1]


def test_csms_port_in_use(capsys, busy_port):
    refused(["device", "serve", "csms", "--port", str(busy_port), "--duration", "1"], capsys,
            f"--port {busy_port}: cannot listen on 127.0.0.1", "address already in use")


def test_fronius_port_in_use(capsys, busy_port):
    refused(["device", "serve", "fronius", "--port", str(busy_port), "--http-port", "0"], capsys,
            f"cannot serve SunSpec on 127.0.0.1:{busy_port}")
