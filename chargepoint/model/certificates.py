"""The root certificates the CSMS manages (InstallCertificate, DeleteCertificate,
GetInstalledCertificateIds): CentralSystemRootCertificate, which the link trusts for the
CSMS's TLS certificate, and ManufacturerRootCertificate, for signed firmware.

They are rows of the `certificates` table (owned here); an installation or a deletion is one
SQLite commit, so a power cut leaves the store as it was before or after, never half. A
certificate is named as the whitepaper's CertificateHashData names it: the hashes of its
issuer's name (DER) and of its issuer's public key (the key's bytes of its
SubjectPublicKeyInfo), and its serial number in hex.
"""
from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass
from typing import Optional

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from chargepoint.model.clock import StationClock
from chargepoint.model.security_events import SecurityEvents
from chargepoint.ocpp_keys import OcppKeys
from chargepoint.store import Store

log = logging.getLogger("chargepoint.certificates")

CSMS_ROOT = "CentralSystemRootCertificate"
MANUFACTURER_ROOT = "ManufacturerRootCertificate"
TYPES = (CSMS_ROOT, MANUFACTURER_ROOT)

_HASHES = {"SHA256": hashes.SHA256, "SHA384": hashes.SHA384, "SHA512": hashes.SHA512}


class CertificateProblem(ValueError):
    """A certificate that cannot be installed or used; the message says why."""


@dataclass(frozen=True)
class Installed:
    id: int
    type: str
    pem: str
    fallback: bool


def load_chain(pem: str) -> list[x509.Certificate]:
    """The certificates of a PEM text, in order; CertificateProblem if there is none or
    any is unreadable."""
    try:
        certs = x509.load_pem_x509_certificates(pem.encode("ascii"))
    except (ValueError, UnicodeEncodeError) as exc:
        raise CertificateProblem(f"not a PEM certificate ({exc})") from None
    if not certs:
        raise CertificateProblem("no certificate in the PEM text")
    return certs


def _issuer_key_bytes(issuer: x509.Certificate) -> bytes:
    """The issuer's public key as the whitepaper hashes it: the key's own bytes, the BIT
    STRING of its SubjectPublicKeyInfo (an EC point, an RSAPublicKey, a raw EdDSA key)."""
    key = issuer.public_key()
    if isinstance(key, ec.EllipticCurvePublicKey):
        return key.public_bytes(serialization.Encoding.X962,
                                serialization.PublicFormat.UncompressedPoint)
    if isinstance(key, rsa.RSAPublicKey):
        return key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.PKCS1)
    return key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def hash_data(cert: x509.Certificate, issuer: Optional[x509.Certificate] = None,
              algorithm: str = "SHA256") -> dict:
    """CertificateHashData of `cert`. A root is its own issuer; for another certificate
    `issuer` is needed for the issuer key hash."""
    issuer = issuer or cert
    algo = _HASHES[algorithm]

    def digest(data: bytes) -> str:
        h = hashes.Hash(algo())
        h.update(data)
        return h.finalize().hex()
    return {"hashAlgorithm": algorithm,
            "issuerNameHash": digest(cert.issuer.public_bytes()),
            "issuerKeyHash": digest(_issuer_key_bytes(issuer)),
            "serialNumber": format(cert.serial_number, "x")}


def signed_by(cert: x509.Certificate, issuer: x509.Certificate) -> bool:
    try:
        cert.verify_directly_issued_by(issuer)
        return True
    except (ValueError, TypeError, InvalidSignature):
        return False


def check_validity(cert: x509.Certificate, now_utc: Optional[float]) -> None:
    """CertificateProblem if `cert` is expired or not yet valid at `now_utc` (None: the
    time is unknown and not checked)."""
    if now_utc is None:
        return
    now = dt.datetime.fromtimestamp(now_utc, dt.timezone.utc)
    if now < cert.not_valid_before_utc:
        raise CertificateProblem(f"not valid before {cert.not_valid_before_utc:%Y-%m-%d %H:%M} "
                                 "UTC")
    if now > cert.not_valid_after_utc:
        raise CertificateProblem(f"expired on {cert.not_valid_after_utc:%Y-%m-%d %H:%M} UTC")


def describe(cert: x509.Certificate) -> str:
    return cert.subject.rfc4514_string()[:120] or f"serial {cert.serial_number:x}"


