"""The virtual Solar API (fields, signs, error codes, HTTP errors) and the read-only fronius+http driver, held to
the conformance suite's connection properties (the suite's setpoint tests do not apply to a read-only API)."""

import asyncio
import json
import time

import pytest

from devices import registry
from devices.base import Address, DeviceUnavailable, Measurement, ProtocolError, Setpoint, SetpointRejected
from devices.fronius.solar_api import FroniusSolarApiDevice
from devices.fronius.solar_api_driver import ProtocolTimeout, SolarApiDriver

FAM = registry.family("fronius")
CONFIG = {"pv_kwp": 6, "ac_max_w": 6000, "eta_inverter": 1.0,
          "battery": {"capacity_wh": 10_000, "p_charge_max_w": 4000, "p_discharge_max_w": 4000, "soc_init": 0.5,
                      "eta_charge": 1.0, "eta_discharge": 1.0, "soc_min": 0.0, "soc_max": 1.0}}


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 30))


async def started(config=CONFIG):
    dev = FroniusSolarApiDevice(FAM, FAM.parse_config(config), device_id="api")
    await dev.start()
    return dev


async def raw(port: int, data: bytes) -> tuple[int, dict, bytes]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(data)
        await writer.drain()
        head = await reader.readuntil(b"\r\n\r\n")
        lines = head.decode().split("\r\n")
        headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:] if line)}
        head_only = data.startswith(b"HEAD ")
        body = b"" if head_only else await reader.readexactly(int(headers.get("content-length", "0")))
        return int(lines[0].split()[1]), headers, body
    finally:
        writer.close()


async def get(port: int, target: str) -> tuple[int, dict]:
    status, _, body = await raw(port, f"GET {target} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n".encode())
    return status, json.loads(body)


def test_power_flow_and_friends_carry_fronius_fields_and_signs():
    async def body():
        dev = await started()
        try:
            dev.bank.setpoints["batt_p_w"][:] = 2000.0  # charging from the grid at night
            await dev.advance(0, 60, {"pv_w_per_kwp": 0.0, "site_load_w": 700.0})
            port = dev.server.port
            status, doc = await get(port, "/solar_api/GetAPIVersion.cgi")
            assert status == 200 and doc["APIVersion"] == 1 and doc["BaseURL"] == "/solar_api/v1/"
            status, doc = await get(port, "/solar_api/v1/GetPowerFlowRealtimeData.fcgi")
            head, site, inv = doc["Head"], doc["Body"]["Data"]["Site"], doc["Body"]["Data"]["Inverters"]["1"]
            assert head["Status"] == {"Code": 0, "Reason": "", "UserMessage": ""} and head["RequestArguments"] == {}
            assert head["Timestamp"].endswith("+00:00")
            assert site["P_Akku"] == -2000  # - = charging
            assert site["P_Grid"] == 2700  # + = import
            assert site["P_Load"] == -700  # - = consumption
            assert site["P_PV"] == 0 and site["Mode"] == "bidirectional"
            assert inv["P"] == -2000 and inv["SOC"] == pytest.approx(100 * (0.5 + 2000 / 60 / 10_000), abs=1e-3)
            status, doc = await get(port, "/solar_api/v1/GetInverterRealtimeData.cgi?Scope=Device&DeviceId=1"
                                          "&DataCollection=CommonInverterData")
            data = doc["Body"]["Data"]
            assert data["PAC"] == {"Unit": "W", "Value": -2000} and data["UAC"]["Value"] == 230
            assert data["FAC"] == {"Unit": "Hz", "Value": 50} and data["DAY_ENERGY"]["Value"] is None
            assert doc["Head"]["RequestArguments"] == {"DataCollection": "CommonInverterData",
                                                       "DeviceClass": "Inverter", "DeviceId": "1", "Scope": "Device"}
            status, doc = await get(port, "/solar_api/v1/GetInverterRealtimeData.cgi?Scope=System")
            assert doc["Body"]["Data"]["PAC"] == {"Unit": "W", "Values": {"1": -2000}}
            status, doc = await get(port, "/solar_api/v1/GetInverterRealtimeData.cgi?scope=device&deviceid=1"
                                          "&datacollection=3PInverterData")
            assert doc["Body"]["Data"]["UAC_L3"]["Value"] == 230
            status, doc = await get(port, "/solar_api/v1/GetStorageRealtimeData.cgi?Scope=Device&DeviceId=0")
            ctl = doc["Body"]["Data"]["Controller"]
            assert ctl["Current_DC"] > 0 and ctl["Capacity_Maximum"] == 10_000  # + = charging
            status, doc = await get(port, "/solar_api/v1/GetStorageRealtimeData.cgi?Scope=System")
            assert set(doc["Body"]["Data"]) == {"0"}
            status, doc = await get(port, "/solar_api/v1/GetMeterRealtimeData.cgi?Scope=Device&DeviceId=0")
            meter = doc["Body"]["Data"]
            assert meter["PowerReal_P_Sum"] == 2700 and meter["Meter_Location_Current"] == 0  # grid, + = import
            assert meter["EnergyReal_WAC_Plus_Absolute"] == 45 and meter["EnergyReal_WAC_Minus_Absolute"] == 0
        finally:
            await dev.stop()
    run(body())


