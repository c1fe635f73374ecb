"""GetLog (Security Whitepaper, OCTT TC_079) through the real loop to real FTP and HTTP
servers on loopback: the security log and the diagnostics archive uploaded, what the
security log's file holds (and never holds: a secret), a second GetLog cancelling the
first, failures told in the words LogStatusNotification has, and
ExtendedTriggerMessage(LogStatusNotification)."""
from __future__ import annotations

import csv
import io
import json
import socket
from datetime import timedelta

import pytest

from chargepoint.csms.files import FileServer
from tests.file_servers import FTP_PASSWORD, FTP_USER
from tests.harness import booted, wait_until
from tests.test_diagnostics import members, silent_port

CP = "CP-1"
SECRET = "Zq7-secret-key-0123456789"
NEW_SECRET = "0123456789abcdef0123456789abcdef"



def lsn(csms, after=0) -> list[tuple[str, int | None]]:
    return [(r["status"], r.get("requestId"))
            for r in csms.records("LogStatusNotification", after=after)]


def wait_lsn(csms, status, after=0, timeout=10.0):
    return csms.wait_for("LogStatusNotification", lambda r: r["status"] == status,
                         after=after, timeout=timeout)


def get_log(csms, location, log_type="SecurityLog", request_id=1, **extra):
    return csms.call(CP, "GetLog", {"logType": log_type, "requestId": request_id,
                                    "log": {"remoteLocation": location, **extra.pop("log", {})},
                                    **extra})


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def security_rows(path) -> list[dict]:
    got = members(path)
    assert set(got) == {"README.txt", "security-log.csv"}
    return list(csv.DictReader(io.StringIO(got["security-log.csv"])))


def test_tc_079_the_security_log_goes_to_the_location_the_csms_named(
        csms, firmware, ftp, served):
    fw = booted(csms, firmware, {"csms": {"security_profile": 1, "authorization_key": SECRET,
                                          "security_events": "on"}})
    # A security event with a secret near it: the new AuthorizationKey.
    assert csms.call(CP, "ChangeConfiguration", {"key": "AuthorizationKey",
                                                 "value": NEW_SECRET})["status"] == "Accepted"
    csms.wait_for("SecurityEventNotification",
                  lambda r: r["type"] == "ReconfigurationOfSecurityParameters")
    fw.settle()
    mark = len(csms.received)
    # Steps 1-2: GetLog.req SecurityLog, GetLog.conf Accepted.
    answer = get_log(csms, ftp.url("files/"), request_id=79)
    assert answer["status"] == "Accepted"
    name = answer["filename"]
    assert name.startswith("CP-1-security-log-") and name.endswith(".zip")
    # Steps 3-6: LogStatusNotification Uploading, then Uploaded, with the requestId.
    wait_lsn(csms, "Uploaded", mark)
    assert lsn(csms, mark) == [("Uploading", 79), ("Uploaded", 79)]
    rows = security_rows(served / "files" / name)
    types = [row["type"] for row in rows]
    assert types[0] == "StartupOfTheDevice" and "ReconfigurationOfSecurityParameters" in types
    seqs = [int(row["seq"]) for row in rows]
    assert seqs == sorted(seqs)                                 # oldest first
    assert all(row["timestamp"].endswith("Z") for row in rows)
    assert {row["notified"] for row in rows} <= {"yes", "no"}
    everything = "".join(members(served / "files" / name).values())
    for secret in (SECRET, NEW_SECRET, FTP_PASSWORD, "PRIVATE KEY"):
        assert secret not in everything
    # Nothing of it is left on the charger.
    work = fw.runtime.maintenance.downloads.parent / "diagnostics"
    assert not work.exists() or not list(work.iterdir())
    assert not csms.violations


def test_get_log_diagnostics_log_is_the_diagnostics_archive_of_the_period(
        csms, firmware, served):
    with FileServer(served) as http:
        booted(csms, firmware)
        mark = len(csms.received)
        now = csms.now()
        oldest = (now - timedelta(hours=2)).isoformat(timespec="seconds").replace("+00:00", "Z")
        latest = now.isoformat(timespec="seconds").replace("+00:00", "Z")
        answer = get_log(csms, http.base_url + "/in/", "DiagnosticsLog", 3,
                         log={"oldestTimestamp": oldest, "latestTimestamp": latest})
        assert answer["status"] == "Accepted"
        name = answer["filename"]
        assert name.startswith("CP-1-diagnostics-")
        wait_lsn(csms, "Uploaded", mark)
        assert lsn(csms, mark) == [("Uploading", 3), ("Uploaded", 3)]
        (uploaded,) = http.uploaded()
        assert uploaded.name == name and http.requests[-1][:2] == ("PUT", f"/in/{name}")
        got = members(uploaded)
        assert {"log.txt", "frames.jsonl", "database.json", "facts.json"} <= set(got)
        period = json.loads(got["facts.json"])["period"]
        assert period["start"].startswith(oldest[:19])
        assert period["stop"].startswith(latest[:19])
        frames = [json.loads(line)["frame"] for line in got["frames.jsonl"].splitlines()]
        assert any('"GetLog"' in frame for frame in frames)


