"""Hostile peers on SunSpec Modbus TCP: against the virtual Fronius server, and a misbehaving server against the
driver. The server lives and keeps serving, answers with Modbus's own exception codes, counts every rejection; the
driver raises only typed errors and recovers once the peer behaves."""

from __future__ import annotations

import asyncio
import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from benchmarks.hostile_inputs.modbus import UNSUPPORTED, mbap
from devices import registry
from devices.base import Address, DeviceUnavailable, ProtocolError, Setpoint, SetpointRejected
from devices.fronius.driver import SunSpecDriver
from devices.fronius.sunspec_map import BASE_ADDRESS, SUNS
from devices.fronius.virtual import FroniusSunSpecDevice
from devices.io_loop import IoLoop
from tests.hostile.byte_proxy import ByteProxy
from tests.hostile.campaign import examples, hostile

FAM = registry.family("fronius")
UNIT = 1
TYPED = (DeviceUnavailable, ProtocolError, SetpointRejected)


@pytest.fixture(scope="module")
def rig():
    io = IoLoop("hostile-sunspec")
    dev = FroniusSunSpecDevice(FAM, FAM.parse_config({}), device_id="hostile", max_connections=8,
                               idle_timeout_s=0.3)
    io.run(dev.start(), 10)
    io.run(dev.advance(0, 60, {"pv_w_per_kwp": 300.0, "site_load_w": 500.0}), 10)
    yield io, dev
    io.run(dev.stop(), 10)
    io.close()


