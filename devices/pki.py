"""The framework's certificate authority: an offline root, an issuing CA, certificates per identity, a CRL.

``s4g pki init DIR`` makes a root CA (10 years) and an issuing CA (1 year) signed by it. The root's private key
is written to ``DIR/root/`` and used for nothing else: in a real deployment that folder goes to offline media
(an encrypted USB stick in a safe) right after ``init``, and every later command (issue, revoke, crl, list)
works without it (tested). ``issue`` makes a certificate for one identity — a broker, an SMX gateway, a
controller, a charge point, a CSMS, a web server, ... — with its name and role in the subject (CN, OU) and
the SAN (``urn:s4g:role:ROLE``, ``urn:s4g:site:SITE``, host names and addresses for servers), short-lived by
default (30 days). ``revoke`` marks it revoked and publishes a new CRL; ``crl`` re-signs the CRL (it expires
after 7 days: peers that check it fail closed when nobody refreshes it).

Private keys are EC P-256, created 0600 with ``O_EXCL`` (never world-readable, not even for a moment) in 0700
folders. The inventory (``inventory.json``) lists every certificate issued, with its serial and state.
The layout is in :mod:`devices.tls` (which every TLS link reads).
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import json
import os
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from collections.abc import Iterable
from typing import cast

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from devices.tls import MODBUS_ROLE_OID, URN_ROLE, URN_SITE, ca_file, cert_file, crl_file, key_file

#: role -> (what it is, server (True) or client (False), needs a site)
ROLES: dict[str, tuple[str, bool, bool]] = {
    "broker": ("an MQTT broker (SMX, Aggregator, Data or Control Broker)", True, False),
    "csms": ("an OCPP central system (our CSMS or the proxy)", True, False),
    "device": ("a device's protocol server (Modbus/TCP Security, ...)", True, False),
    "web": ("a web page or API server", True, False),
    "gateway": ("an SMX gateway of one site (publishes that site's field data)", False, True),
    "controller": ("a control component (GESSCon, PROFESS, LESSAg, ...): may publish on the Control Broker", False,
                   False),
    "reader": ("a reader (data warehouse, monitor, dashboard): reads what its site or the data allow", False, False),
    "chargepoint": ("an OCPP charge point (security profile 3)", False, False),
    "cosim": ("the co-simulation's message bus (carries every simulated component of a scenario)", False, False),
}
SERVER_ROLES = tuple(r for r, (_, server, _) in ROLES.items() if server)
CLIENT_ROLES = tuple(r for r, (_, server, _) in ROLES.items() if not server)

ROOT_DAYS = 3650
ISSUING_DAYS = 365
LEAF_DAYS = 30
CRL_DAYS = 7
MAX_LEAF_DAYS = 825  # what browsers accept at most; a longer leaf is a mistake
#: names of identities and sites: the MQTT topic tokens' alphabet, lower and upper case, at most 64 characters
NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:\-]{0,63}\Z")
REASONS = {r.name: r for r in x509.ReasonFlags if r not in (x509.ReasonFlags.remove_from_crl,)}


class PkiError(ValueError):
    """A PKI command that cannot be carried out; ``str()`` says what and why."""


@dataclass
class Issued:
    """One inventory entry."""

    serial: str  # hex
    name: str
    role: str
    site: str | None
    hosts: list[str]
    not_before: str
    not_after: str
    revoked_at: str | None = None
    reason: str | None = None

    @property
    def active(self) -> bool:
        return self.revoked_at is None


@dataclass
class Inventory:
    org: str
    issued: list[Issued] = field(default_factory=list)

    def active(self, name: str) -> Issued | None:
        """The newest active certificate of ``name`` (during a renewal by request the old one is active too)."""
        return next((e for e in reversed(self.issued) if e.name == name and e.active), None)


# -- files -----------------------------------------------------------------------------------------------------
def _private_dir(path: Path) -> None:
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.chmod(path, 0o700)


def _write_private(path: Path, data: bytes) -> None:
    """Create ``path`` 0600 with O_EXCL, so the key is never readable by others, not even between create
    and chmod; an existing key is replaced by a new file (never rewritten in place)."""
    tmp = path.with_name(path.name + ".new")
    try:
        tmp.unlink()
    except FileNotFoundError:
        pass
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    os.replace(tmp, path)


def _write_public(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".new")
    tmp.write_bytes(data)
    os.chmod(tmp, 0o644)
    os.replace(tmp, path)


def _pem_key(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def _pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def _root_key_file(d: Path) -> Path:
    return d / "root" / "root.key"


def _issuing_key_file(d: Path) -> Path:
    return d / "issuing" / "issuing.key"


def _issuing_cert_file(d: Path) -> Path:
    return d / "issuing" / "issuing.pem"


def _inventory_file(d: Path) -> Path:
    return d / "inventory.json"


def load_inventory(d: str | Path) -> Inventory:
    path = _inventory_file(Path(d))
    if not path.is_file():
        raise PkiError(f"{d}: not a PKI directory (no inventory.json; make one with `s4g pki init {d}`)")
    raw = json.loads(path.read_text(encoding="utf-8"))
    return Inventory(org=raw["org"], issued=[Issued(**e) for e in raw["issued"]])


def _save_inventory(d: Path, inv: Inventory) -> None:
    _write_public(_inventory_file(d), json.dumps({"org": inv.org, "issued": [asdict(e) for e in inv.issued]},
                                                 indent=1).encode())


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC).replace(microsecond=0)


def check_name(value: str, what: str = "name") -> str:
    if not isinstance(value, str) or not NAME_RE.match(value):
        raise PkiError(f"{what} {value!r}: expected 1..64 characters of letters, digits, _ . : - starting with a "
                       f"letter or digit")
    return value


def check_host(value: str) -> str:
    """A DNS name or an IP address for a server's SAN."""
    try:
        ipaddress.ip_address(value)
        return value
    except ValueError:
        pass
    labels = value.rstrip(".").split(".")
    if not value or len(value) > 253 or not all(re.fullmatch(r"[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?", lb)
                                                for lb in labels):
        raise PkiError(f"host {value!r}: expected a DNS name or an IP address")
    return value


