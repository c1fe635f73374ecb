"""MeterValues: sampled during a transaction, clock-aligned at all times, and stop data.

Sampled values go out every `MeterValueSampleInterval` seconds counted from the
transaction's start (context Sample.Periodic, measurands `MeterValuesSampledData`).
Clock-aligned values go out on the boundaries of `ClockAlignedDataInterval` counted
from midnight UTC, with the boundary itself as timestamp (context Sample.Clock,
`MeterValuesAlignedData`), for every connector whether or not it charges.

The MeterValues of a transaction are transaction messages: they go through the
durable outbox, and each one also stores the transaction's latest reading, which
is the meterStop used if the power fails (chargepoint/operations/transactions.py).
Values meant for StopTransaction.transactionData (`StopTxnSampledData`,
`StopTxnAlignedData`, with Transaction.Begin and Transaction.End) are kept in the
`tx_stop_data` table in the same commits.

Every sample asks the hardware for a fresh reading (`Connector.read_meter`) and is
stamped with the instant it was due, so the intervals on the wire are exact.
"""
from __future__ import annotations

import json
import logging
import math
from typing import TYPE_CHECKING, Optional

from chargepoint.operations.transactions import Transaction, stamp
from hal.interfaces import MeterReading

if TYPE_CHECKING:
    from chargepoint.connector import Connector
    from chargepoint.station import Station

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


def sampled_values(conn: "Connector", reading: MeterReading, measurands: list[str],
                   context: str) -> list[dict]:
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

    offered = conn.offered_current() or 0.0
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


def meter_value(st: "Station", at: float, values: list[dict],
                tx: Optional[Transaction] = None) -> dict:
    """One meterValue at local instant `at` (on `tx`'s timeline when it belongs to one)."""
    return {"timestamp": stamp(st, at, tx), "sampledValue": values}


def _measurands(st: "Station", key: str) -> list[str]:
    return st.keys.list(key) or [DEFAULT_MEASURAND]


def stop_values(st: "Station", conn: "Connector", reading: MeterReading, at: float,
                context: str) -> list[dict]:
    """Transaction.Begin / Transaction.End entries for StopTransaction.transactionData."""
    measurands = st.keys.list("StopTxnSampledData")
    if not measurands:
        return []
    values = sampled_values(conn, reading, measurands, context)
    return [meter_value(st, at, values, conn.tx)] if values else []


# -------------------------------------------------------------------- sampled
def _timer(conn: "Connector") -> str:
    return f"sample:{conn.id}"


def transaction_started(st: "Station", conn: "Connector", tx: Transaction) -> None:
    interval = st.keys.int("MeterValueSampleInterval")
    if interval > 0:
        due = tx.started + interval
        st.timers.set(_timer(conn), due, lambda: _sample_due(st, conn, tx, due))
    _schedule_checkpoint(st, conn, tx)


def sample_interval_changed(st: "Station") -> None:
    """MeterValueSampleInterval changed: running transactions follow the new value at once
    (next sample on the new grid counted from their start; 0 stops sampling), and keep a
    checkpoint when sampling no longer stores the reading often enough."""
    interval = st.keys.int("MeterValueSampleInterval")
    for conn in st.connectors.values():
        tx = conn.tx
        if tx is None or tx.stopping:
            continue
        st.timers.cancel(_timer(conn))
        if interval > 0:
            due = tx.started + (math.floor((st.now - tx.started) / interval) + 1) * interval
            st.timers.set(_timer(conn), due,
                          lambda conn=conn, tx=tx, due=due: _sample_due(st, conn, tx, due))
        if st.timers.when(f"checkpoint:{conn.id}") is None:
            _schedule_checkpoint(st, conn, tx)


def transaction_ended(st: "Station", conn: "Connector") -> None:
    st.timers.cancel(_timer(conn))
    st.timers.cancel(f"checkpoint:{conn.id}")


def _sample_due(st: "Station", conn: "Connector", tx: Transaction, due: float) -> None:
    if conn.tx is not tx or tx.stopping:
        return
    interval = st.keys.int("MeterValueSampleInterval")
    if interval > 0:
        nxt = due + interval
        if nxt <= st.now:                      # the loop was held up: skip, don't burst
            nxt = st.now + interval
        st.timers.set(_timer(conn), nxt, lambda: _sample_due(st, conn, tx, nxt))
    conn.read_meter(lambda reading: _record_sample(st, conn, tx, reading, due))


def _record_sample(st: "Station", conn: "Connector", tx: Transaction,
                   reading: Optional[MeterReading], due: float) -> None:
    if reading is None or conn.tx is not tx or tx.stopping:
        return
    values = sampled_values(conn, reading, _measurands(st, "MeterValuesSampledData"),
                            "Sample.Periodic")
    _produce(st, conn, tx, reading, due, values, "StopTxnSampledData", "Sample.Periodic")


