"""StartTransaction and StopTransaction: a transaction's durable beginning and end.

`begin` and `end` write the transaction's row and its message to SQLite in one
commit (chargepoint/model/outbox.py keeps it, chargepoint/model/delivery.py sends it);
this module owns the `transactions` and `tx_stop_data` tables. The confirmations come
back through `delivered`: StartTransaction.conf gives the transactionId (filled into the queued
messages that follow, TC_039) and an idTagInfo that may de-authorize a running
transaction (`StopTransactionOnInvalidId`, `MaxEnergyOnInvalidId`, TC_037_2/3).

After a power cut, `recover` stops every transaction left open with reason
PowerLoss and the last reading that reached the disk (TC_032_2).
"""
from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from typing import Callable, Optional

from chargepoint.model.clock import StationClock, iso
from chargepoint.model.outbox import LOCAL_TIME, Item, Outbox
from chargepoint.store import Store

log = logging.getLogger("chargepoint.transactions")

#: Every reason OCPP 1.6 defines for StopTransaction (section 7.45).
STOP_REASONS = frozenset({"EmergencyStop", "EVDisconnected", "HardReset", "Local", "Other",
                          "PowerLoss", "Reboot", "Remote", "SoftReset", "UnlockCommand",
                          "DeAuthorized"})


@dataclass
class Transaction:
    local_id: int
    connector_id: int
    id_tag: str
    meter_start_wh: int
    started: float                       # the local clock (`clock.now`) at the start
    parent_id_tag: Optional[str] = None
    reservation_id: Optional[int] = None
    transaction_id: Optional[int] = None
    #: StartTransaction.conf did not accept the id and StopTransactionOnInvalidId is false:
    #: energy flows up to `energy_limit_wh` (register value), then the EVSE suspends.
    deauthorized: bool = False
    energy_limit_wh: Optional[float] = None
    #: The EV side was unplugged with StopTransactionOnEVSideDisconnect=false (TC_005_3).
    ev_disconnected: bool = False
    #: The stop is decided (reason, idTag) and waits for the final meter reading.
    stopping: bool = False
    stop_reason: Optional[str] = None
    stop_id_tag: Optional[str] = None
    info: dict = field(default_factory=dict)
    #: Real time (UTC seconds) of the start, once known: the transaction's timestamps
    #: are this plus the local time elapsed (chargepoint/model/clock.py).
    anchor: Optional[float] = None

    def energy_allowed(self, register_wh: Optional[float]) -> bool:
        if self.stopping or self.ev_disconnected:    # nobody to offer current to
            return False
        if not self.deauthorized:
            return True
        return (self.energy_limit_wh is not None and register_wh is not None
                and register_wh < self.energy_limit_wh)


def wh(value: float) -> int:
    """Meter register as OCPP's integer Wh (meterStart / meterStop)."""
    return int(round(value))


#: The most bytes a StopTransaction may take on the wire. CSMSs commonly close the link on
#: a frame over 64 KiB; half of that leaves room for what a proxy or CSMS adds. Only the
#: transactionData is cut to fit (docs/delivery.md, "The size of a StopTransaction").
STOP_TRANSACTION_MAX_BYTES = 32 * 1024

#: What sending adds to the stored payload at most: the frame around it
#: ([2,"<unique id>","StopTransaction",...]) and a transactionId filled in then.
_FRAME_ALLOWANCE = 160
#: What a timestamp may grow by when a `$local:` mark becomes ISO 8601 at send time.
_STAMP_ALLOWANCE = 16


