"""UpdateFirmware through the real loop (virtual clock) against real file servers on
loopback: retrieveDate, retries retryInterval apart, a download that resumes, what a
location the charger cannot use, a missing file, a stalled server and a full disk end in,
the request kept over a restart and a power cut, and a running transaction that the
installation waits for while the other connectors go Unavailable.

A bundle here is bytes that are no release (the installation of a real one, and the
switch, are tested with the real process in tests/test_octt_firmware_update.py): it
downloads, and its installation fails, InstallationFailed, the old release still running.
"""
from __future__ import annotations

import json
import logging
import os
import socket
from datetime import datetime, timedelta, timezone

import pytest

from chargepoint.model.firmware import STATE_KEY
from tests.file_servers import FtpServer
from tests.harness import base_connector, booted, statuses, wait_status, wait_until

CP = "CP-1"
BUNDLE = os.urandom(300_000)
TWO = {"connectors": [base_connector(id=1), base_connector(id=2)]}


@pytest.fixture
def served(served):
    (served / "release.cpr").write_bytes(BUNDLE)
    return served



def fsn(csms, after=0) -> list[str]:
    return [r["status"] for r in csms.records("FirmwareStatusNotification", after=after)]


def update(csms, location, in_s=0.0, **extra):
    when = csms.now() + timedelta(seconds=in_s)
    payload = {"location": location,
               "retrieveDate": when.isoformat(timespec="seconds").replace("+00:00", "Z"),
               **extra}
    assert csms.call(CP, "UpdateFirmware", payload) == {}


def wait_fsn(csms, status, after=0, timeout=10.0):
    return csms.wait_for("FirmwareStatusNotification", lambda r: r["status"] == status,
                         after=after, timeout=timeout)


def trigger(csms, message) -> str:
    assert csms.call(CP, "TriggerMessage", {"requestedMessage": message}) == \
        {"status": "Accepted"}
    return csms.wait_for(message, after=len(csms.received) - 1)["status"]


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# ------------------------------------------------------------------------------ downloads
def test_the_download_waits_for_retrieve_date_and_the_trigger_says_where_it_stands(
        csms, firmware, http):
    fw = booted(csms, firmware)
    mark = len(csms.received)
    update(csms, http.url("release.cpr"), in_s=3600, retries=0)
    fw.advance(3500)
    assert fsn(csms, mark) == [] and http.requests == []
    assert trigger(csms, "FirmwareStatusNotification") == "Idle"
    mark = len(csms.received)
    fw.advance(100)
    wait_fsn(csms, "InstallationFailed", mark)
    assert fsn(csms, mark) == ["Downloading", "Downloaded", "Installing", "InstallationFailed"]
    assert [r[0] for r in http.requests] == ["GET"]
    fw.settle()
    assert trigger(csms, "FirmwareStatusNotification") == "Idle"
    assert fw.runtime.store.get_state(STATE_KEY) is None
    downloads = fw.runtime.maintenance.downloads
    assert not downloads.exists() or not list(downloads.iterdir())
    assert not csms.violations


def test_a_missing_file_is_tried_retries_times_retry_interval_apart(csms, firmware, http,
                                                                    caplog):
    fw = booted(csms, firmware)
    mark = len(csms.received)
    with caplog.at_level(logging.WARNING, "chargepoint"):
        update(csms, http.url("missing.cpr"), retries=2, retryInterval=120)
        wait_fsn(csms, "Downloading", mark)
        assert wait_until(lambda: len(http.requests) == 1)
        fw.settle()
        fw.advance(119)
        assert len(http.requests) == 1
        fw.advance(1)
        assert wait_until(lambda: len(http.requests) == 2)
        fw.settle()
        fw.advance(120)
        wait_fsn(csms, "DownloadFailed", mark)
    assert len(http.requests) == 3
    assert fsn(csms, mark) == ["Downloading", "DownloadFailed"]
    assert any("giving up after 3 attempts" in r.getMessage() and "HTTP 404" in r.getMessage()
               for r in caplog.records)
    assert statuses(csms, 1, mark) in ([], ["Available"])


@pytest.mark.parametrize("location, cause", [
    ("sftp://127.0.0.1/release.cpr", "the scheme 'sftp' is not supported"),
    ("release.cpr", "is not supported"),
])
def test_a_location_the_charger_cannot_use_fails_at_once_without_retries(
        csms, firmware, caplog, location, cause):
    fw = booted(csms, firmware)
    mark = len(csms.received)
    with caplog.at_level(logging.ERROR, "chargepoint"):
        update(csms, location, retries=5, retryInterval=10)
        wait_fsn(csms, "DownloadFailed", mark)
    assert fsn(csms, mark) == ["Downloading", "DownloadFailed"]
    assert any(cause in r.getMessage() for r in caplog.records)
    # Forgotten once the CSMS has answered the last notification.
    assert wait_until(lambda: fw.runtime.store.get_state(STATE_KEY) is None)


