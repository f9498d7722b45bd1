"""The OSI upper layers MMS rides on, server side: RFC 1006 TPKT, ISO 8073 COTP class 0, ISO 8327 session,
ISO 8823 presentation and ACSE (ISO 8650), as IEC 61850-8-1 profiles them.

Only what an MMS association needs: COTP CR/CC, DT (with reassembly of segmented TSDUs) and DR; session CN/AC,
the data-transfer SPDU pair (Give-Tokens + DT), FN/DN and AB; the presentation CP/CPA with its context list and
fully-encoded user data; ACSE AARQ/AARE and RLRQ/RLRE. Each decoder is bounded and raises
:class:`IsoError` (a :class:`~devices.base.ProtocolError`) on anything it cannot take apart.
"""

from __future__ import annotations

from dataclasses import dataclass

from devices.base import ProtocolError
from devices.energy_router import ber
from devices.energy_router.ber import APPLICATION, CONTEXT, UNIVERSAL, Tlv

TPKT_VERSION = 3
MAX_TPKT = 65535
MAX_TSDU = 1 << 18  # a reassembled request larger than this is refused
# COTP TPDU codes
CR, CC, DR, DT, ER = 0xE0, 0xD0, 0x80, 0xF0, 0x70
# session SPDU identifiers
SPDU_CN, SPDU_AC, SPDU_RF, SPDU_FN, SPDU_DN, SPDU_AB, SPDU_DT_GT = 13, 14, 12, 9, 10, 25, 1
DATA_PREFIX = b"\x01\x00\x01\x00"  # Give-Tokens SPDU + Data-Transfer SPDU, both empty
ACSE_SYNTAX = bytes.fromhex("52010001")  # 2.2.1.0.1
MMS_SYNTAX = bytes.fromhex("28ca220201")  # 1.0.9506.2.1
BER_SYNTAX = bytes.fromhex("5101")  # 2.1.1
MMS_APPLICATION_CONTEXT = "1.0.9506.2.3"


class IsoError(ProtocolError):
    """A TPKT, COTP, session, presentation or ACSE unit this server cannot decode."""


# -- TPKT / COTP -------------------------------------------------------------------------------------------
def tpkt(payload: bytes) -> bytes:
    if len(payload) + 4 > MAX_TPKT:
        raise IsoError("TPKT payload too large")
    return bytes([TPKT_VERSION, 0]) + (len(payload) + 4).to_bytes(2, "big") + payload


def tpkt_length(header: bytes) -> int:
    """Total length announced by a 4-byte TPKT header (including it)."""
    if len(header) != 4 or header[0] != TPKT_VERSION:
        raise IsoError(f"not a TPKT header: {header.hex()}")
    length = int.from_bytes(header[2:4], "big")
    if length < 7:  # header + the shortest COTP TPDU (DT: 3 octets)
        raise IsoError(f"TPKT length {length} too short")
    return length


@dataclass(frozen=True)
class Tpdu:
    code: int
    eot: bool = True
    data: bytes = b""
    src_ref: int = 0
    params: bytes = b""


def parse_tpdu(payload: bytes) -> Tpdu:
    if len(payload) < 2:
        raise IsoError("COTP TPDU too short")
    li = payload[0]
    if li == 255 or li + 1 > len(payload) or li < 1:
        raise IsoError(f"COTP length indicator {li} does not fit {len(payload)} octets")
    code = payload[1] & 0xF0
    header, data = payload[1:li + 1], payload[li + 1:]
    if code == DT:
        if li != 2:
            raise IsoError("COTP DT (class 0) has a length indicator of 2")
        return Tpdu(DT, bool(header[1] & 0x80), data)
    if code in (CR, DR):
        if li < 6:
            raise IsoError("COTP CR/DR header too short")
        return Tpdu(code, True, data, int.from_bytes(header[3:5], "big"), bytes(header[6:]))
    raise IsoError(f"COTP TPDU type 0x{code:02x} not supported")


def tpdu_size(params: bytes) -> int:
    """The TPDU size a CR proposes (default 128 octets), capped to what TPKT carries."""
    size, pos = 128, 0
    while pos + 2 <= len(params):
        code, length = params[pos], params[pos + 1]
        value = params[pos + 2:pos + 2 + length]
        if len(value) != length:
            raise IsoError("COTP parameter runs past the TPDU")
        if code == 0xC0 and length == 1 and 7 <= value[0] <= 13:
            size = 1 << value[0]
        pos += 2 + length
    return min(size, 8192)


