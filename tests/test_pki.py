"""The PKI (`s4g pki`): files and permissions, the root kept off line, identities in the certificate, revocation
and the CRL, expiry, refusals; TLS handshakes with the contexts every link uses (devices.tls)."""

from __future__ import annotations

import datetime as dt
import shutil
import ssl
import stat

import pytest
from cryptography import x509
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from s4g.cli import main as s4g
from devices import pki
from devices import tls
from tests.security_pki import SITE, handshake, pkis  # noqa: F401 - fixture


def _mode(path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_init_writes_private_keys_0600_in_0700_folders(pkis):
    d = pkis.dir
    keys = [d / "root" / "root.key", d / "issuing" / "issuing.key", *(d / "keys").iterdir()]
    assert len(keys) > 10
    for key in keys:
        assert _mode(key) == 0o600, key
        assert _mode(key.parent) == 0o700, key.parent
    for public in (tls.ca_file(d), tls.crl_file(d), tls.cert_file(d, "broker")):
        assert _mode(public) & 0o077 == 0o044  # certificates are public, never writable by others


def test_the_root_stays_off_line(tmp_path):
    d = tmp_path / "pki"
    root_key = pki.init(d)
    offline = tmp_path / "usb-stick"
    shutil.move(root_key.parent, offline)  # what docs/security.md tells the operator to do
    pki.issue(d, "gw-1", "gateway", site="s1")
    pki.revoke(d, "gw-1")
    pki.crl(d)
    assert [e.active for e in pki.listing(d)] == [False]
    assert not (d / "root").exists()


def test_init_refuses_to_overwrite(tmp_path):
    pki.init(tmp_path / "p")
    with pytest.raises(pki.PkiError, match="already holds a PKI"):
        pki.init(tmp_path / "p")


def test_certificate_carries_name_role_site_and_hosts(pkis):
    cert = pki.read_certificate(pkis.dir, f"gw-{SITE}")
    ident = tls.identity_from_cert(ssl._ssl._test_decode_cert(str(tls.cert_file(pkis.dir, f"gw-{SITE}"))))
    assert ident.name == f"gw-{SITE}" and ident.role == "gateway" and ident.site == SITE
    eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(eku) == [x509.oid.ExtendedKeyUsageOID.CLIENT_AUTH]
    role = cert.extensions.get_extension_for_oid(x509.ObjectIdentifier(tls.MODBUS_ROLE_OID)).value.value
    assert role == b"\x0c\x07gateway"  # Modbus/TCP Security role: a UTF8String
    validity = cert.not_valid_after_utc - cert.not_valid_before_utc
    assert validity <= dt.timedelta(days=pki.LEAF_DAYS, minutes=5)  # short-lived by default
    server = pki.read_certificate(pkis.dir, "broker")
    san = server.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert "localhost" in san.get_values_for_type(x509.DNSName)
    assert x509.IPAddress(__import__("ipaddress").ip_address("127.0.0.1")) in san


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(name=st.from_regex(pki.NAME_RE, fullmatch=True), role=st.sampled_from(list(pki.ROLES)),
       site=st.none() | st.from_regex(pki.NAME_RE, fullmatch=True))
def test_any_valid_name_role_and_site_round_trips(tmp_path_factory, name, role, site):
    d = tmp_path_factory.mktemp("h") / "pki"
    pki.init(d)
    needs_site = pki.ROLES[role][2]
    if needs_site and site is None:
        with pytest.raises(pki.PkiError, match="needs --site"):
            pki.issue(d, name, role, site=site)
        return
    pki.issue(d, name, role, site=site)
    ident = tls.identity_from_cert(ssl._ssl._test_decode_cert(str(tls.cert_file(d, name))))
    assert (ident.name, ident.role, ident.site) == (name, role, site)
    with pytest.raises(pki.PkiError, match="already has an active certificate"):
        pki.issue(d, name, role, site=site)


@settings(max_examples=60, deadline=None)
@given(st.text(max_size=80).filter(lambda s: not pki.NAME_RE.match(s)))
def test_invalid_names_are_refused_with_the_rule(bad):
    with pytest.raises(pki.PkiError, match=r"expected 1\.\.64 characters"):
        pki.check_name(bad)


def test_unknown_role_bad_host_and_long_validity_are_refused(pkis):
    with pytest.raises(pki.PkiError, match="role 'admin'"):
        pki.issue(pkis.dir, "x1", "admin")
    with pytest.raises(pki.PkiError, match="host 'bad host'"):
        pki.issue(pkis.dir, "x2", "broker", hosts=["bad host"])
    with pytest.raises(pki.PkiError, match="validity 9999 d"):
        pki.issue(pkis.dir, "x3", "reader", days=9999)


def test_renew_supersedes_the_old_certificate(tmp_path):
    d = tmp_path / "p"
    pki.init(d)
    old = pki.issue(d, "ctl", "controller")
    new = pki.issue(d, "ctl", "controller", renew=True)
    assert old.serial != new.serial
    assert int(old.serial, 16) in pki.revoked_serials(d)
    assert int(new.serial, 16) not in pki.revoked_serials(d)


def _csr(cn: str, key=None) -> bytes:
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = key or ec.generate_private_key(ec.SECP256R1())
    req = (x509.CertificateSigningRequestBuilder()
           .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])).sign(key, hashes.SHA256()))
    return req.public_bytes(serialization.Encoding.PEM)


