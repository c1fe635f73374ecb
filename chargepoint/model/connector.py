"""A connector's facts: pilot state, faults, the last reading, the running transaction.

Connector 0 stands for the charger as a whole. Only facts live here; what a connector
shows (its status) and may do (offer current, close the contactor) is derived from them
in chargepoint/model/status.py, so it can never disagree with them. Whoever changes a
fact calls `changed()`, which only marks the connector: the station brings its outputs
and its StatusNotification in line once per turn (chargepoint/station.py `_reconcile`).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Iterable, Optional

from chargepoint.model.transactions import Transaction
from hal import events as hal_events
from hal.interfaces import MeterReading, PilotState

log = logging.getLogger("chargepoint.connector")

#: Faults that make a connector unusable (status Faulted). Others are reported as a
#: warning errorCode with the normal status (e.g. ReaderFailure on connector 0).
BLOCKING_FAULTS = frozenset({
    hal_events.FaultCode.CONNECTOR_LOCK_FAILURE,       # TC_024: a plug that is not held
    hal_events.FaultCode.POWER_METER_FAILURE, hal_events.FaultCode.POWER_SWITCH_FAILURE,
    hal_events.FaultCode.GROUND_FAILURE, hal_events.FaultCode.EV_COMMUNICATION_ERROR,
    hal_events.FaultCode.HIGH_TEMPERATURE, hal_events.FaultCode.OVER_CURRENT_FAILURE,
    hal_events.FaultCode.OVER_VOLTAGE, hal_events.FaultCode.UNDER_VOLTAGE,
    hal_events.FaultCode.OTHER_ERROR,
})


@dataclass(frozen=True)
class ConnectorInfo:
    id: int
    max_current_a: float = 32.0
    phases: int = 3
    nominal_voltage_v: float = 230.0
    fixed_cable: bool = True
    has_lock: bool = False


class Connector:
    """What is known of one connector. Changing a fact? Call `changed()`."""

    def __init__(self, info: ConnectorInfo, dirty: set[int]):
        self.info = info
        self.id = info.id
        #: Set from the stored availability (chargepoint/model/availability.py).
        self.operative = True
        self.faults: dict[hal_events.FaultCode, hal_events.HardwareFault] = {}
        self.pilot = PilotState.A
        self.reading: Optional[MeterReading] = None
        self.cable_ampacity: Optional[float] = None
        #: The running transaction (chargepoint/model/sessions.py starts and stops it).
        self.tx: Optional[Transaction] = None
        #: A transaction ended while the vehicle stayed connected: Finishing until unplugged.
        self.finishing = False
        #: A start is decided and waits for its meter reading.
        self.starting = False
        #: When current was last offered after none (the EV gets EV_RESPONSE_S to take it).
        self.offered_since: Optional[float] = None
        self._dirty = dirty

    def changed(self) -> None:
        """Something this connector's status or outputs depend on changed."""
        self._dirty.add(self.id)

    @property
    def authorized(self) -> bool:
        """A running transaction may draw energy now."""
        reading = self.reading.energy_import_wh if self.reading is not None else None
        return self.tx is not None and self.tx.energy_allowed(reading)

    @property
    def faulted(self) -> bool:
        return any(code in BLOCKING_FAULTS for code in self.faults)

    @property
    def occupied_by_ev(self) -> bool:
        """An EV is connected, or a charging cable is still in this socket outlet."""
        return self.pilot.vehicle_connected or (not self.info.fixed_cable
                                                and self.cable_ampacity is not None)

    def apply_fault(self, event: hal_events.HardwareFault) -> bool:
        """Record a fault raised or cleared; True if that changed anything."""
        if event.active:
            self.faults[event.code] = event
            log.warning("connector %d fault %s: %s", self.id, event.code.value, event.info)
            self.changed()
            return True
        if self.faults.pop(event.code, None) is not None:
            log.info("connector %d fault %s cleared", self.id, event.code.value)
            self.changed()
            return True
        return False

    def status_info(self) -> str:
        """StatusNotification.info beyond the fault text (TC_005_3)."""
        if self.tx is not None and self.tx.ev_disconnected:
            return "EV side disconnected"
        return ""

    def error(self) -> tuple[str, str, str]:
        """(errorCode, info, vendorErrorCode) for StatusNotification."""
        if not self.faults:
            return "NoError", self.status_info(), ""
        # A blocking fault first; OtherError says least, so any named code goes before it
        # (a contactor and a light on one GPIO chip that cannot be opened: PowerSwitchFailure).
        fault = sorted(self.faults.values(),
                       key=lambda f: (f.code not in BLOCKING_FAULTS,
                                      f.code == hal_events.FaultCode.OTHER_ERROR, f.code.value))[0]
        return fault.code.value, fault.info, fault.vendor_error_code


class Connectors(dict):
    """Every connector by id, 0 (the charger) included, and which changed this turn."""

    def __init__(self, infos: Iterable[ConnectorInfo]):
        self._dirty: set[int] = set()
        super().__init__({0: Connector(ConnectorInfo(0), self._dirty),
                          **{c.id: Connector(c, self._dirty) for c in infos}})

    def outlets(self) -> list[Connector]:
        """The connectors an EV plugs into (all but 0)."""
        return [c for c in self.values() if c.id != 0]

    def touch_all(self) -> None:
        """Every connector's status or outputs may have changed."""
        self._dirty.update(self)

    def take_changed(self) -> set[int]:
        """The connectors marked changed since the last call; the marks are cleared."""
        if not self._dirty:
            return set()
        dirty = set(self._dirty)
        self._dirty.clear()
        return dirty
