"""The storage layer on real SQLite files, damaged as a failing SD card damages them.

chargepoint/salvage.py (checks, salvage), chargepoint/storage.py (opening whatever the
state, degraded mode, files deleted under a running process), chargepoint/instance_lock.py
and the file modes. The real process meets the same faults in tests/test_storage_faults.py.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from chargepoint import salvage
from chargepoint import store as store_module
from chargepoint.model import storage_fault
from chargepoint.instance_lock import AlreadyRunning, InstanceLock
from chargepoint.ocpp_keys import OcppKeys
from chargepoint.model.transactions import Ledger
from chargepoint.model.outbox import Outbox
from chargepoint.storage import Storage
from chargepoint.store import Store
from tests import damage

KEY = "0123456789abcdef0123"


def make_db(path: Path, tags: int = 600) -> dict:
    """A database as a charger leaves it: keys set by the CSMS, a transaction open with six
    messages queued (one of them given up on), the rest of its tables in use, then a large
    local list and cache written last (the spare pages at the end). Returns what is in it."""
    store = Store(path)
    keys = OcppKeys(store, {}, {})
    assert keys.change("MeterValueSampleInterval", "7") == "Accepted"
    assert keys.change("AuthorizationKey", KEY) == "Accepted"
    store.set_state("availability:1", "Inoperative")
    with store.transaction():
        tx = store.execute("INSERT INTO transactions(connector_id, id_tag, meter_start, started, "
                           "last_wh, last_ts, info) VALUES(1, 'TAG1', 5000, 100.0, 5012.5, "
                           "130.0, '{}')").lastrowid
        store.execute("INSERT INTO tx_stop_data(tx_local, meter_value) VALUES(?, ?)",
                      (tx, json.dumps({"timestamp": "2026-01-01T00:00:00Z",
                                       "sampledValue": [{"value": "5000"}]})))
        store.execute("INSERT INTO reservations(reservation_id, connector_id, id_tag, expiry) "
                      "VALUES(4, 1, 'TAG9', 9999999999.0)")
        store.execute("INSERT INTO charging_profiles(profile_id, connector_id, body, installed) "
                      "VALUES(3, 0, ?, 1.0)", (json.dumps({"chargingProfileId": 3}),))
        store.execute("INSERT INTO outbox_dead(unique_id, action, payload, tx_local, attempts, "
                      "reason, discarded) VALUES('dead-1', 'MeterValues', '{}', NULL, 3, "
                      "'CALLERROR', 1.0)")
    outbox = Outbox(store)
    outbox.produce("StartTransaction", {"connectorId": 1, "idTag": "TAG1", "meterStart": 5000,
                                        "timestamp": "2026-01-01T00:00:00Z"}, tx, 100.0)
    for n in range(4):
        outbox.produce("MeterValues", {"connectorId": 1, "meterValue": [
            {"timestamp": f"2026-01-01T00:00:0{n}Z",
             "sampledValue": [{"value": str(5000 + n * 4)}]}]}, tx, 101.0 + n)
    outbox.produce("StopTransaction", {"meterStop": 5012, "timestamp": "2026-01-01T00:00:30Z",
                                       "reason": "Local"}, tx, 130.0)
    with store.transaction():
        for i in range(tags):
            store.execute("INSERT INTO local_list(id_tag, info) VALUES(?, ?)",
                          (f"LIST{i:06d}", json.dumps({"status": "Accepted"})))
            store.execute("INSERT INTO auth_cache(id_tag, info, updated) VALUES(?, ?, ?)",
                          (f"CACHE{i:06d}", json.dumps({"status": "Accepted"}), float(i)))
    expected = {
        "outbox": store.execute("SELECT seq, unique_id, action, payload FROM outbox "
                                "ORDER BY seq").fetchall(),
        "transactions": store.execute("SELECT * FROM transactions").fetchall(),
        "tx_stop_data": store.execute("SELECT * FROM tx_stop_data").fetchall(),
        "ocpp_config": sorted(store.load_config().items()),
        "state": store.execute("SELECT * FROM state ORDER BY key").fetchall(),
        "reservations": store.execute("SELECT * FROM reservations").fetchall(),
        "charging_profiles": store.execute("SELECT * FROM charging_profiles").fetchall(),
        "outbox_dead": store.execute("SELECT * FROM outbox_dead").fetchall(),
    }
    store.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    store.close()
    return expected


def contents(store: Store) -> dict:
    return {
        "outbox": store.execute("SELECT seq, unique_id, action, payload FROM outbox "
                                "ORDER BY seq").fetchall(),
        "transactions": store.execute("SELECT * FROM transactions").fetchall(),
        "tx_stop_data": store.execute("SELECT * FROM tx_stop_data").fetchall(),
        "ocpp_config": sorted(store.load_config().items()),
        "state": store.execute("SELECT * FROM state WHERE key != ? ORDER BY key",
                               (storage_fault.RECORD_KEY,)).fetchall(),
        "reservations": store.execute("SELECT * FROM reservations").fetchall(),
        "charging_profiles": store.execute("SELECT * FROM charging_profiles").fetchall(),
        "outbox_dead": store.execute("SELECT * FROM outbox_dead").fetchall(),
    }


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def asides(path: Path, why: str = "damaged") -> list[Path]:
    """The databases moved aside (not their -wal/-shm)."""
    return sorted(p for p in path.parent.iterdir() if p.name.startswith(f"{path.name}.{why}-")
                  and not p.name.endswith(("-wal", "-shm")))


@pytest.fixture
def opened():
    """`opened(path)` -> Storage.open(path), closed after the test."""
    storages = []

    def open_(path):
        s = Storage.open(path)
        storages.append(s)
        return s

    yield open_
    for s in storages:
        s.close()


# ------------------------------------------------------------------ telling damage apart
def test_a_sound_database_passes_both_checks(tmp_path):
    db = tmp_path / "cp.db"
    make_db(db)
    assert salvage.header_problem(str(db)) is None
    con = sqlite3.connect(db)
    assert salvage.integrity_problem(con) is None
    con.close()


@pytest.mark.parametrize("kind", damage.KINDS)
def test_each_kind_of_damage_is_noticed(tmp_path, kind):
    db = tmp_path / "cp.db"
    make_db(db)
    damage.damage(db, kind)
    problem = salvage.header_problem(str(db))
    if problem is None:
        con = sqlite3.connect(db)
        try:
            problem = salvage.integrity_problem(con)
        except sqlite3.DatabaseError as exc:
            problem = str(exc)
        con.close()
    assert problem


# ------------------------------------------------------------------ salvage at start
@pytest.mark.parametrize("kind", damage.KINDS)
def test_damage_at_start_keeps_every_readable_row_and_moves_the_file_aside(
        tmp_path, opened, caplog, kind):
    db = tmp_path / "cp.db"
    expected = make_db(db)
    what = damage.damage(db, kind)
    before = digest(db)
    with caplog.at_level(logging.ERROR, "chargepoint.storage"):
        storage = opened(db)
    assert storage.health.state == "repaired", what
    assert storage.health.cause == "damaged"
    # What matters is all there, in order, with the same ids and unique ids.
    assert contents(storage.store) == expected, what
    # The damaged file is kept, untouched, beside the fresh one.
    [aside] = asides(db)
    assert digest(aside) == before
    assert oct(aside.stat().st_mode & 0o777) == "0o600"
    assert storage.health.damaged_copy == str(aside)
    # One ERROR line names the path, what was wrong and the rows saved per table.
    [line] = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert str(db) in line and str(aside) in line and "outbox 6" in line, line
    assert "transactions 1" in line and "ocpp_config 2" in line, line
    assert KEY not in line
    # The fresh database is sound and carries the record the station reports.
    assert salvage.header_problem(str(db)) is None
    record = storage.store.get_state(storage_fault.RECORD_KEY)
    assert record["told"] is False and record["saved"]["outbox"] == 6
    assert record["damaged_copy"] == str(aside)


@pytest.mark.parametrize("flip", [b"\xff", b"["], ids=["not UTF-8", "broken JSON"])
def test_a_flipped_byte_inside_a_queued_message_costs_that_message_only(tmp_path, opened,
                                                                        caplog, flip):
    """Damage inside a record passes integrity_check; the check of the rows loaded at start
    finds it (else every start would fail on it), and the salvage keeps the other rows."""
    db = tmp_path / "cp.db"
    expected = make_db(db)
    victim = expected["outbox"][2]
    raw = db.read_bytes()
    at = raw.index(victim[3].encode()) + 1           # inside its payload: '{' -> flip
    db.write_bytes(raw[:at] + flip + raw[at + 1:])
    con = sqlite3.connect(db)
    assert salvage.integrity_problem(con) is None
    con.close()
    with caplog.at_level(logging.ERROR, "chargepoint.storage"):
        storage = opened(db)
    assert storage.health.state == "repaired"
    kept = contents(storage.store)["outbox"]
    assert kept == [row for row in expected["outbox"] if row != victim]
    assert "row(s) of outbox" in storage.health.problem \
        or "rows of outbox cannot be read" in storage.health.problem
    Outbox(storage.store)                             # the firmware's own load works


def test_a_bad_page_costs_its_rows_not_the_table(tmp_path):
    db = tmp_path / "cp.db"
    make_db(db, tags=3000)
    owners = damage.page_owners(db)
    pages = sorted(p for p, name in owners.items() if name == "local_list")
    middle = pages[len(pages) // 2]
    with open(db, "r+b") as f:
        f.seek((middle - 1) * damage.PAGE)
        f.write(bytes(range(256)) * 4)
    found = salvage.read(str(db), Storage._schema())
    tags = [row["id_tag"] for row in found.rows["local_list"]]
    assert found.skipped["local_list"] >= 1
    assert 3000 - 40 <= len(tags) < 3000          # one 1 KiB page holds a few dozen at most
    assert tags[0] == "LIST000000" and tags[-1] == "LIST002999"
    assert tags == sorted(tags)
    assert len(found.rows["auth_cache"]) == 3000


def test_a_destroyed_header_is_rebuilt_on_the_copy_and_everything_read(tmp_path):
    db = tmp_path / "cp.db"
    expected = make_db(db)
    damage.damage(db, "bad header")
    found = salvage.read(str(db), Storage._schema())
    assert len(found.rows["local_list"]) == 600 and not any(found.skipped.values())
    assert [(r["seq"], r["unique_id"]) for r in found.rows["outbox"]] == \
        [(seq, uid) for seq, uid, _, _ in expected["outbox"]]


def test_rows_in_the_wal_are_salvaged_too(tmp_path):
    """A power cut leaves recent commits in the -wal only; the salvage reads them."""
    db = tmp_path / "cp.db"
    make_db(db)
    store = Store(db)
    store.save_config("HeartbeatInterval", "123")
    for name in ("", "-wal"):                       # the files as a cut leaves them
        (tmp_path / f"cut.db{name}").write_bytes((tmp_path / f"cp.db{name}").read_bytes())
    store.close()
    found = salvage.read(str(tmp_path / "cut.db"), Storage._schema())
    assert {"key": "HeartbeatInterval", "value": "123"} in found.rows["ocpp_config"]


def test_garbled_rows_are_dropped_not_loaded(tmp_path):
    db = tmp_path / "cp.db"
    make_db(db)
    con = sqlite3.connect(db)
    con.execute("INSERT INTO outbox(unique_id, action, payload, created) "
                "VALUES('bad-json', 'MeterValues', '{\"conn', 1.0)")
    con.execute("INSERT INTO transactions(connector_id, id_tag, meter_start, started, last_wh, "
                "last_ts) VALUES(1, 'T', 'not a number', 1.0, 1.0, 1.0)")
    con.commit()
    con.close()
    found = salvage.read(str(db), Storage._schema())
    assert "bad-json" not in [r["unique_id"] for r in found.rows["outbox"]]
    assert found.dropped["outbox"] == 1 and found.dropped["transactions"] == 1
    assert "garbled rows dropped in" in found.summary()


@pytest.mark.parametrize("content,said", [(b"", "empty file"),
                                          (b"not a database\n" * 300, "not an SQLite database")])
def test_nothing_to_salvage_starts_fresh_and_says_so(tmp_path, opened, caplog, content, said):
    db = tmp_path / "cp.db"
    db.write_bytes(content)
    with caplog.at_level(logging.ERROR, "chargepoint.storage"):
        storage = opened(db)
    assert storage.health.state == "repaired"
    assert storage.health.cause == ("empty" if not content else "damaged")
    assert storage.store.execute("SELECT COUNT(*) FROM outbox").fetchone() == (0,)
    [line] = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert str(db) in line and said in line
    [aside] = asides(db)
    assert aside.read_bytes() == content


def test_a_repair_is_reported_until_the_csms_was_told(tmp_path):
    db = tmp_path / "cp.db"
    db.write_bytes(b"")
    first = Storage.open(db)
    first.close()
    again = Storage.open(db)                # restarted before the CSMS heard of it
    assert again.health.state == "repaired" and again.health.cause == "empty"
    record = again.store.get_state(storage_fault.RECORD_KEY)
    again.store.set_state(storage_fault.RECORD_KEY, {**record, "told": True})
    again.close()
    told = Storage.open(db)
    assert told.health.state == "ok"
    told.close()


# ------------------------------------------------------------------ files deleted or replaced
def _queue_one(store: Store, uid: str) -> None:
    store.execute("INSERT INTO outbox(unique_id, action, payload, created) "
                  "VALUES(?, 'MeterValues', '{}', 1.0)", (uid,))


@pytest.mark.parametrize("gone", ["database", "wal", "all three", "directory", "replaced"])
def test_files_deleted_under_a_running_store_are_written_anew(tmp_path, opened, caplog, gone):
    db = tmp_path / "state" / "cp.db"
    db.parent.mkdir()
    expected = make_db(db)
    storage = opened(db)
    _queue_one(storage.store, "before")
    assert storage.check_files() is False
    if gone == "database":
        os.unlink(db)
    elif gone == "wal":
        os.unlink(f"{db}-wal")
    elif gone == "all three":
        for suffix in ("", "-wal", "-shm"):
            os.unlink(f"{db}{suffix}")
    elif gone == "directory":
        for child in db.parent.iterdir():
            child.unlink()
        db.parent.rmdir()
    else:
        other = sqlite3.connect(tmp_path / "other.db")
        other.execute("CREATE TABLE unrelated(x)")
        other.close()
        os.rename(tmp_path / "other.db", db)
    with caplog.at_level(logging.WARNING, "chargepoint.storage"):
        assert storage.check_files() is True
    assert any("deleted or replaced" in r.getMessage() and r.levelno == logging.WARNING
               for r in caplog.records)
    assert storage.health.state == "repaired" and storage.health.cause == "deleted"
    assert storage.check_files() is False                   # settled on the new file
    _queue_one(storage.store, "after")
    if gone == "replaced":
        [foreign] = asides(db, "replaced")
        assert sqlite3.connect(foreign).execute(
            "SELECT name FROM sqlite_master").fetchall() == [("unrelated",)]
    assert (db.parent / "cp.db.lock").exists()
    storage.close()
    # A power cut now loses nothing: everything is in the files at the path.
    reopened = Store(db)
    now = contents(reopened)
    assert [uid for _, uid, _, _ in now["outbox"]] == \
        [uid for _, uid, _, _ in expected["outbox"]] + ["before", "after"]
    assert now["ocpp_config"] == expected["ocpp_config"]
    assert now["transactions"] == expected["transactions"]
    assert reopened.execute("SELECT COUNT(*) FROM local_list").fetchone() == (600,)
    reopened.close()


def test_a_rewrite_waits_for_a_transaction_in_progress(tmp_path, opened):
    db = tmp_path / "cp.db"
    storage = opened(db)
    inside, release = threading.Event(), threading.Event()

    def writer():
        with storage.store.transaction():
            _queue_one(storage.store, "one")
            inside.set()
            release.wait(5)
            _queue_one(storage.store, "two")

    thread = threading.Thread(target=writer)
    thread.start()
    inside.wait(5)
    os.unlink(db)
    rewriting = threading.Thread(target=storage.check_files)
    rewriting.start()
    rewriting.join(0.2)
    assert rewriting.is_alive()                             # held off by the open commit
    release.set()
    thread.join(5)
    rewriting.join(5)
    storage.close()
    store = Store(db)
    assert [u for (u,) in store.execute("SELECT unique_id FROM outbox")] == ["one", "two"]
    store.close()


# ------------------------------------------------------------------ one process per database
def test_a_second_open_is_refused_naming_the_holder(tmp_path, opened):
    db = tmp_path / "cp.db"
    opened(db)
    with pytest.raises(AlreadyRunning) as refused:
        Storage.open(db)
    assert refused.value.pid == os.getpid()
    assert str(db) in str(refused.value) and f"pid {os.getpid()}" in str(refused.value)


def test_the_lock_dies_with_its_process(tmp_path):
    db = tmp_path / "cp.db"
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from chargepoint.instance_lock import "
         "InstanceLock; InstanceLock(sys.argv[1]).acquire(); print('held', flush=True); "
         "time.sleep(60)", str(db)], stdout=subprocess.PIPE, text=True,
        cwd=Path(__file__).resolve().parents[1])
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(AlreadyRunning) as refused:
            InstanceLock(str(db)).acquire()
        assert refused.value.pid == holder.pid
    finally:
        holder.kill()
        holder.wait()
    lock = InstanceLock(str(db))
    assert lock.acquire()
    lock.release()


# ------------------------------------------------------------------ file modes
@pytest.mark.parametrize("umask", [0o022, 0o077, 0o002])
def test_database_files_are_private_whatever_the_umask(tmp_path, opened, umask):
    db = tmp_path / "cp.db"
    old = os.umask(umask)
    try:
        storage = opened(db)
        _queue_one(storage.store, "x")
    finally:
        os.umask(old)
    for name in ("cp.db", "cp.db-wal", "cp.db-shm", "cp.db.lock"):
        assert oct((tmp_path / name).stat().st_mode & 0o777) == "0o600", name


def test_wider_modes_of_an_existing_database_are_tightened(tmp_path, caplog):
    db = tmp_path / "cp.db"
    make_db(db)
    store = Store(db)                         # leaves -wal and -shm behind while open
    for name in ("cp.db", "cp.db-wal", "cp.db-shm"):
        os.chmod(tmp_path / name, 0o644)
    with caplog.at_level(logging.WARNING, "chargepoint.storage"):
        storage = Storage.open(db)
    store.close()
    storage.close()
    assert oct(db.stat().st_mode & 0o777) == "0o600"
    assert sum("tightened" in r.getMessage() for r in caplog.records) >= 1


# ------------------------------------------------------------------ nothing can be written
needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="mounting a tmpfs needs root")


@pytest.fixture
def tmpfs(tmp_path):
    """A 1 MiB tmpfs mounted for the test (root only), unmounted after."""
    mount = tmp_path / "mnt"
    mount.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m,mode=0755", "tmpfs", str(mount)],
                   check=True)
    yield mount
    subprocess.run(["umount", "-l", str(mount)], check=False)


def remount(mount: Path, how: str) -> None:
    subprocess.run(["mount", "-o", f"remount,{how}", str(mount)], check=True)


@needs_root
@pytest.mark.parametrize("case", ["read-only, first boot", "read-only, crashed with a wal",
                                  "full, first boot"])
def test_nothing_writable_runs_in_memory_and_moves_to_the_file_when_it_can(
        tmpfs, opened, caplog, case):
    db = tmpfs / "cp.db"
    expected = None
    if case == "read-only, crashed with a wal":
        expected = make_db(db, tags=50)
        live = Store(db)                                   # a commit still in the -wal
        live.save_config("HeartbeatInterval", "123")
        for name in ("", "-wal", "-shm"):
            (tmpfs / f"cut{name}").write_bytes(Path(f"{db}{name}").read_bytes())
        live.close()
        for name in ("", "-wal", "-shm"):
            os.replace(tmpfs / f"cut{name}", f"{db}{name}")
    filler = tmpfs / "filler"
    if case.startswith("full"):
        with open(filler, "wb") as f:
            with pytest.raises(OSError):
                while True:
                    f.write(b"\0" * 65536)
                    f.flush()
    else:
        remount(tmpfs, "ro")
    with caplog.at_level(logging.ERROR, "chargepoint.storage"):
        storage = opened(db)
    assert storage.health.state == "degraded" and not storage.health.durable
    [line] = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert str(db) in line and "in-memory" in line and "NOTHING IS DURABLE" in line
    if expected is not None:
        assert contents(storage.store)["outbox"] == expected["outbox"]
        assert ("HeartbeatInterval", "123") in contents(storage.store)["ocpp_config"]
    storage.store.save_config("MeterValueSampleInterval", "9")     # works, in memory
    _queue_one(storage.store, "while degraded")
    with pytest.raises((OSError, sqlite3.Error)):
        storage.try_attach()                                 # still nowhere to write
    assert not Path(f"{db}.new").exists()
    if case.startswith("full"):
        filler.unlink()
    else:
        remount(tmpfs, "rw")
    assert storage.try_attach() is True
    assert storage.health.state == "ok" and storage.health.durable
    _queue_one(storage.store, "after")
    storage.close()
    store = Store(db)
    now = contents(store)
    assert ("MeterValueSampleInterval", "9") in now["ocpp_config"]
    assert [u for _, u, _, _ in now["outbox"]][-2:] == ["while degraded", "after"]
    if expected is not None:
        assert now["outbox"][:6] == expected["outbox"]
        assert ("HeartbeatInterval", "123") in now["ocpp_config"]
    assert store.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    store.close()
    assert oct(db.stat().st_mode & 0o777) == "0o600"


@needs_root
def test_a_damaged_file_on_a_read_only_filesystem_is_moved_aside_once_writable(
        tmpfs, opened):
    db = tmpfs / "cp.db"
    expected = make_db(db, tags=50)
    damage.damage(db, "bad header")
    remount(tmpfs, "ro")
    storage = opened(db)
    assert storage.health.state == "degraded"
    assert contents(storage.store)["outbox"] == expected["outbox"]
    remount(tmpfs, "rw")
    assert storage.try_attach() is True
    assert storage.health.state == "repaired" and storage.health.cause == "damaged"
    assert len(asides(db)) == 1
    storage.close()
    store = Store(db)
    assert contents(store)["outbox"] == expected["outbox"]
    store.close()


def test_a_missing_directory_that_cannot_be_made_runs_in_memory(tmp_path, opened):
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("")
    storage = opened(blocker / "state" / "cp.db")
    assert storage.health.state == "degraded"
    storage.store.save_config("HeartbeatInterval", "77")
    assert storage.store.load_config() == {"HeartbeatInterval": "77"}
    blocker.unlink()
    assert storage.try_attach() is True
    assert Path(blocker / "state" / "cp.db").exists()


def test_an_unforeseen_error_while_opening_runs_in_memory_and_keeps_the_file(
        tmp_path, opened, monkeypatch, caplog):
    db = tmp_path / "cp.db"
    expected = make_db(db)
    before = digest(db)

    def broken(path):
        raise ValueError("a bug")

    monkeypatch.setattr(salvage, "header_problem", broken)
    with caplog.at_level(logging.ERROR, "chargepoint.storage"):
        storage = opened(db)
    assert storage.health.state == "degraded"
    assert any("a bug" in (r.exc_text or "") for r in caplog.records)
    _queue_one(storage.store, "in memory")
    assert storage.try_attach() is True
    [kept] = asides(db, "replaced")                    # not deleted: it was never read
    assert digest(kept) == before
    store = Store(kept)
    assert contents(store)["outbox"] == expected["outbox"]
    store.close()


def test_the_guard_moves_a_degraded_store_onto_the_file_by_itself(tmp_path, monkeypatch):
    from chargepoint import storage as storage_module

    monkeypatch.setattr(storage_module, "RETRY_MIN_S", 0.05)
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("")
    events = []
    storage = Storage.open(blocker / "cp.db")
    try:
        storage.watch(events.append)
        assert [(e.code.value, e.active, e.vendor_error_code) for e in events] == \
            [("InternalError", True, storage_fault.NOT_DURABLE)]
        blocker.unlink()
        deadline = time.monotonic() + 5
        while storage.health.state != "ok" and time.monotonic() < deadline:
            time.sleep(0.02)
        assert storage.health.state == "ok"
        assert [(e.code.value, e.active) for e in events][-1] == ("InternalError", False)
    finally:
        storage.close()


# ------------------------------------------------------------------ what the CSMS hears
def _connector0(csms, after: int = 0) -> list[tuple]:
    return [(r["errorCode"], r.get("info"), r.get("vendorErrorCode"))
            for r in csms.records("StatusNotification", after=after) if r["connectorId"] == 0]


def test_a_repair_is_reported_once_on_connector_0_even_after_a_restart(tmp_path, csms,
                                                                        firmware):
    """Registration refused: the repair cannot be reported yet. A restart later it is, once,
    as InternalError with info naming storage, followed by NoError; then never again."""
    (tmp_path / "chargepoint.db").write_bytes(b"")
    csms.boot_response = {"status": "Rejected", "interval": 300}
    fw = firmware()
    csms.wait_for("BootNotification")
    fw.advance(1)
    assert _connector0(csms) == []
    fw.stop()
    csms.boot_response = {"status": "Accepted"}
    mark = len(csms.received)
    fw.start()
    csms.wait_for("StatusNotification", lambda r: r["connectorId"] == 0
                  and r["errorCode"] == "NoError", after=mark)
    assert _connector0(csms, mark) == [
        ("InternalError", "storage: empty db file replaced, data lost", "StorageRepaired"),
        ("NoError", None, None)]
    assert fw.runtime.store.health.state == "ok"
    mark = len(csms.received)
    fw.restart()
    csms.wait_for("StatusNotification", lambda r: r["connectorId"] == 0, after=mark)
    fw.advance(1)
    assert _connector0(csms, mark) == [("NoError", None, None)]


# ------------------------------------------------------------------ any damage at all
@pytest.fixture(scope="module")
def template(tmp_path_factory):
    path = tmp_path_factory.mktemp("template") / "cp.db"
    expected = make_db(path, tags=300)
    return path, expected


def test_whatever_the_damage_the_store_opens_sound_and_keeps_only_real_rows(tmp_path_factory,
                                                                         template):
    """Random bytes anywhere, the file cut anywhere: Storage.open never fails, the database
    it gives is sound and writable, and the firmware's own loaders start on it."""
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st

    source, expected = template
    originals = expected["outbox"]
    size = source.stat().st_size
    tried = []

    @settings(max_examples=60, deadline=None, derandomize=True,
              suppress_health_check=[HealthCheck.function_scoped_fixture])
    @given(hits=st.lists(st.tuples(st.integers(0, size - 1), st.binary(min_size=1,
                                                                       max_size=3000)),
                         min_size=1, max_size=4),
           cut=st.one_of(st.none(), st.integers(0, size)))
    def check(hits, cut):
        tried.append((hits, cut))
        db = tmp_path_factory.mktemp("hit") / "cp.db"
        db.write_bytes(source.read_bytes())
        with open(db, "r+b") as f:
            for offset, data in hits:
                f.seek(offset)
                f.write(data[:size - offset])
            if cut is not None:
                f.truncate(cut)
        storage = Storage.open(db)
        try:
            assert storage.health.durable
            store = storage.store
            keys = OcppKeys(store, {}, {})
            assert keys.int("HeartbeatInterval") > 0
            Ledger(store)
            for item in Outbox(store):
                assert isinstance(item.payload, dict)
            assert {seq for seq, *_ in store.execute("SELECT seq FROM outbox")} <= \
                {seq for seq, *_ in originals}
            _queue_one(store, "still writable")
            assert store.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        finally:
            storage.close()

    check()
    assert len(tried) >= 60


