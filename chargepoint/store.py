"""SQLite: OCPP keys, persistent charger state, transactions and the durable outbox.

One file, WAL journal, `synchronous=FULL`: a commit that returned has reached the
disk, so a transaction message whose row is committed survives a power cut. The
page size is small because the workload is many tiny commits: each commit writes
whole pages to the WAL, and smaller pages mean fewer bytes worn off an SD card.
Schema changes are numbered migrations tracked in `PRAGMA user_version`.

A release rolled back after its trial (docs/firmware-update.md) opens the database the newer
release migrated. So a migration is additive where it can be (new tables; new columns
nullable or with a default), and the database says which schema a firmware must know at
least to use it (`schema_compat.readable_by`): the last migration in BREAKING up to its
version. An older firmware that knows that schema uses the database as it is, ignoring
what it does not know; one that does not refuses it, naming both versions.

The file and its `-wal`/`-shm` are created 0600 whatever the umask: the database holds
the AuthorizationKey. Opening a damaged file, a read-only or full filesystem, and files
deleted under a running process are handled around this class, in chargepoint/storage.py.
"""
from __future__ import annotations

import json
import logging
import os
import sqlite3
import threading
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

log = logging.getLogger("chargepoint.store")

PAGE_SIZE = 1024

#: The database and its -wal/-shm: readable and writable by the service's user only.
FILE_MODE = 0o600
#: The companion files SQLite keeps beside the database in WAL mode.
SIDECARS = ("-wal", "-shm")

