"""SIGKILL at each step of an UpdateFirmware before the installation (as tests/test_crash.py
does for transactions): the real process killed while the request waits for its
retrieveDate, mid-download, with the bundle downloaded and a transaction holding the
installation, and with the final status sent but not answered. Started again, it carries
on from the stored step: the request is kept, the download resumes where it stopped, the
installation follows the transaction's power-loss stop, the final status is told again;
the old release runs throughout and nothing of the database is lost.

(The steps from the installation on, the switch and the trial, are killed in
tests/test_release_kills.py.)
"""
from __future__ import annotations

import sqlite3
from datetime import datetime, timedelta, timezone

import pytest

from bench._common import FirmwareProcess
from chargepoint import __version__
from chargepoint.csms.server import NO_RESPONSE
from chargepoint.model.firmware import STATE_KEY
from tests.harness import wait_until

CP = "CP-BENCH"
BUNDLE = b"not a release, but bytes to fetch " * 20_000          # 680 kB


@pytest.fixture
def served(served):
    (served / "release.cpr").write_bytes(BUNDLE)
    return served


@pytest.fixture
def process(tmp_path, csms, monkeypatch):
    monkeypatch.setenv("STATE_DIRECTORY", str(tmp_path / "fw"))
    made = []

    def start():
        fw = FirmwareProcess(tmp_path / "fw", csms.url, ocpp={"MeterValueSampleInterval": 0})
        fw.start()
        made.append(fw)
        fw.wait_sim(20)
        return fw

    yield start
    for fw in made:
        fw.kill()


def update(csms, location, in_s=0.0, **extra):
    when = datetime.now(timezone.utc) + timedelta(seconds=in_s)
    assert csms.call(CP, "UpdateFirmware", {
        "location": location, **extra,
        "retrieveDate": when.isoformat(timespec="milliseconds").replace("+00:00", "Z")}) == {}


def booted(csms, after=0):
    boot = csms.wait_for("BootNotification", after=after, timeout=30)
    assert boot["firmwareVersion"] == __version__             # the old release, always
    csms.wait_for("StatusNotification", lambda r: r["connectorId"] == 1, after=boot.index,
                  timeout=20)
    return boot


def final(csms, after=0):
    return csms.wait_for("FirmwareStatusNotification", lambda r: r["status"] in (
        "DownloadFailed", "InstallationFailed", "Installed"), after=after, timeout=60)


def stored(fw) -> dict:
    db = sqlite3.connect(f"file:{fw.db}?mode=ro", uri=True)
    try:
        row = db.execute("SELECT value FROM state WHERE key=?", (STATE_KEY,)).fetchone()
        tx = db.execute("SELECT COUNT(*) FROM transactions").fetchone()[0]
    finally:
        db.close()
    return {"row": row, "transactions": tx}


def test_killed_while_waiting_for_retrieve_date(csms, process, http):
    fw = process()
    booted(csms)
    update(csms, http.url("release.cpr"), in_s=4, retries=0)
    fw.kill()
    assert stored(fw)["row"] is not None
    mark = len(csms.received)
    again = process()
    booted(csms, mark)
    end = final(csms, mark)
    assert end["status"] == "InstallationFailed"
    got = [r for r in http.requests if r[0] == "GET"]
    assert len(got) == 1
    assert again.proc.poll() is None


def test_killed_mid_download_resumes_it(csms, process, http):
    fw = process()
    booted(csms)
    http.stall_after, http.once, http.stall_s = 300_000, True, 60
    update(csms, http.url("release.cpr"), retries=0)
    part = fw.workdir / "downloads"
    assert wait_until(lambda: any(p.stat().st_size >= 300_000 for p in part.glob("*.part")),
                      timeout=20)
    fw.kill()
    http._released.set()
    mark = len(csms.received)
    process()
    booted(csms, mark)
    assert final(csms, mark)["status"] == "InstallationFailed"
    last = [r for r in http.requests if r[0] == "GET"][-1]
    assert last[2].get("Range") == "bytes=300000-"
    # The attempt the kill cut short did not count: retries 0 still had its one.
    assert "DownloadFailed" not in [r["status"] for r in
                                    csms.records("FirmwareStatusNotification")]


def test_killed_with_the_bundle_waiting_for_a_transaction(csms, process, http):
    fw = process()
    booted(csms)
    start = fw.charge(csms, "TAG1")
    update(csms, http.url("release.cpr"), retries=0)
    csms.wait_for("FirmwareStatusNotification", lambda r: r["status"] == "Downloaded",
                  timeout=30)
    assert "Installing" not in [r["status"] for r in
                                csms.records("FirmwareStatusNotification")]
    fw.kill()
    mark = len(csms.received)
    process()
    booted(csms, mark)
    stop = csms.wait_for("StopTransaction", timeout=30)
    assert stop["transactionId"] == start.reply["transactionId"]
    assert stop["reason"] == "PowerLoss"
    end = final(csms, mark)
    assert end["status"] == "InstallationFailed"
    csms.wait_for("StatusNotification", lambda r: r["connectorId"] == 1
                  and r["status"] == "Available", after=end.index - 3, timeout=20)


def test_killed_before_the_csms_answered_the_final_status(csms, process, served):
    fw = process()
    booted(csms)
    csms.handlers["FirmwareStatusNotification"] = lambda cp, payload: (
        NO_RESPONSE if payload["status"] == "DownloadFailed" else {})
    update(csms, "http://127.0.0.1:9/nothing.cpr", retries=0)
    csms.wait_for("FirmwareStatusNotification", lambda r: r["status"] == "DownloadFailed",
                  timeout=30)
    fw.kill()
    assert stored(fw)["row"] is not None          # kept until the CSMS answers
    del csms.handlers["FirmwareStatusNotification"]
    mark = len(csms.received)
    again = process()
    booted(csms, mark)
    told = csms.wait_for("FirmwareStatusNotification", after=mark, timeout=30)
    assert told["status"] == "DownloadFailed"
    assert wait_until(lambda: stored(again)["row"] is None)     # answered: forgotten