def test_a_request_is_signed_for_its_own_key_and_the_renewal_settles(tmp_path):
    from cryptography.hazmat.primitives.asymmetric import ec

    d = tmp_path / "p"
    pki.init(d)
    old = pki.issue(d, "CP_9", "chargepoint")
    key = ec.generate_private_key(ec.SECP256R1())
    entry, chain = pki.sign_request(d, _csr("CP_9", key), "chargepoint", name="CP_9")
    leaf, issuing = x509.load_pem_x509_certificates(chain)
    assert leaf.public_key() == key.public_key() and f"{leaf.serial_number:x}" == entry.serial
    assert leaf.subject.rfc4514_string() == "CN=CP_9,OU=chargepoint,O=S4G" and leaf.issuer == issuing.subject
    leaf.verify_directly_issued_by(issuing)
    assert pki.load_inventory(d).active("CP_9").serial == entry.serial  # the newest; the old is still valid
    assert int(old.serial, 16) not in pki.revoked_serials(d)
    pki.settle_renewal(d, entry.serial, installed=True)
    assert int(old.serial, 16) in pki.revoked_serials(d) and int(entry.serial, 16) not in pki.revoked_serials(d)
    second, _ = pki.sign_request(d, _csr("CP_9"), "chargepoint", name="CP_9")
    pki.settle_renewal(d, second.serial, installed=False)  # refused by the station: never to be used
    assert int(second.serial, 16) in pki.revoked_serials(d) and pki.load_inventory(d).active("CP_9").serial == entry.serial
    with pytest.raises(pki.PkiError, match="no active certificate"):
        pki.settle_renewal(d, second.serial, installed=True)


def test_bad_requests_are_refused_with_the_reason(tmp_path):
    from cryptography.hazmat.primitives.asymmetric import rsa

    d = tmp_path / "p"
    pki.init(d)
    with pytest.raises(pki.PkiError, match="is not the requester's identity 'CP_1'"):
        pki.sign_request(d, _csr("CP_2"), "chargepoint", name="CP_1")
    with pytest.raises(pki.PkiError, match="not a PEM certificate signing request"):
        pki.sign_request(d, b"-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n-----END CERTIFICATE REQUEST-----\n",
                         "chargepoint")
    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    with pytest.raises(pki.PkiError, match="not an EC P-256 key"):
        pki.sign_request(d, _csr("CP_1", rsa_key), "chargepoint")
    with pytest.raises(pki.PkiError, match="CN"):
        pki.sign_request(d, _csr("bad name/with slash"), "chargepoint")
    with pytest.raises(pki.PkiError, match="needs --site"):
        pki.sign_request(d, _csr("gw"), "gateway")
    with pytest.raises(pki.PkiError, match="for client roles"):
        pki.sign_request(d, _csr("broker"), "broker")
    tampered = _csr("CP_1").replace(b"CERTIFICATE REQUEST-----\nMI", b"CERTIFICATE REQUEST-----\nMJ")
    with pytest.raises(pki.PkiError):
        pki.sign_request(d, tampered, "chargepoint")
    assert [e.name for e in pki.listing(d)] == []  # nothing was issued


def test_cli_signs_a_devices_own_request(tmp_path, capsys):
    from cryptography.hazmat.primitives.asymmetric import ec

    d = tmp_path / "p"
    pki.init(d)
    key = ec.generate_private_key(ec.SECP256R1())
    (tmp_path / "gw.csr").write_bytes(_csr("gw-fur", key))
    assert s4g(["pki", "sign", str(d), str(tmp_path / "gw.csr"), "--role", "gateway", "--site", "fur"]) == 0
    leaf = x509.load_pem_x509_certificates((d / "certs" / "gw-fur.requested.pem").read_bytes())[0]
    assert leaf.public_key() == key.public_key()
    assert tls.identity_from_cert({"subject": ((("commonName", "gw-fur"),),),
                                   "subjectAltName": [("URI", u) for u in leaf.extensions.get_extension_for_class(
                                       x509.SubjectAlternativeName).value.get_values_for_type(
                                       x509.UniformResourceIdentifier)]}).site == "fur"
    assert pki.load_inventory(d).active("gw-fur").site == "fur"
    capsys.readouterr()
    assert s4g(["pki", "sign", str(d), str(tmp_path / "gw.csr"), "--role", "gateway", "--site", "fur"]) == 0
    assert "note: gw-fur also has the active certificate" in capsys.readouterr().out  # never silently two
    assert s4g(["pki", "sign", str(d), str(tmp_path / "gw.csr"), "--role", "chargepoint", "--name", "CP_1"]) == 2
    assert "is not the requester's identity 'CP_1'" in capsys.readouterr().err
    assert s4g(["pki", "sign", str(d), str(tmp_path / "missing.csr"), "--role", "controller"]) == 2


