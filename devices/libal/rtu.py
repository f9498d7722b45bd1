"""Modbus RTU for the LiBal PCS: CRC, frame building and splitting, the register map and the slave logic (no I/O).

An RTU frame is ``unit id | PDU | CRC16`` (CRC little-endian, polynomial 0xA001 reflected, init 0xFFFF). On a
serial line frames are separated by silence; over TCP (RTU framing on a socket, as many gateways do) the length
follows from the function code, which is how :func:`request_length` and :func:`response_length` split the stream.

Register map (holding registers, 0-based PDU addresses; int32/uint32 span two registers, high word first). The
PCS uses its own sign convention, + = power delivered to the grid (discharging); the driver converts to the
framework's load arrow (+ = charging) at this boundary.

    addr  name                  type  access  meaning
    0     MODE                  u16   rw      0 = standby, 1 = active-power control
    1     ENABLE                u16   rw      0 = PCS off, 1 = on
    2     P_SET_W               i32   rw      active-power setpoint, W, + = discharge (export), - = charge
    4     Q_SET_VAR             i32   rw      reactive-power setpoint, var, + = delivering (over-excited)
    16    STATUS                u16   r       0 standby, 1 running, 2 limited (BMS / SoC / rating), 3 fault
    17    FAULT_CODE            u16   r       bit 0 BMS protection active, bit 1 power limited below the setpoint
    18    P_MEAS_W              i32   r       measured active power, W, + = discharge
    20    Q_MEAS_VAR            i32   r       measured reactive power, var, + = delivering
    22    V_DC_V                u16   r       battery voltage at the PCS, 0.1 V
    24    P_CHARGE_AVAIL_W      u32   r       charge power available now (rating, SoC window, BMS limits), W
    26    P_DISCHARGE_AVAIL_W   u32   r       discharge power available now, W
    32    P_CHARGE_RATED_W      u32   r       nameplate charge rating, W
    34    P_DISCHARGE_RATED_W   u32   r       nameplate discharge rating, W
    36    S_RATED_VA            u32   r       nameplate apparent-power rating, VA
    38    ETA_CHARGE            u16   r       AC -> battery efficiency, 0.001
    39    ETA_DISCHARGE         u16   r       battery -> AC efficiency, 0.001

Registers 6-15 and 28-31 are reserved (read 0). Slave behaviour: function codes 0x03 (read holding), 0x06 (write
single) and 0x10 (write multiple); other codes -> ILLEGAL FUNCTION; reading outside 0..39 or writing a read-only,
reserved or half of a 32-bit register -> ILLEGAL DATA ADDRESS; a value outside its range (MODE/ENABLE not 0/1,
P beyond the ratings, |Q| beyond S_RATED) -> ILLEGAL DATA VALUE and nothing is written.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from collections.abc import Callable, Mapping

from devices.base import ProtocolError
from devices.crc import ReflectedCrc16

READ_HOLDING, WRITE_SINGLE, WRITE_MULTIPLE = 0x03, 0x06, 0x10
ILLEGAL_FUNCTION, ILLEGAL_DATA_ADDRESS, ILLEGAL_DATA_VALUE, SLAVE_DEVICE_FAILURE = 1, 2, 3, 4
EXCEPTION_NAMES = {
    ILLEGAL_FUNCTION: "ILLEGAL_FUNCTION",
    ILLEGAL_DATA_ADDRESS: "ILLEGAL_DATA_ADDRESS",
    ILLEGAL_DATA_VALUE: "ILLEGAL_DATA_VALUE",
    SLAVE_DEVICE_FAILURE: "SLAVE_DEVICE_FAILURE",
}
MAX_FRAME = 256


class RtuFrameError(ProtocolError):
    """A malformed RTU frame (bad CRC, wrong length, unexpected unit or function)."""


class ModbusExceptionReply(ProtocolError):
    """The slave answered with a Modbus exception."""

    def __init__(self, function: int, code: int) -> None:
        self.function = function
        self.code = code
        self.name = EXCEPTION_NAMES.get(code, f"EXCEPTION_{code}")
        super().__init__(f"Modbus exception {code} ({self.name}) to function 0x{function:02X}")


# -- CRC and frames -----------------------------------------------------------------------------------------
_MODBUS = ReflectedCrc16(0xA001)


def crc16(data: bytes) -> int:
    """Modbus RTU's CRC-16 (reflected 0x8005, init 0xFFFF, no final XOR)."""
    return _MODBUS(data)


