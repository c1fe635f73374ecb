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
from typing import TYPE_CHECKING, Optional

from chargepoint.clock import try_parse_utc
from chargepoint.operations.registry import PROFILES, handles
from chargepoint.operations.authorize import same_id

if TYPE_CHECKING:
    from chargepoint.connector import Connector
    from chargepoint.station import Station

log = logging.getLogger("chargepoint.reservation")

PROFILES.append("Reservation")


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
    def __init__(self, st: "Station"):
        self.st = st
        self.active: dict[int, Reservation] = {}
        for row in st.store.execute("SELECT reservation_id, connector_id, id_tag, "
                                    "parent_id_tag, expiry FROM reservations").fetchall():
            self.active[row[0]] = Reservation(*row)

    # -- which connector is held for whom
    def _idle(self, conn: "Connector") -> bool:
        from chargepoint import sessions

        return sessions.is_free(self.st, conn, check_reservations=False)

    def holding(self, conn: "Connector") -> list[Reservation]:
        """The reservations that hold `conn` now (empty: anyone may use it)."""
        direct = [r for r in self.active.values() if r.connector_id == conn.id]
        if direct:
            return direct
        anywhere = [r for r in self.active.values() if r.connector_id == 0]
        if not anywhere or not self._idle(conn):
            return []
        unheld = [c for c in self.st.connectors.values() if c.id != 0 and self._idle(c)
                  and not any(r.connector_id == c.id for r in self.active.values())]
        return anywhere if len(unheld) <= len(anywhere) else []

    def reserved(self, conn: "Connector") -> bool:
        return bool(self.holding(conn))

    def may_admit(self, conn: "Connector", id_tag: str) -> bool:
        """Could `id_tag` start on `conn`, its parentIdTag still unknown? Only a reservation
        with a parentIdTag makes another id worth an Authorize.req (TC_046_1, TC_053)."""
        held = self.holding(conn)
        return not held or any(same_id(r.id_tag, id_tag) or r.parent_id_tag is not None
                               for r in held)

    def blocks(self, conn: "Connector", id_tag: Optional[str],
               parent_id_tag: Optional[str]) -> bool:
        held = self.holding(conn)
        return bool(held) and not any(r.admits(id_tag, parent_id_tag) for r in held)

    def match(self, conn: "Connector", id_tag: str,
              parent_id_tag: Optional[str]) -> Optional[Reservation]:
        """The reservation a transaction of `id_tag` on `conn` uses up, if any."""
        for r in self.holding(conn) + [r for r in self.active.values() if r.connector_id == 0]:
            if r.admits(id_tag, parent_id_tag):
                return r
        return None

    # -- changes
    def add(self, reservation: Reservation) -> None:
        with self.st.store.transaction():
            self.st.store.execute(
                "INSERT INTO reservations(reservation_id, connector_id, id_tag, parent_id_tag, "
                "expiry) VALUES(?, ?, ?, ?, ?) ON CONFLICT(reservation_id) DO UPDATE SET "
                "connector_id=excluded.connector_id, id_tag=excluded.id_tag, "
                "parent_id_tag=excluded.parent_id_tag, expiry=excluded.expiry",
                (reservation.reservation_id, reservation.connector_id, reservation.id_tag,
                 reservation.parent_id_tag, reservation.expiry))
            self.st.store.on_commit(lambda: self._added(reservation))

    def _added(self, reservation: Reservation) -> None:
        self.active[reservation.reservation_id] = reservation
        self.arm(reservation)
        self._notify()

    def remove(self, reservation_id: int, why: str) -> bool:
        reservation = self.active.get(reservation_id)
        if reservation is None:
            return False
        with self.st.store.transaction():
            self.st.store.execute("DELETE FROM reservations WHERE reservation_id=?",
                                  (reservation_id,))
            self.st.store.on_commit(lambda: self._removed(reservation, why))
        return True

    def _removed(self, reservation: Reservation, why: str) -> None:
        self.active.pop(reservation.reservation_id, None)
        self.st.timers.cancel(f"reservation:{reservation.reservation_id}")
        log.info("reservation %d (%s on connector %d) ended: %s", reservation.reservation_id,
                 reservation.id_tag, reservation.connector_id, why)
        self._notify()

    def arm(self, reservation: Reservation) -> None:
        """Set the expiry timer (the expiry is in the CSMS's time)."""
        local = self.st.clock.to_local(reservation.expiry)
        if self.st.clock.csms_offset is not None and local <= self.st.now:
            # Expired while the charger was off: gone before the boot reports any status.
            self.remove(reservation.reservation_id, "expired")
            return
        self.st.timers.set(f"reservation:{reservation.reservation_id}", local,
                           lambda: self.remove(reservation.reservation_id, "expired"))

    def rearm(self) -> None:
        for reservation in list(self.active.values()):
            self.arm(reservation)

    def _notify(self) -> None:
        for conn in self.st.connectors.values():
            if conn.id != 0:
                conn.changed()


def install(st: "Station") -> None:
    st.reservations = Reservations(st)
    st.reservations.rearm()
    st.sessions.on_transaction_ended.append(lambda conn: st.reservations._notify())


@handles("ReserveNow")
def reserve_now(st: "Station", payload: dict) -> dict:
    from chargepoint import sessions

    cid = payload["connectorId"]
    rid = payload["reservationId"]
    expiry = try_parse_utc(payload["expiryDate"])
    if cid not in st.connectors or expiry is None:
        return {"status": "Rejected"}
    if cid == 0 and not st.keys.bool("ReserveConnectorZeroSupported"):
        return {"status": "Rejected"}
    if st.time_known and expiry <= st.station_time():
        log.warning("ReserveNow %d refused: expiryDate %s has passed", rid,
                    payload["expiryDate"])
        return {"status": "Rejected"}
    others = {k: v for k, v in st.reservations.active.items() if k != rid}
    targets = [c for c in st.connectors.values() if c.id != 0] if cid == 0 \
        else [st.connectors[cid]]
    if all(c.faulted or st.connectors[0].faulted for c in targets):
        return {"status": "Faulted"}
    if all(not c.available() for c in targets):
        return {"status": "Unavailable"}

    def usable(c: "Connector") -> bool:
        return (sessions.is_free(st, c, check_reservations=False)
                and not c.pilot.vehicle_connected and not c.finishing
                and not st.sessions.waiting_for_plug(c)
                and not any(r.connector_id == c.id for r in others.values()))
    free = [c for c in targets if usable(c)]
    held_anywhere = sum(1 for r in others.values() if r.connector_id == 0)
    if cid == 0:
        if len(free) <= held_anywhere:
            return {"status": "Occupied"}
    elif not free:
        return {"status": "Occupied"}
    elif sum(1 for c in st.connectors.values()
             if c.id not in (0, cid) and usable(c)) < held_anywhere:
        # The connector-0 reservations need this connector: too few others stay free.
        return {"status": "Occupied"}
    st.reservations.add(Reservation(rid, cid, payload["idTag"], payload.get("parentIdTag"),
                                    expiry))
    log.info("reservation %d: connector %d held for %s until %s", rid, cid, payload["idTag"],
             payload["expiryDate"])
    return {"status": "Accepted"}


@handles("CancelReservation")
def cancel_reservation(st: "Station", payload: dict) -> dict:
    if st.reservations.remove(payload["reservationId"], "cancelled by the CSMS"):
        return {"status": "Accepted"}
    return {"status": "Rejected"}
