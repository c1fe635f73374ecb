"""ReserveNow and CancelReservation: a connector (or any connector) held for one driver.

A reserved connector shows Reserved and admits only the reserved idTag, or an id
with the reservation's parentIdTag (learnt from the CSMS or the local list); its
StartTransaction carries the reservationId, and the reservation ends when used,
at `expiryDate` (status back to Available, TC_047) or on CancelReservation.

A reservation of connector 0 (`ReserveConnectorZeroSupported`) holds no connector in
particular: the charger keeps as many connectors free as there are such
reservations, so once only that many free connectors remain they show Reserved
and admit the reserved ids only (TC_049). Reservations live in SQLite and survive
restarts and power cuts.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Optional

from chargepoint.model.authorization import same_id
from chargepoint.model.availability import Availability
from chargepoint.model.clock import StationClock
from chargepoint.model.connector import Connector, Connectors
from chargepoint.store import Store
from chargepoint.timers import Timers

log = logging.getLogger("chargepoint.reservation")


@dataclass(frozen=True)
class Reservation:
    reservation_id: int
    connector_id: int
    id_tag: str
    parent_id_tag: Optional[str]
    expiry: float                      # station time (UTC seconds)

    def admits(self, id_tag: Optional[str], parent_id_tag: Optional[str]) -> bool:
        return same_id(id_tag, self.id_tag) or same_id(parent_id_tag, self.parent_id_tag)


class Reservations:
    """The reservations in force, and their expiry timers. Loop thread only."""

    def __init__(self, store: Store, clock: StationClock, timers: Timers,
                 connectors: Connectors, availability: Availability):
        self._store = store
        self._clock = clock
        self._timers = timers
        self._connectors = connectors
        self._availability = availability
        self.active: dict[int, Reservation] = {}
        for row in store.execute("SELECT reservation_id, connector_id, id_tag, "
                                 "parent_id_tag, expiry FROM reservations").fetchall():
            self.active[row[0]] = Reservation(*row)
        self.rearm()

    # -- which connector is held for whom
    def _idle(self, conn: Connector) -> bool:
        return self._availability.idle(conn)

    def anywhere(self) -> bool:
        """A reservation of connector 0 holds whichever connectors are the last free ones."""
        return any(r.connector_id == 0 for r in self.active.values())

    def holding(self, conn: Connector) -> list[Reservation]:
        """The reservations that hold `conn` now (empty: anyone may use it)."""
        direct = [r for r in self.active.values() if r.connector_id == conn.id]
        if direct:
            return direct
        anywhere = [r for r in self.active.values() if r.connector_id == 0]
        if not anywhere or not self._idle(conn):
            return []
        unheld = [c for c in self._connectors.values() if c.id != 0 and self._idle(c)
                  and not any(r.connector_id == c.id for r in self.active.values())]
        return anywhere if len(unheld) <= len(anywhere) else []

    def reserved(self, conn: Connector) -> bool:
        return bool(self.holding(conn))

    def may_admit(self, conn: Connector, id_tag: str) -> bool:
        """Could `id_tag` start on `conn`, its parentIdTag still unknown? Only a reservation
        with a parentIdTag makes another id worth an Authorize.req (TC_046_1, TC_053)."""
        held = self.holding(conn)
        return not held or any(same_id(r.id_tag, id_tag) or r.parent_id_tag is not None
                               for r in held)

    def blocks(self, conn: Connector, id_tag: Optional[str],
               parent_id_tag: Optional[str]) -> bool:
        held = self.holding(conn)
        return bool(held) and not any(r.admits(id_tag, parent_id_tag) for r in held)

    def free_for(self, conn: Connector, id_tag: Optional[str] = None,
                 parent_id_tag: Optional[str] = None) -> bool:
        """Could a new transaction (of `id_tag`, when a reservation holds `conn`) start on
        `conn`, plug aside?"""
        return self._idle(conn) and not self.blocks(conn, id_tag, parent_id_tag)

    def match(self, conn: Connector, id_tag: str,
              parent_id_tag: Optional[str]) -> Optional[Reservation]:
        """The reservation a transaction of `id_tag` on `conn` uses up, if any."""
        for r in self.holding(conn) + [r for r in self.active.values() if r.connector_id == 0]:
            if r.admits(id_tag, parent_id_tag):
                return r
        return None

    # -- changes
    def add(self, reservation: Reservation) -> None:
        with self._store.transaction():
            self._store.execute(
                "INSERT INTO reservations(reservation_id, connector_id, id_tag, parent_id_tag, "
                "expiry) VALUES(?, ?, ?, ?, ?) ON CONFLICT(reservation_id) DO UPDATE SET "
                "connector_id=excluded.connector_id, id_tag=excluded.id_tag, "
                "parent_id_tag=excluded.parent_id_tag, expiry=excluded.expiry",
                (reservation.reservation_id, reservation.connector_id, reservation.id_tag,
                 reservation.parent_id_tag, reservation.expiry))
            self._store.on_commit(lambda: self._added(reservation))

    def _added(self, reservation: Reservation) -> None:
        self.active[reservation.reservation_id] = reservation
        self.arm(reservation)
        self._notify()

    def remove(self, reservation_id: int, why: str) -> bool:
        reservation = self.active.get(reservation_id)
        if reservation is None:
            return False
        with self._store.transaction():
            self._store.execute("DELETE FROM reservations WHERE reservation_id=?",
                                  (reservation_id,))
            self._store.on_commit(lambda: self._removed(reservation, why))
        return True

    def _removed(self, reservation: Reservation, why: str) -> None:
        self.active.pop(reservation.reservation_id, None)
        self._timers.cancel(f"reservation:{reservation.reservation_id}")
        log.info("reservation %d (%s on connector %d) ended: %s", reservation.reservation_id,
                 reservation.id_tag, reservation.connector_id, why)
        self._notify()

    def arm(self, reservation: Reservation) -> None:
        """Set the expiry timer (the expiry is in the CSMS's time)."""
        local = self._clock.to_local(reservation.expiry)
        if self._clock.csms_offset is not None and local <= self._clock.now:
            # Expired while the charger was off: gone before the boot reports any status.
            self.remove(reservation.reservation_id, "expired")
            return
        self._timers.set(f"reservation:{reservation.reservation_id}", local,
                           lambda: self.remove(reservation.reservation_id, "expired"))

    def rearm(self) -> None:
        for reservation in list(self.active.values()):
            self.arm(reservation)

    def transaction_ended(self) -> None:
        """A connector became free: a reservation of connector 0 may move."""
        self._notify()

    def _notify(self) -> None:
        for conn in self._connectors.values():
            if conn.id != 0:
                conn.changed()


