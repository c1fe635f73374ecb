"""Opening the database whatever state the card is in, and keeping it where it belongs.

A damaged SD card must never stop the charger. `Storage.open`, after taking the
single-instance lock (chargepoint/instance_lock.py):

- tightens the database files to 0600 if they are wider (they hold the AuthorizationKey);
- checks an existing file: its size and header (100 bytes), `PRAGMA integrity_check`, and
  that the rows loaded at start decode and fit the schema (a flipped byte inside a record
  passes integrity_check but would fail every start);
- salvages a damaged one (corrupt, not a database, truncated, empty): what can be read is
  copied into a fresh database at the same path (chargepoint/salvage.py), and the damaged
  file with its -wal/-shm is moved aside as `<name>.damaged-<UTC time>` for forensics;
- where nothing can be written (read-only filesystem, no space, unwritable or missing
  directory) runs **degraded**: the database lives in memory, seeded with whatever could
  be read, so drivers are served by the offline rules without durable guarantees.

While the firmware runs, `StorageGuard` (a thread, so the station loop never polls):
- every CHECK_INTERVAL_S compares the inodes of the database, -wal and -shm with those
  seen at open; if one was deleted or replaced, the current state (the open connection
  still reads the deleted inodes) is written anew to a fresh file at the path;
- in degraded mode, retries the real file with back-off (RETRY_MIN_S doubling to
  RETRY_MAX_S) and moves the in-memory state onto it once it can be written.

Every fault is logged at ERROR (a rewrite after deletion at WARNING), kept in
`Store.health`, and reported to the CSMS on connector 0 (errorCode InternalError,
chargepoint/model/storage_fault.py) through a HardwareFault event.
"""
from __future__ import annotations

import logging
import os
import sqlite3
import threading
from datetime import datetime, timezone
from typing import Callable, Optional

from chargepoint import durable, salvage
from chargepoint.model import storage_fault
from chargepoint.instance_lock import AlreadyRunning, InstanceLock
from chargepoint.store import FILE_MODE, SIDECARS, Store, connect, create_private

log = logging.getLogger("chargepoint.storage")

#: How often the guard checks that the database files are still the ones open.
CHECK_INTERVAL_S = 2.0
#: Degraded mode: first and longest pause between attempts to write the real file.
RETRY_MIN_S = 2.0
RETRY_MAX_S = 60.0

#: SQLite result codes that mean the place, not the file's content, is at fault:
#: SQLITE_PERM, BUSY, LOCKED, NOMEM, READONLY, FULL, CANTOPEN, AUTH.
_UNWRITABLE_CODES = {3, 5, 6, 7, 8, 13, 14, 23}


def _cannot_write(exc: BaseException) -> bool:
    """True if opening failed for the place (read-only, full, permissions, no directory);
    False if for what the file holds (corrupt, not a database, a header field that makes
    no sense, a schema this firmware cannot carry on from)."""
    if isinstance(exc, OSError):
        return True
    code = getattr(exc, "sqlite_errorcode", None)
    return code is not None and code & 0xFF in _UNWRITABLE_CODES


def _utc_stamp() -> str:
    return datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")


def _ident(path: str) -> Optional[tuple[int, int]]:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_dev, st.st_ino


def _unlink_all(*names: str) -> None:
    for name in names:
        try:
            os.unlink(name)
        except FileNotFoundError:
            pass


