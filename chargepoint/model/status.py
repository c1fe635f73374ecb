"""What a connector shows and may do, derived from its facts: status, current, contactor.

Nothing here is stored, so the status can never disagree with the facts it comes from
(availability, faults, pilot state, session, reservations, profiles). The safety rule
lives here too: only an authorized, available, fault-free connector offers current, never
more than its rating, the cable's PP ampacity or the charging profiles allow, and the
contactor closes only in pilot state C/D with a current on offer.
"""
from __future__ import annotations

from typing import Optional

from chargepoint.model.availability import Availability
from chargepoint.model.connector import Connector
from chargepoint.model.plug_wait import PlugWait
from chargepoint.model.reservations import Reservations
from chargepoint.model.smart_charging import SmartCharging

#: The indicator's colour for each status (the rest show "occupied").
_COLOURS = {"Available": "available", "Faulted": "fault", "Unavailable": "off",
            "Charging": "charging"}


class ConnectorView:
    """Derives status and outputs; holds no state of its own."""

    def __init__(self, availability: Availability, reservations: Reservations,
                 smart: SmartCharging, plug_wait: PlugWait):
        self._availability = availability
        self._reservations = reservations
        self._smart = smart
        self._plug_wait = plug_wait

    def status(self, conn: Connector) -> str:
        if conn.faulted:
            return "Faulted"
        tx = conn.tx
        if tx is not None and not tx.stopping:
            if tx.ev_disconnected or not conn.pilot.vehicle_connected:
                return "SuspendedEV"
            if self.offered_current(conn) is None:  # not authorized, or limited below 6 A
                return "SuspendedEVSE"
            return "Charging" if conn.pilot.wants_power else "SuspendedEV"
        if not self._availability.available(conn):
            return "Unavailable"
        if conn.id == 0:
            return "Available"
        if (conn.finishing or tx is not None) and conn.occupied_by_ev:
            return "Finishing"
        if conn.starting or self._plug_wait.waiting_for_plug(conn):
            return "Preparing"
        if self._reservations.reserved(conn):
            return "Reserved"
        if conn.pilot.vehicle_connected:
            return "Preparing"
        return "Available"

    def indicator(self, conn: Connector) -> str:
        return _COLOURS.get(self.status(conn), "occupied")

    def offered_current(self, conn: Connector) -> Optional[float]:
        """Current to offer on the pilot, or None for "charging not allowed"."""
        if conn.id == 0 or not conn.authorized or conn.faulted \
                or not self._availability.available(conn):
            return None
        limit = conn.info.max_current_a
        if conn.cable_ampacity is not None:
            limit = min(limit, conn.cable_ampacity)
        profile_limit = self._smart.limit_amps(conn)
        if profile_limit is not None:
            limit = min(limit, profile_limit)
        return limit if limit >= 6 else None

    def contactor_closed(self, conn: Connector) -> bool:
        """The contactor closes only in pilot state C/D with a current on offer."""
        return self.offered_current(conn) is not None and conn.pilot.wants_power
