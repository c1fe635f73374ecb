"""RemoteStartTransaction and RemoteStopTransaction: sessions started and ended from afar.

RemoteStartTransaction is answered at once (Accepted or Rejected by the connector's
state); the session then follows the local rules of chargepoint/model/sessions.py: with
`AuthorizeRemoteTxRequests` the id is authorized first (Authorize.req, or the local
list / cache under `LocalPreAuthorize`), the transaction starts when an EV is
plugged in, and an unplugged connector waits `ConnectionTimeOut` (TC_010, 011_1/2).
A `chargingProfile` must be a TxProfile; smart charging checks it now and binds it to
the transaction once it starts (chargepoint/model/smart_charging.py).

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
from typing import Optional

from chargepoint.model.authorization import Decision
from chargepoint.model.connector import Connector
from chargepoint.model.services import Services

log = logging.getLogger("chargepoint.remote")


def _pick_connector(services: Services, wanted: Optional[int], id_tag: str, known: bool,
                    parent: Optional[str]) -> tuple[Optional[Connector], bool]:
    """(The connector a remote start goes to, whether the id's parent must be learnt first
    to be admitted there); (None, False) when it must be rejected."""
    connectors, reservations = services.connectors, services.reservations
    if wanted is not None and (wanted == 0 or wanted not in connectors):
        return None, False
    candidates = [c for c in connectors.values() if wanted is None or c.id == wanted]
    free = [c for c in candidates if reservations.free_for(c, id_tag, parent)]
    asking = [] if free or known else [
        c for c in candidates if services.availability.idle(c)
        and reservations.may_admit(c, id_tag)]
    for group in (free, asking):
        plugged = [c for c in group if c.pilot.vehicle_connected]
        if group:
            return (plugged or group)[0], group is asking
    return None, False


def remote_start(services: Services, payload: dict) -> dict:
    id_tag = payload["idTag"]
    known, parent = services.authorization.known_parent(id_tag)
    conn, ask_parent = _pick_connector(services, payload.get("connectorId"), id_tag, known,
                                       parent)
    if conn is None:
        log.warning("RemoteStartTransaction for %s on connector %s rejected: not free",
                    id_tag, payload.get("connectorId", "(any)"))
        return {"status": "Rejected"}
    pending = services.plug_wait.pending
    if pending is not None and not conn.pilot.vehicle_connected:
        log.warning("RemoteStartTransaction rejected: idTag %s already waits for a plug",
                    pending.id_tag)
        return {"status": "Rejected"}
    profile = payload.get("chargingProfile")
    if profile is not None:
        if profile.get("chargingProfilePurpose") != "TxProfile":
            log.warning("RemoteStartTransaction rejected: its chargingProfile is a %s, "
                        "not a TxProfile", profile.get("chargingProfilePurpose"))
            return {"status": "Rejected"}
        if not services.smart.remote_start_profile(conn.id, id_tag, profile):
            return {"status": "Rejected"}
    connector_id = conn.id
    authorize_first = services.keys.bool("AuthorizeRemoteTxRequests")

    def decided(decision: Decision) -> None:
        if ask_parent and not authorize_first:      # asked only for its group
            decision = _remote_decision(decision.parent_id_tag)
        if not decision.accepted:
            log.info("remote start for %s not authorized (%s)", id_tag,
                     decision.info.get("status"))
            return
        if ask_parent and services.reservations.blocks(conn, id_tag, decision.parent_id_tag):
            log.info("remote start for %s: its parentIdTag %s is not the one connector %d "
                     "is reserved for; nothing starts", id_tag, decision.parent_id_tag,
                     connector_id)
            return
        services.sessions.offer(id_tag, decision, connector_id=connector_id)

    if authorize_first or ask_parent:
        services.authorization.authorize(id_tag, decided)
    else:
        decided(_remote_decision(parent))
    log.info("RemoteStartTransaction for %s on connector %d accepted%s", id_tag, connector_id,
             "; its parentIdTag decides whether the reservation admits it" if ask_parent
             else "")
    return {"status": "Accepted"}


def _remote_decision(parent: Optional[str]) -> Decision:
    """The CSMS asked for the start itself: accepted, with the id's group when known."""
    return Decision(True, {"status": "Accepted", **({"parentIdTag": parent} if parent else {})},
                    "remote")


def remote_stop(services: Services, payload: dict) -> dict:
    transaction_id = payload["transactionId"]
    if services.sessions.stop_by_transaction_id(transaction_id, "Remote"):
        log.info("RemoteStopTransaction: stopping transaction %d", transaction_id)
        return {"status": "Accepted"}
    log.warning("RemoteStopTransaction for unknown transaction %s rejected", transaction_id)
    return {"status": "Rejected"}
