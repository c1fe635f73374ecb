"""BootNotification and Heartbeat: getting registered, and staying visibly alive.

Nothing but BootNotification leaves the charger until the CSMS answers Accepted
(OCPP 1.6 section 4.2). Pending and Rejected are retried after the `interval`
the CSMS gave; a lost or refused BootNotification after a short back-off.
"""
from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from chargepoint.calls import CONNECTION

if TYPE_CHECKING:
    from chargepoint.station import Station

log = logging.getLogger("chargepoint.boot")

#: Retry delay when the CSMS gives interval 0 or the BootNotification got no answer.
DEFAULT_RETRY_S = 30


def on_start(st: "Station") -> None:
    """Nothing to send until the link is up; `on_connected` sends the boot."""


def on_connected(st: "Station") -> None:
    if st.timers.when("boot-retry") is None and "BootNotification" not in st.queued_actions():
        send_boot(st)


def send_boot(st: "Station", lane: int = CONNECTION) -> bool:
    """Queue the BootNotification; it opens the connection, before anything else, unless
    the CSMS triggered it (then it takes its turn like any other CALL)."""
    st.timers.cancel("boot-retry")
    return st.send_call("BootNotification", st.config.boot_payload,
                        on_result=lambda p: _on_boot_result(st, p),
                        on_error=lambda reason: _on_boot_error(st, reason),
                        before_accept=True, lane=lane)


def _retry_at(st: "Station", delay: float) -> None:
    st.timers.set("boot-retry", st.now + delay, lambda: _retry(st))


def _retry(st: "Station") -> None:
    if st.connected:
        send_boot(st)


def _on_boot_error(st: "Station", reason: str) -> None:
    if reason != "offline":
        log.warning("BootNotification failed (%s); retrying in %d s", reason, DEFAULT_RETRY_S)
        _retry_at(st, DEFAULT_RETRY_S)


def _on_boot_result(st: "Station", payload: dict) -> None:
    status = payload["status"]
    interval = int(payload["interval"])
    st.set_csms_time(payload["currentTime"])
    previous, st.registration = st.registration, status
    if status == "Accepted":
        log.info("BootNotification accepted; heartbeat every %d s", interval or
                 st.keys.int("HeartbeatInterval"))
        if interval > 0 and str(interval) != st.keys.raw("HeartbeatInterval"):
            st.keys.change("HeartbeatInterval", str(interval))
        schedule_heartbeat(st)
        if previous != "Accepted":
            from chargepoint.operations import status as status_ops

            status_ops.report_all(st)
        st.on_accepted()
    else:
        delay = interval if interval > 0 else DEFAULT_RETRY_S
        log.warning("BootNotification %s; trying again in %d s", status, delay)
        _retry_at(st, delay)
    st.emit_status()


def schedule_heartbeat(st: "Station") -> None:
    interval = st.keys.int("HeartbeatInterval")
    st.timers.set("heartbeat", st.now + interval, lambda: send_heartbeat(st))


def send_heartbeat(st: "Station", before_accept: bool = False) -> bool:
    """Send a Heartbeat now (merged into one still waiting); the next one follows an
    interval later."""
    queued = st.send_call("Heartbeat", {},
                          on_result=lambda p: st.set_csms_time(p["currentTime"]),
                          before_accept=before_accept)
    if st.accepted:
        schedule_heartbeat(st)
    return queued
