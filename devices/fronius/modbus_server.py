"""Modbus TCP server side for holding registers (what a Fronius serves), on the shared TCP server base.

Supported, as docs/devices/fronius.md lists them: 0x03 read holding registers, 0x06 write single register, 0x10
write multiple registers. Everything else follows the Modbus application protocol (V1.1b3, 6 and 7):

* another function code (0x01, 0x02, 0x04, 0x05, 0x08, 0x0F, 0x16, 0x17, 0x2B, ...) -> exception 0x01 ILLEGAL
  FUNCTION, nothing is read or written;
* a quantity outside 1..125 (read) or 1..123 (write), a byte count that does not match it, or a PDU of the wrong
  length -> 0x03 ILLEGAL DATA VALUE;
* an address range the store does not have -> 0x02 ILLEGAL DATA ADDRESS (the store decides, also 0x03 for a
  value it refuses);
* another unit id -> 0x0B GATEWAY TARGET DEVICE FAILED TO RESPOND.

An MBAP header with a protocol id other than 0 or a length outside 2..254 cannot be answered (the stream is out of
step): the connection is closed. Each exception reply and each closed stream is counted (``server.counters``).

Modbus/TCP Security (``tcp.start(..., ssl=...)``, port 802): the client's certificate role authorises it.
With ``write_roles`` set, a write (0x06, 0x10) from a role not in it is answered 0x01 ILLEGAL FUNCTION, as the
specification's authorisation rule says, and counted ``unauthorised``; reads are open to every verified client.
"""

from __future__ import annotations

import asyncio
import logging
import struct
from typing import Protocol
from collections.abc import Callable, Sequence
from collections import Counter

from devices.tcp_server import ServedConnection, TcpServer

log = logging.getLogger(__name__)

READ_HOLDING, WRITE_SINGLE, WRITE_MULTIPLE = 0x03, 0x06, 0x10
SUPPORTED = (READ_HOLDING, WRITE_SINGLE, WRITE_MULTIPLE)
ILLEGAL_FUNCTION, ILLEGAL_DATA_ADDRESS, ILLEGAL_DATA_VALUE = 0x01, 0x02, 0x03
SERVER_DEVICE_FAILURE, GATEWAY_NO_RESPONSE = 0x04, 0x0B
MAX_READ, MAX_WRITE = 125, 123
EXCEPTION_NAMES = {ILLEGAL_FUNCTION: "illegal_function", ILLEGAL_DATA_ADDRESS: "illegal_data_address",
                   ILLEGAL_DATA_VALUE: "illegal_data_value", SERVER_DEVICE_FAILURE: "server_device_failure",
                   GATEWAY_NO_RESPONSE: "gateway_no_response"}


class ModbusError(Exception):
    """Answer the request with this exception code."""

    def __init__(self, code: int, message: str = "") -> None:
        super().__init__(message or EXCEPTION_NAMES.get(code, hex(code)))
        self.code = code


class RegisterStore(Protocol):
    def read(self, address: int, count: int) -> list[int]:
        """``count`` registers from ``address``; ModbusError(0x02) outside the map."""

    def write(self, address: int, values: Sequence[int]) -> None:
        """Store all or nothing; ModbusError(0x02/0x03) when refused."""


