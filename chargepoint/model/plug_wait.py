"""Identification first: an accepted id waits `ConnectionTimeOut` seconds for a plug.

Any free connector (or only the one a RemoteStartTransaction named) takes it; the
connectors it could go to show Preparing meanwhile (OCPP 1.6 section 3, TC_010, 011).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Optional

from chargepoint.model.authorization import Decision
from chargepoint.model.clock import StationClock
from chargepoint.model.connector import Connector, Connectors
from chargepoint.model.reservations import Reservations
from chargepoint.ocpp_keys import OcppKeys
from chargepoint.timers import Timers

log = logging.getLogger("chargepoint.sessions")


@dataclass
class Pending:
    """An accepted id waiting for a plug."""

    id_tag: str
    decision: Decision
    reservation_id: Optional[int] = None
    #: Only this connector may take it (RemoteStartTransaction with a connectorId).
    connector_id: Optional[int] = None

    def fits(self, conn: Connector) -> bool:
        return self.connector_id is None or self.connector_id == conn.id


class PlugWait:
    """The one id waiting for a plug, if any. Loop thread only."""

    def __init__(self, keys: OcppKeys, timers: Timers, clock: StationClock,
                 connectors: Connectors, reservations: Reservations):
        self._keys = keys
        self._timers = timers
        self._clock = clock
        self._connectors = connectors
        self._reservations = reservations
        self.pending: Optional[Pending] = None

    def waiting_for_plug(self, conn: Connector) -> bool:
        pending = self.pending
        return pending is not None and pending.fits(conn) and self._reservations.free_for(
            conn, pending.id_tag, pending.decision.parent_id_tag)

    def wait(self, pending: Pending) -> None:
        """`pending` waits ConnectionTimeOut seconds for a plug."""
        self.pending = pending
        timeout = self._keys.int("ConnectionTimeOut")
        self._timers.set("connection-timeout", self._clock.now + timeout, self._timed_out)
        log.info("idTag %s accepted; waiting %d s for a plug", pending.id_tag, timeout)
        self._outlets_changed()

    def take(self) -> Optional[Pending]:
        """An EV plugged in where the pending id may start: it is no longer waiting."""
        pending, self.pending = self.pending, None
        self._timers.cancel("connection-timeout")
        if pending is not None:
            self._outlets_changed()
        return pending

    def _timed_out(self) -> None:
        pending, self.pending = self.pending, None
        if pending is not None:
            log.info("no EV plugged in within ConnectionTimeOut; idTag %s lapsed",
                     pending.id_tag)
            self._outlets_changed()

    def _outlets_changed(self) -> None:
        for conn in self._connectors.outlets():
            conn.changed()
