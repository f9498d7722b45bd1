"""Hostile peers on the Fronius Solar API (HTTP/JSON): against the virtual device's server, and a misbehaving server
against the fronius+http driver. The server lives, answers with an HTTP 4xx (or its own Status.Code), never a 500,
and counts every rejection; the driver raises only typed errors and recovers."""

from __future__ import annotations

import asyncio
import json
import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from benchmarks.hostile_inputs.solar_api import ABSURD_DEVICE_IDS, INVERTER, REQUEST_PARTS, get
from devices import registry
from devices.base import Address, DeviceUnavailable, ProtocolError, SetpointRejected
from devices.fronius.solar_api import FroniusSolarApiDevice
from devices.fronius.solar_api_driver import SolarApiDriver
from devices.io_loop import IoLoop
from tests.hostile.byte_proxy import ByteProxy
from tests.hostile.campaign import examples, hostile

FAM = registry.family("fronius")
TYPED = (DeviceUnavailable, ProtocolError, SetpointRejected)


@pytest.fixture(scope="module")
def rig():
    io = IoLoop("hostile-solar-api")
    dev = FroniusSolarApiDevice(FAM, FAM.parse_config({}), device_id="hostile")
    dev.server.tcp.max_connections = 8
    dev.server.tcp.idle_timeout_s = 0.3
    io.run(dev.start(), 10)
    io.run(dev.advance(0, 60, {"pv_w_per_kwp": 300.0, "site_load_w": 500.0}), 10)
    yield io, dev
    io.run(dev.stop(), 10)
    io.close()


