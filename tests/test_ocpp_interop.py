"""Interoperability with implementations built directly from the ``ocpp`` package's own ChargePoint classes:
a package charge point against our CSMS driver, and our virtual charge point against a package CSMS.
Both sides validate every message against the package's schemas (its default)."""

from __future__ import annotations

import asyncio
from datetime import datetime, UTC

import pytest
import websockets
from ocpp.routing import after, on
from ocpp.v16 import ChargePoint as Package16
from ocpp.v16 import call as call16
from ocpp.v16 import call_result as result16
from ocpp.v16.enums import Action as A16
from ocpp.v201 import ChargePoint as Package201
from ocpp.v201 import call as call201
from ocpp.v201 import call_result as result201
from ocpp.v201.enums import Action as A201

from devices import registry
from devices.base import Address, Setpoint, SetpointRejected
from devices.family import DeviceContext
from devices.wallbox import csms
from devices.wallbox import profiles as pf
from devices.wallbox.driver import Ocpp16Driver, Ocpp201Driver
from devices.wallbox.virtual import VirtualWallbox16, VirtualWallbox201

FAM = registry.family("wallbox")
CFG = FAM.parse_config({})
NOW = "2024-05-06T10:00:00Z"


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 30))


# -- a charge point made of the package's classes ---------------------------------------------------------------
class PackageCP16(Package16):
    """Minimal 1.6 charge point: obeys (or ignores) one W limit, answers TriggerMessage with MeterValues."""

    def __init__(self, ident, connection, *, ignore_profiles=False, trigger=True):
        super().__init__(ident, connection, response_timeout=5)
        self.limit_w, self.ignore, self.trigger = 22_080.0, ignore_profiles, trigger
        if not trigger:
            self.route_map.pop(A16.trigger_message, None)

    @on(A16.set_charging_profile)
    def pkg16_set_profile(self, connector_id, cs_charging_profiles, **_):
        if not self.ignore:
            self.limit_w = float(cs_charging_profiles["charging_schedule"]["charging_schedule_period"][0]["limit"])
        return result16.SetChargingProfile(status="Accepted")

    @on(A16.get_composite_schedule)
    def pkg16_composite(self, connector_id, duration, charging_rate_unit=None, **_):
        return result16.GetCompositeSchedule(
            status="Accepted", connector_id=connector_id, schedule_start=NOW,
            charging_schedule={"chargingRateUnit": "W",
                               "chargingSchedulePeriod": [{"startPeriod": 0, "limit": self.limit_w}]})

    @on(A16.trigger_message)
    def pkg16_trigger(self, requested_message, **_):
        return result16.TriggerMessage(status="Accepted")

    @after(A16.trigger_message)
    async def pkg16_after_trigger(self, requested_message, **_):
        await self.call(call16.MeterValues(connector_id=1, transaction_id=5, meter_value=[{
            "timestamp": NOW, "sampledValue": [
                {"value": "1500.5", "measurand": "Energy.Active.Import.Register", "unit": "Wh"},
                {"value": str(min(self.limit_w, 7000.0)), "measurand": "Power.Active.Import", "unit": "W"},
                {"value": "55", "measurand": "SoC", "unit": "Percent", "location": "EV"}]}]))


class PackageCP201(Package201):
    def __init__(self, ident, connection, *, ignore_profiles=False):
        super().__init__(ident, connection, response_timeout=5)
        self.limit_w, self.ignore = 22_080.0, ignore_profiles

    @on(A201.set_charging_profile)
    def pkg201_set_profile(self, evse_id, charging_profile, **_):
        if not self.ignore:
            self.limit_w = float(charging_profile["charging_schedule"][0]["charging_schedule_period"][0]["limit"])
        return result201.SetChargingProfile(status="Accepted")

    @on(A201.get_composite_schedule)
    def pkg201_composite(self, duration, evse_id, charging_rate_unit=None, **_):
        return result201.GetCompositeSchedule(status="Accepted", schedule={
            "evse_id": evse_id, "duration": duration, "schedule_start": NOW, "charging_rate_unit": "W",
            "charging_schedule_period": [{"start_period": 0, "limit": self.limit_w}]})

    @on(A201.trigger_message)
    def pkg201_trigger(self, requested_message, **_):
        return result201.TriggerMessage(status="Accepted")

    @after(A201.trigger_message)
    async def pkg201_after_trigger(self, requested_message, **_):
        await self.call(call201.MeterValues(evse_id=1, meter_value=[{
            "timestamp": NOW, "sampled_value": [
                {"value": 1500.5, "measurand": "Energy.Active.Import.Register"},
                {"value": min(self.limit_w, 7000.0), "measurand": "Power.Active.Import"}]}]))


