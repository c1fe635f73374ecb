"""UpdateFirmware and SignedUpdateFirmware: fetch a release bundle, install it beside the
running release, switch, and keep the new release only once it has proved itself.

The steps, each persisted (the `state` row `firmware-update`) before the action it
leads to, so that a restart or a power cut at any point resumes the update or ends it
with the right status:

    scheduled ──retrieveDate──▶ downloading ──▶ downloaded ──no transaction──▶ installing
        ▲      (Downloading)        │ fail       (Downloaded)                (Installing)
        └──── retry, retryInterval ─┘  (after `retries`: DownloadFailed)          │
                                                                                   ▼
    Installed ◀── self-test passed ◀── BootNotification Accepted ◀── activated: restart
    InstallationFailed ◀── rolled back (self-test failed, trial deadline, a crash) ───┘

The I/O of each step (download, install and switch, self-test and commit, roll back) is
an action the runtime carries out on a worker thread (chargepoint/runtime.py); its
outcome comes back as an event. A running transaction is never interrupted: once the
bundle is here the idle connectors go Unavailable (no new session can start) and the
installation waits for the last transaction to end; the connectors come back Available
when the update ends either way.

A new release is on trial until it has booted, been accepted by the CSMS and passed its
self-test (chargepoint/selftest.py); then it is committed and Installed is reported. A
failed self-test rolls it back (after any running transaction); one that never gets that
far is rolled back at the trial's deadline by chargepoint/releases.py. What the trial found
before this process started (`RunningRelease`, read by the runtime from
chargepoint/releases.py) tells a release that came back after a rollback to report
InstallationFailed.

SignedUpdateFirmware (the Security Whitepaper) is the same update with a "signed" record:
its signing certificate was checked against the installed ManufacturerRootCertificates
when it was asked for (chargepoint/model/firmware_signing.py) and against the CRLs its path
names (chargepoint/model/firmware_revocation.py; the answer waits while the FetchCrls
action brings them), and between the download and
the installation the bundle's signature is verified (`verifying`, the VerifyFirmware
action) so that a bundle that is not the manufacturer's is never installed. An
`installDateTime` still ahead waits in `install-scheduled`. Its steps are told by
SignedFirmwareStatusNotification with the request's requestId, with the whitepaper's finer
statuses (DownloadScheduled, DownloadPaused, SignatureVerified, InvalidSignature,
InstallVerificationFailed, InstallScheduled, InstallRebooting).

    downloading ──▶ verifying ──signature, manifest hold──▶ [install-scheduled] ──▶ downloaded
                   (Downloaded) │                  (InstallScheduled)   (SignatureVerified)
                                └──▶ InvalidSignature, InstallVerificationFailed
"""
from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass
from typing import Callable, Optional
from urllib.parse import urlsplit, urlunsplit

from chargepoint import actions as act
from chargepoint.actions import Effects
from chargepoint.model import firmware_revocation as revocation
from chargepoint.model import firmware_signing as signing
from chargepoint.model.availability import Availability
from chargepoint.model.certificates import MANUFACTURER_ROOT, Certificates, load_chain
from chargepoint.model.clock import StationClock, iso
from chargepoint.model.connector import Connectors
from chargepoint.model.link import Link
from chargepoint.model.notices import StatusNotices
from chargepoint.model.outbox import Outbox
from chargepoint.model.security_events import SecurityEvents
from chargepoint.store import Store
from chargepoint.timers import Timers

log = logging.getLogger("chargepoint.firmware")

#: The `state` row holding the update in progress (one at a time).
STATE_KEY = "firmware-update"
#: Retries and their interval when UpdateFirmware gives none.
DEFAULT_RETRIES = 3
DEFAULT_RETRY_INTERVAL_S = 60
#: How long the Installing notification may take to reach the CSMS before the restart.
DRAIN_WAIT_S = 10.0
_POLL_S = 0.5
#: The phases before anything is installed: a new request may still cancel them.
CANCELLABLE = ("scheduled", "downloading", "retry", "verifying", "install-scheduled",
               "downloaded")
