"""Where a firmware update and a diagnostics upload stand, as the CSMS is told of them
(FirmwareStatusNotification, DiagnosticsStatusNotification)."""
from __future__ import annotations


class FirmwareState:
    def __init__(self) -> None:
        #: FirmwareStatus of OCPP 1.6 ("Idle" while no update runs).
        self.firmware_status = "Idle"
        #: DiagnosticsStatus of OCPP 1.6 ("Idle" while no upload runs).
        self.diagnostics_status = "Idle"
