"""OCPP security profiles 1-3 between the virtual charge point, our CSMS (through the driver) and the proxy:
who gets in and who does not (wrong password, no password, wrong certificate name, revoked, expired, foreign
CA, unknown id), and the security configuration keys / variables a CSMS expects."""

from __future__ import annotations

import asyncio
from contextlib import asynccontextmanager

import pytest

from devices import registry
from devices.base import Address, DeviceUnavailable
from devices.wallbox import csms
from devices.wallbox import security as sec
from devices.wallbox.driver import Ocpp16Driver, Ocpp201Driver
from devices.wallbox.virtual import VirtualWallbox16, VirtualWallbox201
from tests.security_pki import pkis  # noqa: F401 - fixture

FAM = registry.family("wallbox")
PASSWORD = "s3cret-password-16+"
VERSIONS = [(VirtualWallbox16, Ocpp16Driver), (VirtualWallbox201, Ocpp201Driver)]
IDS = ["1.6", "2.0.1"]


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 60))


@asynccontextmanager
async def secure_csms(profile: int, pki, *, identity: str = "csms"):
    security = sec._csms_security(profile, str(pki) if profile >= 2 else None, identity)
    server = await csms.acquire("127.0.0.1", 0, security=security)
    try:
        yield server
    finally:
        await csms.release(server)


async def attempt(server, vcls, dcls, *, cp_id: str, station: sec.StationSecurity, query: str,
                  expect_ok: bool):
    """A driver admits ``cp_id``; a virtual charge point with ``station`` security tries to connect."""
    cfg = FAM.parse_config({})
    dev = vcls(FAM, cfg, device_id=cp_id)
    await dev.start_client(server.url, security=station)
    driver = dcls(Address.parse(f"{dcls.schemes[0]}://127.0.0.1:{server.port}/{cp_id}?{query}"),
                  FAM.capabilities(cfg), timeout_s=3.0 if expect_ok else 1.0)
    try:
        if expect_ok:
            await driver.connect()
            await dev.cp.wait_booted(5)
            assert dev.cp.boots == 1
        else:
            with pytest.raises(DeviceUnavailable, match="did not connect and boot"):
                await driver.connect()
            assert dev.cp.boots == 0 and dev.cp.stats["connects"] == 0
        return dev.cp, driver
    finally:
        await driver.close()
        await dev.stop()


@pytest.fixture
def password_env(monkeypatch):
    monkeypatch.setenv("S4G_TEST_CP_PW", PASSWORD)
    return "password_env=S4G_TEST_CP_PW"


@pytest.mark.parametrize("vcls, dcls", VERSIONS, ids=IDS)
def test_profile_1_basic_auth(vcls, dcls, password_env):
    async def body():
        async with secure_csms(1, None) as server:
            q = f"security_profile=1&{password_env}"
            await attempt(server, vcls, dcls, cp_id="CP_1", query=q, expect_ok=True,
                          station=sec.StationSecurity(1, PASSWORD))
            await attempt(server, vcls, dcls, cp_id="CP_1", query=q, expect_ok=False,
                          station=sec.StationSecurity(1, "a-wrong-password-0123"))
            await attempt(server, vcls, dcls, cp_id="CP_1", query=q, expect_ok=False, station=sec.StationSecurity())
            assert server.stats["refused_bad_credentials"] >= 1 and server.stats["refused_no_credentials"] >= 1
            assert server.url.startswith("ws://")
    run(body())


@pytest.mark.parametrize("vcls, dcls", VERSIONS, ids=IDS)
def test_profile_2_tls_and_basic_auth(vcls, dcls, pkis, password_env):
    async def body():
        async with secure_csms(2, pkis.dir) as server:
            assert server.url.startswith("wss://")
            q = f"security_profile=2&pki={pkis.dir}&{password_env}"
            await attempt(server, vcls, dcls, cp_id="CP_1", query=q, expect_ok=True,
                          station=sec.StationSecurity.from_pki(2, str(pkis.dir), password=PASSWORD))
            # a station that trusts another CA refuses our CSMS; a wrong password is refused by it
            cp, _ = await attempt(server, vcls, dcls, cp_id="CP_1", query=q, expect_ok=False,
                                  station=sec.StationSecurity.from_pki(2, str(pkis.other), password=PASSWORD))
            assert any("SSL" in k for k in cp.stats), cp.stats
            await attempt(server, vcls, dcls, cp_id="CP_1", query=q, expect_ok=False,
                          station=sec.StationSecurity.from_pki(2, str(pkis.dir), password="another-password-xyz"))
            assert server.stats["refused_bad_credentials"] >= 1
    run(body())


@pytest.mark.parametrize("vcls, dcls", VERSIONS, ids=IDS)
def test_profile_3_client_certificates(vcls, dcls, pkis):
    async def body():
        async with secure_csms(3, pkis.dir) as server:
            q = f"security_profile=3&pki={pkis.dir}"
            await attempt(server, vcls, dcls, cp_id="CP_1", query=q, expect_ok=True,
                          station=sec.StationSecurity.from_pki(3, str(pkis.dir), "CP_1"))
            # revoked, expired, foreign CA: the TLS handshake fails; they never boot
            for cp_id, pki in (("CP_revoked", pkis.dir), ("CP_expired", pkis.dir), ("CP_1", pkis.other)):
                await attempt(server, vcls, dcls, cp_id=cp_id, query=q, expect_ok=False,
                              station=sec.StationSecurity.from_pki(3, str(pki), cp_id))
            # a valid certificate of another charge point: 403
            await attempt(server, vcls, dcls, cp_id="CP_1", query=q, expect_ok=False,
                          station=sec.StationSecurity.from_pki(3, str(pkis.dir), "CP_2"))
            assert server.stats["refused_wrong_certificate"] >= 1
            # TLS without a client certificate (a profile-2 station) is refused at the handshake
            await attempt(server, vcls, dcls, cp_id="CP_1", query=q, expect_ok=False,
                          station=sec.StationSecurity.from_pki(2, str(pkis.dir), password=PASSWORD))
    run(body())