#: The statuses FirmwareStatusNotification has (SignedFirmwareStatusNotification has more).
PLAIN_STATUSES = ("Downloaded", "DownloadFailed", "Downloading", "Idle",
                  "InstallationFailed", "Installing", "Installed")


@dataclass(frozen=True)
class _Signed:
    """A SignedUpdateFirmware as asked, while its CRLs are fetched."""

    location: str
    retrieve_utc: float
    install_utc: Optional[float]
    certificate: str
    signature: str
    request_id: int
    retries: Optional[int]
    retry_interval_s: Optional[int]


@dataclass(frozen=True)
class RunningRelease:
    """What the runtime knows of the release this process runs (chargepoint/releases.py)."""

    version: str
    #: Switched to and not yet committed: it must prove itself (within the trial's time,
    #: which chargepoint/releases.py's TrialDeadline and the supervisor keep).
    on_trial: bool = False
    #: The last rollback: (the version given up, why), if one happened.
    rolled_back: Optional[tuple[str, str]] = None


class Firmware:
    """The update in progress and what the CSMS is told of it. Loop thread only."""

    def __init__(self, store: Store, clock: StationClock, timers: Timers, effects: Effects,
                 link: Link, connectors: Connectors, availability: Availability,
                 outbox: Outbox, security_events: SecurityEvents, certificates: Certificates,
                 release: RunningRelease, revocation_check: str = "soft"):
        self._store = store
        self._clock = clock
        self._timers = timers
        self._effects = effects
        self._link = link
        self._connectors = connectors
        self._availability = availability
        self._outbox = outbox
        self._security = security_events
        self._certificates = certificates
        self.release = release
        #: [releases] revocation_check: "soft", "hard" or "off".
        self._revocation = revocation_check
        self._crls = revocation.CrlCache()
        #: SignedUpdateFirmware requests waiting for their CRLs, by FetchCrls' fetch_id.
        self._fetching: dict[str, tuple] = {}
        self.notices = StatusNotices(link, clock, timers, "FirmwareStatusNotification")
        self.signed_notices = StatusNotices(link, clock, timers,
                                            "SignedFirmwareStatusNotification")
        for notices in (self.notices, self.signed_notices):
            notices.on_delivered(lambda status, n=notices: self._delivered(n, status))
        self._testing = False
        #: The update in progress, as stored (None: none).
        self.update: Optional[dict] = store.get_state(STATE_KEY)
        self._resume()

    # ------------------------------------------------------------------ what the CSMS sees
    @property
    def status(self) -> str:
        """FirmwareStatus for a triggered FirmwareStatusNotification: what is under way
        (a signed update's too, in the words of OCPP 1.6), else Idle."""
        phase = (self.update or {}).get("phase")
        return {"downloading": "Downloading", "retry": "Downloading",
                "verifying": "Downloaded", "install-scheduled": "Downloaded",
                "downloaded": "Downloaded", "installing": "Installing",
                "activated": "Installing"}.get(phase, "Idle")

    @property
    def signed_status(self) -> tuple[str, Optional[int]]:
        """(status, requestId) for a triggered SignedFirmwareStatusNotification: the step
        of the update under way (requestId None for an unsigned one), else Idle."""
        update = self.update
        if update is None or not update.get("signed"):
            return self.status, None
        phase = update["phase"]
        if phase == "activated":
            # Before the restart it reboots; after it the new release proves itself.
            status = ("Installing" if self.release.version == update.get("version")
                      else "InstallRebooting")
        else:
            status = {"scheduled": "DownloadScheduled", "downloading": "Downloading",
                      "retry": "DownloadPaused", "verifying": "Downloaded",
                      "install-scheduled": "InstallScheduled",
                      "downloaded": "SignatureVerified",
                      "installing": "Installing"}.get(phase, "Idle")
        return status, (None if status == "Idle" else update["request_id"])

    # ------------------------------------------------------------------ UpdateFirmware
    def request(self, location: str, retrieve_utc: float, retries: Optional[int],
                retry_interval_s: Optional[int]) -> None:
        """UpdateFirmware: fetch `location` from `retrieve_utc` on (real time)."""
        current = self.update
        if current is not None and current["phase"] not in CANCELLABLE + ("done",):
            log.warning("UpdateFirmware of %s ignored: the update to %s is being installed",
                        _shown(location), current.get("version") or "a new release")
            return
        self._start(self._record(location, retrieve_utc, retries, retry_interval_s),
                    "UpdateFirmware")

    def request_signed(self, location: str, retrieve_utc: float, install_utc: Optional[float],
                       certificate: str, signature: str, request_id: int,
                       retries: Optional[int], retry_interval_s: Optional[int], *,
                       later: Callable[[str], None]) -> Optional[str]:
        """SignedUpdateFirmware: Accepted, AcceptedCanceled (an update not yet being
        installed is given up for it), InvalidCertificate (the signing certificate is not
        the manufacturer's: a security event says why), RevokedCertificate (a CRL lists a
        certificate of its path, chargepoint/model/firmware_revocation.py) or Rejected (a
        signature that is not base64, or an update being installed). None when CRLs are
        to be fetched first: the status goes to `later` once they are here."""
        try:
            signing.decode_signature(signature)
        except signing.SigningProblem as exc:
            log.warning("SignedUpdateFirmware %d rejected: %s", request_id, exc)
            return "Rejected"
        now = self._clock.utc() if self._clock.known else None
        try:
            roots = [load_chain(c.pem)[0] for c in self._certificates.installed(MANUFACTURER_ROOT)]
            path = signing.signing_path(certificate, roots, now)
        except signing.SigningProblem as exc:
            log.warning("SignedUpdateFirmware %d: invalid signing certificate: %s",
                        request_id, exc)
            self._security.record("InvalidFirmwareSigningCertificate", str(exc))
            return "InvalidCertificate"
        asked = _Signed(location, retrieve_utc, install_utc, certificate, signature, request_id,
                        retries, retry_interval_s)
        found = [] if self._revocation == "off" else revocation.listed(path)
        missing = self._crls.missing(found, now)
        if not missing:
            return self._signed_checked(asked, found, {})
        fetch_id = uuid.uuid4().hex[:16]
        self._fetching[fetch_id] = (asked, found, later)
        log.info("SignedUpdateFirmware %d: fetching the CRL%s at %s", request_id,
                 "" if len(missing) == 1 else "s", ", ".join(missing))
        self._effects.emit(act.FetchCrls(fetch_id, missing, revocation.MAX_CRL_BYTES,
                                         revocation.FETCH_WITHIN_S))
        return None

    def crls_fetched(self, fetch_id: str, results: tuple) -> None:
        """The runtime fetched the CRLs a SignedUpdateFirmware waits for: it is answered."""
        waiting = self._fetching.pop(fetch_id, None)
        if waiting is None:
            return
        asked, found, later = waiting
        # Accepting emits no action itself (the download starts from its timer, later in
        # the turn), so the answer goes out ahead of what the update sets in motion.
        later(self._signed_checked(asked, found, {r.url: r for r in results}))

    def _signed_checked(self, asked: "_Signed", found: list, fetched: dict) -> str:
        """A SignedUpdateFirmware whose path is the manufacturer's, once its CRLs are here
        (`found`, the certificates to look up): refused if one is revoked, or unknown with
        the "hard" setting; else carried out."""
        now = self._clock.utc() if self._clock.known else None
        verdicts = [self._crls.verdict(entry, fetched, now) for entry in found]
        revoked = [v.detail for v in verdicts if v.status == "revoked"]
        unknown = [v.detail for v in verdicts if v.status == "unknown"]
        if revoked:
            why = "; ".join(revoked)
            log.warning("SignedUpdateFirmware %d: a revoked certificate signs it: %s",
                        asked.request_id, why)
            self._security.record("InvalidFirmwareSigningCertificate", why)
            return "RevokedCertificate"
        if unknown and self._revocation == "hard":
            why = "; ".join(unknown)
            log.warning("SignedUpdateFirmware %d: invalid signing certificate: %s",
                        asked.request_id, why)
            self._security.record("InvalidFirmwareSigningCertificate", why)
            return "InvalidCertificate"
        if unknown:
            log.warning("SignedUpdateFirmware %d carries on unchecked ([releases] "
                        "revocation_check = \"soft\"): %s", asked.request_id, "; ".join(unknown))
        return self._accept_signed(asked)

    def _accept_signed(self, asked: "_Signed") -> str:
        current = self.update
        if current is not None and current["phase"] not in CANCELLABLE + ("done",):
            log.warning("SignedUpdateFirmware %d rejected: the update to %s is being "
                        "installed", asked.request_id, current.get("version") or "a new release")
            return "Rejected"
        canceled = current is not None and current["phase"] != "done"
        record = self._record(asked.location, asked.retrieve_utc, asked.retries,
                              asked.retry_interval_s)
        record.update(signed=True, request_id=asked.request_id, certificate=asked.certificate,
                      signature=asked.signature, install=asked.install_utc)
        self._start(record, f"SignedUpdateFirmware {asked.request_id}")
        if asked.retrieve_utc > self._clock.utc():
            self._tell("DownloadScheduled")
        return "AcceptedCanceled" if canceled else "Accepted"

    def _record(self, location: str, retrieve_utc: float, retries: Optional[int],
                retry_interval_s: Optional[int]) -> dict:
        return {
            "id": uuid.uuid4().hex[:16], "location": location, "retrieve": retrieve_utc,
            "retries": DEFAULT_RETRIES if retries is None else max(0, retries),
            "interval": DEFAULT_RETRY_INTERVAL_S if retry_interval_s is None
            else max(0, retry_interval_s),
            "attempts": 0, "phase": "scheduled", "from": self.release.version}

    def _start(self, record: dict, what: str) -> None:
        current = self.update
        if current is not None and current["phase"] != "done":
            log.warning("%s of %s replaces the update from %s, not finished", what,
                        _shown(record["location"]), _shown(current["location"]))
        self._save(record)
        self._hold(False)
        log.info("firmware update from %s scheduled for %s", _shown(record["location"]),
                 iso(record["retrieve"]))
        self._arm_retrieve()

    def _arm_retrieve(self) -> None:
        update = self.update
        at = self._clock.to_local(update["retrieve"] if update["phase"] == "scheduled"
                                  else update["next"])
        self._timers.set("firmware", max(at, self._clock.now), self._download)

    def moved(self) -> None:
        """Real time moved: a retrieveDate, a retry or an installDateTime is armed again."""
        if self.update is not None and self.update["phase"] in ("scheduled", "retry"):
            self._arm_retrieve()
        elif self.update is not None and self.update["phase"] == "install-scheduled":
            self._arm_install()

    def _download(self) -> None:
        update = self.update
        first = update["phase"] == "scheduled"
        update["attempts"] += 1
        update["phase"] = "downloading"
        self._save(update)
        if first or update.get("signed"):
            self._tell("Downloading")
        log.info("firmware download attempt %d of %d: %s", update["attempts"],
                 update["retries"] + 1, _shown(update["location"]))
        self._effects.emit(act.DownloadFirmware(update["id"], update["location"]))

    def downloaded(self, request_id: str, ok: bool, reason: str, final: bool) -> None:
        """The runtime's download ended (`final`: retrying could not help)."""
        update = self.update
        if update is None or update["id"] != request_id or update["phase"] != "downloading":
            return
        if ok:
            log.info("firmware downloaded from %s", _shown(update["location"]))
            if update.get("signed"):
                update["phase"] = "verifying"
                self._save(update)
                self._tell("Downloaded")
                self._verify()
                return
            update["phase"] = "downloaded"
            self._save(update)
            self._tell("Downloaded")
            self._hold(True)
            self._install_when_idle()
            return
        left = update["retries"] + 1 - update["attempts"]
        if final or left <= 0:
            log.error("firmware download failed, giving up after %d attempt%s: %s",
                      update["attempts"], "" if update["attempts"] == 1 else "s", reason)
            self._finish("DownloadFailed")
            return
        update["phase"] = "retry"
        update["next"] = self._clock.utc() + update["interval"]
        self._save(update)
        if update.get("signed"):
            self._tell("DownloadPaused")
        log.warning("firmware download failed (%s); %d more attempt%s, the next in %d s",
                    reason, left, "" if left == 1 else "s", update["interval"])
        self._arm_retrieve()

    # ------------------------------------------------------------------ the signature
    def _verify(self) -> None:
        update = self.update
        log.info("verifying the signature of the bundle of SignedUpdateFirmware %d",
                 update["request_id"])
        self._effects.emit(act.VerifyFirmware(update["id"], update["certificate"],
                                              update["signature"]))

    def verified(self, request_id: str, outcome: str, reason: str) -> None:
        """The runtime checked the signed bundle: "verified", "invalid-signature" or
        "invalid-bundle" (the signature holds, the bundle does not)."""
        update = self.update
        if update is None or update["id"] != request_id or update["phase"] != "verifying":
            return
        if outcome == "invalid-signature":
            log.error("SignedUpdateFirmware %d: invalid signature, nothing installed: %s",
                      update["request_id"], reason)
            self._security.record("InvalidFirmwareSignature", reason)
            self._finish("InvalidSignature")
            return
        if outcome != "verified":
            log.error("SignedUpdateFirmware %d: the signed bundle does not verify, nothing "
                      "installed: %s", update["request_id"], reason)
            self._finish("InstallVerificationFailed")
            return
        self._tell("SignatureVerified")
        if update.get("install") is not None and update["install"] > self._clock.utc():
            update["phase"] = "install-scheduled"
            self._save(update)
            self._tell("InstallScheduled")
            log.info("firmware installation scheduled for %s", iso(update["install"]))
            self._arm_install()
            return
        self._ready()

    def _arm_install(self) -> None:
        at = self._clock.to_local(self.update["install"])
        self._timers.set("firmware", max(at, self._clock.now), self._ready)

    def _ready(self) -> None:
        """The bundle may be installed: once no transaction runs."""
        update = self.update
        update["phase"] = "downloaded"
        self._save(update)
        self._hold(True)
        self._install_when_idle()

    # ------------------------------------------------------------------ installing
    def transaction_ended(self) -> None:
        """A transaction ended: an installation or a rollback may be waiting for it."""
        if self.update is not None and self.update["phase"] in ("downloaded", "rolling-back"):
            self._timers.set("firmware", self._clock.now, self._install_when_idle)

    def _busy(self) -> bool:
        return any(c.tx is not None or c.starting for c in self._connectors.outlets())

    def _install_when_idle(self, drain_until: Optional[float] = None) -> None:
        """Install (or roll back) once no transaction runs, and once the CSMS has its
        last messages (the StopTransaction first; DRAIN_WAIT_S at most, they are durable)."""
        update = self.update
        if update is None or update["phase"] not in ("downloaded", "rolling-back"):
            return
        if self._busy():
            log.info("firmware %s waits for the running transaction%s to end",
                     "installation" if update["phase"] == "downloaded" else "rollback",
                     "s" if sum(c.tx is not None for c in self._connectors.outlets()) > 1
                     else "")
            return
        now = self._clock.now
        drain_until = now + DRAIN_WAIT_S if drain_until is None else drain_until
        if self._link.online and len(self._outbox) and now < drain_until:
            self._timers.set("firmware", min(now + _POLL_S, drain_until),
                             lambda: self._install_when_idle(drain_until))
            return
        if update["phase"] == "rolling-back":
            self._effects.emit(act.RollBackRelease(update.get("why", "self-test failed")))
            return
        update["phase"] = "installing"
        self._save(update)
        self._tell("Installing")
        log.info("installing the downloaded release")
        self._effects.emit(act.InstallFirmware(update["id"]))

    def installed(self, request_id: str, ok: bool, version: str, reason: str) -> None:
        """The runtime installed the bundle and switched to it (or could not)."""
        update = self.update
        if update is None or update["id"] != request_id or update["phase"] != "installing":
            return
        if not ok:
            log.error("firmware installation failed; %s keeps running: %s",
                      self.release.version, reason)
            self._finish("InstallationFailed")
            return
        update["phase"] = "activated"
        update["version"] = version
        self._save(update)
        if update.get("signed"):
            self._tell("InstallRebooting")
        log.warning("release %s installed and switched to; restarting into it (on trial)",
                    version)
        self._restart_when_told(self._clock.now + DRAIN_WAIT_S)

    def _restart_when_told(self, deadline: float) -> None:
        """Restart once Installing has reached the CSMS (or after DRAIN_WAIT_S)."""
        told = self._notices().waiting is None and not self._link.busy()
        if (told and not (self._link.online and len(self._outbox))) \
                or self._clock.now >= deadline:
            self._effects.emit(act.Restart("release"))
            return
        self._timers.set("firmware", min(self._clock.now + _POLL_S, deadline),
                         lambda: self._restart_when_told(deadline))

    # ------------------------------------------------------------------ the trial
    def online(self) -> None:
        """Registered and connected (BootNotification Accepted, or a reconnect): what waits
        is told, and a release on trial runs its self-test."""
        self.notices.online()
        self.signed_notices.online()
        if self.release.on_trial and not self._testing and self._link.accepted:
            self._testing = True
            log.info("release %s reached the CSMS; running its self-test",
                     self.release.version)
            self._effects.emit(act.TestRelease())

    def tested(self, ok: bool, reason: str) -> None:
        """The self-test ran: passed means the runtime committed the release."""
        update = self.update
        if ok:
            log.info("release %s passed its self-test and is committed", self.release.version)
            self.release = RunningRelease(self.release.version)
            if update is not None and update["phase"] == "activated":
                self._installed()
            return
        log.error("release %s failed its self-test: %s; rolling back", self.release.version,
                  reason)
        self._roll_back(f"self-test failed: {reason}")

    def _roll_back(self, why: str) -> None:
        update = self.update or {"id": uuid.uuid4().hex[:16], "location": "",
                                 "version": self.release.version}
        update["phase"] = "rolling-back"
        update["why"] = why
        self._save(update)
        self._hold(True)
        self._install_when_idle()

    # ------------------------------------------------------------------ the end
    def _installed(self) -> None:
        self._security.record("FirmwareUpdated", f"release {self.release.version} installed "
                              f"(from {self.update['from']})")
        self._finish("Installed")

    def _finish(self, status: str) -> None:
        """The update ended with `status`; kept until the CSMS has heard it."""
        update = self.update
        update["phase"] = "done"
        update["final"] = status
        self._save(update)
        self._hold(False)
        self._timers.cancel("firmware")
        self._tell(status)

    def _delivered(self, notices: StatusNotices, status: str) -> None:
        update = self.update
        if update is not None and update["phase"] == "done" and update["final"] == status \
                and notices is self._notices():
            self._store.delete_state(STATE_KEY)
            self.update = None

    def _notices(self) -> StatusNotices:
        """The notification of the update in progress: signed or not."""
        return self.signed_notices if (self.update or {}).get("signed") else self.notices

    def _tell(self, status: str) -> None:
        update = self.update
        if update is not None and update.get("signed"):
            self.signed_notices.tell(status, {"requestId": update["request_id"]})
        elif status in PLAIN_STATUSES:
            self.notices.tell(status)

    def _waiting(self, status: str) -> None:
        """`status` is to be told again once online (at a start)."""
        update = self.update
        notices = self._notices()
        notices.waiting = status
        notices.details = ({"requestId": update["request_id"]} if update.get("signed")
                           else {})

    # ------------------------------------------------------------------ at start
    def _resume(self) -> None:
        """Carry on from the stored step (a restart, a power cut, a new release)."""
        release = self.release
        update = self.update
        if update is None:
            if release.rolled_back is not None and not release.on_trial:
                log.warning("running %s after release %s was rolled back: %s",
                            release.version, *release.rolled_back)
            return
        phase = update["phase"]
        log.info("firmware update from %s: resuming at %s", _shown(update["location"]), phase)
        if phase in ("scheduled", "retry"):
            self._arm_retrieve()
        elif phase == "downloading":
            update["attempts"] -= 1       # the attempt cut short does not count
            update["phase"] = "scheduled" if update["attempts"] == 0 else "retry"
            update["next"] = self._clock.utc()
            self._save(update)
            self._arm_retrieve()
        elif phase == "verifying":
            self._waiting("Downloaded")
            self._verify()
        elif phase == "install-scheduled":
            self._waiting("InstallScheduled")
            self._arm_install()
        elif phase == "downloaded":
            self._waiting("SignatureVerified" if update.get("signed") else "Downloaded")
            self._hold(True)
            self._timers.set("firmware", self._clock.now, self._install_when_idle)
        elif phase in ("installing", "activated"):
            self._after_switch(update)
        elif phase == "rolling-back":
            if release.version != update.get("version"):
                # Back on the previous release already: the rollback happened.
                self._finish("InstallationFailed")
            else:
                self._hold(True)
                self._timers.set("firmware", self._clock.now, self._install_when_idle)
        elif phase == "done":
            self._waiting(update["final"])

    def _after_switch(self, update: dict) -> None:
        """Started after the installation began: on the new release (on trial or already
        committed), back on the old one (rolled back), or never switched."""
        release = self.release
        target = update.get("version")
        if release.version == update["from"] and release.version != target:
            if release.rolled_back is not None and (target is None
                                                    or release.rolled_back[0] == target):
                log.error("release %s was rolled back: %s", *release.rolled_back)
                self._finish("InstallationFailed")
            elif update["phase"] == "installing":
                log.warning("the installation was cut short; installing again")
                update["phase"] = "downloaded"
                self._save(update)
                self._hold(True)
                self._timers.set("firmware", self._clock.now, self._install_when_idle)
            else:
                log.error("release %s was switched to but %s is running", target,
                          release.version)
                self._finish("InstallationFailed")
            return
        update["phase"] = "activated"
        update["version"] = release.version
        self._save(update)
        if not release.on_trial:
            self._installed()                # committed before the CSMS heard of it

    # ------------------------------------------------------------------ helpers
    def _hold(self, held: bool) -> None:
        """Idle connectors Unavailable (no new session) while an installation waits or
        runs; back when it ends."""
        self._availability.hold_for_update(held)

    def _save(self, update: dict) -> None:
        self._store.set_state(STATE_KEY, update)
        self.update = update


def _shown(location: str) -> str:
    """A location as it may be logged: no password (ftp://user:***@host/...)."""
    try:
        parts = urlsplit(location)
        if parts.password is None:
            return location
        host = parts.netloc.rpartition("@")[2]
        return urlunsplit(parts._replace(netloc=f"{parts.username}:***@{host}"))
    except ValueError:
        return location.rpartition("@")[2]