async def _package_cp_session(version, driver_cls, cp_factory, cp_id, script):
    server = await csms.acquire("127.0.0.1", 0)
    try:
        scheme = "ocpp16" if version == "1.6" else "ocpp201"
        driver = driver_cls(Address.parse(f"{scheme}://127.0.0.1:{server.port}/{cp_id}"), FAM.capabilities(CFG),
                            timeout_s=3.0)
        connecting = asyncio.create_task(driver.connect())
        while cp_id not in server.expected:
            await asyncio.sleep(0.01)
        sub = "ocpp1.6" if version == "1.6" else "ocpp2.0.1"
        async with websockets.connect(server.url + cp_id, subprotocols=[sub]) as ws:
            cp = cp_factory(cp_id, ws)
            runner = asyncio.create_task(cp.start())
            if version == "1.6":
                await cp.call(call16.BootNotification(charge_point_model="Bare", charge_point_vendor="Pkg"))
                await cp.call(call16.StatusNotification(connector_id=1, error_code="NoError", status="Charging",
                                                        timestamp=NOW))
                tx = await cp.call(call16.StartTransaction(connector_id=1, id_tag="TAG", meter_start=1000,
                                                           timestamp=NOW))
                assert tx.id_tag_info["status"] == "Accepted"
            else:
                await cp.call(call201.BootNotification(charging_station={"model": "Bare", "vendor_name": "Pkg"},
                                                       reason="PowerUp"))
                await cp.call(call201.StatusNotification(timestamp=NOW, connector_status="Occupied", evse_id=1,
                                                         connector_id=1))
                await cp.call(call201.TransactionEvent(
                    event_type="Started", timestamp=NOW, trigger_reason="CablePluggedIn", seq_no=0,
                    transaction_info={"transaction_id": "T-1", "charging_state": "Charging"},
                    evse={"id": 1, "connector_id": 1},
                    meter_value=[{"timestamp": NOW, "sampled_value": [
                        {"value": 1000.0, "context": "Transaction.Begin"}]}]))
            await connecting
            try:
                await script(driver, cp)
            finally:
                await driver.close()
                runner.cancel()
    finally:
        await csms.release(server)


@pytest.mark.parametrize("version", ["1.6", "2.0.1"])
def test_a_package_charge_point_works_with_our_driver(version):
    driver_cls, cp_cls = (Ocpp16Driver, PackageCP16) if version == "1.6" else (Ocpp201Driver, PackageCP201)

    async def script(driver, cp):
        await driver.write(Setpoint({"p_max_w": 5000.0}))
        assert cp.limit_w == 5000.0
        m = await driver.read()
        assert m["p_w"] == 5000.0 and m["e_wh"] == 1500.5 and m["e_session_wh"] == pytest.approx(500.5)
        assert m["status"] == 2 and m["connected"] == 1 and m["session_active"] == 1
        assert m["p_max_w"] == 5000.0  # the confirmed composite limit (the station reports no Power.Offered)
        ident = await driver.identity()
        assert ident["manufacturer"] == "Pkg" and ident["model"] == "Bare" and ident["status_text"] == "Charging"

    run(_package_cp_session(version, driver_cls, lambda i, ws: cp_cls(i, ws), f"PKG{version}", script))


@pytest.mark.parametrize("version", ["1.6", "2.0.1"])
def test_a_charger_that_accepts_profiles_and_ignores_them_is_caught(version):
    driver_cls, cp_cls = (Ocpp16Driver, PackageCP16) if version == "1.6" else (Ocpp201Driver, PackageCP201)

    async def script(driver, cp):
        with pytest.raises(SetpointRejected, match="ignores the profile"):
            await driver.write(Setpoint({"p_max_w": 4000.0}))

    run(_package_cp_session(version, driver_cls, lambda i, ws: cp_cls(i, ws, ignore_profiles=True), f"IGN{version}",
                            script))


def test_a_charge_point_without_trigger_message_is_read_from_what_it_sent():
    async def script(driver, cp):
        m = await driver.read()  # NotImplemented -> the cache: status and the transaction start are known
        assert m["status"] == 2 and m["session_active"] == 1 and not driver.trigger_supported

    run(_package_cp_session("1.6", Ocpp16Driver, lambda i, ws: PackageCP16(i, ws, trigger=False), "NOTRIG", script))


