"""Hostile input against every DLMS/COSEM decoder we wrote, on both sides.

Each decoder either returns a value or raises its typed error (DecodeError, a ProtocolError), never anything
else and never hangs; the meter answers every APDU with the protocol's own error and keeps serving other
clients; the driver facing a hostile meter raises ProtocolError or DeviceUnavailable within its timeout.
"""

from __future__ import annotations

import asyncio
import datetime as dt

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from benchmarks.hostile_inputs.dlms import REF, VALID_APDUS, VALID_HDLC_FRAMES, mutate
from devices import registry
from devices.base import Address, DeviceUnavailable, ProtocolError
from devices.meter import apdu as A
from devices.meter import axdr, hdlc, wrapper
from devices.meter.association import Association
from devices.meter.axdr import DecodeError
from devices.meter.driver import DlmsHdlcDriver, DlmsTcpDriver
from devices.meter.model import MeterBank, MeterConfig
from devices.meter.objects import CLASS_PROFILE, PROFILE_LN, MeterObjects
from devices.meter.server import hdlc_link
from devices.meter.virtual import VirtualMeter
from tests.test_meter_codec import data as axdr_data

FAM = registry.family("meter")
FUZZ = settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def mutations(valid: bytes) -> st.SearchStrategy[bytes]:
    """A valid encoding with bytes flipped, cut short or extended."""
    flips = st.lists(st.tuples(st.integers(0, max(len(valid) - 1, 0)), st.integers(0, 255)), max_size=4)
    return st.tuples(flips, st.integers(0, len(valid)), st.binary(max_size=8)).map(lambda t: mutate(valid, *t))


hostile_apdus = st.one_of(st.binary(max_size=300), st.sampled_from(VALID_APDUS).flatmap(mutations))

DECODERS = [axdr.decode_all, A.decode_aarq, A.decode_aare, A.decode_initiate_request, A.decode_get_request,
            A.decode_set_request, A.decode_get_response, A.decode_list_body, A.check_rlre, A.ber_items,
            hdlc.decode_frame, hdlc.parse_negotiation, wrapper.parse_header,
            lambda b: axdr.parse_datetime(b[:12].ljust(12, b"\x00"))]


@FUZZ
@given(hostile_apdus, st.sampled_from(DECODERS))
def test_every_decoder_returns_or_raises_its_typed_error(raw, decoder):
    try:
        decoder(raw)
    except DecodeError:
        pass
    assert issubclass(DecodeError, ProtocolError)


@FUZZ
@given(axdr_data.flatmap(lambda d: mutations(axdr.encode(d))))
def test_axdr_decoder_on_mutated_data(raw):
    try:
        axdr.decode_all(raw)
    except DecodeError:
        pass


def _association(associated: bool = True) -> Association:
    cfg = MeterConfig()
    bank = MeterBank([cfg])
    bank.step(0, 3600, {})
    assoc = Association(MeterObjects(bank, 0, cfg, "123"), cfg, 16)
    if associated:
        assert assoc.handle(A.encode_aarq(0x001C1D | A.Conformance.SET, 0xFFFF))[:1] == bytes([A.AARE])
        assert assoc.associated
    return assoc


@FUZZ
@given(st.lists(hostile_apdus, min_size=1, max_size=5), st.booleans())
@example(apdus=[A.encode_aarq(A.Conformance.SET, 0xFFFF)], associated=False)  # found by hypothesis: SET only
def test_the_meter_answers_every_apdu_with_a_protocol_reply(apdus, associated):
    assoc = _association(associated)
    for raw in apdus:
        reply = assoc.handle(raw)
        assert reply and reply[0] in (A.AARE, A.RLRE, A.GET_RESPONSE, A.SET_RESPONSE, A.EXCEPTION_RESPONSE)
    # and it still serves a proper request afterwards: release whatever the hostile AARQs negotiated (one may
    # have proposed SET only, and then GET is rightly refused), then associate as a client should
    if assoc.associated:
        assert assoc.handle(A.encode_rlrq())[0] == A.RLRE
    assert A.decode_aare(assoc.handle(A.encode_aarq(0x001C1D, 0xFFFF))).result == 0
    reply = A.decode_get_response(assoc.handle(A.encode_get_normal(0xC1, REF)))
    assert reply.result == axdr.u32(0)


