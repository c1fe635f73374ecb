"""StatusNotification: tell the CSMS each connector's status whenever it changes.

Statuses are not queued while offline: after a reconnect the charger reports
the current status of every connector instead of replaying stale ones.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from chargepoint.calls import CONNECTION, OTHER
from chargepoint import storage_fault

if TYPE_CHECKING:
    from chargepoint.station import Station


def payload(st: "Station", connector_id: int) -> dict:
    conn = st.connectors[connector_id]
    code, info, vendor_code = conn.error()
    body = {"connectorId": connector_id, "errorCode": code, "status": conn.status()}
    if info:
        body["info"] = info[:50]
    if vendor_code:
        body["vendorErrorCode"] = vendor_code[:50]
    stamp = st.timestamp()
    if stamp:
        body["timestamp"] = stamp
    if connector_id == 0:
        storage_fault.told(st, body)
    return body


def send(st: "Station", connector_id: int, before_accept: bool = False,
         lane: int = OTHER) -> bool:
    """Queue the connector's status (merged into one of its statuses still waiting)."""
    body = payload(st, connector_id)
    st.reported_status[connector_id] = (body["status"], body["errorCode"])

    def failed(reason: str) -> None:
        st.reported_status.pop(connector_id, None)

    return st.send_call("StatusNotification", body, on_error=failed,
                        before_accept=before_accept, lane=lane)


#: An EV needs a moment to answer a fresh offer (pilot B -> C); SuspendedEV is not
#: reported before this many seconds have passed, so a normal start reads
#: Preparing -> Charging rather than Preparing -> SuspendedEV -> Charging.
EV_RESPONSE_S = 3.0


def notify(st: "Station", connector_id: int) -> None:
    """Report `connector_id` if its status or error differs from what the CSMS knows."""
    st.refresh_outputs(connector_id)
    if not st.accepted or not st.connected:
        return
    conn = st.connectors[connector_id]
    since = conn.offered_since
    if conn.status() == "SuspendedEV" and since is not None and st.now < since + EV_RESPONSE_S:
        st.timers.set(f"status-hold:{connector_id}", since + EV_RESPONSE_S,
                      lambda: notify(st, connector_id))
        return
    if st.reported_status.get(connector_id) != (conn.status(), conn.error()[0]):
        send(st, connector_id)
    if connector_id == 0:
        for cid in st.connectors:
            if cid != 0:
                notify(st, cid)


def report_all(st: "Station") -> None:
    """Connector 0 and every connector, whatever was reported before; they open the
    connection, before any other message (chargepoint/station.py `_next_outgoing`)."""
    for connector_id in sorted(st.connectors):
        send(st, connector_id, lane=CONNECTION)
