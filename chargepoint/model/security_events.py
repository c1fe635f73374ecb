"""Security events (OCPP 1.6 Security Whitepaper, edition 3, section 4 and its list of
events): the security log on disk and the SecurityEventNotifications to the CSMS.

Every event is a row of the `security_log` table (owned here), which survives restarts and
keeps the newest LOG_ROWS. Every event of the whitepaper's list is also sent to the CSMS as
a SecurityEventNotification through the outbox, so it is durable from the moment it is
recorded and delivered in order with the transaction messages, after a power cut too. The
same event with the same detail recurring within REPEAT_WINDOW_S (a CSMS whose certificate
fails at every back-off step) is logged each time but sent once. Events a peer can repeat at
will, as fast as it sends frames (FLOODABLE: invalid messages), are written once per window
and detail and counted in memory meanwhile, so that a flood of bad frames neither wears
the card nor pushes the rest out of the bounded log; the next row says how many it stands for.

A CSMS without the whitepaper would answer SecurityEventNotification with a CALLERROR, and the
outbox would retry it ahead of the transaction messages for TransactionMessageAttempts. So
with `[csms] security_events = "auto"` (the default) they are sent once the CSMS has shown it
speaks the whitepaper: security profile 2 or 3, or a whitepaper operation it sent (remembered
across restarts); "on" sends them always, "off" never. The log keeps every event regardless.
"""
from __future__ import annotations

import logging
from typing import Optional

from chargepoint.model.clock import StationClock
from chargepoint.model.outbox import Outbox
from chargepoint.model.transactions import Transactions
from chargepoint.ocpp_keys import OcppKeys
from chargepoint.store import Store

log = logging.getLogger("chargepoint.security")

#: The whitepaper's event types (edition 3, section 4.4); True: critical.
EVENT_TYPES: dict[str, bool] = {
    "FirmwareUpdated": True,
    "FailedToAuthenticateAtCentralSystem": False,
    "CentralSystemFailedToAuthenticate": False,
    "SettingSystemTime": True,
    "StartupOfTheDevice": True,
    "ResetOrReboot": True,
    "SecurityLogWasCleared": True,
    "ReconfigurationOfSecurityParameters": False,
    "MemoryExhaustion": True,
    "InvalidMessages": False,
    "AttemptedReplayAttacks": False,
    "TamperDetectionActivated": True,
    "InvalidFirmwareSignature": False,
    "InvalidFirmwareSigningCertificate": False,
    "InvalidCentralSystemCertificate": False,
    "InvalidChargePointCertificate": False,
    "InvalidTLSVersion": False,
    "InvalidTLSCipherSuite": False,
}

#: Rows the security log keeps (the oldest go first): about 200 bytes each.
LOG_ROWS = 5000
#: An event repeated with the same detail within this many seconds is not sent again.
REPEAT_WINDOW_S = 3600.0
#: Events a peer can make at the rate it sends frames: repeats within the window are
#: counted, not written.
FLOODABLE = frozenset({"InvalidMessages"})
#: techInfo is CiString255 in SecurityEventNotification.req.
TECH_INFO_MAX = 255
#: `state` row: the CSMS has sent a whitepaper operation.
SPOKEN = "csms_speaks_security_whitepaper"
MODES = ("auto", "on", "off")


def sends_events(mode: str, spoken: bool, security_profile: int) -> bool:
    """Whether events go to the CSMS (see the module's docstring): the one rule, also for
    the operator's clearing of the log from another process (chargepoint/security_log.py)."""
    if mode != "auto":
        return mode == "on"
    return spoken or security_profile >= 2


def log_entries(db, limit: Optional[int] = None) -> list[dict]:
    """The security log, oldest first (the newest `limit` if given), read through `db`: the
    Store, or a connection of its own (the upload's worker, chargepoint/security_log.py)."""
    rows = db.execute(
        "SELECT seq, type, timestamp, tech_info, notified FROM security_log "
        "ORDER BY seq DESC LIMIT ?", (limit if limit is not None else LOG_ROWS,)).fetchall()
    return [{"seq": seq, "type": kind, "timestamp": stamp, "techInfo": info,
             "notified": bool(notified)} for seq, kind, stamp, info, notified
            in reversed(rows)]