MIGRATIONS: list[str] = [
    # 1: configuration keys, small state, transactions, outbox
    """
    CREATE TABLE ocpp_config (key TEXT PRIMARY KEY, value TEXT NOT NULL);
    CREATE TABLE state (key TEXT PRIMARY KEY, value TEXT NOT NULL);
    CREATE TABLE transactions (
        local_id INTEGER PRIMARY KEY AUTOINCREMENT,
        connector_id INTEGER NOT NULL,
        id_tag TEXT NOT NULL,
        transaction_id INTEGER,
        meter_start REAL NOT NULL,
        started REAL NOT NULL,
        reservation_id INTEGER,
        last_wh REAL NOT NULL,
        last_ts REAL NOT NULL,
        stopped INTEGER NOT NULL DEFAULT 0,
        info TEXT NOT NULL DEFAULT '{}'
    );
    CREATE TABLE outbox (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        unique_id TEXT NOT NULL,
        action TEXT NOT NULL,
        payload TEXT NOT NULL,
        tx_local INTEGER,
        attempts INTEGER NOT NULL DEFAULT 0,
        next_attempt REAL NOT NULL DEFAULT 0,
        created REAL NOT NULL
    );
    """,
    # 2: authorization cache, per-transaction stop data, dead letters; the outbox without
    # AUTOINCREMENT (its sqlite_sequence row cost one more page write per message)
    """
    DROP TABLE outbox;
    CREATE TABLE outbox (
        seq INTEGER PRIMARY KEY,
        unique_id TEXT NOT NULL,
        action TEXT NOT NULL,
        payload TEXT NOT NULL,
        tx_local INTEGER,
        attempts INTEGER NOT NULL DEFAULT 0,
        next_attempt REAL NOT NULL DEFAULT 0,
        created REAL NOT NULL
    );
    CREATE TABLE outbox_dead (
        seq INTEGER PRIMARY KEY,
        unique_id TEXT NOT NULL,
        action TEXT NOT NULL,
        payload TEXT NOT NULL,
        tx_local INTEGER,
        attempts INTEGER NOT NULL,
        reason TEXT NOT NULL,
        discarded REAL NOT NULL
    );
    CREATE TABLE auth_cache (
        id_tag TEXT PRIMARY KEY,
        info TEXT NOT NULL,
        updated REAL NOT NULL
    );
    CREATE TABLE tx_stop_data (
        seq INTEGER PRIMARY KEY,
        tx_local INTEGER NOT NULL,
        meter_value TEXT NOT NULL
    );
    """,
    # 3: the local authorization list and reservations
    """
    CREATE TABLE local_list (id_tag TEXT PRIMARY KEY, info TEXT NOT NULL);
    CREATE TABLE reservations (
        reservation_id INTEGER PRIMARY KEY,
        connector_id INTEGER NOT NULL,
        id_tag TEXT NOT NULL,
        parent_id_tag TEXT,
        expiry REAL NOT NULL
    );
    """,
    # 4: charging profiles (smart charging)
    """
    CREATE TABLE charging_profiles (
        profile_id INTEGER PRIMARY KEY,
        connector_id INTEGER NOT NULL,
        body TEXT NOT NULL,
        installed REAL NOT NULL,
        tx_local INTEGER
    );
    """,
    # 5: idTags are case-insensitive (IdToken is a CiString20)
    """
    CREATE TABLE auth_cache_ci (id_tag TEXT PRIMARY KEY COLLATE NOCASE, info TEXT NOT NULL,
                                updated REAL NOT NULL);
    INSERT OR REPLACE INTO auth_cache_ci SELECT id_tag, info, updated FROM auth_cache
        ORDER BY updated;
    DROP TABLE auth_cache;
    ALTER TABLE auth_cache_ci RENAME TO auth_cache;
    CREATE TABLE local_list_ci (id_tag TEXT PRIMARY KEY COLLATE NOCASE, info TEXT NOT NULL);
    INSERT OR REPLACE INTO local_list_ci SELECT id_tag, info FROM local_list;
    DROP TABLE local_list;
    ALTER TABLE local_list_ci RENAME TO local_list;
    """,
    # Security whitepaper: the trusted roots the CSMS manages, the charger's own
    # certificate (its key is a file, never a row), the security log.
    """
    CREATE TABLE certificates (
        id INTEGER PRIMARY KEY,
        type TEXT NOT NULL,
        pem TEXT NOT NULL,
        issuer_name_hash TEXT NOT NULL,
        issuer_key_hash TEXT NOT NULL,
        serial TEXT NOT NULL,
        fallback INTEGER NOT NULL DEFAULT 0,
        installed REAL NOT NULL,
        UNIQUE(type, issuer_name_hash, issuer_key_hash, serial)
    );
    CREATE TABLE charger_certificate (
        slot TEXT PRIMARY KEY,
        key_id TEXT NOT NULL,
        public_key TEXT NOT NULL,
        chain TEXT,
        requested REAL NOT NULL
    );
    CREATE TABLE security_log (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        type TEXT NOT NULL,
        timestamp TEXT NOT NULL,
        tech_info TEXT NOT NULL,
        notified INTEGER NOT NULL,
        local REAL NOT NULL
    );
    """,
    # 7: which firmware may still use this database after a rollback (BREAKING)
    """
    CREATE TABLE schema_compat (readable_by INTEGER NOT NULL);
    INSERT INTO schema_compat VALUES (7);
    """,
]

#: Migrations a firmware that knows only the schema before them cannot live with (a column
#: renamed or dropped, a NOT NULL column without a default, a meaning changed). 7 is the
#: first schema that says so; every migration after it is additive unless listed here.
BREAKING: frozenset[int] = frozenset({7})
#: The migration that made `schema_compat`.
COMPAT_SINCE = 7


def readable_by(version: int) -> int:
    """The oldest schema a firmware must know to use a database at `version`."""
    return max((number for number in BREAKING if number <= version), default=0)


@dataclass
class StorageHealth:
    """How the storage is doing, for logs, the CSMS (connector 0) and operators.

    `state` is "ok"; "repaired" when the file was damaged, empty or deleted and has
    been rewritten with what could be saved; or "degraded" when nothing can be written
    and the database lives in memory (chargepoint/storage.py)."""

    path: str
    state: str = "ok"
    #: What was wrong, for people ("" while ok).
    problem: str = ""
    #: What kind of fault: "damaged", "empty", "deleted" or "unwritable" ("" while ok).
    cause: str = ""
    #: Where the damaged file was moved for forensics ("" if nowhere).
    damaged_copy: str = ""
    #: Rows saved per table by the last salvage.
    saved: dict[str, int] = field(default_factory=dict)

    @property
    def durable(self) -> bool:
        return self.state != "degraded"

    def describe(self) -> str:
        if self.state == "ok":
            return f"storage ok ({self.path})"
        text = f"storage {self.state}: {self.problem}"
        if self.damaged_copy:
            text += f"; damaged file kept as {self.damaged_copy}"
        return text


