"""MeterValues: sampled during a transaction, clock-aligned at all times, and stop data.

Sampled values go out every `MeterValueSampleInterval` seconds counted from the
transaction's start (context Sample.Periodic, measurands `MeterValuesSampledData`).
Clock-aligned values go out on the boundaries of `ClockAlignedDataInterval` counted
from midnight UTC, with the boundary itself as timestamp (context Sample.Clock,
`MeterValuesAlignedData`), for every connector whether or not it charges.

The MeterValues of a transaction are transaction messages: they go through the
durable outbox, and each one also stores the transaction's latest reading, which
is the meterStop used if the power fails (chargepoint/model/transactions.py).
Values meant for StopTransaction.transactionData (`StopTxnSampledData`,
`StopTxnAlignedData`, with Transaction.Begin and Transaction.End) are kept in the
`tx_stop_data` table in the same commits.

Every sample asks the hardware for a fresh reading (chargepoint/model/meter_reads.py) and is
stamped with the instant it was due, so the intervals on the wire are exact.
"""
from __future__ import annotations

import logging
import math
from typing import Optional

from chargepoint.model.clock import StationClock
from chargepoint.model.connector import Connector, Connectors
from chargepoint.model.link import Link
from chargepoint.model.meter_reads import MeterReads
from chargepoint.model.outbox import Outbox
from chargepoint.model.status import ConnectorView
from chargepoint.model.transactions import Transaction, Transactions
from chargepoint.ocpp_keys import OcppKeys
from chargepoint.store import Store
from chargepoint.timers import Timers
from hal.interfaces import MeterReading

log = logging.getLogger("chargepoint.metering")

DEFAULT_MEASURAND = "Energy.Active.Import.Register"

#: With no sampling (or a slow one) the running transaction's reading still reaches the
#: disk this often, bounding the energy a power cut can leave unbilled.
CHECKPOINT_S = 60

_PHASES = ("L1", "L2", "L3")
_PHASES_N = ("L1-N", "L2-N", "L3-N")


def _fmt(value: float) -> str:
    text = f"{value:.3f}".rstrip("0").rstrip(".")
    return "0" if text in ("", "-0") else text


def sampled_values(conn: Connector, offered: Optional[float], reading: MeterReading,
                   measurands: list[str], context: str) -> list[dict]:
    """The sampledValue list for `measurands`, as OCPP 1.6 spells units and phases."""
    out: list[dict] = []

    def add(measurand: str, value: Optional[float], unit: Optional[str],
            phase: Optional[str] = None) -> None:
        if value is None:
            return
        item = {"value": _fmt(value), "context": context, "format": "Raw",
                "measurand": measurand, "location": "Outlet"}
        if phase:
            item["phase"] = phase
        if unit:
            item["unit"] = unit
        out.append(item)

    def per_phase(measurand: str, values, unit: str, labels) -> None:
        for label, value in zip(labels, values or ()):
            add(measurand, value, unit, label)

    offered = offered or 0.0
    for measurand in measurands:
        if measurand == "Energy.Active.Import.Register":
            add(measurand, reading.energy_import_wh, "Wh")
        elif measurand == "Energy.Active.Export.Register":
            add(measurand, reading.energy_export_wh, "Wh")
        elif measurand == "Power.Active.Import":
            add(measurand, reading.power_w, "W")
        elif measurand == "Current.Import":
            per_phase(measurand, reading.current_a, "A", _PHASES)
        elif measurand == "Voltage":
            per_phase(measurand, reading.voltage_v, "V", _PHASES_N)
        elif measurand == "Frequency":
            add(measurand, reading.frequency_hz, None)
        elif measurand == "Current.Offered":
            add(measurand, offered, "A")
        elif measurand == "Power.Offered":
            add(measurand, offered * conn.info.phases * conn.info.nominal_voltage_v, "W")
        else:
            log.debug("measurand %s has no source on connector %d", measurand, conn.id)
    return out


def _timer(conn: Connector) -> str:
    return f"sample:{conn.id}"