class Storage:
    """The Store, how healthy it is, the lock that makes it ours, and its guard."""

    def __init__(self, path: str, lock: InstanceLock):
        self.path = path
        self.lock = lock
        self.store: Store
        #: Files at the path that are ours: name -> (st_dev, st_ino) seen at open.
        self._ids: dict[str, tuple[int, int]] = {}
        #: Degraded: the problem of a damaged file still at the path, to move aside.
        self._damaged_in_place = ""
        #: Degraded: the file at the path was read completely (its content is in memory).
        self._read_completely = False
        self._guard: Optional[StorageGuard] = None
        self._emit: Optional[Callable[[object], None]] = None
        #: vendorErrorCode of the fault last reported through `_emit` ("" = none).
        self._reported = ""

    @property
    def health(self):
        return self.store.health

    # ------------------------------------------------------------------ start
    @classmethod
    def open(cls, path: str) -> "Storage":
        """Open the database at `path`, whatever state it is in. Raises AlreadyRunning if
        another process holds it; never raises for a damaged file or an unwritable place."""
        path = str(path)
        lock = InstanceLock(path)
        if path != ":memory:":
            try:
                os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
            except OSError:
                pass                            # degraded below; the lock waits for the guard
            lock.acquire()
        storage = cls(path, lock)
        try:
            storage._open()
        except Exception:
            # Whatever this layer did not foresee must not stop the charger either.
            log.exception("storage: could not open %s", path)
            storage._degrade("an unexpected error (above)", damaged="",
                             found=salvage.Salvage(unreadable={"*": "not read"}))
        except BaseException:
            lock.release()
            raise
        return storage

    def _open(self) -> None:
        path = self.path
        if path == ":memory:":
            self.store = Store(path)
            return
        self._tighten_modes()
        existed = os.path.exists(path)
        problem = None
        try:
            problem = salvage.header_problem(path) if existed else None
        except OSError as exc:
            problem = f"cannot be read ({exc.strerror})"
        if problem is None:
            db = None
            try:
                db = connect(path)
                if existed:
                    problem = salvage.integrity_problem(db)
                if problem is None:
                    store = Store(path, db)             # migrated before its content is judged
                    if existed:
                        problem = salvage.content_problem(db, self._schema())
                    if problem is None:
                        _probe_write(store)
                        self.store = store
                        self._remember_files()
                        self._resume_record()
                        return
                db.close()
            except (sqlite3.Error, OSError, RuntimeError, UnicodeError) as exc:
                if db is not None:
                    _close_quietly(db)
                if not existed:
                    self._remove_created()
                if existed and not _cannot_write(exc):
                    problem = str(exc)
                else:
                    self._degrade(f"cannot write it ({_reason(exc)})", damaged="")
                    return
        self._repair(problem)

    def _tighten_modes(self) -> None:
        for name in (self.path, *(self.path + s for s in SIDECARS)):
            try:
                mode = os.stat(name).st_mode & 0o777
                if mode & ~FILE_MODE:
                    os.chmod(name, FILE_MODE)
                    log.warning("storage: %s was mode %04o; tightened to %04o (it holds the "
                                "AuthorizationKey)", name, mode, FILE_MODE)
            except (FileNotFoundError, NotADirectoryError):
                continue
            except OSError as exc:
                log.warning("storage: could not tighten the mode of %s: %s", name, exc.strerror)

    def _remove_created(self) -> None:
        """Remove what a failed first creation left (an empty file would read as damage)."""
        for name in (self.path, *(self.path + s for s in SIDECARS)):
            try:
                if os.path.getsize(name) == 0 or name != self.path:
                    os.unlink(name)
            except OSError:
                pass

    def _remember_files(self) -> None:
        self._ids = {name: ident for name in (self.path, *(self.path + s for s in SIDECARS))
                     if (ident := _ident(name)) is not None}

    def _resume_record(self) -> None:
        """A repair that the CSMS has not been told of yet (the firmware restarted first)
        is still a fault to report."""
        record = self.store.get_state(storage_fault.RECORD_KEY)
        if isinstance(record, dict) and not record.get("told", True):
            health = self.store.health
            health.state, health.cause = "repaired", str(record.get("cause", "damaged"))
            health.problem = str(record.get("problem", ""))
            health.damaged_copy = str(record.get("damaged_copy", ""))
            health.saved = dict(record.get("saved") or {})

    def _repair(self, problem: str) -> None:
        """The file at the path is damaged: salvage, move it aside, start a fresh one."""
        empty = problem.startswith("empty file")
        found = salvage.Salvage() if empty else salvage.read(self.path, self._schema())
        aside = ""
        try:
            aside = self._move_aside("damaged")
            store = Store(self.path)
        except (sqlite3.Error, OSError) as exc:
            if aside:                   # what is at the path now is the failed fresh file
                self._remove_created()
            self._degrade(f"it is damaged ({problem}) and cannot be replaced ({_reason(exc)})",
                          damaged="" if aside else problem, found=found, aside=aside)
            return
        saved = salvage.seed(store, found)
        self.store = store
        self._remember_files()
        self._set_repaired("empty" if empty else "damaged", problem, aside, saved)
        if empty:
            log.error("storage: %s was an empty file (0 bytes): everything it held is lost "
                      "(queued transaction messages, open transactions, keys set by the "
                      "CSMS); moved aside as %s; started a fresh database", self.path, aside)
        else:
            log.error("storage: %s was damaged (%s); moved aside as %s; started a fresh "
                      "database with what could be read: %s", self.path, problem, aside,
                      found.summary())

    def _set_repaired(self, cause: str, problem: str, aside: str,
                      saved: dict[str, int]) -> None:
        health = self.store.health
        health.path, health.state, health.cause, health.problem = \
            self.path, "repaired", cause, problem
        health.damaged_copy, health.saved = aside, saved
        self.store.set_state(storage_fault.RECORD_KEY, {
            "cause": cause, "problem": problem,
            "at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "damaged_copy": aside, "saved": saved, "told": False})

    def _degrade(self, reason: str, damaged: str, found: Optional[salvage.Salvage] = None,
                 aside: str = "") -> None:
        """Nothing can be written at the path: run on an in-memory database."""
        if found is None:
            try:
                readable = os.path.getsize(self.path) > 0
            except OSError:
                readable = False
            found = salvage.read(self.path, self._schema()) if readable else salvage.Salvage()
        self._damaged_in_place = damaged
        self._read_completely = not damaged and not any(found.skipped.values()) \
            and not found.unreadable and not any(found.dropped.values())
        self.store = Store(":memory:")
        saved = salvage.seed(self.store, found)
        health = self.store.health
        health.path, health.state, health.cause = self.path, "degraded", "unwritable"
        health.problem = f"cannot use {self.path}: {reason}"
        health.damaged_copy, health.saved = aside, saved
        log.error("storage: cannot use %s: %s. Running on an in-memory database: NOTHING IS "
                  "DURABLE (a power cut loses queued transaction messages, open transactions "
                  "and keys set since); drivers are still served. Retrying "
                  "the file every %.0f-%.0f s. Read from the file: %s", self.path, reason,
                  RETRY_MIN_S, RETRY_MAX_S, found.summary())

    @staticmethod
    def _schema() -> dict:
        fresh = Store(":memory:")
        try:
            return salvage.schema_of(fresh.connection)
        finally:
            fresh.close()

    def _move_aside(self, why: str, names: Optional[list[str]] = None) -> str:
        """Rename the database (and its -wal/-shm) to `<name>.<why>-<UTC time>[-wal|-shm]`,
        so SQLite still finds the pair; returns the new name of the database."""
        base = f"{self.path}.{why}-{_utc_stamp()}"
        target, n = base, 1
        while any(os.path.exists(target + s) for s in ("", *SIDECARS)):
            n += 1
            target = f"{base}.{n}"
        moved = ""
        for suffix in ("", *SIDECARS):
            name = self.path + suffix
            if names is not None and name not in names or not os.path.lexists(name):
                continue
            os.rename(name, target + suffix)
            try:
                os.chmod(target + suffix, FILE_MODE)
            except OSError:
                pass
            if not suffix:
                moved = target
        return moved or target

    # ------------------------------------------------------------------ running
    def watch(self, emit: Callable[[object], None]) -> None:
        """Report the current fault (if any) through `emit` and start the guard."""
        self._emit = emit
        if self.store.health.state != "ok":
            self._report()
        if self.path != ":memory:" and self._guard is None:
            self._guard = StorageGuard(self)
            self._guard.start()

    def _report(self) -> None:
        """Tell the station (connector 0) how storage is now. A new kind of fault clears the
        old one first, so the CSMS hears it as a change."""
        if self._emit is None:
            return
        health = self.store.health
        event = storage_fault.fault(health) if health.state != "ok" else None
        if self._reported and (event is None or event.vendor_error_code != self._reported):
            self._emit(storage_fault.cleared())
        if event is not None:
            self._emit(event)
        self._reported = event.vendor_error_code if event is not None else ""

    def check_files(self) -> bool:
        """Rewrite the database if a file of it was deleted or replaced; True if it was."""
        self.lock.renew()
        gone = [name for name, ident in self._ids.items() if _ident(name) != ident]
        if not gone:
            return False
        what = ", ".join(os.path.basename(n) for n in gone)
        log.warning("storage: %s deleted or replaced under the running firmware; writing the "
                    "current state anew to %s", what, self.path)
        self._write_anew(foreign="replaced")
        self.lock.renew()                   # the directory may have gone with it
        self._set_repaired("deleted", f"{what} deleted or replaced while running", "",
                           self._counts())
        log.warning("storage: %s written anew (%s); carrying on with it", self.path,
                    ", ".join(f"{t} {n}" for t, n in self._counts().items()))
        self._report()
        return True

    def try_attach(self) -> bool:
        """Degraded: move the in-memory state onto the real file if it can be written now."""
        os.makedirs(os.path.dirname(self.path) or ".", exist_ok=True)
        if not self.lock.held and not self.lock.acquire():      # AlreadyRunning: stay
            raise OSError(f"cannot create {self.lock.path}")
        damaged = self._damaged_in_place
        aside = self._write_anew(foreign="damaged" if damaged else (
            None if self._read_completely else "replaced"))
        self._damaged_in_place = ""
        health = self.store.health
        health.path = self.path
        if damaged:
            self._set_repaired("damaged", damaged, aside, health.saved)
        else:
            health.state, health.cause, health.problem, health.damaged_copy = "ok", "", "", ""
        log.warning("storage: %s can be written again; the in-memory state is now on disk "
                    "(%s)%s", self.path, ", ".join(f"{t} {n}" for t, n in self._counts().items()),
                    f"; the damaged file was moved aside as {aside}" if aside else "")
        self._report()
        return True

    def _counts(self) -> dict[str, int]:
        return {t: self.store.execute(f'SELECT COUNT(*) FROM "{t}"').fetchone()[0]
                for t in ("outbox", "transactions", "ocpp_config")}

    def _write_anew(self, foreign: Optional[str]) -> str:
        """Write the current state to a fresh file at the path and carry on with it.

        Files at the path that are ours (the inodes seen at open) are stale once the new
        file is in place and are unlinked; others are moved aside as
        `<name>.<foreign>-<time>`, or unlinked when `foreign` is None (their content is in
        memory already). The new file is complete and synced before it takes the path, so
        a cut leaves either the old files or the new one. Returns the name the old
        database was moved to, or ""."""
        tmp = self.path + ".new"
        names = (self.path, *(self.path + s for s in SIDECARS))
        with self.store.exclusive():
            os.makedirs(os.path.dirname(self.path) or ".", exist_ok=True)
            _unlink_all(tmp, *(tmp + s for s in SIDECARS))
            create_private(tmp)
            try:
                target = sqlite3.connect(tmp)
                try:
                    self.store.backup_to(target)
                finally:
                    target.close()
                durable.fsync_file(tmp)
            except BaseException:
                _unlink_all(tmp, *(tmp + s for s in SIDECARS))
                raise
            ours = [n for n in names if _ident(n) is not None and _ident(n) == self._ids.get(n)]
            theirs = [n for n in names if os.path.lexists(n) and n not in ours]
            aside = ""
            if theirs and foreign is not None:
                moved = self._move_aside(foreign, theirs)
                aside = moved if self.path in theirs else ""
            os.rename(tmp, self.path)
            # A -wal or -shm left beside the new file would be read as its own: remove them
            # before anything opens it (the old connection keeps its open descriptors).
            _unlink_all(*(n for n in names if n != self.path
                          and (n in ours or foreign is None and n in theirs)))
            durable.fsync_dir(os.path.dirname(self.path) or ".")
            # Closed before the new file is opened: SQLite deletes the -wal and -shm by
            # name when its last connection to a database closes.
            _close_quietly(self.store.connection)
            try:
                db = connect(self.path)
            except (sqlite3.Error, OSError):
                self._fall_back_to_memory()
                raise
            self.store.swap(db)
            self.store.path = self.path
            self._remember_files()
        return aside

    def _fall_back_to_memory(self) -> None:
        """The new file was written but cannot be opened: carry on in memory with what it
        holds (degraded) rather than on a closed connection."""
        found = salvage.read(self.path, self._schema())
        memory = Store(":memory:")
        salvage.seed(memory, found)
        self.store.swap(memory.connection)
        self.store.path = ":memory:"
        health = self.store.health
        health.state, health.cause = "degraded", "unwritable"
        health.problem = f"cannot reopen {self.path} after writing it anew"
        self._ids, self._read_completely, self._damaged_in_place = {}, False, ""
        log.error("storage: %s; running on an in-memory database (NOT durable) with what it "
                  "holds: %s", health.problem, found.summary())
        self._report()

    def close(self) -> None:
        if self._guard is not None:
            self._guard.stop()
            self._guard = None
        try:
            self.store.close()
        finally:
            self.lock.release()


class StorageGuard(threading.Thread):
    """Checks the files every CHECK_INTERVAL_S; in degraded mode retries with back-off."""

    def __init__(self, storage: Storage):
        super().__init__(name="storage-guard", daemon=True)
        self.storage = storage
        self._stopping = threading.Event()

    def stop(self) -> None:
        self._stopping.set()
        if self.is_alive() and threading.current_thread() is not self:
            self.join(timeout=10)

    def run(self) -> None:
        storage = self.storage
        delay = CHECK_INTERVAL_S if storage.health.durable else RETRY_MIN_S
        last_failure = ""
        while not self._stopping.wait(delay):
            on_file = storage.health.durable
            try:
                if on_file:
                    storage.check_files()
                else:
                    storage.try_attach()
                delay, last_failure = CHECK_INTERVAL_S, ""
                continue
            except (OSError, sqlite3.Error, AlreadyRunning) as exc:
                reason = _reason(exc)
            except Exception:
                log.exception("storage guard failed; it carries on")
                continue
            if reason != last_failure:
                if on_file:
                    log.error("storage: could not write %s anew: %s; trying again",
                              storage.path, reason)
                else:
                    log.warning("storage: %s still cannot be written (%s); staying on the "
                                "in-memory database", storage.path, reason)
                last_failure = reason
            delay = CHECK_INTERVAL_S if on_file else min(RETRY_MAX_S, delay * 2)


def _probe_write(store: Store) -> None:
    """One real durable commit (a read-only file opens fine and fails only when written;
    a full disk fails only when a page must be added)."""
    with store.transaction():
        version = store.execute("PRAGMA user_version").fetchone()[0]
        store.execute(f"PRAGMA user_version={int(version)}")


def _reason(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.strerror:
        return f"{exc.strerror}: {exc.filename}" if exc.filename else exc.strerror
    return str(exc) or type(exc).__name__


def _close_quietly(db: sqlite3.Connection) -> None:
    try:
        db.close()
    except sqlite3.Error:
        pass

