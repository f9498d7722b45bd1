"""The virtual charge point and our driver over the wire: smart charging, remote control, reboot, and
reconnecting with the transaction messages buffered (none lost)."""

from __future__ import annotations

import asyncio
import math
from contextlib import asynccontextmanager
from datetime import datetime, UTC

import pytest

from devices import registry
from devices.base import Address, DeviceUnavailable, Setpoint, SetpointRejected
from devices.family import DeviceContext
from devices.wallbox import profiles as pf
from devices.wallbox.driver import Ocpp16Driver, Ocpp201Driver
from devices.wallbox.virtual import VirtualWallbox16, VirtualWallbox201

FAM = registry.family("wallbox")
EV = {"ev_plugged": 1, "ev_id": 1, "ev_soc_arrival": 0.2, "ev_capacity_wh": 80_000, "ev_p_max_w": 22_000}
VERSIONS = [(VirtualWallbox16, Ocpp16Driver), (VirtualWallbox201, Ocpp201Driver)]
IDS = ["1.6", "2.0.1"]
T0 = datetime(2024, 1, 1, tzinfo=UTC)  # simulated t = 0 on the charge point's calendar


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 60))


@asynccontextmanager
async def station(vcls, dcls, config=None, query="", cp_id="CP"):
    cfg = FAM.parse_config(config or {})
    dev = vcls(FAM, cfg, context=DeviceContext(T0, 60, cp_id))  # the charge point's calendar starts at T0
    address = await dev.start()
    driver = dcls(Address.parse(address + query), FAM.capabilities(cfg), timeout_s=3.0)
    await driver.connect()
    log: list[tuple[str, dict]] = []
    dev.server.listeners.append(lambda st, action, p: log.append((action, p)))
    try:
        yield dev, driver, log
    finally:
        await driver.close()
        await dev.stop()


def profile_req(version: str, profile: pf.Profile) -> tuple[str, dict]:
    if version == "1.6":
        return "SetChargingProfile", {"connectorId": profile.connector, "csChargingProfiles": pf.to_v16(profile)}
    return "SetChargingProfile", {"evseId": profile.connector, "chargingProfile": pf.to_v201(profile)}


@pytest.mark.parametrize("vcls, dcls", VERSIONS, ids=IDS)
def test_station_max_tx_default_units_and_clear_over_the_wire(vcls, dcls):
    async def body():
        async with station(vcls, dcls) as (dev, driver, _log):
            await dev.advance(0, 60, EV)
            await driver.write(Setpoint({"p_max_w": 11_000.0}))
            await dev.advance(60, 60, EV)
            m = await driver.read()
            assert m["p_w"] == pytest.approx(11_000) and m["p_max_w"] == pytest.approx(11_000)
            # the site operator caps the whole station at 10 A: the lower limit wins
            cap = pf.constant_limit(77, 0, 10, "A", purpose=pf.MAX, connector=0, start=driver.state.cp_time)
            assert (await driver.request(*profile_req(dev.version, cap)))["status"] == "Accepted"
            await dev.advance(120, 60, EV)
            m = await driver.read()
            assert m["p_w"] == pytest.approx(10 * 230 * 3) and m["i_max_a"] == pytest.approx(10)
            # a current limit from the driver: A profile
            await driver.write(Setpoint({"i_max_a": 8.0}))
            await dev.advance(180, 60, EV)
            assert (await driver.read())["p_w"] == pytest.approx(8 * 230 * 3)
            # both: the lower of the two, in A
            await driver.write(Setpoint({"i_max_a": 16.0, "p_max_w": 4140.0}))
            await dev.advance(240, 60, EV)
            assert (await driver.read())["p_w"] == pytest.approx(4140)
            clear = ({"id": 77} if dev.version == "1.6" else {"chargingProfileId": 77})
            assert (await driver.request("ClearChargingProfile", clear))["status"] == "Accepted"
            assert (await driver.request("ClearChargingProfile", clear))["status"] == "Unknown"
            assert [p.id for p in dev.cp.profiles] == [driver.profile_id]

    run(body())


