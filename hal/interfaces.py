"""The charger's hardware as the charging logic sees it: small interfaces, no buses.

Every backend (Modbus meter, GPIO contactor, sysfs-PWM pilot, serial RFID reader,
the simulated charger, ...) implements one of these. The charging logic imports
this module and `hal.events`, never pyserial, pymodbus or gpiozero.

Inputs reach the charging logic as events (`hal.events`) through the `emit`
callable a backend is given; outputs are plain method calls. Backends take a
`clock` (seconds, monotonic or virtual) so that timing-dependent code such as
debouncing and energy integration is testable without sleeping.
"""
from __future__ import annotations

import enum
import time
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Callable, Optional

Clock = Callable[[], float]
"""Returns seconds; only differences matter. `time.monotonic` in production."""

Emit = Callable[[object], None]
"""Where a backend posts `hal.events` objects; thread-safe (a queue's `put`)."""


def monotonic_clock() -> float:
    return time.monotonic()


class HardwareError(Exception):
    """A device did not answer or answered nonsense; the caller reports a fault."""


class MeterUnavailable(HardwareError):
    """The meter is silent, unplugged or returned invalid data: no reading exists."""


# --------------------------------------------------------------------------- meter

@dataclass(frozen=True)
class MeterReading:
    """One coherent read of a meter. Missing quantities are None, never a stale value."""

    time: float                                   # clock() when the read completed
    energy_import_wh: float                       # import active energy register
    power_w: Optional[float] = None               # total active import power
    current_a: Optional[tuple[Optional[float], ...]] = None   # per phase L1, L2, L3
    voltage_v: Optional[tuple[Optional[float], ...]] = None   # per phase L1-N, L2-N, L3-N
    frequency_hz: Optional[float] = None
    energy_export_wh: Optional[float] = None


class EnergyMeter(ABC):
    """A revenue or sub-meter for one connector."""

    #: Measurands this meter can supply (OCPP measurand names), for validating
    #: MeterValuesSampledData. Energy.Active.Import.Register is always present.
    measurands: frozenset[str] = frozenset({"Energy.Active.Import.Register"})

    @abstractmethod
    def read(self) -> MeterReading:
        """Read now. Raises MeterUnavailable when the meter cannot be read."""

    def close(self) -> None:
        """Release the bus or pin."""


# --------------------------------------------------------------------------- contactor, lock

class Contactor(ABC):
    """The relay that switches mains to the vehicle."""

    @abstractmethod
    def set_closed(self, closed: bool) -> None:
        """Command the contactor. Must be idempotent and fast (< 10 ms)."""

    @property
    @abstractmethod
    def commanded_closed(self) -> bool:
        """What was last commanded."""

    def feedback_closed(self) -> Optional[bool]:
        """The mirror contact's reading, or None when no feedback is fitted."""
        return None

    def close(self) -> None:
        """Release the pins; a backend opens the contactor first."""


class ConnectorLock(ABC):
    """The actuator that holds the plug in a socket outlet (absent with a fixed cable)."""

    @abstractmethod
    def set_locked(self, locked: bool) -> bool:
        """Lock or unlock; returns True when feedback (if any) confirms it."""

    def is_locked(self) -> Optional[bool]:
        """Feedback reading, or None when no feedback is fitted."""
        return None

    def close(self) -> None:
        pass


# --------------------------------------------------------------------------- pilot

class PilotState(str, enum.Enum):
    """IEC 61851-1 control-pilot states, by the high plateau voltage."""

    A = "A"  # +12 V: no vehicle
    B = "B"  # +9 V: vehicle connected, not asking for power
    C = "C"  # +6 V: vehicle asks for power
    D = "D"  # +3 V: vehicle asks for power, ventilation required
    E = "E"  # 0 V: short circuit or no power
    F = "F"  # -12 V: EVSE error / not available

    @property
    def vehicle_connected(self) -> bool:
        return self in (PilotState.B, PilotState.C, PilotState.D)

    @property
    def wants_power(self) -> bool:
        return self in (PilotState.C, PilotState.D)


def duty_cycle_for_current(amps: float) -> float:
    """IEC 61851-1 PWM duty cycle (percent) that offers `amps` to the vehicle.

    6-51 A: duty = A / 0.6; 51-80 A: duty = A / 2.5 + 64. Below 6 A there is no valid
    duty cycle (the caller must signal "not allowed" instead); above 80 A is clamped.
    """
    if amps < 6:
        raise ValueError(f"{amps} A is below the 6 A minimum the pilot can offer")
    amps = min(amps, 80.0)
    if amps <= 51:
        return amps / 0.6
    return amps / 2.5 + 64


class EVInterface(ABC):
    """The control pilot (and proximity pilot where fitted) of one connector.

    A backend samples the pilot itself and emits `hal.events.PilotStateChanged`
    after debouncing; the charging logic only offers current.
    """

    @abstractmethod
    def set_max_current(self, amps: Optional[float]) -> None:
        """Offer `amps` (>= 6) through the PWM duty cycle, or None for "charging
        not allowed" (steady +12 V: the vehicle sees no PWM and must not draw)."""

    @abstractmethod
    def state(self) -> PilotState:
        """The current debounced state."""

    def cable_ampacity(self) -> Optional[float]:
        """Ampacity coded by the PP resistor, or None (no PP, fixed cable, no plug)."""
        return None

    def start(self) -> None:
        """Begin sampling; emits the initial state."""

    def close(self) -> None:
        """Stop sampling and leave the pilot in "not allowed"."""


# --------------------------------------------------------------------------- identification, indicators

class IdReader(ABC):
    """An RFID/NFC reader. Emits `hal.events.TagPresented` once per presentation,
    folding the reader's repeated frames while the card stays in the field."""

    def start(self) -> None:
        pass

    def close(self) -> None:
        pass


class IndicatorColour(str, enum.Enum):
    OFF = "off"
    AVAILABLE = "available"      # typically green
    OCCUPIED = "occupied"        # typically blue
    CHARGING = "charging"        # typically blue, pulsing
    FAULT = "fault"              # typically red
    OFFLINE = "offline"          # typically amber


class Indicator(ABC):
    """A status light for one connector (or the whole charger)."""

    @abstractmethod
    def show(self, colour: IndicatorColour) -> None:
        pass

    def close(self) -> None:
        pass
