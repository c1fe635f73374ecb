"""Named deadlines for the station core: the loop sleeps until the earliest one."""
from __future__ import annotations

from typing import Callable, Optional


class Timers:
    def __init__(self) -> None:
        self._due: dict[str, tuple[float, Callable[[], None]]] = {}

    def set(self, name: str, at: float, callback: Callable[[], None]) -> None:
        """(Re)arm `name` to call `callback` at time `at`."""
        self._due[name] = (at, callback)

    def cancel(self, name: str) -> None:
        self._due.pop(name, None)

    def when(self, name: str) -> Optional[float]:
        entry = self._due.get(name)
        return entry[0] if entry else None

    def next_deadline(self) -> Optional[float]:
        return min((at for at, _ in self._due.values()), default=None)

    def fire_due(self, now: float) -> int:
        """Run every callback due at `now`, earliest first; returns how many ran."""
        fired = 0
        while True:
            due = [(at, name) for name, (at, _) in self._due.items() if at <= now]
            if not due:
                return fired
            _, name = min(due)
            _, callback = self._due.pop(name)
            callback()
            fired += 1
