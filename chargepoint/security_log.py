"""The security log outside the station loop: the file GetLog uploads, and the operator's
`chargepoint security-log clear`.

The file is a zip holding `security-log.csv` (one row per entry, oldest first) and a
README: the same container as the diagnostics archive, so every upload of the charger is a
zip the CSMS's tools open alike (and chargepoint/transfers.py sends it as one), and the
5000 entries the log may hold (about a megabyte of text) travel compressed over a mobile
link. CSV because an operator reads it in anything, a spreadsheet too.

Both read and write the database through a connection of their own, beside the running
firmware as well as while it is stopped (WAL: readers never disturb it, a write waits for
its commit of a few milliseconds), as chargepoint/outbox_admin.py does. The clearing is
one SQLite transaction, written by the model's own `clear_log` on a Store of its own: the
log emptied, its SecurityLogWasCleared entry, and the SecurityEventNotification in the
outbox, which a running firmware notices (its outbox
reads rows other processes add) and sends after what it has queued; a stopped one when it
starts. The firmware has no control channel of its own to ask instead, and needs none:
the security log keeps nothing in memory.
"""
from __future__ import annotations

import csv
import io
import json
import os
import sqlite3
import time
import zipfile
from pathlib import Path
from typing import Optional, Union

from chargepoint.clock import try_parse_utc
from chargepoint.instance_lock import AlreadyRunning, InstanceLock
from chargepoint.model.clock import iso
from chargepoint.model.outbox import Outbox
from chargepoint.model.security_events import (LOG_ROWS, SPOKEN, clear_log, log_entries,
                                               sends_events)
from chargepoint.outbox_admin import AdminError, open_database
from chargepoint.store import Store

#: The columns of security-log.csv.
COLUMNS = ("seq", "timestamp", "type", "techInfo", "notified")

README = """\
Security log of the chargepoint charger {charge_point_id}.

security-log.csv   the security events (OCPP 1.6 Security Whitepaper, edition 3), oldest
                   first: seq (the entry's number), timestamp (UTC; "$local:..." for an
                   event before the charger knew the time), type, techInfo, notified
                   (whether a SecurityEventNotification went to the CSMS for it: the same
                   event within an hour is logged again but sent once)
period             {period}
entries            {count}
"""


def entries_in(entries: list[dict], start: Optional[float],
               stop: Optional[float]) -> list[dict]:
    """The entries of the period (None: unbounded). One whose time is unknown (recorded
    before the clock was set) is kept: nothing says it is outside."""
    kept = []
    for entry in entries:
        moment = try_parse_utc(entry["timestamp"])
        if moment is not None and ((start is not None and moment < start)
                                   or (stop is not None and moment > stop)):
            continue
        kept.append(entry)
    return kept


def write_file(out: Path, database: str, charge_point_id: str,
               start: Optional[float] = None, stop: Optional[float] = None) -> Path:
    """The security log of the period, as the zip GetLog uploads, written to `out` whole or
    not at all; returns `out`. The rows are read through a read-only connection."""
    db = sqlite3.connect(f"file:{database}?mode=ro", uri=True, timeout=10)
    try:
        entries = entries_in(log_entries(db, LOG_ROWS), start, stop)
    finally:
        db.close()
    text = io.StringIO()
    writer = csv.writer(text, lineterminator="\n")
    writer.writerow(COLUMNS)
    for entry in entries:
        writer.writerow([entry["seq"], entry["timestamp"], entry["type"], entry["techInfo"],
                         "yes" if entry["notified"] else "no"])
    period = (f"{iso(start) if start is not None else 'the oldest kept'} to "
              f"{iso(stop) if stop is not None else 'now'}")
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("README.txt", README.format(charge_point_id=charge_point_id,
                                                     period=period, count=len(entries)))
        archive.writestr("security-log.csv", text.getvalue())
    os.replace(tmp, out)
    return out


def firmware_runs(database: str) -> bool:
    """Whether a firmware process holds `database` (its instance lock)."""
    lock = InstanceLock(database)
    try:
        lock.acquire()
    except AlreadyRunning:
        return True
    finally:
        lock.release()
    return False


def clear(database: Union[str, Path], who: str, mode: str, configured_profile: int,
          now: Optional[float] = None) -> bool:
    """Empty the security log of `database`; its first entry is then SecurityLogWasCleared
    (techInfo `who`), sent to the CSMS as the firmware would send it (`mode`, `[csms]
    security_events`; `configured_profile`, `[csms] security_profile`). Returns whether
    a SecurityEventNotification was queued. Raises AdminError if there is no database."""
    now = time.time() if now is None else now
    con = open_database(database)              # says what is wrong with the path, if anything
    try:
        if con.execute("SELECT 1 FROM sqlite_master WHERE name='security_log'").fetchone() \
                is None:
            raise AdminError(f"{database} has no security log yet; start the firmware once")
    finally:
        con.close()
    store = Store(database)
    try:
        notify = sends_events(mode, _spoken(store), _profile(store, configured_profile))
        clear_log(store, Outbox(store), who, iso(now), now, notify)
    finally:
        store.close()
    return notify


def _spoken(store: Store) -> bool:
    row = store.execute("SELECT value FROM state WHERE key=?", (SPOKEN,)).fetchone()
    return bool(json.loads(row[0])) if row is not None else False


def _profile(store: Store, configured: int) -> int:
    """SecurityProfile as the firmware holds it: the CSMS's upgrade, the configured one a
    floor (chargepoint/model/security_profile.py)."""
    row = store.execute("SELECT value FROM ocpp_config WHERE key='SecurityProfile'").fetchone()
    try:
        stored = int(row[0]) if row is not None else 0
    except ValueError:
        stored = 0
    return max(stored, configured)
