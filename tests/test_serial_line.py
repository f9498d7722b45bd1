"""The shared serial line (devices/serial_line.py) behind Modbus RTU and HDLC: reads, deadlines, resync, errors."""

import asyncio

import pytest
from hypothesis import given, settings, strategies as st

from devices.base import DeviceUnavailable
from devices.serial_line import SerialPortLine, TcpLine, rtu_frame_gap_s


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 20))


@settings(max_examples=25, deadline=None)
@given(st.lists(st.binary(min_size=1, max_size=64), min_size=1, max_size=5))
def test_a_loopback_port_returns_exactly_what_was_written(chunks):
    async def body():
        line = SerialPortLine("loop://", 115200, "test")
        await line.open(1.0)
        try:
            for chunk in chunks:
                await line.write(chunk)
            data = b"".join(chunks)
            assert await line.read_exactly(len(data), 2.0) == data
            with pytest.raises(TimeoutError):
                await line.read(0.05)  # nothing left
        finally:
            await line.close()
        assert not line.is_open
    run(body())


def test_resync_drops_a_late_answer_on_a_port():
    async def body():
        line = SerialPortLine("loop://", 9600, "test", frame_gap_s=rtu_frame_gap_s(9600))
        await line.open(1.0)
        await line.write(b"late reply")
        await line.resync(1.0)
        with pytest.raises(TimeoutError):
            await line.read_exactly(1, 0.05)
        await line.write(b"\x01")
        assert await line.read(1.0) == b"\x01"
        await line.close()
    run(body())


def test_a_port_that_cannot_be_opened_is_device_unavailable_and_io_on_a_closed_line_is_a_connection_error():
    async def body():
        line = SerialPortLine("/nonexistent/tty-s4g", 9600, "meter")
        with pytest.raises(DeviceUnavailable, match="meter /nonexistent/tty-s4g 9600 8N1: cannot open"):
            await line.open(0.5)
        with pytest.raises(ConnectionError):
            await line.write(b"x")
        with pytest.raises(ConnectionError):
            await TcpLine("127.0.0.1", 1, "t").read(0.1)
    run(body())


def test_a_tcp_line_reads_exactly_and_resync_opens_a_fresh_connection():
    async def body():
        connections = []

        async def serve(reader, writer):
            connections.append(writer)
            writer.write(b"abcdef")
            await writer.drain()
            await reader.read()  # hold until the client leaves
            writer.close()
        server = await asyncio.start_server(serve, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        line = TcpLine("127.0.0.1", port, "rtu-over-tcp")
        await line.open(1.0)
        assert await line.read_exactly(4, 1.0) == b"abcd"
        await line.resync(1.0)  # "ef" belonged to the old connection
        assert await line.read_exactly(6, 1.0) == b"abcdef"
        assert len(connections) == 2
        await line.close()
        server.close()
        await server.wait_closed()
    run(body())


def test_a_tcp_line_closed_by_the_device_is_a_connection_error():
    async def body():
        async def serve(reader, writer):
            writer.write(b"ab")
            await writer.drain()
            writer.close()
        server = await asyncio.start_server(serve, "127.0.0.1", 0)
        line = TcpLine("127.0.0.1", server.sockets[0].getsockname()[1], "t")
        await line.open(1.0)
        with pytest.raises(ConnectionError, match="closed by the device"):
            await line.read_exactly(3, 1.0)
        await line.close()
        server.close()
        await server.wait_closed()
    run(body())


def test_rtu_frame_gap_is_three_and_a_half_characters_up_to_19200_baud():
    assert rtu_frame_gap_s(9600) == pytest.approx(3.5 * 11 / 9600)
    assert rtu_frame_gap_s(115200) == 0.00175
