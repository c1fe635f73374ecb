"""Our outgoing CALLs, driven through the core (`Station.handle`) with a real SQLite file:
whose turn it is, coalescing, the bound and the TriggerMessage answers it leads to."""
from __future__ import annotations

import json

import pytest

from chargepoint import actions as act
from chargepoint import events as ev
from chargepoint.model.link import CONNECTION, DRIVER
from chargepoint.protocol.calls import MAX_QUEUED, CallQueue, Outgoing
from tests.harness import STATION_NOW as NOW

TX = ("StartTransaction", "MeterValues", "StopTransaction")


class Csms:
    """Plays the CSMS to a bare core: answers our CALLs one at a time, in the order sent."""

    def __init__(self, station):
        self.st = station
        self.sent: list[tuple[str, str, dict]] = []       # (action, unique id, payload)
        self.pending: list[list] = []
        self.calls_answered: list[dict] = []

    def feed(self, event) -> list:
        out = self.st.handle(event, NOW)
        for a in out:
            if isinstance(a, act.SendFrame):
                frame = json.loads(a.text)
                if frame[0] == 2:
                    self.sent.append((frame[2], frame[1], frame[3]))
                    self.pending.append(frame)
                elif frame[0] == 3:
                    self.calls_answered.append(frame[2])
        return out

    def answer(self, count: int = 1) -> None:
        for _ in range(count):
            frame = self.pending.pop(0)
            self.feed(ev.FrameReceived(json.dumps([3, frame[1], self.result(frame[2])])))

    @staticmethod
    def result(action: str) -> dict:
        if action == "BootNotification":
            return {"status": "Accepted", "currentTime": "2026-01-01T00:00:00Z",
                    "interval": 300}
        if action == "Heartbeat":
            return {"currentTime": "2026-01-01T00:00:00Z"}
        if action == "Authorize":
            return {"idTagInfo": {"status": "Accepted"}}
        if action == "DataTransfer":
            return {"status": "Accepted"}
        return {}

    def call(self, action: str, payload: dict) -> dict:
        """A CALL from the CSMS; returns the charger's CALLRESULT payload."""
        before = len(self.calls_answered)
        self.feed(ev.FrameReceived(json.dumps([2, f"csms-{len(self.sent)}", action, payload])))
        return self.calls_answered[before]

    def actions(self, start: int = 0) -> list[str]:
        return [a for a, _, _ in self.sent[start:]]

    def answer_all(self) -> None:
        while self.pending:
            self.answer()


@pytest.fixture
def csms(station):
    c = Csms(station)
    c.feed(ev.Connected())
    c.answer_all()                     # BootNotification, then the statuses it brings
    assert station.services.link.accepted
    return c


def queue_transaction_messages(st, n: int) -> None:
    for i in range(n):
        st.services.outbox.produce("MeterValues", {"connectorId": 1, "meterValue": [
            {"timestamp": "2026-01-01T00:00:00Z", "sampledValue": [{"value": str(i)}]}]},
            None, NOW)


def test_the_reports_that_open_a_connection_go_first(station):
    """BootNotification, then every connector's status, before any queued message."""
    queue_transaction_messages(station, 2)
    c = Csms(station)
    c.feed(ev.Connected())
    c.answer_all()
    assert c.actions() == ["BootNotification", "StatusNotification", "StatusNotification",
                           "MeterValues", "MeterValues"]


def test_transaction_messages_and_other_calls_take_turns(csms):
    st = csms.st
    queue_transaction_messages(st, 3)
    mark = len(csms.sent)
    for _ in range(4):
        st.services.link.send_call("DataTransfer", {"vendorId": "v"})
    csms.feed(ev.Tick())
    csms.answer_all()
    assert csms.actions(mark) == ["DataTransfer", "MeterValues", "DataTransfer", "MeterValues",
                                  "DataTransfer", "MeterValues", "DataTransfer"]


def test_an_authorize_waits_for_at_most_one_transaction_message(csms):
    """A driver at the charger: the Authorize goes before the other CALLs, and after at
    most one transaction message however long the backlog."""
    st = csms.st
    queue_transaction_messages(st, 50)
    csms.feed(ev.Tick())                       # the first transaction message goes
    for _ in range(3):
        st.services.link.send_call("DataTransfer", {"vendorId": "v"})
    csms.answer()                              # a DataTransfer takes the turn
    mark = len(csms.sent)
    st.services.link.send_call("Authorize", {"idTag": "DRIVER"}, lane=DRIVER)
    csms.answer(2)                             # then the transaction message it passed over
    assert csms.actions(mark) == ["MeterValues", "Authorize"]


def test_an_authorize_goes_at_once_when_nothing_was_passed_over(csms):
    st = csms.st
    queue_transaction_messages(st, 50)
    csms.feed(ev.Tick())
    mark = len(csms.sent)
    st.services.link.send_call("Authorize", {"idTag": "DRIVER"}, lane=DRIVER)
    csms.answer()
    assert csms.actions(mark) == ["Authorize"]


