"""The loop's own account of how long it takes, on the monotonic clock.

A turn is the time from taking an event off the queue to having carried out the
actions it produced. The worst turn bounds how late the loop can be for anything;
the contactor-open latency is what safety needs: from a hardware event being put
on the queue (a `Stamped` event) to the `SetContactor(open)` it caused having been
carried out, queueing included. Both are kept as maxima, since a mean hides the
one slow turn that matters.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Callable, Optional


@dataclass(frozen=True)
class Stamped:
    """A hardware event and when it was put on the loop's queue (time.monotonic())."""

    event: Any
    queued_at: float


class TurnAccounting:
    """Counts turns and keeps the worst turn and the worst contactor-open latency.

    Written only by the loop thread; `snapshot` may be called from any thread."""

    def __init__(self, clock: Callable[[], float] = time.monotonic):
        self._clock = clock
        self.turns = 0
        self.worst_turn_s = 0.0
        self.contactor_opens = 0
        self.worst_open_s = 0.0
        self.last_open_s: Optional[float] = None
        self._began: Optional[float] = None
        self._queued_at: Optional[float] = None

    def unwrap(self, event: Any) -> Any:
        """Begin a turn for `event` (maybe `Stamped`); returns the event itself."""
        self._began = self._clock()
        self._queued_at = None
        if isinstance(event, Stamped):
            self._queued_at = event.queued_at
            return event.event
        return event

    def contactor_opened(self) -> None:
        """A SetContactor(open) was carried out in this turn."""
        if self._queued_at is None:
            return                  # not caused by a hardware event (a CSMS stop, a timer)
        latency = self._clock() - self._queued_at
        self.contactor_opens += 1
        self.last_open_s = latency
        self.worst_open_s = max(self.worst_open_s, latency)
        self._queued_at = None      # one hardware event, one latency

    def end(self) -> None:
        if self._began is None:
            return
        self.turns += 1
        self.worst_turn_s = max(self.worst_turn_s, self._clock() - self._began)
        self._began = self._queued_at = None

    def snapshot(self) -> dict:
        """The figures in milliseconds, as the simulator's `status` reports them."""
        last = self.last_open_s
        return {"turns": self.turns,
                "worst_turn_ms": round(self.worst_turn_s * 1000, 3),
                "contactor_opens": self.contactor_opens,
                "worst_contactor_open_ms": round(self.worst_open_s * 1000, 3),
                "last_contactor_open_ms": None if last is None else round(last * 1000, 3)}

    def describe(self) -> str:
        s = self.snapshot()
        return (f"{s['turns']} turns, worst {s['worst_turn_ms']:.1f} ms; contactor opened "
                f"{s['contactor_opens']} times after a hardware event, worst "
                f"{s['worst_contactor_open_ms']:.1f} ms from the event to the open contactor")
