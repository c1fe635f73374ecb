"""GetLog (OCPP 1.6 Security Whitepaper, edition 3, section 4.x; OCTT TC_079): the
diagnostics archive (DiagnosticsLog) or the security log (SecurityLog) uploaded where the
CSMS says, with LogStatusNotification (carrying the request's requestId) Uploading, then
Uploaded or why not.

Unlike GetDiagnostics, a second GetLog while one runs is not refused: the whitepaper has
the running upload cancelled and the new one started, answered AcceptedCanceled. The
attempts, their retries and the worker are shared with GetDiagnostics
(chargepoint/model/uploads.py); a GetLog and a GetDiagnostics run side by side.
"""
from __future__ import annotations

import logging
from typing import Optional

from chargepoint.actions import Effects
from chargepoint.model.clock import StationClock
from chargepoint.model.diagnostics import ARCHIVE
from chargepoint.model.link import Link
from chargepoint.model.notices import StatusNotices
from chargepoint.model.uploads import Upload, file_name
from chargepoint.timers import Timers

log = logging.getLogger("chargepoint.log_upload")

#: act.UploadDiagnostics.kind of the security log's file (chargepoint/security_log.py).
SECURITY_LOG = "security-log"

#: logType -> (what is built, what the file is called).
LOG_TYPES = {"DiagnosticsLog": (ARCHIVE, "diagnostics"),
             "SecurityLog": (SECURITY_LOG, "security-log")}

#: TransferError.cause of the last failure -> UploadLogStatus.
FAILURES = {"unsupported": "NotSupportedOperation", "location": "BadMessage",
            "permission": "PermissionDenied"}


class LogUpload:
    """The GetLog upload in progress (in memory). Loop thread only."""

    def __init__(self, clock: StationClock, timers: Timers, effects: Effects, link: Link,
                 charge_point_id: str):
        self._clock = clock
        self._charge_point_id = charge_point_id
        self.notices = StatusNotices(link, clock, timers, "LogStatusNotification")
        self.upload = Upload(clock, timers, effects, "GetLog", "log-upload")
        #: The CSMS's requestId of the upload under way.
        self.request_id: Optional[int] = None

    def request(self, log_type: str, request_id: int, location: str,
                start_utc: Optional[float], stop_utc: Optional[float],
                retries: Optional[int], retry_interval_s: Optional[int]) -> dict:
        """GetLog: the answer (status, filename). A running upload is cancelled."""
        kind, what = LOG_TYPES[log_type]
        status = "Accepted"
        cancelled = self.upload.cancel()
        if cancelled is not None:
            log.warning("GetLog %d cancels the upload of %s (GetLog %s)", request_id,
                        cancelled.file, self.request_id)
            status = "AcceptedCanceled"
        self.request_id = request_id
        self.notices.tell("Uploading", {"requestId": request_id})
        job = self.upload.start(kind, location, file_name(self._clock, self._charge_point_id,
                                                          what),
                                start_utc, stop_utc, retries, retry_interval_s)
        return {"status": status, "filename": job.file}

    def uploaded(self, request_id: str, ok: bool, reason: str, final: bool,
                 cause: str = "") -> None:
        """An attempt ended (`cause`: TransferError.cause of a failure)."""
        ended = self.upload.uploaded(request_id, ok, reason, final, cause)
        if ended is None:
            return
        status = "Uploaded" if ended.ok else FAILURES.get(ended.cause, "UploadFailure")
        self.notices.tell(status, {"requestId": self.request_id})
        self.request_id = None

    def status(self) -> dict:
        """LogStatusNotification's payload for a trigger: Uploading with the running
        request's requestId, else Idle."""
        if self.upload.job is not None:
            return {"status": "Uploading", "requestId": self.request_id}
        return {"status": "Idle"}

    def online(self) -> None:
        self.notices.online()