def test_bad_requests_get_the_status_codes_a_fronius_uses():
    async def body():
        dev = await started()
        try:
            port = dev.server.port
            cases = {
                "/solar_api/v1/GetInverterRealtimeData.cgi?Scope=Device&DeviceId=5&DataCollection=CommonInverterData": 12,
                "/solar_api/v1/GetInverterRealtimeData.cgi?Scope=Everything": 6,
                "/solar_api/v1/GetInverterRealtimeData.cgi": 6,
                "/solar_api/v1/GetInverterRealtimeData.cgi?Scope=Device&DataCollection=CommonInverterData": 6,
                "/solar_api/v1/GetInverterRealtimeData.cgi?Scope=Device&DeviceId=1&DataCollection=MinMaxInverterData": 6,
                "/solar_api/v1/GetStorageRealtimeData.cgi?Scope=Device&DeviceId=3": 12,
                "/solar_api/v1/GetMeterRealtimeData.cgi?Scope=Device&DeviceId=abc": 6,
            }
            for target, code in cases.items():
                status, doc = await get(port, target)
                assert status == 200 and doc["Head"]["Status"]["Code"] == code, target
                assert doc["Body"]["Data"] == {}
            status, doc = await get(port, "/solar_api/v1/GetInverterRealtimeData.cgi?Scope=Device&DeviceId=1"
                                          "&DataCollection=MinMaxInverterData")
            assert "CGI-Args: Invalid parameter 'MinMaxInverterData' for attribute 'DataCollection'" in \
                doc["Head"]["Status"]["Reason"]
            status, doc = await get(port, "/solar_api/v1/GetWhatever.cgi")
            assert status == 404 and doc["Head"]["Status"]["Code"] == 1
            status, headers, _ = await raw(port, b"POST /solar_api/GetAPIVersion.cgi HTTP/1.1\r\nHost: t\r\n\r\n")
            assert status == 405 and headers["allow"] == "GET, HEAD"
            for bad in (b"GARBAGE\r\n\r\n", b"GET /x HTTP/1.1\r\n\r\n", b"GET /x HTTP/1.1\r\nHost t\r\n\r\n",
                        b"GET x HTTP/1.1\r\nHost: t\r\n\r\n", b"GET /\x01x HTTP/1.1\r\nHost: t\r\n\r\n"):
                status, headers, _ = await raw(port, bad)
                assert status == 400 and headers["connection"] == "close", bad
            status, _, _ = await raw(port, b"GET / HTTP/2.0\r\nHost: t\r\n\r\n")
            assert status == 505
            status, headers, body_ = await raw(port, b"HEAD /solar_api/GetAPIVersion.cgi HTTP/1.1\r\nHost: t\r\n\r\n")
            assert status == 200 and int(headers["content-length"]) > 0 and body_ == b""
        finally:
            await dev.stop()
    run(body())


def make_driver(dev, timeout_s=1.0):
    return SolarApiDriver(Address.parse(dev.address), FAM.capabilities(FAM.parse_config(CONFIG)), timeout_s=timeout_s)


def test_driver_converts_signs_and_refuses_setpoints():
    async def body():
        dev = await started()
        try:
            dev.bank.setpoints["batt_p_w"][:] = 2500.0
            await dev.advance(0, 60, {"pv_w_per_kwp": 0.0, "site_load_w": 400.0})
            async with make_driver(dev) as drv:
                assert drv.capabilities.setpoints == {}
                m = await drv.read()
                assert m["batt_p_w"] == 2500 and m["p_w"] == 2500 and m["pv_p_w"] == 0  # charging from the grid
                assert m["p_grid_w"] == 2900 and m["site_load_w"] == 400
                assert m["soc"] == pytest.approx(float(dev.bank.battery.soc[0]), abs=1e-5)
                dev.bank.setpoints["batt_p_w"][:] = -1000.0
                await dev.advance(60, 60, {"pv_w_per_kwp": 500.0, "site_load_w": 400.0})
                m = await drv.read()
                assert m["batt_p_w"] == -1000 and m["pv_p_w"] == -3000 and m["p_w"] == -4000
                assert m["p_grid_w"] == -3600
                with pytest.raises(SetpointRejected):
                    await drv.write(Setpoint({"batt_p_w": 0.0}))
                with pytest.raises(SetpointRejected, match="read-only"):
                    await drv._write(Setpoint({"batt_p_w": 0.0}))
                assert (await drv.identity())["api_version"] == 1
        finally:
            await dev.stop()
    run(body())


