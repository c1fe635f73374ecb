"""SQLite: OCPP keys, persistent charger state, transactions and the durable outbox.

One file, WAL journal, `synchronous=FULL`: a commit that returned has reached the
disk, so a transaction message whose row is committed survives a power cut. The
page size is small because the workload is many tiny commits: each commit writes
whole pages to the WAL, and smaller pages mean fewer bytes worn off an SD card.
Schema changes are numbered migrations tracked in `PRAGMA user_version`.
"""
from __future__ import annotations

import json
import os
import sqlite3
import threading
from pathlib import Path
from typing import Any

PAGE_SIZE = 1024

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
]


class Store:
    """The firmware's only persistent state. Used from the station loop's thread."""

    def __init__(self, path: str | os.PathLike):
        self.path = str(path)
        if self.path != ":memory:":
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        self._lock = threading.RLock()
        self._depth = 0
        #: Durable commits made through `transaction()` (for the wear figures in docs/).
        self.commits = 0
        self._db.execute(f"PRAGMA page_size={PAGE_SIZE}")
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._migrate()

    def _migrate(self) -> None:
        version = self._db.execute("PRAGMA user_version").fetchone()[0]
        if version > len(MIGRATIONS):
            raise RuntimeError(f"{self.path} was written by a newer firmware "
                               f"(schema {version}, this firmware knows {len(MIGRATIONS)})")
        for number, script in enumerate(MIGRATIONS[version:], start=version + 1):
            with self._lock:
                self._db.execute("BEGIN IMMEDIATE")
                try:
                    for statement in script.split(";"):
                        if statement.strip():
                            self._db.execute(statement)
                    self._db.execute(f"PRAGMA user_version={number}")
                    self._db.execute("COMMIT")
                except BaseException:
                    self._db.execute("ROLLBACK")
                    raise

    def close(self) -> None:
        with self._lock:
            self._db.close()

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

    def execute(self, sql: str, params: tuple = ()) -> sqlite3.Cursor:
        with self._lock:
            return self._db.execute(sql, params)

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