async def http(port: int, data: bytes, *, eof: bool = True) -> tuple[int | None, bytes]:
    """Send raw bytes, half-close, read everything: (status or None if no response came, whole reply)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(data)
        await writer.drain()
        if eof:
            writer.write_eof()
        reply = await asyncio.wait_for(reader.read(1 << 20), 5)
        while more := await asyncio.wait_for(reader.read(1 << 20), 5):
            reply += more
    finally:
        writer.close()
    if not reply.startswith(b"HTTP/1.1 "):
        return None, reply
    return int(reply[9:12]), reply


async def api_version_ok(port: int) -> bool:
    status, reply = await http(port, get("/solar_api/GetAPIVersion.cgi"))
    return status == 200 and json.loads(reply.partition(b"\r\n\r\n")[2])["APIVersion"] == 1


def body_of(reply: bytes) -> dict:
    return json.loads(reply.partition(b"\r\n\r\n")[2])


@pytest.mark.parametrize("device_id", ABSURD_DEVICE_IDS)
def test_absurd_device_ids_get_a_4xx_with_the_api_error_body(rig, device_id):
    io, dev = rig
    rejected = dev.server.counters["rejected"]
    target = INVERTER + device_id
    if not target.isascii():
        target = INVERTER + "".join(f"%{b:02X}" for b in device_id.encode())
    status, reply = io.run(http(dev.server.port, get(target)))
    assert (status is not None and 400 <= status < 500) or (status == 200 and body_of(reply)["Head"]["Status"][
        "Code"] in (6, 12))
    if status != 200:
        assert body_of(reply)["Head"]["Status"]["Code"] == 6
    assert dev.server.counters["rejected"] == rejected + 1 and dev.server.counters["errored"] == 0
    assert io.run(api_version_ok(dev.server.port))


def test_a_long_but_plain_device_id_is_not_available():
    io = IoLoop("hostile-solar-api-plain")
    dev = FroniusSolarApiDevice(FAM, FAM.parse_config({}), device_id="x")
    try:
        io.run(dev.start(), 10)
        status, reply = io.run(http(dev.server.port, get(INVERTER + "1" * 40)))
        assert status == 200 and body_of(reply)["Head"]["Status"]["Code"] == 12
    finally:
        io.run(dev.stop(), 10)
        io.close()




@hostile(40, 1000)
@given(stream=st.one_of(st.binary(max_size=300), st.lists(st.sampled_from(REQUEST_PARTS), max_size=25).map(b"".join)))
def test_random_requests_get_a_response_or_a_closed_connection_never_a_500(rig, stream):
    io, dev = rig
    status, _ = io.run(http(dev.server.port, stream))
    assert status != 500 and (status is None or 200 <= status < 600)
    assert dev.server.counters["errored"] == 0
    assert io.run(api_version_ok(dev.server.port))


@hostile(15, 300)
@given(requests=st.lists(st.sampled_from([
    b"GET /solar_api/GetAPIVersion.cgi HTTP/1.1\r\nHost: t\r\n\r\n",
    b"GET /solar_api/v1/GetStorageRealtimeData.cgi?Scope=Everything HTTP/1.1\r\nHost: t\r\n\r\n",
    b"GET /nope HTTP/1.1\r\nHost: t\r\n\r\n", b"DELETE / HTTP/1.1\r\nHost: t\r\n\r\n",
    b"HEAD /solar_api/GetAPIVersion.cgi HTTP/1.1\r\nHost: t\r\n\r\n",
    b"GET /x HTTP/1.1\r\nHost: t\r\nContent-Length: 3\r\n\r\nabc"]), min_size=1, max_size=8))
def test_pipelined_keep_alive_sequences_are_answered_in_order(rig, requests):
    io, dev = rig
    _status, reply = io.run(http(dev.server.port, b"".join(requests)))
    expected = {b"GET /solar_api/GetAPIVersion.cgi": b"200", b"GET /solar_api/v1/GetStorageRealtimeData.cgi": b"200",
                b"GET /nope": b"404", b"DELETE /": b"405", b"HEAD /solar_api/GetAPIVersion.cgi": b"200",
                b"GET /x": b"404"}
    statuses = re.findall(rb"HTTP/1\.1 (\d{3}) ", reply)  # a body does not end in CRLF: search, not split
    assert statuses == [expected[r.split(b" HTTP/")[0].split(b"?")[0]] for r in requests]


def test_half_open_connections_time_out_and_a_flood_is_capped(rig):
    io, dev = rig

    async def body():
        counters = dev.server.counters
        timed_out, refused = counters["timed_out"], counters["refused"]
        half = []
        for data in (b"", b"GET /solar_api/GetAPIVersion.cgi HTTP/1.1\r\nHo"):  # silent, half a request head
            reader, writer = await asyncio.open_connection("127.0.0.1", dev.server.port)
            writer.write(data)
            half.append((reader, writer))
        for reader, _ in half:
            await asyncio.wait_for(reader.read(), 5)  # the server hung up (after a 4xx for the partial head)
        assert counters["timed_out"] >= timed_out + 2
        flood = [await asyncio.open_connection("127.0.0.1", dev.server.port) for _ in range(examples(20, 200))]
        while dev.server.open_connections() < 8:
            await asyncio.sleep(0.01)
        assert counters["refused"] >= refused + len(flood) - 8
        for _, writer in flood + half:
            writer.close()
        while dev.server.open_connections():
            await asyncio.sleep(0.01)
        assert await api_version_ok(dev.server.port)

    io.run(body(), 30)


FAULTS = st.one_of(
    st.tuples(st.just("garbage"), st.one_of(st.binary(max_size=40), st.sampled_from([
        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}", b"HTTP/1.1 200 OK\r\n\r\n[1,2",
        b"HTTP/1.1 500 Oops\r\nContent-Length: 0\r\n\r\n", b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nZZ\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\n" + b"[" * 9, b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nnull"]))),
    st.tuples(st.just("flip"), st.integers(0, 2000)), st.tuples(st.just("truncate"), st.integers(0, 2000)),
    st.tuples(st.just("close")), st.tuples(st.just("extra"), st.binary(min_size=1, max_size=20)))


@hostile(15, 300)
@given(faults=st.lists(FAULTS, min_size=1, max_size=6))
def test_the_driver_raises_only_typed_errors_and_recovers(rig, faults):
    io, dev = rig

    async def body():
        proxy = ByteProxy(dev.server.port)
        await proxy.start()
        drv = SolarApiDriver(Address.parse(f"fronius+http://127.0.0.1:{proxy.port}"),
                             FAM.capabilities(FAM.parse_config({})), timeout_s=0.3)
        try:
            await drv.connect()
            proxy.script(faults)
            for _ in range(len(faults) + 1):
                drv.backoff.retry_at = 0.0
                try:
                    await drv.read()
                except TYPED:
                    pass
            proxy.script([])
            for _ in range(2):  # one call may still meet what the faults left on the connection
                drv.backoff.retry_at = 0.0
                try:
                    m = await drv.read()
                    break
                except TYPED:
                    pass
            else:
                drv.backoff.retry_at = 0.0
                m = await drv.read()
            assert 0.0 <= m["soc"] <= 1.0
        finally:
            await drv.close()
            await proxy.stop()

    io.run(body(), 60)
