"""Hostile peers on the socketcand CAN link (the LiBal BMS): against the virtual bus server, and a misbehaving bus
against the libal driver. The server lives and keeps serving, answers with socketcand's own ``< error ... >``,
counts every rejection; the driver raises only typed errors and recovers."""

from __future__ import annotations

import asyncio

import pytest
from hypothesis import given
from hypothesis import strategies as st

from benchmarks.hostile_inputs import socketcand
from devices import registry
from devices.base import Address, DeviceUnavailable, ProtocolError, SetpointRejected
from devices.io_loop import IoLoop
from devices.libal import can_codec
from devices.libal.driver import LibalDriver
from devices.libal.virtual import LibalVirtualDevice
from tests.conformance.harness_libal import CONFIG
from tests.hostile.byte_proxy import ByteProxy
from tests.hostile.campaign import examples, hostile

FAM = registry.family("libal")
TYPED = (DeviceUnavailable, ProtocolError, SetpointRejected)


@pytest.fixture(scope="module")
def rig():
    io = IoLoop("hostile-socketcand")
    dev = LibalVirtualDevice(FAM, FAM.parse_config(CONFIG), device_id="hostile", broadcast_period_s=0.2)
    dev.can_server.tcp.max_connections = 8
    dev.can_server.tcp.idle_timeout_s = 0.3
    io.run(dev.start(), 10)
    io.run(dev.advance(0, 60, {}), 10)
    yield io, dev
    io.run(dev.stop(), 10)
    io.close()


async def session(port: int, text: bytes, until: bytes | None = None) -> bytes:
    """Send ``text`` after the greeting; what the server said (up to ``until``, else until it closes)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        out = await asyncio.wait_for(reader.readexactly(6), 5)
        writer.write(text)
        await writer.drain()
        writer.write_eof()
        while (until is None or until not in out) and (more := await asyncio.wait_for(reader.read(4096), 5)):
            out += more
        return out
    finally:
        writer.close()


async def bus_opens(port: int) -> bool:
    out = await session(port, b"< open can0 >< rawmode >", until=b"< ok >< ok >")
    return out.startswith(b"< hi >< ok >< ok >")


ELEMENTS = st.sampled_from(socketcand.ELEMENTS)


@hostile(40, 1000)
@given(stream=st.one_of(st.binary(max_size=200), st.lists(ELEMENTS, max_size=20).map(b"".join)))
def test_random_element_streams_never_stop_the_bus(rig, stream):
    io, dev = rig
    io.run(session(dev.can_server.port, stream))
    assert dev.can_server.counters["errored"] == 0
    assert io.run(bus_opens(dev.can_server.port))


def test_rejections_get_socketcand_errors_and_are_counted(rig):
    io, dev = rig
    counters = dev.can_server.counters
    before = counters["rejected"]
    out = io.run(session(dev.can_server.port, b"< rawmode >< open can0 >< add 1 0 123 1 00 >< bogus >"))
    assert out.count(b"< error unknown command >") == 3 and b"< ok >" in out
    out = io.run(session(dev.can_server.port, b"< open can7 >"))
    assert b"< error could not open bus >" in out
    out = io.run(session(dev.can_server.port, b"\xff\xfe"))
    assert b"< error invalid input >" in out
    assert counters["rejected"] == before + 5


def test_half_open_peers_time_out_before_raw_mode_listeners_do_not_and_a_flood_is_capped(rig):
    io, dev = rig
    server = dev.can_server

    async def body():
        timed_out, refused = server.counters["timed_out"], server.counters["refused"]
        half = []
        for data in (b"", b"< open can0 >", b"< open ca"):
            reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
            writer.write(data)
            half.append((reader, writer))
        for reader, _ in half:
            await asyncio.wait_for(reader.read(), 5)  # the server hung up
        assert server.counters["timed_out"] >= timed_out + 3
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)  # a listener in RAW mode
        writer.write(b"< open can0 >< rawmode >")
        seen = b""
        while seen.count(b"< frame ") < 10:  # several idle timeouts' worth of broadcasts, still connected
            seen += await asyncio.wait_for(reader.read(4096), 5)
        writer.close()
        flood = [await asyncio.open_connection("127.0.0.1", server.port) for _ in range(examples(20, 200))]
        while server.open_connections() < 8:
            await asyncio.sleep(0.01)
        assert server.counters["refused"] >= refused + len(flood) - 8
        for _, w in flood + half:
            w.close()
        while server.open_connections():
            await asyncio.sleep(0.01)
        assert await bus_opens(server.port)

    io.run(body(), 30)


def _driver(dev: LibalVirtualDevice, can_port: int) -> LibalDriver:
    address = f"libal://127.0.0.1:{dev.rtu_server.port}/1?can=127.0.0.1:{can_port}&bms_stale_s=1"
    return LibalDriver(Address.parse(address), FAM.capabilities(FAM.parse_config(CONFIG)), timeout_s=0.3)


async def _recovers(drv: LibalDriver) -> float:
    for _ in range(6):  # malformed frames linger until the BMS broadcasts over them (every 0.2 s here)
        drv.backoff.retry_at = 0.0
        try:
            return (await drv.read())["soc"]
        except TYPED:
            await asyncio.sleep(0.2)
    drv.backoff.retry_at = 0.0
    return (await drv.read())["soc"]


@hostile(10, 200)
@given(frames=st.lists(st.tuples(st.sampled_from(can_codec.BROADCAST_ORDER), st.binary(max_size=8)),
                       min_size=1, max_size=6))
def test_a_node_sending_malformed_bms_frames_gives_typed_errors_then_recovery(rig, frames):
    io, dev = rig

    async def body():
        drv = _driver(dev, dev.can_server.port)
        node = await asyncio.open_connection("127.0.0.1", dev.can_server.port)
        try:
            await drv.connect()
            await asyncio.wait_for(node[0].readexactly(6), 5)
            text = "".join(f"< send {fid:03X} {len(data)}{''.join(f' {b:02X}' for b in data)} >" for fid, data in frames)
            node[1].write(b"< open can0 >< rawmode >" + text.encode())
            await node[1].drain()
            for _ in range(3):
                try:
                    await drv.read()
                except TYPED:
                    pass
            assert 0.0 <= await _recovers(drv) <= 1.0
        finally:
            node[1].close()
            await drv.close()

    io.run(body(), 60)


FAULTS = st.one_of(
    st.tuples(st.just("garbage"), st.sampled_from([b"< frame 356 1.5 ZZ >", b"< error boom >", b"\xff\x00",
                                                   b"< frame 351 0.0 0102030405060708090A >", b"<<<<"])),
    st.tuples(st.just("flip"), st.integers(0, 200)), st.tuples(st.just("truncate"), st.integers(0, 200)),
    st.tuples(st.just("close")))


@hostile(4, 150)
@given(faults=st.lists(FAULTS, min_size=1, max_size=4))
def test_a_misbehaving_bus_gives_typed_errors_then_recovery(rig, faults):
    io, dev = rig

    async def body():
        proxy = ByteProxy(dev.can_server.port)
        await proxy.start()
        drv = _driver(dev, proxy.port)
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
            assert 0.0 <= await _recovers(drv) <= 1.0
        finally:
            await drv.close()
            await proxy.stop()

    io.run(body(), 60)
