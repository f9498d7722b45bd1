"""OCPP security profiles (OCPP 1.6 security whitepaper, edition 3; OCPP 2.0.1 part 2 A00.FR): who may connect.

| profile | transport | the charge point proves itself with | the CSMS proves itself with |
|---|---|---|---|
| 0 | ws:// | nothing (the framework's default on loopback; not an OCPP profile) | nothing |
| 1 | ws:// | HTTP Basic auth: user = its id, password = AuthorizationKey / BasicAuthPassword | nothing |
| 2 | wss:// (TLS) | HTTP Basic auth | its server certificate |
| 3 | wss:// (TLS) | a client certificate whose CN is its id (role ``chargepoint``), checked against the CRL | its server certificate |

Our CSMS admits a connection only if the profile's proof holds: a missing or wrong password is HTTP 401 (with
``WWW-Authenticate``), a certificate whose name is not the charge point's id (or whose role is not
``chargepoint``) HTTP 403; a certificate that is revoked, expired or from another CA never completes the TLS
handshake. Passwords are kept as SHA-256 digests and compared in constant time. Passwords are 16..40
characters (1.6 AuthorizationKey / 2.0.1 passwordString rules as the whitepaper and the 2.0.1 device model
state them).
"""

from __future__ import annotations

import base64
import binascii
import functools
import hashlib
import hmac
import os
import ssl
from dataclasses import dataclass, field
from http import HTTPStatus
from collections.abc import Mapping

from devices import pki, tls
from devices.wallbox.certificates import StationCertificates

PROFILES = (0, 1, 2, 3)
PASSWORD_CHARS = (16, 40)
#: address query keys of the OCPP drivers for security (besides devices.tls.TLS_QUERY_KEYS)
QUERY_KEYS = ("security_profile", "password_env")


class OcppSecurityError(ValueError):
    """A security setting that cannot work (profile 2/3 without TLS files, a bad password, ...)."""


def check_password(password: str) -> str:
    lo, hi = PASSWORD_CHARS
    if not isinstance(password, str) or not lo <= len(password) <= hi or not password.isprintable():
        raise OcppSecurityError(f"an OCPP basic-auth password must be {lo}..{hi} printable characters")
    return password


def _digest(password: str) -> bytes:
    return hashlib.sha256(password.encode()).digest()


