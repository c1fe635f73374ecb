"""Availability: which connectors are in service, and which could take a new session.

ChangeAvailability takes a connector, or the whole charger (0), in or out of service.
The change is stored at once and survives restarts and power cuts (TC_034). While a
transaction runs on an affected connector it is stored as scheduled and applied when
the transaction ends (or, after a power cut, at the next start once the open transaction
has been closed). While the whole charger is scheduled Inoperative, idle connectors take
no new session, or overlapping sessions could keep the charger in service for ever.
"""
from __future__ import annotations

import logging

from chargepoint.model.connector import Connector, Connectors
from chargepoint.model.write_faults import WriteFaults
from chargepoint.store import Store

log = logging.getLogger("chargepoint.availability")


def _stored_key(cid: int) -> str:
    return f"availability:{cid}"


def _scheduled_key(cid: int) -> str:
    return f"availability-scheduled:{cid}"


class Availability:
    """Operative or not, now and once transactions end. Loop thread only."""

    def __init__(self, store: Store, connectors: Connectors, write_faults: WriteFaults):
        self._store = store
        self._connectors = connectors
        self._write_faults = write_faults
        for conn in connectors.values():
            conn.operative = store.get_state(_stored_key(conn.id), "Operative") == "Operative"
        #: Connector 0 is scheduled Inoperative.
        self.charger_going_out = False
        #: A clean stop is under way (the station's `shutdown`): no new transaction starts.
        self.closing = False
        self._remember()

    # -- what the rest of the model asks
    def available(self, conn: Connector) -> bool:
        """In service (and, for a connector, the charger too)."""
        if conn.id != 0 and conn.tx is None and not conn.starting and self.charger_going_out:
            return False                # the whole charger is scheduled Inoperative
        return conn.operative and (conn.id == 0 or self._connectors[0].operative)

    def idle(self, conn: Connector) -> bool:
        """Could a new transaction start on `conn`, plug and reservations aside?"""
        return (conn.id != 0 and conn.tx is None and not conn.starting
                and self.available(conn) and not conn.faulted
                and not self._connectors[0].faulted and not self._write_faults.failing
                and not self.closing)

    def busy(self, cid: int) -> bool:
        """A transaction runs or starts on `cid` (any connector, for 0)."""
        ids = [c for c in self._connectors if c != 0] if cid == 0 else [cid]
        return any(self._connectors[i].tx is not None or self._connectors[i].starting
                   for i in ids)

    # -- changes
    def change(self, cid: int, operative: bool) -> str:
        """ChangeAvailability of `cid` (known): "Accepted" or "Scheduled"."""
        # Already so (OCPP 1.6 section 5.2): Accepted even while charging; _apply also
        # withdraws a change still scheduled.
        if self.busy(cid) and self._connectors[cid].operative != operative:
            kind = "Operative" if operative else "Inoperative"
            self._store.set_state(_scheduled_key(cid), kind)
            self._remember()
            log.info("connector %d becomes %s when its transaction ends", cid, kind)
            if cid == 0:
                self._outlets_changed()
            return "Scheduled"
        self._apply(cid, operative)
        return "Accepted"

    def apply_scheduled(self) -> None:
        """Apply the changes that waited for transactions to end."""
        for cid in sorted(self._connectors):
            kind = self._store.get_state(_scheduled_key(cid))
            if kind is not None and not self.busy(cid):
                self._apply(cid, kind == "Operative")

    def _remember(self) -> None:
        self.charger_going_out = self._store.get_state(_scheduled_key(0)) == "Inoperative"

    def _apply(self, cid: int, operative: bool) -> None:
        conn = self._connectors[cid]
        was_going_out = cid == 0 and self.charger_going_out
        self._store.delete_state(_scheduled_key(cid))
        self._remember()
        if was_going_out:
            self._outlets_changed()
        if conn.operative != operative:
            conn.operative = operative
            self._store.set_state(_stored_key(cid), "Operative" if operative else "Inoperative")
            conn.changed()
            log.info("connector %d is now %s", cid, "Operative" if operative else "Inoperative")
            if cid == 0:
                self._outlets_changed()

    def _outlets_changed(self) -> None:
        for other in self._connectors.outlets():
            other.changed()
