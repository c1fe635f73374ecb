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

Only the first `WINDOW` messages are held in memory; the rest of a long offline backlog
stays on disk and is read in, in order, as the window empties. Rows another process
adds (an operator putting a given-up message back: `requeue_dead` below, run by
`chargepoint outbox resend`) are noticed through SQLite's `data_version` and join the
end of the queue.
"""
from __future__ import annotations

import json
import logging
import uuid
from collections import deque
from dataclasses import dataclass
from typing import Callable, Iterator, Optional


log = logging.getLogger("chargepoint.outbox")

#: Queued messages held in memory; the rest wait on disk. A queued MeterValues costs about
#: 1 KB in memory, so the window is about 1 MB whatever the backlog (bench/drain.py). It is
#: topped up from disk, a page of half a window at a time, once it is half empty.
WINDOW = 1000

#: Prefix of a timestamp produced before the clock was known: "$local:<seconds>",
#: the charger's own clock reading, corrected by the CSMS's offset when sent.
LOCAL_TIME = "$local:"


def _dump(payload: dict) -> str:
    return json.dumps(payload, separators=(",", ":"))


def discarded_with(start_unique_id: str) -> str:
    """The reason recorded for a later message buried with its StartTransaction."""
    return f"StartTransaction {start_unique_id} was discarded"


_COLUMNS = "seq, unique_id, action, payload, tx_local, attempts, next_attempt"


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
    #: Times in a row the CSMS closed the link while this message was outstanding
    #: (chargepoint/model/delivery.py counts them; not stored: a restart counts afresh).
    closures: int = 0

    @property
    def payload(self) -> dict:
        """The payload, parsed afresh from `text` (a new dict on every access)."""
        return json.loads(self.text)

    @payload.setter
    def payload(self, value: dict) -> None:
        self.text = _dump(value)


class Outbox:
    """The `outbox` table in production order: its first `window` rows mirrored in memory,
    the rest read from disk as the window empties. Loop thread only."""

    def __init__(self, store, window: Optional[int] = None):
        self.store = store
        self.window = window or WINDOW
        self.refill_below = max(1, self.window // 2)
        self._items: deque[Item] = deque()
        #: Rows on disk after the window (none of them in memory).
        self._beyond = 0
        #: The highest seq that has been in the window: rows after it are `_beyond`.
        self._last_seq = 0
        #: seqs delivered but not yet deleted on disk: folded into the next commit.
        self._delivered: list[int] = []
        self._data_version = self._version()
        total = store.execute("SELECT COUNT(*) FROM outbox").fetchone()[0]
        self._load(self.window)
        self._beyond = total - len(self._items)
        if total:
            log.info("%d transaction message(s) waiting from before the restart", total)

    def __len__(self) -> int:
        return len(self._items) + self._beyond

    def __iter__(self) -> Iterator[Item]:
        """Every queued message in order: the window, then the rows on disk (read a page
        at a time; changing those Items changes nothing unless written back)."""
        yield from list(self._items)
        after = self._after()
        while True:
            page = self._rows(after, self.window)
            if not page:
                return
            yield from page
            after = page[-1].seq

    def head(self) -> Optional[Item]:
        if not self._items:
            # Rows another process added wait after everything queued here: they matter
            # once the window runs empty (or a new message is queued, see `produce`).
            self._notice_others()
        return self._items[0] if self._items else None

    @property
    def in_memory(self) -> int:
        """Messages held in memory (at most `window`)."""
        return len(self._items)

    # -- the window
    def _rows(self, after: int, limit: int) -> list[Item]:
        return [Item(*row) for row in self.store.execute(
            f"SELECT {_COLUMNS} FROM outbox WHERE seq > ? ORDER BY seq LIMIT ?",
            (after, limit)).fetchall()]

    def _after(self) -> int:
        """Every row with a higher seq is one the window has not held yet.

        Once the queue has run empty SQLite may hand out low seqs again, so an empty
        window counts from the rows still waiting for their deferred deletion."""
        if self._items or self._beyond:
            return self._last_seq
        return max(self._delivered, default=0)

    def _load(self, limit: int, after: Optional[int] = None) -> int:
        """Append up to `limit` rows from disk after the window; returns how many."""
        after = self._after() if after is None else after
        rows = self._rows(after, limit) if limit > 0 else []
        self._items.extend(rows)
        if rows:
            self._last_seq = rows[-1].seq
        return len(rows)

    def _top_up(self) -> None:
        if self._beyond > 0 and len(self._items) < self.refill_below:
            self._fill(self._after())

    def _fill(self, after: int) -> None:
        """Load what fits of the `_beyond` rows after `after`; fewer found than asked for
        means there are no more (the count is put right, whatever it said)."""
        room = self.window - len(self._items)
        loaded = self._load(room, after)
        self._beyond = 0 if loaded < room else max(0, self._beyond - loaded)

    def _version(self) -> int:
        return self.store.execute("PRAGMA data_version").fetchone()[0]

    def _notice_others(self) -> None:
        """Another connection changed the database (an operator re-queued a message):
        count the rows after the window again and top the window up. (Rows after the
        window are read in anyway as it empties; the count is what this puts right.)"""
        version = self._version()
        if version == self._data_version:
            return
        self._data_version = version
        after = self._after()
        self._beyond = self.store.execute("SELECT COUNT(*) FROM outbox WHERE seq > ?",
                                          (after,)).fetchone()[0]
        if self._beyond:
            self._fill(after)

    # -- producing (call inside `with store.transaction():` to join other writes)
    def produce(self, action: str, payload: dict, tx_local: Optional[int], now: float) -> Item:
        """Commit `payload` to disk as the newest message; returns it once durable."""
        uid = str(uuid.uuid4())  # as every unique id of ours (chargepoint/protocol/ocppj.py)
        text = _dump(payload)
        with self.store.transaction():
            self._flush_delivered()
            self._notice_others()         # under the write lock: nobody adds a row now
            cur = self.store.execute(
                "INSERT INTO outbox(unique_id, action, payload, tx_local, created) "
                "VALUES(?, ?, ?, ?, ?)", (uid, action, text, tx_local, now))
            item = Item(cur.lastrowid, uid, action, text, tx_local)
            self.store.on_commit(lambda: self._queued(item))
        return item

    def _queued(self, item: Item) -> None:
        """`item`'s row is committed: it joins the queue (memory never holds a message
        the disk may not have)."""
        if self._beyond == 0 and len(self._items) < self.window:
            self._items.append(item)
            self._last_seq = item.seq
        else:
            self._beyond += 1

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
        With `also`, the message leaves the queue only once that commit succeeded: if it
        fails, the message stays at the head and is sent again (with its unique id).
        """
        if also is None:
            self._pop(item)
            self._delivered.append(item.seq)
            return
        with self.store.transaction():
            also()
            self.store.execute("DELETE FROM outbox WHERE seq=?", (item.seq,))
            self._flush_delivered()
            self.store.on_commit(lambda: self._pop(item))

    def failed(self, item: Item, reason: str, now: float, max_attempts: int,
               retry_interval_s: float, transaction_id: Optional[int] = None) -> list[Item]:
        """A failed attempt of `item` (the head): schedule a retry, or give up.

        Given up, it moves to `outbox_dead` (with `transaction_id` written into a
        MeterValues or StopTransaction that lacks it, so it can be sent again later),
        and with a StartTransaction every later message of its transaction, in the
        window or on disk. Returns the items discarded from the window (empty while
        retries remain).
        """
        attempts = item.attempts + 1
        if attempts < max_attempts:
            next_attempt = now + retry_interval_s * attempts
            with self.store.transaction():
                self._flush_delivered()
                self.store.execute("UPDATE outbox SET attempts=?, next_attempt=? WHERE seq=?",
                                   (attempts, next_attempt, item.seq))
            item.attempts, item.next_attempt = attempts, next_attempt
            log.warning("%s %s failed (%s), attempt %d of %d; next try in %.0f s",
                        item.action, item.unique_id, reason, item.attempts, max_attempts,
                        item.next_attempt - now)
            return []
        text = item.text
        if (transaction_id is not None and item.action in ("StopTransaction", "MeterValues")
                and '"transactionId"' not in item.text):
            text = _dump({**item.payload, "transactionId": transaction_id})
        later = item.action == "StartTransaction" and item.tx_local is not None
        doomed = [item]
        if later:
            # Later messages of this transaction could never carry its transactionId.
            doomed += [i for i in self._items if i is not item and i.tx_local == item.tx_local
                       and i.action in ("StopTransaction", "MeterValues")]
        on_disk = 0
        with self.store.transaction():
            self._flush_delivered()
            for dead in doomed:
                self._bury(dead, reason if dead is item else discarded_with(item.unique_id),
                           now, attempts if dead is item else dead.attempts,
                           text if dead is item else dead.text)
            if later and self._beyond:
                on_disk = self._bury_beyond(item, now)
        item.attempts, item.text = attempts, text
        self._beyond -= on_disk
        for dead in doomed:
            self._pop(dead)
        where = f"transaction {item.tx_local}" if item.tx_local is not None else "no transaction"
        if transaction_id is not None:
            where += f", transactionId {transaction_id}"
        moved = ", ".join(f"{dead.action} {dead.unique_id}" for dead in doomed)
        if on_disk:
            moved += f" and {on_disk} more not yet read from disk"
        log.error("gave up on %s %s (%s) after %d attempts (%s); moved to outbox_dead: %s "
                  "(`chargepoint outbox list --dead` shows them, `chargepoint outbox resend` "
                  "sends one again)", item.action, item.unique_id, where, item.attempts,
                  reason, moved)
        return doomed

    def dead_start(self, tx_local: Optional[int]) -> Optional[str]:
        """The unique id of transaction `tx_local`'s given-up StartTransaction, if any."""
        row = self.store.execute("SELECT unique_id FROM outbox_dead WHERE tx_local=? AND "
                                 "action='StartTransaction' ORDER BY seq DESC LIMIT 1",
                                 (tx_local,)).fetchone()
        return row[0] if row else None

    def _bury(self, item: Item, reason: str, now: float, attempts: int, text: str) -> None:
        # outbox_dead numbers its own rows (in burial order): an outbox seq comes back once
        # the queue has run empty, so a second dead message could carry a seq already there.
        self.store.execute(
            "INSERT INTO outbox_dead(unique_id, action, payload, tx_local, attempts, "
            "reason, discarded) VALUES(?, ?, ?, ?, ?, ?, ?)",
            (item.unique_id, item.action, text, item.tx_local, attempts, reason, now))
        self.store.execute("DELETE FROM outbox WHERE seq=?", (item.seq,))

    def _bury_beyond(self, start: Item, now: float) -> int:
        """Bury the later messages of `start`'s transaction that wait on disk."""
        where = ("FROM outbox WHERE seq > ? AND tx_local = ? "
                 "AND action IN ('StopTransaction', 'MeterValues')")
        args = (self._last_seq, start.tx_local)
        self.store.execute(
            "INSERT INTO outbox_dead(unique_id, action, payload, tx_local, attempts, reason, "
            f"discarded) SELECT unique_id, action, payload, tx_local, attempts, ?, ? {where} "
            "ORDER BY seq", (discarded_with(start.unique_id), now, *args))
        return self.store.execute(f"DELETE {where}", args).rowcount

    def _pop(self, item: Item) -> None:
        try:
            self._items.remove(item)
        except ValueError:
            pass
        self._top_up()

    def _flush_delivered(self) -> None:
        """Delete the delivered rows in the open transaction; they are forgotten only once
        it commits (a failed commit leaves them to the next one)."""
        flushed = list(self._delivered)
        for seq in flushed:
            self.store.execute("DELETE FROM outbox WHERE seq=?", (seq,))
        if flushed:
            self.store.on_commit(lambda: self._forget_delivered(flushed))

    def _forget_delivered(self, seqs: list[int]) -> None:
        done = set(seqs)
        self._delivered = [seq for seq in self._delivered if seq not in done]

    def flush(self) -> None:
        """Make pending deletions durable (before a clean stop)."""
        if self._delivered:
            with self.store.transaction():
                self._flush_delivered()


