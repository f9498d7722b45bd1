"""A TCP proxy that turns a well-behaved virtual device into a misbehaving peer for a driver under test.

Requests pass through unchanged; each chunk the device sends back goes through ``proxy.fault`` first (None: passed
on). A fault is one of:

* ``("garbage", data)``  the reply is replaced by ``data``
* ``("flip", k)``        byte ``k % len`` of the reply is inverted
* ``("truncate", n)``    the first ``n`` bytes go out, then the connection closes
* ``("close",)``         the connection closes instead of replying
* ``("silent",)``        the reply is swallowed (the driver times out)
* ``("extra", data)``    the reply goes out followed by ``data`` (a reply the driver did not ask for)

Faults are taken from ``proxy.faults`` one per reply chunk until the list is empty, then everything passes.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

Fault = tuple


def apply_fault(fault: Fault, data: bytes) -> tuple[bytes, bool]:
    """(bytes to send, close afterwards)."""
    kind = fault[0]
    if kind == "garbage":
        return fault[1], False
    if kind == "flip":
        if not data:
            return data, False
        k = fault[1] % len(data)
        return data[:k] + bytes([data[k] ^ 0xFF]) + data[k + 1:], False
    if kind == "truncate":
        return data[:fault[1] % max(len(data), 1)], True
    if kind == "close":
        return b"", True
    if kind == "silent":
        return b"", False
    if kind == "extra":
        return data + fault[1], False
    raise ValueError(kind)


class ByteProxy:
    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self.faults: list[Fault] = []
        self.applied = 0
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._tasks: set[asyncio.Task] = set()
        self.port = 0

    def script(self, faults: Sequence[Fault]) -> None:
        self.faults = list(faults)

    async def start(self) -> int:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self.port

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
        for w in list(self._writers):
            w.close()
        for t in list(self._tasks):
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.upstream_port)
        except OSError:
            writer.close()
            return
        self._writers |= {writer, up_writer}

        async def pump_up() -> None:
            while data := await reader.read(65536):
                up_writer.write(data)
                await up_writer.drain()

        async def pump_down() -> None:
            while data := await up_reader.read(65536):
                close = False
                if self.faults:
                    data, close = apply_fault(self.faults.pop(0), data)
                    self.applied += 1
                if data:
                    writer.write(data)
                    await writer.drain()
                if close:
                    return

        tasks = [asyncio.ensure_future(pump_up()), asyncio.ensure_future(pump_down())]
        self._tasks.update(tasks)
        try:
            await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        except asyncio.CancelledError:
            pass
        finally:
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            self._tasks.difference_update(tasks)
            for w in (writer, up_writer):
                w.close()
                self._writers.discard(w)
