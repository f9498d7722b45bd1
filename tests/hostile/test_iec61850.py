"""Hostile input against the IEC 61850 stack we wrote (BER, TPKT/COTP, session/presentation/ACSE, MMS, the SCL
data model's value parser): every decoder gives its typed error or the protocol's own answer, never a crash or a
hang, and the server keeps serving an independent client afterwards."""

from __future__ import annotations

import socket

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from benchmarks.hostile_inputs.iec61850 import association_request, cotp_cr, dt, mms_frame
from devices import registry
from devices.base import ProtocolError
from devices.energy_router import ber
from devices.energy_router import iso_stack as iso
from devices.energy_router.mms import MmsServer
from devices.energy_router.virtual import VirtualEnergyRouter, load_model
from devices.io_loop import IoLoop

FAMILY = registry.family("energy_router")
FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
LIVE = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                       HealthCheck.function_scoped_fixture])


def tlvs(max_leaves: int = 12) -> st.SearchStrategy[bytes]:
    """Well-formed BER trees with arbitrary tags: structure deep enough to reach the service decoders."""
    tag = st.integers(0, 30)
    cls = st.sampled_from([0x00, 0x40, 0x80, 0xC0])
    leaf = st.builds(lambda c, t, v: ber.tlv(c | t, v), cls, tag, st.binary(max_size=12))
    return st.recursive(leaf, lambda kids: st.builds(lambda c, t, xs: ber.seq(c | 0x20 | t, *xs), cls, tag,
                                                     st.lists(kids, max_size=4)), max_leaves=max_leaves)


# -- decoders in isolation --------------------------------------------------------------------------------------
@FUZZ
@given(st.binary(max_size=300))
def test_ber_decoder_gives_a_tree_or_ber_error(data):
    try:
        ber.decode(data)
        ber.decode_all(data)
    except ber.BerError:
        pass


def test_ber_decoder_bounds_depth_and_length():
    deep = b""
    for _ in range(100):
        deep = ber.seq(0x30, deep)
    with pytest.raises(ber.BerError, match="deeper"):
        ber.decode(deep)
    for bad in (b"\x30\x80\x00\x00", b"\x04\x85\x00\x00\x00\x00\x01", b"\x04\x05ab", b"\x1f\xff\xff\xff\xff\x7f\x00"):
        with pytest.raises(ber.BerError):
            ber.decode(bad)


@FUZZ
@given(st.binary(max_size=200), st.binary(min_size=4, max_size=4))
def test_iso_decoders_give_typed_errors(data, header):
    for fn in (iso.parse_tpdu, lambda d: iso.session_user_data(d, (iso.SPDU_CN,)), iso.session_data,
               iso.parse_connect, lambda d: iso.parse_data(d, 3), iso.tpdu_size):
        try:
            fn(data)
        except ProtocolError:
            pass
    try:
        iso.tpkt_length(header)
    except iso.IsoError:
        pass


@FUZZ
@given(tlvs())
def test_presentation_and_acse_decoders_on_well_formed_ber(tree):
    for fn in (iso.parse_connect, lambda d: iso.parse_data(d, 1)):
        try:
            fn(tree)
        except ProtocolError:
            pass


MODEL_SERVER = MmsServer(load_model(FAMILY.parse_config({})), lambda *a: None)
ITEMS = MODEL_SERVER.model.names("ERLD0")


def _answer_is_ber(pdu: bytes) -> None:
    answer = MODEL_SERVER.handle(pdu)
    if answer is not None:
        ber.decode(answer)  # every answer is itself well-formed


@FUZZ
@given(st.binary(max_size=300))
def test_mms_server_answers_any_bytes(pdu):
    _answer_is_ber(pdu)


@FUZZ
@given(st.integers(0, 2**40), tlvs())
def test_mms_server_answers_any_confirmed_request(invoke_id, service):
    _answer_is_ber(ber.seq(0xA0, ber.integer(0x02, invoke_id), service))


@FUZZ
@given(st.sampled_from(ITEMS), tlvs(6))
def test_writes_of_arbitrary_data_to_every_attribute_are_answered(item, data):
    name = ber.seq(0x30, ber.seq(0xA0, ber.seq(0xA1, ber.visible(0x1A, "ERLD0"), ber.visible(0x1A, item))))
    write = ber.seq(0xA5, ber.seq(0xA0, name), ber.seq(0xA0, data))
    answer = MODEL_SERVER.handle(ber.seq(0xA0, ber.integer(0x02, 1), write))
    assert answer is not None and ber.decode(answer).number in (1, 4)  # a write response or a reject


# -- a live server on a socket ----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def live():
    io = IoLoop("hostile-iec61850")
    device = VirtualEnergyRouter(FAMILY, FAMILY.parse_config({}), device_id="hostile")
    io.run(device.start(), 10)
    io.run(device.advance(0, 60, {"pv_w_per_kwp": 300.0}), 10)
    yield device, io
    io.run(device.stop(), 10)
    io.close()


def _exchange(port: int, frames: list[bytes], *, expect_reply: bool) -> bytes:
    """Send frames, half-close, and read until the server closes: it must close (no hang) within the timeout."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        for frame in frames:
            s.sendall(frame)
        s.shutdown(socket.SHUT_WR)
        received = b""
        while chunk := s.recv(65536):  # socket.timeout (a hang) fails the test
            received += chunk
    if expect_reply:
        assert received, "no answer"
    return received


def _independent_read(port: int, io: IoLoop) -> float:
    import iec61850

    async def read() -> float:
        conn = await iec61850.IedConnection.connect(f"127.0.0.1:{port}", timeout_ms=3000)
        try:
            return await conn.read_float("ERLD0/MMDC1.Watt.instMag.f", iec61850.FC.MX)
        finally:
            await conn.disconnect()
    return io.run(read(), 10)


def test_our_association_bytes_are_accepted(live):
    device, _ = live
    reply = _exchange(device.port, [cotp_cr(), association_request(), mms_frame(ber.tlv(0x8B, b""))],
                      expect_reply=True)
    assert reply[5] == iso.CC and b"\x8c\x00" in reply  # connection confirm ... conclude response


@LIVE
@given(st.binary(max_size=200))
def test_garbage_before_the_association_is_closed_cleanly(live, data):
    device, _ = live
    _exchange(device.port, [data], expect_reply=False)
    _exchange(device.port, [cotp_cr(), dt(data)], expect_reply=True)  # the CC at least


@LIVE
@given(st.one_of(st.binary(max_size=200), tlvs()))
def test_any_mms_payload_in_an_association_is_answered_or_ignored(live, payload):
    device, _ = live
    reply = _exchange(device.port, [cotp_cr(), association_request(), mms_frame(payload)], expect_reply=True)
    assert reply.count(b"\x03\x00") >= 2  # CC and the association's accept came back at least


def test_the_server_keeps_serving_after_the_hostile_tests(live):
    device, io = live
    value = _independent_read(device.port, io)
    assert value == pytest.approx(-device.erbank.measure()["pv_p_w"][0])
    assert device.open_connections() <= 1
