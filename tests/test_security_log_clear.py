"""`chargepoint security-log clear`, run as the operator runs it (a process on the real
database) beside a running firmware process and with the firmware stopped: the log keeps
only SecurityLogWasCleared, and the CSMS is sent it."""
from __future__ import annotations

import sqlite3
import subprocess
import sys
from contextlib import closing
from pathlib import Path

from bench._common import FirmwareProcess
from chargepoint.store import Store
from tests.test_outbox_admin import operator_config

ROOT = Path(__file__).resolve().parents[1]


def clear(config: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "chargepoint", "security-log", "clear",
                           "--config", str(config)], cwd=ROOT, capture_output=True, text=True,
                          timeout=60)


def security_log(db: Path) -> list[tuple[str, str]]:
    with closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True)) as con:
        return con.execute("SELECT type, tech_info FROM security_log ORDER BY seq").fetchall()


def started(tmp_path: Path, csms) -> FirmwareProcess:
    """The firmware process, sending security events, once its StartupOfTheDevice is in."""
    fw = FirmwareProcess(tmp_path / "fw", csms.url, csms={"security_events": "on"})
    fw.start()
    try:
        csms.wait_for("SecurityEventNotification", lambda r: r["type"] == "StartupOfTheDevice",
                      timeout=20)
    except BaseException:
        fw.stop()
        raise
    return fw


def cleared(record) -> bool:
    return record["type"] == "SecurityLogWasCleared"


def test_clearing_beside_the_running_firmware_reaches_the_csms(tmp_path, csms):
    fw = started(tmp_path, csms)
    try:
        assert len(security_log(fw.db)) >= 1
        mark = len(csms.received)
        done = clear(fw.config)
        assert done.returncode == 0, done.stderr
        assert "The running firmware sends the SecurityEventNotification" in done.stdout
        event = csms.wait_for("SecurityEventNotification", cleared, after=mark, timeout=20)
        assert "chargepoint security-log clear" in event["techInfo"]
        assert event["timestamp"].endswith("Z")
        assert [kind for kind, _ in security_log(fw.db)] == ["SecurityLogWasCleared"]
        assert fw.proc.poll() is None, fw.tail()
    finally:
        assert fw.stop() == 0, fw.tail()
    assert len(csms.records("SecurityEventNotification", after=mark)) == 1
    csms.assert_no_violations()


def test_clearing_while_the_firmware_is_stopped_is_sent_when_it_starts(tmp_path, csms):
    fw = started(tmp_path, csms)
    assert fw.stop() == 0, fw.tail()
    done = clear(fw.config)
    assert done.returncode == 0, done.stderr
    assert "when it starts" in done.stdout
    assert [kind for kind, _ in security_log(fw.db)] == ["SecurityLogWasCleared"]
    mark = len(csms.received)
    fw.start()
    try:
        csms.wait_for("SecurityEventNotification", cleared, after=mark, timeout=20)
        csms.wait_for("SecurityEventNotification", lambda r: r["type"] == "StartupOfTheDevice",
                      after=mark, timeout=20)
    finally:
        assert fw.stop() == 0, fw.tail()
    assert [kind for kind, _ in security_log(fw.db)][:2] == ["SecurityLogWasCleared",
                                                           "StartupOfTheDevice"]


def test_a_csms_that_takes_no_security_events_is_not_sent_one(tmp_path):
    """With `security_events = "auto"` and a CSMS that never spoke the whitepaper, the log
    is cleared and nothing waits in the outbox for a CSMS that would refuse it."""
    config = operator_config(tmp_path / "config.toml", "cp.db")
    store = Store(tmp_path / "cp.db")
    store.execute("INSERT INTO security_log(type, timestamp, tech_info, notified, local) "
                  "VALUES('StartupOfTheDevice', '2026-01-01T00:00:00Z', '', 0, 0)")
    store.close()
    done = clear(config)
    assert done.returncode == 0, done.stderr
    assert "No SecurityEventNotification is sent" in done.stdout
    assert [kind for kind, _ in security_log(tmp_path / "cp.db")] == ["SecurityLogWasCleared"]
    with closing(sqlite3.connect(tmp_path / "cp.db")) as con:
        assert con.execute("SELECT COUNT(*) FROM outbox").fetchone()[0] == 0


def test_no_database_is_said_and_nothing_is_made(tmp_path):
    config = operator_config(tmp_path / "config.toml", "missing.db")
    done = clear(config)
    assert done.returncode == 1
    assert "no database at" in done.stderr
    assert not (tmp_path / "missing.db").exists()