# -- putting given-up messages back (from another process: chargepoint outbox resend)
class RequeueRefused(Exception):
    """A given-up message that cannot go back; the message says why and what to do."""


@dataclass(frozen=True)
class Requeued:
    """A message put back at the end of the queue, under its new `seq`."""

    seq: int
    unique_id: str
    action: str
    payload: str
    tx_local: Optional[int]


def _dead_row(con, ident: str):
    columns = "seq, unique_id, action, payload, tx_local"
    if ident.isdigit():
        row = con.execute(f"SELECT {columns} FROM outbox_dead WHERE seq=?",
                          (int(ident),)).fetchone()
    else:
        row = con.execute(f"SELECT {columns} FROM outbox_dead WHERE unique_id=? "
                          "ORDER BY seq DESC LIMIT 1", (ident,)).fetchone()
    if row is None:
        raise RequeueRefused(f"no given-up message {ident} (`chargepoint outbox list --dead` "
                             "shows them with their ID)")
    return row


def requeue_dead(con, ident: str, now: float) -> list[Requeued]:
    """Move the given-up message `ident` (its outbox_dead seq or unique id) back to the end
    of the queue, in one commit on `con` (a connection in autocommit mode, perhaps of
    another process: a running `Outbox` notices the rows through `data_version`). It keeps
    its unique id (a CSMS that did record it can recognise it) and counts its attempts
    afresh. A StartTransaction brings back the later messages of its transaction given up
    with it or for want of its transactionId; a later message whose transactionId cannot
    be known is refused (RequeueRefused), naming what to resend instead."""
    seq, uid, action, payload, tx_local = row = _dead_row(con, ident)
    group = [row]
    if action == "StartTransaction":
        # Given up with it, or after it for want of its transactionId: they need it.
        group += [row[:5] for row in con.execute(
            "SELECT seq, unique_id, action, payload, tx_local, reason FROM outbox_dead "
            "WHERE seq > ? AND tx_local IS ? AND action IN ('MeterValues', 'StopTransaction') "
            "ORDER BY seq", (seq, tx_local)).fetchall()
            if row[5] == discarded_with(uid) or '"transactionId"' not in row[3]]
    elif tx_local is not None and '"transactionId"' not in payload:
        known = con.execute("SELECT transaction_id FROM transactions WHERE local_id=?",
                            (tx_local,)).fetchone()
        if known is None or known[0] is None:
            start = con.execute("SELECT seq FROM outbox_dead WHERE action='StartTransaction' "
                                "AND tx_local=? ORDER BY seq DESC LIMIT 1",
                                (tx_local,)).fetchone()
            queued = con.execute("SELECT 1 FROM outbox WHERE action='StartTransaction' "
                                 "AND tx_local=?", (tx_local,)).fetchone()
            if start is not None:
                raise RequeueRefused(f"{action} {seq} belongs to a transaction whose "
                                     f"StartTransaction was given up; resend that one (ID "
                                     f"{start[0]}): it brings this message back with it")
            if queued is None:
                raise RequeueRefused(f"{action} {seq} cannot be sent: the transactionId of "
                                     "its transaction is unknown and its StartTransaction "
                                     "is gone")
    out = []
    con.execute("BEGIN IMMEDIATE")
    try:
        for dead_seq, dead_uid, dead_action, dead_payload, dead_tx in group:
            cur = con.execute(
                "INSERT INTO outbox(unique_id, action, payload, tx_local, attempts, "
                "next_attempt, created) VALUES(?, ?, ?, ?, 0, 0, ?)",
                (dead_uid, dead_action, dead_payload, dead_tx, now))
            con.execute("DELETE FROM outbox_dead WHERE seq=?", (dead_seq,))
            out.append(Requeued(cur.lastrowid, dead_uid, dead_action, dead_payload, dead_tx))
        con.execute("COMMIT")
    except BaseException:
        con.execute("ROLLBACK")
        raise
    return out
