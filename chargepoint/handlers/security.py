"""The Security Whitepaper's operations (OCPP 1.6 Security Whitepaper, edition 3): the
root certificates (InstallCertificate, DeleteCertificate, GetInstalledCertificateIds), the
charger's own certificate (CertificateSigned), GetLog and ExtendedTriggerMessage.

What the link trusts changes with the certificates: each change is announced to it
(`security_profile.announce`) and applies from the next connection.
"""
from __future__ import annotations

import logging
from typing import Optional

from chargepoint import actions as act
from chargepoint.handlers import trigger
from chargepoint.handlers.firmware import date_time
from chargepoint.model.services import Services

log = logging.getLogger("chargepoint.security")


def install_certificate(services: Services, payload: dict) -> dict:
    services.security_events.csms_speaks_whitepaper()
    status = services.certificates.install(payload["certificateType"], payload["certificate"])
    if status == "Accepted":
        services.security_profile.announce()
    return {"status": status}


def delete_certificate(services: Services, payload: dict) -> dict:
    services.security_events.csms_speaks_whitepaper()
    status = services.certificates.delete(payload["certificateHashData"],
                                          services.security_profile.current)
    if status == "Accepted":
        services.security_profile.announce()
    return {"status": status}


def get_installed_certificate_ids(services: Services, payload: dict) -> dict:
    services.security_events.csms_speaks_whitepaper()
    ids = services.certificates.installed_ids(payload["certificateType"])
    if not ids:
        return {"status": "NotFound"}
    return {"status": "Accepted", "certificateHashData": ids}


def certificate_signed(services: Services, payload: dict) -> dict:
    services.security_events.csms_speaks_whitepaper()
    status = services.charger_certificate.signed(payload["certificateChain"])
    if status == "Accepted":
        services.security_profile.announce()
        if services.security_profile.current == 3:
            services.effects.emit(act.Reconnect("new charger certificate"))
    return {"status": status}


def get_log(services: Services, payload: dict) -> dict:
    """Accepted, or AcceptedCanceled when it replaces a GetLog still uploading; the upload
    follows (chargepoint/model/log_upload.py)."""
    services.security_events.csms_speaks_whitepaper()
    where = payload["log"]
    return services.log_upload.request(
        payload["logType"], payload["requestId"], where["remoteLocation"],
        date_time(where, "oldestTimestamp"), date_time(where, "latestTimestamp"),
        payload.get("retries"), payload.get("retryInterval"))


def _sign_certificate(services: Services, connector_id: Optional[int]) -> bool:
    return services.charger_certificate.request("asked by the CSMS")


def _log_status(services: Services, connector_id: Optional[int]) -> bool:
    return services.link.send_call("LogStatusNotification", services.log_upload.status(),
                                   before_accept=True)


def _signed_firmware_status(services: Services, connector_id: Optional[int]) -> bool:
    # The whitepaper's FirmwareStatusNotification is the signed one: the step of the
    # update under way and the requestId of a SignedUpdateFirmware, else Idle.
    status, request_id = services.firmware.signed_status
    payload = {"status": status}
    if request_id is not None:
        payload["requestId"] = request_id
    return services.link.send_call("SignedFirmwareStatusNotification", payload,
                                   before_accept=True)


#: requestedMessage of ExtendedTriggerMessage -> sender(services, connector_id or None).
EXTENDED_TRIGGERS = {
    "BootNotification": trigger.TRIGGERS["BootNotification"],
    "Heartbeat": trigger.TRIGGERS["Heartbeat"],
    "MeterValues": trigger.TRIGGERS["MeterValues"],
    "StatusNotification": trigger.TRIGGERS["StatusNotification"],
    "FirmwareStatusNotification": _signed_firmware_status,
    "LogStatusNotification": _log_status,
    "SignChargePointCertificate": _sign_certificate,
}


def extended_trigger_message(services: Services, payload: dict) -> dict:
    services.security_events.csms_speaks_whitepaper()
    return trigger.answer_trigger(services, payload, EXTENDED_TRIGGERS,
                                  "ExtendedTriggerMessage")
