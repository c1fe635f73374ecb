"""Reset: Soft restarts the firmware process, Hard reboots the controller.

Running transactions are stopped first with reason SoftReset / HardReset and their
StopTransaction committed to disk (TC_013-016); the charger then waits a moment
for the queue to reach the CSMS (it is durable either way) before asking the
runtime to restart (chargepoint/cli.py: `os.execv` of itself for Soft, the
configured `[system] reboot_command` for Hard, retried `ResetRetries` times). After
either, the charger boots afresh and sends BootNotification.
"""
from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from chargepoint import actions as act
from chargepoint import sessions
from chargepoint.operations.registry import handles

if TYPE_CHECKING:
    from chargepoint.station import Station

log = logging.getLogger("chargepoint.reset")

#: How long a reset waits for queued transaction messages to be confirmed.
DRAIN_WAIT_S = 10.0
_POLL_S = 0.5


@handles("Reset")
def reset(st: "Station", payload: dict) -> dict:
    kind = payload["type"]
    reason = "HardReset" if kind == "Hard" else "SoftReset"
    log.warning("%s reset requested by the CSMS", kind)
    for conn in st.connectors.values():
        if conn.tx is not None:
            sessions.stop(st, conn, reason)
    deadline = st.now + DRAIN_WAIT_S
    _wait(st, kind.lower(), deadline)
    return {"status": "Accepted"}


def _settled(st: "Station") -> bool:
    stopping = any(c.tx is not None for c in st.connectors.values())
    draining = st.connected and st.accepted and len(st.outbox) > 0
    return not stopping and not draining and not st.busy()


def _wait(st: "Station", kind: str, deadline: float) -> None:
    if _settled(st) or st.now >= deadline:
        st.outbox.flush()
        log.warning("resetting now (%s)", kind)
        st.emit(act.Restart(kind))
        return
    st.timers.set("reset", min(st.now + _POLL_S, deadline), lambda: _wait(st, kind, deadline))
