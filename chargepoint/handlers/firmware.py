"""UpdateFirmware and GetDiagnostics (Firmware Management profile).

Both are answered at once and carried on in the background: the update by
chargepoint/model/firmware.py (FirmwareStatusNotification as it goes), the upload by
chargepoint/model/diagnostics.py (DiagnosticsStatusNotification). UpdateFirmware.conf
has no content; a location this charger cannot use ends in DownloadFailed, told by
notification like any other failed download. GetDiagnostics.conf names the file that
will be uploaded (none while an upload is already under way).
"""
from __future__ import annotations

from typing import Optional

from chargepoint.clock import try_parse_utc
from chargepoint.model.services import Services
from chargepoint.protocol import ocppj


def date_time(payload: dict, name: str) -> Optional[float]:
    """The dateTime `name` of `payload` as UTC seconds (None if absent); a CALLERROR if
    it is no dateTime."""
    text = payload.get(name)
    if text is None:
        return None
    moment = try_parse_utc(text)
    if moment is None:
        raise ocppj.OcppError("PropertyConstraintViolation",
                              f"{name} {text!r} is not a dateTime")
    return moment


def update_firmware(services: Services, payload: dict) -> dict:
    services.firmware.request(payload["location"], date_time(payload, "retrieveDate"),
                              payload.get("retries"), payload.get("retryInterval"))
    return {}


def get_diagnostics(services: Services, payload: dict) -> dict:
    name = services.diagnostics.request(payload["location"], date_time(payload, "startTime"),
                                        date_time(payload, "stopTime"), payload.get("retries"),
                                        payload.get("retryInterval"))
    return {} if name is None else {"fileName": name}