def test_an_unreachable_server_ends_in_download_failed(csms, firmware, caplog):
    fw = booted(csms, firmware)
    mark = len(csms.received)
    with caplog.at_level(logging.ERROR, "chargepoint"):
        update(csms, f"ftp://cp:pw@127.0.0.1:{closed_port()}/download_fail.fwi", retries=0)
        wait_fsn(csms, "DownloadFailed", mark)
    text = "\n".join(r.getMessage() for r in caplog.records)
    assert "connection refused" in text and ":pw@" not in text


def test_an_interrupted_download_resumes_at_the_next_attempt(csms, firmware, http):
    fw = booted(csms, firmware)
    http.drop_after, http.once = 120_000, True
    mark = len(csms.received)
    update(csms, http.url("release.cpr"), retries=1, retryInterval=30)
    assert wait_until(lambda: len(http.requests) == 1)
    fw.settle()
    fw.advance(30)
    wait_fsn(csms, "Downloaded", mark)
    assert http.requests[1][2].get("Range") == "bytes=120000-"
    wait_fsn(csms, "InstallationFailed", mark)


def test_a_stalled_server_ends_the_attempt_and_the_retry_resumes(csms, firmware, http):
    fw = booted(csms, firmware, {"transfers": {"stall_timeout_s": 0.3}})
    http.stall_after, http.once = 50_000, True
    mark = len(csms.received)
    update(csms, http.url("release.cpr"), retries=1, retryInterval=10)
    assert wait_until(lambda: fw.runtime.store.get_state(STATE_KEY)["phase"] == "retry",
                      timeout=10)
    fw.advance(10)
    wait_fsn(csms, "Downloaded", mark)
    assert http.requests[-1][2].get("Range", "").startswith("bytes=")


def test_a_disk_without_room_is_refused_before_the_first_byte(csms, firmware, http, caplog,
                                                               tmp_path):
    fw = booted(csms, firmware, {"transfers": {"min_free_mb": 1024 * 1024 * 1024}})
    mark = len(csms.received)
    with caplog.at_level(logging.ERROR, "chargepoint"):
        update(csms, http.url("release.cpr"), retries=0)
        wait_fsn(csms, "DownloadFailed", mark)
    assert any("not enough room" in r.getMessage() for r in caplog.records)
    assert not list(tmp_path.glob("downloads/*"))
    # The database took every write meanwhile: the charger still works.
    assert csms.call(CP, "ChangeConfiguration", {"key": "HeartbeatInterval",
                                                 "value": "77"}) == {"status": "Accepted"}


def test_ftp_download_as_octt_names_it(csms, firmware, tmp_path, served):
    with FtpServer(served) as ftp:
        fw = booted(csms, firmware)
        mark = len(csms.received)
        update(csms, ftp.url("release.cpr"), retries=0)
        wait_fsn(csms, "InstallationFailed", mark)
    assert fsn(csms, mark) == ["Downloading", "Downloaded", "Installing", "InstallationFailed"]


# ------------------------------------------------------------------------------ persistence
def test_a_restart_before_retrieve_date_keeps_the_request(csms, firmware, http):
    fw = booted(csms, firmware)
    mark = len(csms.received)
    update(csms, http.url("release.cpr"), in_s=600, retries=0)
    fw.settle()
    fw.restart()
    csms.wait_for("BootNotification", after=mark)
    fw.settle()
    fw.advance(599)
    assert http.requests == []
    fw.advance(1)
    wait_fsn(csms, "InstallationFailed", mark)
    assert fsn(csms, mark) == ["Downloading", "Downloaded", "Installing", "InstallationFailed"]


def test_a_power_cut_mid_download_resumes_it_at_the_next_start(csms, firmware, http):
    fw = booted(csms, firmware)
    http.stall_after, http.once, http.stall_s = 100_000, True, 30
    mark = len(csms.received)
    update(csms, http.url("release.cpr"), retries=0)
    downloads = fw.runtime.maintenance.downloads
    assert wait_until(lambda: any(p.stat().st_size >= 100_000
                                  for p in downloads.glob("*.part")))
    fw.cut_power()
    http._released.set()
    fw.start()
    wait_fsn(csms, "InstallationFailed", mark)
    got = [r for r in http.requests if r[0] == "GET"]
    assert got[-1][2].get("Range") == "bytes=100000-"
    # An attempt cut short by the power does not count: retries 0 still had its one.
    assert "DownloadFailed" not in fsn(csms, mark)