def handle_pdu(store: RegisterStore, pdu: bytes) -> bytes:
    """The reply PDU to one request PDU (a normal reply or an exception reply); never raises."""
    function = pdu[0]
    try:
        if function not in SUPPORTED:
            raise ModbusError(ILLEGAL_FUNCTION)
        if function == READ_HOLDING:
            if len(pdu) != 5:
                raise ModbusError(ILLEGAL_DATA_VALUE, "read request of the wrong length")
            address, count = struct.unpack(">HH", pdu[1:5])
            if not 1 <= count <= MAX_READ:
                raise ModbusError(ILLEGAL_DATA_VALUE, f"quantity {count} outside 1..{MAX_READ}")
            if address + count > 0x10000:
                raise ModbusError(ILLEGAL_DATA_ADDRESS)
            regs = store.read(address, count)
            return struct.pack(f">BB{count}H", function, 2 * count, *regs)
        if function == WRITE_SINGLE:
            if len(pdu) != 5:
                raise ModbusError(ILLEGAL_DATA_VALUE, "write request of the wrong length")
            address, value = struct.unpack(">HH", pdu[1:5])
            store.write(address, [value])
            return pdu
        if len(pdu) < 6:
            raise ModbusError(ILLEGAL_DATA_VALUE, "write request of the wrong length")
        address, count, byte_count = struct.unpack(">HHB", pdu[1:6])
        if not 1 <= count <= MAX_WRITE or byte_count != 2 * count or len(pdu) != 6 + byte_count:
            raise ModbusError(ILLEGAL_DATA_VALUE, f"quantity {count} / byte count {byte_count} inconsistent")
        if address + count > 0x10000:
            raise ModbusError(ILLEGAL_DATA_ADDRESS)
        store.write(address, list(struct.unpack(f">{count}H", pdu[6:])))
        return pdu[:5]
    except ModbusError as exc:
        return bytes([(function | 0x80) & 0xFF, exc.code])


class ModbusTcpRegisterServer:
    """One unit's holding registers over Modbus TCP, with fault injection (silent, corrupt next reply)."""

    def __init__(self, store: RegisterStore, unit_id: int, *, max_connections: int = 16,
                 idle_timeout_s: float | None = 300.0,
                 corrupt: Callable[[bytes], bytes] | None = None,
                 write_roles: frozenset[str] | None = None) -> None:
        self.store = store
        #: roles allowed to write over TLS (None: whoever completed the handshake); ignored without TLS
        self.write_roles = write_roles
        self.unit_id = unit_id
        self.silent = False
        self.corrupt_next = False
        self._corrupt = corrupt or (lambda frame: frame)
        self.tcp = TcpServer(self._serve, name="SunSpec", max_connections=max_connections,
                             idle_timeout_s=idle_timeout_s)

    @property
    def counters(self) -> Counter[str]:
        return self.tcp.counters

    def _authorised(self, conn: ServedConnection, function: int) -> bool:
        if function not in (WRITE_SINGLE, WRITE_MULTIPLE) or self.tcp.ssl is None or self.write_roles is None:
            return True
        return conn.identity is not None and conn.identity.role in self.write_roles

    async def _serve(self, conn: ServedConnection) -> None:
        while True:
            try:
                header = await conn.readexactly(7)
            except asyncio.IncompleteReadError as exc:
                if exc.partial:
                    conn.count("truncated")
                return  # the peer closed (cleanly between requests, or in the middle of a header)
            tid, pid, length, unit = struct.unpack(">HHHB", header)
            if pid != 0 or not 2 <= length <= 254:
                conn.count("bad_mbap")
                log.info("modbus-tcp %s: MBAP protocol id %d / length %d: closing", conn.peer, pid, length)
                return
            pdu = await conn.readexactly(length - 1)
            if unit != self.unit_id:
                reply = bytes([(pdu[0] | 0x80) & 0xFF, GATEWAY_NO_RESPONSE])
            elif not self._authorised(conn, pdu[0]):
                conn.count("unauthorised", rejected=False)
                reply = bytes([(pdu[0] | 0x80) & 0xFF, ILLEGAL_FUNCTION])
            else:
                reply = handle_pdu(self.store, pdu)
            if reply[0] & 0x80:
                conn.count(EXCEPTION_NAMES.get(reply[1], f"exception_{reply[1]:#04x}"))
            if self.silent:
                continue  # a hung device: the request was taken, nothing comes back
            frame = struct.pack(">HHHB", tid, 0, len(reply) + 1, unit) + reply
            if self.corrupt_next:
                self.corrupt_next = False
                frame = self._corrupt(frame)
            await conn.send(frame)