def frame(unit: int, pdu: bytes) -> bytes:
    body = bytes([unit & 0xFF]) + pdu
    return body + crc16(body).to_bytes(2, "little")


def check_crc(raw: bytes) -> bool:
    return len(raw) >= 4 and crc16(raw[:-2]) == int.from_bytes(raw[-2:], "little")


def read_holding_pdu(address: int, count: int) -> bytes:
    return bytes([READ_HOLDING]) + address.to_bytes(2, "big") + count.to_bytes(2, "big")


def write_multiple_pdu(address: int, values: list[int]) -> bytes:
    data = b"".join((v & 0xFFFF).to_bytes(2, "big") for v in values)
    return (bytes([WRITE_MULTIPLE]) + address.to_bytes(2, "big") + len(values).to_bytes(2, "big")
            + bytes([len(data)]) + data)


def write_single_pdu(address: int, value: int) -> bytes:
    return bytes([WRITE_SINGLE]) + address.to_bytes(2, "big") + (value & 0xFFFF).to_bytes(2, "big")


def request_length(buf: bytes) -> int | None:
    """Length of the request frame at the start of ``buf``; None until enough bytes tell; -1 if the function
    code gives no length (an unknown function: the caller takes what arrived as one frame, as silence would)."""
    if len(buf) < 2:
        return None
    fc = buf[1]
    if fc in (0x01, 0x02, READ_HOLDING, 0x04, 0x05, WRITE_SINGLE):
        return 8
    if fc in (0x0F, WRITE_MULTIPLE):
        if len(buf) < 7:
            return None
        return 9 + buf[6]
    return -1


def response_length(buf: bytes) -> int | None:
    """Length of the response frame at the start of ``buf``; None until enough bytes tell; RtuFrameError for
    a function code this client never asks for."""
    if len(buf) < 2:
        return None
    fc = buf[1]
    if fc & 0x80:
        return 5
    if fc in (READ_HOLDING, 0x04):
        return None if len(buf) < 3 else 5 + buf[2]
    if fc in (WRITE_SINGLE, WRITE_MULTIPLE):
        return 8
    raise RtuFrameError(f"response with unexpected function code 0x{fc:02X}")


def parse_response(raw: bytes, unit: int, function: int) -> bytes:
    """Check a complete response frame and return its PDU data after the function code.

    RtuFrameError for a bad CRC, length, unit or function; ModbusExceptionReply for an exception response.
    """
    if len(raw) < 4:
        raise RtuFrameError(f"response of {len(raw)} bytes is too short")
    if not check_crc(raw):
        raise RtuFrameError(f"response CRC mismatch ({raw.hex()})")
    if raw[0] != unit:
        raise RtuFrameError(f"response from unit {raw[0]}, expected {unit}")
    fc = raw[1]
    if fc == function | 0x80:
        if len(raw) != 5:
            raise RtuFrameError(f"exception response of {len(raw)} bytes (expected 5)")
        raise ModbusExceptionReply(function, raw[2])
    if fc != function:
        raise RtuFrameError(f"response to function 0x{fc:02X}, expected 0x{function:02X}")
    data = raw[2:-2]
    if fc == READ_HOLDING and (not data or data[0] != len(data) - 1 or data[0] % 2):
        raise RtuFrameError(f"read response byte count does not match its length ({raw.hex()})")
    if fc in (WRITE_SINGLE, WRITE_MULTIPLE) and len(data) != 4:
        raise RtuFrameError(f"write response of {len(raw)} bytes (expected 8)")
    return data