def test_a_triggered_boot_notification_takes_its_turn_like_any_other(csms):
    """Only the BootNotification that opens a connection goes before everything: one the
    CSMS triggers (over and over, maybe) takes turns with the transaction queue."""
    st = csms.st
    queue_transaction_messages(st, 3)
    st.services.link.send_call("DataTransfer", {"vendorId": "v"})
    csms.feed(ev.Tick())                       # the DataTransfer; a transaction passed over
    mark = len(csms.sent)
    assert csms.call("TriggerMessage", {"requestedMessage": "BootNotification"}) == {
        "status": "Accepted"}
    csms.answer(2)
    assert csms.actions(mark) == ["MeterValues", "BootNotification"]


def test_triggered_status_notifications_are_merged_and_answered_accepted(csms):
    """A CSMS triggering faster than it answers: one StatusNotification per connector
    waits, carrying the latest status; every trigger is Accepted."""
    st = csms.st
    st.services.link.send_call("DataTransfer", {"vendorId": "v"})
    csms.feed(ev.Tick())                       # outstanding: nothing else goes meanwhile
    answers = [csms.call("TriggerMessage", {"requestedMessage": "StatusNotification",
                                            "connectorId": 1})["status"] for _ in range(500)]
    answers += [csms.call("TriggerMessage", {"requestedMessage": "Heartbeat"})["status"]
                for _ in range(500)]
    assert set(answers) == {"Accepted"}
    assert st.rpc.queued_actions() == ["StatusNotification", "Heartbeat"]
    mark = len(csms.sent)
    csms.answer_all()
    assert csms.actions(mark) == ["StatusNotification", "Heartbeat"]


def test_status_changes_of_a_connector_are_merged_into_the_latest(csms):
    st = csms.st
    st.services.link.send_call("DataTransfer", {"vendorId": "v"})
    csms.feed(ev.Tick())
    reports = st.services.status_reports
    for state in ("Preparing", "Charging", "Finishing"):
        body = {**reports.payload(1), "status": state}
        st.services.link.send_call("StatusNotification", body)
    st.services.link.send_call("StatusNotification", {**reports.payload(0), "status": "Unavailable"})
    mark = len(csms.sent)
    csms.answer_all()
    sent = [(p["connectorId"], p["status"]) for a, _, p in csms.sent[mark:]
            if a == "StatusNotification"]
    assert sent == [(1, "Finishing"), (0, "Unavailable")]


def test_at_the_bound_a_call_is_refused_and_a_trigger_rejected(csms):
    """Calls that cannot be merged fill the queue up to its bound; one more is refused at
    once (its sender hears "queue full"), a TriggerMessage for a new kind is Rejected and
    one for a kind already waiting is merged and Accepted."""
    st = csms.st
    st.services.link.send_call("StatusNotification", {"connectorId": 1, "errorCode": "NoError",
                                        "status": "Available"})
    csms.feed(ev.Tick())                       # outstanding
    st.services.link.send_call("StatusNotification", {"connectorId": 1, "errorCode": "NoError",
                                        "status": "Available"})
    for _ in range(MAX_QUEUED - 1):
        assert st.services.link.send_call("DataTransfer", {"vendorId": "v"})
    errors = []
    assert not st.services.link.send_call("DataTransfer", {"vendorId": "v"}, on_error=errors.append)
    assert errors == ["queue full"]
    assert csms.call("TriggerMessage", {"requestedMessage": "Heartbeat"}) == {
        "status": "Rejected"}
    assert csms.call("TriggerMessage", {"requestedMessage": "MeterValues",
                                        "connectorId": 1}) == {"status": "Rejected"}
    assert csms.call("TriggerMessage", {"requestedMessage": "StatusNotification",
                                        "connectorId": 1}) == {"status": "Accepted"}
    assert len(st.rpc.calls) == MAX_QUEUED
    csms.answer_all()
    assert len(st.rpc.calls) == 0 and "Heartbeat" not in csms.actions()


def test_the_queue_is_emptied_when_the_link_goes(csms):
    st = csms.st
    errors = []
    st.services.link.send_call("DataTransfer", {"vendorId": "v"})
    csms.feed(ev.Tick())
    st.services.link.send_call("Heartbeat", {}, on_error=errors.append)
    st.services.link.send_call("DataTransfer", {"vendorId": "v"}, on_error=errors.append)
    csms.feed(ev.Disconnected("test"))
    assert errors == ["offline", "offline"] and len(st.rpc.calls) == 0


def test_a_merged_message_moves_up_to_the_lane_it_was_asked_for():
    queue = CallQueue(bound=4)
    queue.put(Outgoing("DataTransfer", {"vendorId": "v"}))
    queue.put(Outgoing("StatusNotification", {"connectorId": 1, "status": "Available"}))
    assert queue.put(Outgoing("StatusNotification", {"connectorId": 1, "status": "Faulted"},
                              lane=CONNECTION)) == "merged"
    first = queue.pop(lambda out: True)
    assert (first.action, first.payload["status"]) == ("StatusNotification", "Faulted")
    assert len(queue) == 1
