"""The charger's own TLS certificate (security profile 3): a key pair made on the device,
a CSR sent as SignCertificate, the CertificateSigned chain checked and kept.

The private key never leaves the device and never enters the database, a log or a frame:
it is made here, handed once to the runtime in `StorePrivateKey` (written as a 0600 file
before the CSR goes out, chargepoint/key_files.py) and forgotten. The `charger_certificate`
table (owned here) keeps the public halves: the pending request's public key, and the
active certificate chain with the id of its key file. Accepting a chain is one commit, so a
power cut leaves either the old certificate or the new one in use.
"""
from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from typing import Optional

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from chargepoint import actions as act
from chargepoint.actions import Effects
from chargepoint.model.certificates import (CertificateProblem, check_validity, describe,
                                            load_chain, signed_by)
from chargepoint.model.clock import StationClock
from chargepoint.model.link import Link
from chargepoint.model.security_events import SecurityEvents
from chargepoint.ocpp_keys import OcppKeys
from chargepoint.store import Store
from chargepoint.timers import Timers

log = logging.getLogger("chargepoint.certificates")

#: A certificate with less than this left is renewed (SignCertificate) on its own.
RENEW_BEFORE_S = 30 * 86400
#: How often the expiry is looked at, and how long a renewal request waits for its answer
#: before another is made.
CHECK_EVERY_S = 86400


@dataclass(frozen=True)
class ActiveCertificate:
    key_id: str
    chain: str


def _public_pem(key) -> str:
    return key.public_bytes(serialization.Encoding.PEM,
                            serialization.PublicFormat.SubjectPublicKeyInfo).decode("ascii")


def key_id_of(public_pem: str) -> str:
    """A name for a key pair that says nothing of the private half."""
    return hashlib.sha256(public_pem.encode("ascii")).hexdigest()[:16]


