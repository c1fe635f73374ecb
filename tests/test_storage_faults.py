"""Storage faults met by the real firmware process: a damaged SD card never stops the charger.

`chargepoint run` as a subprocess on simulated hardware (tests/crash_driver.py `Charger`,
whose meter keeps its register in a file) against the loopback CSMS, judged from the
CSMS's own log as tests/test_crash.py does. Each case checks that no crash loop
happens (the process stays up, or exits once with a clear code and one line), that a
driver can still charge, and what reaches the CSMS and the log.

Cases that need a mount (a small tmpfs made read-only or full) run as root and are
skipped otherwise; this machine and CI run as root.
"""
from __future__ import annotations

import os
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from chargepoint.csms.server import NO_RESPONSE, LocalCsms, read_log
from tests import damage
from tests.crash_driver import INITIAL_WH, TAG, Charger, check, wait_until

CP = "CP-CRASH"
#: Keys the CSMS sets in the previous run; they must survive every fault.
CSMS_KEYS = {"ConnectionTimeOut": "77", "AllowOfflineTxForUnknownId": "true"}
needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="needs root (mounts, other users)")


# ---------------------------------------------------------------------------- helpers
def booted(charger: Charger, csms: LocalCsms, after: int = 0, timeout: float = 20,
           boot: bool = True) -> None:
    """The process answers on its sim socket and the CSMS accepted its BootNotification
    (`boot`; else it reconnected, already accepted) and heard its statuses."""
    assert wait_until(lambda: charger.connector() is not None
                      or charger.proc.poll() is not None, timeout), charger.tail()
    assert charger.proc.poll() is None, f"the firmware exited:\n{charger.tail()}"
    if boot:
        csms.wait_for("BootNotification", after=after, timeout=timeout)
    csms.wait_for("StatusNotification", after=after, timeout=timeout)


def charging(charger: Charger) -> bool:
    conn = charger.connector()
    return conn is not None and conn["offered_a"] is not None and conn["power_w"] > 0


def start_session(charger: Charger) -> None:
    charger.sim("plug", "1")
    charger.sim("tap", TAG)
    assert wait_until(lambda: charging(charger), 15), charger.tail()


def stop_session(charger: Charger) -> None:
    charger.sim("tap", TAG)
    assert wait_until(lambda: (c := charger.connector()) is not None
                      and c["offered_a"] is None, 15), charger.tail()


def a_driver_can_charge(charger: Charger, csms: LocalCsms) -> None:
    """A whole session: StartTransaction and StopTransaction reach the CSMS, which answers,
    and the charger has recorded the answer (when its queue is on the file)."""
    mark = len(csms.received)
    start_session(charger)
    csms.wait_for("StartTransaction", after=mark, timeout=15)
    time.sleep(1.2)                                  # a sample or two
    stop_session(charger)
    stop = csms.wait_for("StopTransaction", after=mark, timeout=15)
    assert wait_until(lambda: stop.reply is not None, 10)
    assert wait_until(lambda: not queued_on_file(charger.db), 10)


def queued_on_file(db: Path) -> list:
    """The outbox rows in the database file ([] if there is no readable file)."""
    try:
        return _rows(db, "SELECT seq FROM outbox") if db.exists() else []
    except sqlite3.Error:
        return []


def connector0(csms: LocalCsms) -> list[tuple[str, str, str]]:
    """(errorCode, info, vendorErrorCode) of every StatusNotification for connector 0."""
    return [(r["errorCode"], r.get("info", ""), r.get("vendorErrorCode", ""))
            for r in csms.records("StatusNotification") if r["connectorId"] == 0]


def storage_reported_then_cleared(csms: LocalCsms, vendor: str, timeout: float = 20) -> None:
    def seen() -> bool:
        reports = connector0(csms)
        faults = [i for i, r in enumerate(reports) if r[0] == "InternalError" and r[2] == vendor]
        return bool(faults) and any(r[0] == "NoError" for r in reports[faults[0] + 1:])
    assert wait_until(seen, timeout), connector0(csms)
    faults = [r for r in connector0(csms) if r[0] == "InternalError"]
    assert all("storage" in info and len(info) <= 50 for _, info, _ in faults), faults


