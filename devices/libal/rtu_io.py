"""Modbus RTU on the wire: a client over TCP (RTU framing on a socket) or a serial port, and a TCP slave server.

The client raises the framework's typed errors: DeviceUnavailable when the slave does not answer within
``timeout_s`` or the link is lost, ProtocolError (RtuFrameError) for a reply with a bad CRC, length, unit or
function, ModbusExceptionReply for an exception reply. After a timeout or a malformed reply the client resyncs
before its next request (TCP: a fresh connection; serial: the input buffer is flushed), so a late or partial
reply never gets mistaken for the next answer.

The server behaves like an RTU slave on a bus: a request with a bad CRC or for another unit id is ignored
(no reply; the master times out), broadcasts (unit 0) are executed without a reply.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from collections import Counter

from devices.base import DeviceUnavailable
from devices.serial_line import SerialLine, SerialPortLine, TcpLine, rtu_frame_gap_s
from devices.tcp_server import ServedConnection, TcpServer
from devices.libal import rtu

log = logging.getLogger(__name__)


class TcpRtuTransport(TcpLine):
    """RTU framing on a TCP socket (no MBAP header)."""

    def __init__(self, host: str, port: int) -> None:
        super().__init__(host, port, "rtu-over-tcp")


class SerialRtuTransport(SerialPortLine):
    """RS-485/RS-232 with RTU's inter-frame silence."""

    def __init__(self, port: str, baud: int = 19200, parity: str = "N", stopbits: int = 1) -> None:
        super().__init__(port, baud, "rtu-serial", parity=parity, stopbits=stopbits, frame_gap_s=rtu_frame_gap_s(baud))


class RtuClient:
    """One RTU master on one transport; callers serialize transactions (the driver holds a lock)."""

    def __init__(self, transport: SerialLine, unit: int, timeout_s: float) -> None:
        self.transport = transport
        self.unit = unit
        self.timeout_s = timeout_s
        self._dirty = False

    async def transaction(self, pdu: bytes) -> bytes:
        function = pdu[0]
        if self._dirty:
            await self.transport.resync(self.timeout_s)
            self._dirty = False
        deadline = time.monotonic() + self.timeout_s
        try:
            await self.transport.write(rtu.frame(self.unit, pdu))
            raw = await self.transport.read_exactly(2, deadline - time.monotonic())
            need = rtu.response_length(raw)
            if need is None:
                raw += await self.transport.read_exactly(1, deadline - time.monotonic())
                need = rtu.response_length(raw)
            assert need is not None
            raw += await self.transport.read_exactly(need - len(raw), deadline - time.monotonic())
            return rtu.parse_response(raw, self.unit, function)
        except TimeoutError as exc:
            self._dirty = True
            raise DeviceUnavailable(f"{self.transport.description}: no reply from unit {self.unit} within "
                                    f"{self.timeout_s:g} s") from exc
        except (ConnectionError, OSError) as exc:
            await self.transport.close()  # the link is gone; the owner reconnects
            raise DeviceUnavailable(f"{self.transport.description}: {exc}") from exc
        except rtu.ModbusExceptionReply:
            raise
        except rtu.RtuFrameError:
            self._dirty = True
            raise

    async def read_holding(self, address: int, count: int) -> list[int]:
        data = await self.transaction(rtu.read_holding_pdu(address, count))
        return rtu.registers_from(data, count)

    async def write_registers(self, address: int, values: list[int]) -> None:
        data = await self.transaction(rtu.write_multiple_pdu(address, values))
        if int.from_bytes(data[0:2], "big") != address or int.from_bytes(data[2:4], "big") != len(values):
            self._dirty = True
            raise rtu.RtuFrameError(f"write echo {data.hex()} does not match the request")


class RtuSlaveSession:
    """Bytes in, replies out: one RTU slave behind any stream (TCP connection, pty, serial line)."""

    def __init__(self, unit: int, slave: rtu.PcsSlave, server: RtuTcpServer | None = None) -> None:
        self.unit = unit
        self.slave = slave
        self.server = server
        self.framer = rtu.RequestFramer()

    def feed(self, data: bytes) -> list[bytes]:
        replies = []
        for raw in self.framer.feed(data):
            if not rtu.check_crc(raw):
                log.debug("RTU request with bad CRC ignored: %s", raw.hex())
                self._count("bad_crc")  # a slave on a bus stays silent; the master times out and resyncs
                self.framer.resync()
                break
            if raw[0] not in (0, self.unit):
                continue
            pdu = self.slave.handle(raw[1:-2])
            if pdu[0] & 0x80:
                self._count(rtu.EXCEPTION_NAMES.get(pdu[1], f"exception_{pdu[1]}").lower())
            response = rtu.frame(self.unit, pdu)
            if raw[0] == 0:
                continue  # broadcast: executed, never answered
            if self.server is not None:
                if self.server.silent:
                    continue
                if self.server.corrupt_next:
                    self.server.corrupt_next = False
                    response = response[:-1] + bytes([response[-1] ^ 0xFF])
            replies.append(response)
        return replies

    def _count(self, name: str) -> None:
        if self.server is not None:
            self.server.tcp.count(name)


class RtuTcpServer:
    """An RTU slave on a TCP port (RTU framing, no MBAP header), on the shared TCP server base."""

    def __init__(self, unit: int, slave: rtu.PcsSlave, *, max_connections: int = 16,
                 idle_timeout_s: float | None = 300.0) -> None:
        self.unit = unit
        self.slave = slave
        self.silent = False
        self.corrupt_next = False
        self.tcp = TcpServer(self._serve, name="rtu-over-tcp", max_connections=max_connections,
                             idle_timeout_s=idle_timeout_s)

    @property
    def port(self) -> int | None:
        return self.tcp.port or None

    @property
    def counters(self) -> Counter[str]:
        return self.tcp.counters

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> int:
        return await self.tcp.start(host, port)

    async def stop(self) -> None:
        await self.tcp.stop()

    def open_connections(self) -> int:
        return self.tcp.open_connections()

    async def _serve(self, conn: ServedConnection) -> None:
        session = RtuSlaveSession(self.unit, self.slave, self)
        while True:
            data = await conn.read(512)
            if not data:
                return
            for reply in session.feed(data):
                conn.writer.write(reply)
            await conn.writer.drain()


def serve_fd_forever(fd: int, session: RtuSlaveSession, stop: Callable[[], bool]) -> None:
    """Serve RTU on a raw file descriptor (a pty master in tests, a serial line); blocking, for a thread."""
    import os
    import select

    while not stop():
        ready, _, _ = select.select([fd], [], [], 0.05)
        if not ready:
            continue
        try:
            data = os.read(fd, 512)
        except OSError:
            return
        if not data:
            return
        for reply in session.feed(data):
            os.write(fd, reply)