class SecurityEvents:
    """Record security events; send them to the CSMS. Loop thread only."""

    def __init__(self, store: Store, clock: StationClock, outbox: Outbox,
                 transactions: Transactions, keys: OcppKeys, mode: str = "auto"):
        self._store = store
        self._keys = keys
        self.mode = mode
        self._spoken = bool(store.get_state(SPOKEN, False))
        self._clock = clock
        self._outbox = outbox
        self._transactions = transactions
        #: (type, techInfo) -> local time it was last sent.
        self._sent: dict[tuple[str, str], float] = {}
        #: FLOODABLE events: when each was last written, and repeats counted since.
        self._written: dict[tuple[str, str], float] = {}
        self._repeats: dict[tuple[str, str], int] = {}

    def record(self, kind: str, tech_info: str = "") -> bool:
        """Log `kind` (one of EVENT_TYPES) with `tech_info`; returns whether a
        SecurityEventNotification was queued for it."""
        if kind not in EVENT_TYPES:
            raise ValueError(f"{kind!r} is not a security event of the whitepaper")
        info = tech_info[:TECH_INFO_MAX]
        now = self._clock.now
        last = self._sent.get((kind, info))
        if kind in FLOODABLE:
            written = self._written.get((kind, info))
            if written is not None and now - written < REPEAT_WINDOW_S:
                self._repeats[(kind, info)] = self._repeats.get((kind, info), 0) + 1
                log.debug("security event %s%s (repeated within the hour; counted, "
                            "not logged again)", kind, f": {info}" if info else "")
                return False
            self._written[(kind, info)] = now
            repeats = self._repeats.pop((kind, info), 0)
            if repeats:
                info = f"{info} (and {repeats} more in the hour before)"[:TECH_INFO_MAX]
        notify = self.sending() and (last is None or now - last >= REPEAT_WINDOW_S)
        stamp = self._transactions.stamp(now)
        payload = {"type": kind, "timestamp": stamp}
        if info:
            payload["techInfo"] = info
        with self._store.transaction():
            self._store.execute(
                "INSERT INTO security_log(type, timestamp, tech_info, notified, local) "
                "VALUES(?, ?, ?, ?, ?)", (kind, stamp, info, int(notify), now))
            self._store.execute(
                "DELETE FROM security_log WHERE seq <= (SELECT MAX(seq) FROM security_log) - ?",
                (LOG_ROWS,))
            if notify:
                self._outbox.produce("SecurityEventNotification", payload, None, now)
        if notify:
            self._sent[(kind, tech_info[:TECH_INFO_MAX])] = now
        level = logging.WARNING if EVENT_TYPES[kind] or kind.startswith("Invalid") \
            else logging.INFO
        log.log(level, "security event %s%s%s", kind, f": {info}" if info else "",
                "" if notify or not self.sending() else " (sent within the last hour; "
                "logged only)")
        return notify

    def sending(self) -> bool:
        """Whether events go to the CSMS now (see the module's docstring)."""
        return sends_events(self.mode, self._spoken, self._keys.int("SecurityProfile"))

    def csms_speaks_whitepaper(self) -> None:
        """The CSMS sent a whitepaper operation: with "auto", events go to it from now on."""
        if not self._spoken:
            self._store.set_state(SPOKEN, True)
            self._spoken = True

    def entries(self, limit: Optional[int] = None) -> list[dict]:
        """The security log, oldest first (the newest `limit` if given)."""
        return log_entries(self._store, limit)

    def clear(self, who: str) -> None:
        """Empty the security log; the clearing is itself the log's first entry."""
        now = self._clock.now
        notify = self.sending()
        clear_log(self._store, self._outbox, who, self._transactions.stamp(now), now, notify)
        log.warning("security event SecurityLogWasCleared: %s", who)


def clear_log(store: Store, outbox: Outbox, who: str, stamp: str, local: float,
              notify: bool) -> None:
    """Empty the security log in one commit: its first entry is then SecurityLogWasCleared
    (techInfo `who`), and with `notify` its SecurityEventNotification is queued in the same
    commit. The running firmware's and the operator's way alike (chargepoint/security_log.py,
    on a Store of its own beside the running firmware)."""
    info = who[:TECH_INFO_MAX]
    with store.transaction():
        store.execute("DELETE FROM security_log")
        store.execute("INSERT INTO security_log(type, timestamp, tech_info, notified, local) "
                      "VALUES('SecurityLogWasCleared', ?, ?, ?, ?)",
                      (stamp, info, int(notify), local))
        if notify:
            payload = {"type": "SecurityLogWasCleared", "timestamp": stamp}
            if info:
                payload["techInfo"] = info
            outbox.produce("SecurityEventNotification", payload, None, local)