# -- a CSMS made of the package's classes ---------------------------------------------------------------------
class PackageCsms16(Package16):
    def __init__(self, ident, connection):
        super().__init__(ident, connection, response_timeout=5)
        self.log: list[tuple[str, dict]] = []
        self.booted = asyncio.Event()

    @on(A16.boot_notification)
    def csms16_boot(self, **kw):
        self.log.append(("BootNotification", kw))
        self.booted.set()
        return result16.BootNotification(current_time=NOW, interval=300, status="Accepted")

    @on(A16.status_notification)
    def csms16_status(self, **kw):
        self.log.append(("StatusNotification", kw))
        return result16.StatusNotification()

    @on(A16.heartbeat)
    def csms16_heartbeat(self, **kw):
        return result16.Heartbeat(current_time=NOW)

    @on(A16.start_transaction)
    def csms16_start(self, **kw):
        self.log.append(("StartTransaction", kw))
        return result16.StartTransaction(transaction_id=42, id_tag_info={"status": "Accepted"})

    @on(A16.stop_transaction)
    def csms16_stop(self, **kw):
        self.log.append(("StopTransaction", kw))
        return result16.StopTransaction(id_tag_info={"status": "Accepted"})

    @on(A16.meter_values)
    def csms16_meter(self, **kw):
        self.log.append(("MeterValues", kw))
        return result16.MeterValues()


class PackageCsms201(Package201):
    def __init__(self, ident, connection):
        super().__init__(ident, connection, response_timeout=5)
        self.log: list[tuple[str, dict]] = []
        self.booted = asyncio.Event()

    @on(A201.boot_notification)
    def csms201_boot(self, **kw):
        self.log.append(("BootNotification", kw))
        self.booted.set()
        return result201.BootNotification(current_time=NOW, interval=300, status="Accepted")

    @on(A201.status_notification)
    def csms201_status(self, **kw):
        self.log.append(("StatusNotification", kw))
        return result201.StatusNotification()

    @on(A201.heartbeat)
    def csms201_heartbeat(self, **kw):
        return result201.Heartbeat(current_time=NOW)

    @on(A201.transaction_event)
    def csms201_tx(self, **kw):
        self.log.append(("TransactionEvent", kw))
        return result201.TransactionEvent()

    @on(A201.meter_values)
    def csms201_meter(self, **kw):
        self.log.append(("MeterValues", kw))
        return result201.MeterValues()


async def _with_package_csms(cls, wallbox_cls, script):
    holder: asyncio.Queue = asyncio.Queue()

    async def handler(ws):
        c = cls(ws.request.path.strip("/"), ws)
        await holder.put(c)
        try:
            await c.start()
        except websockets.exceptions.ConnectionClosed:
            pass

    async with websockets.serve(handler, "127.0.0.1", 0, subprotocols=["ocpp1.6", "ocpp2.0.1"]) as server:
        port = server.sockets[0].getsockname()[1]
        # the charge point's calendar starts at a fixed midnight (its build context), so meter timestamps are known
        ctx = DeviceContext(datetime(2024, 1, 1, tzinfo=UTC), 60, "OURS")
        dev = wallbox_cls(FAM, FAM.parse_config({"meter_interval_s": 60}), context=ctx)
        await dev.start_client(f"ws://127.0.0.1:{port}/")
        c = await asyncio.wait_for(holder.get(), 10)
        await asyncio.wait_for(c.booted.wait(), 10)
        try:
            await script(dev, c)
        finally:
            await dev.stop()


EV = {"ev_plugged": 1, "ev_id": 1, "ev_soc_arrival": 0.3, "ev_capacity_wh": 60_000, "ev_p_max_w": 11_000}