async def exchange(port: int, data: bytes, *, read_reply: bool = True, eof: bool = False) -> bytes | None:
    """Send raw bytes on a fresh connection (then half-close it with ``eof``); the reply (MBAP + PDU), or None if
    the server closed instead."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(data)
        await writer.drain()
        if eof:
            writer.write_eof()
        if not read_reply:
            return None
        try:
            header = await asyncio.wait_for(reader.readexactly(7), 2)
            length = struct.unpack(">H", header[4:6])[0]
            return header + await asyncio.wait_for(reader.readexactly(length - 1), 2)
        except asyncio.IncompleteReadError:
            return None
    finally:
        writer.close()


async def suns_readable(port: int) -> bool:
    reply = await exchange(port, mbap(struct.pack(">BHH", 3, BASE_ADDRESS, 2)))
    return reply is not None and struct.unpack(">2H", reply[9:13]) == SUNS


def storage_state(dev: FroniusSunSpecDevice) -> tuple:
    b = dev.fbank
    return (b.stor_ctl_mod[0], b.in_w_rte_pct[0], b.out_w_rte_pct[0], b.min_rsv_pct[0], b.cha_gri_set[0])


@hostile(25, 500)
@given(function=st.sampled_from(UNSUPPORTED), body=st.binary(max_size=40))
def test_every_unsupported_function_is_illegal_function_and_writes_nothing(rig, function, body):
    io, dev = rig
    before, count = storage_state(dev), dev.server.counters["illegal_function"]
    storage = dev.map.addr[124]
    body = body or struct.pack(">HHHB2H", storage, 2, 0, 4, 0xFF, 0xFF)  # shaped like a write into model 124
    reply = io.run(exchange(dev.port, mbap(bytes([function]) + body)))
    assert reply is not None and reply[7:] == bytes([function | 0x80, 0x01])
    assert dev.server.counters["illegal_function"] == count + 1
    assert storage_state(dev) == before


@pytest.mark.parametrize("function, quantity", [(3, 0), (3, 126), (3, 0xFFFF), (0x10, 0), (0x10, 124)])
def test_quantities_outside_the_protocol_limits_are_illegal_data_value(rig, function, quantity):
    io, dev = rig
    if function == 3:
        pdu = struct.pack(">BHH", 3, BASE_ADDRESS, quantity)
    else:
        # (124 registers would not fit an MBAP frame: the quantity says 124, the data is what fits)
        pdu = struct.pack(">BHHB", 0x10, dev.map.addr[124] + 2, quantity, (2 * quantity) & 0xFF) + b"\0" * min(
            2 * quantity, 200)
    reply = io.run(exchange(dev.port, mbap(pdu)))
    assert reply is not None and reply[7:] == bytes([function | 0x80, 0x03])
    assert io.run(suns_readable(dev.port))


@hostile(40, 1000)
@given(frame=st.one_of(
    st.binary(min_size=1, max_size=300),
    st.builds(lambda pdu, unit, pid: struct.pack(">HHHB", 1, pid, len(pdu) + 1, unit) + pdu,
              st.binary(min_size=1, max_size=260), st.integers(0, 255), st.sampled_from([0, 0, 1, 0xFFFF]))))
def test_random_frames_get_an_exception_or_a_closed_connection_and_the_server_keeps_serving(rig, frame):
    io, dev = rig
    errored = dev.server.counters["errored"]
    reply = io.run(exchange(dev.port, frame, eof=True))
    if reply is not None and reply[7] & 0x80:
        assert reply[8] in (0x01, 0x02, 0x03, 0x0B)
    assert dev.server.counters["errored"] == errored  # no handler crashed
    assert io.run(suns_readable(dev.port))


def test_half_open_connections_time_out_and_a_flood_is_capped(rig):
    io, dev = rig

    async def body():
        timed_out, refused = dev.server.counters["timed_out"], dev.server.counters["refused"]
        half = []
        for data in (b"", b"\x00\x01\x00", mbap(b"\x03\x9c\x40")[:9]):  # silent, half a header, half a PDU
            reader, writer = await asyncio.open_connection("127.0.0.1", dev.port)
            writer.write(data)
            half.append((reader, writer))
        for reader, _ in half:
            assert await asyncio.wait_for(reader.read(), 5) == b""  # the server hung up
        assert dev.server.counters["timed_out"] >= timed_out + 3
        flood = [await asyncio.open_connection("127.0.0.1", dev.port) for _ in range(examples(20, 200))]
        while dev.open_connections() < 8:
            await asyncio.sleep(0.01)
        assert dev.server.counters["refused"] >= refused + len(flood) - 8
        for _, writer in flood + half:
            writer.close()
        while dev.open_connections():
            await asyncio.sleep(0.01)
        assert await suns_readable(dev.port)

    io.run(body(), 30)


class ServerUnderSequences(RuleBasedStateMachine):
    """Interleaved good and bad requests on one long connection and on fresh ones: state stays consistent."""

    def __init__(self) -> None:
        super().__init__()
        self.io, self.dev = RIG
        self.conn = self.io.run(asyncio.open_connection("127.0.0.1", self.dev.port))
        self.tid = 0
        self.expected_mod = self.dev.fbank.stor_ctl_mod[0]

    def _send(self, pdu: bytes, unit: int = UNIT) -> bytes | None:
        reader, writer = self.conn
        self.tid += 1

        async def go() -> bytes | None:
            writer.write(mbap(pdu, unit, self.tid))
            await writer.drain()
            header = await asyncio.wait_for(reader.readexactly(7), 2)
            assert struct.unpack(">H", header[:2])[0] == self.tid
            return await asyncio.wait_for(reader.readexactly(struct.unpack(">H", header[4:6])[0] - 1), 2)

        return self.io.run(go())

    @rule(function=st.sampled_from(UNSUPPORTED), body=st.binary(max_size=12))
    def unsupported(self, function, body):
        assert self._send(bytes([function]) + body) == bytes([function | 0x80, 1])

    @rule(mod=st.integers(0, 5))
    def write_mode(self, mod):
        reply = self._send(struct.pack(">BHH", 6, self.dev.map.addr[124] + 5, mod))
        if mod <= 3:
            assert reply == struct.pack(">BHH", 6, self.dev.map.addr[124] + 5, mod)
            self.expected_mod = mod
        else:
            assert reply == bytes([0x86, 3])

    @rule(address=st.integers(0, 0xFFFF), count=st.integers(0, 130))
    def read(self, address, count):
        reply = self._send(struct.pack(">BHH", 3, address, count))
        assert reply[0] == 3 or reply in (bytes([0x83, 2]), bytes([0x83, 3]))

    @rule(unit=st.integers(0, 255).filter(lambda u: u != UNIT))
    def other_unit(self, unit):
        assert self._send(struct.pack(">BHH", 3, BASE_ADDRESS, 2), unit) == bytes([0x83, 0x0B])

    @rule(junk=st.binary(min_size=1, max_size=20))
    def junk_on_a_fresh_connection(self, junk):
        self.io.run(exchange(self.dev.port, junk, eof=True))

    @invariant()
    def mode_is_what_was_written_and_the_server_serves(self):
        assert self.dev.fbank.stor_ctl_mod[0] == self.expected_mod
        assert self.dev.server.counters["errored"] == 0

    def teardown(self) -> None:
        self.conn[1].close()


RIG: tuple = ()


def test_stateful_sequences(rig):
    global RIG
    RIG = rig
    ServerUnderSequences.TestCase.settings = hostile(10, 200, stateful_step_count=examples(15, 60))
    ServerUnderSequences.TestCase().runTest()
    assert rig[0].run(suns_readable(rig[1].port))


FAULTS = st.one_of(
    st.tuples(st.just("garbage"), st.binary(max_size=30)), st.tuples(st.just("flip"), st.integers(0, 300)),
    st.tuples(st.just("truncate"), st.integers(0, 300)), st.tuples(st.just("close")),
    st.tuples(st.just("extra"), st.binary(min_size=1, max_size=12)))


@hostile(15, 300)
@given(faults=st.lists(FAULTS, min_size=1, max_size=6), write=st.booleans())
def test_the_driver_raises_only_typed_errors_and_recovers(rig, faults, write):
    io, dev = rig

    async def body():
        proxy = ByteProxy(dev.port)
        await proxy.start()
        drv = SunSpecDriver(Address.parse(f"sunspec+tcp://127.0.0.1:{proxy.port}/1"),
                            FAM.capabilities(FAM.parse_config({})), timeout_s=0.3)
        try:
            await drv.connect()
            proxy.script(faults)
            for _ in range(len(faults) + 1):
                drv.backoff.retry_at = 0.0
                try:
                    if write:
                        await drv.write(Setpoint({"batt_p_w": 500.0}))
                    else:
                        await drv.read()
                except TYPED:
                    pass
            proxy.script([])
            drv.backoff.retry_at = 0.0
            for _ in range(2):  # one call may still meet a stale reply the faults left behind
                try:
                    m = await drv.read()
                    break
                except TYPED:
                    drv.backoff.retry_at = 0.0
            else:
                m = await drv.read()
            assert 0.0 <= m["soc"] <= 1.0
        finally:
            await drv.close()
            await proxy.stop()

    io.run(body(), 60)


def test_the_driver_recovers_from_a_silent_device(rig):
    io, dev = rig

    async def body():
        proxy = ByteProxy(dev.port)
        await proxy.start()
        drv = SunSpecDriver(Address.parse(f"sunspec+tcp://127.0.0.1:{proxy.port}/1"),
                            FAM.capabilities(FAM.parse_config({})), timeout_s=0.2)
        try:
            await drv.connect()
            proxy.script([("silent",)])
            with pytest.raises(DeviceUnavailable):
                await drv.read()
            drv.backoff.retry_at = 0.0
            assert 0.0 <= (await drv.read())["soc"] <= 1.0
        finally:
            await drv.close()
            await proxy.stop()

    io.run(body(), 30)
