"""Hostile peers on Modbus RTU over TCP (the LiBal PCS): against the virtual PCS server, and a misbehaving PCS
against the libal driver. The server lives and keeps serving, answers as an RTU slave does (exception codes, silence
for a bad CRC), counts every rejection; the driver raises only typed errors and recovers."""

from __future__ import annotations

import asyncio

import pytest
from hypothesis import given
from hypothesis import strategies as st

from devices import registry
from devices.base import Address, DeviceUnavailable, ProtocolError, Setpoint, SetpointRejected
from devices.io_loop import IoLoop
from devices.libal import rtu
from devices.libal.driver import LibalDriver
from devices.libal.virtual import LibalVirtualDevice
from tests.conformance.harness_libal import CONFIG
from tests.hostile.byte_proxy import ByteProxy
from tests.hostile.campaign import examples, hostile

FAM = registry.family("libal")
TYPED = (DeviceUnavailable, ProtocolError, SetpointRejected)
UNIT = 1


@pytest.fixture(scope="module")
def rig():
    io = IoLoop("hostile-rtu")
    dev = LibalVirtualDevice(FAM, FAM.parse_config(CONFIG), device_id="hostile")
    dev.rtu_server.tcp.max_connections = 8
    dev.rtu_server.tcp.idle_timeout_s = 0.3
    io.run(dev.start(), 10)
    io.run(dev.advance(0, 60, {}), 10)
    yield io, dev
    io.run(dev.stop(), 10)
    io.close()


async def exchange(port: int, data: bytes, expect: int | None = None) -> bytes:
    """Send raw bytes and half-close; everything the slave sent back (``expect`` bytes are enough)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(data)
        await writer.drain()
        writer.write_eof()
        out = b""
        while (expect is None or len(out) < expect) and (more := await asyncio.wait_for(reader.read(512), 5)):
            out += more
        return out
    finally:
        writer.close()


async def pcs_answers(port: int) -> bool:
    reply = await exchange(port, rtu.frame(UNIT, rtu.read_holding_pdu(0, 2)), 9)
    return len(reply) == 9 and rtu.check_crc(reply) and reply[1] == 3


@hostile(25, 500)
@given(function=st.integers(1, 0x7F).filter(lambda f: f not in (3, 6, 0x10)), body=st.binary(min_size=4, max_size=8))
def test_unsupported_functions_are_illegal_function_and_counted(rig, function, body):
    io, dev = rig
    # a function whose request length RTU framing knows must come whole (over TCP no silence ends a frame)
    body = body[:4] if function in (1, 2, 4, 5) else (body[:4] + b"\0" if function == 0x0F else body)
    before = (dev.rtu_server.counters["illegal_function"], list(dev.image.words))
    reply = io.run(exchange(dev.rtu_server.port, rtu.frame(UNIT, bytes([function]) + body), 5))
    assert reply == rtu.frame(UNIT, bytes([function | 0x80, 1]))
    assert dev.rtu_server.counters["illegal_function"] == before[0] + 1 and dev.image.words == before[1]


@pytest.mark.parametrize("pdu", [rtu.read_holding_pdu(0, 0), rtu.read_holding_pdu(0, 126),
                                 bytes([0x10, 0, 0, 0, 0, 0])])
def test_quantities_outside_the_limits_are_illegal_data_value(rig, pdu):
    io, dev = rig
    reply = io.run(exchange(dev.rtu_server.port, rtu.frame(UNIT, pdu), 5))
    assert reply == rtu.frame(UNIT, bytes([pdu[0] | 0x80, 3]))


@hostile(40, 1000)
@given(stream=st.one_of(st.binary(max_size=300),
                        st.lists(st.one_of(st.binary(max_size=12).map(lambda p: rtu.frame(UNIT, p)),
                                           st.binary(max_size=12)), max_size=6).map(b"".join)))
def test_random_streams_never_stop_the_slave(rig, stream):
    io, dev = rig
    io.run(exchange(dev.rtu_server.port, stream))
    assert dev.rtu_server.counters["errored"] == 0
    assert io.run(pcs_answers(dev.rtu_server.port))


def test_a_bad_crc_is_ignored_as_on_a_bus_and_counted(rig):
    io, dev = rig
    before = dev.rtu_server.counters["bad_crc"]
    good = rtu.frame(UNIT, rtu.read_holding_pdu(0, 2))
    assert io.run(exchange(dev.rtu_server.port, good[:-1] + bytes([good[-1] ^ 1]))) == b""
    assert dev.rtu_server.counters["bad_crc"] == before + 1


def test_half_open_connections_time_out_and_a_flood_is_capped(rig):
    io, dev = rig
    server = dev.rtu_server

    async def body():
        timed_out, refused = server.counters["timed_out"], server.counters["refused"]
        half = []
        for data in (b"", rtu.frame(UNIT, rtu.read_holding_pdu(0, 2))[:5]):
            reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
            writer.write(data)
            half.append((reader, writer))
        for reader, _ in half:
            assert await asyncio.wait_for(reader.read(), 5) == b""
        assert server.counters["timed_out"] >= timed_out + 2
        flood = [await asyncio.open_connection("127.0.0.1", server.port) for _ in range(examples(20, 200))]
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 10  # the server refuses the rest as it accepts them: wait for it, then assert
        while (server.open_connections() < 8 or server.counters["refused"] < refused + len(flood) - 8) \
                and loop.time() < deadline:
            await asyncio.sleep(0.01)
        assert server.counters["refused"] >= refused + len(flood) - 8
        for _, writer in flood + half:
            writer.close()
        while server.open_connections():
            await asyncio.sleep(0.01)
        assert await pcs_answers(server.port)

    io.run(body(), 30)


def patient(drv: LibalDriver) -> None:
    """From now on a correct reply may take as long as a busy machine needs: the short timeout only keeps the fault
    phase fast (a cut-short reply waits for it); recovery is judged by what arrives, not by how fast."""
    drv.timeout_s = 30.0
    if drv._rtu is not None:  # the RTU client took the timeout when it connected
        drv._rtu.timeout_s = 30.0


FAULTS = st.one_of(
    st.tuples(st.just("garbage"), st.binary(max_size=20)), st.tuples(st.just("flip"), st.integers(0, 100)),
    st.tuples(st.just("truncate"), st.integers(0, 100)), st.tuples(st.just("close")),
    st.tuples(st.just("extra"), st.binary(min_size=1, max_size=8)))


@hostile(15, 300)
@given(faults=st.lists(FAULTS, min_size=1, max_size=5), write=st.booleans())
def test_the_driver_raises_only_typed_errors_and_recovers(rig, faults, write):
    io, dev = rig

    async def body():
        proxy = ByteProxy(dev.rtu_server.port)
        await proxy.start()
        address = f"libal://127.0.0.1:{proxy.port}/1?can=127.0.0.1:{dev.can_server.port}"
        drv = LibalDriver(Address.parse(address), FAM.capabilities(FAM.parse_config(CONFIG)), timeout_s=0.3)
        try:
            await drv.connect()
            proxy.script(faults)
            for _ in range(len(faults) + 1):
                drv.backoff.retry_at = 0.0
                try:
                    if write:
                        await drv.write(Setpoint({"p_w": 0.0}))
                    else:
                        await drv.read()
                except TYPED:
                    pass
            proxy.script([])
            patient(drv)
            for _ in range(2):  # the first call after a fault may still resync
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

    io.run(body(), 300)
