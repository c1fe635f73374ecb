"""The durable queue of transaction messages: committed before produced, delivered in order.

StartTransaction, StopTransaction and the MeterValues of a transaction are rows in
SQLite's `outbox` table. A message counts as produced when its row is committed and
as delivered when the CSMS's CALLRESULT for it has been committed as such (the row
deleted). Between the two it may be sent again after a crash or a lost link, always
with the same unique id, so a CSMS can recognise the repeat; it is never lost and
never overtaken by a later one.

A CALLERROR or a missing answer while the link stays up counts as a failed attempt:
the message is retried after `TransactionMessageRetryInterval` times the number of
attempts so far, up to `TransactionMessageAttempts`, then moved to `outbox_dead`
(kept for the operator, logged) together with the later messages of the same
transaction that could no longer carry a transactionId. A lost link is not an
attempt: the message simply waits for the next connection.

Two things are filled in at send time, not at production: the `transactionId` of a
transaction whose StartTransaction was queued offline (from its StartTransaction.conf,
TC_039), and timestamps produced while the clock was still unknown.
"""
from __future__ import annotations

import json
import logging
from collections import deque
from dataclasses import dataclass
from typing import Callable, Iterator, Optional

from chargepoint import ocppj

log = logging.getLogger("chargepoint.outbox")

#: Prefix of a timestamp produced before the clock was known: "$local:<seconds>",
#: the charger's own clock reading, corrected by the CSMS's offset when sent.
LOCAL_TIME = "$local:"


def _dump(payload: dict) -> str:
    return json.dumps(payload, separators=(",", ":"))


@dataclass(slots=True)
class Item:
    seq: int
    unique_id: str
    action: str
    #: The payload as it is stored in the row (compact JSON). Only the text is kept: the
    #: parsed form of a queued MeterValues takes about 2 KB more, 20 MB for a backlog of
    #: 10,000 (bench/drain.py).
    text: str
    tx_local: Optional[int]
    attempts: int = 0
    next_attempt: float = 0.0

    @property
    def payload(self) -> dict:
        """The payload, parsed afresh from `text` (a new dict on every access)."""
        return json.loads(self.text)

    @payload.setter
    def payload(self, value: dict) -> None:
        self.text = _dump(value)


class Outbox:
    """In-memory mirror of the `outbox` table, in production order. Loop thread only."""

    def __init__(self, store):
        self.store = store
        self._items: deque[Item] = deque()
        #: seqs delivered but not yet deleted on disk: folded into the next commit.
        self._delivered: list[int] = []
        for seq, uid, action, payload, tx_local, attempts, next_attempt in store.execute(
                "SELECT seq, unique_id, action, payload, tx_local, attempts, next_attempt "
                "FROM outbox ORDER BY seq").fetchall():
            self._items.append(Item(seq, uid, action, payload, tx_local, attempts,
                                    next_attempt))
        if self._items:
            log.info("%d transaction message(s) waiting from before the restart",
                     len(self._items))

    def __len__(self) -> int:
        return len(self._items)

    def __iter__(self) -> Iterator[Item]:
        return iter(self._items)

    def head(self) -> Optional[Item]:
        return self._items[0] if self._items else None

    # -- producing (call inside `with store.transaction():` to join other writes)
    def produce(self, action: str, payload: dict, tx_local: Optional[int], now: float) -> Item:
        """Commit `payload` to disk as the newest message; returns it once durable."""
        uid = ocppj.new_unique_id()
        text = _dump(payload)
        with self.store.transaction():
            self._flush_delivered()
            cur = self.store.execute(
                "INSERT INTO outbox(unique_id, action, payload, tx_local, created) "
                "VALUES(?, ?, ?, ?, ?)", (uid, action, text, tx_local, now))
            item = Item(cur.lastrowid, uid, action, text, tx_local)
        self._items.append(item)
        return item

    # -- delivering
    def ready(self, now: float) -> Optional[Item]:
        """The head if it may be sent now (retry delay over), else None."""
        head = self.head()
        if head is None or head.next_attempt > now:
            return None
        if self._delivered:
            # At most one delivered message may be repeated after a crash: the one
            # whose deletion is still pending must be on disk before the next goes out.
            with self.store.transaction():
                self._flush_delivered()
        return head

    def delivered(self, item: Item, also: Optional[Callable[[], None]] = None) -> None:
        """The CSMS accepted `item`. `also` writes its bookkeeping in the same commit.

        Without `also`, the row's deletion is deferred to the next commit (a new
        message, the next send), which saves one disk write per message when the
        queue is idle and still repeats at most this one message after a crash.
        """
        self._pop(item)
        self._delivered.append(item.seq)
        if also is not None:
            with self.store.transaction():
                also()
                self._flush_delivered()

    def failed(self, item: Item, reason: str, now: float, max_attempts: int,
               retry_interval_s: float) -> list[Item]:
        """A CALLERROR or timeout for `item`: schedule a retry, or give up.

        Returns the items discarded (empty while retries remain).
        """
        item.attempts += 1
        if item.attempts < max_attempts:
            item.next_attempt = now + retry_interval_s * item.attempts
            with self.store.transaction():
                self._flush_delivered()
                self.store.execute("UPDATE outbox SET attempts=?, next_attempt=? WHERE seq=?",
                                   (item.attempts, item.next_attempt, item.seq))
            log.warning("%s %s failed (%s), attempt %d of %d; next try in %.0f s",
                        item.action, item.unique_id, reason, item.attempts, max_attempts,
                        item.next_attempt - now)
            return []
        doomed = [item]
        if item.action == "StartTransaction" and item.tx_local is not None:
            # Later messages of this transaction could never carry its transactionId.
            doomed += [i for i in self._items if i is not item and i.tx_local == item.tx_local
                       and i.action in ("StopTransaction", "MeterValues")]
        with self.store.transaction():
            self._flush_delivered()
            for dead in doomed:
                self._bury(dead, reason if dead is item else
                           f"StartTransaction {item.unique_id} was discarded", now)
        for dead in doomed:
            self._pop(dead)
        log.error("gave up on %s %s after %d attempts (%s); moved to outbox_dead: %s",
                  item.action, item.unique_id, item.attempts, reason,
                  ", ".join(f"{dead.action} {dead.unique_id}" for dead in doomed))
        return doomed

    def _bury(self, item: Item, reason: str, now: float) -> None:
        # outbox_dead numbers its own rows (in burial order): an outbox seq comes back once
        # the queue has run empty, so a second dead message could carry a seq already there.
        self.store.execute(
            "INSERT INTO outbox_dead(unique_id, action, payload, tx_local, attempts, "
            "reason, discarded) VALUES(?, ?, ?, ?, ?, ?, ?)",
            (item.unique_id, item.action, item.text, item.tx_local, item.attempts, reason, now))
        self.store.execute("DELETE FROM outbox WHERE seq=?", (item.seq,))

    def _pop(self, item: Item) -> None:
        try:
            self._items.remove(item)
        except ValueError:
            pass

    def _flush_delivered(self) -> None:
        for seq in self._delivered:
            self.store.execute("DELETE FROM outbox WHERE seq=?", (seq,))
        self._delivered.clear()

    def flush(self) -> None:
        """Make pending deletions durable (before a clean stop)."""
        if self._delivered:
            with self.store.transaction():
                self._flush_delivered()
