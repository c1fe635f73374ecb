"""What the CSMS may ask in each registration state: one table, read by `Station` when a CALL arrives.

OCPP 1.6 section 4.2. While the BootNotification is *Pending* the CSMS may read and
change the configuration (and trigger messages), but RemoteStartTransaction and
RemoteStopTransaction "are not allowed": they are refused. While it is *Rejected* the
charger "SHALL NOT respond to any Central System initiated message": nothing is
answered, not even a CALLERROR; the CALL is only logged. Before the CSMS has answered
any BootNotification ("new"), it is treated as Pending: the CSMS may prepare the charger,
but not start or stop a charge through a charger it has not accepted.
"""
from __future__ import annotations

import functools
from typing import Optional

from chargepoint.protocol import ocppj

#: Handled as in Accepted (which may still be a CALLERROR such as NotSupported).
SERVE = "serve"
#: Answered with the message's own refusal: status Rejected, or a CALLERROR without one.
REFUSE = "refuse"
#: Not answered at all, only logged.
SILENT = "silent"

#: The registration states, in the order of the table's columns.
STATES = ("new", "Pending", "Rejected", "Accepted")

#: CSMS-initiated action -> what each registration state allows (columns as STATES).
TABLE: dict[str, tuple[str, str, str, str]] = {
    #                              "new"   Pending Rejected Accepted
    "CancelReservation":          (SERVE,  SERVE,  SILENT, SERVE),
    "CertificateSigned":          (SERVE,  SERVE,  SILENT, SERVE),
    "ChangeAvailability":         (SERVE,  SERVE,  SILENT, SERVE),
    "ChangeConfiguration":        (SERVE,  SERVE,  SILENT, SERVE),
    "ClearCache":                 (SERVE,  SERVE,  SILENT, SERVE),
    "ClearChargingProfile":       (SERVE,  SERVE,  SILENT, SERVE),
    "DataTransfer":               (SERVE,  SERVE,  SILENT, SERVE),
    "DeleteCertificate":          (SERVE,  SERVE,  SILENT, SERVE),
    "ExtendedTriggerMessage":     (SERVE,  SERVE,  SILENT, SERVE),
    "GetCompositeSchedule":       (SERVE,  SERVE,  SILENT, SERVE),
    "GetConfiguration":           (SERVE,  SERVE,  SILENT, SERVE),
    "GetDiagnostics":             (SERVE,  SERVE,  SILENT, SERVE),
    "GetInstalledCertificateIds": (SERVE,  SERVE,  SILENT, SERVE),
    "GetLocalListVersion":        (SERVE,  SERVE,  SILENT, SERVE),
    "GetLog":                     (SERVE,  SERVE,  SILENT, SERVE),
    "InstallCertificate":         (SERVE,  SERVE,  SILENT, SERVE),
    "RemoteStartTransaction":     (REFUSE, REFUSE, SILENT, SERVE),
    "RemoteStopTransaction":      (REFUSE, REFUSE, SILENT, SERVE),
    "ReserveNow":                 (SERVE,  SERVE,  SILENT, SERVE),
    "Reset":                      (SERVE,  SERVE,  SILENT, SERVE),
    "SendLocalList":              (SERVE,  SERVE,  SILENT, SERVE),
    "SetChargingProfile":         (SERVE,  SERVE,  SILENT, SERVE),
    "SignedUpdateFirmware":       (SERVE,  SERVE,  SILENT, SERVE),
    "TriggerMessage":             (SERVE,  SERVE,  SILENT, SERVE),
    "UnlockConnector":            (SERVE,  SERVE,  SILENT, SERVE),
    "UpdateFirmware":             (SERVE,  SERVE,  SILENT, SERVE),
}
#: Any other action (unknown, or one only a charge point sends): answered with its
#: CALLERROR as usual, except while Rejected.
OTHER = (SERVE, SERVE, SILENT, SERVE)


def allows(registration: str, action: str) -> str:
    """SERVE, REFUSE or SILENT for `action` in `registration` (one of STATES)."""
    return TABLE.get(action, OTHER)[STATES.index(registration)]


@functools.lru_cache(maxsize=None)
def refusal(action: str) -> Optional[dict]:
    """The CALLRESULT that refuses `action` ({"status": "Rejected"}), or None when its
    response has no such status (the refusal is then a CALLERROR)."""
    answer = {"status": "Rejected"}
    try:
        ocppj.validate_payload(ocppj.CALLRESULT, action, answer)
    except (ocppj.OcppError, OSError):
        return None
    return answer
