"""Robustness probes of the device protocol servers: SunSpec Modbus TCP, Modbus RTU over TCP, Fronius Solar API,
socketcand, DLMS/COSEM (TCP wrapper and HDLC) and IEC 61850 MMS, each the real virtual device on a free port.

A probe alternates *clean* and *burst* rounds. A clean round times one valid request (the baseline); a burst round
fires hostile inputs from ``benchmarks.hostile_inputs`` (each on its own connection, half-closed after sending, read
until the server closes), then times from the end of the burst to the first valid answer (the time to recover).

* crash: a server's connection handler died of an exception (``counters["errored"]`` or a logged traceback), or
  the probe met an exception it did not expect;
* silent stop: a hostile connection the server neither answered to the end nor closed within 5 s, or no valid
  answer within 10 s after a burst.

Not a benchmark module by itself (no ``run``): benchmarks/robustness.py lists these probes.
"""

from __future__ import annotations

import asyncio
import logging
import random
import struct
import time
from collections.abc import Awaitable, Callable, Coroutine
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, cast

from benchmarks.hostile_inputs import dlms as dlms_inputs
from benchmarks.hostile_inputs import iec61850 as mms_inputs
from benchmarks.hostile_inputs import modbus, socketcand, solar_api
from benchmarks.robustness_result import ProbeResult

HANG_S = 5.0  # a hostile connection neither answered nor closed after this long is a silent stop
RECOVER_S = 10.0  # no valid answer this long after a burst is a silent stop
LIBAL = {"battery": {"capacity_wh": 100_000, "p_charge_max_w": 50_000, "p_discharge_max_w": 50_000,
                     "eta_charge": 0.96, "eta_discharge": 0.96, "soc_min": 0.05, "soc_max": 0.95, "soc_init": 0.5},
         "s_max_va": 60_000, "i_charge_max_a": 100, "i_discharge_max_a": 120}


