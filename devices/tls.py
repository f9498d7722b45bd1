"""TLS for every link of the framework: contexts from a PKI directory, and who the peer is.

The lowest layer (devices, cosim, hil_bench all import it) knows only the *layout* of a PKI directory made by
``s4g pki`` (:mod:`devices.pki` writes it) and the standard library's ``ssl``:

    DIR/ca.pem            trust anchors: the root and the issuing CA (what every peer verifies against)
    DIR/crl.pem           the issuing CA's certificate revocation list
    DIR/certs/NAME.pem    a certificate with its chain (leaf + issuing CA), as a peer presents it
    DIR/keys/NAME.key     its private key (0600, in a 0700 folder)

Both sides verify: servers require a client certificate by default (``require_client_cert``) and check the CRL
for the peer's certificate (``VERIFY_CRL_CHECK_LEAF``: a revoked certificate fails the handshake, and so does
an expired CRL, so a PKI whose CRL is not refreshed fails closed). Identities ride in the certificate: the
subject's CN is the name, OU the role, and the SAN carries ``urn:s4g:role:ROLE`` / ``urn:s4g:site:SITE``
(:func:`peer_identity`); Modbus/TCP Security's role extension (OID 1.3.6.1.4.1.50316.802.1) is set as well.

Driver addresses select TLS with the query keys :data:`TLS_QUERY_KEYS` (:func:`files_from_query`):
``?pki=DIR&identity=NAME`` takes everything from a PKI directory; ``ca=``, ``cert=``, ``key=``, ``crl=`` name
files one by one (and override the PKI's); ``tls=1`` alone means "verify the server against the system's
trust store, no client certificate".
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from collections.abc import Mapping, Sequence

#: address query keys that configure TLS (drivers that speak TLS accept them)
TLS_QUERY_KEYS: tuple[str, ...] = ("tls", "pki", "identity", "ca", "cert", "key", "crl")
#: Modbus/TCP Security (MB-TCP-Security v21, 2018): the role of a client, an ASN.1 UTF8String extension
MODBUS_ROLE_OID = "1.3.6.1.4.1.50316.802.1"
#: IANA port of Modbus/TCP Security ("mbap/tls")
MODBUS_TLS_PORT = 802
URN_ROLE = "urn:s4g:role:"
URN_SITE = "urn:s4g:site:"


class TlsConfigError(ValueError):
    """A TLS setting that cannot work (a missing file, a key that does not match, a bad query value)."""


# -- the PKI directory layout --------------------------------------------------------------------------------
def ca_file(pki: str | Path) -> Path:
    return Path(pki) / "ca.pem"


def crl_file(pki: str | Path) -> Path:
    return Path(pki) / "crl.pem"


def cert_file(pki: str | Path, name: str) -> Path:
    return Path(pki) / "certs" / f"{name}.pem"


def key_file(pki: str | Path, name: str) -> Path:
    return Path(pki) / "keys" / f"{name}.key"


@dataclass(frozen=True)
class TlsFiles:
    """What one end of a TLS link needs: the trust anchors, its own certificate and key, the CRL."""

    ca: Path | None = None
    cert: Path | None = None
    key: Path | None = None
    crl: Path | None = None

    @classmethod
    def from_pki(cls, pki: str | Path, name: str | None = None, *, crl: bool = True) -> TlsFiles:
        """The files of identity ``name`` (None: trust anchors and CRL only) in a PKI directory."""
        root = Path(pki)
        if not ca_file(root).is_file():
            raise TlsConfigError(f"{root}: not a PKI directory (no ca.pem; make one with `s4g pki init {root}`)")
        if name is not None and not cert_file(root, name).is_file():
            raise TlsConfigError(f"{root}: no certificate for {name!r} (issue one with `s4g pki issue`)")
        return cls(ca=ca_file(root), cert=cert_file(root, name) if name else None,
                   key=key_file(root, name) if name else None,
                   crl=crl_file(root) if crl and crl_file(root).is_file() else None)

    def check(self) -> TlsFiles:
        for what in ("ca", "cert", "key", "crl"):
            path = getattr(self, what)
            if path is not None and not Path(path).is_file():
                raise TlsConfigError(f"TLS {what} file {path} does not exist")
        if (self.cert is None) != (self.key is None):
            raise TlsConfigError("TLS: a certificate needs its key and a key its certificate")
        return self


def _base_context(purpose: ssl.Purpose, files: TlsFiles) -> ssl.SSLContext:
    files.check()
    ctx = ssl.create_default_context(purpose, cafile=str(files.ca) if files.ca else None)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        if files.cert is not None:
            ctx.load_cert_chain(str(files.cert), str(files.key))
        if files.crl is not None:
            ctx.load_verify_locations(cafile=str(files.crl))
            ctx.verify_flags |= ssl.VERIFY_CRL_CHECK_LEAF
    except (ssl.SSLError, OSError) as exc:
        raise TlsConfigError(f"TLS: cannot load {files}: {exc}") from exc
    return ctx


def server_context(files: TlsFiles, *, require_client_cert: bool = True) -> ssl.SSLContext:
    """A server's context: presents ``files.cert``; verifies clients against ``files.ca`` and the CRL."""
    if files.cert is None:
        raise TlsConfigError("a TLS server needs a certificate and key")
    ctx = _base_context(ssl.Purpose.CLIENT_AUTH, files)
    ctx.verify_mode = ssl.CERT_REQUIRED if require_client_cert else ssl.CERT_OPTIONAL
    return ctx