def evenly(n: int, k: int) -> list[int]:
    """`k` of the indices 0..n-1, spread evenly, the first and the last among them."""
    if k >= n:
        return list(range(n))
    if k <= 0:
        return []
    if k == 1:
        return [n // 2]
    return [round(i * (n - 1) / (k - 1)) for i in range(k)]


# -------------------------------------------------------------------- state in memory
class Ledger:
    """Transactions the charger still knows about: running ones, and stopped ones whose
    messages are still queued (their transactionId may still be needed)."""

    def __init__(self, store: Store):
        self.store = store
        self.by_local: dict[int, Transaction] = {}
        self.stopped: set[int] = set()
        for (local_id, cid, id_tag, tx_id, meter_start, started, reservation_id, stopped,
             info) in store.execute(
                "SELECT local_id, connector_id, id_tag, transaction_id, meter_start, started, "
                "reservation_id, stopped, info FROM transactions ORDER BY local_id").fetchall():
            extra = json.loads(info or "{}")
            tx = Transaction(local_id, cid, id_tag, int(meter_start), started,
                             parent_id_tag=extra.get("parentIdTag"),
                             reservation_id=reservation_id,
                             transaction_id=None if tx_id is None else int(tx_id), info=extra,
                             anchor=extra.get("anchor"))
            self.by_local[local_id] = tx
            if stopped:
                self.stopped.add(local_id)

    def open_transactions(self) -> list[Transaction]:
        return [t for t in self.by_local.values() if t.local_id not in self.stopped]

    def last_reading(self, local_id: int) -> tuple[float, float]:
        row = self.store.execute("SELECT last_wh, last_ts FROM transactions WHERE local_id=?",
                                 (local_id,)).fetchone()
        return float(row[0]), float(row[1])

    def find_by_id(self, transaction_id: int) -> Optional[Transaction]:
        for tx in self.by_local.values():
            if tx.transaction_id == transaction_id and tx.local_id not in self.stopped:
                return tx
        return None


@dataclass(frozen=True)
class Confirmed:
    """What the CSMS said of a transaction message: an idTagInfo for `id_tag` (for the
    authorization cache), and whether it de-authorizes the running transaction `tx`."""

    tx: Transaction
    id_tag: Optional[str]
    info: Optional[dict]
    deauthorized: bool = False


class Transactions:
    """The durable life of transactions: begin, readings, end, confirmations. Loop thread
    only."""

    def __init__(self, store: Store, clock: StationClock, outbox: Outbox):
        self._store = store
        self._clock = clock
        self._outbox = outbox
        self.ledger = Ledger(store)

    # ---------------------------------------------------------------- timestamps
    def stamp(self, at: Optional[float] = None, tx: Optional[Transaction] = None,
              sending: bool = False) -> str:
        """Timestamp for local instant `at` (default now) in a durable message: ISO 8601,
        or, while the time is unknown, a local mark resolved when sent (`sending`: resolve
        now, with the best time there is).

        A transaction's timestamps follow its anchor (StationClock): the real time of its
        start plus the local time elapsed, whatever either clock did since."""
        clock = self._clock
        at = clock.now if at is None else at
        if tx is not None:
            anchor = self._anchor(tx)
            if anchor is not None:
                return iso(StationClock.on_anchor(anchor, tx.started, at))
        elif clock.known:
            return iso(clock.utc(at))
        if sending:
            return iso(clock.utc(at))
        return f"{LOCAL_TIME}{at!r}"

    def _anchor(self, tx: Transaction) -> Optional[float]:
        """The transaction's anchor; fixed (and stored) the first time the time is known."""
        if tx.anchor is None and self._clock.known:
            anchor = self._clock.anchor_for(tx.started)
            with self._store.transaction():
                self._store.execute("UPDATE transactions SET info=? WHERE local_id=?",
                                    (json.dumps({**tx.info, "anchor": anchor}), tx.local_id))
                self._store.on_commit(lambda: _anchored(tx, anchor))
            return anchor
        return tx.anchor

    # ---------------------------------------------------------------- begin / end
    def begin(self, connector_id: int, id_tag: str, parent_id_tag: Optional[str],
              register_wh: float, reservation_id: Optional[int] = None,
              begin_values: Optional[list] = None,
              also: Optional[Callable[[Transaction], None]] = None,
              why: str = "") -> Transaction:
        """Commit the transaction and its StartTransaction.req; returns it running.

        `begin_values`: Transaction.Begin entries kept for StopTransaction.transactionData;
        `also(tx)` writes what must change in the same commit (a reservation used up);
        `why` says for the log who admitted the id.
        """
        now = self._clock.now
        meter_start = wh(register_wh)
        extra = {"parentIdTag": parent_id_tag} if parent_id_tag else {}
        anchor = self._clock.anchor_for(now)
        if anchor is not None:
            extra["anchor"] = anchor
        payload = {"connectorId": connector_id, "idTag": id_tag, "meterStart": meter_start,
                   "timestamp": self.stamp()}
        if reservation_id is not None:
            payload["reservationId"] = reservation_id
        store = self._store
        with store.transaction():
            cur = store.execute(
                "INSERT INTO transactions(connector_id, id_tag, meter_start, started, "
                "reservation_id, last_wh, last_ts, info) VALUES(?, ?, ?, ?, ?, ?, ?, ?)",
                (connector_id, id_tag, meter_start, now, reservation_id, register_wh, now,
                 json.dumps(extra)))
            tx = Transaction(cur.lastrowid, connector_id, id_tag, meter_start, now,
                             parent_id_tag=parent_id_tag,
                             reservation_id=reservation_id, info=extra, anchor=anchor)
            self._outbox.produce("StartTransaction", payload, tx.local_id, now)
            for value in begin_values or []:
                self.keep_for_stop(tx, value)
            if also is not None:
                also(tx)
            store.on_commit(lambda: self.ledger.by_local.__setitem__(tx.local_id, tx))
        log.info("transaction %d started on connector %d for %s (meterStart %d Wh, %s)",
                 tx.local_id, connector_id, id_tag, meter_start, why)
        return tx

    def end(self, tx: Transaction, reason: str, register_wh: float,
            id_tag: Optional[str] = None, at: Optional[float] = None,
            end_values: Optional[list] = None) -> None:
        """Commit the end of `tx` and its StopTransaction.req (with its transactionData)."""
        if reason not in STOP_REASONS:
            raise ValueError(f"{reason!r} is not a StopTransaction reason")
        now = self._clock.now
        at = max(now if at is None else at, tx.started)
        meter_stop = max(wh(register_wh), tx.meter_start_wh)
        payload = {"meterStop": meter_stop, "timestamp": self.stamp(at, tx), "reason": reason}
        if id_tag:
            payload["idTag"] = id_tag
        store = self._store
        with store.transaction():
            data = self.transaction_data(tx, payload, end_values or [])
            if data:
                payload["transactionData"] = data
            store.execute("DELETE FROM tx_stop_data WHERE tx_local=?", (tx.local_id,))
            store.execute("UPDATE transactions SET stopped=1, last_wh=?, last_ts=? "
                          "WHERE local_id=?", (register_wh, at, tx.local_id))
            self._outbox.produce("StopTransaction", payload, tx.local_id, now)
            store.on_commit(lambda: self.ledger.stopped.add(tx.local_id))
        log.info("transaction %d on connector %d stopped: %s, meterStop %d Wh (%d Wh charged)",
                 tx.local_id, tx.connector_id, reason, meter_stop,
                 meter_stop - tx.meter_start_wh)

    def recover(self) -> list[Transaction]:
        """Stop the transactions a power cut left open (reason PowerLoss, TC_032_2)."""
        stopped = []
        for tx in self.ledger.open_transactions():
            last_wh, last_ts = self.ledger.last_reading(tx.local_id)
            log.warning("transaction %d on connector %d was open at the last shutdown; "
                        "stopping it with reason PowerLoss at the last stored reading "
                        "(%.0f Wh)", tx.local_id, tx.connector_id, last_wh)
            self.end(tx, "PowerLoss", last_wh, at=last_ts)
            stopped.append(tx)
        return stopped

    # ---------------------------------------------------------------- readings on the way
    def keep_for_stop(self, tx: Transaction, value: dict) -> None:
        """Keep a meterValue for the StopTransaction's transactionData (in the caller's
        commit)."""
        self._store.execute("INSERT INTO tx_stop_data(tx_local, meter_value) VALUES(?, ?)",
                            (tx.local_id, json.dumps(value, separators=(",", ":"))))

    def store_reading(self, tx: Transaction, register_wh: float, at: float) -> None:
        """The transaction's latest reading, the meterStop a power cut would use (in the
        caller's commit)."""
        self._store.execute("UPDATE transactions SET last_wh=?, last_ts=? WHERE local_id=?",
                            (register_wh, at, tx.local_id))
        self._store.on_commit(lambda: tx.info.__setitem__("stored_wh", register_wh))

    def transaction_data(self, tx: Transaction, payload: dict, end_values: list) -> list:
        """StopTransaction.transactionData from the stored values and `end_values`, cut to
        keep the whole StopTransaction within STOP_TRANSACTION_MAX_BYTES: the
        Transaction.Begin and Transaction.End values are always kept, and the samples
        between are thinned evenly. Rows are read one at a time, so a long session at a
        short sample interval never sits in memory whole."""
        def cost(size: int) -> int:      # a list member: its text, a comma, its timestamp
            return size + 1 + _STAMP_ALLOWANCE

        rows = self._store.execute(
            "SELECT seq, length(CAST(meter_value AS BLOB)), "
            "instr(meter_value, '\"context\":\"Transaction.Begin\"') > 0 "
            "FROM tx_stop_data WHERE tx_local=? ORDER BY seq", (tx.local_id,)).fetchall()
        begin = [(seq, size) for seq, size, is_begin in rows if is_begin]
        middle = [(seq, size) for seq, size, is_begin in rows if not is_begin]
        ends = [json.dumps(v, separators=(",", ":")) for v in end_values]
        fixed = (len(json.dumps(payload, separators=(",", ":"))) + len(',"transactionData":[]')
                 + _FRAME_ALLOWANCE + _STAMP_ALLOWANCE
                 + sum(cost(size) for _, size in begin) + sum(cost(len(e)) for e in ends))
        room = STOP_TRANSACTION_MAX_BYTES - fixed
        if sum(cost(size) for _, size in middle) <= room:
            keep = {row[0] for row in rows}
        else:
            largest = max(cost(size) for _, size in middle)
            chosen = evenly(len(middle), max(0, room) // largest)
            keep = {seq for seq, _ in begin} | {middle[i][0] for i in chosen}
            log.warning("transaction %d: transactionData thinned from %d to %d meter values "
                        "to keep StopTransaction within %d bytes", tx.local_id,
                        len(rows) + len(ends), len(keep) + len(ends),
                        STOP_TRANSACTION_MAX_BYTES)
        data = [json.loads(text) for seq, text in self._store.execute(
            "SELECT seq, meter_value FROM tx_stop_data WHERE tx_local=? ORDER BY seq",
            (tx.local_id,)) if seq in keep]
        return data + list(end_values)

    # ---------------------------------------------------------------- sending and answers
    def _resolve_times(self, value, tx: Optional[Transaction]):
        if isinstance(value, str) and value.startswith(LOCAL_TIME):
            return self.stamp(float(value[len(LOCAL_TIME):]), tx, sending=True)
        if isinstance(value, dict):
            return {k: self._resolve_times(v, tx) for k, v in value.items()}
        if isinstance(value, list):
            return [self._resolve_times(v, tx) for v in value]
        return value

    def of(self, item: Item) -> Optional[Transaction]:
        """The transaction a queued message belongs to, if it is still known."""
        return self.ledger.by_local.get(item.tx_local) if item.tx_local is not None else None

    def payload_for_send(self, item: Item) -> Optional[dict]:
        """The payload as it goes on the wire now; None if it cannot be sent yet."""
        tx = self.of(item)
        payload = item.payload
        if LOCAL_TIME in item.text:
            payload = self._resolve_times(payload, tx)
        if item.action in ("StopTransaction", "MeterValues") and item.tx_local is not None:
            if tx is None or tx.transaction_id is None:
                # Its StartTransaction is ahead in the queue and was delivered, so the id is
                # known; this only happens if that StartTransaction was discarded.
                if item.action == "MeterValues":
                    return payload
                self._stop_without_start(item, tx)
                return None
            payload = {**payload, "transactionId": tx.transaction_id}
        return payload

    def delivered(self, item: Item, response: dict) -> Optional[Confirmed]:
        """The CSMS confirmed `item`: record what it said, durably, with the row's deletion.
        Returns what the answer says of the transaction's idTag, for the authorization cache
        and the sessions to act on."""
        tx = self.of(item)
        if item.action == "StartTransaction" and tx is not None:
            return self._started(item, tx, response)
        if item.action == "StopTransaction" and tx is not None:
            info = response.get("idTagInfo")
            stop_tag = item.payload.get("idTag")

            def forget() -> None:
                self._store.execute("DELETE FROM transactions WHERE local_id=?", (tx.local_id,))
            self._outbox.delivered(item, also=forget)
            self.ledger.by_local.pop(tx.local_id, None)
            self.ledger.stopped.discard(tx.local_id)
            return Confirmed(tx, stop_tag, info) if info and stop_tag else None
        self._outbox.delivered(item)
        return None

    def _started(self, item: Item, tx: Transaction, response: dict) -> Confirmed:
        transaction_id = int(response["transactionId"])
        info = response["idTagInfo"]

        def write() -> None:
            # OCPP bounds no integer; SQLite stores 64 bits, so a larger id is kept as text.
            stored = transaction_id if -2**63 <= transaction_id < 2**63 \
                else str(transaction_id)
            self._store.execute("UPDATE transactions SET transaction_id=? WHERE local_id=?",
                                (stored, tx.local_id))
            self._store.on_commit(lambda: setattr(tx, "transaction_id", transaction_id))
        self._outbox.delivered(item, also=write)
        if info.get("parentIdTag"):       # its group may stop it (3.10): the CSMS's latest word
            tx.parent_id_tag = info["parentIdTag"]
        log.info("transaction %d is transactionId %d at the CSMS (idTag %s)", tx.local_id,
                 tx.transaction_id, info.get("status"))
        return Confirmed(tx, tx.id_tag, info, deauthorized=info.get("status") != "Accepted"
                         and tx.local_id not in self.ledger.stopped)

    def _stop_without_start(self, item: Item, tx: Optional[Transaction]) -> None:
        """A StopTransaction whose StartTransaction was given up can never be sent: OCPP
        wants the transactionId the CSMS never gave, and a made-up one would bill another
        session. It goes to outbox_dead beside its StartTransaction; this names both, for
        billing."""
        row = self._outbox.dead_start(item.tx_local)
        log.error("StopTransaction %s of transaction %s (idTag %s, meterStart %s Wh, "
                  "meterStop %s Wh) cannot be sent: its StartTransaction %s was given up, so "
                  "the CSMS never gave a transactionId; both are kept in outbox_dead to "
                  "reconcile", item.unique_id, item.tx_local, tx.id_tag if tx else "?",
                  tx.meter_start_wh if tx else "?", item.payload.get("meterStop"),
                  row or "(not found in outbox_dead)")


def _anchored(tx: Transaction, anchor: float) -> None:
    tx.anchor = anchor
    tx.info["anchor"] = anchor
