"""A clean stop (SIGTERM: `systemctl stop`, `restart`, a reboot) during a session.

With the CSMS connected the real process delivers the StopTransaction (reason Reboot)
and everything queued before it, and exits 0 only then, within `[system] stop_wait_s`;
offline, or once the bound passes, the stop stays on disk and goes at the next start.
"""
from __future__ import annotations

import signal
import sqlite3
import time
from pathlib import Path

from bench._common import FirmwareProcess
from chargepoint.csms.server import NO_RESPONSE
from tests.harness import wait_until

#: A bound the tests below never wait for: finishing well inside it shows nobody waited.
PATIENT_S = 120


def _outbox(db: Path) -> list[str]:
    con = sqlite3.connect(db, timeout=5)
    try:
        return [action for (action,) in con.execute("SELECT action FROM outbox ORDER BY seq")]
    finally:
        con.close()


def _charging(fw: FirmwareProcess, csms):
    """A session started and its StartTransaction confirmed (off the outbox); its record."""
    start = fw.charge(csms)
    assert wait_until(lambda: start.reply is not None and _outbox(fw.db) == [], 10), fw.tail()
    return start


def _sigterm(fw: FirmwareProcess, timeout: float = 30) -> int:
    fw.proc.send_signal(signal.SIGTERM)
    return fw.proc.wait(timeout=timeout)


def test_online_the_stop_and_what_was_queued_before_it_reach_the_csms_before_the_exit(
        tmp_path, csms):
    fw = FirmwareProcess(tmp_path / "fw", csms.url,
                         ocpp={"MeterValueSampleInterval": 1, "ClockAlignedDataInterval": 0},
                         system={"stop_wait_s": PATIENT_S})
    fw.start()
    try:
        start = _charging(fw, csms)
        csms.stop(graceful=False)                    # offline: samples queue up
        assert wait_until(lambda: len(_outbox(fw.db)) >= 3, 20), fw.tail()
        # Back online, answering slowly: the queue is still there at the SIGTERM.
        csms.handlers["MeterValues"] = lambda cp_id, payload: time.sleep(0.2)
        mark = len(csms.received)
        csms.start()
        csms.wait_for("MeterValues", timeout=20, after=mark)
        waiting = len(_outbox(fw.db))
        code = _sigterm(fw, PATIENT_S / 2)
    finally:
        fw.kill()
    assert code == 0, fw.tail()
    assert waiting >= 2
    sent = csms.records(("MeterValues", "StopTransaction"), after=mark)
    assert [r.action for r in sent][-1] == "StopTransaction"
    assert len(sent) >= waiting + 1
    stop = sent[-1]
    assert (stop["transactionId"], stop["reason"]) == (start.reply["transactionId"], "Reboot")
    assert all(r.reply is not None for r in sent), "each was answered before the exit"
    assert _outbox(fw.db) == [], "nothing is left for the next start"
    log = fw.log.read_text()
    assert "stopping: delivering" in log and \
        "stopping: the CSMS has confirmed every transaction message" in log, log
    csms.assert_no_violations()


def test_offline_the_process_exits_at_once_and_the_stop_goes_at_the_next_start(
        tmp_path, csms):
    fw = FirmwareProcess(tmp_path / "fw", csms.url, system={"stop_wait_s": PATIENT_S})
    fw.start()
    try:
        start = _charging(fw, csms)
        csms.stop(graceful=False)
        assert wait_until(lambda: "disconnected from the CSMS" in fw.log.read_text(), 10)
        code = _sigterm(fw, PATIENT_S / 4)
        assert code == 0, fw.tail()
        assert _outbox(fw.db) == ["StopTransaction"]
        assert "stopping: 1 transaction message(s) wait for the next start (offline)" \
            in fw.log.read_text()
        mark = len(csms.received)
        csms.start()
        fw.start()
        boot = csms.wait_for("BootNotification", timeout=20, after=mark)
        available = csms.wait_for("StatusNotification", lambda r: r["connectorId"] == 1,
                                  timeout=20, after=boot.index)
        stop = csms.wait_for("StopTransaction", timeout=20, after=mark)
    finally:
        assert fw.stop() == 0
    assert available["status"] == "Available" and available.index < stop.index
    assert (stop["transactionId"], stop["reason"]) == (start.reply["transactionId"], "Reboot")
    assert len(csms.records("StopTransaction")) == 1