def key(csms: LocalCsms, name: str) -> str:
    answer = csms.call(CP, "GetConfiguration", {"key": [name]})
    return answer["configurationKey"][0]["value"]


def log_lines(charger: Charger, run: int = 0) -> list[str]:
    path = charger.workdir / f"run-{run or charger.runs:03d}.log"
    return path.read_text(errors="replace").splitlines()


def errors(charger: Charger) -> list[str]:
    return [line for line in log_lines(charger) if " ERROR " in line]


def no_traceback(charger: Charger) -> None:
    for run in range(1, charger.runs + 1):
        assert not any("Traceback" in line for line in log_lines(charger, run)), \
            "\n".join(log_lines(charger, run)[-40:])


def billing_is_right(log_path: Path, kills: list, final_wh: float, stops: list) -> None:
    report = check(read_log(str(log_path)), kills, stops, INITIAL_WH, final_wh)
    assert not report.problems, report.summary + "\n" + "\n".join(report.problems)


# ---------------------------------------------------------------------------- a previous run
@pytest.fixture(scope="module")
def previous_run(tmp_path_factory):
    """The files a charger leaves after: the CSMS set two keys; then offline, a whole
    session queued (StartTransaction, MeterValues, StopTransaction: at least six
    messages); then online again with the CSMS not answering StartTransaction while it
    installs a 1,000-entry local list (pages after the queue), and a clean stop once
    it is offline again.

    Returns (directory with cp.db and the meter's register file, queued count, the
    meter's register after the session)."""
    work = tmp_path_factory.mktemp("previous")
    csms = LocalCsms(host="127.0.0.1", port=0)
    csms.start()
    charger = Charger(work, csms.url)
    try:
        charger.spawn()
        booted(charger, csms)
        for name, value in CSMS_KEYS.items():
            assert csms.call(CP, "ChangeConfiguration", {"key": name, "value": value}) == \
                {"status": "Accepted"}
        csms.stop(graceful=False)
        start_session(charger)
        queued = lambda: [a for (a,) in _rows(charger.db, "SELECT action FROM outbox")]  # noqa
        assert wait_until(lambda: len(queued()) >= 5, 20), queued()
        stop_session(charger)
        assert wait_until(lambda: "StopTransaction" in queued(), 10), queued()
        register = charger.register()
        csms.handlers["StartTransaction"] = lambda cp, payload: NO_RESPONSE
        mark = len(csms.received)
        csms.start()
        booted(charger, csms, after=mark, boot=False)
        entries = [{"idTag": f"LIST{i:05d}", "idTagInfo": {"status": "Accepted"}}
                   for i in range(1000)]
        assert csms.call(CP, "SendLocalList", {"listVersion": 3, "updateType": "Full",
                                               "localAuthorizationList": entries},
                         timeout=20) == {"status": "Accepted"}
        # Offline before the stop, so the stop does not wait for the unanswered
        # StartTransaction (it would count a failed attempt and delay the next start's).
        csms.stop(graceful=False)
        code, _ = charger.terminate()
        assert code == 0, charger.tail()
        count = len(queued())
        assert count >= 6 and queued()[0] == "StartTransaction", queued()
    finally:
        charger.abort()
        csms.stop(graceful=False)
    for name in ("cp.db-wal", "cp.db-shm"):             # left by the test's own reads
        (work / name).unlink(missing_ok=True)
    return work, count, register


def _rows(db: Path, sql: str) -> list:
    con = sqlite3.connect(db, timeout=5)
    try:
        return con.execute(sql).fetchall()
    finally:
        con.close()


def from_previous_run(previous_run, tmp_path: Path) -> tuple[Charger, LocalCsms, Path]:
    """A copy of the previous run's files, a fresh CSMS logging to csms.jsonl, a charger."""
    template, _, _ = previous_run
    for name in ("cp.db", "register"):
        shutil.copyfile(template / name, tmp_path / name)
    log_path = tmp_path / "csms.jsonl"
    csms = LocalCsms(host="127.0.0.1", port=0, log_path=str(log_path))
    csms.start()
    return Charger(tmp_path, csms.url), csms, log_path


