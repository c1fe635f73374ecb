"""The CSMS's requests, one module per group of OCPP operations.

Each handler is a thin function `(services, payload) -> answer | Deferred`: it reads the
request, asks the model (chargepoint/model/) and says what to answer. Handlers keep no
state and write no SQL. `HANDLERS` below is the whole list of what this charger answers;
to find what happens when the CSMS sends an action, look it up here.
"""
from __future__ import annotations

from typing import Callable, Union

from chargepoint.handlers import (authorization, availability, configuration,
                                  data_transfer, firmware, local_list, remote, reservation,
                                  reset, security, smart_charging, trigger, unlock)
from chargepoint.handlers.deferred import Deferred
from chargepoint.model.services import Services

Handler = Callable[[Services, dict], Union[dict, Deferred]]

#: Action -> handler (raises ocppj.OcppError to answer with a CALLERROR).
HANDLERS: dict[str, Handler] = {
    # Core
    "ChangeAvailability": availability.change_availability,
    "ChangeConfiguration": configuration.change_configuration,
    "ClearCache": authorization.clear_cache,
    "DataTransfer": data_transfer.data_transfer,
    "GetConfiguration": configuration.get_configuration,
    "RemoteStartTransaction": remote.remote_start,
    "RemoteStopTransaction": remote.remote_stop,
    "Reset": reset.reset,
    "UnlockConnector": unlock.unlock_connector,
    # Firmware Management
    "GetDiagnostics": firmware.get_diagnostics,
    "UpdateFirmware": firmware.update_firmware,
    # Local Auth List Management
    "GetLocalListVersion": local_list.get_local_list_version,
    "SendLocalList": local_list.send_local_list,
    # Reservation
    "CancelReservation": reservation.cancel_reservation,
    "ReserveNow": reservation.reserve_now,
    # Smart Charging
    "ClearChargingProfile": smart_charging.clear_charging_profile,
    "GetCompositeSchedule": smart_charging.get_composite_schedule,
    "SetChargingProfile": smart_charging.set_charging_profile,
    # Remote Trigger
    "TriggerMessage": trigger.trigger_message,
    # Security Whitepaper (edition 3)
    "CertificateSigned": security.certificate_signed,
    "DeleteCertificate": security.delete_certificate,
    "ExtendedTriggerMessage": security.extended_trigger_message,
    "GetInstalledCertificateIds": security.get_installed_certificate_ids,
    "GetLog": security.get_log,
    "InstallCertificate": security.install_certificate,
    "SignedUpdateFirmware": firmware.signed_update_firmware,
}

#: Feature profiles beyond Core whose every operation is answered (SupportedFeatureProfiles
#: is Core and these).
PROFILES = ("FirmwareManagement", "LocalAuthListManagement", "Reservation", "SmartCharging",
            "RemoteTrigger")
