"""Modbus RTU of the LiBal PCS: CRC, framing (fuzzed), register map, slave rules, client errors, transports."""

import asyncio
import os
import threading

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pymodbus.framer.rtu import FramerRTU

from devices.base import DeviceUnavailable, ProtocolError
from devices.libal import rtu
from devices.libal.rtu_io import RtuClient, RtuSlaveSession, RtuTcpServer, SerialRtuTransport, TcpRtuTransport, \
    serve_fd_forever


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, timeout=30))


def slave() -> rtu.PcsSlave:
    image = rtu.RegisterImage()
    image.set("P_CHARGE_RATED_W", 50_000)
    image.set("P_DISCHARGE_RATED_W", 40_000)
    image.set("S_RATED_VA", 60_000)
    image.set("ETA_CHARGE", 0.96)
    return rtu.PcsSlave(image)


def test_crc_matches_the_spec_example_and_pymodbus():
    assert rtu.frame(1, bytes.fromhex("03 00 00 00 0A")) == bytes.fromhex("01 03 00 00 00 0A C5 CD")
    assert rtu.check_crc(bytes.fromhex("01 03 00 00 00 0A C5 CD"))
    assert not rtu.check_crc(bytes.fromhex("01 03 00 00 00 0A C5 CE"))


@given(st.binary(max_size=64))
def test_crc_equals_pymodbus_on_any_bytes(data):
    assert rtu.crc16(data).to_bytes(2, "little") == FramerRTU.compute_CRC(data).to_bytes(2, "big")


@given(st.sampled_from(list(rtu.REGS.values())), st.data())
def test_register_values_round_trip(reg, data):
    bits = 16 * reg.words
    lo, hi = (-(1 << (bits - 1)), (1 << (bits - 1)) - 1) if reg.signed else (0, (1 << bits) - 1)
    raw = data.draw(st.integers(lo, hi))
    assert reg.decode(reg.encode(raw * reg.scale)) == pytest.approx(raw * reg.scale)
    with pytest.raises(ValueError):
        reg.encode((hi + 1) * reg.scale)


def test_int32_is_high_word_first_and_signed():
    assert rtu.REGS["P_SET_W"].encode(-20_000) == [0xFFFF, 0xB1E0]
    assert rtu.REGS["P_SET_W"].decode([0xFFFF, 0xB1E0]) == -20_000


def test_slave_reads_and_writes_within_the_map():
    s = slave()
    reply = s.handle(rtu.read_holding_pdu(0, rtu.REGISTER_COUNT))
    assert reply[:2] == bytes([3, 80])
    values = rtu.decode_image([int.from_bytes(reply[2 + 2 * i:4 + 2 * i], "big") for i in range(40)])
    assert values["P_CHARGE_RATED_W"] == 50_000 and values["ETA_CHARGE"] == pytest.approx(0.96)
    ok = rtu.write_multiple_pdu(0, [1, 1, *rtu.REGS["P_SET_W"].encode(-50_000), 0, 0])
    assert s.handle(ok) == ok[:5]
    assert s.image.get("P_SET_W") == -50_000 and s.image.get("MODE") == 1
    assert s.handle(rtu.write_single_pdu(1, 0)) == rtu.write_single_pdu(1, 0)


@pytest.mark.parametrize("pdu, code", [
    (rtu.write_multiple_pdu(2, rtu.REGS["P_SET_W"].encode(-50_001)), rtu.ILLEGAL_DATA_VALUE),  # above charge rating
    (rtu.write_multiple_pdu(2, rtu.REGS["P_SET_W"].encode(40_001)), rtu.ILLEGAL_DATA_VALUE),
    (rtu.write_multiple_pdu(4, rtu.REGS["Q_SET_VAR"].encode(-60_001)), rtu.ILLEGAL_DATA_VALUE),
    (rtu.write_single_pdu(0, 2), rtu.ILLEGAL_DATA_VALUE),  # MODE 0/1 only
    (rtu.write_single_pdu(2, 0), rtu.ILLEGAL_DATA_ADDRESS),  # half of an int32
    (rtu.write_single_pdu(16, 0), rtu.ILLEGAL_DATA_ADDRESS),  # read-only
    (rtu.write_single_pdu(7, 0), rtu.ILLEGAL_DATA_ADDRESS),  # reserved
    (rtu.read_holding_pdu(30, 11), rtu.ILLEGAL_DATA_ADDRESS),  # past the end
    (rtu.read_holding_pdu(0, 0), rtu.ILLEGAL_DATA_VALUE),
    (bytes([0x2B, 0x0E, 0x01, 0x00]), rtu.ILLEGAL_FUNCTION),
    (bytes([0x10, 0, 0, 0, 2, 3, 0, 1, 0]), rtu.ILLEGAL_DATA_VALUE),  # byte count does not match quantity
])
def test_slave_refuses_with_the_modbus_exception(pdu, code):
    s = slave()
    before = list(s.image.words)
    assert s.handle(pdu) == bytes([pdu[0] | 0x80, code])
    assert s.image.words == before  # nothing written