# ---------------------------------------------------------------------------- damaged at start
@pytest.mark.parametrize("kind", damage.KINDS)
def test_a_database_damaged_before_start_is_salvaged_and_its_queue_delivered(
        previous_run, tmp_path, kind):
    _, queued, register = previous_run
    charger, csms, log_path = from_previous_run(previous_run, tmp_path)
    what = damage.damage(charger.db, kind)
    try:
        charger.spawn()
        booted(charger, csms)
        # The queued session reaches the CSMS whole, once, billed right.
        stop = csms.wait_for("StopTransaction", timeout=20)
        assert stop["reason"] == "Local" and stop["meterStop"] == round(register)
        sent = [r.action for r in csms.records(("StartTransaction", "MeterValues",
                                                "StopTransaction"))]
        assert len(sent) == queued, (what, sent)
        for name, value in CSMS_KEYS.items():
            assert key(csms, name) == value
        storage_reported_then_cleared(csms, "StorageRepaired")
        [line] = errors(charger)
        assert str(charger.db) in line and "damaged" in line and "outbox " in line, line
        assert list(tmp_path.glob("cp.db.damaged-*"))
        a_driver_can_charge(charger, csms)
        assert charger.proc.poll() is None and charger.runs == 1
        code, clean = charger.terminate()
        assert code == 0
    finally:
        charger.abort()
        csms.stop(graceful=False)
    no_traceback(charger)
    billing_is_right(log_path, [], charger.register(), [clean])


@pytest.mark.parametrize("content", [b"", b"this is not a database\n" * 100],
                         ids=["zero-length", "not a database"])
def test_a_database_with_nothing_to_salvage_starts_fresh_and_says_so(tmp_path, content):
    log_path = tmp_path / "csms.jsonl"
    csms = LocalCsms(host="127.0.0.1", port=0, log_path=str(log_path))
    csms.start()
    charger = Charger(tmp_path, csms.url)
    charger.db.write_bytes(content)
    try:
        charger.spawn()
        booted(charger, csms)
        [line] = errors(charger)
        assert str(charger.db) in line
        assert ("empty file" in line and "lost" in line) if not content \
            else "not an SQLite database" in line
        storage_reported_then_cleared(csms, "StorageRepaired")
        a_driver_can_charge(charger, csms)
        assert charger.proc.poll() is None and charger.runs == 1
        code, clean = charger.terminate()
        assert code == 0
        # Restarted: the repair was reported, nothing more to say.
        mark = len(csms.received)
        charger.spawn()
        booted(charger, csms, after=mark)
        time.sleep(1)
        assert errors(charger) == []
        assert all(r[0] == "NoError" for r in connector0(csms)[-1:])
        code, second = charger.terminate()
        assert code == 0
    finally:
        charger.abort()
        csms.stop(graceful=False)
    no_traceback(charger)
    billing_is_right(log_path, [], charger.register(), [clean, second])


# ---------------------------------------------------------------------------- deleted while running
def test_files_deleted_while_charging_then_a_power_cut_lose_nothing(tmp_path):
    log_path = tmp_path / "csms.jsonl"
    csms = LocalCsms(host="127.0.0.1", port=0, log_path=str(log_path))
    csms.start()
    charger = Charger(tmp_path, csms.url)
    kills, stops = [], []
    try:
        charger.spawn()
        booted(charger, csms)
        assert csms.call(CP, "ChangeConfiguration", {"key": "ConnectionTimeOut",
                                                     "value": "77"}) == {"status": "Accepted"}
        start_session(charger)
        csms.wait_for("MeterValues", timeout=10)
        for suffix in ("", "-wal", "-shm"):
            os.unlink(f"{charger.db}{suffix}")
        deleted = time.monotonic()
        assert wait_until(lambda: any("written anew" in line for line in log_lines(charger)),
                          10), charger.tail()
        assert time.monotonic() - deleted < 5            # the guard looks every 2 s
        assert any(" WARNING " in line and "deleted or replaced" in line
                   for line in log_lines(charger))
        storage_reported_then_cleared(csms, "StorageRepaired")
        mark = len(csms.received)
        csms.wait_for("MeterValues", after=mark, timeout=10)   # samples land in the new file
        time.sleep(0.5)
        kills.append(charger.kill(1, "charging after the files were deleted"))
        mark = len(csms.received)
        charger.spawn()
        booted(charger, csms, after=mark)
        stop = csms.wait_for("StopTransaction", after=mark, timeout=20)
        assert stop["reason"] == "PowerLoss"
        assert key(csms, "ConnectionTimeOut") == "77"
        a_driver_can_charge(charger, csms)
        code, clean = charger.terminate()
        stops.append(clean)
        assert code == 0
    finally:
        charger.abort()
        csms.stop(graceful=False)
    no_traceback(charger)
    billing_is_right(log_path, kills, charger.register(), stops)


