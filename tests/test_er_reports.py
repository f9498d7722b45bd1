"""IEC 61850 unbuffered reports of the virtual Energy Router: the data set and report control blocks of its ICD,
InformationReports on data change, integrity and GI decoded by an independent client (the iec61850 package),
their contents against a GetDataValues read, disable, reservation per client, and the MMS answers to bad writes."""

from __future__ import annotations

import asyncio

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

iec61850 = pytest.importorskip("iec61850")

from benchmarks.hostile_inputs.iec61850 import association_request, cotp_cr, mms_frame  # noqa: E402
from devices import registry  # noqa: E402
from devices.base import Address, DeviceUnavailable, Setpoint  # noqa: E402
from devices.energy_router import ber, data_map  # noqa: E402
from devices.energy_router.driver import Iec61850Driver  # noqa: E402
from devices.energy_router.mms import MmsServer  # noqa: E402
from devices.energy_router.report_reader import ReportReader  # noqa: E402
from devices.energy_router.reports import (OBJECT_ACCESS_DENIED, OBJECT_VALUE_INVALID,  # noqa: E402
                                           TEMPORARILY_UNAVAILABLE, information_report)
from devices.energy_router.scl_model import TRG_OPS, bits_of  # noqa: E402
from devices.energy_router.virtual import VirtualEnergyRouter, load_model  # noqa: E402

FAMILY = registry.family("energy_router")
ENV = {"pv_w_per_kwp": 450.0, "dc_load_w": 150.0, "ac_load_w": 250.0, "grid_present": 1.0}
RCB = "ERLD0/LLN0.RP.urcbMeas01"
TYPE_INCONSISTENT = 7


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 60))


async def _device() -> VirtualEnergyRouter:
    device = VirtualEnergyRouter(FAMILY, FAMILY.parse_config({}), device_id="er-reports")
    await device.start()
    await device.advance(0, 60, ENV)
    return device


def _driver(device: VirtualEnergyRouter) -> Iec61850Driver:
    return Iec61850Driver(Address.parse(device.address), FAMILY.capabilities(device.cfg), timeout_s=2.0)


# -- the data model -------------------------------------------------------------------------------------------
def test_the_icd_declares_the_measurement_data_set_and_two_urcbs():
    model = load_model(FAMILY.parse_config({"ied_name": "BUC", "ld_inst": "ER1"}))
    ds = model.dataset("BUCER1/LLN0$Measurements")
    assert ds is not None and ds.reference == "BUCER1/LLN0$Measurements"
    # exactly the driver's measurements, MV.mag standing for instMag: report and poll cannot drift apart
    assert ds.members == [("BUCER1", f.item.replace("$instMag$", "$mag$")) for f in data_map.MEASURED]
    assert all(model.find(*m).dchg for m in ds.members)  # every member triggers on data change
    assert model.urcbs == [("BUCER1", "LLN0$RP$urcbMeas01"), ("BUCER1", "LLN0$RP$urcbMeas02")]
    assert model.find("BUCER1", "LLN0$RP$urcbMeas01$DatSet").value == ds.reference  # renamed with the domain
    assert list(model.find("BUCER1", "LLN0$RP$urcbMeas01").children) == [
        "RptID", "RptEna", "Resv", "DatSet", "ConfRev", "OptFlds", "BufTm", "SqNum", "TrgOps", "IntgPd", "GI",
        "Owner"]


# -- reports over the wire, read by the package's client ------------------------------------------------------
def test_reports_on_data_change_carry_what_a_read_returns():
    async def body():
        device = await _device()
        try:
            async with _driver(device) as driver, driver.reports(integrity_ms=0) as reader:
                first = await reader.next(10)  # the general interrogation: every value
                polled = await driver.read()
                assert first.values == pytest.approx(polled.values, nan_ok=True)
                assert all(e.reason.general_interrogation for e in reader.last_report.entries)

                await device.advance(60, 60, {**ENV, "pv_w_per_kwp": 700.0})  # PV up: a data change
                after = await reader.next(10)
                report = reader.last_report
                polled = await driver.read()
                assert after.values == pytest.approx(polled.values, nan_ok=True)
                assert after["pv_p_w"] < first["pv_p_w"] < 0  # more PV produced (load arrow)
                # the package's client keeps the values of earlier reports for members not included now
                changed = {e.ref for e in report.entries if e.reason.data_change}
                assert "ERLD0/MMDC1$MX$Watt$mag$f" in changed  # PV
                assert "ERLD0/MMXN1$MX$Hz$mag$f" not in changed and len(changed) < len(data_map.MEASURED)
                assert report.rpt_id == "ER/Measurements" and report.dataset_name == "ERLD0/LLN0$Measurements"
                assert report.sequence_number == 1 and report.conf_rev == 1

        finally:
            await device.stop()
    run(body())


