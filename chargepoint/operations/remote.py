"""RemoteStartTransaction and RemoteStopTransaction: sessions started and ended from afar.

RemoteStartTransaction is answered at once (Accepted or Rejected by the connector's
state); the session then follows the local rules of chargepoint/sessions.py: with
`AuthorizeRemoteTxRequests` the id is authorized first (Authorize.req, or the local
list / cache under `LocalPreAuthorize`), the transaction starts when an EV is
plugged in, and an unplugged connector waits `ConnectionTimeOut` (TC_010, 011_1/2).
A `chargingProfile` must be a TxProfile; it is handed to the smart-charging hook
(`REMOTE_START_PROFILE_HOOKS`), which binds it to the transaction once it starts.

On a connector reserved with a parentIdTag, another id is admitted when its own
parentIdTag is the reservation's (section 5.13), as for a card presented there. When
the id's parent is known locally (a valid entry of the local list or the cache), the
answer says at once; otherwise the request is Accepted, the parent is learnt with an
Authorize.req (whatever `AuthorizeRemoteTxRequests` says: only the CSMS knows it), and
the session is offered there only if it matches. The answer does not wait for that
Authorize: RemoteStartTransaction.conf only says the charger will try (section 5.11).
"""
from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Callable, Optional

from chargepoint import sessions
from chargepoint.operations import authorize
from chargepoint.operations.registry import handles

if TYPE_CHECKING:
    from chargepoint.connector import Connector
    from chargepoint.station import Station

log = logging.getLogger("chargepoint.remote")

#: Smart charging registers here: hook(station, connector_id, id_tag, profile) -> bool
#: (False rejects the request). Without a hook a TxProfile is accepted and not applied.
REMOTE_START_PROFILE_HOOKS: list[Callable[["Station", int, str, dict], bool]] = []


def _known_parent(st: "Station", id_tag: str) -> tuple[bool, Optional[str]]:
    """(known, parentIdTag) of `id_tag` from a valid local entry (list, then cache)."""
    local = authorize.local_entry(st, id_tag)
    if local is None or not authorize.is_valid(st, local[0]):
        return False, None
    return True, local[0].get("parentIdTag")


def _pick_connector(st: "Station", wanted: Optional[int], id_tag: str, known: bool,
                    parent: Optional[str]) -> tuple[Optional["Connector"], bool]:
    """(The connector a remote start goes to, whether the id's parent must be learnt first
    to be admitted there); (None, False) when it must be rejected."""
    if wanted is not None and (wanted == 0 or wanted not in st.connectors):
        return None, False
    candidates = [c for c in st.connectors.values() if wanted is None or c.id == wanted]
    free = [c for c in candidates if sessions.is_free(st, c, id_tag, parent)]
    asking = [] if free or known else [
        c for c in candidates if sessions.is_free(st, c, check_reservations=False)
        and st.reservations.may_admit(c, id_tag)]
    for group in (free, asking):
        plugged = [c for c in group if c.pilot.vehicle_connected]
        if group:
            return (plugged or group)[0], group is asking
    return None, False


@handles("RemoteStartTransaction")
def remote_start(st: "Station", payload: dict) -> dict:
    id_tag = payload["idTag"]
    known, parent = _known_parent(st, id_tag)
    conn, ask_parent = _pick_connector(st, payload.get("connectorId"), id_tag, known, parent)
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
    authorize_first = st.keys.bool("AuthorizeRemoteTxRequests")

    def decided(decision: authorize.Decision) -> None:
        if ask_parent and not authorize_first:      # asked only for its group
            decision = _remote_decision(decision.parent_id_tag)
        if not decision.accepted:
            log.info("remote start for %s not authorized (%s)", id_tag,
                     decision.info.get("status"))
            return
        if ask_parent and st.reservations.blocks(conn, id_tag, decision.parent_id_tag):
            log.info("remote start for %s: its parentIdTag %s is not the one connector %d "
                     "is reserved for; nothing starts", id_tag, decision.parent_id_tag,
                     connector_id)
            return
        sessions.offer(st, id_tag, decision, connector_id=connector_id)

    if authorize_first or ask_parent:
        authorize.authorize(st, id_tag, decided)
    else:
        decided(_remote_decision(parent))
    log.info("RemoteStartTransaction for %s on connector %d accepted%s", id_tag, connector_id,
             "; its parentIdTag decides whether the reservation admits it" if ask_parent
             else "")
    return {"status": "Accepted"}


def _remote_decision(parent: Optional[str]) -> authorize.Decision:
    """The CSMS asked for the start itself: accepted, with the id's group when known."""
    return authorize.Decision(True, {"status": "Accepted",
                                     **({"parentIdTag": parent} if parent else {})}, "remote")


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