class _Tracebacks(logging.Handler):
    """Counts records logged with an exception under ``devices`` and ``websockets``: a handler that died."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.count = 0

    def emit(self, record: logging.LogRecord) -> None:
        if record.exc_info:
            self.count += 1


@contextmanager
def counting_tracebacks():
    handler = _Tracebacks()
    loggers = [logging.getLogger(n) for n in ("devices", "websockets")]
    for lg in loggers:
        lg.addHandler(handler)
    try:
        yield handler
    finally:
        for lg in loggers:
            lg.removeHandler(handler)


async def fire(port: int, chunks: list[bytes], greeting: int = 0) -> bool:
    """Send ``chunks`` on a fresh connection, half-close, read until the server closes; False if it hangs."""
    try:
        reader, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), HANG_S)
    except (OSError, TimeoutError):
        return False
    try:
        if greeting:
            await asyncio.wait_for(reader.readexactly(greeting), HANG_S)
        for chunk in chunks:
            writer.write(chunk)
        await writer.drain()
        writer.write_eof()
        deadline = time.monotonic() + HANG_S
        while await asyncio.wait_for(reader.read(65536), max(deadline - time.monotonic(), 0.001)):
            pass
        return True
    except TimeoutError:
        return False
    except (ConnectionError, asyncio.IncompleteReadError):
        return True  # closed by a reset: still an answer
    finally:
        writer.close()


@dataclass
class Link:
    """One running server: its port(s), a valid request, the hostile inputs, its error counter."""

    hostile: Callable[[random.Random], Awaitable[bool]]  # one hostile connection; False: it hung
    good: Callable[[], Awaitable[bool]]  # one valid request; True: a correct answer came
    errored: Callable[[], int] = lambda: 0


async def _rounds(link: Link, quick: bool, seed: int) -> ProbeResult:
    rng = random.Random(seed)
    rounds, burst = (4, 10) if quick else (20, 50)
    result = ProbeResult(lost=None)
    errored0 = link.errored()
    with counting_tracebacks() as tracebacks:
        for _ in range(rounds):
            try:
                t0 = time.perf_counter()
                ok = await asyncio.wait_for(link.good(), RECOVER_S)
                result.baseline_s.append(time.perf_counter() - t0)
                result.silent_stops += not ok
                for _ in range(burst):
                    result.inputs += 1
                    result.silent_stops += not await link.hostile(rng)
                t0 = time.perf_counter()
                deadline = t0 + RECOVER_S
                while not await _try(link.good):
                    if time.perf_counter() > deadline:
                        result.silent_stops += 1
                        break
                else:
                    result.recover_s.append(time.perf_counter() - t0)
            except Exception:  # what this counts
                logging.getLogger(__name__).exception("probe round failed")
        result.crashes += tracebacks.count
    result.crashes += link.errored() - errored0
    return result


async def _try(good: Callable[[], Awaitable[bool]]) -> bool:
    try:
        return await asyncio.wait_for(good(), RECOVER_S)
    except (OSError, TimeoutError, asyncio.IncompleteReadError):
        return False


def _run(body: Callable[[], Coroutine[Any, Any, ProbeResult]]) -> ProbeResult:
    try:
        return asyncio.run(body())
    except Exception:  # a probe that could not even start the server counts one crash
        logging.getLogger(__name__).exception("probe failed")
        return ProbeResult(crashes=1)


# ------------------------------------------------------------------------------------------------ SunSpec
def probe_sunspec(quick: bool) -> ProbeResult:
    from devices import registry
    from devices.fronius.sunspec_map import BASE_ADDRESS, SUNS
    from devices.fronius.virtual import FroniusSunSpecDevice

    fam = registry.family("fronius")

    async def body() -> ProbeResult:
        dev = FroniusSunSpecDevice(fam, fam.parse_config({}), device_id="probe", max_connections=8,
                                   idle_timeout_s=2.0)
        await dev.start()
        await dev.advance(0, 60, {"pv_w_per_kwp": 300.0, "site_load_w": 500.0})

        async def good() -> bool:
            reader, writer = await asyncio.open_connection("127.0.0.1", dev.port)
            try:
                writer.write(modbus.mbap(struct.pack(">BHH", 3, BASE_ADDRESS, 2)))
                reply = await reader.readexactly(13)
                return struct.unpack(">2H", reply[9:13]) == SUNS
            finally:
                writer.close()

        try:
            return await _rounds(Link(lambda rng: fire(dev.port, [modbus.tcp_frame(rng)]), good,
                                      lambda: dev.server.counters["errored"]), quick, 1)
        finally:
            await dev.stop()

    return _run(body)


# ------------------------------------------------------------------------------------------- LiBal: RTU, CAN
def _libal(quick: bool, can: bool) -> ProbeResult:
    from devices import registry
    from devices.libal import rtu
    from devices.libal.virtual import LibalVirtualDevice

    fam = registry.family("libal")

    async def body() -> ProbeResult:
        dev = LibalVirtualDevice(fam, fam.parse_config(LIBAL), device_id="probe", broadcast_period_s=0.2)
        await dev.start()
        await dev.advance(0, 60, {})
        server = dev.can_server if can else dev.rtu_server

        async def good_rtu() -> bool:
            reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
            try:
                writer.write(rtu.frame(1, rtu.read_holding_pdu(0, 2)))
                reply = await reader.readexactly(9)
                return rtu.check_crc(reply) and reply[1] == 3
            finally:
                writer.close()

        async def good_can() -> bool:
            reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
            try:
                out = await reader.readexactly(6)
                writer.write(b"< open can0 >< rawmode >")
                while b"< ok >< ok >" not in out and (more := await reader.read(4096)):
                    out += more
                return out.startswith(b"< hi >< ok >< ok >")
            finally:
                writer.close()

        if can:
            link = Link(lambda rng: fire(cast(int, server.port), [socketcand.stream(rng)], greeting=6), good_can,
                        lambda: server.counters["errored"])
        else:
            link = Link(lambda rng: fire(cast(int, server.port), [modbus.rtu_stream(rng)]), good_rtu,
                        lambda: server.counters["errored"])
        try:
            return await _rounds(link, quick, 2 + can)
        finally:
            await dev.stop()

    return _run(body)


def probe_rtu(quick: bool) -> ProbeResult:
    return _libal(quick, can=False)


def probe_socketcand(quick: bool) -> ProbeResult:
    return _libal(quick, can=True)


# ----------------------------------------------------------------------------------------------- Solar API
def probe_solar_api(quick: bool) -> ProbeResult:
    import json

    from devices import registry
    from devices.fronius.solar_api import FroniusSolarApiDevice

    fam = registry.family("fronius")

    async def body() -> ProbeResult:
        dev = FroniusSolarApiDevice(fam, fam.parse_config({}), device_id="probe")
        await dev.start()
        await dev.advance(0, 60, {"pv_w_per_kwp": 300.0, "site_load_w": 500.0})
        port = dev.server.port

        async def good() -> bool:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            try:
                writer.write(solar_api.get("/solar_api/GetAPIVersion.cgi"))
                reply = await reader.read()
                return reply.startswith(b"HTTP/1.1 200") and json.loads(
                    reply.partition(b"\r\n\r\n")[2])["APIVersion"] == 1
            finally:
                writer.close()

        async def hostile(rng: random.Random) -> bool:
            return await fire(port, [solar_api.request(rng)])

        try:
            return await _rounds(Link(hostile, good, lambda: dev.server.counters["errored"]), quick, 4)
        finally:
            await dev.stop()

    return _run(body)


# ------------------------------------------------------------------------------------------------ DLMS/COSEM
def _dlms(quick: bool, on_hdlc: bool) -> ProbeResult:
    from devices import registry
    from devices.base import Address
    from devices.meter.driver import DlmsHdlcDriver, DlmsTcpDriver
    from devices.meter.virtual import VirtualMeter

    fam = registry.family("meter")

    async def body() -> ProbeResult:
        meter = VirtualMeter(fam, fam.parse_config({}), device_id="probe")
        tcp, hdlc_address = await meter.start(), await meter.start_hdlc()
        await meter.advance(0, 60, {"point_p_w": 42.0})
        address, cls = (hdlc_address, DlmsHdlcDriver) if on_hdlc else (tcp, DlmsTcpDriver)
        port = meter.hdlc.port if on_hdlc else meter.wrapper.port
        chunk = dlms_inputs.hdlc_chunk if on_hdlc else dlms_inputs.wrapper_chunk

        async def good() -> bool:  # a whole association and a read, as a fresh client does
            async with cls(Address.parse(address), fam.capabilities(meter.cfg)) as d:
                return (await d.read()).values["p_w"] == 42.0

        async def hostile(rng: random.Random) -> bool:
            return await fire(port, [chunk(rng) for _ in range(rng.randint(1, 4))])

        try:
            return await _rounds(Link(hostile, good), quick, 5 + on_hdlc)
        finally:
            await meter.stop()

    return _run(body)


def probe_dlms_tcp(quick: bool) -> ProbeResult:
    return _dlms(quick, on_hdlc=False)


def probe_dlms_hdlc(quick: bool) -> ProbeResult:
    return _dlms(quick, on_hdlc=True)


# ------------------------------------------------------------------------------------------------ IEC 61850
def probe_iec61850(quick: bool) -> ProbeResult:
    from devices import registry
    from devices.base import Address
    from devices.energy_router.driver import Iec61850Driver
    from devices.energy_router.virtual import VirtualEnergyRouter

    fam = registry.family("energy_router")

    async def body() -> ProbeResult:
        device = VirtualEnergyRouter(fam, fam.parse_config({}), device_id="probe")
        address = await device.start()
        await device.advance(0, 60, {"pv_w_per_kwp": 300.0})

        async def good() -> bool:
            async with Iec61850Driver(Address.parse(address), fam.capabilities(device.cfg)) as d:
                return "pv_p_w" in (await d.read()).values

        async def hostile(rng: random.Random) -> bool:
            return await fire(device.port, mms_inputs.connection(rng))

        try:
            return await _rounds(Link(hostile, good), quick, 7)
        finally:
            await device.stop()

    return _run(body)
