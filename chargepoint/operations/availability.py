"""ChangeAvailability: take a connector, or the whole charger (0), in or out of service.

The change is stored at once and survives restarts and power cuts (TC_034). While a
transaction runs on an affected connector the answer is Scheduled: the change is
stored as pending and applied when the transaction ends (or, after a power cut,
at the next start once the open transaction has been closed).
"""
from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from chargepoint.operations.registry import handles

if TYPE_CHECKING:
    from chargepoint.connector import Connector
    from chargepoint.station import Station

log = logging.getLogger("chargepoint.availability")


def _scheduled_key(cid: int) -> str:
    return f"availability-scheduled:{cid}"


def _busy(st: "Station", cid: int) -> bool:
    ids = [c for c in st.connectors if c != 0] if cid == 0 else [cid]
    return any(st.connectors[i].tx is not None or st.connectors[i].starting for i in ids)


def charger_going_out(st: "Station") -> bool:
    """Connector 0 is scheduled Inoperative: idle connectors take no new session meanwhile,
    or overlapping sessions could keep the charger in service for ever."""
    return getattr(st, "charger_going_out", False)


def _remember(st: "Station") -> None:
    st.charger_going_out = st.store.get_state(_scheduled_key(0)) == "Inoperative"


def _apply(st: "Station", cid: int, operative: bool) -> None:
    conn = st.connectors[cid]
    was_going_out = cid == 0 and charger_going_out(st)
    st.store.delete_state(_scheduled_key(cid))
    _remember(st)
    if was_going_out:
        _notify_connectors(st)
    if conn.operative != operative:
        conn.set_operative(operative)
        log.info("connector %d is now %s", cid, "Operative" if operative else "Inoperative")
        if cid == 0:
            for other in st.connectors.values():
                if other.id != 0:
                    other.changed()


@handles("ChangeAvailability")
def change_availability(st: "Station", payload: dict) -> dict:
    cid, kind = payload["connectorId"], payload["type"]
    if cid not in st.connectors:
        return {"status": "Rejected"}
    operative = kind == "Operative"
    # Already so (OCPP 1.6 section 5.2): Accepted even while charging; _apply also
    # withdraws a change still scheduled.
    if _busy(st, cid) and st.connectors[cid].operative != operative:
        st.store.set_state(_scheduled_key(cid), kind)
        _remember(st)
        log.info("connector %d becomes %s when its transaction ends", cid, kind)
        if cid == 0:
            _notify_connectors(st)
        return {"status": "Scheduled"}
    _apply(st, cid, operative)
    return {"status": "Accepted"}


def _notify_connectors(st: "Station") -> None:
    for other in st.connectors.values():
        if other.id != 0:
            other.changed()


def apply_scheduled(st: "Station", conn: "Connector" = None) -> None:
    """Apply the changes that waited for transactions to end."""
    for cid in sorted(st.connectors):
        kind = st.store.get_state(_scheduled_key(cid))
        if kind is not None and not _busy(st, cid):
            _apply(st, cid, kind == "Operative")


def install(st: "Station") -> None:
    _remember(st)
    st.sessions.on_transaction_ended.append(lambda conn: apply_scheduled(st, conn))
    apply_scheduled(st)
