"""A strict, small Modbus TCP client (holding registers only): what the SunSpec driver needs, typed errors.

One request at a time per connection (the caller serializes). Every reply is checked against its request:
MBAP protocol id 0, matching transaction and unit id, a length that fits, the function code or its exception
form, and the byte count / echoed fields. Anything else is a :class:`~devices.base.ProtocolError` and the
connection is dropped, because the stream can no longer be trusted. A Modbus exception reply is a valid frame:
it raises :class:`ModbusException` (a ProtocolError carrying the code) and keeps the connection. A timeout,
a refused, reset or closed connection is :class:`~devices.base.DeviceUnavailable`.
"""

from __future__ import annotations

import asyncio
import ssl as ssl_module
import struct
from typing import cast

from devices.base import DeviceUnavailable, ProtocolError
from devices.streams import close_stream, open_stream

READ_HOLDING, WRITE_SINGLE, WRITE_MULTIPLE = 0x03, 0x06, 0x10
MAX_READ, MAX_WRITE = 125, 123
EXCEPTION_NAMES = {
    0x01: "ILLEGAL_FUNCTION", 0x02: "ILLEGAL_DATA_ADDRESS", 0x03: "ILLEGAL_DATA_VALUE",
    0x04: "SERVER_DEVICE_FAILURE", 0x05: "ACKNOWLEDGE", 0x06: "SERVER_DEVICE_BUSY", 0x08: "MEMORY_PARITY_ERROR",
    0x0A: "GATEWAY_PATH_UNAVAILABLE", 0x0B: "GATEWAY_TARGET_DEVICE_FAILED_TO_RESPOND",
}


class ModbusException(ProtocolError):
    """The device answered with a Modbus exception response."""

    def __init__(self, function: int, code: int) -> None:
        self.function = function
        self.code = code
        self.name = EXCEPTION_NAMES.get(code, f"EXCEPTION_{code:#04x}")
        super().__init__(f"function {function:#04x}: Modbus exception {code:#04x} {self.name}")


# -- codec (pure) ------------------------------------------------------------------------------------------------


def read_request(address: int, count: int) -> bytes:
    if not (0 <= address <= 0xFFFF and 1 <= count <= MAX_READ and address + count <= 0x10000):
        raise ValueError(f"cannot read {count} registers at {address}")
    return struct.pack(">BHH", READ_HOLDING, address, count)


def write_single_request(address: int, value: int) -> bytes:
    if not (0 <= address <= 0xFFFF and 0 <= value <= 0xFFFF):
        raise ValueError(f"cannot write {value} at {address}")
    return struct.pack(">BHH", WRITE_SINGLE, address, value)


def write_multiple_request(address: int, values: list[int]) -> bytes:
    if not (0 <= address <= 0xFFFF and 1 <= len(values) <= MAX_WRITE and address + len(values) <= 0x10000):
        raise ValueError(f"cannot write {len(values)} registers at {address}")
    if any(not 0 <= v <= 0xFFFF for v in values):
        raise ValueError(f"register values must be 0..65535: {values}")
    return struct.pack(f">BHHB{len(values)}H", WRITE_MULTIPLE, address, len(values), 2 * len(values), *values)


def frame(transaction: int, unit: int, pdu: bytes) -> bytes:
    return struct.pack(">HHHB", transaction & 0xFFFF, 0, len(pdu) + 1, unit) + pdu


def parse_header(header: bytes, transaction: int, unit: int) -> int:
    """Check an MBAP header against the request; return how many PDU bytes follow."""
    if len(header) != 7:
        raise ProtocolError(f"MBAP header needs 7 bytes, got {len(header)}")
    tid, pid, length, uid = struct.unpack(">HHHB", header)
    if pid != 0:
        raise ProtocolError(f"MBAP protocol id {pid}, expected 0")
    if tid != transaction & 0xFFFF:
        raise ProtocolError(f"reply to transaction {tid}, expected {transaction & 0xFFFF}")
    if uid != unit:
        raise ProtocolError(f"reply from unit {uid}, expected {unit}")
    if not 2 <= length <= 254:
        raise ProtocolError(f"MBAP length {length} outside 2..254")
    return cast(int, length - 1)


def parse_reply(request: bytes, pdu: bytes) -> list[int]:
    """Check a reply PDU against its request PDU; registers for a read, [] for a write."""
    if not pdu:
        raise ProtocolError("empty reply PDU")
    function = request[0]
    if pdu[0] == function | 0x80:
        if len(pdu) != 2:
            raise ProtocolError(f"exception reply of {len(pdu)} bytes, expected 2")
        raise ModbusException(function, pdu[1])
    if pdu[0] != function:
        raise ProtocolError(f"reply function {pdu[0]:#04x} to request {function:#04x}")
    if function == READ_HOLDING:
        count = struct.unpack(">H", request[3:5])[0]
        if len(pdu) < 2 or pdu[1] != 2 * count or len(pdu) != 2 + 2 * count:
            raise ProtocolError(f"read of {count} registers answered with byte count "
                                f"{pdu[1] if len(pdu) > 1 else None} and {len(pdu) - 2} data bytes")
        return list(struct.unpack(f">{count}H", pdu[2:]))
    if pdu != request[:5]:  # both writes echo address and value / quantity
        raise ProtocolError(f"write echo {pdu.hex()} does not match request {request[:5].hex()}")
    return []


# -- client ----------------------------------------------------------------------------------------------------


class ModbusTcpClient:
    def __init__(self, host: str, port: int, unit: int, timeout_s: float, *,
                 ssl: ssl_module.SSLContext | None = None) -> None:
        self.host, self.port, self.unit, self.timeout_s = host, port, unit, timeout_s
        self.ssl = ssl  # Modbus/TCP Security: an ssl.SSLContext (devices.tls.client_context)
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._tid = 0

    @property
    def is_open(self) -> bool:
        return self._writer is not None

    async def open(self) -> None:
        self._reader, self._writer = await open_stream(self.host, self.port, self.timeout_s,
                                                       f"{self.host}:{self.port}", ssl=self.ssl)

    async def close(self) -> None:
        writer, self._writer, self._reader = self._writer, None, None
        await close_stream(writer)

    async def read_holding(self, address: int, count: int) -> list[int]:
        return await self._transact(read_request(address, count))

    async def write_register(self, address: int, value: int) -> None:
        await self._transact(write_single_request(address, value))

    async def write_registers(self, address: int, values: list[int]) -> None:
        await self._transact(write_multiple_request(address, values))

    async def _transact(self, request: bytes) -> list[int]:
        if self._reader is None or self._writer is None:
            raise DeviceUnavailable(f"{self.host}:{self.port}: not connected")
        self._tid = (self._tid + 1) & 0xFFFF
        try:
            async with asyncio.timeout(self.timeout_s):
                self._writer.write(frame(self._tid, self.unit, request))
                await self._writer.drain()
                header = await self._reader.readexactly(7)
                pdu = await self._reader.readexactly(parse_header(header, self._tid, self.unit))
            return parse_reply(request, pdu)
        except ModbusException:
            raise
        except ProtocolError:
            await self.close()
            raise
        except TimeoutError as exc:
            await self.close()
            raise DeviceUnavailable(f"{self.host}:{self.port}: no reply within {self.timeout_s:g} s") from exc
        except (OSError, asyncio.IncompleteReadError) as exc:  # ssl.SSLError included (a TLS alert)
            await self.close()
            raise DeviceUnavailable(f"{self.host}:{self.port}: connection lost: {exc!r}") from exc
