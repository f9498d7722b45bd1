"""MQTT 3.1.1 framing shared by our lean client (``backends/lean.py``) and the small embedded broker
(``mini_broker.py``): the remaining-length encoding, length-prefixed strings, and splitting a byte stream into
packets. Kept free of other imports: the broker's child process loads it."""

from __future__ import annotations

import struct

MAX_REMAINING = 1 << 28  # the largest remaining length MQTT can express (four bytes of seven bits)


def remaining_length(n: int) -> bytes:
    """MQTT's variable-length encoding of a packet's remaining length."""
    if not 0 <= n < MAX_REMAINING:
        raise ValueError(f"MQTT packet too large: {n} bytes")
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | 0x80 if n else byte)
        if not n:
            return bytes(out)


def str16(text: str | bytes) -> bytes:
    """A UTF-8 string (or raw bytes) with its 16-bit length in front."""
    data = text.encode() if isinstance(text, str) else text
    if len(data) > 0xFFFF:
        raise ValueError(f"MQTT string too long ({len(data)} bytes)")
    return struct.pack("!H", len(data)) + data


def packet(first: int, body: bytes) -> bytes:
    """A whole packet: its first byte (type and flags), the remaining length, the body."""
    return bytes((first,)) + remaining_length(len(body)) + body


def parse_packets(buf: bytes | bytearray, max_len: int = MAX_REMAINING) -> tuple[list[tuple[int, int, bytes]], int]:
    """The complete packets at the start of ``buf`` as (type, flags, body), and how many bytes they took (an
    incomplete packet at the end waits for the next read). A malformed length, or one above ``max_len``, raises
    ``ValueError`` as soon as its header is read (such a packet is never buffered) -- unless good packets come
    before it: those are returned first, and the next call raises."""
    out: list[tuple[int, int, bytes]] = []
    pos, end = 0, len(buf)
    while pos + 2 <= end:
        length, mult, i = 0, 1, pos + 1
        while True:
            if i >= end:
                return out, pos
            byte = buf[i]
            length += (byte & 0x7F) * mult
            mult <<= 7
            i += 1
            if not byte & 0x80:
                break
            if i - pos > 4:
                if out:
                    return out, pos
                raise ValueError("malformed remaining length")
        if length > max_len:
            if out:
                return out, pos
            raise ValueError(f"a packet of {length} bytes")
        if i + length > end:
            break
        out.append((buf[pos] >> 4, buf[pos] & 0x0F, bytes(buf[i:i + length])))
        pos = i + length
    return out, pos