def test_unknown_ids_are_refused_by_an_allow_list(pkis):
    async def body():
        async with secure_csms(3, pkis.dir) as server:
            # CP_2 holds a valid certificate but no driver admits it: 404
            dev = VirtualWallbox16(FAM, FAM.parse_config({}), device_id="CP_2")
            await dev.start_client(server.url, security=sec.StationSecurity.from_pki(3, str(pkis.dir), "CP_2"))
            try:
                while server.stats["refused_unknown_id"] < 2:
                    await asyncio.sleep(0.05)
                assert dev.cp.boots == 0
            finally:
                await dev.stop()
    run(body())


def test_a_driver_cannot_weaken_a_secure_csms(pkis, password_env):
    async def body():
        async with secure_csms(3, pkis.dir) as server:
            driver = Ocpp16Driver(Address.parse(f"ocpp16://127.0.0.1:{server.port}/CP_1?security_profile=1&"
                                                f"{password_env}"), FAM.capabilities(FAM.parse_config({})))
            with pytest.raises(ValueError, match="security profile 3"):
                await driver.connect()
    run(body())


@pytest.mark.parametrize("query, match", [
    ("security_profile=4", "expected one of"), ("security_profile=2&password_env=S4G_TEST_CP_PW", "needs pki="),
    ("security_profile=1", "needs password_env"), ("pki=/x", "need security_profile"),
    ("security_profile=1&password_env=S4G_NOT_SET_ANYWHERE", "not set")])
def test_bad_security_addresses_are_refused(query, match, monkeypatch):
    monkeypatch.setenv("S4G_TEST_CP_PW", PASSWORD)
    with pytest.raises(ValueError, match=match):
        Ocpp16Driver(Address.parse(f"ocpp16://127.0.0.1:9000/CP_1?{query}"), FAM.capabilities(FAM.parse_config({})))


def test_security_configuration_keys_1_6(password_env):
    async def body():
        async with secure_csms(1, None) as server:
            dev = VirtualWallbox16(FAM, FAM.parse_config({}), device_id="CP_1")
            await dev.start_client(server.url, security=sec.StationSecurity(1, PASSWORD))
            driver = Ocpp16Driver(Address.parse(f"ocpp16://127.0.0.1:{server.port}/CP_1?security_profile=1&"
                                                f"{password_env}"), FAM.capabilities(FAM.parse_config({})),
                                  timeout_s=3)
            try:
                await driver.connect()
                conf = await driver.request("GetConfiguration", {"key": ["SecurityProfile", "AuthorizationKey"]})
                keys = {k["key"]: k for k in conf["configurationKey"]}
                assert keys["SecurityProfile"]["value"] == "1" and "value" not in keys["AuthorizationKey"]
                change = lambda k, v: driver.request("ChangeConfiguration", {"key": k, "value": v})  # noqa: E731
                assert (await change("SecurityProfile", "0"))["status"] == "Rejected"  # never downwards
                assert (await change("SecurityProfile", "2"))["status"] == "Rejected"  # no TLS configured
                assert (await change("AuthorizationKey", "short"))["status"] == "Rejected"
                assert (await change("AuthorizationKey", "a-new-password-4567"))["status"] == "Accepted"
                assert dev.cp.settings["authorization_key"] == "a-new-password-4567"
            finally:
                await driver.close()
                await dev.stop()
    run(body())


def test_security_variables_2_0_1(password_env):
    async def body():
        async with secure_csms(1, None) as server:
            dev = VirtualWallbox201(FAM, FAM.parse_config({}), device_id="CP_1")
            await dev.start_client(server.url, security=sec.StationSecurity(1, PASSWORD))
            driver = Ocpp201Driver(Address.parse(f"ocpp201://127.0.0.1:{server.port}/CP_1?security_profile=1&"
                                                 f"{password_env}"), FAM.capabilities(FAM.parse_config({})),
                                   timeout_s=3)
            var = lambda name: {"component": {"name": "SecurityCtrlr"}, "variable": {"name": name}}  # noqa: E731
            try:
                await driver.connect()
                got = await driver.request("GetVariables", {"getVariableData": [var("SecurityProfile"),
                                                                                var("BasicAuthPassword")]})
                res = {r["variable"]["name"]: r for r in got["getVariableResult"]}
                assert res["SecurityProfile"]["attributeValue"] == "1"
                assert res["BasicAuthPassword"]["attributeStatus"] == "Rejected"  # write-only
                assert "attributeValue" not in res["BasicAuthPassword"]
                put = await driver.request("SetVariables", {"setVariableData": [
                    {**var("BasicAuthPassword"), "attributeValue": "a-new-password-4567"},
                    {**var("SecurityProfile"), "attributeValue": "3"}]})
                assert [r["attributeStatus"] for r in put["setVariableResult"]] == ["Accepted", "Rejected"]
            finally:
                await driver.close()
                await dev.stop()
    run(body())
