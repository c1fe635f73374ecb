"""The security profile the CSMS raises (ChangeConfiguration SecurityProfile, TC_083/084):
upgrades only, each once its prerequisites are installed, tried on a new connection and
given up for the previous profile if it cannot connect.

`SecurityProfile` holds the profile in use; while an upgrade is on trial the `state` row
`security_profile_trial` names the one before it. The link (chargepoint/transport.py)
reports an upgrade that failed FALLBACK_AFTER attempts in a row (`SecurityProfileFailed`);
the first connection that succeeds ends the trial. The profile of the configuration is the
floor: a higher one there raises the stored one, a lower one never lowers it.
"""
from __future__ import annotations

import logging
from typing import Optional

from chargepoint import actions as act
from chargepoint.actions import Effects
from chargepoint.model.certificates import Certificates
from chargepoint.model.charger_certificate import ChargerCertificate
from chargepoint.model.security_events import SecurityEvents
from chargepoint.ocpp_keys import OcppKeys
from chargepoint.store import Store

log = logging.getLogger("chargepoint.security")

_TRIAL = "security_profile_trial"


class SecurityProfile:
    """The profile in use, its upgrades and their fall-back. Loop thread only."""

    def __init__(self, keys: OcppKeys, store: Store, effects: Effects,
                 certificates: Certificates, charger_certificate: ChargerCertificate,
                 security: SecurityEvents, configured: int):
        self._keys = keys
        self._store = store
        self._effects = effects
        self._certificates = certificates
        self._charger = charger_certificate
        self._security = security
        if configured > keys.int("SecurityProfile"):
            keys.change("SecurityProfile", str(configured))
            store.delete_state(_TRIAL)

    @property
    def current(self) -> int:
        return self._keys.int("SecurityProfile")

    @property
    def on_trial(self) -> Optional[int]:
        """The profile to fall back to while an upgrade is on trial, else None."""
        return self._store.get_state(_TRIAL)

    def missing(self, profile: int) -> str:
        """What profile `profile` lacks on this charger ("" when nothing)."""
        if profile in (1, 2) and not self._keys.raw("AuthorizationKey"):
            return "no AuthorizationKey is set"
        if profile >= 2 and not (self._certificates.installed("CentralSystemRootCertificate")
                                 or self._certificates.configured_root):
            return "no CentralSystemRootCertificate is installed"
        if profile == 3 and not self._charger.available():
            return "the charger has no certificate (SignCertificate / CertificateSigned)"
        return ""

    def change(self, value: str) -> tuple[str, str]:
        """ChangeConfiguration SecurityProfile: (status, why when not Accepted)."""
        current = self.current
        try:
            wanted = int(value.strip())
        except ValueError:
            return "Rejected", f"SecurityProfile takes 0 to 3, not {value!r}"
        if not 0 <= wanted <= 3:
            return "Rejected", f"SecurityProfile takes 0 to 3, not {wanted}"
        if wanted < current:
            return "Rejected", f"a downgrade from {current} to {wanted} is never accepted"
        if wanted == current:
            return "Accepted", ""
        why = self.missing(wanted)
        if why:
            return "Rejected", f"security profile {wanted} cannot be used: {why}"
        with self._store.transaction():
            self._keys.change("SecurityProfile", str(wanted))
            self._store.set_state(_TRIAL, current)
        self._security.record("ReconfigurationOfSecurityParameters",
                              f"SecurityProfile {current} -> {wanted}")
        log.warning("security profile %d -> %d: reconnecting with it (back to %d if it cannot "
                    "connect)", current, wanted, current)
        self.announce()
        self._effects.emit(act.Reconnect(f"security profile {wanted}"))
        return "Accepted", ""

    def connected(self) -> None:
        """A connection succeeded with the profile in use."""
        previous = self.on_trial
        if previous is not None:
            self._store.delete_state(_TRIAL)
            log.info("security profile %d works; the upgrade from %d is kept", self.current,
                     previous)
        if self.current >= 2:
            self._certificates.connected_with_tls()

    def failed(self, profile: int, reason: str) -> None:
        """The link could not connect with `profile` (on trial): back to the previous one."""
        previous = self.on_trial
        if previous is None or profile != self.current:
            return
        with self._store.transaction():
            self._keys.change("SecurityProfile", str(previous))
            self._store.delete_state(_TRIAL)
        log.error("security profile %d could not connect (%s): back to %d", profile, reason,
                  previous)
        self._security.record("ReconfigurationOfSecurityParameters",
                              f"SecurityProfile {profile} failed, back to {previous}: {reason}")
        self.announce()
        self._effects.emit(act.Reconnect(f"back to security profile {previous}"))

    def announce(self) -> None:
        """Tell the link what it connects with from its next connection."""
        self._effects.emit(self.link_security())

    def link_security(self) -> act.LinkSecurity:
        active = self._charger.active()
        return act.LinkSecurity(profile=self.current,
                                roots_pem=self._certificates.roots_pem(),
                                charger_key_id=active.key_id if active else None,
                                charger_chain=active.chain if active else None,
                                trial=self.on_trial is not None)
