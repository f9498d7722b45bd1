"""DLMS/COSEM encodings: A-XDR data, ACSE/xDLMS APDUs, HDLC frames and the wrapper (known bytes, round trips)."""

from __future__ import annotations

import datetime as dt

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from devices.meter import apdu as A
from devices.meter import axdr, hdlc, wrapper
from devices.meter.axdr import Data, DecodeError, Tag

# -- A-XDR --------------------------------------------------------------------------------------------------
_ints = {Tag.INTEGER: (-128, 127), Tag.LONG: (-2**15, 2**15 - 1), Tag.UNSIGNED: (0, 255),
         Tag.LONG_UNSIGNED: (0, 2**16 - 1), Tag.DOUBLE_LONG: (-2**31, 2**31 - 1), Tag.DOUBLE_LONG_UNSIGNED: (0, 2**32 - 1),
         Tag.LONG64: (-2**63, 2**63 - 1), Tag.LONG64_UNSIGNED: (0, 2**64 - 1), Tag.ENUM: (0, 255)}
scalars = st.one_of(
    st.just(Data(Tag.NULL)),
    st.booleans().map(axdr.boolean),
    *(st.integers(lo, hi).map(lambda v, t=t: Data(t, v)) for t, (lo, hi) in _ints.items()),
    st.binary(max_size=300).map(axdr.octets),
    st.text(st.characters(min_codepoint=32, max_codepoint=126), max_size=40).map(axdr.visible),
    st.floats(allow_nan=False, width=64).map(lambda f: Data(Tag.FLOAT64, f)),
    st.binary(min_size=12, max_size=12).map(lambda b: Data(Tag.DATE_TIME, b)),
    st.text("01", max_size=30).map(lambda s: Data(Tag.BIT_STRING, s)),
)
data = st.recursive(scalars, lambda kids: st.one_of(st.lists(kids, max_size=6).map(axdr.array),
                                                     st.lists(kids, max_size=6).map(lambda x: axdr.structure(*x))),
                    max_leaves=30)


@settings(max_examples=300, deadline=None)
@given(data)
def test_axdr_round_trip(d):
    raw = axdr.encode(d)
    assert axdr.decode_all(raw) == d


def test_axdr_known_bytes():
    assert axdr.encode(axdr.u32(61725)) == bytes.fromhex("060000f11d")
    scaler_unit = axdr.structure(axdr.i8(-1), axdr.enum(35))
    assert axdr.encode(scaler_unit) == bytes.fromhex("02020fff1623")
    assert axdr.encode(axdr.octets(b"\x01" * 200))[:4] == bytes.fromhex("0981c801")  # long length form
    assert axdr.encode_length(0x1234) == b"\x82\x12\x34"


def test_date_time_round_trip_and_deviation_convention():
    t = dt.datetime(2024, 3, 31, 1, 59, 58, tzinfo=dt.UTC)
    raw = axdr.datetime_octets(t, 60)  # CET: local 02:59:58, deviation -60 (minutes of local time to UTC)
    assert raw.hex() == "07e8031f07023b3a00ffc400"
    assert axdr.parse_datetime(raw) == t
    with pytest.raises(DecodeError):
        axdr.parse_datetime(bytes.fromhex("ffff031f07023b3a00ffc400"))  # year unspecified


# -- APDUs --------------------------------------------------------------------------------------------------
def test_aarq_matches_the_green_book_example():
    """The public-client AARQ of the Green Book (LN, no security, conformance 007E1F, PDU 0x04B0)."""
    expected = bytes.fromhex("601DA109060760857405080101BE10040E01000000065F1F0400007E1F04B0")
    assert A.encode_aarq(0x007E1F, 0x04B0) == expected
    aarq = A.decode_aarq(expected)
    assert aarq.context == A.CONTEXT_LN and aarq.mechanism is None
    init = A.decode_initiate_request(aarq.user_information)
    assert (init.dlms_version, init.conformance, init.max_pdu_size) == (6, 0x007E1F, 0x04B0)


def test_aarq_with_low_level_security_carries_the_password():
    raw = A.encode_aarq(0x001C1D, 512, b"12345678")
    aarq = A.decode_aarq(raw)
    assert A.mechanism_id(aarq.mechanism) == 1 and aarq.password == b"12345678"


def test_aare_accept_and_reject_round_trip():
    ok = A.decode_aare(A.encode_aare(A.AssociationResult.ACCEPTED, A.AcseDiagnostic.NULL,
                                     A.encode_initiate_response(0x001C1D, 512)))
    assert (ok.result, ok.diagnostic, ok.conformance, ok.max_pdu_size) == (0, 0, 0x001C1D, 512)
    refused = A.decode_aare(A.encode_aare(A.AssociationResult.REJECTED_PERMANENT, A.AcseDiagnostic.AUTHENTICATION_FAILURE,
                                          None))
    assert (refused.result, refused.diagnostic_source, refused.diagnostic) == (1, 1, 13)
    init = A.decode_aare(A.encode_aare(A.AssociationResult.REJECTED_PERMANENT, A.AcseDiagnostic.NO_REASON_GIVEN,
                                       A.encode_initiate_error(A.InitiateError.DLMS_VERSION_TOO_LOW)))
    assert init.initiate_error == 1


