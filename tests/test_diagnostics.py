"""GetDiagnostics through the real loop to real FTP and HTTP servers, what the archive
holds (and never holds: a secret), the log of a period, and `chargepoint diagnostics`."""
from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import subprocess
import sys
import zipfile
from datetime import datetime, timedelta, timezone
from pathlib import Path


from chargepoint import diagnostics
from chargepoint.csms.files import FileServer
from tests.file_servers import FTP_PASSWORD
from tests.harness import booted, wait_until

CP = "CP-1"
ROOT = Path(__file__).resolve().parents[1]
SECRET = "Zq7-secret-key-0123456789"




def dsn(csms, after=0) -> list[str]:
    return [r["status"] for r in csms.records("DiagnosticsStatusNotification", after=after)]


def wait_dsn(csms, status, after=0, timeout=10.0):
    return csms.wait_for("DiagnosticsStatusNotification", lambda r: r["status"] == status,
                         after=after, timeout=timeout)


def silent_port():
    """A socket that takes connections and never answers (its backlog holds them)."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(8)
    return sock


def members(path: Path) -> dict[str, str]:
    with zipfile.ZipFile(path) as archive:
        return {name: archive.read(name).decode() for name in archive.namelist()}


def test_tc_045_1_the_archive_goes_to_the_ftp_directory_the_csms_named(
        csms, firmware, ftp, served):
    fw = booted(csms, firmware, {"csms": {"security_profile": 1,
                                          "authorization_key": SECRET}})
    mark = len(csms.received)
    location = ftp.url("files/")
    answer = csms.call(CP, "GetDiagnostics", {"location": location})
    name = answer["fileName"]
    assert name.startswith("CP-1-diagnostics-") and name.endswith(".zip")
    wait_dsn(csms, "Uploaded", mark)
    assert dsn(csms, mark) == ["Uploading", "Uploaded"]
    archive = served / "files" / name
    got = members(archive)
    assert set(got) == {"README.txt", "log.txt", "frames.jsonl", "config.toml",
                        "ocpp-keys.json", "database.json", "facts.json"}
    frames = [json.loads(line) for line in got["frames.jsonl"].splitlines()]
    assert any('"GetDiagnostics"' in f["frame"] for f in frames)
    assert any('"BootNotification"' in f["frame"] for f in frames)
    health = json.loads(got["database.json"])
    assert health["integrity_check"] == ["ok"] and "outbox_depth" in health
    assert health["rows"]["ocpp_config"] >= 0
    facts = json.loads(got["facts.json"])
    assert facts["charge_point_id"] == CP and facts["version"]
    everything = "".join(got.values())
    assert SECRET not in everything and FTP_PASSWORD not in everything
    assert f"cp:***@127.0.0.1:{ftp.port}" in got["frames.jsonl"]
    # Nothing of it is left on the charger.
    assert not list((fw.runtime.maintenance.downloads.parent / "diagnostics").glob("*")) \
        if (fw.runtime.maintenance.downloads.parent / "diagnostics").exists() else True
    assert not csms.violations


def test_http_upload_puts_the_archive(csms, firmware, served):
    with FileServer(served) as http:
        booted(csms, firmware)
        mark = len(csms.received)
        name = csms.call(CP, "GetDiagnostics", {"location": http.base_url + "/in/"})["fileName"]
        wait_dsn(csms, "Uploaded", mark)
        assert [p.name for p in http.uploaded()] == [name]
        assert http.requests[-1][:2] == ("PUT", f"/in/{name}")


def test_tc_045_2_a_failed_upload_is_retried_then_reported(csms, firmware):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    fw = booted(csms, firmware)
    mark = len(csms.received)
    location = f"ftp://127.0.0.1:{port}/files/failedLocation"
    answer = csms.call(CP, "GetDiagnostics", {"location": location, "retries": 1,
                                              "retryInterval": 40})
    assert "fileName" in answer
    assert wait_until(lambda: not fw.runtime.maintenance.busy())
    fw.settle()
    assert dsn(csms, mark) == ["Uploading"]
    fw.advance(40)
    wait_dsn(csms, "UploadFailed", mark)
    assert dsn(csms, mark) == ["Uploading", "UploadFailed"]
    # The charger carries on: it still answers.
    assert csms.call(CP, "GetConfiguration", {"key": ["HeartbeatInterval"]})


def test_one_upload_at_a_time_and_the_trigger_says_uploading(csms, firmware):
    sock = silent_port()
    try:
        fw = booted(csms, firmware, {"transfers": {"stall_timeout_s": 2}})
        mark = len(csms.received)
        location = f"http://127.0.0.1:{sock.getsockname()[1]}/in/"
        first = csms.call(CP, "GetDiagnostics", {"location": location, "retries": 0})
        assert "fileName" in first
        assert csms.call(CP, "GetDiagnostics", {"location": location}) == {}
        assert csms.call(CP, "TriggerMessage",
                         {"requestedMessage": "DiagnosticsStatusNotification"})
        wait_dsn(csms, "UploadFailed", mark)
        assert dsn(csms, mark) == ["Uploading", "Uploading", "UploadFailed"]
        fw.settle()
        before = len(csms.received)
        csms.call(CP, "TriggerMessage", {"requestedMessage": "DiagnosticsStatusNotification"})
        assert csms.wait_for("DiagnosticsStatusNotification", after=before)["status"] == \
            "Idle"
    finally:
        sock.close()


# ------------------------------------------------------------------------------ contents
def test_the_log_file_gives_the_period_asked_for(tmp_path):
    folder = tmp_path / "log"
    folder.mkdir()
    (folder / "chargepoint.log.1").write_text(
        "2026-03-01T07:59:59.000Z INFO    a: before\n"
        "2026-03-01T08:00:00.000Z WARNING b: first\n")
    (folder / "chargepoint.log").write_text(
        "2026-03-01T08:30:00.000Z ERROR   c: inside\nTraceback (most recent call last):\n"
        "  a continuation line\n"
        "2026-03-01T09:00:01.000Z INFO    d: after\n")
    start = datetime(2026, 3, 1, 8, tzinfo=timezone.utc).timestamp()
    text, note = diagnostics.read_log(str(tmp_path), start, start + 3600)
    assert text.decode().splitlines() == [
        "2026-03-01T08:00:00.000Z WARNING b: first", "2026-03-01T08:30:00.000Z ERROR   c: inside",
        "Traceback (most recent call last):", "  a continuation line"]
    assert note.endswith("chargepoint.log")


def test_the_log_file_is_bounded_and_written_with_utc_times(tmp_path):
    handler = diagnostics.keep_log_file(str(tmp_path), 8)
    logger = logging.getLogger("chargepoint.test-log-file")
    logger.setLevel(logging.INFO)
    try:
        for i in range(400):
            logger.info("line %d %s", i, "x" * 40)
    finally:
        logging.getLogger().removeHandler(handler)
        handler.close()
    files = sorted((tmp_path / "log").iterdir())
    assert [p.name for p in files] == ["chargepoint.log", "chargepoint.log.1"]
    assert sum(p.stat().st_size for p in files) <= 8 * 1024 + 200
    first = files[0].read_text().splitlines()[0]
    assert first[:4] == "2026" or first[:2] == "20"
    assert first[23] == "Z" and "INFO" in first


def test_the_configuration_loses_every_secret_and_keeps_the_rest(tmp_path):
    config = tmp_path / "config.toml"
    config.write_text(
        '[csms]\nurl = "ws://user:pw1@host/ocpp"\nauthorization_key = "' + SECRET + '"\n'
        'client_key = "/etc/chargepoint/cp.key"\n# a comment stays\n'
        '[ocpp]\nAuthorizationKey = "' + SECRET + '"\nHeartbeatInterval = 300\n')
    text = diagnostics.config_without_secrets(str(config))
    assert SECRET not in text and "pw1" not in text
    assert 'authorization_key = "***"' in text and 'AuthorizationKey = "***"' in text
    assert 'client_key = "/etc/chargepoint/cp.key"' in text
    assert "# a comment stays" in text and "HeartbeatInterval = 300" in text
    assert "ws://user:***@host/ocpp" in text


def test_a_frame_keeps_no_secret():
    call = json.dumps([2, "1", "ChangeConfiguration", {"key": "authorizationKEY",
                                                       "value": SECRET}])
    assert SECRET not in diagnostics.redacted_frame(call)
    update = json.dumps([2, "2", "UpdateFirmware",
                         {"location": "ftp://op:hunter2@files.example/r.cpr",
                          "retrieveDate": "2026-01-01T00:00:00Z"}])
    assert "hunter2" not in diagnostics.redacted_frame(update)
    ring = diagnostics.FrameRing(size=3)
    for i in range(5):
        ring.add("in", f'[2,"{i}","Heartbeat",{{}}]', 1_767_225_600.0 + i)
    assert [json.loads(line)["frame"][4] for line in ring.lines()] == ["2", "3", "4"]


def test_database_health_reads_a_damaged_file_without_failing(tmp_path):
    bad = tmp_path / "cp.db"
    bad.write_bytes(b"SQLite format 3\x00" + os.urandom(4000))
    facts = diagnostics.database_health(str(bad))
    assert "error" in facts or facts.get("integrity_check") != ["ok"]


# ------------------------------------------------------------------------------ on site
def test_chargepoint_diagnostics_writes_the_archive_for_an_installer(tmp_path, csms,
                                                                    firmware):
    fw = booted(csms, firmware, {"csms": {"security_profile": 1, "authorization_key": SECRET}})
    fw.stop()
    config = tmp_path / "config.toml"
    config.write_text(
        f'[csms]\nurl = "{csms.url}"\ncharge_point_id = "CP-1"\nsecurity_profile = 1\n'
        f'authorization_key = "{SECRET}"\n[storage]\npath = "{tmp_path / "chargepoint.db"}"\n'
        '[[connectors]]\nid = 1\n[connectors.meter]\ntype = "sim"\n'
        '[connectors.contactor]\ntype = "sim"\n[connectors.pilot]\ntype = "sim"\n')
    out = tmp_path / "site" / "diag.zip"
    result = subprocess.run(
        [sys.executable, "-m", "chargepoint", "diagnostics", "--out", str(out), "--config",
         str(config), "--state-dir", str(tmp_path), "--since", "2026-01-01T00:00:00Z"],
        cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == str(out)
    got = members(out)
    assert SECRET not in "".join(got.values())
    assert json.loads(got["database.json"])["integrity_check"] == ["ok"]
    assert "only the running firmware has them" in got["README.txt"]
    assert json.loads(got["facts.json"])["period"]["start"] == "2026-01-01T00:00:00.000Z"


def test_chargepoint_diagnostics_says_what_is_wrong_with_a_bad_date(tmp_path):
    config = tmp_path / "config.toml"
    config.write_text('[[connectors]]\nid = 1\n[connectors.meter]\ntype = "sim"\n'
                      '[connectors.contactor]\ntype = "sim"\n[connectors.pilot]\ntype = "sim"\n')
    result = subprocess.run(
        [sys.executable, "-m", "chargepoint", "diagnostics", "--out", str(tmp_path / "d.zip"),
         "--config", str(config), "--state-dir", str(tmp_path), "--until", "yesterday"],
        cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert "--until 'yesterday' is not a date and time" in result.stderr
    assert not (tmp_path / "d.zip").exists()


def test_retention_of_the_request_period(csms, firmware, ftp, served):
    booted(csms, firmware)
    mark = len(csms.received)
    now = csms.now()
    start = (now - timedelta(hours=2)).isoformat(timespec="seconds").replace("+00:00", "Z")
    stop = now.isoformat(timespec="seconds").replace("+00:00", "Z")
    name = csms.call(CP, "GetDiagnostics", {"location": ftp.url("files"), "startTime": start,
                                            "stopTime": stop})["fileName"]
    wait_dsn(csms, "Uploaded", mark)
    period = json.loads(members(served / "files" / name)["facts.json"])["period"]
    assert period["start"].startswith(start[:19]) and period["stop"].startswith(stop[:19])


def test_under_systemd_the_log_comes_from_the_units_journal(tmp_path, monkeypatch):
    """journalctl (a stand-in on PATH that records its arguments) is asked for the unit's
    lines of the period; its refusal (no systemd-journal group) is said, not hidden."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    calls = tmp_path / "calls"
    fake = bin_dir / "journalctl"
    fake.write_text(f'#!/bin/sh\necho "$@" >> {calls}\n'
                    'if [ -n "$REFUSE" ]; then echo "No journal files were opened due to '
                    'insufficient permissions." >&2; exit 1; fi\n'
                    'echo "2026-03-01T08:00:01.000000+0000 host chargepoint[1]: hello"\n')
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    # Standard error is the journal stream, as systemd names it ($JOURNAL_STREAM).
    st = os.fstat(sys.stderr.fileno())
    monkeypatch.setenv("JOURNAL_STREAM", f"{st.st_dev}:{st.st_ino}")
    assert diagnostics.under_journal()
    text, note = diagnostics.read_log(str(tmp_path), 1772352000.0, 1772355600.0)
    assert text.decode().endswith("chargepoint[1]: hello\n")
    assert note.startswith("from the journal of ")
    args = calls.read_text().split()
    assert args[args.index("--since") + 1] == "@1772352000"
    assert args[args.index("--until") + 1] == "@1772355601"
    assert "-u" in args
    monkeypatch.setenv("REFUSE", "1")
    text, note = diagnostics.read_log(str(tmp_path), None, None)
    assert text == b"" and "insufficient permissions" in note and "exited with 1" in note


def test_the_log_file_takes_any_text_and_a_full_disk_quietly(tmp_path, capfd):
    handler = diagnostics.keep_log_file(str(tmp_path), 64)
    # The file's handler alone: the lone surrogate must not reach the test run's own log
    # capture (which would have to carry it elsewhere).
    logging.getLogger().removeHandler(handler)
    logger = logging.getLogger("chargepoint.test-log-file-faults")
    logger.addHandler(handler)
    logger.propagate = False
    logger.setLevel(logging.INFO)
    kept = handler.stream
    try:
        logger.info("a fuzzed frame: %s", "[2,\"\udfff\"]")
        # The card is full: /dev/full refuses every write with ENOSPC.
        handler.stream = open("/dev/full", "w", encoding="utf-8", errors="backslashreplace")
        logger.warning("lost to the full card, and nothing printed about it")
        logger.warning("nor about this one")
    finally:
        logger.removeHandler(handler)
        logger.propagate = True
        with contextlib.suppress(OSError):
            handler.close()
        kept.close()
    text = (tmp_path / "log" / "chargepoint.log").read_text()
    assert "\\udfff" in text
    assert "Logging error" not in capfd.readouterr().err
