"""A disk that stops taking writes, for the tests of write failures.

`FailingDisk.install(store)` puts itself between the Store and its sqlite3 connection:
what reaches SQLite is unchanged, but a write statement (INSERT, UPDATE, DELETE, COMMIT)
can be made to fail as a full disk does, before it touches the file. This mocks the disk
(the one thing below SQLite), never the firmware's own code.
"""
from __future__ import annotations

import sqlite3
import threading
from typing import Optional

WRITES = ("INSERT", "UPDATE", "DELETE", "COMMIT")
FULL = "database or disk is full"
#: What SQLite says for EIO (a failing card, an ext4 shut down under it).
IO_ERROR = "disk I/O error"


class FailingDisk:
    def __init__(self, db: sqlite3.Connection):
        self._db = db
        self._lock = threading.Lock()
        #: Every write fails while this is set (a full disk, or a failing one).
        self.full = False
        #: The error a failing write raises: FULL (ENOSPC) or IO_ERROR (EIO).
        self.error = FULL
        #: The write this many writes from now fails (0: the next one), once.
        self.fail_in: Optional[int] = None
        self.writes = 0
        self.failed = 0

    @classmethod
    def install(cls, store) -> "FailingDisk":
        disk = cls(store._db)
        store._db = disk
        return disk

    def execute(self, sql: str, params=()):
        if sql.lstrip().split(None, 1)[0].upper() in WRITES:
            with self._lock:
                self.writes += 1
                fail = self.full
                if self.fail_in is not None:
                    fail = fail or self.fail_in == 0
                    self.fail_in = None if self.fail_in == 0 else self.fail_in - 1
                if fail:
                    self.failed += 1
                    raise sqlite3.OperationalError(self.error)
        return self._db.execute(sql, params)

    def __getattr__(self, name):
        return getattr(self._db, name)
