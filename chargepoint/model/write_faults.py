"""Write failures during operation: reported once, retried with backoff, healed by itself.

A commit that fails (a full or read-only filesystem, an I/O error) changes nothing in
memory (`Store.on_commit`), so the charger carries on from what is on disk. What could not
be written is of two kinds: what can wait (a periodic MeterValues is simply not produced,
its reading stays in the next one) and what must not be lost: a StopTransaction. The
charge has already stopped; its end (the reading taken at the stop, the reason, the time)
is kept here in memory and committed again on the retry timer, so the energy is billed
with the real meterStop once the disk takes writes again. Until then no new transaction
starts and transaction messages wait: a transaction that cannot be made durable could
not be billed after a power cut (docs/delivery.md, "Write failures during a session").
"""
from __future__ import annotations

import logging
import sqlite3
from typing import Callable

from chargepoint.model import storage_fault
from chargepoint.model.clock import StationClock
from chargepoint.model.connector import Connectors
from chargepoint.store import Store
from chargepoint.timers import Timers

log = logging.getLogger("chargepoint.write_faults")

#: First retry after a failed write, doubled after each further failure up to the cap.
RETRY_FIRST_S = 5.0
RETRY_MAX_S = 300.0

#: SQLite's words for a disk that does not take writes (its error codes are not set on
#: every exception, e.g. one raised by a wrapper, so the message is what is checked).
_STORAGE_WORDS = ("disk is full", "disk i/o error", "readonly database", "unable to open",
                  "database disk image is malformed", "file is not a database",
                  "database or disk is full")


def is_storage_fault(exc: BaseException) -> bool:
    """A failure of the disk under SQLite, not of the SQL (a bug, which keeps its traceback)."""
    if not isinstance(exc, sqlite3.DatabaseError):
        return False
    name = getattr(exc, "sqlite_errorname", None) or ""
    if name.startswith(("SQLITE_FULL", "SQLITE_IOERR", "SQLITE_READONLY", "SQLITE_CANTOPEN",
                        "SQLITE_CORRUPT", "SQLITE_NOTADB")):
        return True
    text = str(exc).lower()
    return any(word in text for word in _STORAGE_WORDS)


class WriteFaults:
    """Whether the disk takes writes, and what waits until it does again. Loop thread only."""

    def __init__(self, store: Store, timers: Timers, clock: StationClock,
                 connectors: Connectors):
        self._store = store
        self._timers = timers
        self._clock = clock
        self._connectors = connectors
        self.failing = False
        self.retry_s = RETRY_FIRST_S
        #: local_id -> commit of a transaction's end that failed (retried in stop order);
        #: `commit(release=False)` at a clean stop only writes the end.
        self.unsaved_stops: dict[int, Callable[..., None]] = {}
        #: Failed writes since the last success (the log names the first only).
        self.failures = 0

    def failed(self, exc: BaseException) -> None:
        """A write failed: log it once (path and OS error), retry later."""
        self.failures += 1
        if not self.failing:
            self.failing = True
            log.error("storage %s does not take writes (%s: %s); charging goes on without "
                      "new transactions, and what must be billed is kept in memory and "
                      "written when it works again (retried every %.0f s at first)",
                      self._store.path, type(exc).__name__, exc, self.retry_s)
            self._report(storage_fault.write_failed(exc))
        if self._timers.when("storage-retry") is None:
            self._timers.set("storage-retry", self._clock.now + self.retry_s, self.retry)

    def recovered(self) -> None:
        """A write succeeded after failures: say so once, resume."""
        if not self.failing:
            return
        self.failing = False
        log.warning("storage %s takes writes again after %d failed write(s)",
                    self._store.path, self.failures)
        self.failures = 0
        self.retry_s = RETRY_FIRST_S
        self._timers.cancel("storage-retry")
        self._report(storage_fault.cleared())
        self._connectors.touch_all()

    def _report(self, event) -> None:
        """The fault on connector 0, as the CSMS sees it (chargepoint/model/storage_fault.py).
        InternalError does not block charging: nothing else follows from it."""
        self._connectors[0].apply_fault(event)

    def keep_stop(self, local_id: int, commit: Callable[..., None], exc: BaseException) -> None:
        """A transaction's end could not be committed: keep it to commit again."""
        self.unsaved_stops[local_id] = commit
        log.warning("transaction %d stopped, its StopTransaction not yet durable: kept in "
                    "memory until storage works again", local_id)
        self.failed(exc)

    def retry(self) -> None:
        """The retry timer: commit what waits (or a probe write), back off on failure."""
        try:
            for local_id, commit in list(self.unsaved_stops.items()):
                commit()
                del self.unsaved_stops[local_id]
            if not self.unsaved_stops:
                with self._store.transaction():
                    self._store.set_state("storage_checked", self._clock.now)
        except Exception as exc:
            if not is_storage_fault(exc):
                raise
            self.retry_s = min(self.retry_s * 2, RETRY_MAX_S)
            self.failed(exc)
            return
        self.recovered()
