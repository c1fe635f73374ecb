"""Actions the station core asks its adapters to carry out, in order."""
from __future__ import annotations

from dataclasses import dataclass, field
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

    kind: str  # "soft" | "hard" | "release" (a soft one after `current` moved)


@dataclass(frozen=True)
class LinkSettingsChanged:
    """WebSocketPingInterval or AuthorizationKey changed: the transport re-reads them."""

    ping_interval_s: int


@dataclass(frozen=True)
class StorePrivateKey:
    """Write the charger's new private key (PEM) as a 0600 file before its CSR goes out.
    The key is never shown: not in a log line, not in this action's repr."""

    key_id: str
    pem: bytes = field(repr=False)


@dataclass(frozen=True)
class LinkSecurity:
    """What the link connects with from its next connection: the security profile, the
    CSMS roots installed (PEM, "" for none), the charger's own certificate (its key's id and
    chain; None: [csms] client_cert), and whether the profile is on trial (the link says
    when it cannot connect with it, `SecurityProfileFailed`)."""

    profile: int
    roots_pem: str
    charger_key_id: Optional[str]
    charger_chain: Optional[str]
    trial: bool


@dataclass(frozen=True)
class ReportStatus:
    """One line for the service manager (systemd STATUS=)."""

    text: str


@dataclass(frozen=True)
class DownloadFirmware:
    """Fetch the release bundle at `location` (resuming what an earlier attempt of the
    same request left); the outcome comes back as `FirmwareDownloaded`."""

    request_id: str
    location: str


@dataclass(frozen=True)
class VerifyFirmware:
    """Check the downloaded bundle of `request_id` before anything is installed: its
    `signature` (base64) with the key of `certificate` (PEM), then every file against its
    manifest; the outcome comes back as `FirmwareVerified`."""

    request_id: str
    certificate: str
    signature: str


@dataclass(frozen=True)
class FetchCrls:
    """Fetch the certificate revocation lists at `urls` (http, https) for a
    SignedUpdateFirmware waiting for its answer: each at most `max_bytes`, all of them
    within `within_s`; what came back, or why nothing did, comes back as `CrlsFetched`."""

    fetch_id: str
    urls: tuple[str, ...]
    max_bytes: int
    within_s: float


@dataclass(frozen=True)
class InstallFirmware:
    """Install the bundle of `request_id` beside the running release and switch to it (on
    trial); the outcome comes back as `FirmwareInstalled`."""

    request_id: str


@dataclass(frozen=True)
class TestRelease:
    """Self-test the release on trial; commit it if it passes. `ReleaseTested` follows."""


@dataclass(frozen=True)
class RollBackRelease:
    """Give the release on trial up: the previous one comes back (a restart)."""

    reason: str


@dataclass(frozen=True)
class UploadDiagnostics:
    """Build the file `file_name` and put it at `location`; `DiagnosticsUploaded` follows.
    `kind`: "diagnostics", the diagnostics archive (logs between the UTC instants `start`
    and `stop`, None: unbounded), or "security-log", the security log's entries of that
    period (GetLog)."""

    request_id: str
    location: str
    file_name: str
    start: Optional[float]
    stop: Optional[float]
    kind: str = "diagnostics"


class Effects:
    """The actions of the present turn, in the order they were asked for."""

    def __init__(self) -> None:
        self.pending: list = []

    def emit(self, action) -> None:
        self.pending.append(action)

    def take(self) -> list:
        out, self.pending = self.pending, []
        return out