# ---------------------------------------------------------------------------- two processes
def test_a_second_process_on_the_same_database_is_refused_and_the_first_charges_on(tmp_path):
    log_path = tmp_path / "csms.jsonl"
    csms = LocalCsms(host="127.0.0.1", port=0, log_path=str(log_path))
    csms.start()
    charger = Charger(tmp_path, csms.url)
    try:
        charger.spawn()
        booted(charger, csms)
        start_session(charger)
        csms.wait_for("StartTransaction", timeout=10)
        second = subprocess.run(
            [sys.executable, "-m", "chargepoint", "run", "--config", str(charger.config)],
            cwd=Path(__file__).resolve().parents[1], env=charger.env, capture_output=True,
            text=True, timeout=30)
        assert second.returncode == 75, second.stderr
        assert "Traceback" not in second.stderr
        refusal = [line for line in second.stderr.splitlines() if "in use" in line]
        assert refusal == [f"chargepoint: {charger.db} is in use by another chargepoint "
                           f"process (pid {charger.proc.pid}); not starting"], second.stderr
        # The first one's session goes on, untouched.
        before = charger.connector()["energy_wh"]
        assert wait_until(lambda: charger.connector()["energy_wh"] > before + 1, 5)
        assert charging(charger) and not csms.records("StopTransaction")
        stop_session(charger)
        stop = csms.wait_for("StopTransaction", timeout=10)
        assert stop["reason"] == "Local"
        assert wait_until(lambda: not queued_on_file(charger.db), 10)
        code, clean = charger.terminate()
        assert code == 0
    finally:
        charger.abort()
        csms.stop(graceful=False)
    no_traceback(charger)
    billing_is_right(log_path, [], charger.register(), [clean])


# ---------------------------------------------------------------------------- modes
@pytest.mark.parametrize("umask", [0o022, 0o077])
def test_database_files_are_private_under_any_umask(tmp_path, csms, umask):
    charger = Charger(tmp_path, csms.url)
    try:
        charger.spawn(umask=umask)
        booted(charger, csms)
        for name in ("cp.db", "cp.db-wal", "cp.db-shm", "cp.db.lock"):
            assert oct((tmp_path / name).stat().st_mode & 0o777) == "0o600", name
        charger.terminate()
        for name in ("cp.db", "cp.db-wal", "cp.db-shm"):
            if (tmp_path / name).exists():
                os.chmod(tmp_path / name, 0o644)
        mark = len(csms.received)
        charger.spawn(umask=umask)
        booted(charger, csms, after=mark)
        assert oct(charger.db.stat().st_mode & 0o777) == "0o600"
        assert any("tightened to 0600" in line for line in log_lines(charger))
        assert charger.terminate()[0] == 0
    finally:
        charger.abort()
    no_traceback(charger)


