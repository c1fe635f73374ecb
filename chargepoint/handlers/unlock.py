"""UnlockConnector: release a stuck plug from afar (TC_017, 018, 030, 031).

A connector without a lock (a fixed cable, or none fitted) answers NotSupported, as
does an unknown one. A running transaction is stopped first (reason UnlockCommand),
then the lock is driven; the answer waits for the hardware: Unlocked, or
UnlockFailed when the lock does not confirm.
"""
from __future__ import annotations

import logging

from chargepoint.handlers.deferred import Deferred
from chargepoint.model.services import Services

log = logging.getLogger("chargepoint.unlock")


def unlock_connector(services: Services, payload: dict):
    cid = payload["connectorId"]
    conn = services.connectors.get(cid)
    if cid == 0 or conn is None:
        log.warning("UnlockConnector for unknown connector %s", cid)
        return {"status": "NotSupported"}
    if conn.info.fixed_cable or not conn.info.has_lock:
        return {"status": "NotSupported"}
    answer = Deferred()

    def unlocked(ok: bool) -> None:
        log.info("connector %d %s on the CSMS's request", cid,
                 "unlocked" if ok else "did not unlock")
        answer.resolve({"status": "Unlocked" if ok else "UnlockFailed"})

    if conn.tx is not None:
        services.sessions.stop(conn, "UnlockCommand")
        # The sessions release the lock when the StopTransaction is written; wait for it.
        services.locks.wait(cid, unlocked)
    else:
        services.locks.set(cid, False, unlocked)
    return answer
