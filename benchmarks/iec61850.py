"""The Energy Router over IEC 61850 MMS on loopback: read and setpoint-write latency.

``python -m benchmarks.iec61850 [--quick]``

* One driver read: an MMS Read of the ER's 25 measurement FCDAs decoded to a Measurement (the iec61850
  package's client against our server): median and p99 in ms. Baseline: the same client reading the same
  FCDAs one at a time (25 MMS Reads), as a SCADA polling point by point would.
* One setpoint write with read-back (``batt_p_w`` -> ``ZBTC1.BatChaPwr.setMag.f``, one Write and one Read):
  median and p99 in ms.
* Report latency: from a model change (``advance``: step, sync, data-change scan, InformationReport sent) to the
  Measurement the ReportReader (the package's client, dispatch every 10 ms at most) yields: median and p99 in
  ms. Baseline: the same change seen by polling, ``advance`` then one driver read (a poller that polls
  back-to-back; a real poll period adds half its length on average).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time

from benchmarks.common import read_write_latencies, row, sampled
from devices import registry
from devices.base import Address
from devices.energy_router import data_map
from devices.energy_router.driver import Iec61850Driver
from devices.energy_router.report_reader import ReportReader
from devices.energy_router.virtual import VirtualEnergyRouter
from devices.io_loop import IoLoop

FAMILY = registry.family("energy_router")
ENV = {"pv_w_per_kwp": 400.0, "dc_load_w": 150.0, "ac_load_w": 200.0}


def _percentiles(samples_s: list[float]) -> tuple[float, float]:
    ms = sorted(s * 1000.0 for s in samples_s)
    return statistics.median(ms), ms[min(len(ms) - 1, int(round(0.99 * (len(ms) - 1))))]


async def _measure(address: str, n: int) -> tuple[list[float], list[float], list[float]]:
    import iec61850

    config = FAMILY.parse_config({})
    async with Iec61850Driver(Address.parse(address), FAMILY.capabilities(config)) as driver:
        reads, writes = await read_write_latencies(driver, n)
    host_port = address.split("//")[1].split("/")[0]
    conn = await iec61850.IedConnection.connect(host_port, timeout_ms=5000)

    async def read_pointwise() -> None:
        for f in data_map.MEASURED:
            await conn.read(f"ERLD0/{f.ref}", getattr(iec61850.FC, f.fc))
    try:
        pointwise = await sampled(read_pointwise, max(n // 5, 20), warmup=2)
    finally:
        await conn.disconnect()
    return reads, writes, pointwise


def latency(n: int) -> list[dict]:
    io = IoLoop("bench-iec61850")
    device = VirtualEnergyRouter(FAMILY, FAMILY.parse_config({}), device_id="bench")
    try:
        address = io.run(device.start(), 10)
        io.run(device.advance(0, 1, ENV), 10)
        reads, writes, pointwise = asyncio.run(_measure(address, n))
    finally:
        io.run(device.stop(), 10)
        io.close()
    r_med, r_p99 = _percentiles(reads)
    w_med, w_p99 = _percentiles(writes)
    b_med, b_p99 = _percentiles(pointwise)
    k = len(data_map.MEASURED)
    return [
        row(f"MMS read of {k} measurement FCDAs -> Measurement, median", r_med, b_med, "ms", goal_max=5.0),
        row(f"MMS read of {k} measurement FCDAs -> Measurement, p99", r_p99, b_p99, "ms", goal_max=20.0),
        row("setpoint write + read-back (ZBTC1.BatChaPwr.setMag.f), median", w_med, None, "ms", goal_max=10.0),
        row("setpoint write + read-back (ZBTC1.BatChaPwr.setMag.f), p99", w_p99, None, "ms", goal_max=40.0),
    ]


async def _report_latency(n: int) -> tuple[list[float], list[float]]:
    """(advance -> report Measurement, advance -> polled Measurement), one device and both clients on one loop."""
    device = VirtualEnergyRouter(FAMILY, FAMILY.parse_config({}), device_id="bench-reports")
    address = await device.start()
    reported: list[float] = []
    polled: list[float] = []
    try:
        await device.advance(0, 1, ENV)
        config = FAMILY.parse_config({})
        async with ReportReader(address, integrity_ms=0) as reader, \
                Iec61850Driver(Address.parse(address), FAMILY.capabilities(config)) as driver:
            await reader.next(10)  # the general interrogation
            for k in range(2 * (n + 10)):
                env = {**ENV, "dc_load_w": 100.0 + k % 50}  # a change every step: a data-change report
                t0 = time.perf_counter()
                await device.advance(k + 1, 1, env)
                if k % 2:
                    await driver.read()
                    (polled if k >= 20 else []).append(time.perf_counter() - t0)
                    await reader.next(10)  # keep the report queue empty
                else:
                    await reader.next(10)
                    (reported if k >= 20 else []).append(time.perf_counter() - t0)
    finally:
        await device.stop()
    return reported, polled


def report_latency(n: int) -> list[dict]:
    reported, polled = asyncio.run(_report_latency(n))
    r_med, r_p99 = _percentiles(reported)
    b_med, b_p99 = _percentiles(polled)
    return [
        row("model change -> URCB report received (ReportReader), median", r_med, b_med, "ms", goal_max=20.0),
        row("model change -> URCB report received (ReportReader), p99", r_p99, b_p99, "ms", goal_max=50.0),
    ]


def run(quick: bool) -> list[dict]:
    n = 60 if quick else 500
    return latency(n) + report_latency(n)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    for r in run(parser.parse_args().quick):
        print(f"{r['figure']}: {r['ours']:.3f} {r['unit']} "
              f"(baseline {r['baseline']}, goal {r['goal']}, met {r['met']})")


if __name__ == "__main__":
    main()
