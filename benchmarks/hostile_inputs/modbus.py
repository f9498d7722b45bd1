"""Modbus TCP (SunSpec) and Modbus RTU over TCP (LiBal PCS): framing helpers and random hostile frames."""

from __future__ import annotations

import random
import struct

from devices.libal import rtu

#: every function code our servers do not implement (they serve 03, 06 and 16)
UNSUPPORTED = sorted(set(range(1, 0x80)) - {0x03, 0x06, 0x10})


def mbap(pdu: bytes, unit: int = 1, tid: int = 7) -> bytes:
    return struct.pack(">HHHB", tid, 0, len(pdu) + 1, unit) + pdu


def tcp_frame(rng: random.Random, unit: int = 1) -> bytes:
    """Random bytes, an MBAP frame with a random PDU (or protocol id), an unsupported function, or a read with a
    count outside the protocol's limits."""
    kind = rng.randrange(4)
    if kind == 0:
        return rng.randbytes(rng.randint(1, 300))
    if kind == 1:
        pdu = rng.randbytes(rng.randint(1, 260))
        return struct.pack(">HHHB", 1, rng.choice([0, 0, 1, 0xFFFF]), len(pdu) + 1, rng.randrange(256)) + pdu
    if kind == 2:
        return mbap(bytes([rng.choice(UNSUPPORTED)]) + rng.randbytes(rng.randint(0, 40)), unit)
    return mbap(struct.pack(">BHH", 3, rng.randrange(0x10000), rng.choice([0, 126, 0xFFFF])), unit)


def rtu_stream(rng: random.Random, unit: int = 1) -> bytes:
    """Random bytes, or a run of RTU frames with random PDUs (valid CRC) mixed with raw junk."""
    if rng.random() < 0.5:
        return rng.randbytes(rng.randint(0, 300))
    parts = []
    for _ in range(rng.randint(1, 6)):
        body = rng.randbytes(rng.randint(0, 12))
        parts.append(rtu.frame(unit, body) if rng.random() < 0.6 else body)
    return b"".join(parts)
