"""The charger's two clocks, and the one place where CSMS time and local time meet.

Deadlines, timers and durations run on the *local* clock: monotonic seconds that the
runtime starts at the wall clock's reading, so they never jump when the system clock is
stepped (NTP, an operator, a flat RTC battery). OCPP timestamps need the real time of
day: that is the local clock plus an *offset*, taken from the CSMS's `currentTime`
when it has told us, otherwise from the system clock while that looks set.

A transaction keeps the offset it started with (its *anchor*, the real time of its
start): every later timestamp of the transaction is the anchor plus the local time
elapsed. A step of either clock during a session therefore never dates a message
before its transaction's start and never changes a transaction's duration.
"""
from __future__ import annotations

import logging
from datetime import datetime, timezone
from typing import Optional

from chargepoint.clock import VALID_TIME_FLOOR, parse_utc

log = logging.getLogger("chargepoint.clock")

#: No CSMS time before this instant is believed: no release of this firmware is older.
EARLIEST_CSMS_TIME = 1767225600.0        # 2026-01-01T00:00:00Z
#: Nor after this one (9999-12-31 made every new transaction fail to format its time).
LATEST_CSMS_TIME = 4102444800.0          # 2100-01-01T00:00:00Z
#: A system clock moving this much against the monotonic clock has been stepped.
STEP_TOLERANCE_S = 1.0
#: Real time moving this much re-arms what is scheduled by real time.
RESCHEDULE_S = 0.5
#: A CSMS correction larger than this is logged at warning level.
LARGE_CORRECTION_S = 60.0


def iso(utc: float) -> str:
    """OCPP's dateTime for UTC seconds, to the millisecond."""
    return datetime.fromtimestamp(utc, timezone.utc).isoformat(timespec="milliseconds") \
        .replace("+00:00", "Z")


class StationClock:
    """Local time (monotonic, for deadlines) and the offset to real time (for OCPP).

    `observe(local, wall)` is called once per loop turn with both readings; the rest
    converts. Not thread-safe: the station loop owns it.
    """

    def __init__(self, local: float, wall: Optional[float] = None):
        self.local = local
        #: wall − local, as last observed (the system clock's view of real time).
        self.system_offset = 0.0 if wall is None else wall - local
        #: CSMS time − local, once the CSMS has told the time.
        self.csms_offset: Optional[float] = None

    # -- readings
    @property
    def now(self) -> float:
        """Local time of the present loop turn."""
        return self.local

    @property
    def system_valid(self) -> bool:
        """The system clock looks set (not a controller without RTC booting in 1970)."""
        return self.local + self.system_offset >= VALID_TIME_FLOOR

    @property
    def offset(self) -> Optional[float]:
        """Real time − local time, or None while nothing trustworthy says what time it is."""
        if self.csms_offset is not None:
            return self.csms_offset
        return self.system_offset if self.system_valid else None

    @property
    def known(self) -> bool:
        return self.offset is not None

    def station_time(self) -> float:
        """Real time now, as well as it is known."""
        return self.utc(self.local)

    def best_offset(self) -> float:
        """The offset, or the system clock's view when nothing better is known."""
        offset = self.offset
        return self.system_offset if offset is None else offset

    def utc(self, local: Optional[float] = None) -> float:
        """Real time at local instant `local` (default now), as well as it is known."""
        return (self.local if local is None else local) + self.best_offset()

    def to_local(self, utc: float) -> float:
        """The local instant at which real time reaches `utc` (for timers)."""
        return utc - self.best_offset()

    def timestamp(self, local: Optional[float] = None) -> Optional[str]:
        """OCPP dateTime for local instant `local` (default now); None while unknown."""
        if not self.known:
            return None
        return iso(self.utc(local))

    # -- transactions
    def anchor_for(self, started: float) -> Optional[float]:
        """The real time of a transaction that started at local `started`, to anchor it."""
        return self.utc(started) if self.known else None

    @staticmethod
    def on_anchor(anchor: float, started: float, local: float) -> float:
        """Real time of local instant `local` in a transaction anchored at `anchor`;
        never before its start."""
        return anchor + max(0.0, local - started)

    # -- changes
    def observe(self, local: float, wall: Optional[float] = None) -> bool:
        """A new loop turn. True when real time moved against local time, so what is
        scheduled by real time (clock-aligned values, reservations, profiles) is re-armed.

        A stepped system clock is logged. It moves OCPP time only while the CSMS has not
        told the time; timers never move (they run on the local clock)."""
        self.local = local
        if wall is None:
            return False
        seen = wall - local
        step = seen - self.system_offset
        if abs(step) < STEP_TOLERANCE_S:
            return False
        before = self.offset
        self.system_offset = seen
        after = self.offset
        follows = ("the CSMS's clock" if self.csms_offset is not None
                   else "the system clock" if after is not None else "nothing yet (unknown)")
        log.warning("system clock stepped %+.3f s; timers keep running on the monotonic "
                    "clock, OCPP timestamps follow %s", step, follows)
        if after is None:
            return False
        return before is None or abs(after - before) > RESCHEDULE_S

    def set_csms_time(self, text: str) -> bool:
        """Adopt the CSMS's `currentTime`; True when real time moved (as `observe`).
        A time outside [EARLIEST_CSMS_TIME, LATEST_CSMS_TIME) is refused with a warning
        and the old offset kept."""
        try:
            csms = parse_utc(text)
        except (ValueError, OverflowError):
            log.warning("CSMS sent an unreadable currentTime %r; clock unchanged", text)
            return False
        if not EARLIEST_CSMS_TIME <= csms < LATEST_CSMS_TIME:
            log.warning("CSMS sent currentTime %s, outside %s .. %s; not believed, clock "
                        "unchanged", text, iso(EARLIEST_CSMS_TIME), iso(LATEST_CSMS_TIME))
            return False
        before = self.offset
        self.csms_offset = csms - self.local
        if before is None:
            log.info("clock set by the CSMS: %s", iso(csms))
            return True
        moved = self.csms_offset - before
        if abs(moved) > LARGE_CORRECTION_S:
            log.warning("CSMS clock differs by %+.0f s from ours; adopted its time %s",
                        moved, iso(csms))
        return abs(moved) > RESCHEDULE_S
