"""`s4g device serve meter`: wrapper and HDLC on one model in wall-clock time, clean stop on SIGTERM."""

import asyncio
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from devices import registry
from devices.base import Address
from devices.meter.driver import DlmsHdlcDriver, DlmsTcpDriver

ROOT = Path(__file__).resolve().parents[1]
FAM = registry.family("meter")


def _serve(*extra: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "s4g", "device", "serve", "meter", "--port", "0",
                             "--step", "0.2", *extra],
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})


def test_serve_runs_both_transports_on_one_model_and_stops_on_sigterm(tmp_path):
    cfg = tmp_path / "meter.yaml"
    cfg.write_text("phases: 1\nmodel_name: ZMG310\n")
    proc = _serve("--config", str(cfg), "--hdlc-port", "0", "--p-w", "-2000", "--q-var", "0")
    try:
        assert proc.stdout is not None
        lines = [proc.stdout.readline() for _ in range(3)]
        assert "ZMG310" in lines[0] and "1-phase" in lines[0], lines
        tcp, hdlc = lines[1].split()[-1], lines[2].split()[-1]
        assert tcp.startswith("dlms+tcp://127.0.0.1:") and hdlc.startswith("dlms+hdlc+tcp://127.0.0.1:")

        async def read_both():
            caps = FAM.capabilities(FAM.parse_config({}))
            async with DlmsTcpDriver(Address.parse(tcp), caps) as a, DlmsHdlcDriver(Address.parse(hdlc), caps) as b:
                for _ in range(100):  # wait for the wall clock's first steps
                    m1, m2 = await a.read(), await b.read()
                    if m1["e_export_wh"] > 0 and m2["p_w"] == -2000:
                        return m1, m2
                    await asyncio.sleep(0.1)
                raise AssertionError("the meter never counted")

        m1, _m2 = asyncio.run(asyncio.wait_for(read_both(), 30))
        assert m1["p_w"] == -2000 and m1["p_export_w"] == 2000
        assert abs(m1["clock_unix_s"] - time.time()) < 30  # the meter's clock runs in wall time, from now
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
    cfg.write_text('{"energy_digits": 12}')
    proc = _serve("--config", str(cfg))
    _out, err = proc.communicate(timeout=30)
    assert proc.returncode == 2 and "energy_digits" in err