def create_private(path: str) -> None:
    """Create `path` empty with exactly FILE_MODE, whatever the umask; an existing file is
    left alone."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, FILE_MODE)
    except FileExistsError:
        return
    try:
        os.fchmod(fd, FILE_MODE)
    finally:
        os.close(fd)


def connect(path: str) -> sqlite3.Connection:
    """A connection to `path` with the firmware's settings: small pages, WAL, full sync.

    A missing file is created FILE_MODE first; SQLite gives the -wal and -shm it creates
    the database file's mode."""
    if path != ":memory:":
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        create_private(path)
    db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    try:
        db.execute(f"PRAGMA page_size={PAGE_SIZE}")
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=FULL")
    except BaseException:
        db.close()
        raise
    return db


class Store:
    """The firmware's only persistent state. Used from the station loop's thread (and
    from chargepoint/storage.py's guard, which swaps the connection between commits)."""

    def __init__(self, path: str | os.PathLike, db: Optional[sqlite3.Connection] = None):
        self.path = str(path)
        self._db = db if db is not None else connect(self.path)
        self._lock = threading.RLock()
        self._depth = 0
        #: Durable commits made through `transaction()` (for the wear figures in docs/).
        self.commits = 0
        self.health = StorageHealth(self.path)
        self._migrate()

    def _migrate(self) -> None:
        version = self._db.execute("PRAGMA user_version").fetchone()[0]
        if version > len(MIGRATIONS):
            needed = self._readable_by()
            if needed is None or needed > len(MIGRATIONS):
                raise RuntimeError(
                    f"{self.path} was written by a newer firmware (schema {version}, which "
                    f"needs a firmware that knows schema {needed or version}; this one "
                    f"knows {len(MIGRATIONS)})")
            log.warning("storage: %s was migrated by a newer firmware (schema %d); its "
                        "changes are additive, so this firmware (schema %d) uses it as is",
                        self.path, version, len(MIGRATIONS))
            return
        for number, script in enumerate(MIGRATIONS[version:], start=version + 1):
            with self._lock:
                self._db.execute("BEGIN IMMEDIATE")
                try:
                    for statement in script.split(";"):
                        if statement.strip():
                            self._db.execute(statement)
                    if number >= COMPAT_SINCE:
                        self._db.execute("UPDATE schema_compat SET readable_by=?",
                                         (readable_by(number),))
                    self._db.execute(f"PRAGMA user_version={number}")
                    self._db.execute("COMMIT")
                except BaseException:
                    self._db.execute("ROLLBACK")
                    raise

    def _readable_by(self) -> Optional[int]:
        try:
            row = self._db.execute("SELECT readable_by FROM schema_compat").fetchone()
        except sqlite3.OperationalError:           # from before the table existed
            return None
        return row[0] if row else None

    def close(self) -> None:
        with self._lock:
            self._db.close()

    @property
    def connection(self) -> sqlite3.Connection:
        return self._db

    def swap(self, db: sqlite3.Connection) -> sqlite3.Connection:
        """Carry on with `db` (holding the same data) from the next statement; returns the
        old connection. Waits for a transaction in progress to end."""
        with self._lock:
            if self._depth:
                raise RuntimeError("swap inside a transaction")
            old, self._db = self._db, db
            return old

    @contextmanager
    def exclusive(self):
        """`with store.exclusive():` no one else uses the database meanwhile (waits for a
        transaction in progress to end)."""
        with self._lock:
            if self._depth:
                raise RuntimeError("exclusive use inside a transaction")
            yield self

    def backup_to(self, db: sqlite3.Connection) -> None:
        """Copy the whole database into `db`, consistently between commits."""
        with self._lock:
            self._db.backup(db)

    # -- helpers
    def transaction(self):
        """`with store.transaction():` groups writes into one durable commit."""
        return _Transaction(self)

    def on_commit(self, apply) -> None:
        """Run `apply()` once the outermost transaction has committed, never if it fails:
        what memory holds follows what reached the disk, never runs ahead of it."""
        if self._depth == 0:
            raise RuntimeError("on_commit outside `with store.transaction():`")
        self._after_commit.append(apply)

    def execute(self, sql: str, params: tuple = ()) -> "Rows":
        """Run one statement; its rows are read whole before the store is let go, so the
        connection may be swapped (chargepoint/storage.py) while a caller reads them."""
        with self._lock:
            cur = self._db.execute(sql, params)
            return Rows(cur.fetchall(), cur.lastrowid, cur.rowcount)

    # -- OCPP configuration keys
    def load_config(self) -> dict[str, str]:
        return dict(self.execute("SELECT key, value FROM ocpp_config").fetchall())

    def save_config(self, key: str, value: str) -> None:
        self.execute("INSERT INTO ocpp_config(key, value) VALUES(?, ?) "
                     "ON CONFLICT(key) DO UPDATE SET value=excluded.value", (key, value))

    # -- small persistent state (JSON values)
    def get_state(self, key: str, default: Any = None) -> Any:
        row = self.execute("SELECT value FROM state WHERE key=?", (key,)).fetchone()
        return default if row is None else json.loads(row[0])

    def set_state(self, key: str, value: Any) -> None:
        self.execute("INSERT INTO state(key, value) VALUES(?, ?) "
                     "ON CONFLICT(key) DO UPDATE SET value=excluded.value",
                     (key, json.dumps(value, separators=(",", ":"))))

    def delete_state(self, key: str) -> None:
        self.execute("DELETE FROM state WHERE key=?", (key,))