@pytest.mark.parametrize("vcls, dcls", VERSIONS, ids=IDS)
def test_tx_profile_purpose_needs_a_transaction_and_ends_with_it(vcls, dcls):
    async def body():
        async with station(vcls, dcls, query="?purpose=TxProfile&stack=3") as (dev, driver, _log):
            await dev.advance(0, 60, {})
            with pytest.raises(SetpointRejected, match="running transaction"):
                await driver.write(Setpoint({"p_max_w": 5000.0}))
            await dev.advance(60, 60, EV)
            await driver.read()
            await driver.write(Setpoint({"p_max_w": 5000.0}))
            assert dev.cp.profiles[0].purpose == pf.TX and dev.cp.profiles[0].stack_level == 3
            await dev.advance(120, 60, EV)
            assert (await driver.read())["p_w"] == pytest.approx(5000)
            await dev.advance(180, 60, {})  # unplugged: the transaction and its TxProfile end
            await driver.read()
            assert dev.cp.profiles == []

    run(body())


@pytest.mark.parametrize("vcls, dcls", VERSIONS, ids=IDS)
def test_remote_start_and_stop(vcls, dcls):
    async def body():
        async with station(vcls, dcls, config={"auto_start": False}) as (dev, driver, log):
            await dev.advance(0, 60, EV)
            m = await driver.read()
            assert m["status"] == 1 and m["p_w"] == 0 and m["session_active"] == 0  # Preparing: waits
            if dev.version == "1.6":
                r = await driver.request("RemoteStartTransaction", {"idTag": "FLEET1", "connectorId": 1})
            else:
                r = await driver.request("RequestStartTransaction", {
                    "idToken": {"idToken": "FLEET1", "type": "Central"}, "remoteStartId": 5, "evseId": 1})
            assert r["status"] == "Accepted"
            await dev.cp.drain()
            await dev.advance(60, 60, EV)
            m = await driver.read()
            assert m["status"] == 2 and m["session_active"] == 1 and m["p_w"] > 0
            tx = driver.state.tx_id
            if dev.version == "1.6":
                r = await driver.request("RemoteStopTransaction", {"transactionId": int(tx)})
            else:
                r = await driver.request("RequestStopTransaction", {"transactionId": tx})
            assert r["status"] == "Accepted"
            await dev.cp.drain()
            await dev.advance(120, 60, EV)
            m = await driver.read()
            assert m["status"] == 5 and m["session_active"] == 0 and m["p_w"] == 0  # Finishing, cable still in
            assert m["e_session_wh"] > 0
            actions = [a for a, _ in log]
            assert ("StartTransaction" in actions) if dev.version == "1.6" else ("TransactionEvent" in actions)

    run(body())


@pytest.mark.parametrize("vcls, dcls", VERSIONS, ids=IDS)
def test_transaction_messages_are_buffered_while_offline_and_none_is_lost(vcls, dcls):
    async def body():
        async with station(vcls, dcls, config={"meter_interval_s": 60}) as (dev, driver, log):
            server = dev.server
            await dev.advance(0, 60, EV)
            await driver.read()
            await server.forget(dev.device_id)  # the CSMS drops the station and refuses it for a while
            for k in range(1, 6):
                await dev.advance(60 * k, 60, EV)
            await dev.advance(360, 60, {})  # the EV leaves while offline
            assert not dev.cp.connected and len(dev.cp.outbox) >= 6
            server.expect(dev.device_id, dev.version)  # back: the station reconnects by itself
            await server.wait_booted(dev.device_id, 10)
            await dev.cp.drain()
            await driver.read()
            if dev.version == "1.6":
                periodic = [p for a, p in log if a == "MeterValues"
                            and p["meterValue"][0]["sampledValue"][0]["context"] == "Sample.Periodic"]
                assert [p["meterValue"][0]["timestamp"][14:16] for p in periodic] == ["01", "02", "03", "04", "05",
                                                                                     "06"]
                stops = [p for a, p in log if a == "StopTransaction"]
                assert len(stops) == 1 and stops[0]["reason"] == "EVDisconnected"
                # the id the CSMS assigned before the drop, on every buffered message
                assert {p["transactionId"] for p in periodic} == {stops[0]["transactionId"]} != {-1}
            else:
                events = [p for a, p in log if a == "TransactionEvent"]
                assert [e["seqNo"] for e in events] == list(range(len(events)))
                assert events[-1]["eventType"] == "Ended" and events[-1]["offline"] is True
                assert sum(e["triggerReason"] == "MeterValuePeriodic" for e in events) == 6
            m = await driver.read()
            assert m["session_active"] == 0 and m["e_session_wh"] == pytest.approx(dev.bank.e_session_wh[0], abs=1e-3)
            assert m["e_wh"] == pytest.approx(dev.bank.e_wh[0], abs=1e-3)

    run(body())


