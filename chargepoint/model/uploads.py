"""One file upload with its retries: what GetDiagnostics and GetLog have in common.

Each asks the runtime for its attempts (`UploadDiagnostics`, carried out on a worker by
chargepoint/maintenance.py) and learns how each went (`uploaded`). A failed attempt is
tried again `retries` times, `retryInterval` apart, unless retrying cannot help (`final`:
a location this charger cannot use). What the CSMS is told, and whether a second request
waits or replaces the first, is the caller's: chargepoint/model/diagnostics.py and
chargepoint/model/log_upload.py.
"""
from __future__ import annotations

import logging
import re
import uuid
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Optional

from chargepoint import actions as act
from chargepoint.actions import Effects
from chargepoint.model.clock import StationClock
from chargepoint.timers import Timers

log = logging.getLogger("chargepoint.uploads")

DEFAULT_RETRIES = 2
DEFAULT_RETRY_INTERVAL_S = 30


@dataclass
class Job:
    """One upload asked for: what to build (`kind`, see act.UploadDiagnostics), where it goes."""

    id: str
    kind: str
    location: str
    file: str
    start: Optional[float]
    stop: Optional[float]
    retries: int
    interval: int
    attempts: int = 0


@dataclass(frozen=True)
class Ended:
    """How an upload ended: `ok`, or the `cause` of its last failure (TransferError.cause:
    "unsupported", "location", "permission", or "" for any other)."""

    job: Job
    ok: bool
    cause: str = ""
    reason: str = ""


def file_name(clock: StationClock, charge_point_id: str, what: str) -> str:
    """`<charge point id>-<what>-<UTC time>.zip`: says whose, what and when."""
    when = datetime.fromtimestamp(clock.utc(), timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    who = re.sub(r"[^A-Za-z0-9._-]", "_", charge_point_id)
    return f"{who}-{what}-{when}.zip"


class Upload:
    """At most one upload at a time (in memory: not carried over a restart, the CSMS asks
    again and gets a fresh file). `what` names it in the log; `timer` is its retry timer's
    name. Loop thread only."""

    def __init__(self, clock: StationClock, timers: Timers, effects: Effects, what: str,
                 timer: str):
        self._clock = clock
        self._timers = timers
        self._effects = effects
        self.what = what
        self._timer = timer
        self.job: Optional[Job] = None

    def start(self, kind: str, location: str, file: str, start_utc: Optional[float],
              stop_utc: Optional[float], retries: Optional[int],
              retry_interval_s: Optional[int]) -> Job:
        """Begin a new upload (the caller has made sure none runs) with its first attempt."""
        self.job = Job(uuid.uuid4().hex[:16], kind, location, file, start_utc, stop_utc,
                       DEFAULT_RETRIES if retries is None else max(0, retries),
                       DEFAULT_RETRY_INTERVAL_S if retry_interval_s is None
                       else max(0, retry_interval_s))
        self._attempt()
        return self.job

    def cancel(self) -> Optional[Job]:
        """Forget the upload under way (its attempt's outcome is ignored when it comes)."""
        job, self.job = self.job, None
        self._timers.cancel(self._timer)
        return job

    def _attempt(self) -> None:
        job = self.job
        job.attempts += 1
        self._effects.emit(act.UploadDiagnostics(job.id, job.location, job.file, job.start,
                                                 job.stop, job.kind))

    def uploaded(self, request_id: str, ok: bool, reason: str, final: bool,
                 cause: str = "") -> Optional[Ended]:
        """An attempt ended: how the upload ended, or None (another's attempt, or another
        attempt is planned)."""
        job = self.job
        if job is None or job.id != request_id:
            return None
        if ok:
            log.info("%s %s uploaded", self.what, job.file)
            return self._end(Ended(job, True))
        left = job.retries + 1 - job.attempts
        if final or left <= 0:
            log.error("%s upload failed, giving up after %d attempt%s: %s", self.what,
                      job.attempts, "" if job.attempts == 1 else "s", reason)
            return self._end(Ended(job, False, cause, reason))
        log.warning("%s upload failed (%s); %d more attempt%s, the next in %d s", self.what,
                    reason, left, "" if left == 1 else "s", job.interval)
        self._timers.set(self._timer, self._clock.now + job.interval, self._attempt)
        return None

    def _end(self, ended: Ended) -> Ended:
        self.job = None
        self._timers.cancel(self._timer)
        return ended