def test_an_operate_is_reported_at_once_and_integrity_reports_come_periodically():
    async def body():
        device = await _device()
        try:
            async with _driver(device) as driver, driver.reports(integrity_ms=100) as reader:
                await reader.next(10)
                await driver.write(Setpoint({"mode": 2}))  # the Operate changes DRCC1.DERStr.stVal
                while True:
                    m = await reader.next(10)
                    if m["mode"] == 2:
                        break
                der_str = next(i for i, e in enumerate(reader.last_report.entries) if "DERStr" in e.ref)
                assert reader.last_report.entries[der_str].reason.data_change
                while not all(e.reason.integrity for e in reader.last_report.entries):
                    m = await reader.next(10)  # no change in the model: the next report is an integrity one
                assert m.values == pytest.approx((await driver.read()).values, nan_ok=True)
        finally:
            await device.stop()
    run(body())


def test_disable_stops_reports_and_a_second_client_is_refused_until_the_first_leaves():
    async def body():
        device = await _device()
        engine = device.server.mms.reports
        block = engine.blocks[("ERLD0", "LLN0$RP$urcbMeas01")]
        one = await iec61850.IedConnection.connect(f"127.0.0.1:{device.port}", timeout_ms=2000)
        two = await iec61850.IedConnection.connect(f"127.0.0.1:{device.port}", timeout_ms=2000)
        try:
            got: list = []
            await one.install_report_handler(RCB, got.append, rpt_id="ER/Measurements")
            rcb = await one.get_rcb_values(RCB)
            rcb.rpt_ena = True
            await one.set_rcb_values(rcb, iec61850.RcbWriteMask.fields("rpt_ena"))
            await device.advance(60, 60, {**ENV, "dc_load_w": 300.0})
            while not got:
                await one.poll_reports(1000)
            assert block.sent == 1

            other = await two.get_rcb_values(RCB)
            assert other.rpt_ena and other.resv and other.owner == b"\x7f\x00\x00\x01"
            other.rpt_ena = False
            with pytest.raises(iec61850.IedDataAccessError, match="TemporarilyUnavailable"):
                await two.set_rcb_values(other, iec61850.RcbWriteMask.fields("rpt_ena"))
            other.integrity_period_ms = 10
            with pytest.raises(iec61850.IedDataAccessError, match="TemporarilyUnavailable"):
                await two.set_rcb_values(other, iec61850.RcbWriteMask.fields("integrity_period"))
            rcb.integrity_period_ms = 10  # the owner cannot reconfigure an enabled block either
            with pytest.raises(iec61850.IedDataAccessError, match="TemporarilyUnavailable"):
                await one.set_rcb_values(rcb, iec61850.RcbWriteMask.fields("integrity_period"))

            rcb.rpt_ena = False
            await one.set_rcb_values(rcb, iec61850.RcbWriteMask.fields("rpt_ena"))
            await device.advance(120, 60, {**ENV, "dc_load_w": 50.0})  # a change, but the block is off
            assert block.sent == 1 and engine.reports_sent == 1
            await one.get_rcb_values(RCB)  # a round trip: a report sent before its answer would be queued now
            assert await one.poll_reports(0) == 0 and len(got) == 1
            assert (await two.get_rcb_values(RCB)).resv  # still reserved by the first client
        finally:
            await one.disconnect()
        try:
            while block.owner is not None:  # the association's end releases the block
                await asyncio.sleep(0.01)
            mine = await two.get_rcb_values(RCB)
            assert not mine.resv and mine.owner == b""
            mine.rpt_ena = True
            await two.set_rcb_values(mine, iec61850.RcbWriteMask.fields("rpt_ena"))
            assert block.owner is not None
        finally:
            await two.disconnect()
            await device.stop()
    run(body())


def test_readers_take_free_blocks_and_a_third_finds_none():
    async def body():
        device = await _device()
        try:
            async with ReportReader(device.address, integrity_ms=0) as a, \
                    ReportReader(device.address, integrity_ms=0) as b:
                assert (a.rcb_ref, b.rcb_ref) == ("ERLD0/LLN0.RP.urcbMeas01", "ERLD0/LLN0.RP.urcbMeas02")
                with pytest.raises(DeviceUnavailable, match="taken"):
                    async with ReportReader(device.address, integrity_ms=0):
                        pass
                assert (await a.next(10)).values == pytest.approx((await b.next(10)).values, nan_ok=True)
        finally:
            await device.stop()
    run(body())