@pytest.mark.parametrize("vcls, dcls", VERSIONS, ids=IDS)
def test_the_driver_reasserts_its_limit_after_the_station_reboots(vcls, dcls):
    async def body():
        async with station(vcls, dcls) as (dev, driver, _log):
            await dev.advance(0, 60, EV)
            await driver.write(Setpoint({"p_max_w": 6000.0}))
            dev.cp.profiles = []  # a station that forgets its profiles when it reboots
            boots = dev.cp.boots
            r = await driver.request("Reset", {"type": "Soft"} if dev.version == "1.6" else {"type": "Immediate"})
            assert r["status"] == "Accepted"
            while dev.cp.boots == boots or not dev.cp.connected:
                await asyncio.sleep(0.02)
            await driver.read()  # sees the new boot and sends the profile again
            assert [p.id for p in dev.cp.profiles] == [driver.profile_id]
            await dev.advance(60, 60, EV)
            assert (await driver.read())["p_w"] == pytest.approx(6000)

    run(body())


def test_driver_addresses_and_a_station_that_never_comes():
    caps = FAM.capabilities(FAM.parse_config({}))
    with pytest.raises(ValueError, match="virtual"):
        Ocpp16Driver(Address.parse("ocpp16://"), caps)
    with pytest.raises(ValueError, match="charge point id"):
        Ocpp16Driver(Address.parse("ocpp16://127.0.0.1:9000/"), caps)
    d = Ocpp16Driver(Address.parse("ocpp16://127.0.0.1:0/GHOST?stack=4&confirm=0"), caps, timeout_s=0.3)
    assert d.stack_level == 4 and not d.confirm and d.cp_id == "GHOST"

    async def body():
        with pytest.raises(DeviceUnavailable, match="did not connect"):
            await d.connect()
        with pytest.raises(DeviceUnavailable):
            await d.read()
        await d.close()

    run(body())


def test_values_are_nan_until_the_station_reports_them():
    async def body():
        async with station(VirtualWallbox16, Ocpp16Driver) as (dev, driver, _log):
            dev.cp.silent = False
            state = driver.state
            assert math.isnan(state.soc)
            await dev.advance(0, 60, {})
            m = await driver.read()
            assert m["status"] == 0 and m["connected"] == 0 and math.isnan(m["soc"])

    run(body())


@pytest.mark.parametrize("vcls, dcls", VERSIONS, ids=IDS)
def test_change_availability_waits_for_the_running_transaction(vcls, dcls):
    async def body():
        async with station(vcls, dcls) as (dev, driver, _log):
            await dev.advance(0, 60, EV)
            v16 = dev.version == "1.6"
            off = {"connectorId": 0, "type": "Inoperative"} if v16 else {"operationalStatus": "Inoperative"}
            on = {"connectorId": 0, "type": "Operative"} if v16 else {"operationalStatus": "Operative"}
            assert (await driver.request("ChangeAvailability", off))["status"] == "Scheduled"
            await dev.advance(60, 60, EV)
            assert (await driver.read())["status"] == 2  # still charging
            await dev.advance(120, 60, {})
            assert (await driver.read())["status"] == 7  # Unavailable once the EV has left
            await dev.advance(180, 60, {**EV, "ev_id": 2})
            m = await driver.read()
            assert m["status"] == 7 and m["session_active"] == 0 and m["p_w"] == 0  # no new transaction
            assert (await driver.request("ChangeAvailability", on))["status"] == "Accepted"
            await dev.cp.drain()
            await dev.advance(240, 60, {**EV, "ev_id": 2})
            assert (await driver.read())["status"] == 1  # plugged, waiting: the plug-in edge has passed

    run(body())


def test_each_io_loop_gets_its_own_default_csms():
    from devices.io_loop import IoLoop
    from devices.wallbox import csms

    a, b = IoLoop("a"), IoLoop("b")
    try:
        sa = a.run(csms.acquire("127.0.0.1", 0), 5)
        sb = b.run(csms.acquire("127.0.0.1", 0), 5)
        assert sa is not sb and sa.port != sb.port
        assert a.run(csms.acquire("127.0.0.1", 0), 5) is sa  # shared within a loop (ref-counted)
        a.run(csms.release(sa), 5)
        a.run(csms.release(sa), 5)
        b.run(csms.release(sb), 5)
        with pytest.raises(RuntimeError, match="another event loop"):
            s = a.run(csms.acquire("127.0.0.1", 0), 5)
            b.run(csms.acquire("127.0.0.1", s.port), 5)
        a.run(csms.release(s), 5)
    finally:
        a.close()
        b.close()
