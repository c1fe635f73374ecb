"""Folds a reader's repeated sightings of a card into one presentation.

Readers report a card many times a second while it stays in the field; the charging
logic must see one TagPresented per deliberate presentation, so a card counts again
only after it has been absent for `removal_s`. Pure: the caller passes the time.
"""
from __future__ import annotations


class PresentationFilter:
    """Tracks each card separately, so two cards alternating in the field (which an
    anticollision reader may report in turn) do not retrigger each other."""

    def __init__(self, removal_s: float):
        if removal_s <= 0:
            raise ValueError("removal_s must be positive")
        self.removal_s = removal_s
        self._last_seen: dict[str, float] = {}

    def seen(self, id_tag: str, now: float) -> bool:
        """Record a sighting at `now`; True when it begins a new presentation."""
        self._forget_absent(now)
        new = id_tag not in self._last_seen
        self._last_seen[id_tag] = now
        return new

    def present(self, now: float) -> list[str]:
        """Cards still considered in the field at `now`."""
        self._forget_absent(now)
        return sorted(self._last_seen)

    def _forget_absent(self, now: float) -> None:
        for tag, last in list(self._last_seen.items()):
            if now - last >= self.removal_s:
                del self._last_seen[tag]
