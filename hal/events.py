"""Inputs from the hardware, posted by backends through their `emit` callable.

They are plain immutable values so that the charging core can consume them as
events and tests can construct them directly.
"""
from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Optional

from hal.interfaces import MeterReading, PilotState


class FaultCode(str, enum.Enum):
    """Hardware faults, named by the OCPP 1.6 ChargePointErrorCode they report as."""

    CONNECTOR_LOCK_FAILURE = "ConnectorLockFailure"
    EV_COMMUNICATION_ERROR = "EVCommunicationError"
    GROUND_FAILURE = "GroundFailure"
    HIGH_TEMPERATURE = "HighTemperature"
    OVER_CURRENT_FAILURE = "OverCurrentFailure"
    OVER_VOLTAGE = "OverVoltage"
    UNDER_VOLTAGE = "UnderVoltage"
    POWER_METER_FAILURE = "PowerMeterFailure"
    POWER_SWITCH_FAILURE = "PowerSwitchFailure"   # welded or stuck-open contactor
    READER_FAILURE = "ReaderFailure"
    #: Not hardware on the connector: the controller's own storage (chargepoint/model/storage_fault.py).
    INTERNAL_ERROR = "InternalError"
    OTHER_ERROR = "OtherError"


@dataclass(frozen=True)
class PilotStateChanged:
    connector_id: int
    state: PilotState


@dataclass(frozen=True)
class CableDetected:
    """PP ampacity changed (None: no cable or no PP circuit)."""

    connector_id: int
    ampacity_a: Optional[float]


@dataclass(frozen=True)
class TagPresented:
    id_tag: str                    # upper-case hex UID, at most 20 characters
    reader: str = "rfid"


@dataclass(frozen=True)
class MeterSampled:
    connector_id: int
    reading: MeterReading


@dataclass(frozen=True)
class HardwareFault:
    """A fault began (active=True) or cleared (active=False) on a connector (0 = charger)."""

    connector_id: int
    code: FaultCode
    active: bool
    info: str = ""                 # short human text, goes to StatusNotification.info
    vendor_error_code: str = ""