class Rows:
    """What `Store.execute` returns: the rows, `lastrowid` and `rowcount`, read like a
    cursor (fetchone, fetchall, iteration)."""

    __slots__ = ("_rows", "_next", "lastrowid", "rowcount")

    def __init__(self, rows: list, lastrowid: Optional[int], rowcount: int):
        self._rows = rows
        self._next = 0
        self.lastrowid = lastrowid
        self.rowcount = rowcount

    def fetchone(self):
        if self._next >= len(self._rows):
            return None
        self._next += 1
        return self._rows[self._next - 1]

    def fetchall(self) -> list:
        rest, self._next = self._rows[self._next:], len(self._rows)
        return rest

    def __iter__(self):
        return iter(self.fetchall())


class _Transaction:
    """One durable commit; nested uses join the outermost one."""

    def __init__(self, store: Store):
        self.store = store

    def __enter__(self):
        store = self.store
        store._lock.acquire()
        store._depth += 1
        if store._depth == 1:
            store._after_commit = []
            try:
                store._db.execute("BEGIN IMMEDIATE")
            except BaseException:
                store._depth -= 1
                store._lock.release()
                raise
        return store

    def __exit__(self, exc_type, exc, tb):
        store = self.store
        try:
            store._depth -= 1
            if store._depth > 0:
                return False
            applied, store._after_commit = store._after_commit, []
            if exc_type:
                self._rollback(store)
                return False
            try:
                store._db.execute("COMMIT")
            except BaseException:
                self._rollback(store)          # a failed COMMIT may leave the transaction open
                raise
            store.commits += 1
        finally:
            store._lock.release()
        for apply in applied:
            apply()
        return False

    @staticmethod
    def _rollback(store: Store) -> None:
        """Undo the open transaction; SQLite may already have rolled it back itself (a full
        disk, an I/O error), and a second failure must not hide the first."""
        if store._db.in_transaction:
            try:
                store._db.execute("ROLLBACK")
            except sqlite3.Error:
                pass
