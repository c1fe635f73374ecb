"""Actions the station core asks its adapters to carry out, in order."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional


@dataclass(frozen=True)
class SendFrame:
    text: str


@dataclass(frozen=True)
class SetContactor:
    connector_id: int
    closed: bool


@dataclass(frozen=True)
class SetLock:
    connector_id: int
    locked: bool


@dataclass(frozen=True)
class OfferCurrent:
    """Offer `amps` on the pilot, or None for "charging not allowed"."""

    connector_id: int
    amps: Optional[float]


@dataclass(frozen=True)
class ReadMeter:
    """Read the connector's meter now; the reading comes back as `MeterSampled`."""

    connector_id: int


@dataclass(frozen=True)
class ShowIndicator:
    connector_id: int
    colour: str


@dataclass(frozen=True)
class Reconnect:
    """Drop the link and connect again (e.g. a new AuthorizationKey)."""

    reason: str


@dataclass(frozen=True)
class Restart:
    """Soft: restart the process; hard: run the configured reboot command."""

    kind: str  # "soft" | "hard"


@dataclass(frozen=True)
class LinkSettingsChanged:
    """WebSocketPingInterval or AuthorizationKey changed: the transport re-reads them."""

    ping_interval_s: int


@dataclass(frozen=True)
class ReportStatus:
    """One line for the service manager (systemd STATUS=)."""

    text: str


class Effects:
    """The actions of the present turn, in the order they were asked for."""

    def __init__(self) -> None:
        self.pending: list = []

    def emit(self, action) -> None:
        self.pending.append(action)

    def take(self) -> list:
        out, self.pending = self.pending, []
        return out
