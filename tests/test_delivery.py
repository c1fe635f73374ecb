"""Fair and bounded delivery, end to end against the loopback CSMS on a virtual clock:
transaction messages keep flowing under a TriggerMessage flood, a message the CSMS keeps
closing the link on is given up (and can be sent again by the operator), a StopTransaction
stays within its size cap, and a backlog larger than the outbox's memory window drains
with every guarantee of docs/delivery.md."""
from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import pytest
from ocpp.exceptions import InternalError

from chargepoint.csms.server import NO_RESPONSE
from chargepoint.protocol import ocppj
from chargepoint.model.transactions import STOP_TRANSACTION_MAX_BYTES
from chargepoint.model.delivery import CLOSES_PER_ATTEMPT
from tests.harness import wait_until
from tests.test_outbox_admin import cli, operator_config
from tests.test_offline import (CP, boot, db, dead, drained, iso, jump,
                                link_down, link_up, outbox_row, plug_and_tap, running,
                                start_online, stopped, tx_messages)

ROOT = Path(__file__).resolve().parents[1]
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
            waiting.append((len(fw.station.services.outbox), len(fw.station.rpc.calls)))
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


# -------------------------------------------------------------------- poison messages
def write_config(tmp_path: Path, fw) -> Path:
    """A config.toml naming the firmware's database, for the operator commands."""
    return operator_config(tmp_path / "operator.toml", fw.settings.storage.path,
                           fw.settings.csms.url)




def test_a_stop_transaction_the_csms_keeps_closing_the_link_on_is_given_up(
        csms, firmware, tmp_path, caplog):
    """A CSMS with a 16 KiB frame limit closes the link on a StopTransaction of 30 KiB.
    After CLOSES_PER_ATTEMPT closures in a row it is a failed attempt; after
    TransactionMessageAttempts it is moved to outbox_dead with an ERROR naming it, and the
    next driver's session is delivered. The operator lists it and sends it again once the
    CSMS takes bigger frames: same unique id, its transactionId."""
    caplog.set_level(logging.WARNING)
    fw = boot(csms, firmware, {"MeterValueSampleInterval": 1, "StopTxnSampledData": STOP_DATA,
                               "TransactionMessageAttempts": 2,
                               "TransactionMessageRetryInterval": 10})
    start = start_online(csms, fw, "TAG1")
    fw.advance(60)
    csms.frame_limit = 16 * 1024
    mark = len(csms.received)
    fw.sim.tap("TAG1")
    assert wait_until(lambda: len(csms.oversized) >= CLOSES_PER_ATTEMPT, timeout=20)
    assert wait_until(lambda: outbox_row(fw, "StopTransaction")[0][1] == 1)
    (uid, _, next_attempt), = outbox_row(fw, "StopTransaction")
    assert wait_until(lambda: fw.station.rpc.connected) and fw.settle()
    assert fw.station.rpc.connected, "the link must stay up while the retry waits"
    assert len(csms.oversized) == CLOSES_PER_ATTEMPT
    fw.advance(next_attempt - fw.clock.now())                # the second and last attempt
    assert wait_until(lambda: dead(fw), timeout=20)
    (action, dead_uid, attempts, reason), = dead(fw)
    assert (action, dead_uid, attempts) == ("StopTransaction", uid, 2)
    assert "closed the link" in reason
    assert len(csms.oversized) == 2 * CLOSES_PER_ATTEMPT
    assert not csms.records("StopTransaction", after=mark), "the CSMS never read it whole"
    tid = start.reply["transactionId"]

    def errors_giving_up():    # logged after the commit that `dead` may already have seen
        return [r for r in caplog.records if r.levelno == logging.ERROR
                and "gave up on StopTransaction" in r.getMessage()]

    assert wait_until(errors_giving_up)
    gave_up = errors_giving_up()
    assert len(gave_up) == 1 and uid in gave_up[0].getMessage()
    assert f"transactionId {tid}" in gave_up[0].getMessage()

    # The queue moved on: the next driver's session is delivered.
    assert wait_until(lambda: fw.station.rpc.connected) and fw.settle()
    fw.sim.unplug(1)
    fw.settle()
    mark = len(csms.received)
    start_online(csms, fw, "TAG2")
    fw.advance(3)
    fw.sim.tap("TAG2")
    stopped(fw)
    assert drained(fw)
    msgs = tx_messages(csms, after=mark)
    assert [m.action for m in msgs][0] == "StartTransaction" and msgs[-1].action == \
        "StopTransaction" and msgs[-1]["transactionId"] == msgs[0].reply["transactionId"]

    # The operator: list what was given up, then send it again (the service runs).
    config = write_config(tmp_path, fw)
    listing = cli(config, "list", "--dead")
    assert listing.returncode == 0, listing.stderr
    assert "1 message(s) given up" in listing.stdout and uid in listing.stdout
    assert str(tid) in listing.stdout and "closed the link" in listing.stdout
    as_json = json.loads(cli(config, "list", "--dead", "--json").stdout)
    (entry,) = as_json["messages"]
    assert (entry["unique_id"], entry["transaction_id"]) == (uid, tid)
    csms.frame_limit = None
    mark = len(csms.received)
    again = cli(config, "resend", str(entry["id"]))
    assert again.returncode == 0, again.stderr
    stop = csms.wait_for("StopTransaction", after=mark, timeout=10)
    assert drained(fw)
    assert stop.unique_id == uid and stop["transactionId"] == tid and stop.reply is not None
    assert not dead(fw) and not db(fw, "SELECT * FROM outbox")
    assert "0 message(s) given up" in cli(config, "list", "--dead").stdout
    assert not db(fw, "SELECT * FROM transactions")          # its transaction is closed
    assert not csms.violations