@given(st.binary(max_size=300))
@settings(max_examples=500, deadline=None)
def test_slave_answers_any_pdu_with_data_or_an_exception(pdu):
    reply = slave().handle(pdu)
    if not pdu:
        assert reply == bytes([0x80, rtu.ILLEGAL_FUNCTION])
    elif reply[0] == pdu[0] | 0x80 and len(reply) == 2:
        assert reply[1] in rtu.EXCEPTION_NAMES
    else:
        assert reply[0] == pdu[0] and pdu[0] in (rtu.READ_HOLDING, rtu.WRITE_SINGLE, rtu.WRITE_MULTIPLE)


@given(st.lists(st.binary(max_size=40), max_size=6))
@settings(max_examples=300, deadline=None)
def test_server_session_survives_any_byte_stream(chunks):
    session = RtuSlaveSession(1, slave())
    for chunk in chunks:
        for reply in session.feed(chunk):
            assert rtu.check_crc(reply) and reply[0] == 1


@given(st.lists(st.sampled_from([rtu.read_holding_pdu(0, 40), rtu.read_holding_pdu(16, 4),
                                 rtu.write_single_pdu(1, 1), rtu.write_multiple_pdu(0, [1, 1, 0, 0])]),
                min_size=1, max_size=5), st.data())
@settings(max_examples=200, deadline=None)
def test_session_answers_every_valid_request_however_the_stream_is_cut(pdus, data):
    stream = b"".join(rtu.frame(1, p) for p in pdus)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=4)))
    session = RtuSlaveSession(1, slave())
    replies = []
    for a, b in zip([0, *cuts], [*cuts, len(stream)]):
        replies += session.feed(stream[a:b])
    assert len(replies) == len(pdus)
    assert [r[1] for r in replies] == [p[0] for p in pdus]


def test_session_ignores_bad_crc_other_units_and_broadcast_replies():
    session = RtuSlaveSession(1, slave())
    good = rtu.frame(1, rtu.read_holding_pdu(0, 2))
    assert session.feed(good[:-1] + bytes([good[-1] ^ 1])) == []
    assert session.feed(rtu.frame(2, rtu.read_holding_pdu(0, 2))) == []
    assert session.feed(rtu.frame(0, rtu.write_single_pdu(1, 1))) == []  # executed, not answered
    assert session.slave.image.get("ENABLE") == 1
    assert len(session.feed(good)) == 1


@given(st.binary(max_size=100), st.sampled_from([rtu.READ_HOLDING, rtu.WRITE_MULTIPLE]))
@settings(max_examples=500, deadline=None)
def test_response_parser_gives_data_or_a_typed_error(raw, function):
    try:
        n = rtu.response_length(raw)
        if n is not None:
            rtu.parse_response(raw[:n], 1, function)
    except (rtu.RtuFrameError, rtu.ModbusExceptionReply) as exc:
        assert isinstance(exc, ProtocolError)


@given(st.binary(min_size=4, max_size=90))
@settings(max_examples=300, deadline=None)
def test_a_response_with_a_valid_crc_but_garbage_is_still_refused_or_consistent(body):
    raw = body[:-2] + rtu.crc16(body[:-2]).to_bytes(2, "little")
    try:
        data = rtu.parse_response(raw, raw[0], rtu.READ_HOLDING)
    except (rtu.RtuFrameError, rtu.ModbusExceptionReply):
        return
    assert data[0] == len(data) - 1 and data[0] % 2 == 0


# -- client over TCP against our server and against pymodbus ------------------------------------------------
def test_client_errors_are_typed():
    async def body():
        s = slave()
        server = RtuTcpServer(1, s)
        port = await server.start()
        transport = TcpRtuTransport("127.0.0.1", port)
        await transport.open(1.0)
        client = RtuClient(transport, 1, timeout_s=0.3)
        assert len(await client.read_holding(0, 40)) == 40
        with pytest.raises(rtu.ModbusExceptionReply) as info:
            await client.write_registers(2, rtu.REGS["P_SET_W"].encode(-60_000))
        assert info.value.name == "ILLEGAL_DATA_VALUE"
        server.corrupt_next = True
        with pytest.raises(rtu.RtuFrameError, match="CRC"):
            await client.read_holding(0, 2)
        assert len(await client.read_holding(0, 2)) == 2  # resynced
        server.silent = True
        with pytest.raises(DeviceUnavailable, match="no reply"):
            await client.read_holding(0, 2)
        server.silent = False
        assert len(await client.read_holding(0, 2)) == 2
        other = RtuClient(transport, 7, timeout_s=0.2)  # nobody answers unit 7 on this bus
        with pytest.raises(DeviceUnavailable):
            await other.read_holding(0, 2)
        await server.stop()
        with pytest.raises(DeviceUnavailable):
            await client.read_holding(0, 2)
        await transport.close()
    run(body())


