"""Clocks for the station loop: the system's, or a virtual one tests advance.

Each gives two readings. `now()` is the local clock: monotonic seconds, started at
the wall clock's reading, for deadlines and durations (it never jumps). `wall()` is
the system clock as it is set, which the station only uses to learn the time of day
(chargepoint/model/clock.py).
"""
from __future__ import annotations

import queue
import threading
import time
from datetime import datetime, timezone
from typing import Optional

#: Before this instant the system clock is not trusted (a Pi without RTC boots in 1970).
VALID_TIME_FLOOR = 1577836800.0  # 2020-01-01T00:00:00Z


def parse_utc(text: str) -> float:
    """An OCPP dateTime as UTC seconds (no zone given means UTC); ValueError if unreadable."""
    moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return moment.timestamp()


def try_parse_utc(text: Optional[str]) -> Optional[float]:
    """`parse_utc`, or None for a missing or unreadable value."""
    try:
        return parse_utc(text) if text else None
    except ValueError:
        return None


class SystemClock:
    """The controller's clocks. Used in production."""

    def __init__(self) -> None:
        self._base = time.time() - time.monotonic()
        #: Added to the system clock's reading: lets the simulated charger step its
        #: "system clock" (`chargepoint sim clock-step`) without root or the real clock.
        self.wall_step = 0.0

    def now(self) -> float:
        """Monotonic seconds, equal to the wall clock at start."""
        return time.monotonic() + self._base

    def wall(self) -> float:
        """Seconds since the epoch (UTC) as the system clock says: it may be stepped."""
        return time.time() + self.wall_step

    def step_wall(self, seconds: float) -> None:
        self.wall_step += seconds

    def wait(self, events: "queue.SimpleQueue", timeout: float):
        """Next event, or None after `timeout` seconds."""
        try:
            return events.get(timeout=max(0.0, timeout))
        except queue.Empty:
            return None


class VirtualClock:
    """Time that moves only when a test calls `advance`; waits never sleep long.

    The loop still reacts to real events (frames from a real socket) at once.
    """

    def __init__(self, start: float = 1_767_225_600.0):  # 2026-01-01T00:00:00Z
        self._now = start
        self._wall_step = 0.0
        self._lock = threading.Lock()

    def now(self) -> float:
        with self._lock:
            return self._now

    def wall(self) -> float:
        """The system clock: the local clock plus every step made by `step_wall`."""
        with self._lock:
            return self._now + self._wall_step

    def step_wall(self, seconds: float) -> None:
        """Step the system clock (NTP, an operator) while monotonic time goes on."""
        with self._lock:
            self._wall_step += seconds

    def advance(self, seconds: float) -> None:
        with self._lock:
            self._now += seconds

    def set(self, t: float) -> None:
        with self._lock:
            self._now = t

    def wait(self, events: "queue.SimpleQueue", timeout: float):
        try:
            return events.get(timeout=min(max(0.0, timeout), 0.02))
        except queue.Empty:
            return None