def jump_until(fw, predicate, step: float = 1.0, limit: int = 300) -> bool:
    """Move virtual time a step at a time until `predicate` holds (timeouts must pass)."""
    for _ in range(limit):
        if wait_until(predicate, timeout=0.05):
            return True
        jump(fw, step)
    return predicate()


def test_a_csms_that_answers_nothing_and_drops_the_link_gives_up_nothing(csms, firmware):
    """A stalled CSMS drops the link whenever a StartTransaction arrives, without answering
    it. Nothing was answered on those connections, so each drop is a lost link, not a
    refusal of the message: after twice CLOSES_PER_ATTEMPT of them, with a single attempt
    allowed, nothing is given up, and once the CSMS recovers it is delivered."""
    fw = boot(csms, firmware, {"AllowOfflineTxForUnknownId": True,
                               "TransactionMessageAttempts": 1})
    link_down(csms, fw)
    plug_and_tap(fw)
    running(fw)
    stalled = True

    def start_transaction(cp_id, payload):
        # `stalled` is read once per StartTransaction: each is either dropped with its link
        # or answered, never left unanswered on a live link by a recovery half made.
        if stalled:
            csms.drop(CP)
            return NO_RESPONSE
        return None

    csms.handlers["StartTransaction"] = start_transaction
    # Nothing else is answered either: an answer on a connection makes its drop a refusal.
    csms.respond = {action: action == "StartTransaction" for action in ocppj.KNOWN_ACTIONS}
    mark = link_up(csms, fw)
    for cycle in range(1, 2 * CLOSES_PER_ATTEMPT + 1):
        assert jump_until(fw, lambda: len(csms.records("StartTransaction", after=mark))
                          >= cycle), f"cycle {cycle}"
    assert not dead(fw) and outbox_row(fw, "StartTransaction")[0][1] == 0
    stalled = False
    csms.respond = True
    assert jump_until(fw, lambda: not outbox_row(fw, "StartTransaction"))
    starts = csms.records("StartTransaction", after=mark)
    assert len({s.unique_id for s in starts}) == 1 and starts[-1].reply is not None
    assert not dead(fw)


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
    monkeypatch.setattr("chargepoint.model.outbox.WINDOW", WINDOW)


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
    assert len(on_disk) == 2 * (2 * WINDOW + 2) and fw.station.services.outbox.in_memory <= WINDOW

    ids = iter([501, 502])
    csms.start_transaction_response = lambda cp, p: {"transactionId": next(ids),
                                                     "idTagInfo": {"status": "Accepted"}}
    seen = []

    def drop_once(cp_id, payload):                 # the link drops with the 30th in flight
        seen.append(payload)
        if len(seen) == 30:
            return NO_RESPONSE
        return {}
    csms.handlers["MeterValues"] = drop_once
    mark = link_up(csms, fw)
    assert wait_until(lambda: len(seen) >= 30, timeout=30)
    peak = fw.station.services.outbox.in_memory
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
