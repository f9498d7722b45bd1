"""DLMS/COSEM APDUs for logical-name referencing, both directions (Green Book encodings).

* ACSE (BER): AARQ / AARE with the xDLMS InitiateRequest / InitiateResponse (A-XDR) in user-information,
  lowest and low-level security (LLS password), RLRQ / RLRE.
* xDLMS (A-XDR): GET request normal / next / with-list and the matching responses (normal, with data block,
  with list), SET request normal (decoded to be refused), ExceptionResponse.

Decoders raise :class:`~devices.meter.axdr.DecodeError` (a ProtocolError) for anything malformed, bounded in
size and depth, never another exception.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum

from devices.meter import axdr
from devices.meter.axdr import Data, DecodeError, decode_length, encode_length, take

# APDU tags
AARQ, AARE, RLRQ, RLRE = 0x60, 0x61, 0x62, 0x63
GET_REQUEST, SET_REQUEST, ACTION_REQUEST = 0xC0, 0xC1, 0xC3
GET_RESPONSE, SET_RESPONSE, ACTION_RESPONSE = 0xC4, 0xC5, 0xC7
EXCEPTION_RESPONSE = 0xD8
INITIATE_REQUEST, INITIATE_RESPONSE, CONFIRMED_SERVICE_ERROR = 0x01, 0x08, 0x0E

# object identifiers (content octets of 2.16.756.5.8.1.x / 2.16.756.5.8.2.x)
_OID_PREFIX = bytes([0x60, 0x85, 0x74, 0x05, 0x08])
CONTEXT_LN = _OID_PREFIX + bytes([1, 1])
CONTEXT_LN_CIPHERED = _OID_PREFIX + bytes([1, 3])
MECHANISM_LLS = _OID_PREFIX + bytes([2, 1])


def mechanism_id(oid: bytes) -> int | None:
    """The authentication mechanism number of a mechanism-name OID (0 lowest, 1 low, 2..7 high)."""
    if len(oid) == 7 and oid[:6] == _OID_PREFIX + b"\x02":
        return oid[6]
    return None


class Conformance:
    """Conformance block bits (24-bit string, bit 0 = most significant), Green Book numbering."""

    BLOCK_TRANSFER_WITH_GET = 1 << (23 - 11)
    MULTIPLE_REFERENCES = 1 << (23 - 14)
    GET = 1 << (23 - 19)
    SET = 1 << (23 - 20)
    SELECTIVE_ACCESS = 1 << (23 - 21)
    ACTION = 1 << (23 - 23)


class AssociationResult(IntEnum):
    ACCEPTED = 0
    REJECTED_PERMANENT = 1
    REJECTED_TRANSIENT = 2


class AcseDiagnostic(IntEnum):
    """acse-service-user diagnostics of an AARE."""

    NULL = 0
    NO_REASON_GIVEN = 1
    APPLICATION_CONTEXT_NAME_NOT_SUPPORTED = 2
    AUTHENTICATION_MECHANISM_NAME_NOT_RECOGNISED = 11
    AUTHENTICATION_MECHANISM_NAME_REQUIRED = 12
    AUTHENTICATION_FAILURE = 13
    AUTHENTICATION_REQUIRED = 14


class InitiateError(IntEnum):
    OTHER = 0
    DLMS_VERSION_TOO_LOW = 1
    INCOMPATIBLE_CONFORMANCE = 2
    PDU_SIZE_TOO_SHORT = 3
    REFUSED_BY_THE_VDE_HANDLER = 4


class DataAccessResult(IntEnum):
    SUCCESS = 0
    HARDWARE_FAULT = 1
    TEMPORARY_FAILURE = 2
    READ_WRITE_DENIED = 3
    OBJECT_UNDEFINED = 4
    OBJECT_CLASS_INCONSISTENT = 9
    OBJECT_UNAVAILABLE = 11
    TYPE_UNMATCHED = 12
    SCOPE_OF_ACCESS_VIOLATED = 13
    DATA_BLOCK_UNAVAILABLE = 14
    LONG_GET_ABORTED = 15
    NO_LONG_GET_IN_PROGRESS = 16
    LONG_SET_ABORTED = 17
    NO_LONG_SET_IN_PROGRESS = 18
    DATA_BLOCK_NUMBER_INVALID = 19
    OTHER_REASON = 250


class StateError(IntEnum):
    SERVICE_NOT_ALLOWED = 1
    SERVICE_UNKNOWN = 2


class ServiceError(IntEnum):
    OPERATION_NOT_POSSIBLE = 1
    SERVICE_NOT_SUPPORTED = 2
    OTHER_REASON = 3
    PDU_TOO_LONG = 4


def dar_name(code: int) -> str:
    try:
        return DataAccessResult(code).name.lower().replace("_", "-")
    except ValueError:
        return f"data-access-result-{code}"


# -- BER (ACSE) ---------------------------------------------------------------------------------------------
def ber_tlv(tag: int, value: bytes) -> bytes:
    return bytes([tag]) + encode_length(len(value)) + value


def ber_items(buf: bytes) -> list[tuple[int, bytes]]:
    """The TLVs filling ``buf`` (single-octet tags, definite lengths)."""
    items, pos = [], 0
    while pos < len(buf):
        tag = buf[pos]
        if tag & 0x1F == 0x1F:
            raise DecodeError(f"multi-octet BER tag 0x{tag:02x} not expected here")
        n, pos = decode_length(buf, pos + 1)
        value, pos = take(buf, pos, n, f"BER 0x{tag:02x}")
        items.append((tag, value))
    return items


def _one(buf: bytes, tag: int) -> bytes:
    items = ber_items(buf)
    if len(items) != 1 or items[0][0] != tag:
        raise DecodeError(f"expected one BER 0x{tag:02x}, got {[hex(t) for t, _ in items]}")
    return items[0][1]


def _apdu_body(apdu: bytes, tag: int) -> bytes:
    if not apdu or apdu[0] != tag:
        raise DecodeError(f"expected APDU 0x{tag:02x}")
    n, pos = decode_length(apdu, 1)
    body, end = take(apdu, pos, n, "APDU")
    if end != len(apdu):
        raise DecodeError(f"{len(apdu) - end} bytes after the APDU")
    return body


def _int_value(raw: bytes) -> int:
    """A BER INTEGER inside a context tag (02 len value)."""
    value = _one(raw, 0x02)
    if not 1 <= len(value) <= 4:
        raise DecodeError("BER integer of unexpected size")
    return int.from_bytes(value, "big", signed=True)


@dataclass(frozen=True)
class InitiateRequest:
    dlms_version: int
    conformance: int
    max_pdu_size: int


def encode_initiate_request(conformance: int, max_pdu_size: int) -> bytes:
    return (bytes([INITIATE_REQUEST, 0, 0, 0, 6, 0x5F, 0x1F, 0x04, 0x00]) + conformance.to_bytes(3, "big")
            + max_pdu_size.to_bytes(2, "big"))


def decode_initiate_request(raw: bytes) -> InitiateRequest:
    if not raw or raw[0] != INITIATE_REQUEST:
        raise DecodeError("user-information is not an xDLMS InitiateRequest")
    pos = 1
    flag, pos = take(raw, pos, 1, "dedicated-key flag")
    if flag[0]:
        n, pos = decode_length(raw, pos)
        _, pos = take(raw, pos, n, "dedicated-key")
    flag, pos = take(raw, pos, 1, "response-allowed flag")
    if flag[0]:
        _, pos = take(raw, pos, 1, "response-allowed")
    flag, pos = take(raw, pos, 1, "quality-of-service flag")
    if flag[0]:
        _, pos = take(raw, pos, 1, "quality-of-service")
    version, pos = take(raw, pos, 1, "dlms-version")
    head, pos = take(raw, pos, 4, "conformance header")
    if head != b"\x5f\x1f\x04\x00":
        raise DecodeError(f"conformance block header {head.hex()} (expected 5f1f0400)")
    conf, pos = take(raw, pos, 3, "conformance")
    size, pos = take(raw, pos, 2, "client-max-receive-pdu-size")
    if pos != len(raw):
        raise DecodeError("bytes after the InitiateRequest")
    return InitiateRequest(version[0], int.from_bytes(conf, "big"), int.from_bytes(size, "big"))


@dataclass(frozen=True)
class Aarq:
    context: bytes
    mechanism: bytes | None
    password: bytes | None
    user_information: bytes | None  # the xDLMS APDU inside


def encode_aarq(conformance: int, max_pdu_size: int, password: bytes | None = None) -> bytes:
    body = ber_tlv(0xA1, ber_tlv(0x06, CONTEXT_LN))
    if password is not None:
        body += ber_tlv(0x8A, b"\x07\x80") + ber_tlv(0x8B, MECHANISM_LLS) + ber_tlv(0xAC, ber_tlv(0x80, password))
    body += ber_tlv(0xBE, ber_tlv(0x04, encode_initiate_request(conformance, max_pdu_size)))
    return ber_tlv(AARQ, body)


def decode_aarq(apdu: bytes) -> Aarq:
    context = mechanism = password = user = None
    for tag, value in ber_items(_apdu_body(apdu, AARQ)):
        if tag == 0xA1:
            context = _one(value, 0x06)
        elif tag == 0x8B:
            mechanism = value
        elif tag == 0xAC:
            items = ber_items(value)
            if len(items) != 1 or items[0][0] not in (0x80, 0x81):
                raise DecodeError("calling-authentication-value is neither a charstring nor a bitstring")
            password = items[0][1]
        elif tag == 0xBE:
            user = _one(value, 0x04)
    if context is None:
        raise DecodeError("AARQ without application-context-name")
    return Aarq(context, mechanism, password, user)


@dataclass(frozen=True)
class Aare:
    result: int
    diagnostic_source: int  # 1 acse-service-user, 2 acse-service-provider
    diagnostic: int
    conformance: int = 0
    max_pdu_size: int = 0
    initiate_error: int | None = None


def encode_initiate_response(conformance: int, max_pdu_size: int) -> bytes:
    return (bytes([INITIATE_RESPONSE, 0, 6, 0x5F, 0x1F, 0x04, 0x00]) + conformance.to_bytes(3, "big")
            + max_pdu_size.to_bytes(2, "big") + b"\x00\x07")  # vaa-name 0x0007: LN referencing


def encode_initiate_error(error: InitiateError) -> bytes:
    return bytes([CONFIRMED_SERVICE_ERROR, 0x01, 0x06, int(error)])  # initiateError [1], initiate [6]


def encode_aare(result: AssociationResult, diagnostic: AcseDiagnostic, user_information: bytes | None,
                lls: bool = False, context: bytes = CONTEXT_LN) -> bytes:
    body = ber_tlv(0xA1, ber_tlv(0x06, context))
    body += ber_tlv(0xA2, ber_tlv(0x02, bytes([int(result)])))
    body += ber_tlv(0xA3, ber_tlv(0xA1, ber_tlv(0x02, bytes([int(diagnostic)]))))
    if lls:
        body += ber_tlv(0x88, b"\x07\x80") + ber_tlv(0x89, MECHANISM_LLS)
    if user_information is not None:
        body += ber_tlv(0xBE, ber_tlv(0x04, user_information))
    return ber_tlv(AARE, body)


def decode_aare(apdu: bytes) -> Aare:
    result = source = diagnostic = None
    conformance = max_pdu = 0
    initiate_error = None
    for tag, value in ber_items(_apdu_body(apdu, AARE)):
        if tag == 0xA2:
            result = _int_value(value)
        elif tag == 0xA3:
            items = ber_items(value)
            if len(items) != 1 or items[0][0] not in (0xA1, 0xA2):
                raise DecodeError("result-source-diagnostic malformed")
            source, diagnostic = items[0][0] & 0x0F, _int_value(items[0][1])
        elif tag == 0xBE:
            user = _one(value, 0x04)
            if user[:1] == bytes([INITIATE_RESPONSE]):
                if len(user) < 14 or user[3:7] != b"\x5f\x1f\x04\x00":
                    raise DecodeError(f"InitiateResponse malformed: {user.hex()}")
                pos = 1 + (2 if user[1] else 1)  # negotiated-quality-of-service, optional
                pos += 1  # dlms version
                conformance = int.from_bytes(user[pos + 4:pos + 7], "big")
                max_pdu = int.from_bytes(user[pos + 7:pos + 9], "big")
            elif user[:1] == bytes([CONFIRMED_SERVICE_ERROR]) and len(user) >= 4:
                initiate_error = user[3]
            else:
                raise DecodeError(f"AARE user-information not understood: {user[:16].hex()}")
    if result is None or source is None or diagnostic is None:
        raise DecodeError("AARE without result or diagnostic")
    return Aare(result, source, diagnostic, conformance, max_pdu, initiate_error)


def encode_rlrq() -> bytes:
    return ber_tlv(RLRQ, ber_tlv(0x80, b"\x00"))  # reason: normal


def encode_rlre() -> bytes:
    return ber_tlv(RLRE, ber_tlv(0x80, b"\x00"))


def check_rlre(apdu: bytes) -> None:
    ber_items(_apdu_body(apdu, RLRE))


# -- xDLMS (A-XDR) ------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class AttributeRef:
    class_id: int
    ln: bytes
    attribute: int

    def encode(self) -> bytes:
        return self.class_id.to_bytes(2, "big") + self.ln + bytes([self.attribute & 0xFF])


@dataclass(frozen=True)
class Selection:
    selector: int
    parameters: Data


@dataclass(frozen=True)
class GetNormal:
    invoke: int
    ref: AttributeRef
    selection: Selection | None = None


@dataclass(frozen=True)
class GetNext:
    invoke: int
    block: int


@dataclass(frozen=True)
class GetWithList:
    invoke: int
    items: tuple[tuple[AttributeRef, Selection | None], ...]


@dataclass(frozen=True)
class SetNormal:
    invoke: int
    ref: AttributeRef
    value: Data


def _ref(buf: bytes, pos: int) -> tuple[AttributeRef, int]:
    raw, pos = take(buf, pos, 9, "cosem-attribute-descriptor")
    attribute = raw[8] - 256 if raw[8] > 127 else raw[8]
    return AttributeRef(int.from_bytes(raw[:2], "big"), raw[2:8], attribute), pos


def _selection(buf: bytes, pos: int) -> tuple[Selection | None, int]:
    flag, pos = take(buf, pos, 1, "access-selection flag")
    if flag[0] == 0:
        return None, pos
    if flag[0] != 1:
        raise DecodeError(f"access-selection flag {flag[0]}")
    selector, pos = take(buf, pos, 1, "access-selector")
    params, pos = axdr.decode(buf, pos)
    return Selection(selector[0], params), pos


def _end(buf: bytes, pos: int) -> None:
    if pos != len(buf):
        raise DecodeError(f"{len(buf) - pos} bytes after the request")


def decode_get_request(apdu: bytes) -> GetNormal | GetNext | GetWithList:
    if len(apdu) < 3 or apdu[0] != GET_REQUEST:
        raise DecodeError("not a GET request")
    kind, invoke, pos = apdu[1], apdu[2], 3
    if kind == 1:
        ref, pos = _ref(apdu, pos)
        sel, pos = _selection(apdu, pos)
        _end(apdu, pos)
        return GetNormal(invoke, ref, sel)
    if kind == 2:
        raw, pos = take(apdu, pos, 4, "block-number")
        _end(apdu, pos)
        return GetNext(invoke, int.from_bytes(raw, "big"))
    if kind == 3:
        count, pos = decode_length(apdu, pos)
        if count == 0 or count * 10 > len(apdu) - pos:
            raise DecodeError(f"GET with list of {count} attributes in {len(apdu) - pos} bytes")
        items = []
        for _ in range(count):
            ref, pos = _ref(apdu, pos)
            sel, pos = _selection(apdu, pos)
            items.append((ref, sel))
        _end(apdu, pos)
        return GetWithList(invoke, tuple(items))
    raise DecodeError(f"GET request choice {kind} unknown")


def decode_set_request(apdu: bytes) -> SetNormal:
    if len(apdu) < 3 or apdu[0] != SET_REQUEST:
        raise DecodeError("not a SET request")
    if apdu[1] != 1:
        raise DecodeError(f"SET request choice {apdu[1]} not supported")
    invoke = apdu[2]
    ref, pos = _ref(apdu, 3)
    _, pos = _selection(apdu, pos)
    value, pos = axdr.decode(apdu, pos)
    _end(apdu, pos)
    return SetNormal(invoke, ref, value)


def encode_get_normal(invoke: int, ref: AttributeRef, selection: Selection | None = None) -> bytes:
    sel = b"\x00" if selection is None else bytes([1, selection.selector]) + axdr.encode(selection.parameters)
    return bytes([GET_REQUEST, 1, invoke]) + ref.encode() + sel


def encode_get_next(invoke: int, block: int) -> bytes:
    return bytes([GET_REQUEST, 2, invoke]) + block.to_bytes(4, "big")


def encode_get_with_list(invoke: int, refs: list[AttributeRef]) -> bytes:
    return bytes([GET_REQUEST, 3, invoke]) + encode_length(len(refs)) + b"".join(r.encode() + b"\x00" for r in refs)


def encode_set_normal(invoke: int, ref: AttributeRef, value: Data) -> bytes:
    return bytes([SET_REQUEST, 1, invoke]) + ref.encode() + b"\x00" + axdr.encode(value)


# responses
Result = Data | int  # a value, or a data-access-result code


def encode_result(result: Result) -> bytes:
    """Get-Data-Result: [0] data or [1] data-access-result."""
    if isinstance(result, Data):
        return b"\x00" + axdr.encode(result)
    return bytes([1, int(result)])


def encode_get_response_normal(invoke: int, result: Result) -> bytes:
    return bytes([GET_RESPONSE, 1, invoke]) + encode_result(result)


def encode_get_response_list_body(results: list[Result]) -> bytes:
    return encode_length(len(results)) + b"".join(encode_result(r) for r in results)


def encode_get_response_with_list(invoke: int, results: list[Result]) -> bytes:
    return bytes([GET_RESPONSE, 3, invoke]) + encode_get_response_list_body(results)


def encode_get_response_block(invoke: int, last: bool, block: int, raw: bytes | int) -> bytes:
    head = bytes([GET_RESPONSE, 2, invoke, 1 if last else 0]) + block.to_bytes(4, "big")
    if isinstance(raw, int):
        return head + bytes([1, raw])
    return head + b"\x00" + encode_length(len(raw)) + raw


def encode_set_response_normal(invoke: int, result: DataAccessResult) -> bytes:
    return bytes([SET_RESPONSE, 1, invoke, int(result)])


def encode_exception(state: StateError, service: ServiceError) -> bytes:
    return bytes([EXCEPTION_RESPONSE, int(state), int(service)])


@dataclass(frozen=True)
class GetResponse:
    kind: int  # 1 normal, 2 with data block, 3 with list
    invoke: int
    result: Result | None = None  # normal
    last: bool = True  # with data block
    block: int = 0
    raw: bytes | int = b""  # with data block: raw data or a data-access-result
    results: tuple[Result, ...] = ()  # with list


def decode_result(buf: bytes, pos: int) -> tuple[Result, int]:
    choice, pos = take(buf, pos, 1, "Get-Data-Result choice")
    if choice[0] == 0:
        return axdr.decode(buf, pos)
    if choice[0] == 1:
        code, pos = take(buf, pos, 1, "data-access-result")
        return code[0], pos
    raise DecodeError(f"Get-Data-Result choice {choice[0]}")


def decode_list_body(buf: bytes, pos: int = 0) -> tuple[Result, ...]:
    count, pos = decode_length(buf, pos)
    if count > len(buf) - pos:
        raise DecodeError(f"list of {count} results in {len(buf) - pos} bytes")
    results = []
    for _ in range(count):
        r, pos = decode_result(buf, pos)
        results.append(r)
    if pos != len(buf):
        raise DecodeError(f"{len(buf) - pos} bytes after the results")
    return tuple(results)


def decode_get_response(apdu: bytes) -> GetResponse:
    if len(apdu) < 3 or apdu[0] != GET_RESPONSE:
        raise DecodeError(f"not a GET response: {apdu[:8].hex()}")
    kind, invoke = apdu[1], apdu[2]
    if kind == 1:
        result, pos = decode_result(apdu, 3)
        _end(apdu, pos)
        return GetResponse(1, invoke, result=result)
    if kind == 2:
        head, pos = take(apdu, 3, 6, "data block header")
        last, block, choice = head[0] != 0, int.from_bytes(head[1:5], "big"), head[5]
        if choice == 0:
            n, pos = decode_length(apdu, pos)
            raw, pos = take(apdu, pos, n, "raw-data")
            _end(apdu, pos)
            return GetResponse(2, invoke, last=last, block=block, raw=raw)
        if choice == 1:
            code, pos = take(apdu, pos, 1, "data-access-result")
            _end(apdu, pos)
            return GetResponse(2, invoke, last=last, block=block, raw=code[0])
        raise DecodeError(f"data block result choice {choice}")
    if kind == 3:
        return GetResponse(3, invoke, results=decode_list_body(apdu, 3))
    raise DecodeError(f"GET response choice {kind}")
