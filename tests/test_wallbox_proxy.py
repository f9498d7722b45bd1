"""The SMX as a proxy between a charge point and a legacy CSMS: transparent both ways, our profile on top."""

from __future__ import annotations

import asyncio
from urllib.parse import quote

import pytest

from devices import registry
from devices.base import Address, Setpoint
from devices.wallbox import profiles as pf
from devices.wallbox.csms import CsmsServer
from devices.wallbox.driver import Ocpp16Driver, Ocpp201Driver
from devices.wallbox.virtual import VirtualWallbox16, VirtualWallbox201

FAM = registry.family("wallbox")
EV = {"ev_plugged": 1, "ev_id": 1, "ev_soc_arrival": 0.2, "ev_capacity_wh": 80_000, "ev_p_max_w": 22_000}
TX_ACTIONS = ("StartTransaction", "StopTransaction", "MeterValues", "TransactionEvent", "StatusNotification",
              "BootNotification")


@pytest.mark.parametrize("vcls, dcls", [(VirtualWallbox16, Ocpp16Driver), (VirtualWallbox201, Ocpp201Driver)],
                         ids=["1.6", "2.0.1"])
def test_proxy_is_transparent_and_injects_its_profile_above_the_upstream(vcls, dcls):
    async def body():
        legacy = CsmsServer("127.0.0.1", 0, accept_any=True)
        await legacy.start()
        seen_up: list[tuple[str, dict]] = []
        legacy.listeners.append(lambda st, a, p: seen_up.append((a, p)))
        dev = vcls(FAM, FAM.parse_config({"meter_interval_s": 60}), device_id="BZ-07")
        address = await dev.start()
        seen_smx: list[tuple[str, dict]] = []
        dev.server.listeners.append(lambda st, a, p: seen_smx.append((a, p)))
        driver = dcls(Address.parse(f"{address}?upstream={quote(legacy.url, safe='')}"),
                      FAM.capabilities(dev.config), timeout_s=3.0)
        try:
            await driver.connect()
            assert driver.stack_level == 8
            await dev.advance(0, 60, EV)
            await driver.write(Setpoint({"p_max_w": 5000.0}))
            # the legacy SCADA sets its own default profile (lower stack level, higher limit)
            up = legacy.sessions["BZ-07"]
            theirs = pf.constant_limit(5, 0, 11_000, "W", start=up.state.cp_time)
            req = ({"connectorId": 1, "csChargingProfiles": pf.to_v16(theirs)} if dev.version == "1.6"
                   else {"evseId": 1, "chargingProfile": pf.to_v201(theirs)})
            assert (await up.request("SetChargingProfile", req, 3))["status"] == "Accepted"
            comp = await up.request("GetCompositeSchedule", {"connectorId": 1, "duration": 60, "chargingRateUnit": "W"}
                                    if dev.version == "1.6" else {"evseId": 1, "duration": 60,
                                                                  "chargingRateUnit": "W"}, 3)
            sched = comp["chargingSchedule"] if dev.version == "1.6" else comp["schedule"]
            assert sched["chargingSchedulePeriod"][0]["limit"] == 5000  # ours prevails, the upstream sees it
            for k in range(1, 4):
                await dev.advance(60 * k, 60, EV)
                m = await driver.read()
                assert m["p_w"] == pytest.approx(5000)
            await dev.advance(240, 60, {})
            await dev.cp.drain()
            await driver.read()
            # the upstream saw exactly the station's messages (ours too: they are the same frames)
            ups = [(a, p) for a, p in seen_up if a in TX_ACTIONS]
            smx = [(a, p) for a, p in seen_smx if a in TX_ACTIONS]
            assert ups == smx and len(ups) >= 6
            # the transaction ids are the upstream's: both sides agree on the session and its energy
            assert legacy.states["BZ-07"].last_session_wh == pytest.approx(driver.state.last_session_wh)
            # one minute at full power, then three at ours
            assert driver.state.last_session_wh == pytest.approx((22_000 + 3 * 5000) / 60, abs=1e-3)
            assert legacy.states["BZ-07"].transactions_stopped == driver.state.transactions_stopped == 1
            # our own requests never reached the upstream
            assert not any(a in ("GetCompositeSchedule", "TriggerMessage") for a, _ in seen_up)
            assert {p.id for p in dev.cp.profiles} == {5, driver.profile_id}
        finally:
            await driver.close()
            await dev.stop()
            await legacy.stop()

    asyncio.run(asyncio.wait_for(body(), 60))


def test_the_upstream_loses_nothing_when_it_restarts():
    async def body():
        legacy = CsmsServer("127.0.0.1", 0, accept_any=True)
        port = await legacy.start()
        seen_up: list[tuple[str, dict]] = []
        dev = VirtualWallbox16(FAM, FAM.parse_config({"meter_interval_s": 60}), device_id="BZ-08")
        address = await dev.start()
        driver = Ocpp16Driver(Address.parse(f"{address}?upstream=ws://127.0.0.1:{port}/"), FAM.capabilities(dev.config),
                              timeout_s=3.0)
        try:
            await driver.connect()
            await dev.advance(0, 60, EV)
            await legacy.stop()  # the legacy CSMS goes down: the proxy drops the station, which buffers
            for k in range(1, 4):
                await dev.advance(60 * k, 60, EV)
            await dev.advance(240, 60, {})
            legacy = CsmsServer("127.0.0.1", port, accept_any=True)
            legacy.listeners.append(lambda st, a, p: seen_up.append((a, p)))
            await legacy.start()
            await driver.read()  # waits for the station to come back through the proxy
            await dev.cp.drain()
            periodic = [p for a, p in seen_up if a == "MeterValues"
                        and p["meterValue"][0]["sampledValue"][0]["context"] == "Sample.Periodic"]
            assert len(periodic) == 3
            assert [a for a, _ in seen_up].count("StopTransaction") == 1
        finally:
            await driver.close()
            await dev.stop()
            await legacy.stop()

    asyncio.run(asyncio.wait_for(body(), 60))