# -- commands --------------------------------------------------------------------------------------------------
def _name(org: str, cn: str, ou: str | None = None) -> x509.Name:
    attrs = [x509.NameAttribute(NameOID.ORGANIZATION_NAME, org)]
    if ou:
        attrs.append(x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, ou))
    attrs.append(x509.NameAttribute(NameOID.COMMON_NAME, cn))
    return x509.Name(attrs)


def _ca_cert(subject: x509.Name, issuer: x509.Name, key: ec.EllipticCurvePrivateKey,
             signer: ec.EllipticCurvePrivateKey, days: int, path_length: int, now: dt.datetime,
             issuer_cert: x509.Certificate | None = None) -> x509.Certificate:
    b = (x509.CertificateBuilder().subject_name(subject).issuer_name(issuer).public_key(key.public_key())
         .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(minutes=5))
         .not_valid_after(now + dt.timedelta(days=days))
         .add_extension(x509.BasicConstraints(ca=True, path_length=path_length), critical=True)
         .add_extension(x509.KeyUsage(digital_signature=False, content_commitment=False, key_encipherment=False,
                                      data_encipherment=False, key_agreement=False, key_cert_sign=True,
                                      crl_sign=True, encipher_only=False, decipher_only=False), critical=True)
         .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False))
    if issuer_cert is not None:
        b = b.add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(signer.public_key()), critical=False)
    return b.sign(signer, hashes.SHA256())


