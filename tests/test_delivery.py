"""Fair and bounded delivery, end to end against the loopback CSMS on a virtual clock:
transaction messages keep flowing under a TriggerMessage flood, a StopTransaction stays
within its size cap, and a backlog larger than the outbox's memory window drains with
every guarantee of docs/delivery.md."""
from __future__ import annotations

import time

import pytest
from ocpp.exceptions import InternalError

from chargepoint.operations.transactions import STOP_TRANSACTION_MAX_BYTES
from tests.harness import wait_until
from tests.test_offline import (CP, boot, db, dead, drained, iso, jump, link_down, link_up,
                                plug_and_tap, running, start_online, stopped, tx_messages)

STOP_DATA = "Energy.Active.Import.Register,Power.Active.Import,Current.Import,Voltage"


def slow(answer: dict, seconds: float):
    """A CSMS handler that answers `seconds` late (the CSMS's own pace, real time)."""
    def handler(cp_id, payload):
        time.sleep(seconds)
        return answer
    return handler


# -------------------------------------------------------------------- fairness
def test_meter_values_keep_their_rate_under_a_trigger_flood(csms, firmware):
    """The CSMS triggers StatusNotification 200 times a second and answers each 50 ms late:
    every sample of a running transaction still goes out, one per sampling interval; the
    triggers are all Accepted, merged into one waiting StatusNotification."""
    csms.handlers["StatusNotification"] = slow({}, 0.05)
    fw = boot(csms, firmware, {"MeterValueSampleInterval": 1})
    start = start_online(csms, fw)
    t0 = fw.clock.now()
    mark = len(csms.received)
    flood = csms.flood(CP, "TriggerMessage", {"requestedMessage": "StatusNotification",
                                              "connectorId": 1}, per_second=200)
    try:
        assert wait_until(lambda: len(csms.records("StatusNotification", after=mark)) >= 3)
        waiting = []
        for k in range(1, 21):
            jump(fw, 1)                                      # the next sample is due
            csms.wait_for("MeterValues", lambda r, k=k: r["meterValue"][0]["timestamp"] ==
                          iso(t0 + k), after=mark, timeout=10)
            waiting.append((len(fw.station.outbox), len(fw.station.calls)))
    finally:
        flood.stop()
    mvs = csms.records("MeterValues", after=mark)
    assert [m["meterValue"][0]["timestamp"] for m in mvs] == [iso(t0 + k) for k in range(1, 21)]
    assert all(m["transactionId"] == start.reply["transactionId"] for m in mvs)
    assert set(flood.answers) == {"Accepted"} and flood.answered > 20
    # Merged: never more than one StatusNotification waiting, far fewer sent than triggered.
    assert all(queued <= 1 and calls <= 1 for queued, calls in waiting), waiting
    assert len(csms.records("StatusNotification", after=mark)) < flood.answered
    assert not csms.violations


# -------------------------------------------------------------------- transactionData cap
def test_stop_transaction_data_stays_under_the_cap_with_begin_and_end(csms, firmware):
    """Ten minutes at a 1 s interval with four measurands would make a StopTransaction of
    about 600 KB; it stays within STOP_TRANSACTION_MAX_BYTES, with the Transaction.Begin
    and Transaction.End values and samples evenly spread between."""
    fw = boot(csms, firmware, {"MeterValueSampleInterval": 1, "StopTxnSampledData": STOP_DATA,
                               "MeterValuesSampledData": "Energy.Active.Import.Register"})
    start_online(csms, fw)
    t0 = fw.clock.now()
    link_down(csms, fw)                                      # no need to deliver 600 samples
    fw.advance(600)
    fw.sim.tap("TAG1")
    stopped(fw)
    mark = link_up(csms, fw)
    stop = csms.wait_for("StopTransaction", after=mark, timeout=30)
    assert drained(fw, timeout=60)
    frame = next(e.text for e in csms.log if e.direction == "in" and stop.unique_id in e.text
                 and '"StopTransaction"' in e.text)
    assert len(frame.encode()) <= STOP_TRANSACTION_MAX_BYTES
    data = stop["transactionData"]
    contexts = [v["sampledValue"][0]["context"] for v in data]
    assert contexts[0] == "Transaction.Begin" and contexts[-1] == "Transaction.End"
    assert set(contexts[1:-1]) == {"Sample.Periodic"}
    assert data[0]["timestamp"] == iso(t0) and data[-1]["timestamp"] == iso(t0 + 600)
    middle = [_epoch(v["timestamp"]) - t0 for v in data[1:-1]]
    assert 15 <= len(middle) < 600, "thinned, not emptied"
    assert middle[0] == 1 and middle[-1] >= 599                # the first and last sample
    steps = [b - a for a, b in zip(middle, middle[1:])]
    assert min(steps) > 0 and max(steps) - min(steps) <= 1, steps   # evenly spread
    assert not csms.violations