def registers_from(data: bytes, count: int) -> list[int]:
    """Register values of a read response's data (byte count first)."""
    if data[0] != 2 * count:
        raise RtuFrameError(f"read response carries {data[0] // 2} registers, asked for {count}")
    return [int.from_bytes(data[1 + 2 * i:3 + 2 * i], "big") for i in range(count)]


# -- register map -------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Reg:
    name: str
    address: int
    words: int = 1
    signed: bool = False
    scale: float = 1.0
    writable: bool = False

    @property
    def addresses(self) -> range:
        return range(self.address, self.address + self.words)

    def encode(self, value: float) -> list[int]:
        raw = round(value / self.scale)
        bits = 16 * self.words
        lo, hi = (-(1 << (bits - 1)), (1 << (bits - 1)) - 1) if self.signed else (0, (1 << bits) - 1)
        if not lo <= raw <= hi:
            raise ValueError(f"{self.name}={value!r} does not fit {bits} bits")
        raw &= (1 << bits) - 1
        return [(raw >> (16 * (self.words - 1 - i))) & 0xFFFF for i in range(self.words)]

    def decode(self, words: list[int]) -> float:
        raw = 0
        for w in words:
            raw = (raw << 16) | (w & 0xFFFF)
        bits = 16 * self.words
        if self.signed and raw >= 1 << (bits - 1):
            raw -= 1 << bits
        return float(raw) if self.scale == 1.0 else round(raw * self.scale, 9)


REGS = {r.name: r for r in (
    Reg("MODE", 0, writable=True),
    Reg("ENABLE", 1, writable=True),
    Reg("P_SET_W", 2, 2, signed=True, writable=True),
    Reg("Q_SET_VAR", 4, 2, signed=True, writable=True),
    Reg("STATUS", 16),
    Reg("FAULT_CODE", 17),
    Reg("P_MEAS_W", 18, 2, signed=True),
    Reg("Q_MEAS_VAR", 20, 2, signed=True),
    Reg("V_DC_V", 22, scale=0.1),
    Reg("P_CHARGE_AVAIL_W", 24, 2),
    Reg("P_DISCHARGE_AVAIL_W", 26, 2),
    Reg("P_CHARGE_RATED_W", 32, 2),
    Reg("P_DISCHARGE_RATED_W", 34, 2),
    Reg("S_RATED_VA", 36, 2),
    Reg("ETA_CHARGE", 38, scale=0.001),
    Reg("ETA_DISCHARGE", 39, scale=0.001),
)}
REGISTER_COUNT = 40
_OWNER = {a: r for r in REGS.values() for a in r.addresses}

STATUS_STANDBY, STATUS_RUNNING, STATUS_LIMITED, STATUS_FAULT = 0, 1, 2, 3
FAULT_BMS_PROTECTION, FAULT_BMS_LIMITED = 0x1, 0x2


def decode_image(words: list[int], base: int = 0) -> dict[str, float]:
    """Named values of a block of registers starting at ``base`` (registers outside the block are skipped)."""
    out = {}
    for reg in REGS.values():
        if reg.address >= base and reg.address + reg.words <= base + len(words):
            out[reg.name] = reg.decode(words[reg.address - base:reg.address - base + reg.words])
    return out


class RegisterImage:
    """The slave's registers as 16-bit words."""

    def __init__(self) -> None:
        self.words = [0] * REGISTER_COUNT

    def set(self, name: str, value: float) -> None:
        reg = REGS[name]
        self.words[reg.address:reg.address + reg.words] = reg.encode(value)

    def get(self, name: str) -> float:
        reg = REGS[name]
        return reg.decode(self.words[reg.address:reg.address + reg.words])

    def values(self) -> dict[str, float]:
        return decode_image(self.words)


def _exception(fc: int, code: int) -> bytes:
    return bytes([fc | 0x80, code])