def test_get_requests_and_responses_round_trip():
    ref = A.AttributeRef(3, axdr.obis_bytes("1.0.1.8.0.255"), 2)
    assert A.encode_get_normal(0xC1, ref).hex() == "c001c100030100010800ff0200"
    assert A.decode_get_request(A.encode_get_normal(0xC1, ref)) == A.GetNormal(0xC1, ref, None)
    sel = A.Selection(1, axdr.structure(axdr.u8(1)))
    assert A.decode_get_request(A.encode_get_normal(0xC2, ref, sel)) == A.GetNormal(0xC2, ref, sel)
    assert A.decode_get_request(A.encode_get_next(0xC3, 7)) == A.GetNext(0xC3, 7)
    assert A.decode_get_request(A.encode_get_with_list(0xC4, [ref, ref])) == A.GetWithList(0xC4, ((ref, None),) * 2)
    r = A.decode_get_response(A.encode_get_response_normal(0xC1, axdr.u32(5)))
    assert r.kind == 1 and r.result == axdr.u32(5)
    r = A.decode_get_response(A.encode_get_response_block(0xC1, True, 3, b"abc"))
    assert (r.kind, r.last, r.block, r.raw) == (2, True, 3, b"abc")
    r = A.decode_get_response(A.encode_get_response_with_list(0xC1, [axdr.u16(1), 4]))
    assert r.results == (axdr.u16(1), 4)


# -- HDLC ---------------------------------------------------------------------------------------------------
def test_hdlc_snrm_matches_the_known_frame():
    """SNRM from the public client (0x21) to server 1 (0x03), no parameters: 7E A0 07 03 21 93 0F 01 7E."""
    frame = hdlc.Frame(hdlc.Address(1), hdlc.Address(16), hdlc.SNRM)
    assert frame.encode().hex() == "7ea0070321930f017e"
    assert hdlc.crc16(b"123456789") == 0x906E  # CRC-16/X.25 check value


addresses = st.one_of(st.integers(0, 0x7F).map(hdlc.Address),
                      st.tuples(st.integers(0, 0x7F), st.integers(0, 0x7F)).map(lambda a: hdlc.Address(*a, 2)),
                      st.tuples(st.integers(0, 0x3FFF), st.integers(0, 0x3FFF)).map(lambda a: hdlc.Address(*a, 4)))


@settings(max_examples=200, deadline=None)
@given(addresses, addresses, st.integers(0, 255), st.binary(max_size=200), st.booleans(),
       st.lists(st.integers(1, 64), max_size=8))
def test_hdlc_frames_round_trip_through_a_chunked_stream(dst, src, control, info, segmented, cuts):
    frame = hdlc.Frame(dst, src, control, info, segmented)
    raw = frame.encode()
    reader = hdlc.FrameReader()
    got, pos = [], 0
    stream = b"\x00\x13garbage" + raw + raw  # noise first, then two frames back to back
    for cut in cuts + [len(stream)]:
        got += reader.feed(stream[pos:pos + cut])
        pos += cut
    got += reader.feed(stream[pos:])
    assert [g for g in got if isinstance(g, hdlc.Frame)] == [frame, frame]


def test_hdlc_negotiation_round_trip():
    info = hdlc.negotiation(128, 512)
    assert hdlc.parse_negotiation(info) == {5: 128, 6: 512, 7: 1, 8: 1}
    assert info.hex().startswith("818013050180060202")


def test_wrapper_header():
    raw = wrapper.wrap(16, 1, b"\xc0\x01")
    assert raw.hex() == "0001001000010002c001"
    assert wrapper.parse_header(raw[:8]) == wrapper.WrapperHeader(16, 1, 2)
    with pytest.raises(DecodeError, match="version"):
        wrapper.parse_header(b"\x00\x02" + raw[2:8])


def test_hdlc_server_link_sequence_segmentation_and_a_foreign_client():
    """SNRM/UA, a long response in segments acknowledged by RR, sequence numbers, DM to another client."""
    replies = []
    link = hdlc.ServerLink(1, 17, lambda sap, apdu: replies.append((sap, apdu)) or b"\xc4" + bytes(300),
                           lambda sap: None, max_info=128)
    me, c16, c32 = hdlc.Address(1, 17, 2), hdlc.Address(16), hdlc.Address(32)

    def send(frame):
        return [hdlc.decode_frame(raw[1:-1]) for raw in link.feed(frame.encode())]

    ua, = send(hdlc.Frame(me, c16, hdlc.SNRM))
    assert ua.kind == hdlc.UA and hdlc.parse_negotiation(ua.info)[5] == 128
    dm, = send(hdlc.Frame(me, c32, hdlc.i_control(0, 0), hdlc.LLC_REQUEST + b"\xc0"))
    assert dm.kind == hdlc.DM and dm.destination == c32
    first, = send(hdlc.Frame(me, c16, hdlc.i_control(0, 0), hdlc.LLC_REQUEST + b"\xc0\x01"))
    assert replies == [(16, b"\xc0\x01")]
    assert first.segmented and first.ns == 0 and first.nr == 1 and first.info.startswith(hdlc.LLC_RESPONSE)
    data = bytearray(first.info)
    while True:
        nxt, = send(hdlc.Frame(me, c16, hdlc.rr_control(len(data) // 128)))
        data += nxt.info
        if not nxt.segmented:
            break
    assert bytes(data) == hdlc.LLC_RESPONSE + b"\xc4" + bytes(300)
    assert send(hdlc.Frame(hdlc.Address(2), c16, hdlc.SNRM)) == []  # another logical device: not for us
    ua, = send(hdlc.Frame(me, c16, hdlc.DISC))
    assert ua.kind == hdlc.UA
    dm, = send(hdlc.Frame(me, c16, hdlc.DISC))
    assert dm.kind == hdlc.DM
