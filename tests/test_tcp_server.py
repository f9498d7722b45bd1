"""The TCP server base of the virtual devices: cap, idle timeout, clean stop, counters, a failing handler."""

from __future__ import annotations

import asyncio

import pytest

from devices.tcp_server import ServedConnection, TcpServer


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 20))


async def echo(conn: ServedConnection) -> None:
    while data := await conn.read(100):
        if data == b"boom":
            raise RuntimeError("a bug in one connection")
        await conn.send(data)


async def connect(port: int):
    return await asyncio.open_connection("127.0.0.1", port)


async def closed_by_server(reader: asyncio.StreamReader) -> bool:
    return await asyncio.wait_for(reader.read(10), 5) == b""


def test_serves_on_a_free_loopback_port_and_stop_closes_every_connection():
    async def body():
        server = TcpServer(echo, idle_timeout_s=None)
        port = await server.start()
        assert port > 0 and server.host == "127.0.0.1"
        peers = [await connect(port) for _ in range(3)]
        for reader, writer in peers:
            writer.write(b"hi")
            assert await reader.readexactly(2) == b"hi"
        assert server.open_connections() == 3
        await server.stop()
        for reader, writer in peers:
            assert await closed_by_server(reader)
            writer.close()
        assert server.open_connections() == 0 and server.counters["closed"] == 3
        with pytest.raises(OSError):
            await connect(port)
        await server.stop()  # twice is fine
    run(body())


def test_connections_beyond_the_cap_are_refused_and_counted():
    async def body():
        server = TcpServer(echo, max_connections=2, idle_timeout_s=None)
        port = await server.start()
        try:
            kept = [await connect(port) for _ in range(2)]
            for reader, writer in kept:  # both are being served
                writer.write(b"x")
                assert await reader.readexactly(1) == b"x"
            reader, writer = await connect(port)
            assert await closed_by_server(reader)
            writer.close()
            assert server.counters["refused"] == 1 and server.open_connections() == 2
            kept[0][1].close()
            while server.open_connections() > 1:
                await asyncio.sleep(0.01)
            reader, writer = await connect(port)  # a slot is free again
            writer.write(b"y")
            assert await reader.readexactly(1) == b"y"
            writer.close()
            kept[1][1].close()
        finally:
            await server.stop()
    run(body())


def test_a_half_open_peer_times_out_and_a_failing_handler_is_counted():
    async def body():
        server = TcpServer(echo, idle_timeout_s=0.2)
        port = await server.start()
        try:
            reader, writer = await connect(port)  # connects, then says nothing
            assert await closed_by_server(reader)
            writer.close()
            assert server.counters["timed_out"] == 1
            reader, writer = await connect(port)
            writer.write(b"boom")
            assert await closed_by_server(reader)
            writer.close()
            assert server.counters["errored"] == 1
            reader, writer = await connect(port)  # still serving
            writer.write(b"ok")
            assert await reader.readexactly(2) == b"ok"
            writer.close()
        finally:
            await server.stop()
    run(body())


def test_a_taken_port_is_an_os_error():
    async def body():
        first = TcpServer(echo)
        port = await first.start()
        try:
            with pytest.raises(OSError):
                await TcpServer(echo).start("127.0.0.1", port)
        finally:
            await first.stop()
    run(body())
