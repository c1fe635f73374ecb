"""GetDiagnostics: one archive of what an operator needs to see (chargepoint/diagnostics.py
builds it), uploaded where the CSMS says, with DiagnosticsStatusNotification Uploading
then Uploaded or UploadFailed.

The answer names the file at once; the runtime builds and uploads it on a worker thread
and says how it went (the attempts and their retries: chargepoint/model/uploads.py). One
upload at a time: a GetDiagnostics while one is under way is answered without a file name
(OCPP 1.6 has no way to say more). Unlike an update, an upload is not carried over a
restart: the CSMS asks again and gets a fresh archive.
"""
from __future__ import annotations

import logging
from typing import Optional

from chargepoint.actions import Effects
from chargepoint.model.clock import StationClock
from chargepoint.model.link import Link
from chargepoint.model.notices import StatusNotices
from chargepoint.model.uploads import Upload, file_name
from chargepoint.timers import Timers

log = logging.getLogger("chargepoint.diagnostics")

#: act.UploadDiagnostics.kind of the diagnostics archive.
ARCHIVE = "diagnostics"


class Diagnostics:
    """The GetDiagnostics upload in progress (in memory). Loop thread only."""

    def __init__(self, clock: StationClock, timers: Timers, effects: Effects, link: Link,
                 charge_point_id: str):
        self._clock = clock
        self._charge_point_id = charge_point_id
        self.notices = StatusNotices(link, clock, timers, "DiagnosticsStatusNotification")
        self.upload = Upload(clock, timers, effects, "diagnostics", "diagnostics")

    @property
    def status(self) -> str:
        """DiagnosticsStatus for a triggered notification: Uploading, else Idle."""
        return "Uploading" if self.upload.job is not None else "Idle"

    def file_name(self) -> str:
        """`<charge point id>-diagnostics-<UTC time>.zip`."""
        return file_name(self._clock, self._charge_point_id, "diagnostics")

    def request(self, location: str, start_utc: Optional[float], stop_utc: Optional[float],
                retries: Optional[int], retry_interval_s: Optional[int]) -> Optional[str]:
        """GetDiagnostics: the file name the upload will have, or None while one runs."""
        if self.upload.job is not None:
            log.warning("GetDiagnostics refused: the upload of %s is not finished",
                        self.upload.job.file)
            return None
        self.notices.tell("Uploading")
        job = self.upload.start(ARCHIVE, location, self.file_name(), start_utc, stop_utc,
                                retries, retry_interval_s)
        return job.file

    def uploaded(self, request_id: str, ok: bool, reason: str, final: bool,
                 cause: str = "") -> None:
        """The runtime's upload ended (`final`: retrying could not help)."""
        ended = self.upload.uploaded(request_id, ok, reason, final, cause)
        if ended is not None:
            self.notices.tell("Uploaded" if ended.ok else "UploadFailed")

    def online(self) -> None:
        self.notices.online()
