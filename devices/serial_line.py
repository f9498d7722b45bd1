"""A serial line as a byte stream: RS-232/RS-485 through pyserial, or the same framing tunnelled over TCP.

The protocols that run on a serial line (Modbus RTU for the LiBal inverter, HDLC for the meter) frame their own
bytes; what they need from the line is the same: open with a timeout, write, read what arrives or exactly ``n``
bytes within a deadline, and resynchronise after a timeout or a malformed frame so a late answer is never taken
for the next one. A real port is resynchronised by waiting for the line to fall silent and flushing its input
buffer; a TCP tunnel by a fresh connection.

Errors: ``TimeoutError`` when nothing (or too little) arrives in time, ``ConnectionError`` when the link is gone;
:class:`~devices.base.DeviceUnavailable` when it cannot be opened. The protocol clients turn these into their own
typed errors.
"""

from __future__ import annotations

import abc
import asyncio
import time
from typing import Any, cast

from devices.base import DeviceUnavailable
from devices.streams import close_stream, open_stream


class SerialLine(abc.ABC):
    description: str = ""

    @abc.abstractmethod
    async def open(self, timeout_s: float) -> None: ...

    @abc.abstractmethod
    async def close(self) -> None: ...

    @abc.abstractmethod
    async def write(self, data: bytes) -> None: ...

    @abc.abstractmethod
    async def read(self, timeout_s: float) -> bytes:
        """Some bytes (at least one)."""

    @abc.abstractmethod
    async def read_exactly(self, n: int, timeout_s: float) -> bytes: ...

    @abc.abstractmethod
    async def resync(self, timeout_s: float) -> None:
        """Drop whatever is in flight, so the next read starts with the next answer."""

    @property
    @abc.abstractmethod
    def is_open(self) -> bool: ...


class TcpLine(SerialLine):
    """The line's bytes on a TCP socket (a serial-to-Ethernet gateway, or a virtual device on loopback)."""

    def __init__(self, host: str, port: int, label: str) -> None:
        self.host, self.port = host, port
        self.description = f"{label} {host}:{port}"
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None

    @property
    def is_open(self) -> bool:
        return self._writer is not None and not self._writer.is_closing()

    async def open(self, timeout_s: float) -> None:
        self._reader, self._writer = await open_stream(self.host, self.port, timeout_s, self.description)

    async def close(self) -> None:
        writer, self._writer, self._reader = self._writer, None, None
        await close_stream(writer)

    async def write(self, data: bytes) -> None:
        if self._writer is None:
            raise ConnectionError("not connected")
        self._writer.write(data)
        await self._writer.drain()

    def _connected_reader(self) -> asyncio.StreamReader:
        if self._reader is None:
            raise ConnectionError("not connected")
        return self._reader

    async def read(self, timeout_s: float) -> bytes:
        data = await asyncio.wait_for(self._connected_reader().read(4096), max(timeout_s, 0.0))
        if not data:
            raise ConnectionError("connection closed by the device")
        return data

    async def read_exactly(self, n: int, timeout_s: float) -> bytes:
        try:
            return await asyncio.wait_for(self._connected_reader().readexactly(n), max(timeout_s, 0.0))
        except asyncio.IncompleteReadError as exc:
            raise ConnectionError("connection closed by the device") from exc

    async def resync(self, timeout_s: float) -> None:
        await self.close()
        await self.open(timeout_s)


class SerialPortLine(SerialLine):
    """A serial port through pyserial (any of its URLs: a device path, ``rfc2217://``, ``loop://``); its
    blocking calls run in a worker thread so the event loop stays free.

    ``frame_gap_s``: the silence a protocol needs between frames (Modbus RTU: 3.5 character times); writes wait
    for it after the last byte seen, and resync waits for it before flushing.
    """

    def __init__(self, port: str, baud: int, label: str, *, parity: str = "N", stopbits: int = 1,
                 frame_gap_s: float = 0.0) -> None:
        self.port, self.baud, self.parity, self.stopbits = port, baud, parity.upper(), stopbits
        self.frame_gap_s = frame_gap_s
        self.description = f"{label} {port} {baud} 8{self.parity}{stopbits}"
        self._serial: Any = None  # a serial.Serial (pyserial ships no type information)
        self._last_io = 0.0

    @property
    def is_open(self) -> bool:
        return self._serial is not None and self._serial.is_open

    def _port(self) -> Any:
        if self._serial is None:
            raise ConnectionError("serial port not open")
        return self._serial

    async def open(self, timeout_s: float) -> None:
        import serial  # pyserial, only needed for serial lines

        try:
            self._serial = await asyncio.wait_for(asyncio.to_thread(
                serial.serial_for_url, self.port, baudrate=self.baud, bytesize=8, parity=self.parity,
                stopbits=self.stopbits, timeout=0, write_timeout=timeout_s), timeout_s)
        except (OSError, ValueError, TimeoutError, serial.SerialException) as exc:
            raise DeviceUnavailable(f"{self.description}: cannot open: {exc or 'timeout'}") from exc

    async def close(self) -> None:
        ser, self._serial = self._serial, None
        if ser is not None:
            await asyncio.to_thread(ser.close)

    async def write(self, data: bytes) -> None:
        ser = self._port()
        gap = self._last_io + self.frame_gap_s - time.monotonic()
        if gap > 0:
            await asyncio.sleep(gap)
        try:
            await asyncio.to_thread(ser.write, data)
        except Exception as exc:  # pyserial raises several types
            raise ConnectionError(f"serial write failed: {exc}") from exc
        self._last_io = time.monotonic()

    async def _blocking_read(self, want: int | None, timeout_s: float) -> bytes:
        """``want`` bytes exactly, or (None) whatever arrives first."""
        ser = self._port()
        deadline = time.monotonic() + timeout_s

        def _read() -> bytes:
            out = b""
            while not out or (want is not None and len(out) < want):
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError
                ser.timeout = min(left, 0.05)
                out += cast(bytes, ser.read(want - len(out) if want is not None else max(1, ser.in_waiting)))
            return out
        try:
            data = await asyncio.to_thread(_read)
        except TimeoutError:
            raise
        except Exception as exc:
            raise ConnectionError(f"serial read failed: {exc}") from exc
        self._last_io = time.monotonic()
        return data

    async def read(self, timeout_s: float) -> bytes:
        return await self._blocking_read(None, timeout_s)

    async def read_exactly(self, n: int, timeout_s: float) -> bytes:
        return await self._blocking_read(n, timeout_s) if n > 0 else b""

    async def resync(self, timeout_s: float) -> None:
        if self._serial is not None:
            await asyncio.sleep(self.frame_gap_s)
            await asyncio.to_thread(self._serial.reset_input_buffer)


def rtu_frame_gap_s(baud: int) -> float:
    """Modbus RTU's inter-frame silence: 3.5 character times of 11 bits, fixed at 1.75 ms above 19200 baud."""
    return 3.5 * 11 / baud if baud <= 19200 else 0.00175
