"""OCTT TC_044_2/3 and TC_045_1/2 with the real firmware process (`python -m chargepoint
run`, bench/_common.py) against the bundled Central System and real FTP and HTTP servers,
as /work/shared/reference/octt-1.6-charge-point.txt lays the steps out; and the demo's
own Central System asking for diagnostics from its terminal."""
from __future__ import annotations

import os
import socket
import zipfile
from pathlib import Path

import pytest

from bench._common import FirmwareProcess
from chargepoint.csms.files import FileServer
from chargepoint.csms.operator import Operator
from tests.demo_process import Demo
from tests.file_servers import FtpServer

ROOT = Path(__file__).resolve().parents[1]
CP = "CP-BENCH"


@pytest.fixture
def process(tmp_path, csms, monkeypatch):
    """The firmware process, its state in the test's directory."""
    monkeypatch.setenv("STATE_DIRECTORY", str(tmp_path / "fw"))
    fw = FirmwareProcess(tmp_path / "fw", csms.url)
    fw.start()
    try:
        fw.wait_sim()
        csms.wait_for("StatusNotification", lambda r: r["connectorId"] == 1, timeout=20)
        yield fw
    finally:
        fw.stop()


def fsn(csms, after=0) -> list[str]:
    return [r["status"] for r in csms.records("FirmwareStatusNotification", after=after)]


def dsn(csms, after=0) -> list[str]:
    return [r["status"] for r in csms.records("DiagnosticsStatusNotification", after=after)]


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def available_after(csms, mark) -> None:
    csms.wait_for("StatusNotification", lambda r: r["connectorId"] == 1
                  and r["status"] == "Available", after=mark, timeout=20)


def test_tc_044_2_download_failed(csms, process, tmp_path):
    with FtpServer(tmp_path / "ftp") as ftp:
        mark = len(csms.received)
        boots = len(csms.records("BootNotification"))
        assert csms.call(CP, "UpdateFirmware", {
            "location": f"ftp://127.0.0.1:{ftp.port}/download_fail.fwi", "retries": 0,
            "retrieveDate": "2026-01-01T00:00:00Z"}) == {}
        csms.wait_for("FirmwareStatusNotification", lambda r: r["status"] == "DownloadFailed",
                      after=mark, timeout=20)
    assert fsn(csms, mark) in (["Downloading", "DownloadFailed"], ["DownloadFailed"])
    # The old firmware stays active: no restart, and the log says why.
    assert len(csms.records("BootNotification")) == boots
    assert process.proc.poll() is None
    assert "download_fail.fwi: no such file on the server" in process.tail(200)
    assert not csms.violations


def test_tc_044_3_installation_failed(csms, process, tmp_path):
    served = tmp_path / "served"
    served.mkdir()
    (served / "invalid.cpr").write_bytes(b"this is no release bundle" * 1000)
    with FileServer(served) as http:
        mark = len(csms.received)
        boots = len(csms.records("BootNotification"))
        csms.call(CP, "UpdateFirmware", {"location": http.url("invalid.cpr"),
                                         "retrieveDate": "2026-01-01T00:00:00Z"})
        csms.wait_for("FirmwareStatusNotification",
                      lambda r: r["status"] == "InstallationFailed", after=mark, timeout=30)
    assert fsn(csms, mark) == ["Downloading", "Downloaded", "Installing", "InstallationFailed"]
    available_after(csms, mark)
    assert len(csms.records("BootNotification")) == boots and process.proc.poll() is None
    assert "firmware installation failed" in process.tail(200)
    # Nothing of the bundle is left behind.
    downloads = process.workdir / "downloads"
    assert not downloads.exists() or not list(downloads.iterdir())
    assert not csms.violations


def test_tc_045_1_get_diagnostics(csms, process, tmp_path):
    root = tmp_path / "ftp"
    (root / "logs").mkdir(parents=True)
    with FtpServer(root) as ftp:
        mark = len(csms.received)
        answer = csms.call(CP, "GetDiagnostics", {"location": ftp.url("logs/")})
        csms.wait_for("DiagnosticsStatusNotification", lambda r: r["status"] == "Uploaded",
                      after=mark, timeout=30)
    assert dsn(csms, mark) == ["Uploading", "Uploaded"]
    archive = root / "logs" / answer["fileName"]
    with zipfile.ZipFile(archive) as zipped:
        log = zipped.read("log.txt").decode()
        frames = zipped.read("frames.jsonl").decode()
    # The process keeps its log in a file beside the database (no journal here).
    assert "chargepoint: chargepoint" in log and "starting as CP-BENCH" in log
    assert "GetDiagnostics" in frames
    assert not csms.violations


def test_tc_045_2_upload_failed_and_the_charger_carries_on(csms, process):
    mark = len(csms.received)
    answer = csms.call(CP, "GetDiagnostics", {
        "location": f"ftp://127.0.0.1:{closed_port()}/files/failedLocation", "retries": 0})
    assert answer.get("fileName")
    csms.wait_for("DiagnosticsStatusNotification", lambda r: r["status"] == "UploadFailed",
                  after=mark, timeout=30)
    assert dsn(csms, mark) == ["Uploading", "UploadFailed"]
    # Normal operation goes on: a session starts.
    process.sim("plug", "1")
    process.sim("tap", "TAG1")
    csms.wait_for("StartTransaction", after=mark, timeout=20)
    assert "diagnostics upload failed" in process.tail(200)


def test_the_operator_of_the_local_csms_gets_the_diagnostics(csms, process, tmp_path):
    operator = Operator(csms, tmp_path / "operator", printer=lambda line: None)
    try:
        mark = len(csms.received)
        operator.command("get-diagnostics", CP)
        csms.wait_for("DiagnosticsStatusNotification", lambda r: r["status"] == "Uploaded",
                      after=mark, timeout=30)
        (archive,) = operator.files.uploaded()
        assert zipfile.is_zipfile(archive)
    finally:
        operator.stop()


def test_the_demo_takes_operator_commands_in_its_terminal(tmp_path):
    env = dict(os.environ, XDG_RUNTIME_DIR=str(tmp_path), PYTHONUNBUFFERED="1")
    demo = Demo(["--heartbeat", "5"], cwd=tmp_path, env=env)
    try:
        demo.wait_for("connector 1: Available")
        demo.wait_for("update-firmware BUNDLE")
        demo.type("get-diagnostics")
        demo.wait_for("GetDiagnostics sent to CP-DEMO")
        demo.wait_for("Uploaded")
        demo.type("update-firmware /nonexistent/bundle.cpr")
        demo.wait_for("no bundle at /nonexistent/bundle.cpr")
    finally:
        demo.interrupt()
    assert "Traceback" not in demo.text