def test_our_charge_point_works_with_a_package_csms_16():
    async def script(dev, c):
        await dev.advance(0, 60, EV)
        start = [kw for a, kw in c.log if a == "StartTransaction"]
        assert start and start[0]["meter_start"] == 0
        profile = pf.constant_limit(3, 1, 12, "A", start=datetime(2024, 1, 1, tzinfo=UTC))
        r = await c.call(call16.SetChargingProfile(connector_id=1, cs_charging_profiles=pf.to_v16(profile)))
        assert r.status == "Accepted"
        r = await c.call(call16.GetCompositeSchedule(connector_id=1, duration=300, charging_rate_unit="A"))
        assert r.status == "Accepted" and float(r.charging_schedule["charging_schedule_period"][0]["limit"]) == 12
        over = pf.constant_limit(4, 2, 40, "A", start=datetime(2024, 1, 1, tzinfo=UTC))
        r = await c.call(call16.SetChargingProfile(connector_id=1, cs_charging_profiles=pf.to_v16(over)))
        assert r.status == "Rejected"  # above the 32 A hardware limit
        r = await c.call(call16.ChangeConfiguration(key="MeterValueSampleInterval", value="120"))
        assert r.status == "Accepted"
        r = await c.call(call16.GetConfiguration(key=["MeterValueSampleInterval", "Nope"]))
        assert r.configuration_key[0]["value"] == "120" and r.unknown_key == ["Nope"]
        r = await c.call(call16.ChangeConfiguration(key="ChargeProfileMaxStackLevel", value="3"))
        assert r.status == "Rejected"
        await dev.advance(60, 60, EV)
        await dev.advance(120, 60, EV)
        meters = [kw for a, kw in c.log if a == "MeterValues" and kw["meter_value"][0]["sampled_value"][0].get(
            "context") == "Sample.Periodic"]
        assert [m["meter_value"][0]["timestamp"][11:19] for m in meters] == ["00:01:00", "00:03:00"]  # 60 s, then 120 s
        power = [float(s["value"]) for s in meters[-1]["meter_value"][0]["sampled_value"]
                 if s["measurand"] == "Power.Active.Import"]
        assert power == [pytest.approx(12 * 230 * 3)]
        r = await c.call(call16.TriggerMessage(requested_message="StatusNotification", connector_id=1))
        assert r.status == "Accepted"
        r = await c.call(call16.RemoteStopTransaction(transaction_id=42))
        assert r.status == "Accepted"
        await dev.cp.drain()
        stop = [kw for a, kw in c.log if a == "StopTransaction"]
        assert stop and stop[0]["transaction_id"] == 42 and stop[0]["reason"] == "Remote"
        r = await c.call(call16.ClearChargingProfile(id=3))
        assert r.status == "Accepted"
        r = await c.call(call16.ClearChargingProfile(id=3))
        assert r.status == "Unknown"

    run(_with_package_csms(PackageCsms16, VirtualWallbox16, script))


def test_our_charge_point_works_with_a_package_csms_201():
    async def script(dev, c):
        await dev.advance(0, 60, EV)
        started = [kw for a, kw in c.log if a == "TransactionEvent" and kw["event_type"] == "Started"]
        assert started
        tx_id = started[0]["transaction_info"]["transaction_id"]
        profile = pf.constant_limit(3, 1, 6000, "W", purpose=pf.TX, start=datetime(2024, 1, 1, tzinfo=UTC),
                                    transaction_id=tx_id)
        r = await c.call(call201.SetChargingProfile(evse_id=1, charging_profile=pf.to_v201(profile)))
        assert r.status == "Accepted"
        r = await c.call(call201.GetCompositeSchedule(duration=300, evse_id=1, charging_rate_unit="W"))
        assert r.status == "Accepted" and r.schedule["charging_schedule_period"][0]["limit"] == 6000
        r = await c.call(call201.GetVariables(get_variable_data=[
            {"component": {"name": "SampledDataCtrlr"}, "variable": {"name": "TxUpdatedInterval"}},
            {"component": {"name": "Nope"}, "variable": {"name": "X"}}]))
        assert r.get_variable_result[0]["attribute_value"] == "60"
        assert r.get_variable_result[1]["attribute_status"] == "UnknownComponent"
        r = await c.call(call201.SetVariables(set_variable_data=[
            {"component": {"name": "SampledDataCtrlr"}, "variable": {"name": "TxUpdatedInterval"},
             "attribute_value": "30"}]))
        assert r.set_variable_result[0]["attribute_status"] == "Accepted"
        await dev.advance(60, 60, EV)
        r = await c.call(call201.RequestStopTransaction(transaction_id=tx_id))
        assert r.status == "Accepted"
        await dev.cp.drain()
        ended = [kw for a, kw in c.log if a == "TransactionEvent" and kw["event_type"] == "Ended"]
        assert ended and ended[0]["transaction_info"]["stopped_reason"] == "Remote"
        seq = [kw["seq_no"] for a, kw in c.log if a == "TransactionEvent"]
        assert seq == list(range(len(seq)))  # every event of the transaction, in order

    run(_with_package_csms(PackageCsms201, VirtualWallbox201, script))