def client_context(files: TlsFiles, *, check_hostname: bool = True) -> ssl.SSLContext:
    """A client's context: verifies the server (name and chain, CRL when given); presents ``files.cert`` if any."""
    ctx = _base_context(ssl.Purpose.SERVER_AUTH, files)
    ctx.check_hostname = check_hostname
    ctx.verify_mode = ssl.CERT_REQUIRED
    return ctx


def files_from_query(query: Mapping[str, Sequence[str]] | Mapping[str, str]) -> TlsFiles | None:
    """TLS files from an address's query (see the module doc); None when the address asks for no TLS."""
    def one(key: str) -> str | None:
        v = query.get(key)
        if v is None:
            return None
        return v if isinstance(v, str) else (v[-1] if v else None)

    pki, identity = one("pki"), one("identity")
    explicit = {k: one(k) for k in ("ca", "cert", "key", "crl")}
    tls = one("tls")
    if tls not in (None, "", "0", "1", "true", "false"):
        raise TlsConfigError(f"tls={tls!r}: expected 0 or 1")
    if pki is None and not any(explicit.values()) and tls not in ("1", "true"):
        if identity is not None:
            raise TlsConfigError("identity= needs pki=DIR")
        return None
    base = TlsFiles.from_pki(pki, identity) if pki else TlsFiles()
    return TlsFiles(**{k: Path(v) if v else getattr(base, k) for k, v in explicit.items()})


# -- who is at the other end ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class PeerIdentity:
    """The verified identity of a TLS peer: name (CN), role (OU / SAN URN), site (SAN URN) if site-bound."""

    name: str
    role: str | None = None
    site: str | None = None
    serial: str = ""


def identity_from_cert(cert: Mapping[str, Any]) -> PeerIdentity | None:
    """From ``SSLSocket.getpeercert()`` (the verified certificate as a dict); None without a CN."""
    fields: dict[str, str] = {}
    for rdn in cert.get("subject", ()):
        for key, value in rdn:
            fields.setdefault(key, value)
    name = fields.get("commonName")
    if not name:
        return None
    role, site = fields.get("organizationalUnitName"), None
    for kind, value in cert.get("subjectAltName", ()):
        if kind == "URI" and value.startswith(URN_ROLE):
            role = value[len(URN_ROLE):]
        elif kind == "URI" and value.startswith(URN_SITE):
            site = value[len(URN_SITE):]
    return PeerIdentity(name=name, role=role, site=site, serial=str(cert.get("serialNumber", "")))


def peer_identity(ssl_object: Any) -> PeerIdentity | None:
    """The verified identity of the peer of an ``ssl.SSLObject``/``SSLSocket`` (None: no TLS or no certificate)."""
    if ssl_object is None:
        return None
    try:
        cert = ssl_object.getpeercert()
    except (ValueError, ssl.SSLError):
        return None
    return identity_from_cert(cert) if cert else None


def is_loopback(host: str) -> bool:
    """``host`` names this machine only (127.0.0.0/8, ::1, localhost): binding it exposes nothing."""
    import ipaddress

    if host in ("localhost", "ip6-localhost"):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False
