"""The RPC endpoint alone (chargepoint/protocol/rpc.py): frames in, frames and events out.

No Station, no socket, no thread: text goes in with `receive`, our CALLs leave through
`next_call`, and every frame the endpoint produces is read from `take_outgoing`.
"""
from __future__ import annotations

import json
from typing import Optional

import pytest

from chargepoint.model.link import CONNECTION, DRIVER, QueuedMessage
from chargepoint.protocol.rpc import (CallReceived, ErrorReceived, MalformedFrame,
                                      ResultReceived, RpcEndpoint)

NOW = 1000.0


class Queue:
    """A stand-in transaction queue: messages handed out in order, each once."""

    def __init__(self, *actions: str):
        self.waiting = [QueuedMessage(a, {"connectorId": 1, "meterValue": []}
                                      if a == "MeterValues" else {}, f"tx-{i}",
                                      on_result=lambda p: None, on_error=lambda r: None)
                        for i, a in enumerate(actions)]

    def ready(self) -> bool:
        return bool(self.waiting)

    def next_message(self) -> Optional[QueuedMessage]:
        return self.waiting.pop(0) if self.waiting else None


def frames(endpoint: RpcEndpoint) -> list:
    return [json.loads(text) for text in endpoint.take_outgoing()]


@pytest.fixture
def endpoint() -> RpcEndpoint:
    e = RpcEndpoint(response_timeout_s=30)
    e.connection_made()
    return e


def test_a_call_goes_out_with_its_deadline_and_one_at_a_time(endpoint):
    assert endpoint.send_call("Heartbeat", {})
    assert endpoint.send_call("Heartbeat", {})          # merged into the waiting one
    assert endpoint.send_call("DataTransfer", {"vendorId": "v"})
    out = endpoint.next_call(NOW, True, Queue())
    assert out.action == "Heartbeat" and endpoint.deadline == NOW + 30
    assert frames(endpoint) == [[2, out.unique_id, "Heartbeat", {}]]
    assert endpoint.next_call(NOW, True, Queue()) is None      # one outstanding at a time
    assert endpoint.queued_actions() == ["DataTransfer"]


def test_the_answer_to_our_call_is_an_event_and_frees_the_turn(endpoint):
    endpoint.send_call("Heartbeat", {})
    out = endpoint.next_call(NOW, True, Queue())
    event = endpoint.receive(json.dumps([3, out.unique_id, {"currentTime": "2026-06-01T00:00:00Z"}]))
    assert isinstance(event, ResultReceived) and event.out is out
    assert event.payload == {"currentTime": "2026-06-01T00:00:00Z"}
    assert endpoint.inflight is None and endpoint.deadline is None
    assert endpoint.answered_on_link


def test_a_callerror_and_a_schema_violating_answer_are_errors(endpoint):
    endpoint.send_call("Heartbeat", {})
    out = endpoint.next_call(NOW, True, Queue())
    event = endpoint.receive(json.dumps([4, out.unique_id, "InternalError", "", {}]))
    assert isinstance(event, ErrorReceived) and event.reason == "InternalError"
    assert not event.invalid                            # the CSMS's own CALLERROR
    endpoint.send_call("Heartbeat", {})
    out = endpoint.next_call(NOW, True, Queue())
    event = endpoint.receive(json.dumps([3, out.unique_id, {"currentTime": 5}]))
    assert isinstance(event, ErrorReceived) and event.out is out
    assert event.invalid and event.reason == "TypeConstraintViolation"


def test_an_answer_to_nothing_we_sent_is_dropped(endpoint):
    assert endpoint.receive(json.dumps([3, "not-ours", {}])) is None
    assert frames(endpoint) == []


def test_no_answer_by_the_deadline_expires_the_call(endpoint):
    endpoint.send_call("Heartbeat", {})
    out = endpoint.next_call(NOW, True, Queue())
    assert endpoint.expire(NOW + 29) is None
    assert endpoint.expire(NOW + 30) is out
    assert endpoint.inflight is None and not endpoint.busy()


def test_a_csms_call_is_an_event_and_its_answer_a_frame(endpoint):
    event = endpoint.receive(json.dumps([2, "c1", "ClearCache", {}]))
    assert isinstance(event, CallReceived) and event.call.action == "ClearCache"
    assert endpoint.check_call(event.call, supported=True) is None
    endpoint.answer("c1", "ClearCache", {"status": "Accepted"})
    assert frames(endpoint) == [[3, "c1", {"status": "Accepted"}]]