class PcsSlave:
    """Answers request PDUs from a :class:`RegisterImage`; validates writes against the nameplate registers.

    ``on_write(values)`` is called with the full set of named values after every accepted write.
    """

    def __init__(self, image: RegisterImage, on_write: Callable[[Mapping[str, float]], None] | None = None) -> None:
        self.image = image
        self.on_write = on_write

    def handle(self, pdu: bytes) -> bytes:
        if not pdu:
            return _exception(0, ILLEGAL_FUNCTION)
        fc = pdu[0]
        if fc == READ_HOLDING:
            if len(pdu) != 5:
                return _exception(fc, ILLEGAL_DATA_VALUE)
            address, count = int.from_bytes(pdu[1:3], "big"), int.from_bytes(pdu[3:5], "big")
            if not 1 <= count <= 125:
                return _exception(fc, ILLEGAL_DATA_VALUE)
            if address + count > REGISTER_COUNT:
                return _exception(fc, ILLEGAL_DATA_ADDRESS)
            words = self.image.words[address:address + count]
            return bytes([fc, 2 * count]) + b"".join(w.to_bytes(2, "big") for w in words)
        if fc == WRITE_SINGLE:
            if len(pdu) != 5:
                return _exception(fc, ILLEGAL_DATA_VALUE)
            address = int.from_bytes(pdu[1:3], "big")
            code = self._write(address, [int.from_bytes(pdu[3:5], "big")])
            return _exception(fc, code) if code else pdu
        if fc == WRITE_MULTIPLE:
            if len(pdu) < 6:
                return _exception(fc, ILLEGAL_DATA_VALUE)
            address, count, nbytes = int.from_bytes(pdu[1:3], "big"), int.from_bytes(pdu[3:5], "big"), pdu[5]
            if not 1 <= count <= 123 or nbytes != 2 * count or len(pdu) != 6 + nbytes:
                return _exception(fc, ILLEGAL_DATA_VALUE)
            values = [int.from_bytes(pdu[6 + 2 * i:8 + 2 * i], "big") for i in range(count)]
            code = self._write(address, values)
            return _exception(fc, code) if code else pdu[:5]
        return _exception(fc, ILLEGAL_FUNCTION)

    def _write(self, address: int, values: list[int]) -> int:
        """Apply a write atomically; return 0 or the exception code."""
        span = range(address, address + len(values))
        touched = set()
        for a in span:
            reg = _OWNER.get(a)
            if reg is None or not reg.writable:
                return ILLEGAL_DATA_ADDRESS
            touched.add(reg)
        if any(reg.address not in span or reg.address + reg.words - 1 not in span for reg in touched):
            return ILLEGAL_DATA_ADDRESS  # a 32-bit value is written whole or not at all
        new = list(self.image.words)
        new[address:address + len(values)] = values
        proposed = decode_image(new)
        if not self._valid(proposed):
            return ILLEGAL_DATA_VALUE
        self.image.words = new
        if self.on_write is not None:
            self.on_write(proposed)
        return 0

    @staticmethod
    def _valid(v: Mapping[str, float]) -> bool:
        return (
            v["MODE"] in (0, 1)
            and v["ENABLE"] in (0, 1)
            and -v["P_CHARGE_RATED_W"] <= v["P_SET_W"] <= v["P_DISCHARGE_RATED_W"]
            and abs(v["Q_SET_VAR"]) <= v["S_RATED_VA"]
            and all(math.isfinite(x) for x in v.values())
        )


class RequestFramer:
    """Splits a byte stream into request frames (server side of RTU-over-TCP)."""

    def __init__(self) -> None:
        self.buffer = b""

    def feed(self, data: bytes) -> list[bytes]:
        self.buffer += data
        frames = []
        while self.buffer:
            n = request_length(self.buffer)
            if n is None:
                break
            if n < 0 or n > MAX_FRAME:
                frames.append(self.buffer)  # unknown length: what arrived together is the frame
                self.buffer = b""
                break
            if len(self.buffer) < n:
                break
            frames.append(self.buffer[:n])
            self.buffer = self.buffer[n:]
        return frames

    def resync(self) -> None:
        """Forget everything buffered (after a bad CRC, as a slave waits for the next silence)."""
        self.buffer = b""
