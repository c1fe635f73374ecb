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
written by chargepoint/model/transactions.py. What must follow a start or an end (the
meter schedule, a TxProfile, a scheduled availability change, a reservation of
connector 0 moving) is called here, in that order.
"""
from __future__ import annotations

import logging
from typing import Optional

from chargepoint.model.authorization import Authorization, Decision, id_key, same_id
from chargepoint.model.availability import Availability
from chargepoint.model.clock import StationClock
from chargepoint.model.connector import BLOCKING_FAULTS, Connector, Connectors
from chargepoint.model.firmware import Firmware
from chargepoint.model.locks import Locks
from chargepoint.model.meter_reads import MeterReads
from chargepoint.model.metering import Metering
from chargepoint.model.plug_wait import Pending, PlugWait
from chargepoint.model.reservations import Reservations
from chargepoint.model.smart_charging import SmartCharging
from chargepoint.model.transactions import Transaction, Transactions
from chargepoint.model.write_faults import WriteFaults, is_storage_fault
from chargepoint.ocpp_keys import OcppKeys
from hal import events as hal_events

log = logging.getLogger("chargepoint.sessions")

#: Faults that cut the power as an emergency rather than a malfunction.
EMERGENCY_FAULTS = frozenset({hal_events.FaultCode.GROUND_FAILURE,
                              hal_events.FaultCode.OVER_CURRENT_FAILURE})


class Sessions:
    """Starts and stops transactions from what drivers, EVs and the hardware do. Loop
    thread only."""

    def __init__(self, keys: OcppKeys, clock: StationClock, connectors: Connectors,
                 authorization: Authorization, availability: Availability,
                 reservations: Reservations, plug_wait: PlugWait, smart: SmartCharging,
                 metering: Metering, transactions: Transactions, reads: MeterReads,
                 locks: Locks, write_faults: WriteFaults, firmware: Firmware):
        self._keys = keys
        self._clock = clock
        self._connectors = connectors
        self._authorization = authorization
        self._availability = availability
        self._reservations = reservations
        self._plug_wait = plug_wait
        self._smart = smart
        self._metering = metering
        self._transactions = transactions
        self._reads = reads
        self._locks = locks
        self._write_faults = write_faults
        self._firmware = firmware

    # ---------------------------------------------------------------- a tag is presented
    def on_tag(self, id_tag: str) -> None:
        log.info("idTag %s presented", id_tag)
        running = [c for c in self._connectors.values() if c.tx is not None
                   and not c.tx.stopping]
        for conn in running:
            if same_id(conn.tx.id_tag, id_tag):
                self.stop(conn, "Local", id_tag)
                return
        parents = {id_key(c.tx.parent_id_tag) for c in running if c.tx.parent_id_tag}
        auth = self._authorization
        if parents:
            local = auth.local_entry(id_tag)
            valid = local is not None and auth.is_valid(local[0])
            if valid and id_key(local[0].get("parentIdTag")) in parents:
                self._stop_by_parent(id_tag, local[0]["parentIdTag"])
                return
            if not valid:
                # Only the CSMS knows this id's group, or whether a refused id is valid
                # again: ask before deciding (TC_069).
                auth.authorize(id_tag, lambda d: self._authorized(id_tag, d, parents))
                return
        pending = self._plug_wait.pending
        if pending is not None and same_id(pending.id_tag, id_tag):
            log.info("idTag %s is already waiting for a plug", id_tag)
            return
        if not any(self._availability.idle(c) and self._reservations.may_admit(c, id_tag)
                   for c in self._connectors.values()):
            log.info("idTag %s presented but no connector is free for it", id_tag)
            return
        auth.authorize(id_tag, lambda d: self._authorized(id_tag, d, set()))

    def _stop_by_parent(self, id_tag: str, parent: str) -> bool:
        for conn in self._connectors.values():
            tx = conn.tx
            if tx is not None and not tx.stopping and same_id(tx.parent_id_tag, parent):
                self.stop(conn, "Local", id_tag)
                return True
        return False

    def _authorized(self, id_tag: str, decision: Decision, parents: set) -> None:
        if decision.accepted and decision.parent_id_tag and \
                id_key(decision.parent_id_tag) in parents:
            if self._stop_by_parent(id_tag, decision.parent_id_tag):
                return
        if not decision.accepted:
            log.info("idTag %s not accepted (%s): no transaction", id_tag,
                     decision.info.get("status"))
            return
        self.offer(id_tag, decision)

    def offer(self, id_tag: str, decision: Decision, connector_id: Optional[int] = None,
              reservation_id: Optional[int] = None) -> bool:
        """An accepted id: start where an EV waits, else wait `ConnectionTimeOut` for a plug."""
        candidates = [c for c in self._connectors.values()
                      if self._reservations.free_for(c, id_tag, decision.parent_id_tag)
                      and (connector_id is None or c.id == connector_id)]
        plugged = [c for c in candidates if c.pilot.vehicle_connected]
        if plugged:
            self.start(plugged[0], id_tag, decision, reservation_id)
            return True
        if not candidates:
            log.info("idTag %s accepted but no connector is free any more", id_tag)
            return False
        self._plug_wait.wait(Pending(id_tag, decision, reservation_id, connector_id))
        return True

    # ---------------------------------------------------------------- the hardware
    def on_hardware(self, conn: Connector, event) -> None:
        """A hardware event for `conn`: update its facts, then react (start, stop)."""
        if isinstance(event, hal_events.HardwareFault):
            conn.apply_fault(event)
            if event.active and event.code == hal_events.FaultCode.POWER_METER_FAILURE:
                self._reads.answer(conn, None)
            self._fault_changed(conn, event)
        elif isinstance(event, hal_events.PilotStateChanged):
            before, conn.pilot = conn.pilot, event.state
            if before.vehicle_connected != event.state.vehicle_connected:
                self._vehicle_changed(conn, event.state.vehicle_connected)
            elif not conn.occupied_by_ev:
                conn.finishing = False          # e.g. the first report after a restart
        elif isinstance(event, hal_events.MeterSampled):
            was_allowed = conn.authorized
            conn.reading = event.reading
            self._reads.answer(conn, event.reading)
            if conn.authorized == was_allowed:  # else MaxEnergyOnInvalidId was reached
                return
        elif isinstance(event, hal_events.CableDetected):
            conn.cable_ampacity = event.ampacity_a
            if not conn.occupied_by_ev:
                conn.finishing = False
        conn.changed()

    def lock_answered(self, connector_id: int, locked: bool, ok: bool) -> None:
        """The lock did (or did not) what it was told: its health is a fault like any other."""
        conn = self._connectors.get(connector_id)
        if conn is not None:
            failing = hal_events.FaultCode.CONNECTOR_LOCK_FAILURE in conn.faults
            if failing == ok:                   # the lock's health changed
                self.on_hardware(conn, hal_events.HardwareFault(
                    conn.id, hal_events.FaultCode.CONNECTOR_LOCK_FAILURE, not ok,
                    "" if ok else "lock did not " + ("lock" if locked else "unlock")))
        self._locks.answered(connector_id, ok)

    def _vehicle_changed(self, conn: Connector, connected: bool) -> None:
        tx = conn.tx
        if connected:
            if tx is not None and tx.ev_disconnected:
                tx.ev_disconnected = False
                log.info("connector %d: the EV is back; transaction %d resumes", conn.id,
                         tx.local_id)
            elif tx is None and self._plug_wait.waiting_for_plug(conn):
                pending = self._plug_wait.take()
                self.start(conn, pending.id_tag, pending.decision, pending.reservation_id)
            return
        if not conn.occupied_by_ev:
            conn.finishing = False
        if tx is None or tx.stopping:
            return
        if self._keys.bool("StopTransactionOnEVSideDisconnect"):
            self.stop(conn, "EVDisconnected")
        else:
            tx.ev_disconnected = True
            log.info("connector %d: EV side disconnected; transaction %d stays open",
                     conn.id, tx.local_id)

    def _fault_changed(self, conn: Connector, event: hal_events.HardwareFault) -> None:
        if not event.active or event.code not in BLOCKING_FAULTS:
            return
        reason = "EmergencyStop" if event.code in EMERGENCY_FAULTS else "Other"
        targets = self._connectors.outlets() if conn.id == 0 else [conn]
        for target in targets:
            if target.tx is not None and not target.tx.stopping:
                log.warning("connector %d: %s during transaction %d; stopping it (%s)",
                            target.id, event.code.value, target.tx.local_id, reason)
                self.stop(target, reason)

    # ---------------------------------------------------------------- start and stop
    def start(self, conn: Connector, id_tag: str, decision: Decision,
              reservation_id: Optional[int] = None) -> bool:
        """Start a transaction on `conn` once a fresh reading gives its meterStart."""
        parent = decision.parent_id_tag
        reservations = self._reservations
        if not reservations.free_for(conn, id_tag, parent) or not conn.pilot.vehicle_connected:
            return False
        if reservation_id is None:
            used = reservations.match(conn, id_tag, parent)
            reservation_id = used.reservation_id if used is not None else None
        conn.starting = True
        conn.finishing = False          # a new session: Finishing -> Preparing (4.9, F2)
        conn.changed()

        def begin(reading) -> None:
            conn.starting = False
            conn.changed()
            if reading is None or not reservations.free_for(conn, id_tag, parent) \
                    or not conn.pilot.vehicle_connected:
                log.warning("connector %d: transaction for %s not started (%s)", conn.id,
                            id_tag, "no meter reading" if reading is None
                            else "connector no longer ready")
                return
            now = self._clock.now
            begin_values = self._metering.stop_values(conn, reading, now, "Transaction.Begin")
            def use_reservation(tx: Transaction) -> None:
                if reservation_id is not None:
                    reservations.remove(reservation_id, f"used by transaction {tx.local_id}")

            try:                        # a used reservation ends in the same commit
                tx = self._transactions.begin(conn.id, id_tag, parent,
                                              reading.energy_import_wh, reservation_id,
                                              begin_values, also=use_reservation,
                                              why=decision.source)
            except Exception as exc:
                if not is_storage_fault(exc):
                    raise
                log.warning("connector %d: transaction for %s not started: it cannot be "
                            "stored", conn.id, id_tag)
                self._write_faults.failed(exc)
                return
            conn.tx = tx
            conn.finishing = False
            self._metering.transaction_started(conn, tx)
            self._smart.transaction_started(conn)

        def locked(ok: bool) -> None:
            if not ok:                  # TC_024: ConnectorLockFailure, no transaction
                conn.starting = False
                log.warning("connector %d: the lock failed; transaction for %s not started",
                            conn.id, id_tag)
                conn.changed()
                return
            self._reads.read(conn, begin)

        if conn.info.has_lock:          # the plug is held before any energy can flow
            self._locks.set(conn.id, True, locked)
        else:
            self._reads.read(conn, begin)
        return True

    def stop(self, conn: Connector, reason: str, id_tag: Optional[str] = None) -> bool:
        """End the transaction on `conn`: power off now (the contactor opens in this turn),
        StopTransaction after a final reading."""
        tx = conn.tx
        if tx is None or tx.stopping:
            return False
        tx.stopping, tx.stop_reason, tx.stop_id_tag = True, reason, id_tag
        self._metering.transaction_ended(conn)
        conn.changed()
        ledger = self._transactions.ledger

        def finish(reading) -> None:
            if tx.local_id in ledger.stopped:
                return                          # ended meanwhile (clean shutdown)
            register = self._best_register(conn, tx, reading)
            at = self._clock.now
            end_values = (self._metering.stop_values(conn, reading, at, "Transaction.End")
                          if reading is not None else [])

            def commit(release: bool = True) -> None:
                if tx.local_id not in ledger.stopped:
                    self._transactions.end(tx, reason, register, id_tag, at=at,
                                           end_values=end_values)
                if release and conn.tx is tx:
                    self._ended(conn, reason)

            try:
                commit()
            except Exception as exc:
                if not is_storage_fault(exc):
                    raise
                # The reading at the stop is kept: billed with it once the disk takes writes.
                self._write_faults.keep_stop(tx.local_id, commit, exc)

        self._reads.read(conn, finish)
        return True

    def stop_by_transaction_id(self, transaction_id: int, reason: str) -> bool:
        """Stop the running transaction the CSMS knows as `transaction_id`, if any."""
        for conn in self._connectors.values():
            tx = conn.tx
            if tx is not None and not tx.stopping and tx.transaction_id == transaction_id:
                return self.stop(conn, reason)
        return False

    def stop_all(self, reason: str) -> None:
        for conn in self._connectors.values():
            if conn.tx is not None:
                self.stop(conn, reason)

    def _best_register(self, conn: Connector, tx: Transaction, reading) -> float:
        if reading is not None:
            return reading.energy_import_wh
        if conn.reading is not None:
            return conn.reading.energy_import_wh
        return self._transactions.ledger.last_reading(tx.local_id)[0]

    def _ended(self, conn: Connector, reason: str) -> None:
        conn.tx = None
        conn.finishing = conn.occupied_by_ev
        if conn.info.has_lock and (reason != "EVDisconnected"
                                   or self._keys.bool("UnlockConnectorOnEVSideDisconnect")):
            self._locks.set(conn.id, False)
        conn.changed()
        self._smart.transaction_ended(conn)
        self._reservations.transaction_ended()
        self._availability.apply_scheduled()
        self._firmware.transaction_ended()

    def deauthorized(self, tx: Transaction, info: dict) -> None:
        """StartTransaction.conf did not accept the id of a running transaction
        (TC_037_2/3)."""
        conn = self._connectors.get(tx.connector_id)
        if conn is None or conn.tx is not tx or tx.stopping:
            return
        if self._keys.bool("StopTransactionOnInvalidId"):
            log.warning("transaction %d: idTag %s is %s; stopping (DeAuthorized)", tx.local_id,
                        tx.id_tag, info.get("status"))
            self.stop(conn, "DeAuthorized")
            return
        limit = self._keys.int("MaxEnergyOnInvalidId")
        tx.deauthorized = True
        tx.energy_limit_wh = tx.meter_start_wh + limit
        log.warning("transaction %d: idTag %s is %s; energy limited to %d Wh in total",
                    tx.local_id, tx.id_tag, info.get("status"), limit)
        conn.changed()

    # ---------------------------------------------------------------- life cycle
    def recover(self) -> None:
        """At start: close what a power cut left open (TC_032_2), then apply the
        availability changes that waited for them."""
        for tx in self._transactions.recover():
            conn = self._connectors.get(tx.connector_id)
            if conn is not None:
                conn.finishing = True           # Finishing if the EV is still plugged in
        self._availability.apply_scheduled()

    def shutdown(self) -> None:
        """A clean stop (SIGTERM, reboot): end running transactions with reason Reboot now,
        with the latest reading, so nothing waits for a power-loss recovery."""
        for conn in self._connectors.values():
            tx = conn.tx
            if tx is None:
                continue
            if not tx.stopping:
                tx.stopping, tx.stop_reason = True, "Reboot"
                self._metering.transaction_ended(conn)
            unsaved = self._write_faults.unsaved_stops.pop(tx.local_id, None)
            try:
                if unsaved is not None:
                    unsaved(release=False)      # the reading taken at the stop, not a later one
                else:
                    register = self._best_register(conn, tx, None)
                    self._transactions.end(tx, tx.stop_reason or "Reboot", register,
                                           tx.stop_id_tag)
            except Exception as exc:
                if not is_storage_fault(exc):
                    raise
                log.warning("transaction %d could not be closed on disk; it is stopped with "
                            "reason PowerLoss at the next start", tx.local_id)
                self._write_faults.failed(exc)
            conn.tx = None
            conn.changed()
