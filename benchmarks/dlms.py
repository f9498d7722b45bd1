"""The meter over DLMS/COSEM on loopback: association + register reads, a day of load profile, 50 meters.

``python -m benchmarks.dlms [--quick]``

* One association (AARQ/AARE on a fresh TCP wrapper connection) plus ten register values, each its own GET
  (what a simple head-end does), then release: median and p99 in ms. Baseline: the same with dlms-cosem's
  client (blocking, if installed) against the same virtual meter.
* One day of the 15-min load profile (96 entries, range descriptor on the clock, block transfer at the meter's
  512-octet PDU) on an open association: median and p99 in ms; the same over HDLC on a TCP socket.
* 50 virtual meters served from one process, their drivers in the same process, on a 1 s wall-clock cycle:
  each cycle steps every meter's model and reads every meter (one GET with list of 27 attributes each):
  missed cycles over 20 s (3 s with --quick) and the slowest cycle's busy time.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import statistics
import time

from benchmarks.common import paced, row
from devices import registry
from devices.base import Address
from devices.family import DeviceContext
from devices.io_loop import IoLoop
from devices.meter import axdr
from devices.meter.apdu import AttributeRef
from devices.meter.client import DlmsClient, WrapperTransport
from devices.meter.driver import DlmsDriver, DlmsHdlcDriver, DlmsTcpDriver
from devices.meter.virtual import VirtualMeter

FAMILY = registry.family("meter")
POINT = {"point_p_w": 3200.0, "point_q_var": 450.0, "point_v_pu": 1.01}
TEN = ["1.0.1.7.0.255", "1.0.2.7.0.255", "1.0.1.8.0.255", "1.0.2.8.0.255", "1.0.32.7.0.255", "1.0.52.7.0.255",
       "1.0.72.7.0.255", "1.0.31.7.0.255", "1.0.14.7.0.255", "1.0.13.7.0.255"]


def _percentiles(samples_s: list[float]) -> tuple[float, float]:
    ms = sorted(s * 1000.0 for s in samples_s)
    return statistics.median(ms), ms[min(len(ms) - 1, int(round(0.99 * (len(ms) - 1))))]


def _baseline_association(port: int, n: int) -> list[float] | None:
    try:
        from dlms_cosem import cosem, enumerations
        from dlms_cosem.clients.dlms_client import DlmsClient as Reference
    except ImportError:
        return None
    attrs = [cosem.CosemAttribute(enumerations.CosemInterface.REGISTER, cosem.Obis.from_string(o), 2) for o in TEN]
    samples = []
    for k in range(n + 5):
        t0 = time.perf_counter()
        client = Reference.with_tcp_transport("127.0.0.1", port, 16, 1, timeout=5)
        with client.session() as c:
            for a in attrs:
                c.get(a)
        if k >= 5:
            samples.append(time.perf_counter() - t0)
    return samples


async def _association_reads(port: int, n: int) -> list[float]:
    refs = [AttributeRef(3, axdr.obis_bytes(o), 2) for o in TEN]
    samples = []
    for k in range(n + 5):
        t0 = time.perf_counter()
        client = DlmsClient(WrapperTransport("127.0.0.1", port, 16, 1), 5.0)
        await client.associate()
        for ref in refs:
            await client.get(ref)
        await client.release()
        if k >= 5:
            samples.append(time.perf_counter() - t0)
    return samples


async def _profile_reads(address: str, start: dt.datetime, n: int) -> list[float]:
    cls: type[DlmsDriver] = DlmsTcpDriver if address.startswith("dlms+tcp") else DlmsHdlcDriver
    samples = []
    async with cls(Address.parse(address), FAMILY.capabilities(FAMILY.parse_config({})), timeout_s=5) as driver:
        for k in range(n + 3):
            t0 = time.perf_counter()
            entries = await driver.read_profile(start, start + dt.timedelta(hours=23, minutes=45))
            if k >= 3:
                samples.append(time.perf_counter() - t0)
            assert len(entries) == 96, len(entries)
    return samples


def latency(n: int) -> list[dict]:
    io = IoLoop("bench-dlms")
    config = FAMILY.parse_config({})
    context = DeviceContext(dt.datetime(2024, 1, 1, tzinfo=dt.UTC), 900, "bench")  # clock at midnight
    device = VirtualMeter(FAMILY, config, context=context)
    try:
        tcp = io.run(device.start(), 10)
        hdlc = io.run(device.start_hdlc(), 10)
        for k in range(96 * 2):  # two days of 15-min steps
            io.run(device.advance(k * 900, 900, POINT), 10)
        start = context.start + dt.timedelta(days=1)
        assoc = asyncio.run(_association_reads(device.wrapper.port, n))
        base = _baseline_association(device.wrapper.port, max(10, n // 5))
        profile_tcp = asyncio.run(_profile_reads(tcp, start, max(10, n // 5)))
        profile_hdlc = asyncio.run(_profile_reads(hdlc, start, max(10, n // 5)))
    finally:
        io.run(device.stop(), 10)
        io.close()
    a_med, a_p99 = _percentiles(assoc)
    b_med, b_p99 = _percentiles(base) if base else (None, None)
    t_med, t_p99 = _percentiles(profile_tcp)
    h_med, h_p99 = _percentiles(profile_hdlc)
    return [
        row("association + 10 register GETs + release (wrapper), median", a_med, b_med, "ms", goal_max=20.0),
        row("association + 10 register GETs + release (wrapper), p99", a_p99, b_p99, "ms", goal_max=50.0),
        row("one day of 15-min load profile (wrapper, block transfer), median", t_med, None, "ms", goal_max=20.0),
        row("one day of 15-min load profile (wrapper, block transfer), p99", t_p99, None, "ms", goal_max=50.0),
        row("one day of 15-min load profile (HDLC on TCP), median", h_med, None, "ms", goal_max=50.0),
        row("one day of 15-min load profile (HDLC on TCP), p99", h_p99, None, "ms", goal_max=100.0),
    ]


async def _fleet(n_meters: int, duration_s: float, cycle_s: float) -> tuple[int, int, float]:
    config = FAMILY.parse_config({})
    meters = [VirtualMeter(FAMILY, config, device_id=f"fleet{k}") for k in range(n_meters)]
    drivers: list[DlmsTcpDriver] = []
    try:
        for meter in meters:
            drivers.append(DlmsTcpDriver(Address.parse(await meter.start()), FAMILY.capabilities(config)))
        await asyncio.gather(*(d.connect() for d in drivers))

        async def step_and_read(meter: VirtualMeter, driver: DlmsTcpDriver, t: int) -> None:
            await meter.advance(t, 1, POINT)
            await driver.read()

        cycles = int(duration_s / cycle_s)
        missed, worst = await paced(cycles, cycle_s, lambda c: asyncio.gather(
            *(step_and_read(m, d, c) for m, d in zip(meters, drivers))))
        return cycles, missed, worst
    finally:
        await asyncio.gather(*(d.close() for d in drivers), return_exceptions=True)
        await asyncio.gather(*(m.stop() for m in meters), return_exceptions=True)


def fleet(duration_s: float, n_meters: int = 50, cycle_s: float = 1.0) -> list[dict]:
    cycles, missed, worst = asyncio.run(_fleet(n_meters, duration_s, cycle_s))
    return [
        row(f"{n_meters} meters at a {cycle_s:g} s cycle: missed cycles of {cycles}", missed, None, "cycles",
            goal_max=0),
        row(f"{n_meters} meters: slowest cycle (step + read each)", worst * 1000.0, None, "ms",
            goal_max=cycle_s * 1000.0),
    ]


def run(quick: bool) -> list[dict]:
    return latency(40 if quick else 300) + fleet(3.0 if quick else 20.0)


if __name__ == "__main__":
    from benchmarks.common import print_rows

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer samples, 3 s fleet run")
    print_rows(run(parser.parse_args().quick), title="dlms")
