"""A charge point's certificates: its own key and certificate, the root certificates it trusts, and what the
OCPP certificate-management messages do to them (2.0.1 use cases A02 and M03-M05; the same messages in the 1.6
security extension).

Renewal (A02, CSMS-initiated): the CSMS triggers ``SignChargingStationCertificate`` (1.6 ExtendedTriggerMessage
``SignChargePointCertificate``); the station makes a new key pair and sends its CSR in ``SignCertificate``; the
CSMS answers with ``CertificateSigned``. The station installs the chain only if the leaf is for the key it just
made and for its own id, and the chain leads to a root it trusts as the CSMS's; it presents the new certificate
from its next connection on. Anything else is refused (and reported as a security event), never installed.

Roots: ``InstallCertificate`` adds one (a CA certificate that is valid now), ``GetInstalledCertificateIds``
lists them by the OCPP hash data, ``DeleteCertificate`` removes one -- but never the last CSMS root (the station
could no longer connect).

The files live in the station's own folder (0700, as a real station keeps them in its storage), from which each
connection's TLS context is made (:func:`devices.tls.client_context`).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import os
import shutil
import tempfile
import weakref
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID

from devices import tls

#: certificate types of each version -> our kind of root
ROOT_TYPES = {
    "1.6": {"CentralSystemRootCertificate": "csms", "ManufacturerRootCertificate": "manufacturer"},
    "2.0.1": {"CSMSRootCertificate": "csms", "ManufacturerRootCertificate": "manufacturer",
              "V2GRootCertificate": "v2g", "MORootCertificate": "mo"},
}


def _key_id(cert: x509.Certificate) -> bytes:
    """The subjectPublicKey bits (what OCPP's issuerKeyHash hashes, as OCSP's CertID does)."""
    key = cert.public_key()
    if isinstance(key, ec.EllipticCurvePublicKey):
        return key.public_bytes(serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint)
    if isinstance(key, rsa.RSAPublicKey):
        return key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.PKCS1)
    return key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


def hash_data(cert: x509.Certificate, issuer: x509.Certificate) -> dict[str, str]:
    """OCPP CertificateHashDataType: SHA-256 of the issuer's name and key, the serial in hex."""
    return {"hashAlgorithm": "SHA256",
            "issuerNameHash": hashlib.sha256(cert.issuer.public_bytes()).hexdigest(),
            "issuerKeyHash": hashlib.sha256(_key_id(issuer)).hexdigest(),
            "serialNumber": f"{cert.serial_number:x}"}


def _is_ca_valid_now(cert: x509.Certificate) -> bool:
    try:
        ca = cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    except x509.ExtensionNotFound:
        return False
    now = dt.datetime.now(dt.UTC)
    return ca and cert.not_valid_before_utc <= now <= cert.not_valid_after_utc


class CertificateRefused(ValueError):
    """A certificate the station does not install; ``str()`` says why (the security event's techInfo)."""