def test_driver_close_releases_the_connection_and_reconnects_after_a_restart():
    async def body():
        dev = await started()
        port = dev.server.port
        try:
            drv = make_driver(dev)
            await drv.connect()
            assert isinstance(await drv.read(), Measurement) and dev.server.open_connections() == 1
            await drv.close()
            await drv.close()
            for _ in range(100):
                if dev.server.open_connections() == 0:
                    break
                await asyncio.sleep(0.01)
            assert dev.server.open_connections() == 0
            with pytest.raises(DeviceUnavailable):
                await drv.read()
            await drv.connect()
            await dev.stop()
            with pytest.raises(DeviceUnavailable):
                await drv.read()
            await dev.start(port=port)
            deadline = time.monotonic() + 15
            while True:
                try:
                    await drv.read()
                    break
                except DeviceUnavailable:
                    assert time.monotonic() < deadline
                    await asyncio.sleep(0.2)
            await drv.close()
        finally:
            await dev.stop()
    run(body())


def test_driver_silent_device_times_out_and_malformed_reply_is_a_protocol_error():
    async def body():
        dev = await started()
        try:
            async with make_driver(dev, timeout_s=0.5) as drv:
                await drv.read()
                dev.server.set_silent(True)
                with pytest.raises(ProtocolTimeout):  # the driver's own timeout, not a closed connection
                    await drv.read()
                dev.server.set_silent(False)
                await asyncio.sleep(0.25)  # past the first back-off
                await drv.read()
                dev.server.corrupt_next_reply()
                with pytest.raises(ProtocolError):
                    await drv.read()
                a, b = await asyncio.gather(*(_retrying(drv) for _ in range(2)))
                assert dict(a.values) == dict(b.values)
        finally:
            await dev.stop()
    run(body())


async def _retrying(drv):
    for _ in range(50):
        try:
            return await drv.read()
        except DeviceUnavailable:
            await asyncio.sleep(0.1)
    raise AssertionError("never read")


def test_driver_reads_chunked_and_connection_close_responses():
    """Real devices answer with chunked bodies or close the connection after each reply."""
    flow = {"Body": {"Data": {"Site": {"P_Akku": -300.5, "P_Grid": 10.0, "P_Load": -200.0, "P_PV": 500},
                              "Inverters": {"1": {"P": 190.0, "SOC": 40}}}},
            "Head": {"RequestArguments": {}, "Status": {"Code": 0, "Reason": "", "UserMessage": ""},
                     "Timestamp": "2024-01-01T00:00:00+00:00"}}
    inverter = {"Body": {"Data": {"UAC": {"Unit": "V", "Value": 231.5}, "FAC": {"Unit": "Hz", "Value": 49.98}}},
                "Head": flow["Head"]}
    storage = {"Body": {"Data": {"0": {"Controller": {"Capacity_Maximum": 5000, "StateOfCharge_Relative": 40.0}}}},
               "Head": flow["Head"]}
    docs = {"GetAPIVersion": {"APIVersion": 1, "BaseURL": "/solar_api/v1/"}, "GetPowerFlow": flow,
            "GetInverter": inverter, "GetStorage": storage}

    async def handle(reader, writer):
        n = 0
        while True:
            try:
                head = await reader.readuntil(b"\r\n\r\n")
            except asyncio.IncompleteReadError:
                break
            doc = next(v for k, v in docs.items() if k.encode() in head)
            body = json.dumps(doc).encode()
            n += 1
            if n % 2:
                chunks = b"".join(b"%x;ext=1\r\n%s\r\n" % (len(body[i:i + 7]), body[i:i + 7]) for i in range(0, len(body), 7))
                writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" + chunks + b"0\r\n\r\n")
            else:
                writer.write(b"HTTP/1.0 200 OK\r\nConnection: close\r\n\r\n" + body)
                await writer.drain()
                break
            await writer.drain()
        writer.close()

    async def body():
        server = await asyncio.start_server(handle, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        try:
            drv = SolarApiDriver(Address.parse(f"fronius+http://127.0.0.1:{port}"),
                                 FAM.capabilities(FAM.parse_config(CONFIG)))
            async with drv:
                for _ in range(3):
                    m = await drv.read()
                    assert m["batt_p_w"] == 300.5 and m["p_w"] == -190 and m["pv_p_w"] == -490.5
                    assert m["e_wh"] == 2000 and m["v_v"] == 231.5 and m["f_hz"] == 49.98 and m["soc"] == 0.4
        finally:
            server.close()
            await server.wait_closed()
    run(body())
