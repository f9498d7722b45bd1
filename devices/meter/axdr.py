"""A-XDR encoding of COSEM data (IEC 61334-6, DLMS UA Green Book "Data" CHOICE), both directions.

A value is a :class:`Data`: its type tag and a Python value (int, bool, bytes, str, float, None, or a tuple of
Data for array/structure). Decoding is bounded for hostile input: a length or element count larger than the
bytes left, nesting deeper than :data:`MAX_DEPTH`, an unknown tag or a truncated value raise
:class:`DecodeError` (a :class:`~devices.base.ProtocolError`), never anything else.
"""

from __future__ import annotations

import datetime as dt
import struct
from dataclasses import dataclass
from enum import IntEnum
from typing import Any
from collections.abc import Iterable, Iterator

from devices.base import ProtocolError

MAX_DEPTH = 16


class DecodeError(ProtocolError):
    """Bytes that are not a valid encoding (truncated, too long, unknown tag, too deep)."""


class Tag(IntEnum):
    NULL = 0
    ARRAY = 1
    STRUCTURE = 2
    BOOLEAN = 3
    BIT_STRING = 4
    DOUBLE_LONG = 5
    DOUBLE_LONG_UNSIGNED = 6
    OCTET_STRING = 9
    VISIBLE_STRING = 10
    UTF8_STRING = 12
    BCD = 13
    INTEGER = 15
    LONG = 16
    UNSIGNED = 17
    LONG_UNSIGNED = 18
    COMPACT_ARRAY = 19
    LONG64 = 20
    LONG64_UNSIGNED = 21
    ENUM = 22
    FLOAT32 = 23
    FLOAT64 = 24
    DATE_TIME = 25
    DATE = 26
    TIME = 27


# fixed-size numbers: tag -> struct format (big endian)
_NUMBERS = {Tag.DOUBLE_LONG: ">i", Tag.DOUBLE_LONG_UNSIGNED: ">I", Tag.BCD: ">b", Tag.INTEGER: ">b",
            Tag.LONG: ">h", Tag.UNSIGNED: ">B", Tag.LONG_UNSIGNED: ">H", Tag.LONG64: ">q",
            Tag.LONG64_UNSIGNED: ">Q", Tag.ENUM: ">B", Tag.FLOAT32: ">f", Tag.FLOAT64: ">d"}
_FIXED_OCTETS = {Tag.DATE_TIME: 12, Tag.DATE: 5, Tag.TIME: 4}
_STRINGS = {Tag.OCTET_STRING, Tag.VISIBLE_STRING, Tag.UTF8_STRING}


@dataclass(frozen=True)
class Data:
    tag: Tag
    value: Any = None

    def __iter__(self) -> Iterator[Any]:
        if self.tag not in (Tag.ARRAY, Tag.STRUCTURE):
            raise TypeError(f"{self.tag.name} is not a sequence")
        return iter(self.value)


# -- constructors -------------------------------------------------------------------------------------------
def null() -> Data:
    return Data(Tag.NULL)


def array(items: Iterable[Data]) -> Data:
    return Data(Tag.ARRAY, tuple(items))


def structure(*items: Data) -> Data:
    return Data(Tag.STRUCTURE, tuple(items))


def octets(b: bytes) -> Data:
    return Data(Tag.OCTET_STRING, bytes(b))


def visible(s: str) -> Data:
    return Data(Tag.VISIBLE_STRING, s)


def u8(v: int) -> Data:
    return Data(Tag.UNSIGNED, int(v))


def u16(v: int) -> Data:
    return Data(Tag.LONG_UNSIGNED, int(v))


def u32(v: int) -> Data:
    return Data(Tag.DOUBLE_LONG_UNSIGNED, int(v))


def i8(v: int) -> Data:
    return Data(Tag.INTEGER, int(v))


def i16(v: int) -> Data:
    return Data(Tag.LONG, int(v))


def enum(v: int) -> Data:
    return Data(Tag.ENUM, int(v))