def cc(dst_ref: int, params: bytes) -> bytes:
    """Connection confirm echoing the CR's parameters (TSAPs, TPDU size)."""
    body = bytes([CC]) + dst_ref.to_bytes(2, "big") + b"\x00\x01\x00" + params
    return bytes([len(body)]) + body


def dt(data: bytes, size: int) -> list[bytes]:
    """COTP DT TPDUs carrying ``data`` in segments that fit the negotiated TPDU size."""
    room = size - 3
    chunks = [data[k:k + room] for k in range(0, len(data), room)] or [b""]
    return [bytes([2, DT, 0x80 if k == len(chunks) - 1 else 0x00]) + c for k, c in enumerate(chunks)]


def er(reason: int = 0) -> bytes:
    """COTP ER TPDU (class 0): a protocol error in a received TPDU."""
    return bytes([3, ER, 0, 0]) + bytes([reason])  # dst-ref 0, reject cause


# -- session -----------------------------------------------------------------------------------------------
def _units(data: bytes) -> list[tuple[int, bytes]]:
    """The (code, value) parameter units of an SPDU body (PI and PGI, one- or three-octet lengths)."""
    out, pos = [], 0
    while pos < len(data):
        if pos + 2 > len(data):
            raise IsoError("truncated session parameter")
        code, length = data[pos], data[pos + 1]
        pos += 2
        if length == 0xFF:
            if pos + 2 > len(data):
                raise IsoError("truncated session parameter length")
            length = int.from_bytes(data[pos:pos + 2], "big")
            pos += 2
        if pos + length > len(data):
            raise IsoError("session parameter runs past the SPDU")
        out.append((code, data[pos:pos + length]))
        pos += length
    return out


def _spdu(data: bytes) -> tuple[int, bytes, bytes]:
    """(SI, parameters, what follows the SPDU) of the first SPDU in ``data``."""
    if len(data) < 2:
        raise IsoError("SPDU too short")
    si, li, pos = data[0], data[1], 2
    if li == 0xFF:
        if len(data) < 4:
            raise IsoError("truncated SPDU length")
        li, pos = int.from_bytes(data[2:4], "big"), 4
    if pos + li > len(data):
        raise IsoError("SPDU length runs past the TSDU")
    return si, data[pos:pos + li], data[pos + li:]


def _encode_spdu(si: int, body: bytes) -> bytes:
    if len(body) < 255:
        return bytes([si, len(body)]) + body
    return bytes([si, 0xFF]) + len(body).to_bytes(2, "big") + body


def _param(code: int, value: bytes) -> bytes:
    if len(value) < 255:
        return bytes([code, len(value)]) + value
    return bytes([code, 0xFF]) + len(value).to_bytes(2, "big") + value


def session_user_data(data: bytes, expected: tuple[int, ...]) -> tuple[int, bytes]:
    """(SI, user data) of a connect/finish/abort SPDU whose user data is a presentation PPDU."""
    si, params, _ = _spdu(data)
    if si not in expected:
        raise IsoError(f"session SPDU {si} where {expected} expected")
    for code, value in _units(params):
        if code in (193, 194):  # User Data, Extended User Data
            return si, value
    return si, b""


def session_accept(user_data: bytes) -> bytes:
    """AC SPDU: protocol options 0, version 2, duplex functional unit, then the CPA."""
    item = _param(19, b"\x00") + _param(22, b"\x02")
    return _encode_spdu(SPDU_AC, _param(5, item) + _param(20, b"\x00\x02") + _param(193, user_data))


def session_disconnect(user_data: bytes) -> bytes:
    return _encode_spdu(SPDU_DN, _param(193, user_data))


def session_data(data: bytes) -> tuple[int, bytes]:
    """(SI, presentation data) of a TSDU after the association: GT+DT carries data; FN, AB end it."""
    si, params, rest = _spdu(data)
    if si == SPDU_DT_GT:  # Give-Tokens (empty), then Data-Transfer
        si2, _, rest2 = _spdu(rest)
        if si2 != SPDU_DT_GT:
            raise IsoError(f"session SPDU {si2} after Give-Tokens")
        return SPDU_DT_GT, rest2
    if si in (SPDU_FN, SPDU_AB):
        return si, dict(_units(params)).get(193, b"")
    raise IsoError(f"session SPDU {si} not expected during data transfer")