def test_a_second_get_log_cancels_the_first_and_the_trigger_tells_which_runs(
        csms, firmware, ftp, served):
    sock = silent_port()
    try:
        fw = booted(csms, firmware, {"transfers": {"stall_timeout_s": 2}})
        before = len(csms.received)
        assert csms.call(CP, "ExtendedTriggerMessage",
                         {"requestedMessage": "LogStatusNotification"})["status"] == "Accepted"
        assert csms.wait_for("LogStatusNotification", after=before).payload == {"status": "Idle"}
        mark = len(csms.received)
        stalled = f"http://127.0.0.1:{sock.getsockname()[1]}/in/"
        assert get_log(csms, stalled, request_id=1, retries=0)["status"] == "Accepted"
        wait_lsn(csms, "Uploading", mark)
        assert wait_until(lambda: fw.runtime.maintenance.busy())
        triggered = len(csms.received)
        assert csms.call(CP, "ExtendedTriggerMessage",
                         {"requestedMessage": "LogStatusNotification"})["status"] == "Accepted"
        assert csms.wait_for("LogStatusNotification", after=triggered).payload == \
            {"status": "Uploading", "requestId": 1}
        # The second request replaces the first, which is still stalled.
        replacing = get_log(csms, ftp.url("files/"), "SecurityLog", 2)
        assert replacing["status"] == "AcceptedCanceled"
        wait_lsn(csms, "Uploaded", mark)
        # The first one's end (the stall, 2 s) is nobody's news any more.
        assert wait_until(lambda: not fw.runtime.maintenance.busy(), timeout=10)
        fw.settle()
        assert lsn(csms, mark) == [("Uploading", 1), ("Uploading", 1), ("Uploading", 2),
                                   ("Uploaded", 2)]
        assert (served / "files" / replacing["filename"]).is_file()
        idle = len(csms.received)
        csms.call(CP, "ExtendedTriggerMessage", {"requestedMessage": "LogStatusNotification"})
        assert csms.wait_for("LogStatusNotification", after=idle).payload == {"status": "Idle"}
        assert not csms.violations
    finally:
        sock.close()


def test_a_failed_upload_is_retried_then_ends_in_upload_failure(csms, firmware):
    fw = booted(csms, firmware)
    mark = len(csms.received)
    location = f"ftp://127.0.0.1:{closed_port()}/files/"
    assert get_log(csms, location, request_id=5, retries=1, retryInterval=40)["status"] == \
        "Accepted"
    assert wait_until(lambda: not fw.runtime.maintenance.busy())
    fw.settle()
    assert lsn(csms, mark) == [("Uploading", 5)]
    fw.advance(40)
    wait_lsn(csms, "UploadFailure", mark)
    assert lsn(csms, mark) == [("Uploading", 5), ("UploadFailure", 5)]
    assert csms.call(CP, "GetConfiguration", {"key": ["HeartbeatInterval"]})


def test_an_http_403_is_permission_denied(csms, firmware, served):
    with FileServer(served) as http:
        http.fail_status = 403
        booted(csms, firmware)
        mark = len(csms.received)
        get_log(csms, http.base_url + "/in/", request_id=6, retries=0)
        wait_lsn(csms, "PermissionDenied", mark)
        assert lsn(csms, mark) == [("Uploading", 6), ("PermissionDenied", 6)]
        assert not http.uploaded()


def test_an_ftp_login_refused_is_permission_denied(csms, firmware, ftp, served):
    booted(csms, firmware)
    mark = len(csms.received)
    location = f"ftp://{FTP_USER}:wrong-password@127.0.0.1:{ftp.port}/files/"
    get_log(csms, location, request_id=7, retries=0)
    wait_lsn(csms, "PermissionDenied", mark)
    assert lsn(csms, mark) == [("Uploading", 7), ("PermissionDenied", 7)]
    assert not list((served / "files").iterdir())


@pytest.mark.parametrize("location,status", [
    ("sftp://127.0.0.1/in/", "NotSupportedOperation"),
    ("http:///in/", "BadMessage"),
])
def test_a_location_the_charger_cannot_use_is_told_at_once(csms, firmware, location, status):
    booted(csms, firmware)
    mark = len(csms.received)
    # Retries would not help: none is made.
    assert get_log(csms, location, request_id=8, retries=3)["status"] == "Accepted"
    wait_lsn(csms, status, mark)
    assert lsn(csms, mark) == [("Uploading", 8), (status, 8)]
