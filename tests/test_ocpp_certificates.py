"""Certificate management over OCPP (2.0.1 A02, M03-M05; the 1.6 security extension) between the virtual charge
point, our CSMS and its PKI: a renewal by the station's own signing request ends with the station presenting the
new certificate and the old one revoked; chains the station must not install are refused and reported; roots are
installed, listed by their hash data and deleted, never the last CSMS root nor the station's own certificate."""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from devices import pki, registry
from devices.base import Address, DeviceUnavailable
from devices.wallbox import csms
from devices.wallbox import security as sec
from devices.wallbox.certificates import CertificateRefused, StationCertificates, hash_data
from devices.wallbox.driver import Ocpp16Driver, Ocpp201Driver
from devices.wallbox.virtual import VirtualWallbox16, VirtualWallbox201

FAM = registry.family("wallbox")
VERSIONS = [(VirtualWallbox16, Ocpp16Driver), (VirtualWallbox201, Ocpp201Driver)]
IDS = ["1.6", "2.0.1"]


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 60))


@pytest.fixture
def ca(tmp_path):
    """A PKI of its own per test: a renewal revokes certificates."""
    d = tmp_path / "pki"
    pki.init(d)
    pki.issue(d, "csms", "csms")
    pki.issue(d, "CP_1", "chargepoint")
    return d


def _self_signed_ca(cn: str = "Manufacturer Root") -> x509.Certificate:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])
    now = dt.datetime.now(dt.UTC)
    return (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(minutes=1))
            .not_valid_after(now + dt.timedelta(days=30))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))


def _pem(cert: x509.Certificate) -> str:
    return cert.public_bytes(serialization.Encoding.PEM).decode()


async def _connected(ca, vcls, dcls, profile: int = 3):
    server = await csms.acquire("127.0.0.1", 0, security=sec._csms_security(profile, str(ca), "csms"))
    dev = vcls(FAM, FAM.parse_config({}), device_id="CP_1")
    await dev.start_client(server.url, security=sec.StationSecurity.from_pki(profile, str(ca), "CP_1"))
    driver = dcls(Address.parse(f"{dcls.schemes[0]}://127.0.0.1:{server.port}/CP_1?security_profile={profile}"
                                f"&pki={ca}"), FAM.capabilities(FAM.parse_config({})), timeout_s=5.0)
    await driver.connect()
    await dev.cp.wait_booted(5)
    return server, dev, driver


async def _close(server, dev, driver):
    await driver.close()
    await dev.stop()
    await csms.release(server)


@pytest.mark.parametrize("vcls, dcls", VERSIONS, ids=IDS)
def test_a_renewal_installs_the_new_certificate_and_revokes_the_old(ca, vcls, dcls):
    async def body():
        server, dev, driver = await _connected(ca, vcls, dcls)
        try:
            state = driver.state
            old = state.tls_serial
            assert old == f"{pki.read_certificate(ca, 'CP_1').serial_number:x}"
            assert await driver.renew_certificate(10) == "installed"
            new = state.renewal_serial
            assert new and new != old and dev.cp.stats["certificate_installed"] == 1
            assert int(old, 16) in pki.revoked_serials(ca) and int(new, 16) not in pki.revoked_serials(ca)
            # the new certificate is for the key the station made, and it presents it from its next connection on
            await dev.cp._ws.close()
            assert await state.wait_for(lambda: state.booted and state.tls_serial == new, 10)
            await dev.cp.wait_booted(5)  # the station has the answer to its second boot too
            assert dev.cp.boots == 2
            assert dev.cp.security.certificates.certificate.serial_number == int(new, 16)
        finally:
            await _close(server, dev, driver)
        # the old certificate (still in the PKI folder) no longer gets in: revoked
        server = await csms.acquire("127.0.0.1", 0, security=sec._csms_security(3, str(ca), "csms"))
        stale = vcls(FAM, FAM.parse_config({}), device_id="CP_1")
        await stale.start_client(server.url, security=sec.StationSecurity.from_pki(3, str(ca), "CP_1"))
        drv = dcls(Address.parse(f"{dcls.schemes[0]}://127.0.0.1:{server.port}/CP_1?security_profile=3&pki={ca}"),
                   FAM.capabilities(FAM.parse_config({})), timeout_s=1.0)
        try:
            with pytest.raises(DeviceUnavailable, match="did not connect and boot"):
                await drv.connect()
            assert stale.cp.boots == 0
        finally:
            await _close(server, stale, drv)
    run(body())


@pytest.mark.parametrize("vcls, dcls", VERSIONS, ids=IDS)
def test_a_chain_the_station_cannot_trust_is_refused_and_reported(ca, vcls, dcls, tmp_path):
    async def body():
        events = []
        server, dev, driver = await _connected(ca, vcls, dcls)
        server.listeners.append(lambda st, action, p: events.append((action, p)))
        try:
            dev.cp.security.certificates.csr()  # a request is pending, as after a trigger
            other = tmp_path / "other"
            pki.init(other)
            pki.issue(other, "CP_1", "chargepoint")  # the right name, from a CA the station does not trust
            foreign = (other / "certs" / "CP_1.pem").read_text()
            payload = {"certificateChain": foreign}
            if dcls is Ocpp201Driver:
                payload["certificateType"] = "ChargingStationCertificate"
            assert (await driver.request("CertificateSigned", payload))["status"] == "Rejected"
            assert await driver.state.wait_for(lambda: any(a == "SecurityEventNotification" for a, _ in events), 5)
            event = next(p for a, p in events if a == "SecurityEventNotification")
            assert event["type"] == ("InvalidChargePointCertificate" if dcls is Ocpp16Driver
                                     else "InvalidChargingStationCertificate")
            assert "not for the key of our signing request" in event["techInfo"]
            assert dev.cp.security.certificates.generation == 0
        finally:
            await _close(server, dev, driver)
    run(body())