# ---------------------------------------------------------------------------- nothing writable
@pytest.fixture
def tmpfs(tmp_path):
    """A 1 MiB tmpfs for the database (root only), removed after."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    mount = tmp_path / "mnt"
    mount.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m,mode=0755", "tmpfs", str(mount)],
                   check=True)
    yield mount
    subprocess.run(["umount", "-l", str(mount)], check=False)


def degraded_then_attached(charger: Charger, csms: LocalCsms, log_path: Path, fix) -> None:
    """Started where nothing can be written: stays up in memory, says so, serves drivers;
    once `fix()` makes the place writable, moves onto the file and says that too."""
    clean = []
    try:
        charger.spawn()
        booted(charger, csms)
        [line] = errors(charger)
        assert str(charger.db) in line and "in-memory" in line and "NOTHING IS DURABLE" in line
        assert wait_until(lambda: ("InternalError", "storage not writable: running in memory "
                                   "only", "StorageNotDurable") in connector0(csms), 10), \
            connector0(csms)
        assert csms.call(CP, "ChangeConfiguration", {"key": "ConnectionTimeOut",
                                                     "value": "77"}) == {"status": "Accepted"}
        a_driver_can_charge(charger, csms)
        time.sleep(2.5)
        assert charger.proc.poll() is None and charger.runs == 1
        fix()
        storage_reported_then_cleared(csms, "StorageNotDurable", timeout=30)
        assert any("can be written again" in line for line in log_lines(charger))
        assert ("ConnectionTimeOut", "77") in _rows(charger.db, "SELECT key, value FROM "
                                                    "ocpp_config")
        code, stop = charger.terminate()
        clean.append(stop)
        assert code == 0
        # Durable now: a restart keeps what was set while in memory.
        mark = len(csms.received)
        charger.spawn()
        booted(charger, csms, after=mark)
        assert errors(charger) == []
        assert key(csms, "ConnectionTimeOut") == "77"
        code, stop = charger.terminate()
        clean.append(stop)
        assert code == 0
    finally:
        charger.abort()
        csms.stop(graceful=False)
    no_traceback(charger)
    billing_is_right(log_path, [], charger.register(), clean)


@pytest.mark.parametrize("fault", ["read-only filesystem", "full filesystem"])
def test_nothing_writable_at_first_boot_charges_in_memory_until_it_is(tmp_path, tmpfs, fault):
    log_path = tmp_path / "csms.jsonl"
    csms = LocalCsms(host="127.0.0.1", port=0, log_path=str(log_path))
    csms.start()
    charger = Charger(tmp_path, csms.url, db=tmpfs / "cp.db")
    filler = tmpfs / "filler"
    if fault == "full filesystem":
        with open(filler, "wb") as f, pytest.raises(OSError):
            while True:
                f.write(b"\0" * 65536)
                f.flush()

        def fix():
            filler.unlink()
    else:
        subprocess.run(["mount", "-o", "remount,ro", str(tmpfs)], check=True)

        def fix():
            subprocess.run(["mount", "-o", "remount,rw", str(tmpfs)], check=True)
    degraded_then_attached(charger, csms, log_path, fix)


@needs_root
@pytest.mark.parametrize("where", ["unwritable directory", "missing directory"])
def test_an_unwritable_place_for_the_database_charges_in_memory_until_it_is(where):
    """Run as `nobody`: the database's directory is its own but mounted read-only (a
    directory of another user is a configuration error instead: tests/test_startup.py)."""
    work = Path(tempfile.mkdtemp(prefix="chargepoint-nobody-"))
    state = work / "state"
    mounted = False
    try:
        import pwd

        nobody = pwd.getpwnam("nobody")
        os.chown(work, nobody.pw_uid, nobody.pw_gid)     # its sim socket and meter live here
        state.mkdir(mode=0o755)
        os.chown(state, nobody.pw_uid, nobody.pw_gid)
        subprocess.run(["mount", "--bind", str(state), str(state)], check=True)
        mounted = True
        subprocess.run(["mount", "-o", "remount,bind,ro", str(state)], check=True)
        db = state / "cp.db" if where == "unwritable directory" else state / "sub" / "cp.db"
        log_path = work / "csms.jsonl"
        csms = LocalCsms(host="127.0.0.1", port=0, log_path=str(log_path))
        csms.start()
        charger = Charger(work, csms.url, db=db)
        spawn = charger.spawn
        charger.spawn = lambda **kw: spawn(user=nobody.pw_uid, group=nobody.pw_gid, **kw)
        degraded_then_attached(charger, csms, log_path, lambda: subprocess.run(
            ["mount", "-o", "remount,bind,rw", str(state)], check=True))
    finally:
        if mounted:
            subprocess.run(["umount", "-l", str(state)], check=False)
        shutil.rmtree(work, ignore_errors=True)
