"""Debouncing by hold time, fed samples and the time they were taken.

Ours rather than gpiozero's `bounce_time` because the mock pin factory ignores
that, and because the pilot needs asymmetric holds (IEC 61851-1 designs accept
a new state after ~250 ms but a return to state A after ~25 ms). Pure: no
threads, no clock of its own, so it is testable sample by sample.
"""
from __future__ import annotations

from typing import Any, Generic, Hashable, Mapping, Optional, TypeVar

T = TypeVar("T", bound=Hashable)

_UNSET: Any = object()

_EPSILON = 1e-9
"""Clock readings are floats: a value held for 0.25 s as 100.1 - 99.85 must count."""


class Debouncer(Generic[T]):
    """Reports a new stable value once a different value has held long enough.

    `hold_s` is the default hold time; `hold_to` overrides it per target value
    (e.g. `{PilotState.A: 0.025}`) and `hold_from` caps it when leaving a
    stable value (leaving a power state must be quick); the shorter applies.
    A sample equal to the stable value cancels a pending change; a sample of
    yet another value restarts the hold. Without `initial` the first sample is
    adopted at once: at start there is no earlier state to protect.
    """

    def __init__(self, hold_s: float, hold_to: Optional[Mapping[T, float]] = None,
                 initial: T = _UNSET, hold_from: Optional[Mapping[T, float]] = None):
        holds = [hold_s, *(hold_to or {}).values(), *(hold_from or {}).values()]
        if any(h < 0 for h in holds):
            raise ValueError("hold times must not be negative")
        self._hold_s = hold_s
        self._hold_to = dict(hold_to or {})
        self._hold_from = dict(hold_from or {})
        self._stable: T = initial
        self._candidate: T = _UNSET
        self._since = 0.0

    @property
    def has_value(self) -> bool:
        return self._stable is not _UNSET

    @property
    def value(self) -> T:
        """The stable value; LookupError before the first sample when no initial was given."""
        if self._stable is _UNSET:
            raise LookupError("no stable value yet")
        return self._stable

    def hold_for(self, value: T) -> float:
        """How long `value` must hold to replace the present stable value."""
        hold = self._hold_to.get(value, self._hold_s)
        if self._stable is not _UNSET and self._stable in self._hold_from:
            hold = min(hold, self._hold_from[self._stable])
        return hold

    def update(self, value: T, now: float) -> Optional[T]:
        """Feed one sample taken at `now`; returns the new stable value when it
        changed with this sample, else None. (Use `changed()` when None itself
        is a value being debounced.)"""
        return self._stable if self.changed(value, now) else None

    def changed(self, value: T, now: float) -> bool:
        """Feed one sample; True when the stable value changed with it."""
        if self._stable is _UNSET:
            self._stable = value
            self._candidate = _UNSET
            return True
        if value == self._stable:
            self._candidate = _UNSET
            return False
        if self._candidate is _UNSET or value != self._candidate:
            self._candidate = value
            self._since = now
        if now - self._since + _EPSILON >= self.hold_for(value):
            self._stable = value
            self._candidate = _UNSET
            return True
        return False

    def reset(self, value: T = _UNSET) -> None:
        """Forget any pending change; set the stable value (or none) directly."""
        self._stable = value
        self._candidate = _UNSET