def init(d: str | Path, *, org: str = "S4G", root_days: int = ROOT_DAYS, issuing_days: int = ISSUING_DAYS,
         crl_days: int = CRL_DAYS) -> Path:
    """A new PKI in ``d`` (which must not hold one). Returns the root key's path: take it off line."""
    d = Path(d)
    if _inventory_file(d).exists() or ca_file(d).exists():
        raise PkiError(f"{d}: already holds a PKI (refusing to overwrite it)")
    check_name(org.replace(" ", "_"), "organisation")
    if not 1 <= issuing_days <= root_days:
        raise PkiError(f"the issuing CA's validity ({issuing_days} d) must be 1..{root_days} d (the root's)")
    d.mkdir(parents=True, exist_ok=True)
    for sub in ("root", "issuing", "keys"):
        _private_dir(d / sub)
    (d / "certs").mkdir(exist_ok=True)
    now = _now()
    root_key = ec.generate_private_key(ec.SECP256R1())
    root_name = _name(org, f"{org} Root CA")
    root = _ca_cert(root_name, root_name, root_key, root_key, root_days, 1, now)
    issuing_key = ec.generate_private_key(ec.SECP256R1())
    issuing = _ca_cert(_name(org, f"{org} Issuing CA"), root_name, issuing_key, root_key, issuing_days, 0, now,
                       issuer_cert=root)
    _write_private(_root_key_file(d), _pem_key(root_key))
    _write_public(d / "root" / "root.pem", _pem(root))
    _write_private(_issuing_key_file(d), _pem_key(issuing_key))
    _write_public(_issuing_cert_file(d), _pem(issuing))
    _write_public(ca_file(d), _pem(root) + _pem(issuing))
    _save_inventory(d, Inventory(org=org))
    crl(d, days=crl_days)
    return _root_key_file(d)


def _issuing(d: Path) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    try:
        cert = x509.load_pem_x509_certificate(_issuing_cert_file(d).read_bytes())
        key = serialization.load_pem_private_key(_issuing_key_file(d).read_bytes(), None)
    except FileNotFoundError as exc:
        raise PkiError(f"{d}: the issuing CA is missing ({exc.filename})") from None
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    return cert, key


def issue(d: str | Path, name: str, role: str, *, site: str | None = None, hosts: Iterable[str] = (),
          days: int = LEAF_DAYS, renew: bool = False, now: dt.datetime | None = None) -> Issued:
    """A certificate and key for ``name`` in ``role``. Servers get ``hosts`` (default localhost, 127.0.0.1,
    ::1) in the SAN; site-bound roles need ``site``. ``renew`` revokes the name's current certificate
    (reason superseded) and issues a new one; without it an active name is refused. ``now`` shifts the
    validity (tests make expired certificates with it)."""
    d = Path(d)
    check_name(name)
    if role not in ROLES:
        raise PkiError(f"role {role!r}: expected one of {', '.join(ROLES)}")
    _, server, needs_site = ROLES[role]
    if needs_site and site is None:
        raise PkiError(f"role {role!r} needs --site (the site whose data it may publish)")
    if site is not None:
        check_name(site, "site")
    if not 1 <= days <= MAX_LEAF_DAYS:
        raise PkiError(f"validity {days} d: expected 1..{MAX_LEAF_DAYS} days")
    hosts = [check_host(h) for h in hosts] or (["localhost", "127.0.0.1", "::1"] if server else [])
    inv = load_inventory(d)
    old = inv.active(name)
    if old is not None and not renew:
        raise PkiError(f"{name!r} already has an active certificate (serial {old.serial}); use --renew to replace "
                       f"it (the old one is revoked) or choose another name")
    key = ec.generate_private_key(ec.SECP256R1())
    cert, ca_cert, entry = _leaf(d, inv, name, role, site, hosts, key.public_key(), days, now)
    _private_dir(d / "keys")
    _write_private(key_file(d, name), _pem_key(key))
    _write_public(cert_file(d, name), _pem(cert) + _pem(ca_cert))
    if old is not None:
        old.revoked_at, old.reason = _now().isoformat(), "superseded"
    inv.issued.append(entry)
    _save_inventory(d, inv)
    if old is not None:
        crl(d)
    return entry


