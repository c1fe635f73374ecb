"""The connector locks: drive one, and hear when the hardware has answered."""
from __future__ import annotations

from typing import Callable, Optional

from chargepoint import actions as act

Then = Callable[[bool], None]


class Locks:
    """Who waits for which lock's answer. Loop thread only."""

    def __init__(self, effects: act.Effects):
        self._effects = effects
        self._waiting: dict[int, list[Then]] = {}

    def set(self, connector_id: int, locked: bool, then: Optional[Then] = None) -> None:
        """Lock or unlock; `then(ok)` runs when the hardware has answered."""
        if then is not None:
            self.wait(connector_id, then)
        self._effects.emit(act.SetLock(connector_id, locked))

    def wait(self, connector_id: int, then: Then) -> None:
        """`then(ok)` runs with the next answer of this lock (driven by someone else)."""
        self._waiting.setdefault(connector_id, []).append(then)

    def answered(self, connector_id: int, ok: bool) -> None:
        for then in self._waiting.pop(connector_id, []):
            then(ok)

    def pending(self) -> bool:
        return any(self._waiting.values())
