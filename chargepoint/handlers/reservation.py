"""ReserveNow and CancelReservation (the rules: chargepoint/model/reservations.py).

A reservation is refused when its connector (every connector, for 0) is Faulted or
Unavailable, and Occupied unless it leaves enough connectors free for the reservations
of connector 0 (TC_046 to TC_053).
"""
from __future__ import annotations

import logging

from chargepoint.clock import try_parse_utc
from chargepoint.model.connector import Connector
from chargepoint.model.reservations import Reservation
from chargepoint.model.services import Services

log = logging.getLogger("chargepoint.reservation")


def reserve_now(services: Services, payload: dict) -> dict:
    connectors, reservations = services.connectors, services.reservations
    availability, clock = services.availability, services.clock
    cid = payload["connectorId"]
    rid = payload["reservationId"]
    expiry = try_parse_utc(payload["expiryDate"])
    if cid not in connectors or expiry is None:
        return {"status": "Rejected"}
    if cid == 0 and not services.keys.bool("ReserveConnectorZeroSupported"):
        return {"status": "Rejected"}
    if clock.known and expiry <= clock.station_time():
        log.warning("ReserveNow %d refused: expiryDate %s has passed", rid,
                    payload["expiryDate"])
        return {"status": "Rejected"}
    others = {k: v for k, v in reservations.active.items() if k != rid}
    targets = connectors.outlets() if cid == 0 else [connectors[cid]]
    if all(c.faulted or connectors[0].faulted for c in targets):
        return {"status": "Faulted"}
    if all(not availability.available(c) for c in targets):
        return {"status": "Unavailable"}

    def usable(c: Connector) -> bool:
        return (availability.idle(c) and not c.pilot.vehicle_connected and not c.finishing
                and not services.plug_wait.waiting_for_plug(c)
                and not any(r.connector_id == c.id for r in others.values()))
    free = [c for c in targets if usable(c)]
    held_anywhere = sum(1 for r in others.values() if r.connector_id == 0)
    if cid == 0:
        if len(free) <= held_anywhere:
            return {"status": "Occupied"}
    elif not free:
        return {"status": "Occupied"}
    elif sum(1 for c in connectors.outlets() if c.id != cid and usable(c)) < held_anywhere:
        # The connector-0 reservations need this connector: too few others stay free.
        return {"status": "Occupied"}
    reservations.add(Reservation(rid, cid, payload["idTag"], payload.get("parentIdTag"),
                                 expiry))
    log.info("reservation %d: connector %d held for %s until %s", rid, cid, payload["idTag"],
             payload["expiryDate"])
    return {"status": "Accepted"}


def cancel_reservation(services: Services, payload: dict) -> dict:
    if services.reservations.remove(payload["reservationId"], "cancelled by the CSMS"):
        return {"status": "Accepted"}
    return {"status": "Rejected"}
