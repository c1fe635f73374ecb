"""Storage faults as the CSMS sees them: errorCode InternalError on connector 0.

OCPP 1.6 defines InternalError as an "error in internal hard- or software component",
which a failing SD card is (OtherError would say nothing). The fault does not block
charging: the connector keeps its status, drivers keep being served. `info` names
storage (at most 50 characters) and `vendorErrorCode` tells the two kinds apart:

- StorageNotDurable: nothing can be written, the database lives in memory. Shown until
  the real file can be written again, then cleared (NoError).
- StorageWriteFailed: writes fail while the firmware runs (a full or read-only
  filesystem, an I/O error; chargepoint/model/write_faults.py). Shown until a write succeeds.
- StorageRepaired: the file was damaged, empty, or deleted under the running firmware,
  and has been rewritten with what could be saved. Storage works again at once, so the
  fault is reported once and cleared right after; the `state` row RECORD_KEY keeps it
  (with `told`) so a restart before the CSMS heard of it still reports it.

chargepoint/storage.py raises and clears the fault with HardwareFault events for
connector 0; chargepoint/model/status_reports.py calls `StorageRepairs.told` when it
builds the report.
"""
from __future__ import annotations

import logging
from chargepoint.model.clock import StationClock
from chargepoint.model.connector import Connectors
from chargepoint.store import Store, StorageHealth
from chargepoint.timers import Timers
from hal import events as hal_events

log = logging.getLogger("chargepoint.storage")

#: `state` row recording the last repair: problem, time, damaged copy, rows saved, told.
RECORD_KEY = "storage_fault"
NOT_DURABLE = "StorageNotDurable"
REPAIRED = "StorageRepaired"
WRITE_FAILED = "StorageWriteFailed"

INFO = {
    "unwritable": "storage not writable: running in memory only",
    "empty": "storage: empty db file replaced, data lost",
    "deleted": "storage: db files deleted, written anew",
    "damaged": "storage: damaged db replaced, data salvaged",
}


def fault(health: "StorageHealth") -> hal_events.HardwareFault:
    """The connector-0 fault for an unhealthy `health`."""
    code = NOT_DURABLE if health.state == "degraded" else REPAIRED
    return hal_events.HardwareFault(0, hal_events.FaultCode.INTERNAL_ERROR, True,
                                    INFO.get(health.cause, INFO["damaged"]), code)


def write_failed(exc: BaseException) -> hal_events.HardwareFault:
    """The connector-0 fault while writes fail in operation (chargepoint/model/write_faults.py):
    shown until a write succeeds again."""
    return hal_events.HardwareFault(0, hal_events.FaultCode.INTERNAL_ERROR, True,
                                    f"storage write failed: {exc}"[:50], WRITE_FAILED)


def cleared() -> hal_events.HardwareFault:
    return hal_events.HardwareFault(0, hal_events.FaultCode.INTERNAL_ERROR, False)


class StorageRepairs:
    """Clears a reported repair once the CSMS has been told of it. Loop thread only."""

    def __init__(self, store: Store, timers: Timers, clock: StationClock,
                 connectors: Connectors):
        self._store = store
        self._timers = timers
        self._clock = clock
        self._connectors = connectors

    def told(self, body: dict) -> None:
        """A StatusNotification `body` for connector 0 is being sent: a repair in it has
        now been reported, so it is cleared (a NoError report follows it)."""
        if body.get("vendorErrorCode") == REPAIRED:
            self._timers.set("storage-repair-told", self._clock.now, self._clear_repair)

    def _clear_repair(self) -> None:
        conn = self._connectors[0]
        current = conn.faults.get(hal_events.FaultCode.INTERNAL_ERROR)
        if current is None or current.vendor_error_code != REPAIRED:
            return
        record = self._store.get_state(RECORD_KEY)
        if isinstance(record, dict):
            self._store.set_state(RECORD_KEY, {**record, "told": True})
        if self._store.health.state == "repaired":
            self._store.health.state = "ok"
        log.info("storage: the repair (%s) was reported to the CSMS", current.info)
        conn.apply_fault(cleared())