# -- presentation + ACSE -----------------------------------------------------------------------------------
@dataclass(frozen=True)
class Association:
    """What the client proposed: context ids for ACSE and MMS, context results owed, and the MMS Initiate."""

    acse_ctx: int
    mms_ctx: int
    results: tuple[bool, ...]
    called_psel: bytes
    initiate: Tlv


def parse_connect(ppdu: bytes) -> Association:
    """CP-type PPDU (ISO 8823) carrying an AARQ with an MMS Initiate-RequestPDU."""
    cp = ber.decode(ppdu)
    if not cp.is_(UNIVERSAL, 17):
        raise IsoError("CP-type is a SET")
    normal = cp.need(CONTEXT, 2, "normal-mode-parameters")
    called = normal.child(CONTEXT, 2)
    contexts = normal.need(CONTEXT, 4, "presentation-context-definition-list")
    acse = mms = None
    results = []
    for item in contexts.children:
        pcid = item.child(UNIVERSAL, 2)
        syntax = item.child(UNIVERSAL, 6)
        if pcid is None or syntax is None:
            raise IsoError("presentation context without id or abstract syntax")
        ctx = ber.to_int(pcid)
        if syntax.value == ACSE_SYNTAX:
            acse = ctx
        elif syntax.value == MMS_SYNTAX:
            mms = ctx
        results.append(syntax.value in (ACSE_SYNTAX, MMS_SYNTAX))
    if acse is None or mms is None:
        raise IsoError("the client proposed no ACSE or no MMS presentation context")
    aarq = _single_pdv(normal.need(APPLICATION, 1, "presentation user data"), acse)
    if not aarq.is_(APPLICATION, 0):
        raise IsoError("ACSE AARQ expected")
    return Association(acse, mms, tuple(results), called.value if called else b"", _user_information(aarq))


def _single_pdv(user_data: Tlv, ctx: int | None = None) -> Tlv:
    """The one presentation data value of fully-encoded user data (``ctx``: the context id it must have)."""
    pdv = user_data.only("PDV list")
    pcid = pdv.need(UNIVERSAL, 2, "presentation-context-identifier")
    if ctx is not None and ber.to_int(pcid) != ctx:
        raise IsoError(f"presentation context {ber.to_int(pcid)} where {ctx} expected")
    return pdv.need(CONTEXT, 0, "single-ASN1-type").only("single-ASN1-type")


def _user_information(apdu: Tlv) -> Tlv:
    info = apdu.need(CONTEXT, 30, "ACSE user-information")
    external = info.only("user-information")
    if not external.is_(UNIVERSAL, 8):
        raise IsoError("user-information is an EXTERNAL")
    return external.need(CONTEXT, 0, "EXTERNAL single-ASN1-type").only("EXTERNAL encoding")


def accept(assoc: Association, initiate_response: bytes) -> bytes:
    """CPA-PPDU with an AARE (accepted) carrying the MMS Initiate-ResponsePDU."""
    aare = ber.seq(
        0x61,
        ber.seq(0xA1, ber.oid(0x06, MMS_APPLICATION_CONTEXT)),
        ber.seq(0xA2, ber.integer(0x02, 0)),  # result: accepted
        ber.seq(0xA3, ber.seq(0xA1, ber.integer(0x02, 0))),  # source diagnostic: acse-service-user, null
        ber.seq(0xBE, ber.seq(0x28, ber.integer(0x02, assoc.mms_ctx), ber.seq(0xA0, initiate_response))),
    )
    results = b"".join(ber.seq(0x30, ber.integer(0x80, 0 if ok else 2), ber.tlv(0x81, BER_SYNTAX))
                       for ok in assoc.results)
    normal = ber.seq(0xA2, *(([ber.tlv(0x83, assoc.called_psel)] if assoc.called_psel else [])
                             + [ber.seq(0xA5, results), user_data(assoc.acse_ctx, aare)]))
    return ber.seq(0x31, ber.seq(0xA0, ber.integer(0x80, 1)), normal)


def user_data(ctx: int, pdu: bytes) -> bytes:
    """Fully-encoded presentation user data with one PDV."""
    return ber.seq(0x61, ber.seq(0x30, ber.integer(0x02, ctx), ber.seq(0xA0, pdu)))


def parse_data(ppdu: bytes, ctx: int) -> Tlv:
    """The MMS PDU inside fully-encoded presentation user data."""
    return _single_pdv(ber.decode(ppdu), ctx)


def release_response(acse_ctx: int) -> bytes:
    """Presentation user data with an ACSE RLRE (reason: normal)."""
    return user_data(acse_ctx, ber.seq(0x63, ber.integer(0x80, 0)))
