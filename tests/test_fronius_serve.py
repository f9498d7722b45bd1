"""`s4g device serve fronius`: both protocols on one model in wall-clock time, clean stop on SIGTERM."""

import asyncio
import os
import signal
import subprocess
import sys
from pathlib import Path

from devices import registry
from devices.base import Address
from devices.fronius.driver import SunSpecDriver
from devices.fronius.solar_api_driver import SolarApiDriver

ROOT = Path(__file__).resolve().parents[1]
FAM = registry.family("fronius")


def _serve(*extra: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "s4g", "device", "serve", "fronius", "--port", "0",
                             "--http-port", "0", "--step", "0.2", *extra],
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})


def test_serve_runs_both_protocols_on_one_model_and_stops_on_sigterm(tmp_path):
    cfg = tmp_path / "fronius.yaml"
    cfg.write_text("pv_kwp: 4\nmodel_name: Symo Hybrid 5.0-3-S\n")
    proc = _serve("--config", str(cfg), "--pv-w-per-kwp", "600", "--site-load-w", "400")
    try:
        assert proc.stdout is not None
        lines = [proc.stdout.readline() for _ in range(3)]
        assert "Symo Hybrid 5.0-3-S" in lines[0], lines
        sunspec = lines[1].split()[-1]
        http = lines[2].split()[-1]
        assert sunspec.startswith("sunspec+tcp://127.0.0.1:") and http.startswith("fronius+http://127.0.0.1:")

        async def read_both():
            caps = FAM.capabilities(FAM.parse_config({}))
            async with SunSpecDriver(Address.parse(sunspec), caps) as a, SolarApiDriver(Address.parse(http), caps) as b:
                for _ in range(50):  # wait for the wall clock's first steps
                    m1, m2 = await a.read(), await b.read()
                    if m1["pv_p_w"] < 0 and m2["pv_p_w"] < 0:
                        return m1, m2
                    await asyncio.sleep(0.1)
                raise AssertionError("the device never produced")

        m1, m2 = asyncio.run(asyncio.wait_for(read_both(), 30))
        pv_ac = 4 * 600 * 0.97  # 4 kWp at 600 W/kWp through a 97 % inverter, stored or used: nothing exported
        assert abs(m1["pv_p_w"] + pv_ac) < 2 and abs(m2["pv_p_w"] + pv_ac) < 0.1
        assert abs(m2["p_grid_w"]) < 0.1 and abs(m1["batt_p_w"] - (pv_ac - 400)) < 2
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=15)
        assert proc.returncode == 0, err
        assert "stopped" in out
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()


def test_serve_refuses_an_invalid_config(tmp_path):
    cfg = tmp_path / "bad.json"
    cfg.write_text('{"ac_max_w": -5}')
    proc = _serve("--config", str(cfg))
    _out, err = proc.communicate(timeout=30)
    assert proc.returncode == 2 and "ac_max_w" in err