# --------------------------------------------------------------------------- after a rollback

def _newer_release(monkeypatch, script: str, breaking: bool):
    """This firmware as a newer release with one more migration."""
    number = len(store_module.MIGRATIONS) + 1
    monkeypatch.setattr(store_module, "MIGRATIONS", [*store_module.MIGRATIONS, script])
    if breaking:
        monkeypatch.setattr(store_module, "BREAKING", store_module.BREAKING | {number})
    return number


def test_a_database_a_newer_release_changed_additively_is_used_after_a_rollback(
        tmp_path, monkeypatch, caplog):
    path = tmp_path / "cp.db"
    with monkeypatch.context() as newer:
        number = _newer_release(newer, "ALTER TABLE state ADD COLUMN note TEXT; "
                                       "CREATE TABLE things (x INTEGER)", breaking=False)
        store = Store(path)
        store.set_state("kept", 1)
        store.close()
    storage = Storage.open(str(path))           # the older release again: no repair
    try:
        assert storage.health.state == "ok", storage.health
        storage.store.set_state("written", 2)
        assert storage.store.get_state("kept") == 1
        assert storage.store.execute("PRAGMA user_version").fetchone()[0] == number
    finally:
        storage.close()
    assert f"migrated by a newer firmware (schema {number})" in caplog.text


def test_a_database_a_newer_release_changed_incompatibly_is_refused_naming_both(
        tmp_path, monkeypatch):
    path = tmp_path / "cp.db"
    with monkeypatch.context() as newer:
        number = _newer_release(newer, "ALTER TABLE state RENAME COLUMN value TO v",
                                breaking=True)
        Store(path).close()
    with pytest.raises(RuntimeError, match=f"schema {number}.*this one knows {number - 1}"):
        Store(path)
