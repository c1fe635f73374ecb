"""A connector's state as OCPP sees it: status, error code, availability, faults.

Connector 0 stands for the charger as a whole. The status is derived from the
facts (availability, active faults, pilot state, session) rather than stored,
so it can never disagree with them; `chargepoint.operations.status` reports it
whenever it changes. Hardware events reach it through `chargepoint.sessions.on_hardware`,
which updates these facts and reacts to them.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, Optional

from hal import events as hal_events
from hal.interfaces import MeterReading, PilotState

if TYPE_CHECKING:
    from chargepoint.operations.transactions import Transaction
    from chargepoint.station import Station

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


#: How long a requested meter reading may take before the meter counts as failed.
READ_TIMEOUT_S = 10.0


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
        #: The running transaction (chargepoint/sessions.py starts and stops it).
        self.tx: Optional["Transaction"] = None
        #: A transaction ended while the vehicle stayed connected: Finishing until unplugged.
        self.finishing = False
        #: A start is decided and waits for its meter reading.
        self.starting = False
        #: When current was last offered after none (the EV gets EV_RESPONSE_S to take it).
        self.offered_since: Optional[float] = None
        self._reading_waiters: list[Callable[[Optional[MeterReading]], None]] = []

    @property
    def authorized(self) -> bool:
        """A running transaction may draw energy now."""
        reading = self.reading.energy_import_wh if self.reading is not None else None
        return self.tx is not None and self.tx.energy_allowed(reading)

    # -- fresh readings on demand
    def read_meter(self, then: Callable[[Optional[MeterReading]], None]) -> None:
        """Call `then(reading)` with a reading taken now (None if the meter failed)."""
        if self.id == 0 or hal_events.FaultCode.POWER_METER_FAILURE in self.faults:
            then(None)                  # a meter known to be silent: nothing to wait for
            return
        self._reading_waiters.append(then)
        if len(self._reading_waiters) == 1:
            from chargepoint import actions as act

            self.station.emit(act.ReadMeter(self.id))
            self.station.timers.set(f"meter-read:{self.id}", self.station.now + READ_TIMEOUT_S,
                                    lambda: self.answer_readers(None))

    @property
    def reading_pending(self) -> bool:
        return bool(self._reading_waiters)

    def answer_readers(self, reading: Optional[MeterReading]) -> None:
        """Hand a reading (None: the meter failed) to everyone waiting for one."""
        waiters, self._reading_waiters = self._reading_waiters, []
        self.station.timers.cancel(f"meter-read:{self.id}")
        if reading is None and waiters:
            log.warning("connector %d: no meter reading", self.id)
        for then in waiters:
            then(reading)

    def changed(self) -> None:
        """Something this connector's status or outputs depend on changed."""
        self.station.connector_changed(self.id)
        # A reservation of connector 0 holds whichever connectors are the last free ones,
        # so this connector going busy, Unavailable or Faulted can make another Reserved
        # (told once a start is decided: the reserved id may be the one starting here).
        reservations = getattr(self.station, "reservations", None)
        if self.id != 0 and not self.starting and reservations is not None and any(
                r.connector_id == 0 for r in reservations.active.values()):
            for other in self.station.connectors:
                if other not in (0, self.id):
                    self.station.connector_changed(other)

    # -- what OCPP sees
    @property
    def faulted(self) -> bool:
        return any(code in BLOCKING_FAULTS for code in self.faults)

    def available(self) -> bool:
        charger = self.station.connectors[0]
        if self.id != 0 and self.tx is None and not self.starting and \
                getattr(self.station, "charger_going_out", False):
            return False                # the whole charger is scheduled Inoperative
        return self.operative and (self.id == 0 or charger.operative)

    def status(self) -> str:
        if self.faulted:
            return "Faulted"
        tx = self.tx
        if tx is not None and not tx.stopping:
            if tx.ev_disconnected or not self.pilot.vehicle_connected:
                return "SuspendedEV"
            if self.offered_current() is None:      # not authorized, or limited below 6 A
                return "SuspendedEVSE"
            return "Charging" if self.pilot.wants_power else "SuspendedEV"
        if not self.available():
            return "Unavailable"
        if self.id == 0:
            return "Available"
        if (self.finishing or tx is not None) and self.occupied_by_ev:
            return "Finishing"
        if self.starting or self.station.sessions.waiting_for_plug(self):
            return "Preparing"
        if self.station.reservations.reserved(self):
            return "Reserved"
        if self.pilot.vehicle_connected:
            return "Preparing"
        return "Available"

    @property
    def occupied_by_ev(self) -> bool:
        """An EV is connected, or a charging cable is still in this socket outlet."""
        return self.pilot.vehicle_connected or (not self.info.fixed_cable
                                                and self.cable_ampacity is not None)

    def status_info(self) -> str:
        """StatusNotification.info beyond the fault text (TC_005_3)."""
        if self.tx is not None and self.tx.ev_disconnected:
            return "EV side disconnected"
        return ""

    def error(self) -> tuple[str, str, str]:
        """(errorCode, info, vendorErrorCode) for StatusNotification."""
        if not self.faults:
            return "NoError", self.status_info(), ""
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
        smart = getattr(self.station, "smart", None)
        profile_limit = smart.limit_amps(self) if smart is not None else None
        if profile_limit is not None:
            limit = min(limit, profile_limit)
        return limit if limit >= 6 else None

    def contactor_closed(self) -> bool:
        """The contactor closes only in pilot state C/D with a current on offer."""
        return self.offered_current() is not None and self.pilot.wants_power

    def set_operative(self, operative: bool) -> None:
        self.operative = operative
        self.station.store.set_state(f"availability:{self.id}",
                                     "Operative" if operative else "Inoperative")
        self.changed()
