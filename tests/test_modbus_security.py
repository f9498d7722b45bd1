"""Modbus/TCP Security (TLS with client certificates, role-based authorisation) between the virtual Fronius
SunSpec server and the SunSpec driver; and the public-bind rule of `s4g device serve`."""

from __future__ import annotations

import asyncio

import pytest

from s4g.cli import main as s4g
from devices import registry, tls
from devices.base import Address, DeviceUnavailable, Setpoint, SetpointRejected
from devices.fronius.driver import SunSpecDriver
from devices.fronius.virtual import FroniusSunSpecDevice
from tests.security_pki import pkis  # noqa: F401 - fixture

FAM = registry.family("fronius")


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 60))


async def _serve(pki):
    dev = FroniusSunSpecDevice(FAM, FAM.parse_config({}), device_id="fr1")
    await dev.start(ssl=tls.server_context(tls.TlsFiles.from_pki(pki, "device")))
    return dev


def _driver(dev, query: str) -> SunSpecDriver:
    cfg = FAM.parse_config({})
    return SunSpecDriver(Address.parse(f"sunspec+tcp://127.0.0.1:{dev.port}/1?{query}"), FAM.capabilities(cfg),
                         timeout_s=2.0)


def test_a_controller_reads_and_writes_over_tls(pkis):
    async def body():
        dev = await _serve(pkis.dir)
        driver = _driver(dev, f"pki={pkis.dir}&identity=gesscon")
        try:
            await driver.connect()
            m = await driver.read()
            assert 0 <= m["soc"] <= 1
            await driver.write(Setpoint({"batt_p_w": 1000.0}))
            assert dev.server.counters["accepted"] == 1 and dev.server.counters["tls_refused"] == 0
        finally:
            await driver.close()
            await dev.stop()
    run(body())


def test_a_reader_may_read_but_not_write(pkis):
    async def body():
        dev = await _serve(pkis.dir)
        driver = _driver(dev, f"pki={pkis.dir}&identity=dwh")
        try:
            await driver.connect()
            await driver.read()
            with pytest.raises(SetpointRejected, match="does not authorise this certificate's role"):
                await driver.write(Setpoint({"batt_p_w": 1000.0}))
            assert dev.server.counters["unauthorised"] >= 1
        finally:
            await driver.close()
            await dev.stop()
    run(body())


@pytest.mark.parametrize("who", ["anonymous", "wrong_ca", "revoked", "expired", "plain"])
def test_refused_clients(pkis, who):
    query = {"anonymous": f"ca={tls.ca_file(pkis.dir)}",
             "wrong_ca": f"ca={tls.ca_file(pkis.dir)}&cert={tls.cert_file(pkis.other, 'gesscon')}"
                         f"&key={tls.key_file(pkis.other, 'gesscon')}",
             "revoked": f"pki={pkis.dir}&identity=ctl-revoked", "expired": f"pki={pkis.dir}&identity=gw-expired",
             "plain": ""}[who]

    async def body():
        dev = await _serve(pkis.dir)
        driver = _driver(dev, query)
        try:
            with pytest.raises(DeviceUnavailable):
                await driver.connect()
                await driver.read()  # TLS 1.3: a refused client certificate shows at the first read
            await asyncio.sleep(0)
            assert dev.server.counters["tls_refused"] >= 1 and dev.server.counters["accepted"] == 0
        finally:
            await driver.close()
            await dev.stop()
    run(body())


def test_tls_default_port_is_802(pkis):
    cfg = FAM.parse_config({})
    d = SunSpecDriver(Address.parse(f"sunspec+tcp://127.0.0.1/1?pki={pkis.dir}&identity=gesscon"),
                      FAM.capabilities(cfg))
    assert d.port == tls.MODBUS_TLS_PORT == 802
    assert SunSpecDriver(Address.parse("sunspec+tcp://127.0.0.1/1"), FAM.capabilities(cfg)).port == 502
    with pytest.raises(ValueError, match="not a PKI directory"):
        SunSpecDriver(Address.parse("sunspec+tcp://127.0.0.1/1?pki=/nonexistent"), FAM.capabilities(cfg))


@pytest.mark.parametrize("argv", [["fronius", "--port", "0", "--http-port", "0"], ["csms", "--port", "0"],
                                  ["libal", "--rtu-port", "0", "--can-port", "0"]])
def test_serve_refuses_a_public_address_without_tls(argv, capsys):
    assert s4g(["device", "serve", *argv, "--host", "0.0.0.0"]) == 2
    err = capsys.readouterr().err
    assert "without TLS on 0.0.0.0" in err and "--insecure" in err