def test_a_notification_the_csms_did_not_hear_goes_once_it_is_back(csms, firmware, http):
    fw = booted(csms, firmware)
    mark = len(csms.received)
    update(csms, http.url("missing.cpr"), in_s=60, retries=0)
    fw.settle()
    csms.stop(graceful=False)
    fw.advance(60)
    assert wait_until(lambda: fw.runtime.store.get_state(STATE_KEY) is None
                      or fw.runtime.store.get_state(STATE_KEY)["phase"] == "done")
    fw.settle()
    csms.start()
    wait_fsn(csms, "DownloadFailed", mark)
    fw.settle()
    assert fw.runtime.store.get_state(STATE_KEY) is None


# ------------------------------------------------------------------------------ transactions
def test_a_running_transaction_is_never_interrupted_and_the_rest_go_unavailable(
        csms, firmware, http):
    fw = booted(csms, firmware, TWO)
    mark = len(csms.received)
    fw.sim.plug(1)
    fw.settle()
    fw.sim.tap("TAG1")
    start = csms.wait_for("StartTransaction", after=mark)
    wait_status(csms, "Charging", 1, mark)
    update(csms, http.url("release.cpr"), retries=0)
    wait_fsn(csms, "Downloaded", mark)
    wait_status(csms, "Unavailable", 2, mark)
    fw.advance(600)
    # Still charging, contactor closed; connector 2 takes no session meanwhile.
    assert fw.sim.status()["connectors"]["1"]["contactor"] == "closed"
    assert "Installing" not in fsn(csms, mark)
    fw.sim.plug(2)
    fw.settle()
    fw.sim.tap("TAG2")
    fw.settle()
    assert len(csms.records("StartTransaction", after=mark)) == 1
    assert statuses(csms, 2, mark)[-1] == "Unavailable"
    # The driver ends the session: only then the installation starts.
    fw.sim.tap("TAG1")
    stop = csms.wait_for("StopTransaction", after=mark)
    fw.settle()
    fw.advance(1)                     # the installation looks again once the CSMS has it
    installing = wait_fsn(csms, "Installing", mark)
    assert stop.index < installing.index
    assert stop["transactionId"] == start.reply["transactionId"]
    wait_fsn(csms, "InstallationFailed", mark)
    # Over: the connectors take sessions again.
    wait_status(csms, "Preparing", 2, installing.index)
    assert not csms.violations


def test_a_new_request_replaces_one_not_yet_downloaded(csms, firmware, http, served):
    (served / "other.cpr").write_bytes(b"other")
    fw = booted(csms, firmware)
    mark = len(csms.received)
    update(csms, http.url("release.cpr"), in_s=3600)
    update(csms, http.url("other.cpr"), in_s=10, retries=0)
    fw.advance(10)
    wait_fsn(csms, "InstallationFailed", mark)
    assert [r[1] for r in http.requests] == ["/other.cpr"]
    fw.advance(3600)
    assert [r[1] for r in http.requests] == ["/other.cpr"]


def test_the_request_row_holds_no_more_than_it_needs(csms, firmware, http):
    fw = booted(csms, firmware)
    update(csms, http.url("release.cpr"), in_s=60, retries=4, retryInterval=7)
    fw.settle()
    row = fw.runtime.store.get_state(STATE_KEY)
    assert {k: row[k] for k in ("phase", "retries", "interval", "attempts")} == \
        {"phase": "scheduled", "retries": 4, "interval": 7, "attempts": 0}
    assert json.loads(json.dumps(row)) == row
    assert datetime.fromtimestamp(row["retrieve"], timezone.utc) <= csms.now() + \
        timedelta(seconds=61)


def test_the_frame_log_never_shows_the_password_of_a_location(csms, firmware, caplog):
    booted(csms, firmware, {"log": {"frames": True}})
    mark = len(csms.received)
    with caplog.at_level(logging.DEBUG, "chargepoint"):
        update(csms, f"ftp://operator:hunter2-pw@127.0.0.1:{closed_port()}/r.cpr", retries=0)
        wait_fsn(csms, "DownloadFailed", mark)
    text = "\n".join(r.getMessage() for r in caplog.records)
    assert "UpdateFirmware" in text and "operator:***@" in text
    assert "hunter2-pw" not in text
