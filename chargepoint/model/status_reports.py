"""StatusNotification: tell the CSMS each connector's status whenever it changes.

Statuses are not queued while offline: after a reconnect the charger reports
the current status of every connector instead of replaying stale ones. The station
asks for a report once per turn for each connector that changed (`report`).
"""
from __future__ import annotations

from chargepoint.model.clock import StationClock
from chargepoint.model.connector import Connectors
from chargepoint.model.link import CONNECTION, OTHER, Link
from chargepoint.model.status import ConnectorView
from chargepoint.model.storage_fault import StorageRepairs
from chargepoint.timers import Timers

#: An EV needs a moment to answer a fresh offer (pilot B -> C); SuspendedEV is not
#: reported before this many seconds have passed, so a normal start reads
#: Preparing -> Charging rather than Preparing -> SuspendedEV -> Charging.
EV_RESPONSE_S = 3.0


class StatusReports:
    """What the CSMS was last told of each connector. Loop thread only."""

    def __init__(self, link: Link, clock: StationClock, timers: Timers,
                 connectors: Connectors, view: ConnectorView, repairs: StorageRepairs):
        self._link = link
        self._clock = clock
        self._timers = timers
        self._connectors = connectors
        self._view = view
        self._repairs = repairs
        #: connector id -> (status, errorCode) the CSMS was last told.
        self.reported: dict[int, tuple[str, str]] = {}

    def payload(self, connector_id: int) -> dict:
        conn = self._connectors[connector_id]
        code, info, vendor_code = conn.error()
        body = {"connectorId": connector_id, "errorCode": code,
                "status": self._view.status(conn)}
        if info:
            body["info"] = info[:50]
        if vendor_code:
            body["vendorErrorCode"] = vendor_code[:50]
        stamp = self._clock.timestamp()
        if stamp:
            body["timestamp"] = stamp
        if connector_id == 0:
            self._repairs.told(body)
        return body

    def send(self, connector_id: int, before_accept: bool = False, lane: int = OTHER) -> bool:
        """Queue the connector's status (merged into one of its statuses still waiting)."""
        body = self.payload(connector_id)
        self.reported[connector_id] = (body["status"], body["errorCode"])

        def failed(reason: str) -> None:
            self.reported.pop(connector_id, None)

        return self._link.send_call("StatusNotification", body, on_error=failed,
                                    before_accept=before_accept, lane=lane)

    def report(self, connector_id: int) -> None:
        """Report `connector_id` if its status or error differs from what the CSMS knows."""
        if not self._link.online:
            return
        conn = self._connectors[connector_id]
        status = self._view.status(conn)
        since = conn.offered_since
        if status == "SuspendedEV" and since is not None \
                and self._clock.now < since + EV_RESPONSE_S:
            self._timers.set(f"status-hold:{connector_id}", since + EV_RESPONSE_S,
                             conn.changed)
            return
        if self.reported.get(connector_id) != (status, conn.error()[0]):
            self.send(connector_id)

    def report_all(self) -> None:
        """Connector 0 and every connector, whatever was reported before; they open the
        connection, before any other message (chargepoint/protocol/rpc.py)."""
        for connector_id in sorted(self._connectors):
            self.send(connector_id, lane=CONNECTION)