@pytest.mark.parametrize("vcls, dcls", VERSIONS, ids=IDS)
def test_roots_are_installed_listed_and_deleted(ca, vcls, dcls):
    v16 = dcls is Ocpp16Driver
    manufacturer = "ManufacturerRootCertificate"
    csms_root = "CentralSystemRootCertificate" if v16 else "CSMSRootCertificate"

    def listed(reply):
        if reply["status"] != "Accepted":
            return []
        return reply["certificateHashData"] if v16 else [c["certificateHashData"]
                                                          for c in reply["certificateHashDataChain"]]

    def ids_request(kind):
        return {"certificateType": kind if v16 else [kind]}

    async def body():
        server, dev, driver = await _connected(ca, vcls, dcls)
        try:
            assert listed(await driver.request("GetInstalledCertificateIds", ids_request(manufacturer))) == []
            root = _self_signed_ca()
            reply = await driver.request("InstallCertificate", {"certificateType": manufacturer,
                                                                "certificate": _pem(root)})
            assert reply["status"] == "Accepted"
            got = listed(await driver.request("GetInstalledCertificateIds", ids_request(manufacturer)))
            key = root.public_key().public_bytes(serialization.Encoding.X962,
                                                 serialization.PublicFormat.UncompressedPoint)
            assert got == [{"hashAlgorithm": "SHA256", "serialNumber": f"{root.serial_number:x}",
                            "issuerNameHash": hashlib.sha256(root.subject.public_bytes()).hexdigest(),
                            "issuerKeyHash": hashlib.sha256(key).hexdigest()}]
            # a leaf is no root; garbage is no certificate
            leaf = pki.read_certificate(ca, "csms")
            for bad in (_pem(leaf), "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"):
                reply = await driver.request("InstallCertificate", {"certificateType": manufacturer,
                                                                    "certificate": bad})
                assert reply["status"] == "Rejected"
            assert (await driver.request("DeleteCertificate", {"certificateHashData": got[0]}))["status"] == "Accepted"
            assert (await driver.request("DeleteCertificate", {"certificateHashData": got[0]}))["status"] == "NotFound"
            # the CSMS roots: the PKI's root and issuing CA; one may go, the last may not
            anchors = listed(await driver.request("GetInstalledCertificateIds", ids_request(csms_root)))
            assert len(anchors) == 2
            assert (await driver.request("DeleteCertificate", {"certificateHashData": anchors[1]}))["status"] \
                == "Accepted"
            assert (await driver.request("DeleteCertificate", {"certificateHashData": anchors[0]}))["status"] \
                == "Failed"
            own = dev.cp.security.certificates
            issuing = x509.load_pem_x509_certificates((ca / "ca.pem").read_bytes())
            mine = hash_data(own.certificate, next(c for c in issuing if c.subject == own.certificate.issuer))
            assert (await driver.request("DeleteCertificate", {"certificateHashData": mine}))["status"] == "Failed"
        finally:
            await _close(server, dev, driver)
    run(body())


@pytest.mark.parametrize("vcls, dcls", VERSIONS, ids=IDS)
def test_without_a_pki_nothing_is_signed(ca, vcls, dcls):
    """A CSMS on profile 0 has no CA to sign with, and the station has no certificate to renew."""
    async def body():
        server, dev, driver = await _connected(ca, vcls, dcls, profile=0)
        try:
            assert await driver.renew_certificate(5) == "rejected"
            assert dev.cp.stats["sign_certificate_Accepted"] == 0
        finally:
            await _close(server, dev, driver)
    run(body())


def test_the_store_installs_only_a_chain_for_its_request_its_name_and_its_roots(ca, tmp_path):
    store = StationCertificates.from_pki(ca, "CP_1")
    try:
        with pytest.raises(CertificateRefused, match="no signing request is pending"):
            store.install_chain(pki.cert_file(ca, "CP_1").read_text())
        csr = store.csr()
        with pytest.raises(CertificateRefused, match="not for the key"):  # the old certificate, another key
            store.install_chain(pki.cert_file(ca, "CP_1").read_text())
        entry, chain = pki.sign_request(ca, csr.encode(), "chargepoint")
        store.install_chain(chain.decode())
        assert store.generation == 1 and f"{store.certificate.serial_number:x}" == entry.serial
        # a request made under another name is not ours even when signed by our CSMS's CA
        other = StationCertificates.from_pki(ca, "CP_1")
        other.cp_id = "CP_2"
        signed_for_2 = pki.sign_request(ca, other.csr().encode(), "chargepoint")[1].decode()
        store._pending = other._pending
        with pytest.raises(CertificateRefused, match="not 'CP_1'"):
            store.install_chain(signed_for_2)
        other.close()
        files = store.files()
        assert all(p.stat().st_mode & 0o077 == 0 for p in (files.key, files.cert))
    finally:
        store.close()
    assert not files.key.exists()