def _epoch(text: str) -> float:
    from datetime import datetime

    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


# -------------------------------------------------------------------- the memory window
WINDOW = 20


@pytest.fixture
def small_window(monkeypatch):
    """The outbox holds only WINDOW messages in memory, so a test backlog exceeds it."""
    monkeypatch.setattr("chargepoint.outbox.WINDOW", WINDOW)


def test_a_backlog_larger_than_the_window_drains_in_order_with_every_guarantee(
        csms, firmware, small_window):
    """Two whole transactions queued offline, 5 windows long: every message arrives once
    and in order (a link drop in the middle resends the message in flight with its unique
    id), the transactionIds come from each StartTransaction.conf (TC_039), and the outbox
    never held more than its window in memory."""
    fw = boot(csms, firmware, {"AllowOfflineTxForUnknownId": True,
                               "MeterValueSampleInterval": 10})
    link_down(csms, fw)
    for tag in ("TAG-A", "TAG-B"):
        plug_and_tap(fw, tag)
        running(fw)
        fw.advance(10 * 2 * WINDOW + 5)
        fw.sim.tap(tag)
        stopped(fw)
        fw.sim.unplug(1)
        fw.settle()
    on_disk = db(fw, "SELECT action, unique_id FROM outbox ORDER BY seq")
    assert len(on_disk) == 2 * (2 * WINDOW + 2) and fw.station.outbox.in_memory <= WINDOW

    ids = iter([501, 502])
    csms.start_transaction_response = lambda cp, p: {"transactionId": next(ids),
                                                     "idTagInfo": {"status": "Accepted"}}
    seen = []

    def drop_once(cp_id, payload):                 # the link drops with the 30th in flight
        seen.append(payload)
        if len(seen) == 30:
            from chargepoint.csms.server import NO_RESPONSE
            return NO_RESPONSE
        return {}
    csms.handlers["MeterValues"] = drop_once
    mark = link_up(csms, fw)
    assert wait_until(lambda: len(seen) >= 30, timeout=30)
    peak = fw.station.outbox.in_memory
    link_down(csms, fw)
    mark2 = link_up(csms, fw)
    assert drained(fw, timeout=60)
    msgs = tx_messages(csms, after=mark)
    repeated = [m.unique_id for m in tx_messages(csms, after=mark2)][:1]
    order = [(m.action, m.unique_id) for m in msgs]
    first_pass = order[:order.index(("MeterValues", repeated[0]), 0) + 1]
    assert first_pass + order[len(first_pass) + 1:] == on_disk
    assert order[len(first_pass)] == ("MeterValues", repeated[0])   # resent, same id
    by_tx = {}
    for m in msgs:
        if m.action == "StartTransaction":
            current = m.reply["transactionId"]
        else:
            assert m["transactionId"] == current
        by_tx.setdefault(current, []).append(m.action)
    assert sorted(by_tx) == [501, 502]
    assert peak <= WINDOW
    assert not db(fw, "SELECT * FROM outbox") and not db(fw, "SELECT * FROM transactions")
    assert not csms.violations


def test_a_discarded_start_takes_its_messages_beyond_the_window_to_outbox_dead(
        csms, firmware, small_window):
    """The StartTransaction of a long offline transaction is refused for good: all its
    later messages, most of them still on disk beyond the window, go to outbox_dead with
    it, and the next transaction is delivered."""
    csms.handlers["StartTransaction"] = lambda cp, p: (
        (_ for _ in ()).throw(InternalError(description="no")) if p["idTag"] == "DOOMED"
        else {"transactionId": 77, "idTagInfo": {"status": "Accepted"}})
    fw = boot(csms, firmware, {"AllowOfflineTxForUnknownId": True,
                               "MeterValueSampleInterval": 10,
                               "TransactionMessageAttempts": 1})
    link_down(csms, fw)
    for tag, seconds in (("DOOMED", 10 * 3 * WINDOW + 5), ("GOOD", 25)):
        plug_and_tap(fw, tag)
        running(fw)
        fw.advance(seconds)
        fw.sim.tap(tag)
        stopped(fw)
        fw.sim.unplug(1)
        fw.settle()
    doomed = db(fw, "SELECT unique_id FROM outbox WHERE tx_local=1 ORDER BY seq")
    assert len(doomed) == 3 * WINDOW + 2
    mark = link_up(csms, fw)
    assert drained(fw, timeout=30)
    assert [u for _, u, _, _ in dead(fw)] == [u for (u,) in doomed]
    msgs = tx_messages(csms, after=mark)
    assert [m.action for m in msgs] == ["StartTransaction", "StartTransaction",
                                        "MeterValues", "MeterValues", "StopTransaction"]
    assert all(m["transactionId"] == 77 for m in msgs[2:])
    assert not csms.violations