class Metering:
    """Sampled, clock-aligned and triggered meter values. Loop thread only."""

    def __init__(self, keys: OcppKeys, clock: StationClock, timers: Timers, store: Store,
                 connectors: Connectors, view: ConnectorView, reads: MeterReads,
                 transactions: Transactions, outbox: Outbox, link: Link):
        self._keys = keys
        self._clock = clock
        self._timers = timers
        self._store = store
        self._connectors = connectors
        self._view = view
        self._reads = reads
        self._transactions = transactions
        self._outbox = outbox
        self._link = link

    def _values(self, conn: Connector, reading: MeterReading, measurands: list[str],
                context: str) -> list[dict]:
        return sampled_values(conn, self._view.offered_current(conn), reading, measurands,
                              context)

    def meter_value(self, at: float, values: list[dict],
                    tx: Optional[Transaction] = None) -> dict:
        """One meterValue at local instant `at` (on `tx`'s timeline when it belongs to one)."""
        return {"timestamp": self._transactions.stamp(at, tx), "sampledValue": values}

    def _measurands(self, key: str) -> list[str]:
        return self._keys.list(key) or [DEFAULT_MEASURAND]

    def stop_values(self, conn: Connector, reading: MeterReading, at: float,
                    context: str) -> list[dict]:
        """Transaction.Begin / Transaction.End entries for StopTransaction.transactionData."""
        measurands = self._keys.list("StopTxnSampledData")
        if not measurands:
            return []
        values = self._values(conn, reading, measurands, context)
        return [self.meter_value(at, values, conn.tx)] if values else []

    # ---------------------------------------------------------------- sampled
    def transaction_started(self, conn: Connector, tx: Transaction) -> None:
        interval = self._keys.int("MeterValueSampleInterval")
        if interval > 0:
            due = tx.started + interval
            self._timers.set(_timer(conn), due, lambda: self._sample_due(conn, tx, due))
        self._schedule_checkpoint(conn, tx)

    def sample_interval_changed(self) -> None:
        """MeterValueSampleInterval changed: running transactions follow the new value at
        once (next sample on the new grid counted from their start; 0 stops sampling), and
        keep a checkpoint when sampling no longer stores the reading often enough."""
        interval = self._keys.int("MeterValueSampleInterval")
        now = self._clock.now
        for conn in self._connectors.values():
            tx = conn.tx
            if tx is None or tx.stopping:
                continue
            self._timers.cancel(_timer(conn))
            if interval > 0:
                due = tx.started + (math.floor((now - tx.started) / interval) + 1) * interval
                self._timers.set(_timer(conn), due,
                                 lambda conn=conn, tx=tx, due=due: self._sample_due(conn, tx,
                                                                                    due))
            if self._timers.when(f"checkpoint:{conn.id}") is None:
                self._schedule_checkpoint(conn, tx)

    def transaction_ended(self, conn: Connector) -> None:
        self._timers.cancel(_timer(conn))
        self._timers.cancel(f"checkpoint:{conn.id}")

    def _sample_due(self, conn: Connector, tx: Transaction, due: float) -> None:
        if conn.tx is not tx or tx.stopping:
            return
        interval = self._keys.int("MeterValueSampleInterval")
        if interval > 0:
            nxt = due + interval
            if nxt <= self._clock.now:           # the loop was held up: skip, don't burst
                nxt = self._clock.now + interval
            self._timers.set(_timer(conn), nxt, lambda: self._sample_due(conn, tx, nxt))
        self._reads.read(conn, lambda reading: self._record_sample(conn, tx, reading, due))

    def _record_sample(self, conn: Connector, tx: Transaction,
                       reading: Optional[MeterReading], due: float) -> None:
        if reading is None or conn.tx is not tx or tx.stopping:
            return
        values = self._values(conn, reading, self._measurands("MeterValuesSampledData"),
                              "Sample.Periodic")
        self._produce(conn, tx, reading, due, values, "StopTxnSampledData", "Sample.Periodic")

    def _produce(self, conn: Connector, tx: Transaction, reading: MeterReading, at: float,
                 values: list[dict], stop_key: str, context: str) -> None:
        """One durable commit: the transaction's MeterValues, its stop data (measurands of
        `stop_key`) and its latest reading, the meterStop a power cut would use."""
        stop_measurands = self._keys.list(stop_key)
        with self._store.transaction():
            if values:
                self._outbox.produce("MeterValues", {
                    "connectorId": conn.id, "meterValue": [self.meter_value(at, values, tx)]},
                    tx.local_id, self._clock.now)
            if stop_measurands:
                value = self.meter_value(at, self._values(conn, reading, stop_measurands,
                                                          context), tx)
                if value["sampledValue"]:
                    self._transactions.keep_for_stop(tx, value)
            self._transactions.store_reading(tx, reading.energy_import_wh, at)

    def _schedule_checkpoint(self, conn: Connector, tx: Transaction) -> None:
        interval = self._keys.int("MeterValueSampleInterval")
        if 0 < interval <= CHECKPOINT_S:
            return                              # every sample already stores the reading
        self._timers.set(f"checkpoint:{conn.id}", self._clock.now + CHECKPOINT_S,
                         lambda: self._checkpoint(conn, tx))

    def _checkpoint(self, conn: Connector, tx: Transaction) -> None:
        if conn.tx is not tx or tx.stopping:
            return
        self._schedule_checkpoint(conn, tx)
        reading = conn.reading
        if reading is not None and reading.energy_import_wh != tx.info.get("stored_wh"):
            with self._store.transaction():
                self._transactions.store_reading(tx, reading.energy_import_wh,
                                                 self._clock.now)

    # ---------------------------------------------------------------- clock-aligned
    def schedule_aligned(self, boundary: Optional[float] = None) -> None:
        """(Re)arm the next clock-aligned sample (after a key change or a new clock)."""
        interval = self._keys.int("ClockAlignedDataInterval")
        clock = self._clock
        if interval <= 0 or not clock.known:
            self._timers.cancel("aligned")
            return
        if boundary is None:
            boundary = (math.floor(clock.station_time() / interval) + 1) * interval
        self._timers.set("aligned", clock.to_local(boundary),
                         lambda: self._aligned_due(boundary))

    def _aligned_due(self, boundary: float) -> None:
        interval = self._keys.int("ClockAlignedDataInterval")
        clock = self._clock
        if interval > 0:
            nxt = boundary + interval
            if clock.to_local(nxt) <= clock.now:
                nxt = None                      # fell behind (clock jump): realign
            self.schedule_aligned(nxt)
        # Stamped with the boundary itself: the offset may have moved a little since the
        # timer was armed (a correction too small to re-arm it).
        at = clock.to_local(boundary)
        for conn in self._connectors.outlets():
            self._reads.read(conn, lambda reading, conn=conn: self._record_aligned(
                conn, reading, at))

    def _record_aligned(self, conn: Connector, reading: Optional[MeterReading],
                        at: float) -> None:
        if reading is None:
            return
        values = self._values(conn, reading, self._measurands("MeterValuesAlignedData"),
                              "Sample.Clock")
        tx = conn.tx
        if tx is None or tx.stopping:
            if values and self._link.online:
                self._link.send_call("MeterValues", {"connectorId": conn.id,
                                                     "meterValue": [self.meter_value(at,
                                                                                     values)]})
            return
        self._produce(conn, tx, reading, at, values, "StopTxnAlignedData", "Sample.Clock")

    # ---------------------------------------------------------------- triggered
    def trigger(self, connector_id: Optional[int]) -> bool:
        """TriggerMessage(MeterValues): the current values now, outside the durable queue.
        False if the outgoing queue has no room for them (the reading is not even taken)."""
        ids = ([c.id for c in self._connectors.outlets()] if connector_id in (None, 0)
               else [connector_id])
        if not all(self._link.has_room("MeterValues", {"connectorId": cid}) for cid in ids):
            return False
        for cid in ids:
            conn = self._connectors[cid]
            self._reads.read(conn, lambda reading, conn=conn: self._send_triggered(conn,
                                                                                   reading))
        return True

    def _send_triggered(self, conn: Connector, reading: Optional[MeterReading]) -> None:
        now = self._clock.timestamp()
        if reading is None or now is None:      # no reading, or no trustworthy time
            log.warning("triggered MeterValues for connector %d not sent: %s", conn.id,
                        "no meter reading" if reading is None else "the time is unknown")
            return
        values = self._values(conn, reading, self._measurands("MeterValuesSampledData"),
                              "Trigger")
        body = {"connectorId": conn.id,
                "meterValue": [{"timestamp": now, "sampledValue": values}]}
        if conn.tx is not None and conn.tx.transaction_id is not None:
            body["transactionId"] = conn.tx.transaction_id
        self._link.send_call("MeterValues", body, before_accept=True)