def _produce(st: "Station", conn: "Connector", tx: Transaction, reading: MeterReading,
             at: float, values: list[dict], stop_key: str, context: str) -> None:
    """One durable commit: the transaction's MeterValues, its stop data (measurands of
    `stop_key`) and its latest reading, the meterStop a power cut would use."""
    stop_measurands = st.keys.list(stop_key)
    with st.store.transaction():
        if values:
            st.outbox.produce("MeterValues", {"connectorId": conn.id,
                                              "meterValue": [meter_value(st, at, values, tx)]},
                              tx.local_id, st.now)
        if stop_measurands:
            _keep_for_stop(st, tx, meter_value(st, at, sampled_values(
                conn, reading, stop_measurands, context), tx))
        _store_reading(st, tx, reading, at)


def _keep_for_stop(st: "Station", tx: Transaction, value: dict) -> None:
    if value["sampledValue"]:
        st.store.execute("INSERT INTO tx_stop_data(tx_local, meter_value) VALUES(?, ?)",
                         (tx.local_id, json.dumps(value, separators=(",", ":"))))


def _store_reading(st: "Station", tx: Transaction, reading: MeterReading, at: float) -> None:
    st.store.execute("UPDATE transactions SET last_wh=?, last_ts=? WHERE local_id=?",
                     (reading.energy_import_wh, at, tx.local_id))
    st.store.on_commit(lambda: tx.info.__setitem__("stored_wh", reading.energy_import_wh))


def _schedule_checkpoint(st: "Station", conn: "Connector", tx: Transaction) -> None:
    interval = st.keys.int("MeterValueSampleInterval")
    if 0 < interval <= CHECKPOINT_S:
        return                                  # every sample already stores the reading
    st.timers.set(f"checkpoint:{conn.id}", st.now + CHECKPOINT_S,
                  lambda: _checkpoint(st, conn, tx))


def _checkpoint(st: "Station", conn: "Connector", tx: Transaction) -> None:
    if conn.tx is not tx or tx.stopping:
        return
    _schedule_checkpoint(st, conn, tx)
    reading = conn.reading
    if reading is not None and reading.energy_import_wh != tx.info.get("stored_wh"):
        with st.store.transaction():
            _store_reading(st, tx, reading, st.now)


# -------------------------------------------------------------------- clock-aligned
def schedule_aligned(st: "Station", boundary: Optional[float] = None) -> None:
    """(Re)arm the next clock-aligned sample (after a key change or a new clock)."""
    interval = st.keys.int("ClockAlignedDataInterval")
    if interval <= 0 or not st.time_known:
        st.timers.cancel("aligned")
        return
    if boundary is None:
        boundary = (math.floor(st.station_time() / interval) + 1) * interval
    st.timers.set("aligned", st.clock.to_local(boundary), lambda: _aligned_due(st, boundary))


def _aligned_due(st: "Station", boundary: float) -> None:
    interval = st.keys.int("ClockAlignedDataInterval")
    if interval > 0:
        nxt = boundary + interval
        if st.clock.to_local(nxt) <= st.now:
            nxt = None                          # fell behind (clock jump): realign
        schedule_aligned(st, nxt)
    # Stamped with the boundary itself: the offset may have moved a little since the
    # timer was armed (a correction too small to re-arm it).
    at = st.clock.to_local(boundary)
    for cid, conn in st.connectors.items():
        if cid != 0:
            conn.read_meter(lambda reading, conn=conn: _record_aligned(st, conn, reading, at))


def _record_aligned(st: "Station", conn: "Connector", reading: Optional[MeterReading],
                    at: float) -> None:
    if reading is None:
        return
    values = sampled_values(conn, reading, _measurands(st, "MeterValuesAlignedData"),
                            "Sample.Clock")
    tx = conn.tx
    if tx is None or tx.stopping:
        if values and st.connected and st.accepted:
            st.send_call("MeterValues", {"connectorId": conn.id,
                                         "meterValue": [meter_value(st, at, values)]})
        return
    _produce(st, conn, tx, reading, at, values, "StopTxnAlignedData", "Sample.Clock")


def trigger(st: "Station", connector_id: Optional[int]) -> bool:
    """TriggerMessage(MeterValues): the current values now, outside the durable queue.
    False if the outgoing queue has no room for them (the reading is not even taken)."""
    ids = [c for c in st.connectors if c != 0] if connector_id in (None, 0) else [connector_id]
    if not all(st.calls.has_room("MeterValues", {"connectorId": cid}) for cid in ids):
        return False
    for cid in ids:
        conn = st.connectors[cid]

        def send(reading: Optional[MeterReading], conn=conn) -> None:
            now = st.timestamp()
            if reading is None or now is None:      # no reading, or no trustworthy time
                log.warning("triggered MeterValues for connector %d not sent: %s", conn.id,
                            "no meter reading" if reading is None else "the time is unknown")
                return
            values = sampled_values(conn, reading, _measurands(st, "MeterValuesSampledData"),
                                    "Trigger")
            body = {"connectorId": conn.id,
                    "meterValue": [{"timestamp": now, "sampledValue": values}]}
            if conn.tx is not None and conn.tx.transaction_id is not None:
                body["transactionId"] = conn.tx.transaction_id
            st.send_call("MeterValues", body, before_accept=True)
        conn.read_meter(send)
    return True