# -- bad writes on the blocks: the protocol's own answers -----------------------------------------------------
class _Client:
    def __init__(self, peer: bytes) -> None:
        self.peer, self.pdus = peer, []

    def send_unconfirmed(self, pdu: bytes) -> bool:
        self.pdus.append(pdu)
        return True


def _write(server: MmsServer, client: _Client | None, item: str, data: bytes) -> bytes:
    name = ber.seq(0x30, ber.seq(0xA0, ber.seq(0xA1, ber.visible(0x1A, "ERLD0"), ber.visible(0x1A, item))))
    answer = server.handle(ber.seq(0xA0, ber.integer(0x02, 7), ber.seq(0xA5, ber.seq(0xA0, name),
                                                                        ber.seq(0xA0, data))), client)
    assert answer is not None
    return answer


def _code(answer: bytes) -> int | None:
    """None for a successful write, else the DataAccessError code."""
    result = ber.decode(answer).children[1].children[0]
    return None if result.number == 1 else ber.to_int(result)


def test_block_writes_get_the_mms_errors_real_ieds_give():
    server = MmsServer(load_model(FAMILY.parse_config({})), lambda *a: None)
    me, other = _Client(b"\x7f\x00\x00\x01"), _Client(b"\x7f\x00\x00\x02")
    base = "LLN0$RP$urcbMeas01"
    assert _code(_write(server, me, base + "$ConfRev", ber.integer(0x86, 5))) == OBJECT_ACCESS_DENIED
    assert _code(_write(server, me, base + "$SqNum", ber.integer(0x86, 5))) == OBJECT_ACCESS_DENIED
    assert _code(_write(server, me, base, ber.boolean(0x83, True))) == OBJECT_ACCESS_DENIED  # the whole block
    assert _code(_write(server, me, base + "$RptEna", ber.integer(0x85, 1))) == TYPE_INCONSISTENT
    assert _code(_write(server, me, base + "$DatSet", ber.visible(0x8A, "ERLD0/LLN0$Nothing"))) == \
        OBJECT_VALUE_INVALID
    assert _code(_write(server, me, base + "$DatSet", ber.visible(0x8A, ""))) is None
    assert _code(_write(server, me, base + "$RptEna", ber.boolean(0x83, True))) == OBJECT_VALUE_INVALID  # no DatSet
    assert _code(_write(server, me, base + "$DatSet", ber.visible(0x8A, "ERLD0/LLN0.Measurements"))) is None
    assert server.model.find("ERLD0", base + "$DatSet").value == "ERLD0/LLN0$Measurements"
    assert server.model.find("ERLD0", base + "$Resv").value is True  # a write reserves (IEC 61850-7-2 Ed2)
    assert _code(_write(server, other, base + "$Resv", ber.boolean(0x83, True))) == TEMPORARILY_UNAVAILABLE
    assert _code(_write(server, me, base + "$GI", ber.boolean(0x83, True))) == TEMPORARILY_UNAVAILABLE  # not on
    assert _code(_write(server, None, base + "$Resv", ber.boolean(0x83, True))) == OBJECT_ACCESS_DENIED
    assert _code(_write(server, me, base + "$Resv", ber.boolean(0x83, False))) is None  # released
    assert _code(_write(server, other, base + "$Resv", ber.boolean(0x83, True))) is None
    assert me.pdus == [] and other.pdus == []


def test_an_information_report_has_the_8_1_layout():
    server = MmsServer(load_model(FAMILY.parse_config({})), lambda *a: None)
    block = server.reports.blocks[("ERLD0", "LLN0$RP$urcbMeas01")]
    ds = server.model.dataset("ERLD0/LLN0$Measurements")
    values = [server.model.find(*ds.members[k]).data() for k in (0, 5)]
    pdu = ber.decode(information_report(block, ds, {0: 0x10, 5: 0x10}, values, 0.0))
    assert pdu.is_(ber.CONTEXT, 3)
    spec, results = pdu.children[0].children
    assert ber.to_str(spec.children[0]) == "RPT"
    r = results.children
    assert ber.to_str(r[0]) == "ER/Measurements"
    # RptID, OptFlds, SqNum, TimeOfEntry, DatSet, ConfRev, inclusion, 2 references, 2 values, 2 reasons
    assert len(r) == 6 + 1 + 2 + 2 + 2 and r[3].number == 12 and len(r[3].value) == 6
    inclusion = r[6]
    n = len(ds.members)  # the inclusion bit string has one bit per member, padded to whole octets
    pad = -n % 8
    assert inclusion.value[0] == pad and int.from_bytes(inclusion.value[1:], "big") >> pad == bits_of([0, 5], n)
    assert [ber.to_str(x) for x in r[7:9]] == ["ERLD0/MMXN1$MX$Watt$mag$f", "ERLD0/MMDC1$MX$Watt$mag$f"]
    assert r[11].value == ber.bit_string(0x84, bits_of([TRG_OPS["dchg"]], 6), 6)[2:]


FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
ATTRIBUTES = ("RptID", "RptEna", "Resv", "DatSet", "ConfRev", "OptFlds", "BufTm", "SqNum", "TrgOps", "IntgPd",
              "GI", "Owner", "NoSuch", "")


def _data() -> st.SearchStrategy[bytes]:
    leaf = st.one_of(st.builds(lambda t, v: ber.tlv(0x80 | t, v), st.integers(0, 30), st.binary(max_size=10)),
                     st.builds(lambda b: ber.boolean(0x83, b), st.booleans()),
                     st.builds(lambda n: ber.integer(0x86, n, signed=False), st.integers(0, 2**40)),
                     st.builds(lambda s: ber.visible(0x8A, s), st.text("ERLD0/LN$Measuremts.x", max_size=40)))
    return st.recursive(leaf, lambda kids: st.builds(lambda xs: ber.seq(0xA2, *xs), st.lists(kids, max_size=3)),
                        max_leaves=6)


@FUZZ
@given(st.lists(st.tuples(st.sampled_from(("urcbMeas01", "urcbMeas02", "urcbMeas03")), st.sampled_from(ATTRIBUTES),
                          st.booleans(), _data()), max_size=8))
def test_any_sequence_of_block_writes_is_answered_and_leaves_a_consistent_block(writes):
    server = MmsServer(load_model(FAMILY.parse_config({})), lambda *a: None)
    clients = (_Client(b"\x7f\x00\x00\x01"), _Client(b"\x7f\x00\x00\x02"))
    for rcb, attribute, first, data in writes:
        item = f"LLN0$RP${rcb}" + (f"${attribute}" if attribute else "")
        answer = ber.decode(_write(server, clients[0 if first else 1], item, data))
        assert answer.number in (1, 4)  # a write response (success or an access error) or a reject
    for block in server.reports.blocks.values():  # an enabled block has an owner; Resv says whether one holds it
        assert (block.owner is None) == (block.get("Resv") is False)
        assert not block.enabled or block.owner is not None
        assert block.get("DatSet") in ("", "ERLD0/LLN0$Measurements")


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                   HealthCheck.function_scoped_fixture])
@given(st.lists(st.tuples(st.sampled_from(ATTRIBUTES), _data()), min_size=1, max_size=4))
def test_malformed_block_writes_on_the_wire_leave_the_server_serving(live_er, writes):
    import socket

    device, loop = live_er
    frames = [cotp_cr(), association_request()]
    for k, (attribute, data) in enumerate(writes):
        name = ber.seq(0x30, ber.seq(0xA0, ber.seq(0xA1, ber.visible(0x1A, "ERLD0"), ber.visible(
            0x1A, "LLN0$RP$urcbMeas02" + (f"${attribute}" if attribute else "")))))
        frames.append(mms_frame(ber.seq(0xA0, ber.integer(0x02, k + 1),
                                        ber.seq(0xA5, ber.seq(0xA0, name), ber.seq(0xA0, data)))))
    with socket.create_connection(("127.0.0.1", device.port), timeout=5) as s:
        for frame in frames:
            s.sendall(frame)
        s.shutdown(socket.SHUT_WR)
        while s.recv(65536):  # until the server closes after our half-close: no hang
            pass

    async def subscribe() -> float:
        async with ReportReader(device.address, blocks=("urcbMeas01",), integrity_ms=0) as reader:
            return (await reader.next(10))["pv_p_w"]
    assert asyncio.run_coroutine_threadsafe(subscribe(), loop).result(30) == pytest.approx(
        device.erbank.measure()["pv_p_w"][0])


@pytest.fixture(scope="module")
def live_er():
    from devices.io_loop import IoLoop

    io = IoLoop("er-reports")
    device = VirtualEnergyRouter(FAMILY, FAMILY.parse_config({}), device_id="er-hostile")
    io.run(device.start(), 10)
    io.run(device.advance(0, 60, ENV), 10)
    yield device, io.loop
    io.run(device.stop(), 10)
    io.close()
