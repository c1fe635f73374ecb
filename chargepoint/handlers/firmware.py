"""UpdateFirmware and GetDiagnostics (Firmware Management profile), and
SignedUpdateFirmware (Security Whitepaper, edition 3).

Both are answered at once and carried on in the background: the update by
chargepoint/model/firmware.py (FirmwareStatusNotification as it goes), the upload by
chargepoint/model/diagnostics.py (DiagnosticsStatusNotification). UpdateFirmware.conf
has no content; a location this charger cannot use ends in DownloadFailed, told by
notification like any other failed download. GetDiagnostics.conf names the file that
will be uploaded (none while an upload is already under way). SignedUpdateFirmware is
answered with what the model made of it (Accepted, AcceptedCanceled, InvalidCertificate,
RevokedCertificate, Rejected) and told by SignedFirmwareStatusNotification; a date that is
no dateTime is Rejected there, as the whitepaper's answer allows. Its answer waits (a
Deferred) while the CRLs its signing certificate names are fetched.
"""
from __future__ import annotations

import logging
from typing import Optional

from chargepoint.clock import try_parse_utc
from chargepoint.handlers.deferred import Deferred
from chargepoint.model.services import Services
from chargepoint.protocol import ocppj

log = logging.getLogger("chargepoint.firmware")


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


def signed_update_firmware(services: Services, payload: dict) -> dict:
    services.security_events.csms_speaks_whitepaper()
    firmware = payload["firmware"]
    try:
        retrieve = date_time(firmware, "retrieveDateTime")
        install = date_time(firmware, "installDateTime")
    except ocppj.OcppError as exc:
        log.warning("SignedUpdateFirmware %s rejected: %s", payload["requestId"],
                    exc.description)
        return {"status": "Rejected"}
    answer = Deferred()
    status = services.firmware.request_signed(
        firmware["location"], retrieve, install, firmware["signingCertificate"],
        firmware["signature"], payload["requestId"], payload.get("retries"),
        payload.get("retryInterval"), later=lambda status: answer.resolve({"status": status}))
    return answer if status is None else {"status": status}


def get_diagnostics(services: Services, payload: dict) -> dict:
    name = services.diagnostics.request(payload["location"], date_time(payload, "startTime"),
                                        date_time(payload, "stopTime"), payload.get("retries"),
                                        payload.get("retryInterval"))
    return {} if name is None else {"fileName": name}
