"""Reads every connector's meter at a steady pace and posts the results as events.

A meter that cannot be read becomes one `HardwareFault(PowerMeterFailure, active=True)`
when it starts failing and one `active=False` when it answers again, so the charging
logic sees transitions, not a stream of errors. Nothing a backend raises stops the poller.
"""
from __future__ import annotations

import logging
import threading
from typing import Mapping, Optional

from hal.events import FaultCode, HardwareFault, MeterSampled
from hal.interfaces import Clock, EnergyMeter, Emit, MeterUnavailable, monotonic_clock

log = logging.getLogger(__name__)

#: StatusNotification.info is CiString50.
INFO_MAX = 50


def _short(text: str) -> str:
    return text if len(text) <= INFO_MAX else text[:INFO_MAX - 3] + "..."


class MeterPoller:
    """Polls `meters` (connector id -> meter) every `interval_s` on a daemon thread."""

    def __init__(self, meters: Mapping[int, EnergyMeter], emit: Emit, interval_s: float = 1.0,
                 clock: Optional[Clock] = None):
        if interval_s <= 0:
            raise ValueError(f"interval_s must be positive, got {interval_s}")
        self.meters = dict(meters)
        self.emit = emit
        self.interval_s = interval_s
        self.clock = clock or monotonic_clock
        self._failing: set[int] = set()
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._thread: Optional[threading.Thread] = None

    def poll_once(self) -> None:
        """Read every meter once and emit what happened."""
        for connector_id, meter in self.meters.items():
            try:
                reading = meter.read()
            except MeterUnavailable as exc:
                self._failed(connector_id, str(exc))
                continue
            except Exception as exc:  # noqa: BLE001 - a backend bug must not stop metering
                log.exception("meter of connector %d raised unexpectedly", connector_id)
                self._failed(connector_id, f"{type(exc).__name__}: {exc}")
                continue
            if connector_id in self._failing:
                self._failing.discard(connector_id)
                log.info("meter of connector %d answers again", connector_id)
                self._post(HardwareFault(connector_id, FaultCode.POWER_METER_FAILURE,
                                         active=False))
            self._post(MeterSampled(connector_id, reading))

    def _failed(self, connector_id: int, reason: str) -> None:
        if connector_id in self._failing:
            log.debug("meter of connector %d still unavailable: %s", connector_id, reason)
            return
        self._failing.add(connector_id)
        log.warning("meter of connector %d unavailable: %s", connector_id, reason)
        self._post(HardwareFault(connector_id, FaultCode.POWER_METER_FAILURE, active=True,
                                 info=_short(reason)))

    def _post(self, event: object) -> None:
        try:
            self.emit(event)
        except Exception:  # noqa: BLE001 - keep polling; the consumer's problem is logged
            log.exception("could not post %r", event)

    def start(self) -> None:
        if self._thread is not None:
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="meter-poller", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        next_due = self.clock()
        while not self._stop.is_set():
            try:
                self.poll_once()
            except Exception:  # noqa: BLE001 - belt and braces: the thread must not die
                log.exception("meter poll failed")
            # A steady cadence: reads that overran skip the missed slots rather than
            # polling back to back; a clock that went backwards waits one interval.
            next_due += self.interval_s
            now = self.clock()
            if next_due <= now:
                next_due += (int((now - next_due) // self.interval_s) + 1) * self.interval_s
            elif next_due - now > self.interval_s:
                next_due = now + self.interval_s
            if self._wake.wait(next_due - now):
                self._wake.clear()
                next_due = self.clock() - self.interval_s   # polled on request: restart pace

    def request(self) -> None:
        """Poll now (the charging logic needs a fresh reading), not at the next tick."""
        self._wake.set()

    def close(self) -> None:
        """Stop the thread (promptly: it waits on an Event, not in a sleep)."""
        self._stop.set()
        self._wake.set()
        thread, self._thread = self._thread, None
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout=5)
