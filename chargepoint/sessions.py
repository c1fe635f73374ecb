"""Charging sessions: who a presented tag is for, and what plugging in and out does.

The driver's side of OCPP 1.6 section 3 (and TC_003, 004, 005, 068, 069):
- plug first: the connector is Preparing until an id is accepted, then the
  transaction starts;
- identification first: an accepted id waits `ConnectionTimeOut` seconds for a plug
  on any free connector (Preparing meanwhile), then lapses;
- the id that started a transaction stops it, and so does another id with the same
  parentIdTag (asked of the CSMS when not known locally); other ids are ignored;
- unplugging at the EV side stops the transaction (reason EVDisconnected) unless
  `StopTransactionOnEVSideDisconnect` is false, in which case it stays open and
  SuspendedEV until the EV comes back or the CSMS stops it;
- a blocking hardware fault stops the transaction (EmergencyStop for a ground fault
  or over-current trip, Other for the rest); a faulted connector starts nothing.

Starting and stopping wait for a fresh meter reading; the durable records are
written by chargepoint/operations/transactions.py.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, Optional

from chargepoint.connector import BLOCKING_FAULTS
from chargepoint.operations import authorize, metering, transactions
from chargepoint.write_faults import is_storage_fault
from hal import events as hal_events

if TYPE_CHECKING:
    from chargepoint.connector import Connector
    from chargepoint.station import Station

log = logging.getLogger("chargepoint.sessions")

#: Faults that cut the power as an emergency rather than a malfunction.
EMERGENCY_FAULTS = frozenset({hal_events.FaultCode.GROUND_FAILURE,
                              hal_events.FaultCode.OVER_CURRENT_FAILURE})


@dataclass
class Pending:
    """An accepted id waiting for a plug (identification first)."""

    id_tag: str
    decision: authorize.Decision
    reservation_id: Optional[int] = None
    #: Only this connector may take it (RemoteStartTransaction with a connectorId).
    connector_id: Optional[int] = None

    def fits(self, conn: "Connector") -> bool:
        return self.connector_id is None or self.connector_id == conn.id


class Sessions:
    """Session state that belongs to the charger rather than to one connector."""

    def __init__(self, st: "Station"):
        self.st = st
        self.pending: Optional[Pending] = None
        #: Called with the connector after each transaction ends (ChangeAvailability
        #: scheduled, reservations, ...).
        self.on_transaction_ended: list[Callable[["Connector"], None]] = []
        #: Called with the connector once its transaction has started (smart charging).
        self.on_transaction_started: list[Callable[["Connector"], None]] = []

    def deauthorized(self, tx: transactions.Transaction, info: dict) -> None:
        deauthorized(self.st, tx, info)

    def waiting_for_plug(self, conn: "Connector") -> bool:
        pending = self.pending
        return pending is not None and pending.fits(conn) and is_free(
            self.st, conn, pending.id_tag, pending.decision.parent_id_tag)


def is_free(st: "Station", conn: "Connector", id_tag: Optional[str] = None,
            parent_id_tag: Optional[str] = None, check_reservations: bool = True) -> bool:
    """Could a new transaction (of `id_tag`, when a reservation holds `conn`) start on
    `conn`, plug aside?"""
    if not (conn.id != 0 and conn.tx is None and not conn.starting and conn.available()
            and not conn.faulted and not st.connectors[0].faulted
            and not st.write_faults.failing and not st.closing):
        return False
    return not (check_reservations and st.reservations.blocks(conn, id_tag, parent_id_tag))


def _notify_all(st: "Station") -> None:
    for conn in st.connectors.values():
        if conn.id != 0:
            conn.changed()


# -------------------------------------------------------------------- a tag is presented
def on_tag(st: "Station", id_tag: str) -> None:
    running = [c for c in st.connectors.values() if c.tx is not None and not c.tx.stopping]
    for conn in running:
        if authorize.same_id(conn.tx.id_tag, id_tag):
            stop(st, conn, "Local", id_tag)
            return
    parents = {authorize.id_key(c.tx.parent_id_tag) for c in running if c.tx.parent_id_tag}
    if parents:
        local = authorize.local_entry(st, id_tag)
        valid = local is not None and authorize.is_valid(st, local[0])
        if valid and authorize.id_key(local[0].get("parentIdTag")) in parents:
            _stop_by_parent(st, id_tag, local[0]["parentIdTag"])
            return
        if not valid:
            # Only the CSMS knows this id's group, or whether a refused id is valid again:
            # ask before deciding (TC_069).
            authorize.authorize(st, id_tag, lambda d: _authorized(st, id_tag, d, parents))
            return
    if st.sessions.pending is not None and authorize.same_id(st.sessions.pending.id_tag, id_tag):
        log.info("idTag %s is already waiting for a plug", id_tag)
        return
    if not any(is_free(st, c, check_reservations=False) and st.reservations.may_admit(c, id_tag)
               for c in st.connectors.values()):
        log.info("idTag %s presented but no connector is free for it", id_tag)
        return
    authorize.authorize(st, id_tag, lambda d: _authorized(st, id_tag, d, set()))


def _stop_by_parent(st: "Station", id_tag: str, parent: str) -> bool:
    for conn in st.connectors.values():
        tx = conn.tx
        if tx is not None and not tx.stopping and authorize.same_id(tx.parent_id_tag, parent):
            stop(st, conn, "Local", id_tag)
            return True
    return False


def _authorized(st: "Station", id_tag: str, decision: authorize.Decision,
                parents: set) -> None:
    if decision.accepted and decision.parent_id_tag and \
            authorize.id_key(decision.parent_id_tag) in parents:
        if _stop_by_parent(st, id_tag, decision.parent_id_tag):
            return
    if not decision.accepted:
        log.info("idTag %s not accepted (%s): no transaction", id_tag,
                 decision.info.get("status"))
        return
    offer(st, id_tag, decision)


def offer(st: "Station", id_tag: str, decision: authorize.Decision,
          connector_id: Optional[int] = None, reservation_id: Optional[int] = None) -> bool:
    """An accepted id: start where an EV waits, else wait `ConnectionTimeOut` for a plug."""
    candidates = [c for c in st.connectors.values()
                  if is_free(st, c, id_tag, decision.parent_id_tag)
                  and (connector_id is None or c.id == connector_id)]
    plugged = [c for c in candidates if c.pilot.vehicle_connected]
    if plugged:
        start(st, plugged[0], id_tag, decision, reservation_id)
        return True
    if not candidates:
        log.info("idTag %s accepted but no connector is free any more", id_tag)
        return False
    st.sessions.pending = Pending(id_tag, decision, reservation_id, connector_id)
    timeout = st.keys.int("ConnectionTimeOut")
    st.timers.set("connection-timeout", st.now + timeout, lambda: _connection_timed_out(st))
    log.info("idTag %s accepted; waiting %d s for a plug", id_tag, timeout)
    _notify_all(st)
    return True


def _connection_timed_out(st: "Station") -> None:
    pending, st.sessions.pending = st.sessions.pending, None
    if pending is not None:
        log.info("no EV plugged in within ConnectionTimeOut; idTag %s lapsed", pending.id_tag)
        _notify_all(st)


# -------------------------------------------------------------------- the hardware
def on_hardware(st: "Station", conn: "Connector", event) -> None:
    """A hardware event for `conn`: update its facts, then react (start, stop, report)."""
    if isinstance(event, hal_events.HardwareFault):
        if event.active:
            conn.faults[event.code] = event
            log.warning("connector %d fault %s: %s", conn.id, event.code.value, event.info)
            if event.code == hal_events.FaultCode.POWER_METER_FAILURE:
                conn.answer_readers(None)
        elif conn.faults.pop(event.code, None) is not None:
            log.info("connector %d fault %s cleared", conn.id, event.code.value)
        fault_changed(st, conn, event)
    elif isinstance(event, hal_events.PilotStateChanged):
        before, conn.pilot = conn.pilot, event.state
        if before.vehicle_connected != event.state.vehicle_connected:
            vehicle_changed(st, conn, event.state.vehicle_connected)
        elif not conn.occupied_by_ev:
            conn.finishing = False              # e.g. the first report after a restart
    elif isinstance(event, hal_events.MeterSampled):
        was_allowed = conn.authorized
        conn.reading = event.reading
        conn.answer_readers(event.reading)
        if conn.authorized == was_allowed:      # else MaxEnergyOnInvalidId was reached
            return
    elif isinstance(event, hal_events.CableDetected):
        conn.cable_ampacity = event.ampacity_a
        if not conn.occupied_by_ev:
            conn.finishing = False
    conn.changed()


def vehicle_changed(st: "Station", conn: "Connector", connected: bool) -> None:
    tx = conn.tx
    if connected:
        if tx is not None and tx.ev_disconnected:
            tx.ev_disconnected = False
            log.info("connector %d: the EV is back; transaction %d resumes", conn.id,
                     tx.local_id)
        elif tx is None and st.sessions.waiting_for_plug(conn):
            pending, st.sessions.pending = st.sessions.pending, None
            st.timers.cancel("connection-timeout")
            start(st, conn, pending.id_tag, pending.decision, pending.reservation_id)
            _notify_all(st)
        return
    if not conn.occupied_by_ev:
        conn.finishing = False
    if tx is None or tx.stopping:
        return
    if st.keys.bool("StopTransactionOnEVSideDisconnect"):
        stop(st, conn, "EVDisconnected")
    else:
        tx.ev_disconnected = True
        log.info("connector %d: EV side disconnected; transaction %d stays open",
                 conn.id, tx.local_id)


def fault_changed(st: "Station", conn: "Connector", event: hal_events.HardwareFault) -> None:
    if not event.active or event.code not in BLOCKING_FAULTS:
        return
    reason = "EmergencyStop" if event.code in EMERGENCY_FAULTS else "Other"
    targets = [c for c in st.connectors.values() if c.id != 0] if conn.id == 0 else [conn]
    for target in targets:
        if target.tx is not None and not target.tx.stopping:
            log.warning("connector %d: %s during transaction %d; stopping it (%s)", target.id,
                        event.code.value, target.tx.local_id, reason)
            stop(st, target, reason)


# -------------------------------------------------------------------- start and stop
def start(st: "Station", conn: "Connector", id_tag: str, decision: authorize.Decision,
          reservation_id: Optional[int] = None) -> bool:
    """Start a transaction on `conn` once a fresh reading gives its meterStart."""
    parent = decision.parent_id_tag
    if not is_free(st, conn, id_tag, parent) or not conn.pilot.vehicle_connected:
        return False
    if reservation_id is None:
        used = st.reservations.match(conn, id_tag, parent)
        reservation_id = used.reservation_id if used is not None else None
    conn.starting = True
    conn.finishing = False              # a new session: Finishing -> Preparing (4.9, F2)
    conn.changed()

    def begin(reading) -> None:
        conn.starting = False
        if reading is None or not is_free(st, conn, id_tag, parent) \
                or not conn.pilot.vehicle_connected:
            log.warning("connector %d: transaction for %s not started (%s)", conn.id, id_tag,
                        "no meter reading" if reading is None else "connector no longer ready")
            conn.changed()
            return
        begin_values = metering.stop_values(st, conn, reading, st.now, "Transaction.Begin")
        try:
            with st.store.transaction():   # a used reservation ends in the same commit
                tx = transactions.begin(st, conn, id_tag, decision, reading.energy_import_wh,
                                        reservation_id, begin_values)
                if reservation_id is not None:
                    st.reservations.remove(reservation_id, f"used by transaction {tx.local_id}")
        except Exception as exc:
            if not is_storage_fault(exc):
                raise
            log.warning("connector %d: transaction for %s not started: it cannot be stored",
                        conn.id, id_tag)
            st.write_faults.failed(exc)
            conn.changed()
            return
        conn.tx = tx
        conn.finishing = False
        metering.transaction_started(st, conn, tx)
        for hook in st.sessions.on_transaction_started:
            hook(conn)
        conn.changed()

    def locked(ok: bool) -> None:
        if not ok:                      # TC_024: ConnectorLockFailure, no transaction
            conn.starting = False
            log.warning("connector %d: the lock failed; transaction for %s not started",
                        conn.id, id_tag)
            conn.changed()
            return
        conn.read_meter(begin)

    if conn.info.has_lock:              # the plug is held before any energy can flow
        st.set_lock(conn.id, True, locked)
    else:
        conn.read_meter(begin)
    return True


def stop(st: "Station", conn: "Connector", reason: str, id_tag: Optional[str] = None) -> bool:
    """End the transaction on `conn`: power off now, StopTransaction after a final reading."""
    tx = conn.tx
    if tx is None or tx.stopping:
        return False
    tx.stopping, tx.stop_reason, tx.stop_id_tag = True, reason, id_tag
    metering.transaction_ended(st, conn)
    st.refresh_outputs(conn.id)                   # the contactor opens in this turn

    def finish(reading) -> None:
        if tx.local_id in st.ledger.stopped:
            return                                # ended meanwhile (clean shutdown)
        register = _best_register(st, conn, tx, reading)
        end_values = (metering.stop_values(st, conn, reading, st.now, "Transaction.End")
                      if reading is not None else [])
        at = st.now

        def commit(release: bool = True) -> None:
            if tx.local_id not in st.ledger.stopped:
                transactions.end(st, tx, reason, register, id_tag, at=at,
                                 end_values=end_values)
            if release and conn.tx is tx:
                _ended(st, conn, reason)

        try:
            commit()
        except Exception as exc:
            if not is_storage_fault(exc):
                raise
            # The reading at the stop is kept: billed with it once the disk takes writes.
            st.write_faults.keep_stop(tx.local_id, commit, exc)

    conn.read_meter(finish)
    return True


def _best_register(st: "Station", conn: "Connector", tx, reading) -> float:
    if reading is not None:
        return reading.energy_import_wh
    if conn.reading is not None:
        return conn.reading.energy_import_wh
    return st.ledger.last_reading(tx.local_id)[0]


def _ended(st: "Station", conn: "Connector", reason: str) -> None:
    conn.tx = None
    conn.finishing = conn.occupied_by_ev
    if conn.info.has_lock and (reason != "EVDisconnected"
                               or st.keys.bool("UnlockConnectorOnEVSideDisconnect")):
        st.set_lock(conn.id, False)
    conn.changed()
    for hook in st.sessions.on_transaction_ended:
        hook(conn)


def deauthorized(st: "Station", tx: transactions.Transaction, info: dict) -> None:
    """StartTransaction.conf did not accept the id of a running transaction (TC_037_2/3)."""
    conn = st.connectors.get(tx.connector_id)
    if conn is None or conn.tx is not tx or tx.stopping:
        return
    if st.keys.bool("StopTransactionOnInvalidId"):
        log.warning("transaction %d: idTag %s is %s; stopping (DeAuthorized)", tx.local_id,
                    tx.id_tag, info.get("status"))
        stop(st, conn, "DeAuthorized")
        return
    tx.deauthorized = True
    tx.energy_limit_wh = tx.meter_start_wh + st.keys.int("MaxEnergyOnInvalidId")
    log.warning("transaction %d: idTag %s is %s; energy limited to %d Wh in total",
                tx.local_id, tx.id_tag, info.get("status"), st.keys.int("MaxEnergyOnInvalidId"))
    conn.changed()


# -------------------------------------------------------------------- life cycle
def recover(st: "Station") -> None:
    """At start: close what a power cut left open (TC_032_2)."""
    for tx in transactions.recover(st):
        conn = st.connectors.get(tx.connector_id)
        if conn is not None:
            conn.finishing = True          # Finishing if the EV is still plugged in


def shutdown(st: "Station") -> None:
    """A clean stop (SIGTERM, reboot): end running transactions with reason Reboot now,
    with the latest reading, so nothing waits for a power-loss recovery."""
    for conn in st.connectors.values():
        tx = conn.tx
        if tx is None:
            continue
        if not tx.stopping:
            tx.stopping, tx.stop_reason = True, "Reboot"
            metering.transaction_ended(st, conn)
        unsaved = st.write_faults.unsaved_stops.pop(tx.local_id, None)
        try:
            if unsaved is not None:
                unsaved(release=False)    # the reading taken at the stop, not a later one
            else:
                register = _best_register(st, conn, tx, None)
                transactions.end(st, tx, tx.stop_reason or "Reboot", register,
                                 tx.stop_id_tag)
        except Exception as exc:
            if not is_storage_fault(exc):
                raise
            log.warning("transaction %d could not be closed on disk; it is stopped with "
                        "reason PowerLoss at the next start", tx.local_id)
            st.storage_failed(exc)
        conn.tx = None
        st.refresh_outputs(conn.id)