class StationCertificates:
    """The certificate store of one charge point (security profile 3)."""

    def __init__(self, cp_id: str, key_pem: bytes, chain_pem: bytes, roots: list[tuple[str, x509.Certificate]],
                 crl_pem: bytes | None = None) -> None:
        self.cp_id = cp_id
        self._key_pem, self._chain_pem, self._crl_pem = key_pem, chain_pem, crl_pem
        self.roots: list[tuple[str, x509.Certificate]] = list(roots)  # (kind, certificate)
        self._pending: ec.EllipticCurvePrivateKey | None = None
        self.generation = 0  # +1 per certificate installed
        self._dir = Path(tempfile.mkdtemp(prefix=f"s4g-cp-{cp_id}-"))  # 0700
        self._remove = weakref.finalize(self, shutil.rmtree, self._dir, True)
        self._write()

    @classmethod
    def from_pki(cls, pki: str | Path, identity: str) -> StationCertificates:
        """The station's files as ``s4g pki issue NAME --role chargepoint`` wrote them; every anchor of the PKI
        is trusted as a CSMS root (the root and the issuing CA, as ``ca.pem`` holds them)."""
        files = tls.TlsFiles.from_pki(pki, identity)
        assert files.ca is not None and files.cert is not None and files.key is not None
        anchors = x509.load_pem_x509_certificates(files.ca.read_bytes())
        crl = files.crl.read_bytes() if files.crl is not None and files.crl.is_file() else None
        return cls(identity, files.key.read_bytes(), files.cert.read_bytes(), [("csms", a) for a in anchors], crl)

    @property
    def certificate(self) -> x509.Certificate:
        return x509.load_pem_x509_certificates(self._chain_pem)[0]

    def files(self) -> tls.TlsFiles:
        return tls.TlsFiles(ca=self._dir / "ca.pem", cert=self._dir / "cert.pem", key=self._dir / "key.pem",
                            crl=self._dir / "crl.pem" if self._crl_pem else None)

    def _write(self) -> None:
        files = self.files()
        assert files.ca is not None and files.cert is not None and files.key is not None
        for path, data in ((files.key, self._key_pem), (files.cert, self._chain_pem),
                           (files.ca, b"".join(c.public_bytes(serialization.Encoding.PEM)
                                               for kind, c in self.roots if kind == "csms"))):
            fd = os.open(path.with_suffix(".new"), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "wb") as f:
                f.write(data)
            os.replace(path.with_suffix(".new"), path)
        if files.crl is not None and self._crl_pem is not None:
            files.crl.write_bytes(self._crl_pem)

    def close(self) -> None:
        self._remove()

    # -- renewal ---------------------------------------------------------------------------------------------
    def csr(self) -> str:
        """A new key pair (kept until a chain for it arrives) and its signing request, CN = our id."""
        self._pending = ec.generate_private_key(ec.SECP256R1())
        req = (x509.CertificateSigningRequestBuilder()
               .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, self.cp_id)]))
               .sign(self._pending, hashes.SHA256()))
        return req.public_bytes(serialization.Encoding.PEM).decode()

    def install_chain(self, chain_pem: str) -> None:
        """Install a signed chain (leaf first) for the pending key, or raise CertificateRefused."""
        if self._pending is None:
            raise CertificateRefused("no signing request is pending")
        try:
            chain = x509.load_pem_x509_certificates(chain_pem.encode())
        except ValueError as exc:
            raise CertificateRefused(f"not a PEM certificate chain: {exc}") from None
        leaf = chain[0]
        if leaf.public_key() != self._pending.public_key():
            raise CertificateRefused("the certificate is not for the key of our signing request")
        cns = leaf.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
        if [str(a.value) for a in cns] != [self.cp_id]:
            raise CertificateRefused(f"the certificate is for {[a.value for a in cns]}, not {self.cp_id!r}")
        now = dt.datetime.now(dt.UTC)
        if not leaf.not_valid_before_utc <= now <= leaf.not_valid_after_utc:
            raise CertificateRefused("the certificate is not valid now")
        anchors = [c for kind, c in self.roots if kind == "csms"]
        for cert, issuer in zip(chain, chain[1:] + [None]):
            signers = [issuer] if issuer is not None else anchors
            if not any(_signed_by(cert, s) for s in signers if s is not None):
                raise CertificateRefused(f"{cert.subject.rfc4514_string()}: not signed by "
                                         f"{'the next in the chain' if issuer is not None else 'a CSMS root we trust'}")
        key = self._pending
        self._key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                          serialization.NoEncryption())
        self._chain_pem = chain_pem.encode()
        self._pending = None
        self.generation += 1
        self._write()

    # -- roots -----------------------------------------------------------------------------------------------
    def install_root(self, kind: str, pem: str) -> str:
        """'Accepted', or 'Rejected' for what is not one CA certificate valid now."""
        try:
            certs = x509.load_pem_x509_certificates(pem.encode())
        except ValueError:
            return "Rejected"
        if len(certs) != 1 or not _is_ca_valid_now(certs[0]):
            return "Rejected"
        if not any(c == certs[0] for k, c in self.roots if k == kind):
            self.roots.append((kind, certs[0]))
            self._write()
        return "Accepted"

    def _issuer_of(self, cert: x509.Certificate) -> x509.Certificate:
        known = [c for _, c in self.roots] + x509.load_pem_x509_certificates(self._chain_pem)[1:]
        return next((c for c in known if c.subject == cert.issuer and _signed_by(cert, c)), cert)

    def installed(self, kinds: set[str] | None = None) -> list[tuple[str, dict[str, str]]]:
        return [(kind, hash_data(c, self._issuer_of(c))) for kind, c in self.roots if kinds is None or kind in kinds]

    def delete(self, wanted: dict[str, Any]) -> str:
        """'Accepted', 'NotFound', or 'Failed' for the station's own certificate and its last CSMS root."""
        if wanted.get("hashAlgorithm") != "SHA256":
            return "NotFound"  # we only hash with SHA-256; another algorithm's hashes match nothing here
        key = _identity(wanted)
        if _identity(hash_data(self.certificate, self._issuer_of(self.certificate))) == key:
            return "Failed"
        for i, (kind, c) in enumerate(self.roots):
            if _identity(hash_data(c, self._issuer_of(c))) != key:
                continue
            if kind == "csms" and sum(k == "csms" for k, _ in self.roots) == 1:
                return "Failed"
            del self.roots[i]
            self._write()
            return "Accepted"
        return "NotFound"


def _identity(h: dict[str, Any]) -> tuple[str, str, str]:
    """What identifies a certificate in OCPP hash data: issuer name and key hashes and serial, case-free."""
    return (str(h.get("issuerNameHash", "")).lower(), str(h.get("issuerKeyHash", "")).lower(),
            str(h.get("serialNumber", "")).lower().lstrip("0"))


def _signed_by(cert: x509.Certificate, issuer: x509.Certificate) -> bool:
    try:
        cert.verify_directly_issued_by(issuer)
    except (ValueError, TypeError, InvalidSignature):
        return False
    return True


__all__ = ["ROOT_TYPES", "CertificateRefused", "StationCertificates", "hash_data"]
