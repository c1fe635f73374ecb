"""Fresh meter readings on demand: ask the hardware once, answer everyone who waits.

A start, a stop and every sample want a reading taken *now*, not the last one polled.
`read(conn, then)` emits one ReadMeter for however many wait; the reading comes back
as a MeterSampled event (`answer`), or None once READ_TIMEOUT_S has passed or the
meter is known to have failed.
"""
from __future__ import annotations

import logging
from typing import Callable, Optional

from chargepoint import actions as act
from chargepoint.model.clock import StationClock
from chargepoint.model.connector import Connector
from chargepoint.timers import Timers
from hal import events as hal_events
from hal.interfaces import MeterReading

log = logging.getLogger("chargepoint.connector")

#: How long a requested meter reading may take before the meter counts as failed.
READ_TIMEOUT_S = 10.0

Then = Callable[[Optional[MeterReading]], None]


class MeterReads:
    """Who waits for which connector's reading. Loop thread only."""

    def __init__(self, effects: act.Effects, timers: Timers, clock: StationClock):
        self._effects = effects
        self._timers = timers
        self._clock = clock
        self._waiting: dict[int, list[Then]] = {}

    def read(self, conn: Connector, then: Then) -> None:
        """Call `then(reading)` with a reading taken now (None if the meter failed)."""
        if conn.id == 0 or hal_events.FaultCode.POWER_METER_FAILURE in conn.faults:
            then(None)                  # a meter known to be silent: nothing to wait for
            return
        waiters = self._waiting.setdefault(conn.id, [])
        waiters.append(then)
        if len(waiters) == 1:
            self._effects.emit(act.ReadMeter(conn.id))
            self._timers.set(f"meter-read:{conn.id}", self._clock.now + READ_TIMEOUT_S,
                             lambda: self.answer(conn, None))

    def pending(self) -> bool:
        """Some reading is awaited."""
        return any(self._waiting.values())

    def answer(self, conn: Connector, reading: Optional[MeterReading]) -> None:
        """Hand a reading (None: the meter failed) to everyone waiting for one."""
        waiters = self._waiting.pop(conn.id, [])
        self._timers.cancel(f"meter-read:{conn.id}")
        if reading is None and waiters:
            log.warning("connector %d: no meter reading", conn.id)
        for then in waiters:
            then(reading)
