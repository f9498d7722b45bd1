"""`s4g device serve energy_router`: one virtual ER in wall time, read by the driver, clean stop on SIGTERM."""

import asyncio
import os
import signal
import subprocess
import sys
from pathlib import Path

from devices import registry
from devices.base import Address, Setpoint
from devices.energy_router.driver import Iec61850Driver

ROOT = Path(__file__).resolve().parents[1]
FAM = registry.family("energy_router")


def test_serve_islands_without_grid_takes_a_setpoint_and_stops_on_sigterm(tmp_path):
    cfg = tmp_path / "er.yaml"
    cfg.write_text("phases: 3\npv_kwp: 3\n")
    proc = subprocess.Popen([sys.executable, "-m", "s4g", "device", "serve", "energy-router", "--port", "0",
                             "--step", "0.2", "--config", str(cfg), "--no-grid", "--ac-load-w", "300"],
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})
    try:
        assert proc.stdout is not None
        lines = [proc.stdout.readline() for _ in range(2)]
        assert "3-phase" in lines[0], lines
        address = lines[1].split()[-1]
        assert address.startswith("iec61850://127.0.0.1:") and address.endswith("/ERLD0")

        async def drive():
            caps = FAM.capabilities(FAM.parse_config({"pv_kwp": 3}))
            async with Iec61850Driver(Address.parse(address), caps) as driver:
                await driver.write(Setpoint({"pv_limit_w": 200.0, "mode": 6}))
                for _ in range(100):
                    m = await driver.read()
                    if m["state"] == 4 and m["pv_p_w"] == -200.0:
                        return m
                    await asyncio.sleep(0.1)
                raise AssertionError(f"never islanded at the PV limit: {dict(m.values)}")

        m = asyncio.run(asyncio.wait_for(drive(), 30))
        assert m["p_w"] == 0.0 and abs(m["ac_load_w"] - 300.0) < 0.01 and m["grid_present"] == 0.0
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=15)
        assert proc.returncode == 0, err
        assert "stopped" in out
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
