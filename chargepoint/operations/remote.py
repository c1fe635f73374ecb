"""RemoteStartTransaction and RemoteStopTransaction: sessions started and ended from afar.

RemoteStartTransaction is answered at once (Accepted or Rejected by the connector's
state); the session then follows the local rules of chargepoint/sessions.py: with
`AuthorizeRemoteTxRequests` the id is authorized first (Authorize.req, or the local
list / cache under `LocalPreAuthorize`), the transaction starts when an EV is
plugged in, and an unplugged connector waits `ConnectionTimeOut` (TC_010, 011_1/2).
A `chargingProfile` must be a TxProfile; it is handed to the smart-charging hook
(`REMOTE_START_PROFILE_HOOKS`), which binds it to the transaction once it starts.
"""
from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Callable, Optional

from chargepoint import sessions
from chargepoint.operations import authorize
from chargepoint.operations.registry import handles

if TYPE_CHECKING:
    from chargepoint.station import Station

log = logging.getLogger("chargepoint.remote")

#: Smart charging registers here: hook(station, connector_id, id_tag, profile) -> bool
#: (False rejects the request). Without a hook a TxProfile is accepted and not applied.
REMOTE_START_PROFILE_HOOKS: list[Callable[["Station", int, str, dict], bool]] = []


def _pick_connector(st: "Station", wanted: Optional[int], id_tag: str):
    """The connector a remote start goes to, or None when it must be rejected."""
    if wanted is not None:
        conn = st.connectors.get(wanted)
        if wanted == 0 or conn is None or not sessions.is_free(st, conn, id_tag):
            return None
        return conn
    free = [c for c in st.connectors.values() if sessions.is_free(st, c, id_tag)]
    plugged = [c for c in free if c.pilot.vehicle_connected]
    return (plugged or free or [None])[0]


@handles("RemoteStartTransaction")
def remote_start(st: "Station", payload: dict) -> dict:
    id_tag = payload["idTag"]
    conn = _pick_connector(st, payload.get("connectorId"), id_tag)
    if conn is None:
        log.warning("RemoteStartTransaction for %s on connector %s rejected: not free",
                    id_tag, payload.get("connectorId", "(any)"))
        return {"status": "Rejected"}
    if st.sessions.pending is not None and not conn.pilot.vehicle_connected:
        log.warning("RemoteStartTransaction rejected: idTag %s already waits for a plug",
                    st.sessions.pending.id_tag)
        return {"status": "Rejected"}
    profile = payload.get("chargingProfile")
    if profile is not None:
        if profile.get("chargingProfilePurpose") != "TxProfile":
            log.warning("RemoteStartTransaction rejected: its chargingProfile is a %s, "
                        "not a TxProfile", profile.get("chargingProfilePurpose"))
            return {"status": "Rejected"}
        for hook in REMOTE_START_PROFILE_HOOKS:
            if not hook(st, conn.id, id_tag, profile):
                return {"status": "Rejected"}
    connector_id = conn.id

    def decided(decision: authorize.Decision) -> None:
        if not decision.accepted:
            log.info("remote start for %s not authorized (%s)", id_tag,
                     decision.info.get("status"))
            return
        sessions.offer(st, id_tag, decision, connector_id=connector_id)

    if st.keys.bool("AuthorizeRemoteTxRequests"):
        authorize.authorize(st, id_tag, decided)
    else:
        decided(authorize.Decision(True, {"status": "Accepted"}, "remote"))
    log.info("RemoteStartTransaction for %s on connector %d accepted", id_tag, connector_id)
    return {"status": "Accepted"}


@handles("RemoteStopTransaction")
def remote_stop(st: "Station", payload: dict) -> dict:
    transaction_id = payload["transactionId"]
    for conn in st.connectors.values():
        tx = conn.tx
        if tx is not None and not tx.stopping and tx.transaction_id == transaction_id:
            sessions.stop(st, conn, "Remote")
            log.info("RemoteStopTransaction: stopping transaction %d", transaction_id)
            return {"status": "Accepted"}
    log.warning("RemoteStopTransaction for unknown transaction %s rejected", transaction_id)
    return {"status": "Rejected"}