def test_a_csms_that_does_not_answer_holds_the_stop_only_for_stop_wait_s(tmp_path, csms):
    """The StopTransaction goes out but no answer comes: the process exits once
    `stop_wait_s` has passed (by its own clock, as it logs), and the same message (same
    unique id) is sent again at the next start."""
    csms.handlers["StopTransaction"] = lambda cp_id, payload: NO_RESPONSE
    fw = FirmwareProcess(tmp_path / "fw", csms.url, system={"stop_wait_s": 1})
    fw.start()
    try:
        _charging(fw, csms)
        code = _sigterm(fw)
        assert code == 0, fw.tail()
        first = csms.wait_for("StopTransaction", timeout=5)
        assert first.reply is None
        assert "the CSMS did not confirm 1 transaction message(s) within 1 s " \
               "([system] stop_wait_s)" in fw.log.read_text(), fw.tail()
        assert _outbox(fw.db) == ["StopTransaction"]
        del csms.handlers["StopTransaction"]
        mark = len(csms.received)
        fw.start()
        again = csms.wait_for("StopTransaction", timeout=20, after=mark)
    finally:
        assert fw.stop() == 0
    assert again.unique_id == first.unique_id and again.reply is not None
    assert _outbox(fw.db) == []


def test_a_second_sigterm_ends_the_wait_for_the_csms(tmp_path, csms):
    csms.handlers["StopTransaction"] = lambda cp_id, payload: NO_RESPONSE
    fw = FirmwareProcess(tmp_path / "fw", csms.url, system={"stop_wait_s": PATIENT_S})
    fw.start()
    try:
        _charging(fw, csms)
        fw.proc.send_signal(signal.SIGTERM)
        csms.wait_for("StopTransaction", timeout=10)
        assert wait_until(lambda: "stopping: delivering" in fw.log.read_text(), 10)
        assert fw.proc.poll() is None                # it waits for the answer
        code = _sigterm(fw, PATIENT_S / 4)
    finally:
        fw.kill()
    assert code == 0, fw.tail()
    assert "stopping at once, as asked again: 1 transaction message(s) wait for the next " \
           "start" in fw.log.read_text()
    assert _outbox(fw.db) == ["StopTransaction"]


def test_nothing_starts_while_a_clean_stop_waits_for_the_csms(csms, firmware):
    """The session ends with the stop; a card presented or a RemoteStartTransaction while
    the stop waits for the CSMS starts nothing, and the contactor stays open."""
    from tests.harness import wait_status

    csms.handlers["StopTransaction"] = lambda cp_id, payload: NO_RESPONSE
    fw = firmware()
    wait_status(csms, "Available")
    fw.sim.plug(1)
    fw.sim.tap("TAG1")
    csms.wait_for("StartTransaction")
    wait_status(csms, "Charging")
    fw.runtime.stop()
    stop = csms.wait_for("StopTransaction")
    assert stop["reason"] == "Reboot"
    mark = len(csms.received)
    fw.sim.tap("TAG2")
    assert csms.call("CP-1", "RemoteStartTransaction", {"idTag": "TAG3", "connectorId": 1}) \
        == {"status": "Rejected"}
    assert fw.runtime.caught_up()                      # the loop has handled the tap
    assert not csms.records(("Authorize", "StartTransaction"), after=mark)
    assert fw.station.services.plug_wait.pending is None
    assert all(conn.tx is None for conn in fw.station.services.connectors.values())
    assert fw.sim.status()["connectors"]["1"]["contactor"] == "open"
    fw.runtime.stop()                                  # asked again: no more waiting
    fw.stop()