@pytest.mark.parametrize("call, supported, code", [
    ([2, "c2", "FlyToTheMoon", {}], True, "NotImplemented"),
    ([2, "c3", "GetDiagnostics", {"location": "ftp://x"}], False, "NotSupported"),
    ([2, "c4", "ClearCache", {"unexpected": 1}], True, "FormationViolation"),
    ([2, "c6", "ChangeAvailability", {"connectorId": 1}], True,
     "OccurenceConstraintViolation"),
    ([2, "c5", "ChangeAvailability", {"connectorId": "one", "type": "Operative"}], True,
     "TypeConstraintViolation"),
])
def test_a_call_that_cannot_be_handled_says_which_callerror(endpoint, call, supported, code):
    event = endpoint.receive(json.dumps(call))
    error = endpoint.check_call(event.call, supported)
    assert error is not None and error.code == code


def test_a_malformed_frame_is_answered_here_and_reported_as_malformed(endpoint):
    event = endpoint.receive('[2, "m1", "Heartbeat", {')
    answer = frames(endpoint)
    assert answer[0][:2] == [4, "m1"] and answer[0][2] in ("FormationViolation",
                                                            "ProtocolError")
    assert event == MalformedFrame(answer[0][2], answered=True)
    assert endpoint.stats["errors_answered"] == 1
    event = endpoint.receive("not json at all")
    assert frames(endpoint) == []                       # no unique id: nothing to answer
    assert isinstance(event, MalformedFrame) and not event.answered


def test_the_reports_that_open_a_connection_go_before_the_transaction_queue(endpoint):
    queue = Queue("MeterValues")
    endpoint.send_call("StatusNotification", {"connectorId": 1, "errorCode": "NoError",
                                              "status": "Available"}, lane=CONNECTION)
    assert endpoint.next_call(NOW, True, queue).action == "StatusNotification"


def test_calls_and_transaction_messages_take_turns(endpoint):
    """A transaction message passed over by a CALL goes next: neither side waits for a
    flood of the other."""
    queue = Queue("MeterValues", "MeterValues")
    sent = []
    for i in range(3):
        endpoint.send_call("DataTransfer", {"vendorId": f"v{i}"})
    while True:
        out = endpoint.next_call(NOW, True, queue)
        if out is None:
            break
        sent.append(out.action)
        endpoint.receive(json.dumps([3, out.unique_id, {"status": "Accepted"}
                                     if out.action == "DataTransfer" else {}]))
    assert sent == ["DataTransfer", "MeterValues", "DataTransfer", "MeterValues",
                    "DataTransfer"]


def test_an_authorize_goes_before_other_calls(endpoint):
    endpoint.send_call("DataTransfer", {"vendorId": "v"})
    endpoint.send_call("Authorize", {"idTag": "T"}, lane=DRIVER)
    assert endpoint.next_call(NOW, True, Queue()).action == "Authorize"


def test_before_acceptance_only_what_may_go_then_leaves(endpoint):
    queue = Queue("MeterValues")
    endpoint.send_call("Heartbeat", {})
    endpoint.send_call("BootNotification", {"chargePointVendor": "v", "chargePointModel": "m"},
                       before_accept=True, lane=CONNECTION)
    assert endpoint.next_call(NOW, False, queue).action == "BootNotification"
    endpoint.receive(json.dumps([3, endpoint.inflight.unique_id, {
        "status": "Pending", "currentTime": "2026-06-01T00:00:00Z", "interval": 10}]))
    assert endpoint.next_call(NOW, False, queue) is None    # neither the heartbeat nor a tx
    assert queue.waiting


def test_offline_a_call_fails_at_once_and_a_lost_link_returns_what_waited():
    endpoint = RpcEndpoint()
    failures = []
    assert not endpoint.send_call("Heartbeat", {}, on_error=failures.append)
    assert failures == ["offline"]
    endpoint.connection_made()
    endpoint.send_call("Heartbeat", {})
    endpoint.send_call("DataTransfer", {"vendorId": "v"})
    inflight = endpoint.next_call(NOW, True, Queue())
    dropped = endpoint.connection_lost()
    assert dropped[0] is inflight and [o.action for o in dropped] == ["Heartbeat",
                                                                        "DataTransfer"]
    assert not endpoint.busy() and not endpoint.connected


def test_the_queue_bound_fails_a_call_at_once(endpoint):
    failures = []
    for i in range(endpoint.calls.bound):
        assert endpoint.send_call("DataTransfer", {"vendorId": f"v{i}"})
    assert not endpoint.send_call("DataTransfer", {"vendorId": "one too many"},
                                  on_error=failures.append)
    assert failures == ["queue full"]


def test_frames_in_the_log_never_show_the_authorization_key(endpoint, caplog):
    endpoint.log_frames = True
    caplog.set_level("INFO", logger="chargepoint.rpc")
    endpoint.receive(json.dumps([2, "k1", "ChangeConfiguration",
                                 {"key": "authorizationKEY", "value": "s3cr3t-key"}]))
    assert "s3cr3t-key" not in caplog.text and "***" in caplog.text