def boolean(v: bool) -> Data:
    return Data(Tag.BOOLEAN, bool(v))


# -- lengths ------------------------------------------------------------------------------------------------
def encode_length(n: int) -> bytes:
    """A-XDR / BER length: one byte below 128, else 0x8k followed by k bytes."""
    if n < 0x80:
        return bytes([n])
    body = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return bytes([0x80 | len(body)]) + body


def decode_length(buf: bytes, pos: int) -> tuple[int, int]:
    if pos >= len(buf):
        raise DecodeError("length missing")
    first = buf[pos]
    pos += 1
    if first < 0x80:
        return first, pos
    k = first & 0x7F
    if k == 0 or k > 4:
        raise DecodeError(f"length form 0x{first:02x} not supported")
    if pos + k > len(buf):
        raise DecodeError("length truncated")
    return int.from_bytes(buf[pos:pos + k], "big"), pos + k


def take(buf: bytes, pos: int, n: int, what: str) -> tuple[bytes, int]:
    if n < 0 or pos + n > len(buf):
        raise DecodeError(f"{what}: {n} bytes needed at {pos}, {max(len(buf) - pos, 0)} left")
    return bytes(buf[pos:pos + n]), pos + n


# -- encode -------------------------------------------------------------------------------------------------
def encode(d: Data) -> bytes:
    out = bytearray()
    _encode(d, out)
    return bytes(out)


def _encode(d: Data, out: bytearray) -> None:
    tag = d.tag
    out.append(tag)
    if tag == Tag.NULL:
        return
    if tag in (Tag.ARRAY, Tag.STRUCTURE):
        out += encode_length(len(d.value))
        for item in d.value:
            _encode(item, out)
    elif tag == Tag.BOOLEAN:
        out.append(1 if d.value else 0)
    elif tag in _NUMBERS:
        out += struct.pack(_NUMBERS[tag], d.value)
    elif tag in _STRINGS:
        raw = d.value if isinstance(d.value, bytes) else str(d.value).encode("ascii" if tag == Tag.VISIBLE_STRING
                                                                              else "utf-8")
        out += encode_length(len(raw)) + raw
    elif tag == Tag.BIT_STRING:
        bits: str = d.value  # "1011..."
        out += encode_length(len(bits))
        padded = bits + "0" * (-len(bits) % 8)
        out += bytes(int(padded[k:k + 8], 2) for k in range(0, len(padded), 8))
    elif tag in _FIXED_OCTETS:
        if len(d.value) != _FIXED_OCTETS[tag]:
            raise ValueError(f"{tag.name} needs {_FIXED_OCTETS[tag]} bytes")
        out += d.value
    else:
        raise ValueError(f"cannot encode {tag.name}")