@FUZZ
@given(axdr_data, st.integers(0, 255))
def test_profile_selective_access_with_any_parameters_gets_data_or_a_result_code(params, selector):
    assoc = _association()
    obj = assoc.objects.get(A.AttributeRef(CLASS_PROFILE, PROFILE_LN, 2), A.Selection(selector, params))
    assert isinstance(obj, (axdr.Data, int))


def test_malformed_apdus_get_the_documented_replies():
    assoc = _association(associated=False)
    assert assoc.handle(A.encode_get_normal(0xC1, REF)) == bytes([0xD8, 1, 1])  # not associated
    assert assoc.handle(b"\x60\x03\xa1\x01\x00")[:1] == bytes([A.AARE])  # a broken AARQ: refused AARE
    assoc = _association()
    assert assoc.handle(b"\xc0\x01\xc1\x00") == bytes([0xD8, 2, 3])  # truncated GET
    assert assoc.handle(b"\xee\x00") == bytes([0xD8, 2, 2])  # unknown service
    assert assoc.handle(b"\xc3\x01\xc1" + bytes(10)) == bytes([0xD8, 1, 2])  # ACTION: not negotiated
    assert assoc.handle(b"\xc0\x01\xc1" + bytes(600)) == bytes([0xD8, 1, 4])  # longer than the meter accepts
    assert A.decode_get_response(assoc.handle(A.encode_get_next(0xC1, 5))).raw == 16  # no long get in progress
    reply = A.decode_aare(assoc.handle(A.encode_aarq(0x001C1D, 0xFFFF)))  # associated already
    assert reply.result == 1


@FUZZ
@given(st.lists(st.one_of(st.binary(max_size=80), st.sampled_from(VALID_HDLC_FRAMES).flatmap(mutations)), max_size=8))
def test_the_hdlc_link_never_raises_and_only_sends_valid_frames(chunks):
    cfg = MeterConfig()
    bank = MeterBank([cfg])
    from devices.meter.server import CosemServer
    link = hdlc_link(CosemServer(MeterObjects(bank, 0, cfg, "1"), cfg))
    for chunk in chunks:
        for out in link.feed(chunk):
            frame = hdlc.decode_frame(out[1:-1])
            assert frame.destination.upper == 16 or frame.kind in (hdlc.DM, hdlc.FRMR, hdlc.UA)


# -- on sockets ---------------------------------------------------------------------------------------------
def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 60))


@settings(max_examples=15, deadline=None)
@given(st.lists(st.binary(min_size=1, max_size=200), min_size=1, max_size=4))
def test_garbage_on_the_sockets_does_not_stop_the_meter(chunks):
    async def body():
        meter = VirtualMeter(FAM, FAM.parse_config({}), device_id="hostile")
        tcp, hdlc_addr = await meter.start(), await meter.start_hdlc()
        try:
            for port in (meter.wrapper.port, meter.hdlc.port):
                _reader, writer = await asyncio.open_connection("127.0.0.1", port)
                for chunk in chunks:
                    writer.write(chunk)
                # a well-formed wrapper frame with a hostile APDU, too
                writer.write(wrapper.wrap(16, 1, chunks[0]))
                await writer.drain()
                writer.close()
            await meter.advance(0, 60, {"point_p_w": 42.0})
            for address, cls in ((tcp, DlmsTcpDriver), (hdlc_addr, DlmsHdlcDriver)):
                async with cls(Address.parse(address), FAM.capabilities(meter.cfg)) as d:
                    assert (await d.read()).values["p_w"] == 42.0
        finally:
            await meter.stop()
    run(body())


