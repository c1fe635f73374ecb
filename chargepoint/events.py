"""Events the station core consumes: from the link, from the hardware, from time.

Hardware events are defined in `hal.events` (PilotStateChanged, TagPresented,
MeterSampled, HardwareFault, CableDetected) and are consumed as they are.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional


@dataclass(frozen=True)
class Connected:
    """The WebSocket to the CSMS is open (handshake and subprotocol agreed)."""


@dataclass(frozen=True)
class Disconnected:
    reason: str = ""


@dataclass(frozen=True)
class FrameReceived:
    text: str


@dataclass(frozen=True)
class Tick:
    """Time passed; the core fires whatever deadlines are due."""


@dataclass(frozen=True)
class ShutdownRequested:
    """SIGTERM: stop cleanly (transactions stay open and are resumed or closed on start)."""


@dataclass(frozen=True)
class LockResult:
    """The runtime carried out SetLock; `ok` is False when the lock did not confirm."""

    connector_id: int
    locked: bool
    ok: bool


@dataclass(frozen=True)
class FirmwareDownloaded:
    """A DownloadFirmware ended; `final`: the failure is of a kind retrying cannot mend."""

    request_id: str
    ok: bool
    reason: str = ""
    final: bool = False


@dataclass(frozen=True)
class FirmwareVerified:
    """A VerifyFirmware ended: `outcome` is "verified", "invalid-signature" or
    "invalid-bundle" (the signature holds but the bundle is damaged, or is for another
    machine), with the `reason` in words."""

    request_id: str
    outcome: str
    reason: str = ""


@dataclass(frozen=True)
class FetchedCrl:
    """What one URI of a FetchCrls gave: the bytes, or why not (`reason`, in words, naming
    the URI as it may be logged)."""

    url: str
    data: Optional[bytes] = field(default=None, repr=False)
    reason: str = ""


@dataclass(frozen=True)
class CrlsFetched:
    """A FetchCrls ended: what each of its URIs gave, in order."""

    fetch_id: str
    results: tuple[FetchedCrl, ...]


@dataclass(frozen=True)
class FirmwareInstalled:
    """An InstallFirmware ended: `version` installed and switched to, or `reason`."""

    request_id: str
    ok: bool
    version: str = ""
    reason: str = ""


@dataclass(frozen=True)
class ReleaseTested:
    """The release on trial passed its self-test and is committed, or failed it."""

    ok: bool
    reason: str = ""


@dataclass(frozen=True)
class DiagnosticsUploaded:
    """An UploadDiagnostics ended: `ok`, or why not (`reason`, in words; `cause`, as
    TransferError.cause says it; `final`: another attempt could not help)."""

    request_id: str
    ok: bool
    reason: str = ""
    final: bool = False
    cause: str = ""


@dataclass(frozen=True)
class SecurityIncident:
    """The link met a security event of the whitepaper's list (a CSMS certificate that is
    not trusted, a TLS version or cipher suite refused, our credentials refused)."""

    kind: str
    tech_info: str = ""


@dataclass(frozen=True)
class SecurityProfileFailed:
    """The link could not connect with security profile `profile`, which is on trial."""

    profile: int
    reason: str = ""