# -- decode -------------------------------------------------------------------------------------------------
def decode(buf: bytes, pos: int = 0, depth: int = 0) -> tuple[Data, int]:
    """One Data at ``pos``; returns it and the position after it."""
    if depth > MAX_DEPTH:
        raise DecodeError(f"data nested deeper than {MAX_DEPTH}")
    if pos >= len(buf):
        raise DecodeError("data truncated: tag missing")
    try:
        tag = Tag(buf[pos])
    except ValueError:
        raise DecodeError(f"unknown data tag {buf[pos]} at {pos}") from None
    pos += 1
    if tag == Tag.NULL:
        return Data(tag), pos
    if tag in (Tag.ARRAY, Tag.STRUCTURE):
        count, pos = decode_length(buf, pos)
        if count > len(buf) - pos:  # every element takes at least its tag byte
            raise DecodeError(f"{tag.name.lower()} of {count} elements in {len(buf) - pos} bytes")
        items = []
        for _ in range(count):
            item, pos = decode(buf, pos, depth + 1)
            items.append(item)
        return Data(tag, tuple(items)), pos
    if tag == Tag.BOOLEAN:
        raw, pos = take(buf, pos, 1, "boolean")
        return Data(tag, raw[0] != 0), pos
    if tag in _NUMBERS:
        fmt = _NUMBERS[tag]
        raw, pos = take(buf, pos, struct.calcsize(fmt), tag.name.lower())
        return Data(tag, struct.unpack(fmt, raw)[0]), pos
    if tag in _STRINGS:
        n, pos = decode_length(buf, pos)
        raw, pos = take(buf, pos, n, tag.name.lower())
        if tag == Tag.OCTET_STRING:
            return Data(tag, raw), pos
        try:
            return Data(tag, raw.decode("ascii" if tag == Tag.VISIBLE_STRING else "utf-8")), pos
        except UnicodeDecodeError:
            raise DecodeError(f"{tag.name.lower()} is not valid text") from None
    if tag == Tag.BIT_STRING:
        nbits, pos = decode_length(buf, pos)
        raw, pos = take(buf, pos, (nbits + 7) // 8, "bit-string")
        return Data(tag, "".join(f"{b:08b}" for b in raw)[:nbits]), pos
    if tag in _FIXED_OCTETS:
        raw, pos = take(buf, pos, _FIXED_OCTETS[tag], tag.name.lower())
        return Data(tag, raw), pos
    raise DecodeError(f"data type {tag.name.lower()} not supported")


def decode_all(buf: bytes) -> Data:
    """Exactly one Data filling ``buf``."""
    d, pos = decode(buf, 0)
    if pos != len(buf):
        raise DecodeError(f"{len(buf) - pos} bytes after the data")
    return d


# -- COSEM date-time (12 octets) ----------------------------------------------------------------------------
DEVIATION_UNSPECIFIED = -0x8000


def datetime_octets(t: dt.datetime, deviation_min: int = 0) -> bytes:
    """date-time of ``t`` (aware) as local time at ``deviation_min`` east of UTC. The octet's deviation field
    carries minutes *west* (local = UTC - deviation), as the Blue Book's clock convention does."""
    local = t.astimezone(dt.timezone(dt.timedelta(minutes=deviation_min)))
    return struct.pack(">HBBBBBBBhB", local.year, local.month, local.day, local.isoweekday(), local.hour,
                       local.minute, local.second, 0, -deviation_min, 0)


def parse_datetime(raw: bytes, default_deviation_min: int = 0) -> dt.datetime:
    """A fully specified date-time -> aware datetime (UTC); DecodeError for wildcards or impossible dates.
    A deviation of 0x8000 (not specified) means the meter's own local time (``default_deviation_min``)."""
    if len(raw) != 12:
        raise DecodeError(f"date-time needs 12 octets, got {len(raw)}")
    year, month, day, _dow, hour, minute, second, hundredths, deviation, _status = struct.unpack(">HBBBBBBBhB", raw)
    if year == 0xFFFF or 0xFF in (month, day, hour, minute, second):
        raise DecodeError("date-time with unspecified fields is not supported here")
    east = default_deviation_min if deviation == DEVIATION_UNSPECIFIED else -deviation
    if not -840 <= east <= 840:
        raise DecodeError(f"date-time deviation {deviation} out of range")
    try:
        local = dt.datetime(year, month, day, hour, minute, second,
                            0 if hundredths == 0xFF else min(hundredths, 99) * 10_000,
                            tzinfo=dt.timezone(dt.timedelta(minutes=east)))
    except ValueError as exc:
        raise DecodeError(f"date-time: {exc}") from None
    return local.astimezone(dt.UTC)


def obis_bytes(text: str) -> bytes:
    """"1.0.1.8.0.255" -> 6 octets."""
    parts = [int(p) for p in text.replace(":", ".").replace("-", ".").replace("*", ".").split(".")]
    if len(parts) != 6 or not all(0 <= p <= 255 for p in parts):
        raise ValueError(f"OBIS code {text!r} must be six numbers 0..255")
    return bytes(parts)


def obis_text(raw: bytes) -> str:
    return ".".join(str(b) for b in raw)
