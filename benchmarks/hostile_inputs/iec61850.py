"""IEC 61850 MMS (Energy Router): the bytes of a client's connection, association and MMS frames."""

from __future__ import annotations

import random

from devices.energy_router import ber
from devices.energy_router import iso_stack as iso


def cotp_cr() -> bytes:
    params = bytes.fromhex("c0010a" "c1020001" "c2020001")
    body = bytes([iso.CR]) + b"\x00\x00\x00\x01\x00" + params
    return iso.tpkt(bytes([len(body)]) + body)


def association_request() -> bytes:
    initiate = ber.seq(0xA8, ber.integer(0x80, 65000), ber.integer(0x81, 5), ber.integer(0x82, 5),
                       ber.integer(0x83, 10), ber.seq(0xA4, ber.integer(0x80, 1), ber.bit_string(0x81, 0x788, 11),
                                                    ber.bit_string(0x82, 0x7F << 78, 85)))
    aarq = ber.seq(0x60, ber.seq(0xA1, ber.oid(0x06, "1.0.9506.2.3")),
                   ber.seq(0xBE, ber.seq(0x28, ber.integer(0x02, 3), ber.seq(0xA0, initiate))))
    contexts = ber.seq(0xA4, ber.seq(0x30, ber.integer(0x02, 1), ber.oid(0x06, "2.2.1.0.1"),
                                     ber.seq(0x30, ber.oid(0x06, "2.1.1"))),
                       ber.seq(0x30, ber.integer(0x02, 3), ber.oid(0x06, "1.0.9506.2.1"),
                               ber.seq(0x30, ber.oid(0x06, "2.1.1"))))
    cp = ber.seq(0x31, ber.seq(0xA0, ber.integer(0x80, 1)),
                 ber.seq(0xA2, ber.tlv(0x81, b"\0\0\0\1"), ber.tlv(0x82, b"\0\0\0\1"), contexts,
                         iso.user_data(1, aarq)))
    cn = bytes.fromhex("0506130100160102" "14020002" "33020001" "34020001") + bytes([0xC1, len(cp)]) + cp
    return dt(bytes([iso.SPDU_CN, len(cn)]) + cn)


def dt(tsdu: bytes) -> bytes:
    """A COTP data TPDU (last unit) carrying ``tsdu``."""
    return iso.tpkt(b"\x02\xf0\x80" + tsdu)


def mms_frame(pdu: bytes) -> bytes:
    return dt(iso.DATA_PREFIX + iso.user_data(3, pdu))


def random_tlv(rng: random.Random, depth: int = 0) -> bytes:
    """A well-formed BER tree with arbitrary tags (deep enough to reach the service decoders)."""
    cls, tag = rng.choice([0x00, 0x40, 0x80, 0xC0]), rng.randrange(31)
    if depth >= 3 or rng.random() < 0.4:
        return ber.tlv(cls | tag, rng.randbytes(rng.randint(0, 12)))
    return ber.seq(cls | 0x20 | tag, *(random_tlv(rng, depth + 1) for _ in range(rng.randint(0, 4))))


def connection(rng: random.Random) -> list[bytes]:
    """What one hostile client sends: garbage before the association, garbage in COTP data, or an association
    followed by a random MMS payload."""
    kind = rng.randrange(3)
    junk = rng.randbytes(rng.randint(0, 200))
    if kind == 0:
        return [junk]
    if kind == 1:
        return [cotp_cr(), dt(junk)]
    payload = junk if rng.random() < 0.5 else random_tlv(rng)
    return [cotp_cr(), association_request(), mms_frame(payload)]
