"""The registry the operation modules fill: handlers by action, supported profiles.

Kept apart from the package's __init__ so that operation modules import it without
importing each other.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Callable, Optional

from chargepoint import ocppj

if TYPE_CHECKING:
    from chargepoint.station import Station

Handler = Callable[["Station", dict], "dict | Deferred"]

#: Action -> handler(station, payload) -> response payload (or raises ocppj.OcppError).
HANDLERS: dict[str, Handler] = {}

#: Feature profiles whose every operation is implemented (SupportedFeatureProfiles).
PROFILES: list[str] = []


def handles(action: str) -> Callable[[Handler], Handler]:
    def register(func: Handler) -> Handler:
        if action in HANDLERS:
            raise RuntimeError(f"two handlers for {action}")
        HANDLERS[action] = func
        return func
    return register


class Deferred:
    """Returned by a handler whose answer depends on the hardware (UnlockConnector):
    the CALLRESULT goes out when `resolve(payload)` is called, in a later turn."""

    def __init__(self) -> None:
        self._station: Optional["Station"] = None
        self._unique_id = ""
        self._action = ""
        self.resolved = False

    def bind(self, station: "Station", unique_id: str, action: str) -> None:
        self._station, self._unique_id, self._action = station, unique_id, action

    def resolve(self, payload: dict) -> None:
        if self.resolved or self._station is None:
            return
        self.resolved = True
        st = self._station
        ocppj.check_outgoing(ocppj.CALLRESULT, self._action, payload)
        if st.connected:
            st.send_frame(ocppj.encode_result(self._unique_id, payload))
