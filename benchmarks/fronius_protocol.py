"""Fronius over SunSpec Modbus TCP on loopback: read and write latency, and 50 devices in one process.

``python -m benchmarks.fronius_protocol [--quick]``

* One driver read (inverter 103 + MPPT 160 + storage 124, two requests, decoded to a Measurement): median and
  p99 in ms. Baseline: pySunSpec2 (the SunSpec Alliance's reference client, if installed) reading the same three
  models from the same virtual device.
* The same two read requests over our Modbus TCP client and over pymodbus's client (interleaved), median in ms:
  the measurement behind keeping our small client (see docs/devices/fronius.md).
* One setpoint write with read-back (batt_p_w -> model 124, three writes and one read): median and p99 in ms.
* 50 virtual Fronius devices served from one process (their drivers in the same process too) on a 1 s wall-clock
  cycle, each cycle stepping every model, writing a setpoint to and reading every device: missed cycles over
  20 s (3 s with --quick) and the slowest cycle's busy time.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time

from benchmarks.common import paced, read_write_latencies, row
from devices import registry
from devices.base import Address, Setpoint
from devices.fronius.driver import SunSpecDriver
from devices.fronius.modbus_client import ModbusTcpClient
from devices.fronius.virtual import FroniusSunSpecDevice
from devices.io_loop import IoLoop

FAMILY = registry.family("fronius")
ENV = {"pv_w_per_kwp": 400.0, "site_load_w": 600.0}


def _percentiles(samples_s: list[float]) -> tuple[float, float]:
    ms = sorted(s * 1000.0 for s in samples_s)
    return statistics.median(ms), ms[min(len(ms) - 1, int(round(0.99 * (len(ms) - 1))))]


def _row(figure: str, ours: float, unit: str, baseline: float | None = None, goal: float | None = None) -> dict:
    return row(figure, ours, baseline, unit, goal_max=goal)


def _baseline_read(port: int, n: int) -> list[float] | None:
    try:
        from sunspec2.modbus.client import SunSpecModbusClientDeviceTCP
    except ImportError:
        return None
    client = SunSpecModbusClientDeviceTCP(slave_id=1, ipaddr="127.0.0.1", ipport=port, timeout=5)
    try:
        client.scan()
        models = (client.inverter_three_phase[0], client.mppt[0], client.storage_basic[0])
        samples = []
        for k in range(n + 10):
            t0 = time.perf_counter()
            for model in models:
                model.read()
            if k >= 10:
                samples.append(time.perf_counter() - t0)
        return samples
    finally:
        client.close()


def latency(n: int) -> list[dict]:
    io = IoLoop("bench-fronius")
    config = FAMILY.parse_config({})
    device = FroniusSunSpecDevice(FAMILY, config, device_id="bench")
    try:
        address = io.run(device.start(), 10)
        io.run(device.advance(0, 1, ENV), 10)

        async def ours() -> tuple[list[float], list[float]]:
            async with SunSpecDriver(Address.parse(address), FAMILY.capabilities(config)) as driver:
                return await read_write_latencies(driver, n)

        reads, writes = asyncio.run(ours())
        base = _baseline_read(device.port, n)
    finally:
        io.run(device.stop(), 10)
        io.close()
    r_med, r_p99 = _percentiles(reads)
    w_med, w_p99 = _percentiles(writes)
    b_med, b_p99 = _percentiles(base) if base else (None, None)
    return [
        _row("SunSpec read 103+160+124 -> Measurement, median", r_med, "ms", b_med, goal=5.0),
        _row("SunSpec read 103+160+124 -> Measurement, p99", r_p99, "ms", b_p99, goal=20.0),
        _row("setpoint write + read-back (model 124), median", w_med, "ms", goal=10.0),
        _row("setpoint write + read-back (model 124), p99", w_p99, "ms", goal=40.0),
    ]


async def _fleet(n_devices: int, duration_s: float, cycle_s: float) -> tuple[int, int, float]:
    config = FAMILY.parse_config({})
    devices = [FroniusSunSpecDevice(FAMILY, config, device_id=f"fleet{k}") for k in range(n_devices)]
    drivers = []
    try:
        for device in devices:
            drivers.append(SunSpecDriver(Address.parse(await device.start()), FAMILY.capabilities(config)))
        await asyncio.gather(*(d.connect() for d in drivers))

        async def serve_and_poll(k: int, device: FroniusSunSpecDevice, driver: SunSpecDriver, t: int) -> None:
            await driver.write(Setpoint({"batt_p_w": float(((t + k) % 9 - 4) * 500)}))
            await device.advance(t, 1, ENV)
            await driver.read()

        cycles = int(duration_s / cycle_s)
        missed, worst = await paced(cycles, cycle_s, lambda c: asyncio.gather(
            *(serve_and_poll(k, dev, drv, c) for k, (dev, drv) in enumerate(zip(devices, drivers)))))
        return cycles, missed, worst
    finally:
        await asyncio.gather(*(d.close() for d in drivers), return_exceptions=True)
        await asyncio.gather(*(d.stop() for d in devices), return_exceptions=True)


def fleet(duration_s: float, n_devices: int = 50, cycle_s: float = 1.0) -> list[dict]:
    cycles, missed, worst = asyncio.run(_fleet(n_devices, duration_s, cycle_s))
    return [
        _row(f"{n_devices} devices at a {cycle_s:g} s cycle: missed cycles of {cycles}", missed, "cycles", goal=0),
        _row(f"{n_devices} devices: slowest cycle (step + write + read each)", worst * 1000.0, "ms",
             goal=cycle_s * 1000.0),
    ]


async def _client_race(port: int, n: int) -> tuple[list[float], list[float]]:
    """The driver's two read spans over our Modbus TCP client and over pymodbus's, same device, same socket kind."""
    from pymodbus.client import AsyncModbusTcpClient

    spans = [(40070, 52), (40182, 116)]
    ours = ModbusTcpClient("127.0.0.1", port, 1, 2.0)
    theirs = AsyncModbusTcpClient("127.0.0.1", port=port, timeout=2, retries=0)
    await ours.open()
    await theirs.connect()

    async def read_ours() -> None:
        for address, count in spans:
            await ours.read_holding(address, count)

    async def read_theirs() -> None:
        for address, count in spans:
            if (await theirs.read_holding_registers(address, count=count, device_id=1)).isError():
                raise RuntimeError("pymodbus read failed")

    out: tuple[list[float], list[float]] = ([], [])
    try:
        for k in range(n + 10):
            for fn, samples in ((read_ours, out[0]), (read_theirs, out[1])):  # interleaved: same load on both
                t0 = time.perf_counter()
                await fn()
                if k >= 10:
                    samples.append(time.perf_counter() - t0)
    finally:
        await ours.close()
        theirs.close()
    return out


def client_race(n: int) -> list[dict]:
    io = IoLoop("bench-fronius-clients")
    device = FroniusSunSpecDevice(FAMILY, FAMILY.parse_config({}), device_id="race")
    try:
        io.run(device.start(), 10)
        ours, theirs = io.run(_client_race(device.port, n), 120)
    finally:
        io.run(device.stop(), 10)
        io.close()
    return [_row("Modbus TCP read of the driver's 2 spans: ours vs pymodbus client, median", _percentiles(ours)[0],
                 "ms", _percentiles(theirs)[0])]


def run(quick: bool) -> list[dict]:
    return latency(60 if quick else 500) + client_race(200 if quick else 1000) + fleet(3.0 if quick else 20.0)


def _print(rows: list[dict]) -> None:
    heads = ("figure", "ours", "baseline", "unit", "ratio", "goal", "met")
    table = [[str("" if r[h] is None else r[h]) for h in heads] for r in rows]
    widths = [max(len(h), *(len(row[i]) for row in table)) for i, h in enumerate(heads)]
    print("  ".join(h.ljust(w) for h, w in zip(heads, widths)))
    for cells in table:
        print("  ".join(v.ljust(w) for v, w in zip(cells, widths)))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer samples, 3 s fleet run")
    _print(run(parser.parse_args().quick))