def basic_auth_header(cp_id: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{cp_id}:{password}".encode()).decode()


@dataclass(frozen=True, eq=False)
class CsmsSecurity:
    """The CSMS side: the profile and (2, 3) the server's TLS context. Per-station passwords are registered
    with :meth:`devices.wallbox.csms.CsmsServer.expect` (or given here for the stand-alone server)."""

    profile: int = 0
    ssl: ssl.SSLContext | None = None
    passwords: Mapping[str, str] | None = None
    #: the PKI directory whose issuing CA signs the stations' certificate requests (None: requests are Rejected)
    pki: str | None = None
    #: the CRL as last read: (file's mtime in ns, revoked serials in hex); a revocation after the server started
    #: (a renewal's old certificate, `s4g pki revoke`) counts from the next request on
    _crl: list[tuple[int, frozenset[str]]] = field(default_factory=list, repr=False)

    def revoked(self) -> frozenset[str]:
        """Serials (hex, no leading zeros) on the PKI's current CRL; re-read when the file changed."""
        if self.pki is None:
            return frozenset()
        path = tls.crl_file(self.pki)
        try:
            mtime = path.stat().st_mtime_ns
        except OSError:
            return frozenset()
        if not self._crl or self._crl[0][0] != mtime:
            serials = frozenset(f"{s:x}" for s in pki.revoked_serials(self.pki))
            if self.ssl is not None:
                self.ssl.load_verify_locations(cafile=str(path))  # the next handshakes check it too
            self._crl[:] = [(mtime, serials)]
        return self._crl[0][1]

    def __post_init__(self) -> None:
        if self.profile not in PROFILES:
            raise OcppSecurityError(f"security profile {self.profile}: expected one of {PROFILES}")
        if self.profile >= 2 and self.ssl is None:
            raise OcppSecurityError(f"security profile {self.profile} needs TLS (a PKI directory and the CSMS's "
                                    f"identity)")
        if self.profile == 3 and self.ssl is not None and self.ssl.verify_mode != ssl.CERT_REQUIRED:
            raise OcppSecurityError("security profile 3 needs a TLS context that requires client certificates")

    @classmethod
    def from_pki(cls, profile: int, pki: str, identity: str = "csms",
                 passwords: Mapping[str, str] | None = None) -> CsmsSecurity:
        ctx = None
        if profile >= 2:
            ctx = tls.server_context(tls.TlsFiles.from_pki(pki, identity), require_client_cert=profile == 3)
        return cls(profile, ctx, passwords, pki if profile >= 2 else None)

    @property
    def scheme(self) -> str:
        return "wss" if self.ssl is not None else "ws"

    def refusal(self, cp_id: str, authorization: str | None, ssl_object: object,
                digest: bytes | None) -> tuple[HTTPStatus, str, str] | None:
        """(status, counter name, text) when this connection may not proceed; ``digest`` is the registered
        password digest of ``cp_id`` (None: no password known)."""
        if self.profile in (1, 2):
            if digest is None and self.passwords and cp_id in self.passwords:
                digest = _digest(self.passwords[cp_id])
            user, password = _parse_basic(authorization)
            if user is None:
                return HTTPStatus.UNAUTHORIZED, "no_credentials", "basic authentication required"
            ok = digest is not None and user == cp_id and hmac.compare_digest(_digest(password or ""), digest)
            if not ok:
                return HTTPStatus.UNAUTHORIZED, "bad_credentials", "wrong charge point id or password"
        if self.profile == 3:
            peer = tls.peer_identity(ssl_object)
            if peer is None:
                return HTTPStatus.FORBIDDEN, "no_certificate", "a client certificate is required"
            if peer.name != cp_id or peer.role != "chargepoint":
                return HTTPStatus.FORBIDDEN, "wrong_certificate", (f"the certificate of {peer.name!r} ({peer.role}) "
                                                                   f"is not charge point {cp_id!r}'s")
            if peer.serial.lower().lstrip("0") in self.revoked():
                return HTTPStatus.FORBIDDEN, "revoked_certificate", "the certificate has been revoked"
        return None


def _parse_basic(header: str | None) -> tuple[str | None, str | None]:
    if not header or header[:6].lower() != "basic ":
        return None, None
    try:
        text = base64.b64decode(header[6:].strip(), validate=True).decode()
    except (binascii.Error, UnicodeDecodeError):
        return None, None
    user, sep, password = text.partition(":")
    return (user, password) if sep else (None, None)


@dataclass(frozen=True, eq=False)
class StationSecurity:
    """The charge point side: profile, basic-auth password (1, 2), TLS context (2: the CSMS's CA; 3: also our
    certificate)."""

    profile: int = 0
    password: str | None = None
    ssl: ssl.SSLContext | None = None
    #: profile 3 from a PKI: the station's own certificate store (renewed over OCPP; its context is made per
    #: connection from the certificate it holds then)
    certificates: StationCertificates | None = None

    def __post_init__(self) -> None:
        if self.profile not in PROFILES:
            raise OcppSecurityError(f"security profile {self.profile}: expected one of {PROFILES}")
        if self.profile in (1, 2):
            check_password(self.password or "")
        if self.profile >= 2 and self.ssl is None and self.certificates is None:
            raise OcppSecurityError(f"security profile {self.profile} needs TLS files")

    @classmethod
    def from_pki(cls, profile: int, pki: str | None = None, identity: str | None = None,
                 password: str | None = None) -> StationSecurity:
        ctx, store = None, None
        if profile >= 2:
            if pki is None:
                raise OcppSecurityError(f"security profile {profile} needs a PKI directory")
            if profile == 3 and identity is not None:
                store = StationCertificates.from_pki(pki, identity)
                ctx = tls.client_context(store.files())
            else:
                ctx = tls.client_context(tls.TlsFiles.from_pki(pki, identity if profile == 3 else None))
        return cls(profile, password, ctx, store)


@functools.lru_cache(maxsize=64)
def _csms_security(profile: int, pki: str | None, identity: str) -> CsmsSecurity:
    if profile >= 2 and not pki:
        raise OcppSecurityError(f"security_profile={profile} needs pki=DIR (and identity=, default csms)")
    return CsmsSecurity.from_pki(profile, pki or "", identity)


def csms_security_from_query(q: Mapping[str, str]) -> tuple[CsmsSecurity | None, str | None]:
    """(the CSMS security, the station's password) from a driver address's query; the same settings give the same
    object, so drivers sharing a server agree. The password comes from the environment variable
    ``password_env`` names (never from the address itself)."""
    raw = q.get("security_profile")
    if raw is None:
        if q.get("password_env") or q.get("pki"):
            raise OcppSecurityError("pki= / password_env= need security_profile=1|2|3")
        return None, None
    try:
        profile = int(raw)
    except ValueError:
        raise OcppSecurityError(f"security_profile={raw!r}: expected one of {PROFILES}") from None
    if profile not in PROFILES:
        raise OcppSecurityError(f"security_profile={raw!r}: expected one of {PROFILES}")
    password = None
    if profile in (1, 2):
        var = q.get("password_env")
        if not var:
            raise OcppSecurityError(f"security_profile={profile} needs password_env=VAR (the charge point's "
                                    f"password in the environment)")
        password = os.environ.get(var)
        if password is None:
            raise OcppSecurityError(f"password_env={var}: the environment variable is not set")
        check_password(password)
    try:
        return _csms_security(profile, q.get("pki"), q.get("identity", "csms")), password
    except tls.TlsConfigError as exc:
        raise OcppSecurityError(str(exc)) from None
