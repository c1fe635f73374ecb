"""BootNotification and Heartbeat: getting registered, and staying visibly alive.

Nothing but BootNotification leaves the charger until the CSMS answers Accepted
(OCPP 1.6 section 4.2). Pending and Rejected are retried after the `interval`
the CSMS gave; a lost or refused BootNotification after a short back-off.
"""
from __future__ import annotations

import logging
from typing import Iterable, Protocol

from chargepoint.model.clock import StationClock
from chargepoint.model.link import CONNECTION, Link
from chargepoint.model.status_reports import StatusReports
from chargepoint.model.timekeeping import TimeKeeping
from chargepoint.ocpp_keys import OcppKeys
from chargepoint.timers import Timers

log = logging.getLogger("chargepoint.boot")

class Online(Protocol):
    """Told when the charger is registered and connected: what waited for the CSMS goes
    (firmware and diagnostics notifications, a new release's self-test)."""

    def online(self) -> None: ...


#: Retry delay when the CSMS gives interval 0 or the BootNotification got no answer.
DEFAULT_RETRY_S = 30


class Boot:
    """Registration with the CSMS, and the heartbeat once registered. Loop thread only."""

    def __init__(self, link: Link, keys: OcppKeys, clock: StationClock, timers: Timers,
                 payload: dict, status_reports: StatusReports, timekeeping: TimeKeeping,
                 waiting: Iterable[Online] = ()):
        self._link = link
        self._keys = keys
        self._clock = clock
        self._timers = timers
        self.payload = payload
        self._status_reports = status_reports
        self._timekeeping = timekeeping
        self._waiting = tuple(waiting)

    def connected(self) -> None:
        """The link is up: an accepted charger reports every connector; one not yet
        accepted sends its BootNotification (unless a retry is already planned)."""
        if self._link.accepted:
            self._status_reports.report_all()
            self._online()
        elif self._timers.when("boot-retry") is None:     # the queue is empty: just connected
            self.send_boot()

    def send_boot(self, lane: int = CONNECTION) -> bool:
        """Queue the BootNotification; it opens the connection, before anything else,
        unless the CSMS triggered it (then it takes its turn like any other CALL)."""
        self._timers.cancel("boot-retry")
        return self._link.send_call("BootNotification", self.payload,
                                    on_result=self._on_result, on_error=self._on_error,
                                    before_accept=True, lane=lane)

    def _retry_at(self, delay: float) -> None:
        self._timers.set("boot-retry", self._clock.now + delay, self._retry)

    def _retry(self) -> None:
        if self._link.connected:
            self.send_boot()

    def _on_error(self, reason: str) -> None:
        if reason != "offline":
            log.warning("BootNotification failed (%s); retrying in %d s", reason,
                        DEFAULT_RETRY_S)
            self._retry_at(DEFAULT_RETRY_S)

    def _on_result(self, payload: dict) -> None:
        status = payload["status"]
        interval = int(payload["interval"])
        self._timekeeping.set_csms_time(payload["currentTime"])
        link = self._link
        previous, link.registration = link.registration, status
        if status == "Accepted":
            log.info("BootNotification accepted; heartbeat every %d s", interval or
                     self._keys.int("HeartbeatInterval"))
            if interval > 0 and str(interval) != self._keys.raw("HeartbeatInterval"):
                self._keys.change("HeartbeatInterval", str(interval))
            self.schedule_heartbeat()
            if previous != "Accepted":
                self._status_reports.report_all()
                self._online()
        else:
            delay = interval if interval > 0 else DEFAULT_RETRY_S
            log.warning("BootNotification %s; trying again in %d s", status, delay)
            self._retry_at(delay)

    def _online(self) -> None:
        for service in self._waiting:
            service.online()

    def schedule_heartbeat(self) -> None:
        interval = self._keys.int("HeartbeatInterval")
        self._timers.set("heartbeat", self._clock.now + interval, self.send_heartbeat)

    def heartbeat_interval_changed(self) -> None:
        if self._link.accepted:
            self.schedule_heartbeat()

    def send_heartbeat(self, before_accept: bool = False) -> bool:
        """Send a Heartbeat now (merged into one still waiting); the next one follows an
        interval later."""
        queued = self._link.send_call(
            "Heartbeat", {}, on_result=lambda p: self._timekeeping.set_csms_time(
                p["currentTime"]), before_accept=before_accept)
        if self._link.accepted:
            self.schedule_heartbeat()
        return queued
