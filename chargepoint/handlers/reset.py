"""Reset: Soft restarts the firmware process, Hard reboots the controller.

Running transactions are stopped first with reason SoftReset / HardReset and their
StopTransaction committed to disk (TC_013-016); the charger then waits a moment
for the queue to reach the CSMS (it is durable either way) before asking the
runtime to restart (chargepoint/commands/run.py: `os.execv` of itself for Soft, the
configured `[system] reboot_command` for Hard, retried `ResetRetries` times). After
either, the charger boots afresh and sends BootNotification.
"""
from __future__ import annotations

import logging

from chargepoint import actions as act
from chargepoint.model.services import Services

log = logging.getLogger("chargepoint.reset")

#: How long a reset waits for queued transaction messages to be confirmed.
DRAIN_WAIT_S = 10.0
_POLL_S = 0.5


def reset(services: Services, payload: dict) -> dict:
    kind = payload["type"]
    log.warning("%s reset requested by the CSMS", kind)
    # Queued ahead of the StopTransactions, so it reaches the CSMS before the reset.
    services.security_events.record("ResetOrReboot", f"{kind} reset requested by the CSMS")
    services.sessions.stop_all("HardReset" if kind == "Hard" else "SoftReset")
    _wait(services, kind.lower(), services.clock.now + DRAIN_WAIT_S)
    return {"status": "Accepted"}


def _settled(services: Services) -> bool:
    stopping = any(c.tx is not None for c in services.connectors.values())
    draining = services.link.online and len(services.outbox) > 0
    busy = (services.link.busy() or services.locks.pending()
            or services.meter_reads.pending())
    return not stopping and not draining and not busy


def _wait(services: Services, kind: str, deadline: float) -> None:
    now = services.clock.now
    if _settled(services) or now >= deadline:
        services.outbox.flush()
        log.warning("resetting now (%s)", kind)
        services.effects.emit(act.Restart(kind))
        return
    services.timers.set("reset", min(now + _POLL_S, deadline),
                        lambda: _wait(services, kind, deadline))
