"""FirmwareStatusNotification, SignedFirmwareStatusNotification,
DiagnosticsStatusNotification and LogStatusNotification: one status at a time, told again
once the CSMS can hear it.

The CSMS learns how an update or an upload ends only from these notifications, so one
that could not go is not dropped as a heartbeat would be: the latest status waits and goes
when the charger is next online (`online()`), or RETRY_S later when the CSMS did not
answer it or answered with a CALLERROR. Intermediate statuses a later one replaced are not
repeated. A status may carry fields of its request (LogStatusNotification's requestId):
the same status of another request is another notification.
"""
from __future__ import annotations

import logging
from typing import Callable, Optional

from chargepoint.model.clock import StationClock
from chargepoint.model.link import Link
from chargepoint.timers import Timers

log = logging.getLogger("chargepoint.notices")

#: A notification the CSMS did not answer is sent again after this long.
RETRY_S = 60.0


class StatusNotices:
    """The notifications of one kind (`action`); loop thread only."""

    def __init__(self, link: Link, clock: StationClock, timers: Timers, action: str):
        self._link = link
        self._clock = clock
        self._timers = timers
        self.action = action
        #: The status that still has to reach the CSMS, if any.
        self.waiting: Optional[str] = None
        #: What goes with it in the payload (the requestId of a signed update or a GetLog).
        self.details: dict = {}
        self._sending: Optional[tuple] = None
        self._on_delivered: Optional[Callable[[str], None]] = None

    def on_delivered(self, callback: Callable[[str], None]) -> None:
        """`callback(status)` once the CSMS has answered the notification of `status`."""
        self._on_delivered = callback

    def tell(self, status: str, details: Optional[dict] = None) -> None:
        """Tell the CSMS `status` (with `details` in the payload) now, or as soon as it is
        online."""
        self.waiting = status
        self.details = dict(details or {})
        self._send()

    def online(self) -> None:
        """The charger is registered and connected: what waits goes now."""
        self._send()

    def _send(self) -> None:
        status = self.waiting
        details = dict(self.details)
        told = (status, sorted(details.items()))
        if status is None or self._sending == told or not self._link.online:
            return
        self._sending = told

        def delivered(payload: dict) -> None:
            self._sending = None
            if (self.waiting, sorted(self.details.items())) == told:
                self.waiting = None
                self.details = {}
            if self._on_delivered is not None:
                self._on_delivered(status)
            self._send()                    # a newer status came meanwhile

        def failed(reason: str) -> None:
            self._sending = None
            if reason == "offline":
                log.info("%s %s not delivered (offline); told again once online", self.action,
                         status)
                return
            log.warning("%s %s not delivered (%s); told again in %g s", self.action, status,
                        reason, RETRY_S)
            self._timers.set(f"notice:{self.action}", self._clock.now + RETRY_S, self._send)

        if not self._link.send_call(self.action, {"status": status, **details},
                                    on_result=delivered, on_error=failed):
            self._sending = None