class ChargerCertificate:
    """The charger's certificate and its renewal. Loop thread only."""

    def __init__(self, keys: OcppKeys, store: Store, clock: StationClock, timers: Timers,
                 effects: Effects, link: Link, security: SecurityEvents,
                 charge_point_id: str, configured_chain: Optional[str] = None):
        self._keys = keys
        self._store = store
        self._clock = clock
        self._timers = timers
        self._effects = effects
        self._link = link
        self._security = security
        self._charge_point_id = charge_point_id
        #: The certificate of [csms] client_cert (PEM), used until the CSMS signs one.
        self._configured_chain = configured_chain
        self._timers.set("charger-certificate", clock.now + 60, self._check_expiry)

    # -- reading
    def active(self) -> Optional[ActiveCertificate]:
        """The certificate the CSMS signed, with its key's id; None: the configured one."""
        row = self._store.execute("SELECT key_id, chain FROM charger_certificate WHERE "
                                  "slot='active'").fetchone()
        return ActiveCertificate(*row) if row else None

    def available(self) -> bool:
        """A certificate for security profile 3 is there (signed or configured)."""
        return self.active() is not None or bool(self._configured_chain)

    def key_ids(self) -> set[str]:
        """The key pairs still needed: the active certificate's and a pending CSR's. The
        others (a replaced certificate's, an abandoned CSR's) may go."""
        return {key_id for (key_id,) in self._store.execute(
            "SELECT key_id FROM charger_certificate").fetchall()}

    def _pending(self) -> Optional[tuple[str, str, float]]:
        return self._store.execute("SELECT key_id, public_key, requested FROM "
                                   "charger_certificate WHERE slot='pending'").fetchone()

    # -- SignCertificate
    def request(self, why: str) -> bool:
        """Make a key pair and send its CSR (SignCertificate); whether it will go."""
        if not self._link.has_room("SignCertificate", {"csr": ""}):
            return False
        key = ec.generate_private_key(ec.SECP256R1())
        public = _public_pem(key.public_key())
        key_id = key_id_of(public)
        names = [x509.NameAttribute(NameOID.COMMON_NAME, self._charge_point_id)]
        cpo = self._keys.raw("CpoName")
        if cpo:
            names.append(x509.NameAttribute(NameOID.ORGANIZATION_NAME, cpo))
        else:
            log.warning("CpoName is not set: the CSR carries no organization (O); the CSMS "
                        "may refuse it")
        csr = (x509.CertificateSigningRequestBuilder()
               .subject_name(x509.Name(names))
               .sign(key, hashes.SHA256()))
        # The key is on disk (0600) before the CSR that needs it goes out: the action comes
        # first in this turn, the CALL's frame after it.
        self._effects.emit(act.StorePrivateKey(key_id, key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption())))
        del key
        with self._store.transaction():
            self._store.execute(
                "INSERT INTO charger_certificate(slot, key_id, public_key, chain, requested) "
                "VALUES('pending', ?, ?, NULL, ?) ON CONFLICT(slot) DO UPDATE SET "
                "key_id=excluded.key_id, public_key=excluded.public_key, "
                "requested=excluded.requested", (key_id, public, self._clock.now))
        log.info("new key pair %s made; SignCertificate sent (%s)", key_id, why)
        return self._link.send_call(
            "SignCertificate",
            {"csr": csr.public_bytes(serialization.Encoding.PEM).decode("ascii")},
            on_result=lambda p: log.log(
                logging.INFO if p.get("status") == "Accepted" else logging.WARNING,
                "SignCertificate %s by the CSMS", p.get("status")),
            before_accept=True)

    # -- CertificateSigned
    def signed(self, chain_pem: str) -> str:
        """Accepted (the chain becomes the charger's certificate) or Rejected."""
        try:
            key_id, leaf = self._verify(chain_pem)
        except CertificateProblem as exc:
            log.warning("CertificateSigned rejected: %s", exc)
            self._security.record("InvalidChargePointCertificate", str(exc))
            return "Rejected"
        with self._store.transaction():
            self._store.execute("DELETE FROM charger_certificate WHERE slot='active'")
            self._store.execute("UPDATE charger_certificate SET slot='active', chain=? "
                                "WHERE slot='pending'", (chain_pem,))
        log.info("charger certificate %s installed (key %s), valid until %s", describe(leaf),
                 key_id, f"{leaf.not_valid_after_utc:%Y-%m-%d}")
        self._security.record("ReconfigurationOfSecurityParameters",
                              f"charger certificate installed: {describe(leaf)}")
        return "Accepted"

    def _verify(self, chain_pem: str) -> tuple[str, x509.Certificate]:
        limit = self._keys.int("CertificateSignedMaxChainSize")
        if len(chain_pem.encode("utf-8")) > limit:
            raise CertificateProblem(f"the chain is {len(chain_pem.encode())} bytes, more than "
                                     f"CertificateSignedMaxChainSize ({limit})")
        pending = self._pending()
        if pending is None:
            raise CertificateProblem("no certificate signing request is outstanding")
        key_id, public, _ = pending
        chain = load_chain(chain_pem)
        leaf = chain[0]
        if _public_pem(leaf.public_key()) != public:
            raise CertificateProblem(f"{describe(leaf)} is not for the key of the last CSR")
        now = self._clock.utc() if self._clock.known else None
        for cert in chain:
            check_validity(cert, now)
        for cert, issuer in zip(chain, chain[1:]):
            if not signed_by(cert, issuer):
                raise CertificateProblem(f"{describe(cert)} is not signed by the next "
                                         f"certificate of the chain, {describe(issuer)}")
        names = leaf.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
        if not names or names[0].value != self._charge_point_id:
            raise CertificateProblem(f"{describe(leaf)} is not issued to "
                                     f"{self._charge_point_id} (its CN)")
        return key_id, leaf

    # -- renewal
    def _check_expiry(self) -> None:
        self._timers.set("charger-certificate", self._clock.now + CHECK_EVERY_S,
                         self._check_expiry)
        active = self.active()
        chain = active.chain if active else self._configured_chain
        if not chain or not self._clock.known:
            return
        try:
            leaf = load_chain(chain)[0]
        except CertificateProblem:
            return
        left = leaf.not_valid_after_utc.timestamp() - self._clock.utc()
        pending = self._pending()
        if left > RENEW_BEFORE_S or (pending and self._clock.now - pending[2] < CHECK_EVERY_S
                                     and pending[2] <= self._clock.now):
            return
        if self._link.online:
            self.request(f"the certificate expires in {left / 86400:.0f} days")
