"""DLMS/COSEM (meter): valid APDUs and HDLC frames to mutate into hostile ones."""

from __future__ import annotations

import random

from devices.meter import apdu as A
from devices.meter import axdr, hdlc, wrapper
from devices.meter.objects import CLASS_PROFILE, PROFILE_LN

REF = A.AttributeRef(3, axdr.obis_bytes("1.0.1.8.0.255"), 2)
VALID_APDUS = [
    A.encode_aarq(0x001C1D, 512), A.encode_aarq(0x001C1D, 512, b"00000000"),
    A.encode_get_normal(0xC1, REF), A.encode_get_next(0xC1, 1), A.encode_get_with_list(0xC1, [REF, REF]),
    A.encode_get_normal(0xC1, A.AttributeRef(CLASS_PROFILE, PROFILE_LN, 2), A.Selection(1, axdr.structure(
        axdr.structure(axdr.u16(8), axdr.octets(axdr.obis_bytes("0.0.1.0.0.255")), axdr.i8(2), axdr.u16(0)),
        axdr.octets(bytes(12)), axdr.octets(bytes(12)), axdr.array([])))),
    A.encode_set_normal(0xC1, REF, axdr.u32(1)), A.encode_rlrq(),
    A.encode_aare(A.AssociationResult.ACCEPTED, A.AcseDiagnostic.NULL, A.encode_initiate_response(0x1C1D, 512)),
    A.encode_get_response_normal(0xC1, axdr.u32(7)), A.encode_get_response_block(0xC1, False, 2, b"x" * 20),
    A.encode_get_response_with_list(0xC1, [axdr.u16(1), 4]),
]
VALID_HDLC_FRAMES = [
    hdlc.Frame(hdlc.Address(1, 17, 2), hdlc.Address(16), hdlc.SNRM).encode(),
    hdlc.Frame(hdlc.Address(1, 17, 2), hdlc.Address(16), hdlc.i_control(0, 0),
               hdlc.LLC_REQUEST + A.encode_aarq(0x1C1D, 512)).encode(),
    hdlc.Frame(hdlc.Address(1, 17, 2), hdlc.Address(16), hdlc.rr_control(0)).encode(),
    hdlc.Frame(hdlc.Address(1, 17, 2), hdlc.Address(16), hdlc.DISC).encode(),
]


def mutate(valid: bytes, flips: list[tuple[int, int]], cut: int, tail: bytes) -> bytes:
    """``valid`` with bytes set (position modulo the length, value), cut after ``cut`` bytes, ``tail`` appended."""
    out = bytearray(valid)
    for pos, value in flips:
        if out:
            out[pos % len(out)] = value
    return bytes(out[:cut]) + tail


def random_mutation(rng: random.Random, valid: bytes) -> bytes:
    flips = [(rng.randrange(max(len(valid), 1)), rng.randrange(256)) for _ in range(rng.randint(0, 4))]
    return mutate(valid, flips, rng.randint(0, len(valid)), rng.randbytes(rng.randint(0, 8)))


def wrapper_chunk(rng: random.Random) -> bytes:
    """Raw junk, or a well-formed wrapper frame around random bytes or a mutated APDU."""
    kind = rng.randrange(3)
    if kind == 0:
        return rng.randbytes(rng.randint(1, 200))
    body = rng.randbytes(rng.randint(1, 200)) if kind == 1 else random_mutation(rng, rng.choice(VALID_APDUS))
    return wrapper.wrap(16, 1, body or b"\x00")


def hdlc_chunk(rng: random.Random) -> bytes:
    if rng.random() < 0.4:
        return rng.randbytes(rng.randint(1, 80))
    return random_mutation(rng, rng.choice(VALID_HDLC_FRAMES))