def _leaf(d: Path, inv: Inventory, name: str, role: str, site: str | None, hosts: list[str],
          public_key: ec.EllipticCurvePublicKey, days: int,
          now: dt.datetime | None = None) -> tuple[x509.Certificate, x509.Certificate, Issued]:
    """A leaf certificate for ``public_key`` signed by the issuing CA (and the CA's certificate, and the inventory
    entry to record)."""
    _, server, _ = ROLES[role]
    ca_cert, ca_key = _issuing(d)
    start = (now or _now())
    not_after = start + dt.timedelta(days=days)
    if not_after > ca_cert.not_valid_after_utc:
        raise PkiError(f"validity {days} d ends after the issuing CA's ({ca_cert.not_valid_after_utc:%Y-%m-%d}); "
                       f"roll the issuing CA first")
    san: list[x509.GeneralName] = [x509.UniformResourceIdentifier(URN_ROLE + role)]
    if site is not None:
        san.append(x509.UniformResourceIdentifier(URN_SITE + site))
    for h in hosts:
        try:
            san.append(x509.IPAddress(ipaddress.ip_address(h)))
        except ValueError:
            san.append(x509.DNSName(h))
    serial = x509.random_serial_number()
    b = (x509.CertificateBuilder().subject_name(_name(inv.org, name, role)).issuer_name(ca_cert.subject)
         .public_key(public_key).serial_number(serial)
         .not_valid_before(start - dt.timedelta(minutes=5)).not_valid_after(not_after)
         .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
         .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False, key_encipherment=False,
                                      data_encipherment=False, key_agreement=True, key_cert_sign=False,
                                      crl_sign=False, encipher_only=False, decipher_only=False), critical=True)
         .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH if server
                                               else ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
         .add_extension(x509.SubjectAlternativeName(san), critical=False)
         .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
         .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False))
    if not server:  # Modbus/TCP Security: the client's role as an ASN.1 UTF8String (tag 0x0C)
        encoded = role.encode()
        b = b.add_extension(x509.UnrecognizedExtension(x509.ObjectIdentifier(MODBUS_ROLE_OID),
                                                       bytes([0x0C, len(encoded)]) + encoded), critical=False)
    cert = b.sign(ca_key, hashes.SHA256())
    entry = Issued(serial=f"{serial:x}", name=name, role=role, site=site, hosts=hosts,
                   not_before=(start - dt.timedelta(minutes=5)).isoformat(), not_after=not_after.isoformat())
    return cert, ca_cert, entry


def sign_request(d: str | Path, csr_pem: bytes, role: str, *, name: str | None = None, site: str | None = None,
                 days: int = LEAF_DAYS) -> tuple[Issued, bytes]:
    """Sign a certificate signing request (a charge point's OCPP SignCertificate): the key stays with the
    requester. The CSR must be signed by its key, an EC P-256 key, with a CN that is a valid name (and ``name``
    when given: who the requester authenticated as). Returns the inventory entry and the chain (leaf + issuing
    CA) in PEM. The requester's current certificate stays valid until :func:`settle_renewal`."""
    d = Path(d)
    if role not in CLIENT_ROLES:
        raise PkiError(f"role {role!r}: certificates by request are for client roles ({', '.join(CLIENT_ROLES)}); "
                       f"a server's certificate names its hosts: `s4g pki issue --host`")
    if ROLES[role][2] and site is None:
        raise PkiError(f"role {role!r} needs --site (the site whose data it may publish)")
    if site is not None:
        check_name(site, "site")
    try:
        csr = x509.load_pem_x509_csr(csr_pem)
    except ValueError as exc:
        raise PkiError(f"not a PEM certificate signing request: {exc}") from None
    if not csr.is_signature_valid:
        raise PkiError("the request's signature does not verify: not signed by its own key")
    public_key = csr.public_key()
    if not isinstance(public_key, ec.EllipticCurvePublicKey) or public_key.curve.name != "secp256r1":
        raise PkiError("the request's key is not an EC P-256 key (the framework's key type)")
    cns = csr.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    cn = str(cns[0].value) if len(cns) == 1 else ""
    check_name(cn, "the request's CN")
    if name is not None and cn != name:
        raise PkiError(f"the request's CN {cn!r} is not the requester's identity {name!r}")
    if not 1 <= days <= MAX_LEAF_DAYS:
        raise PkiError(f"validity {days} d: expected 1..{MAX_LEAF_DAYS} days")
    inv = load_inventory(d)
    cert, ca_cert, entry = _leaf(d, inv, cn, role, site, [], public_key, days)
    inv.issued.append(entry)
    _save_inventory(d, inv)
    return entry, _pem(cert) + _pem(ca_cert)