def test_crl_lists_exactly_the_revoked(pkis):
    revoked = {int(e.serial, 16) for e in pki.listing(pkis.dir) if not e.active}
    assert revoked and pki.revoked_serials(pkis.dir) == revoked


# -- TLS with the contexts of devices.tls ---------------------------------------------------------------------
def _server(pkis, name="broker"):
    return tls.server_context(tls.TlsFiles.from_pki(pkis.dir, name))


def _client(d, name=None):
    return tls.client_context(tls.TlsFiles.from_pki(d, name))


def test_mutual_tls_gives_the_server_the_client_identity(pkis):
    server, client_err = handshake(_server(pkis), _client(pkis.dir, "gesscon"))
    assert client_err is None and isinstance(server, ssl.SSLSocket), server
    ident = tls.peer_identity(server)
    assert (ident.name, ident.role, ident.site) == ("gesscon", "controller", None)


@pytest.mark.parametrize("client", ["anonymous", "wrong_ca", "revoked", "expired"])
def test_server_refuses(pkis, client):
    ctx = {"anonymous": lambda: _client(pkis.dir), "wrong_ca": lambda: tls.client_context(
        tls.TlsFiles(ca=tls.ca_file(pkis.dir), cert=tls.cert_file(pkis.other, "gesscon"),
                     key=tls.key_file(pkis.other, "gesscon"))),
           "revoked": lambda: _client(pkis.dir, "gw-revoked"), "expired": lambda: _client(pkis.dir, "gw-expired")}
    server, _ = handshake(_server(pkis), ctx[client]())
    assert isinstance(server, ssl.SSLError), server
    reason = {"anonymous": "PEER_DID_NOT_RETURN_A_CERTIFICATE", "wrong_ca": "CERTIFICATE_VERIFY_FAILED",
              "revoked": "CERTIFICATE_VERIFY_FAILED", "expired": "CERTIFICATE_VERIFY_FAILED"}[client]
    assert reason in str(server)


def test_client_refuses_a_server_of_another_ca(pkis):
    server_ctx = tls.server_context(tls.TlsFiles.from_pki(pkis.other, "broker"))
    _, client_err = handshake(server_ctx, _client(pkis.dir, "gesscon"))
    assert isinstance(client_err, ssl.SSLCertVerificationError)


def test_a_stale_crl_fails_closed(tmp_path):
    d = tmp_path / "p"
    pki.init(d)
    pki.issue(d, "broker", "broker")
    pki.issue(d, "c", "controller")
    # a CRL whose next update is in the past: nobody refreshed it
    from cryptography.hazmat.primitives import hashes, serialization

    cert, key = pki._issuing(d)
    now = dt.datetime.now(dt.UTC)
    stale = (x509.CertificateRevocationListBuilder().issuer_name(cert.subject)
             .last_update(now - dt.timedelta(days=9)).next_update(now - dt.timedelta(days=2))
             .sign(key, hashes.SHA256()))
    tls.crl_file(d).write_bytes(stale.public_bytes(serialization.Encoding.PEM))
    server, client_err = handshake(tls.server_context(tls.TlsFiles.from_pki(d, "broker")), _client(d, "c"))
    # both ends check the CRL: the client refuses the server first ("CRL has expired"), the server sees the alert
    assert isinstance(client_err, ssl.SSLCertVerificationError) and "CRL has expired" in str(client_err)
    assert isinstance(server, ssl.SSLError)


def test_files_from_query():
    assert tls.files_from_query({}) is None
    with pytest.raises(tls.TlsConfigError, match="identity= needs pki"):
        tls.files_from_query({"identity": ["x"]})
    with pytest.raises(tls.TlsConfigError, match="not a PKI directory"):
        tls.files_from_query({"pki": ["/nonexistent"]})
    assert tls.files_from_query({"tls": "1"}) == tls.TlsFiles()


def test_cli_round_trip(tmp_path, capsys):
    d = str(tmp_path / "p")
    assert s4g(["pki", "init", d]) == 0
    assert "off line" in capsys.readouterr().out
    assert s4g(["pki", "issue", d, "gw-a", "--role", "gateway", "--site", "a"]) == 0
    assert s4g(["pki", "issue", d, "gw-a", "--role", "gateway", "--site", "a"]) == 2
    assert "already has an active certificate" in capsys.readouterr().err
    assert s4g(["pki", "issue", d, "bad name", "--role", "reader"]) == 2
    assert s4g(["pki", "revoke", d, "gw-a", "--reason", "key_compromise"]) == 0
    assert s4g(["pki", "crl", d, "--days", "2"]) == 0
    capsys.readouterr()
    assert s4g(["pki", "list", d]) == 0
    assert "revoked (key_compromise)" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        s4g(["pki", "issue", d, "x", "--role", "nope"])
