"""Many OCPP 1.6J charge points on one CSMS: CPU share and setpoint-to-confirmation latency.

``python -m benchmarks.ocpp_scale [--quick]``

200 virtual charge points (in a child process, wall clock) connect to one CSMS on loopback (this process),
each managed by its own ``ocpp16://`` driver. Every charge point has an EV charging and sends MeterValues
every 10 s (phases staggered); every minute every driver writes a new ``p_max_w`` at once (SetChargingProfile,
then GetCompositeSchedule to confirm). Measured over 2 minutes: two profile rounds, 400 confirmations
(``--quick``: 20 charge points, MeterValues every 2 s, a profile round every 5 s, 15 s):

* CPU share of the CSMS process (process CPU time / wall time, % of one core) over the measured window;
* setpoint-to-confirmation latency p50 and p99: from the round's start to each driver's confirmed write;
* MeterValues received per second (goal: what the charge points send, 95 %);
* schema validation of one MeterValues (9 sampled values): our compiled validators against the ``ocpp``
  package's own validation (jsonschema), the reason for the fastjsonschema dependency.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import subprocess
import sys
import time

from benchmarks.common import Stat, percentile, print_rows, row, timed
from devices import registry
from devices.base import Address, Setpoint
from devices.wallbox import csms
from devices.wallbox.driver import Ocpp16Driver

FAM = registry.family("wallbox")
EV = {"ev_plugged": 1.0, "ev_id": 1.0, "ev_soc_arrival": 0.1, "ev_capacity_wh": 1e9, "ev_p_max_w": 22_000.0,
      "ev_phases": 3.0}


# -- child: the charge points -----------------------------------------------------------------------------------
async def _charge_points(n: int, port: int, interval_s: float, duration_s: float) -> None:
    from devices.wallbox.virtual import VirtualWallbox16

    cfg = FAM.parse_config({"meter_interval_s": max(1, int(interval_s)), "heartbeat_interval_s": 300})
    devs = [VirtualWallbox16(FAM, cfg, device_id=f"BENCH{i:04d}", wall_clock=True) for i in range(n)]
    for d in devs:
        d.cp = d.make_charge_point(f"ws://127.0.0.1:{port}/", backoff_s=(0.2, 5.0))
        await d.cp.start()

    async def clock(i: int, d) -> None:
        await asyncio.sleep(interval_s * i / n)  # stagger: not all at the same instant
        t0, k = time.monotonic(), 0
        while time.monotonic() - t0 < duration_s:
            await d.advance(k * interval_s, interval_s, EV)  # type: ignore[arg-type]
            k += 1
            await asyncio.sleep(max(t0 + k * interval_s - time.monotonic(), 0))

    await asyncio.gather(*(clock(i, d) for i, d in enumerate(devs)))
    await asyncio.gather(*(d.stop() for d in devs))


# -- parent: CSMS and drivers -------------------------------------------------------------------------------------
async def _measure(n: int, interval_s: float, period_s: float, duration_s: float) -> dict:
    server = await csms.acquire("127.0.0.1", 0)
    meters = 0

    def count(state, action, payload) -> None:
        nonlocal meters
        meters += action == "MeterValues"

    server.listeners.append(count)
    caps = FAM.capabilities(FAM.parse_config({}))
    drivers = [Ocpp16Driver(Address.parse(f"ocpp16://127.0.0.1:{server.port}/BENCH{i:04d}"), caps, timeout_s=20.0)
               for i in range(n)]
    connecting = [asyncio.create_task(d.connect()) for d in drivers]
    await asyncio.sleep(0)
    child = subprocess.Popen([sys.executable, "-m", "benchmarks.ocpp_scale", "--child", str(n), str(server.port),
                              str(interval_s), str(duration_s + 60)], stdout=subprocess.DEVNULL)
    try:
        await asyncio.gather(*connecting)
        await asyncio.sleep(interval_s)  # every charge point is in its meter cycle
        latencies: list[float] = []
        meters_start, cpu0, wall0 = meters, time.process_time(), time.monotonic()
        k = 0
        while time.monotonic() - wall0 < duration_s:
            limit = 7000.0 + 1000.0 * (k % 5)
            t0 = time.monotonic()

            async def write(d: Ocpp16Driver) -> None:
                await d.write(Setpoint({"p_max_w": limit}))
                latencies.append(time.monotonic() - t0)

            await asyncio.gather(*(write(d) for d in drivers))
            k += 1
            await asyncio.sleep(max(wall0 + k * period_s - time.monotonic(), 0))
        wall = time.monotonic() - wall0
        cpu = time.process_time() - cpu0
        return {"cpu_share": 100.0 * cpu / wall, "latencies": latencies, "meters_per_s": (meters - meters_start) / wall,
                "rounds": k}
    finally:
        await asyncio.gather(*(d.close() for d in drivers), return_exceptions=True)
        child.send_signal(signal.SIGTERM)
        try:
            child.wait(timeout=10)
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()
        await csms.release(server)


def _validation_rows() -> list[dict]:
    from ocpp.messages import Call, _validate_payload

    from devices.wallbox.rpc import validate

    payload = {"connectorId": 1, "transactionId": 1, "meterValue": [{
        "timestamp": "2024-01-01T00:00:00Z",
        "sampledValue": [{"value": "1.000", "context": "Sample.Periodic", "measurand": "Power.Active.Import",
                          "location": "Outlet", "unit": "W"}] * 9}]}
    ours = timed(lambda: validate(2, "MeterValues", payload, "1.6"), repeat=2000)
    base = timed(lambda: _validate_payload(Call("1", "MeterValues", payload), "1.6"), repeat=300)
    def us(s: Stat) -> Stat:
        return Stat(s.median * 1e6, s.spread * 1e6, s.n)

    return [row("schema validation of one MeterValues (9 samples)", us(ours), us(base), "µs", goal_ratio=5.0)]


def run(quick: bool) -> list[dict]:
    n, interval, period, duration = (20, 2.0, 5.0, 15.0) if quick else (200, 10.0, 60.0, 120.0)
    res = asyncio.run(_measure(n, interval, period, duration))
    lat_ms = [x * 1000.0 for x in res["latencies"]]
    tag = f"{n} CPs, MeterValues/{interval:g} s, profile/{period:g} s"
    return [
        row(f"CSMS CPU share ({tag})", res["cpu_share"], None, "% of a core", goal_max=50.0),
        row(f"setpoint-to-confirmation latency p50 ({tag})", percentile(lat_ms, 50), None, "ms", goal_max=500.0),
        row(f"setpoint-to-confirmation latency p99 ({tag})", percentile(lat_ms, 99), None, "ms", goal_max=2000.0),
        row(f"MeterValues received ({tag})", res["meters_per_s"], None, "1/s", goal_min=0.95 * n / interval,
            lower_is_better=False),
        *_validation_rows(),
    ]


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        n, port, interval, duration = int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4]), float(sys.argv[5])
        signal.signal(signal.SIGTERM, lambda *_: os._exit(0))
        asyncio.run(_charge_points(n, port, interval, duration))
        sys.exit(0)
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="20 charge points, 15 s")
    print_rows(run(parser.parse_args().quick), title="OCPP at scale")
