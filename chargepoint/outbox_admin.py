"""What an operator sees of the durable queue, and how a given-up message goes back in.

`list_messages` reads the queue (`outbox`) or what was given up (`outbox_dead`) through
an open SQLite connection, so a diagnostics archive can reuse it; `format_listing` makes
the table `chargepoint outbox list` prints. `resend` moves a given-up message back to the
end of the queue; the rows are written by the queue's owner (chargepoint/model/outbox.py
`requeue_dead`), which also decides what goes back with it.

Both work beside the running service as well as while it is stopped: the database is in
WAL mode, so a second connection reads without disturbing the firmware, and writes wait
for the firmware's commit of a few milliseconds. A running firmware notices the re-queued
rows at its next turn (chargepoint/model/outbox.py) and sends them after what is already queued;
a stopped one sends them when it starts.
"""
from __future__ import annotations

import json
import sqlite3
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Optional, Union

from chargepoint.model.outbox import RequeueRefused, requeue_dead

#: Schema versions (chargepoint/store.py) this module can read: outbox_dead came with 2.
_MIN_SCHEMA = 2


class AdminError(Exception):
    """An operator request that cannot be done; the message says why and what to do."""


@dataclass(frozen=True)
class Listed:
    """One message of the queue or of the given-up ones."""

    #: outbox.seq (queued) or outbox_dead.seq (given up): what `resend` takes.
    id: int
    unique_id: str
    action: str
    #: The charger's own number of the transaction (transactions.local_id).
    transaction: Optional[int]
    #: The CSMS's transactionId, when known (in the payload, or from StartTransaction.conf).
    transaction_id: Union[int, str, None]
    attempts: int
    #: Bytes of the stored payload.
    size: int
    #: When it was queued (queued) or given up (given up), seconds since the epoch.
    at: float
    #: Why it was given up; for a queued message with failed attempts, when the next is due.
    reason: str

    def as_dict(self) -> dict:
        return {"id": self.id, "unique_id": self.unique_id, "action": self.action,
                "transaction": self.transaction, "transaction_id": self.transaction_id,
                "attempts": self.attempts, "size": self.size, "at": _iso(self.at),
                "reason": self.reason}


def open_database(path: Union[str, Path]) -> sqlite3.Connection:
    """The firmware's database, never created here: a wrong path is an error."""
    path = Path(path)
    if not path.is_file():
        raise AdminError(f"no database at {path} (is [storage] path right?)")
    con = sqlite3.connect(f"file:{path}?mode=rw", uri=True, timeout=10,
                          isolation_level=None)
    version = con.execute("PRAGMA user_version").fetchone()[0]
    if version < _MIN_SCHEMA:
        con.close()
        raise AdminError(f"{path} has no queue of this firmware yet (schema {version}); "
                         "start the firmware once")
    return con


def _iso(t: float) -> str:
    try:
        return datetime.fromtimestamp(t, timezone.utc).isoformat(timespec="seconds") \
            .replace("+00:00", "Z")
    except (OverflowError, OSError, ValueError):
        return str(t)


def _transaction_id(payload_text: str, known) -> Union[int, str, None]:
    try:
        payload = json.loads(payload_text)
    except ValueError:
        return known
    value = payload.get("transactionId") if isinstance(payload, dict) else None
    return value if value is not None else known


def count_messages(con: sqlite3.Connection, dead: bool = False) -> int:
    table = "outbox_dead" if dead else "outbox"
    return con.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0]


def list_messages(con: sqlite3.Connection, dead: bool = False,
                  limit: Optional[int] = None) -> list[Listed]:
    """The queued messages in sending order, or the given-up ones in the order given up;
    at most `limit` (the first ones)."""
    if dead:
        sql = ("SELECT d.seq, d.unique_id, d.action, d.tx_local, t.transaction_id, "
               "d.attempts, d.payload, d.discarded, d.reason, 0 FROM outbox_dead d "
               "LEFT JOIN transactions t ON t.local_id = d.tx_local ORDER BY d.seq")
    else:
        sql = ("SELECT o.seq, o.unique_id, o.action, o.tx_local, t.transaction_id, "
               "o.attempts, o.payload, o.created, '', o.next_attempt FROM outbox o "
               "LEFT JOIN transactions t ON t.local_id = o.tx_local ORDER BY o.seq")
    if limit is not None:
        sql += f" LIMIT {int(limit)}"
    out = []
    for (seq, uid, action, tx_local, known, attempts, payload, at, reason,
         next_attempt) in con.execute(sql):
        if not dead and attempts:
            reason = f"{attempts} failed attempt(s); next at {_iso(next_attempt)}"
        out.append(Listed(seq, uid, action, tx_local, _transaction_id(payload, known),
                          attempts, len(payload.encode()), at, reason))
    return out


def format_listing(rows: list[Listed], dead: bool, total: int,
                   what: Optional[str] = None) -> str:
    """A plain-text table of `rows`, with a line saying how many there are in all (and
    `what` they are)."""
    what = what or ("given up (outbox_dead)" if dead else "queued (outbox), in sending order")
    lines = [f"{total} message(s) {what}" + (f"; the first {len(rows)}:" if len(rows) < total
                                              else (":" if rows else "."))]
    if not rows:
        return lines[0]
    header = ("ID", "ACTION", "UNIQUE ID", "TX", "TRANSACTIONID", "ATTEMPTS", "BYTES",
              "GIVEN UP" if dead else "QUEUED", "REASON" if dead else "STATE")
    table = [header] + [(str(r.id), r.action, r.unique_id,
                         "-" if r.transaction is None else str(r.transaction),
                         "-" if r.transaction_id is None else str(r.transaction_id),
                         str(r.attempts), str(r.size), _iso(r.at), r.reason or "-")
                        for r in rows]
    widths = [max(len(row[i]) for row in table) for i in range(len(header) - 1)]
    for row in table:
        lines.append("  ".join(cell.ljust(w) for cell, w in zip(row, widths)) + "  " + row[-1])
    return "\n".join(lines)


def resend(con: sqlite3.Connection, ident: str, now: float) -> list[Listed]:
    """Put the given-up message `ident` (its ID or unique id) back at the end of the
    queue, and with a StartTransaction the later messages given up with it
    (chargepoint/model/outbox.py `requeue_dead`, the queue's own rules). Returns what was
    queued, with the new IDs; raises AdminError if it cannot be sent."""
    try:
        queued = requeue_dead(con, ident, now)
    except RequeueRefused as exc:
        raise AdminError(str(exc)) from None
    return [Listed(q.seq, q.unique_id, q.action, q.tx_local, _transaction_id(q.payload, None),
                   0, len(q.payload.encode()), now, "") for q in queued]