class _NoisyLine(TcpRtuTransport):
    """A line that corrupts the CRC of the next request (noise on the bus)."""

    corrupt = False

    async def write(self, data: bytes) -> None:
        if self.corrupt:
            self.corrupt = False
            data = data[:-1] + bytes([data[-1] ^ 0x55])
        await super().write(data)


def test_a_request_with_a_bad_crc_is_ignored_and_the_master_times_out():
    async def body():
        server = RtuTcpServer(1, slave())
        port = await server.start()
        transport = _NoisyLine("127.0.0.1", port)
        await transport.open(1.0)
        client = RtuClient(transport, 1, timeout_s=0.3)
        transport.corrupt = True
        with pytest.raises(DeviceUnavailable, match="no reply"):
            await client.write_registers(0, [1])
        assert server.slave.image.get("MODE") == 0  # the slave did not act on it
        await client.write_registers(0, [1])  # the next clean request works
        assert server.slave.image.get("MODE") == 1
        await transport.close()
        await server.stop()
    run(body())


def test_pymodbus_rtu_client_interoperates_with_our_slave():
    from pymodbus import FramerType
    from pymodbus.client import AsyncModbusTcpClient

    async def body():
        s = slave()
        server = RtuTcpServer(3, s)
        port = await server.start()
        client = AsyncModbusTcpClient("127.0.0.1", port=port, framer=FramerType.RTU, timeout=2, retries=0)
        await client.connect()
        rr = await client.read_holding_registers(32, count=8, device_id=3)
        assert not rr.isError() and rtu.decode_image(rr.registers, 32)["P_CHARGE_RATED_W"] == 50_000
        wr = await client.write_registers(0, [1, 1, *rtu.REGS["P_SET_W"].encode(-12_345)], device_id=3)
        assert not wr.isError() and s.image.get("P_SET_W") == -12_345
        bad = await client.write_registers(2, rtu.REGS["P_SET_W"].encode(99_999), device_id=3)
        assert bad.isError() and bad.exception_code == rtu.ILLEGAL_DATA_VALUE
        client.close()
        await server.stop()
    run(body())


def test_client_reads_a_pymodbus_rtu_server():
    from pymodbus import FramerType
    from pymodbus.datastore import ModbusDeviceContext, ModbusSequentialDataBlock, ModbusServerContext
    from pymodbus.server import ModbusTcpServer

    async def body():
        block = ModbusSequentialDataBlock(1, list(range(100, 150)))
        context = ModbusServerContext(devices={1: ModbusDeviceContext(hr=block)}, single=False)
        server = ModbusTcpServer(context, framer=FramerType.RTU, address=("127.0.0.1", 0))
        task = asyncio.create_task(server.serve_forever())
        while not server.transport:
            await asyncio.sleep(0.01)
        port = server.transport.sockets[0].getsockname()[1]
        transport = TcpRtuTransport("127.0.0.1", port)
        await transport.open(1.0)
        client = RtuClient(transport, 1, timeout_s=1.0)
        words = await client.read_holding(0, 10)
        await client.write_registers(0, [7, 8])
        after = await client.read_holding(0, 2)
        await transport.close()
        await server.shutdown()
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        return words, after
    words, after = run(body())
    assert words == list(range(100, 110)) and after == [7, 8]


def test_serial_transport_over_a_pty():
    master, slave_fd = os.openpty()
    path = os.ttyname(slave_fd)
    stop = threading.Event()
    s = slave()
    thread = threading.Thread(target=serve_fd_forever, args=(master, RtuSlaveSession(1, s), stop.is_set),
                              daemon=True)
    thread.start()

    async def body():
        transport = SerialRtuTransport(path, 19200)
        await transport.open(1.0)
        client = RtuClient(transport, 1, timeout_s=1.0)
        await client.write_registers(0, [1, 1, *rtu.REGS["P_SET_W"].encode(1000), 0, 0])
        words = await client.read_holding(0, 6)
        other = RtuClient(transport, 9, timeout_s=0.2)
        with pytest.raises(DeviceUnavailable):
            await other.read_holding(0, 1)
        await transport.close()
        return words
    try:
        words = run(body())
    finally:
        stop.set()
        thread.join(2)
        os.close(master)
        os.close(slave_fd)
    assert rtu.decode_image(words)["P_SET_W"] == 1000
