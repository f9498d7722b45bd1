"""ASN.1 BER (X.690) for the MMS stack: one bounded decoder to a tree of TLVs, and an encoder.

Only the definite-length form is accepted (MMS over ISO uses nothing else); a tag number up to 2^21, a length
up to the bytes that remain, and a nesting depth of :data:`MAX_DEPTH`. Everything malformed raises
:class:`BerError` (a :class:`~devices.base.ProtocolError`): never an IndexError, never a hang.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import cast

from devices.base import ProtocolError

MAX_DEPTH = 24
CONSTRUCTED = 0x20
# tag classes as the first-octet bits
UNIVERSAL, APPLICATION, CONTEXT, PRIVATE = 0x00, 0x40, 0x80, 0xC0


class BerError(ProtocolError):
    """A BER encoding that is truncated, over-long, indefinite or nested too deep."""


@dataclass(frozen=True)
class Tlv:
    """One decoded element: ``cls`` (class bits), ``constructed``, tag ``number``, raw ``value`` bytes and,
    for a constructed element, its ``children``."""

    cls: int
    constructed: bool
    number: int
    value: bytes
    children: tuple[Tlv, ...] = ()

    @property
    def tag(self) -> tuple[int, bool, int]:
        return self.cls, self.constructed, self.number

    def is_(self, cls: int, number: int) -> bool:
        return self.cls == cls and self.number == number

    def child(self, cls: int, number: int) -> Tlv | None:
        return next((c for c in self.children if c.cls == cls and c.number == number), None)

    def need(self, cls: int, number: int, what: str) -> Tlv:
        found = self.child(cls, number)
        if found is None:
            raise BerError(f"{what} missing")
        return found

    def only(self, what: str) -> Tlv:
        if len(self.children) != 1:
            raise BerError(f"{what}: expected one element, got {len(self.children)}")
        return self.children[0]


def _header(data: bytes, pos: int, end: int) -> tuple[int, bool, int, int, int]:
    """(class, constructed, number, value start, value end) of the element at ``pos``."""
    if pos >= end:
        raise BerError("truncated: tag expected")
    first = data[pos]
    pos += 1
    cls, constructed, number = first & 0xC0, bool(first & CONSTRUCTED), first & 0x1F
    if number == 0x1F:  # high tag number form
        number = 0
        for _k in range(4):
            if pos >= end:
                raise BerError("truncated tag")
            octet = data[pos]
            pos += 1
            number = (number << 7) | (octet & 0x7F)
            if not octet & 0x80:
                break
        else:
            raise BerError("tag number too large")
    if pos >= end:
        raise BerError("truncated: length expected")
    length = data[pos]
    pos += 1
    if length == 0x80:
        raise BerError("indefinite length not supported")
    if length & 0x80:
        n = length & 0x7F
        if n > 4 or pos + n > end:
            raise BerError("bad long-form length")
        length = int.from_bytes(data[pos:pos + n], "big")
        pos += n
    if pos + length > end:
        raise BerError(f"length {length} runs past the end ({end - pos} bytes left)")
    return cls, constructed, number, pos, pos + length


def _decode(data: bytes, pos: int, end: int, depth: int) -> tuple[Tlv, int]:
    if depth > MAX_DEPTH:
        raise BerError(f"nesting deeper than {MAX_DEPTH}")
    cls, constructed, number, start, stop = _header(data, pos, end)
    children: list[Tlv] = []
    if constructed:
        p = start
        while p < stop:
            child, p = _decode(data, p, stop, depth + 1)
            children.append(child)
    return Tlv(cls, constructed, number, bytes(data[start:stop]), tuple(children)), stop


def decode(data: bytes) -> Tlv:
    """Exactly one element filling ``data``."""
    tlv, end = _decode(data, 0, len(data), 0)
    if end != len(data):
        raise BerError(f"{len(data) - end} trailing bytes after the element")
    return tlv


def decode_all(data: bytes) -> list[Tlv]:
    """A concatenation of elements (e.g. a SEQUENCE's contents)."""
    out, pos = [], 0
    while pos < len(data):
        tlv, pos = _decode(data, pos, len(data), 0)
        out.append(tlv)
    return out


# -- primitive values --------------------------------------------------------------------------------------
def to_int(tlv: Tlv, *, signed: bool = True) -> int:
    if tlv.constructed or not tlv.value or len(tlv.value) > 9:
        raise BerError("bad INTEGER")
    return int.from_bytes(tlv.value, "big", signed=signed)


def to_str(tlv: Tlv) -> str:
    if tlv.constructed:
        raise BerError("bad string")
    try:
        return tlv.value.decode("ascii")
    except UnicodeDecodeError:
        raise BerError("string is not ASCII") from None


def to_bool(tlv: Tlv) -> bool:
    if tlv.constructed or len(tlv.value) != 1:
        raise BerError("bad BOOLEAN")
    return tlv.value != b"\x00"


def to_float(tlv: Tlv) -> float:
    """MMS FloatingPoint: exponent width octet, then IEEE 754 single (8) or double (11)."""
    v = tlv.value
    if tlv.constructed or len(v) not in (5, 9) or v[0] not in (8, 11):
        raise BerError("bad FloatingPoint")
    return cast(float, struct.unpack(">f" if len(v) == 5 else ">d", v[1:])[0])


# -- encoder -----------------------------------------------------------------------------------------------
def _length(n: int) -> bytes:
    if n < 0x80:
        return bytes([n])
    raw = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return bytes([0x80 | len(raw)]) + raw


def tlv(tag: int, value: bytes) -> bytes:
    """One element with a single-octet tag (every tag MMS needs here fits one octet)."""
    return bytes([tag]) + _length(len(value)) + value


def seq(tag: int, *parts: bytes) -> bytes:
    return tlv(tag, b"".join(parts))


def int_bytes(n: int, *, signed: bool = True) -> bytes:
    """Minimal two's-complement (or unsigned with a leading zero where needed) content octets."""
    if signed:
        size = max(1, (n + (n < 0)).bit_length() // 8 + 1)
        return n.to_bytes(size, "big", signed=True)
    size = max(1, n.bit_length() // 8 + 1)  # a leading 0 keeps the top bit clear
    return n.to_bytes(size, "big")


def integer(tag: int, n: int, *, signed: bool = True) -> bytes:
    return tlv(tag, int_bytes(n, signed=signed))


def boolean(tag: int, value: bool) -> bytes:
    return tlv(tag, b"\xff" if value else b"\x00")


def float32(tag: int, value: float) -> bytes:
    return tlv(tag, b"\x08" + struct.pack(">f", value))


def visible(tag: int, text: str) -> bytes:
    return tlv(tag, text.encode("ascii"))


def bit_string(tag: int, bits: int, nbits: int) -> bytes:
    """A BIT STRING of ``nbits`` whose bit 0 is the most significant bit of ``bits``."""
    nbytes = (nbits + 7) // 8
    unused = nbytes * 8 - nbits
    return tlv(tag, bytes([unused]) + (bits << unused).to_bytes(nbytes, "big"))


def oid(tag: int, dotted: str) -> bytes:
    arcs = [int(a) for a in dotted.split(".")]
    out = bytearray([arcs[0] * 40 + arcs[1]])
    for arc in arcs[2:]:
        chunk = [arc & 0x7F]
        arc >>= 7
        while arc:
            chunk.append(0x80 | (arc & 0x7F))
            arc >>= 7
        out += bytes(reversed(chunk))
    return tlv(tag, bytes(out))
