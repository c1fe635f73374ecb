"""GetDiagnostics: one archive of what an operator needs to see (chargepoint/diagnostics.py
builds it), uploaded where the CSMS says, with DiagnosticsStatusNotification Uploading
then Uploaded or UploadFailed.

The answer names the file at once; the runtime builds and uploads it on a worker thread
(`UploadDiagnostics`) and says how it went (`uploaded`). A failed upload is tried again
`retries` times, `retryInterval` apart. One upload at a time: a GetDiagnostics while one
is under way is answered without a file name. Unlike an update, an upload is not carried
over a restart: the CSMS asks again and gets a fresh archive.
"""
from __future__ import annotations

import logging
import re
import uuid
from datetime import datetime, timezone
from typing import Optional

from chargepoint import actions as act
from chargepoint.actions import Effects
from chargepoint.model.clock import StationClock
from chargepoint.model.link import Link
from chargepoint.model.notices import StatusNotices
from chargepoint.timers import Timers

log = logging.getLogger("chargepoint.diagnostics")

DEFAULT_RETRIES = 2
DEFAULT_RETRY_INTERVAL_S = 30


class Diagnostics:
    """The upload in progress (in memory). Loop thread only."""

    def __init__(self, clock: StationClock, timers: Timers, effects: Effects, link: Link,
                 charge_point_id: str):
        self._clock = clock
        self._timers = timers
        self._effects = effects
        self._charge_point_id = charge_point_id
        self.notices = StatusNotices(link, clock, timers, "DiagnosticsStatusNotification")
        self.upload: Optional[dict] = None

    @property
    def status(self) -> str:
        """DiagnosticsStatus for a triggered notification: Uploading, else Idle."""
        return "Uploading" if self.upload is not None else "Idle"

    def file_name(self) -> str:
        """`<charge point id>-diagnostics-<UTC time>.zip`: says whose and when."""
        when = datetime.fromtimestamp(self._clock.utc(), timezone.utc).strftime(
            "%Y%m%dT%H%M%SZ")
        who = re.sub(r"[^A-Za-z0-9._-]", "_", self._charge_point_id)
        return f"{who}-diagnostics-{when}.zip"

    def request(self, location: str, start_utc: Optional[float], stop_utc: Optional[float],
                retries: Optional[int], retry_interval_s: Optional[int]) -> Optional[str]:
        """GetDiagnostics: the file name the upload will have, or None while one runs."""
        if self.upload is not None:
            log.warning("GetDiagnostics refused: the upload of %s is not finished",
                        self.upload["file"])
            return None
        self.upload = {
            "id": uuid.uuid4().hex[:16], "location": location, "file": self.file_name(),
            "start": start_utc, "stop": stop_utc,
            "retries": DEFAULT_RETRIES if retries is None else max(0, retries),
            "interval": DEFAULT_RETRY_INTERVAL_S if retry_interval_s is None
            else max(0, retry_interval_s), "attempts": 0}
        self.notices.tell("Uploading")
        self._attempt()
        return self.upload["file"]

    def _attempt(self) -> None:
        upload = self.upload
        upload["attempts"] += 1
        self._effects.emit(act.UploadDiagnostics(upload["id"], upload["location"],
                                                 upload["file"], upload["start"],
                                                 upload["stop"]))

    def uploaded(self, request_id: str, ok: bool, reason: str, final: bool) -> None:
        """The runtime's upload ended (`final`: retrying could not help)."""
        upload = self.upload
        if upload is None or upload["id"] != request_id:
            return
        if ok:
            log.info("diagnostics %s uploaded", upload["file"])
            self._end("Uploaded")
            return
        left = upload["retries"] + 1 - upload["attempts"]
        if final or left <= 0:
            log.error("diagnostics upload failed, giving up after %d attempt%s: %s",
                      upload["attempts"], "" if upload["attempts"] == 1 else "s", reason)
            self._end("UploadFailed")
            return
        log.warning("diagnostics upload failed (%s); %d more attempt%s, the next in %d s",
                    reason, left, "" if left == 1 else "s", upload["interval"])
        self._timers.set("diagnostics", self._clock.now + upload["interval"], self._attempt)

    def _end(self, status: str) -> None:
        self.upload = None
        self._timers.cancel("diagnostics")
        self.notices.tell(status)

    def online(self) -> None:
        self.notices.online()