def settle_renewal(d: str | Path, serial: str, installed: bool) -> None:
    """After a renewal by request: the requester installed certificate ``serial`` (its older certificates are
    revoked, superseded) or refused it (it is revoked); a new CRL either way."""
    d = Path(d)
    inv = load_inventory(d)
    new = next((e for e in inv.issued if e.serial == serial), None)
    if new is None or not new.active:
        raise PkiError(f"serial {serial}: no active certificate to settle")
    now = _now().isoformat()
    if installed:
        for e in inv.issued:
            if e.name == new.name and e.active and e is not new:
                e.revoked_at, e.reason = now, "superseded"
    else:
        new.revoked_at, new.reason = now, "cessation_of_operation"
    _save_inventory(d, inv)
    crl(d)


def revoke(d: str | Path, which: str, *, reason: str = "unspecified", crl_days: int = CRL_DAYS) -> Issued:
    """Revoke the active certificate of name ``which`` (or the certificate with that hex serial) and publish
    a new CRL at once."""
    d = Path(d)
    if reason not in REASONS:
        raise PkiError(f"reason {reason!r}: expected one of {', '.join(REASONS)}")
    inv = load_inventory(d)
    entry = inv.active(which) or next((e for e in inv.issued if e.serial == which.lower().removeprefix("0x")),
                                      None)
    if entry is None:
        raise PkiError(f"{which!r}: no active certificate of that name and no certificate with that serial")
    if not entry.active:
        raise PkiError(f"serial {entry.serial} ({entry.name}) is already revoked ({entry.reason})")
    entry.revoked_at, entry.reason = _now().isoformat(), reason
    _save_inventory(d, inv)
    crl(d, days=crl_days)
    return entry


def crl(d: str | Path, *, days: int = CRL_DAYS) -> Path:
    """Sign a new CRL (valid ``days``) listing every revoked certificate; returns its path."""
    d = Path(d)
    if not 1 <= days <= 366:
        raise PkiError(f"CRL validity {days} d: expected 1..366 days")
    inv = load_inventory(d)
    ca_cert, ca_key = _issuing(d)
    now = _now()
    b = (x509.CertificateRevocationListBuilder().issuer_name(ca_cert.subject)
         .last_update(now - dt.timedelta(minutes=5)).next_update(now + dt.timedelta(days=days))
         .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
         .add_extension(x509.CRLNumber(int(dt.datetime.now().timestamp() * 1000)), critical=False))
    for e in inv.issued:
        if e.active:
            continue
        assert e.revoked_at is not None  # not active: revoked
        revoked = (x509.RevokedCertificateBuilder().serial_number(int(e.serial, 16))
                   .revocation_date(dt.datetime.fromisoformat(e.revoked_at)))
        reason = REASONS.get(e.reason or "unspecified", x509.ReasonFlags.unspecified)
        if reason is not x509.ReasonFlags.unspecified:
            revoked = revoked.add_extension(x509.CRLReason(reason), critical=False)
        b = b.add_revoked_certificate(revoked.build())
    _write_public(crl_file(d), b.sign(ca_key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM))
    return crl_file(d)


def listing(d: str | Path) -> list[Issued]:
    return list(load_inventory(d).issued)


def read_certificate(d: str | Path, name: str) -> x509.Certificate:
    return x509.load_pem_x509_certificate(cert_file(d, name).read_bytes())


def revoked_serials(d: str | Path) -> set[int]:
    """Serial numbers on the current CRL (verified against the issuing CA)."""
    cert, _ = _issuing(Path(d))
    revocations = x509.load_pem_x509_crl(crl_file(d).read_bytes())
    if not revocations.is_signature_valid(cast(ec.EllipticCurvePublicKey, cert.public_key())):  # our CAs use EC keys
        raise PkiError(f"{crl_file(d)}: the CRL is not signed by the issuing CA")
    return {r.serial_number for r in revocations}