class HostileMeter:
    """A TCP wrapper peer that answers the AARQ properly (or not) and every later request with ``reply``."""

    def __init__(self, reply: bytes, aare_ok: bool) -> None:
        self.reply, self.aare_ok = reply, aare_ok
        self.server: asyncio.Server | None = None

    async def start(self) -> int:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return self.server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        assert self.server is not None
        self.server.close()
        await self.server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = wrapper.parse_header(await reader.readexactly(8))
                request = await reader.readexactly(head.length)
                if request[0] == A.AARQ and self.aare_ok:
                    body = A.encode_aare(A.AssociationResult.ACCEPTED, A.AcseDiagnostic.NULL,
                                         A.encode_initiate_response(0x001C1D, 512))
                else:
                    body = self.reply
                writer.write(wrapper.wrap(1, 16, body))
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError, DecodeError):
            pass
        finally:
            writer.close()


@settings(max_examples=25, deadline=None)
@given(hostile_apdus, st.booleans())
def test_the_driver_facing_a_hostile_meter_raises_typed_errors(reply, aare_ok):
    async def body():
        peer = HostileMeter(reply, aare_ok)
        port = await peer.start()
        d = DlmsTcpDriver(Address.parse(f"dlms+tcp://127.0.0.1:{port}/?client=16"), FAM.capabilities(MeterConfig()),
                          timeout_s=0.5)
        try:
            await d.connect()
            await d.read()
            await d.read_profile(dt.datetime(2024, 1, 1, tzinfo=dt.UTC),
                                 dt.datetime(2024, 1, 2, tzinfo=dt.UTC))
        except (ProtocolError, DeviceUnavailable):
            pass
        finally:
            await d.close()
            await peer.stop()
    run(body())


@pytest.mark.parametrize("raw", [b"\x00\x02\x00\x10\x00\x01\x00\x00", b"\x00\x01\x00\x10\x00\x07\x00\x02\xc0\x01"])
def test_a_bad_wrapper_header_or_another_logical_device_is_not_answered(raw):
    async def body():
        meter = VirtualMeter(FAM, FAM.parse_config({}), device_id="hostile")
        await meter.start()
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", meter.wrapper.port)
            writer.write(raw)
            await writer.drain()
            with pytest.raises((TimeoutError, asyncio.IncompleteReadError, ConnectionError)):
                data = await asyncio.wait_for(reader.read(100), 0.5)
                if not data:
                    raise ConnectionError("closed")  # a bad version ends the connection
            writer.close()
        finally:
            await meter.stop()
    run(body())


@pytest.mark.parametrize("transport", ["wrapper", "hdlc"])
def test_the_meter_caps_connections_and_closes_a_silent_one(transport):
    """Both DLMS transports run on the shared TCP server: beyond the cap a connection is closed at once, and a
    peer that connects and says nothing is closed after the idle timeout (it cannot hold a slot for ever)."""
    async def body():
        meter = VirtualMeter(FAM, FAM.parse_config({}), device_id="m")
        server = getattr(meter, transport)
        server.max_connections, server.idle_timeout_s = 2, 0.3
        await (meter.start() if transport == "wrapper" else meter.start_hdlc())
        try:
            held = [await asyncio.open_connection("127.0.0.1", server.port) for _ in range(2)]
            extra_reader, extra_writer = await asyncio.open_connection("127.0.0.1", server.port)
            assert await asyncio.wait_for(extra_reader.read(), 5) == b""  # closed by the meter at once
            assert server.counters["refused"] == 1
            for reader, _ in held:  # silent: closed after the idle timeout
                assert await asyncio.wait_for(reader.read(), 5) == b""
            assert server.counters["timed_out"] == 2
            for _, writer in [*held, (extra_reader, extra_writer)]:
                writer.close()
        finally:
            await meter.stop()
    asyncio.run(asyncio.wait_for(body(), 20))