class Certificates:
    """The installed root certificates. Loop thread only."""

    def __init__(self, keys: OcppKeys, store: Store, clock: StationClock,
                 security: SecurityEvents):
        self._keys = keys
        self._store = store
        self._clock = clock
        self._security = security
        #: Whether the CSMS's TLS root of the configuration ([csms] ca_file) is set: the
        #: last installed CSMS root may then go, the link still has one.
        self.configured_root = False

    # -- reading
    def installed(self, kind: Optional[str] = None) -> list[Installed]:
        sql = "SELECT id, type, pem, fallback FROM certificates"
        rows = (self._store.execute(sql + " WHERE type=? ORDER BY id", (kind,)) if kind
                else self._store.execute(sql + " ORDER BY id")).fetchall()
        return [Installed(i, t, p, bool(f)) for i, t, p, f in rows]

    def roots_pem(self) -> str:
        """The CSMS roots the link trusts, as one PEM text ("" when none is installed)."""
        return "".join(c.pem for c in self.installed(CSMS_ROOT))

    def installed_ids(self, kind: str) -> list[dict]:
        """GetInstalledCertificateIds: the CertificateHashData of each of `kind`."""
        return [hash_data(load_chain(c.pem)[0]) for c in self.installed(kind)]

    # -- InstallCertificate
    def install(self, kind: str, pem: str) -> str:
        """Accepted, Rejected (not a valid root, or the store is full) or Failed."""
        try:
            cert = self._valid_root(kind, pem)
        except CertificateProblem as exc:
            log.warning("InstallCertificate %s rejected: %s", kind, exc)
            if kind == CSMS_ROOT:
                self._security.record("InvalidCentralSystemCertificate",
                                      f"InstallCertificate refused: {exc}")
            return "Rejected"
        ids = hash_data(cert)
        key = (kind, ids["issuerNameHash"], ids["issuerKeyHash"], ids["serialNumber"])
        exists = self._store.execute(
            "SELECT id FROM certificates WHERE type=? AND issuer_name_hash=? AND "
            "issuer_key_hash=? AND serial=?", key).fetchone()
        if exists is None and len(self.installed()) >= self._keys.int("CertificateStoreMaxLength"):
            log.warning("InstallCertificate %s rejected: the store holds "
                        "CertificateStoreMaxLength (%d) certificates", kind,
                        self._keys.int("CertificateStoreMaxLength"))
            return "Rejected"
        replace = (kind == CSMS_ROOT and self._keys.bool("AdditionalRootCertificateCheck"))
        pem_text = cert.public_bytes(serialization.Encoding.PEM).decode("ascii")
        with self._store.transaction():
            if replace:
                # The whitepaper's AdditionalRootCertificateCheck: the new root replaces the
                # old, which stays as a fallback until a connection trusts the new one.
                self._store.execute("UPDATE certificates SET fallback=1 WHERE type=?", (kind,))
            self._store.execute(
                "INSERT INTO certificates(type, pem, issuer_name_hash, issuer_key_hash, "
                "serial, installed) VALUES(?, ?, ?, ?, ?, ?) ON CONFLICT DO UPDATE SET "
                "fallback=0", (*key[:1], pem_text, *key[1:], self._clock.now))
        log.info("installed %s %s", kind, describe(cert))
        self._security.record("ReconfigurationOfSecurityParameters",
                              f"{kind} installed: {describe(cert)}")
        return "Accepted"

    def _valid_root(self, kind: str, pem: str) -> x509.Certificate:
        if kind not in TYPES:
            raise CertificateProblem(f"certificate type {kind!r} is not installed this way")
        certs = load_chain(pem)
        if len(certs) != 1:
            raise CertificateProblem(f"{len(certs)} certificates where one root is expected")
        cert = certs[0]
        try:
            constraints = cert.extensions.get_extension_for_class(x509.BasicConstraints).value
            is_ca = constraints.ca
        except x509.ExtensionNotFound:
            is_ca = False
        if not is_ca:
            raise CertificateProblem(f"{describe(cert)} is not a CA certificate")
        check_validity(cert, self._clock.utc() if self._clock.known else None)
        if kind == CSMS_ROOT and self._keys.bool("AdditionalRootCertificateCheck"):
            current = [load_chain(c.pem)[0] for c in self.installed(CSMS_ROOT)
                       if not c.fallback]
            if current and not any(signed_by(cert, old) or cert == old for old in current):
                raise CertificateProblem("AdditionalRootCertificateCheck: the new root is not "
                                         "signed by the installed one")
        return cert

    # -- DeleteCertificate
    def delete(self, wanted: dict, security_profile: int) -> str:
        """Accepted, Failed (the last CSMS root while TLS needs it) or NotFound."""
        algorithm = wanted.get("hashAlgorithm", "SHA256")
        for entry in self.installed():
            cert = load_chain(entry.pem)[0]
            ids = hash_data(cert, algorithm=algorithm)
            if (ids["issuerNameHash"].lower() != wanted["issuerNameHash"].lower()
                    or ids["issuerKeyHash"].lower() != wanted["issuerKeyHash"].lower()
                    or int(ids["serialNumber"], 16) != _serial(wanted["serialNumber"])):
                continue
            if (entry.type == CSMS_ROOT and security_profile >= 2 and not self.configured_root
                    and len(self.installed(CSMS_ROOT)) == 1):
                log.warning("DeleteCertificate refused: %s is the last CSMS root, and security "
                            "profile %d needs one to trust the CSMS", describe(cert),
                            security_profile)
                return "Failed"
            with self._store.transaction():
                self._store.execute("DELETE FROM certificates WHERE id=?", (entry.id,))
            log.info("deleted %s %s", entry.type, describe(cert))
            self._security.record("ReconfigurationOfSecurityParameters",
                                  f"{entry.type} deleted: {describe(cert)}")
            return "Accepted"
        return "NotFound"

    def connected_with_tls(self) -> None:
        """A connection trusted the installed roots: the fallbacks kept by
        AdditionalRootCertificateCheck are no longer needed."""
        if any(c.fallback for c in self.installed(CSMS_ROOT)):
            with self._store.transaction():
                self._store.execute("DELETE FROM certificates WHERE fallback=1")
            log.info("the replaced CSMS root is removed: the new one has been trusted")


def _serial(text: str) -> int:
    try:
        return int(text, 16)
    except ValueError:
        return -1
