"""A connector's state as OCPP sees it: status, error code, availability, faults.

Connector 0 stands for the charger as a whole. The status is derived from the
facts (availability, active faults, pilot state, session) rather than stored,
so it can never disagree with them; `chargepoint.operations.status` reports it
whenever it changes.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Optional

from hal import events as hal_events
from hal.interfaces import MeterReading, PilotState

if TYPE_CHECKING:
    from chargepoint.station import Station

log = logging.getLogger("chargepoint.connector")

#: Faults that make a connector unusable (status Faulted). Others are reported as a
#: warning errorCode with the normal status (e.g. ReaderFailure on connector 0).
BLOCKING_FAULTS = frozenset({
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
    def __init__(self, info: ConnectorInfo, station: "Station"):
        self.info = info
        self.id = info.id
        self.station = station
        self.operative = station.store.get_state(f"availability:{info.id}", "Operative") \
            == "Operative"
        self.faults: dict[hal_events.FaultCode, hal_events.HardwareFault] = {}
        self.pilot = PilotState.A
        self.reading: Optional[MeterReading] = None
        self.cable_ampacity: Optional[float] = None
        #: Set by the session logic when a valid authorization covers this connector.
        self.authorized = False

    # -- facts from the hardware
    def on_hardware(self, event) -> None:
        if isinstance(event, hal_events.HardwareFault):
            if event.active:
                self.faults[event.code] = event
                log.warning("connector %d fault %s: %s", self.id, event.code.value, event.info)
            elif self.faults.pop(event.code, None) is not None:
                log.info("connector %d fault %s cleared", self.id, event.code.value)
        elif isinstance(event, hal_events.PilotStateChanged):
            self.pilot = event.state
        elif isinstance(event, hal_events.MeterSampled):
            self.reading = event.reading
            return
        elif isinstance(event, hal_events.CableDetected):
            self.cable_ampacity = event.ampacity_a
            return
        self.changed()

    def changed(self) -> None:
        from chargepoint.operations import status

        status.notify(self.station, self.id)

    # -- what OCPP sees
    @property
    def faulted(self) -> bool:
        return any(code in BLOCKING_FAULTS for code in self.faults)

    def available(self) -> bool:
        charger = self.station.connectors[0]
        return self.operative and (self.id == 0 or charger.operative)

    def status(self) -> str:
        if self.faulted:
            return "Faulted"
        if not self.available():
            return "Unavailable"
        if self.id != 0 and self.pilot.vehicle_connected:
            return "Preparing"
        return "Available"

    def error(self) -> tuple[str, str, str]:
        """(errorCode, info, vendorErrorCode) for StatusNotification."""
        if not self.faults:
            return "NoError", "", ""
        fault = sorted(self.faults.values(),
                       key=lambda f: (f.code not in BLOCKING_FAULTS, f.code.value))[0]
        return fault.code.value, fault.info, fault.vendor_error_code

    # -- what the hardware must do (the safety rule)
    def offered_current(self) -> Optional[float]:
        """Current to offer on the pilot, or None for "charging not allowed".

        Only an authorized, available, fault-free connector offers anything, and never
        more than its rating or the cable's PP ampacity.
        """
        if self.id == 0 or not self.authorized or self.faulted or not self.available():
            return None
        limit = self.info.max_current_a
        if self.cable_ampacity is not None:
            limit = min(limit, self.cable_ampacity)
        return limit if limit >= 6 else None

    def contactor_closed(self) -> bool:
        """The contactor closes only in pilot state C/D with a current on offer."""
        return self.offered_current() is not None and self.pilot.wants_power

    def set_operative(self, operative: bool) -> None:
        self.operative = operative
        self.station.store.set_state(f"availability:{self.id}",
                                     "Operative" if operative else "Inoperative")
        self.changed()
