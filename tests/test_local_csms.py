"""Tests of the bundled local Central System, driven by a bare websocket-client charge point.

Every end-to-end test of the firmware trusts this server to answer, observe and misbehave
exactly as configured, so its own behaviour is pinned down here over real loopback sockets.
"""
from __future__ import annotations

import base64
import concurrent.futures
import itertools
import json
import os
import queue
import re
import signal
import ssl
import subprocess
import sys
import threading
from datetime import datetime, timezone
from pathlib import Path

import pytest
import trustme
import websocket
from ocpp.exceptions import GenericError, NotSupportedError

from chargepoint.csms import (
    CP_ACTIONS,
    NO_RESPONSE,
    LocalCsms,
    SchemaViolation,
    UnknownErrorCode,
    format_summary,
    read_log,
)

pytestmark = pytest.mark.timeout(60)

ROOT = Path(__file__).resolve().parents[1]
BOOT = {"chargePointVendor": "Acme", "chargePointModel": "AC-22"}
# Negative checks ("nothing arrives") wait this long; positive waits use generous bounds.
SILENCE = 0.4


class Client:
    """A minimal OCPP-J charge point: raw frames over websocket-client."""

    def __init__(self, url: str, subprotocols=("ocpp1.6",), **kwargs):
        self.ws = websocket.create_connection(url, subprotocols=list(subprotocols) or None, timeout=5, **kwargs)
        self._ids = itertools.count(1)

    def send(self, frame) -> None:
        self.ws.send(frame if isinstance(frame, str) else json.dumps(frame))

    def recv(self, timeout: float = 5.0):
        self.ws.settimeout(timeout)
        return json.loads(self.ws.recv())

    def call(self, action: str, payload: dict, timeout: float = 5.0) -> list:
        """Send a CALL and return the CALLRESULT/CALLERROR frame answering it."""
        uid = f"cp-{next(self._ids)}"
        self.send([2, uid, action, payload])
        frame = self.recv(timeout)
        assert frame[1] == uid, frame
        return frame

    def assert_silent(self, seconds: float = SILENCE) -> None:
        self.ws.settimeout(seconds)
        with pytest.raises(websocket.WebSocketTimeoutException):
            self.ws.recv()

    def assert_closed(self, timeout: float = 5.0) -> None:
        """The server closed the connection (close frame, or TCP reset/EOF)."""
        self.ws.settimeout(timeout)
        try:
            data = self.ws.recv()
        except (websocket.WebSocketConnectionClosedException, OSError):
            data = ""
        finally:
            self.ws.shutdown()  # websocket-client keeps the socket open after answering a close
        assert data == "", f"expected the connection to close, got {data!r}"

    def close(self) -> None:
        self.ws.close(timeout=1)
        self.ws.shutdown()


@pytest.fixture
def csms():
    server = LocalCsms().start()
    yield server
    server.stop()


@pytest.fixture
def connect(csms):
    clients = []

    def _connect(cp_id: str = "CP-1", server: LocalCsms | None = None, **kwargs) -> Client:
        server = server or csms
        client = Client(server.url_for(cp_id), **kwargs)
        clients.append(client)
        server.wait_connected(cp_id, timeout=5)
        return client

    yield _connect
    for client in clients:
        try:
            client.ws.close(timeout=0.5)
        except (OSError, websocket.WebSocketException):
            pass
        client.ws.shutdown()


@pytest.fixture
def background():
    with concurrent.futures.ThreadPoolExecutor(max_workers=2) as pool:
        yield pool


def _basic(user: str, password: str) -> str:
    return "Authorization: Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


# ---- handshake ------------------------------------------------------------------------------

def test_url_and_ephemeral_port(csms):
    assert csms.port > 0
    assert csms.url == f"ws://127.0.0.1:{csms.port}/ocpp"
    assert csms.url_for("CP 1") == f"ws://127.0.0.1:{csms.port}/ocpp/CP%201"


def test_cp_id_comes_from_last_path_segment(csms, connect):
    client = connect("CP 1")
    assert client.ws.getsubprotocol() == "ocpp1.6"
    assert csms.connected("CP 1") and csms.connection_count("CP 1") == 1
    assert csms.handshakes[-1].cp_id == "CP 1" and csms.handshakes[-1].status == 101
    assert csms.handshakes[-1].subprotocols == ("ocpp1.6",)


def test_path_without_charge_point_id_is_404(csms):
    for path in ("/ocpp", "/ocpp/", "/other/CP-1"):
        with pytest.raises(websocket.WebSocketBadStatusException) as refused:
            Client(f"ws://127.0.0.1:{csms.port}{path}")
        assert refused.value.status_code == 404


def test_client_without_ocpp16_subprotocol_is_refused(csms):
    for offered in ((), ("ocpp2.0.1",)):
        with pytest.raises(websocket.WebSocketBadStatusException) as refused:
            Client(csms.url_for("CP-1"), subprotocols=offered)
        assert refused.value.status_code == 400
    assert [h.status for h in csms.handshakes] == [400, 400]
    assert csms.handshakes[1].subprotocols == ("ocpp2.0.1",)
    assert csms.connection_count("CP-1") == 0


def test_server_that_does_not_agree_to_ocpp16():
    with LocalCsms(subprotocols=()) as server:
        # A client asking for ocpp1.6 gets a 101 without the subprotocol and must give up.
        with pytest.raises(websocket.WebSocketException):
            Client(server.url_for("CP-1"))
        assert server.handshakes[0].status == 101
        assert server.handshakes[0].subprotocols == ("ocpp1.6",)
        bare = Client(server.url_for("CP-2"), subprotocols=())
        assert bare.ws.getsubprotocol() is None
        assert "sec-websocket-protocol" not in bare.ws.getheaders()
        bare.close()


def test_basic_auth_refuses_missing_or_wrong_credentials():
    with LocalCsms(basic_auth={"CP-1": "secret-key"}) as server:
        attempts = [
            [],
            [_basic("CP-1", "wrong")],
            [_basic("CP-2", "secret-key")],
            ["Authorization: Bearer secret-key"],
        ]
        for header in attempts:
            with pytest.raises(websocket.WebSocketBadStatusException) as refused:
                Client(server.url_for("CP-1"), header=header)
            assert refused.value.status_code == 401
            assert "basic" in refused.value.resp_headers.get("www-authenticate", "").lower()
        assert server.connection_count("CP-1") == 0
        assert [h.user for h in server.handshakes] == [None, "CP-1", "CP-2", None]
        assert all(h.status == 401 for h in server.handshakes)


def test_basic_auth_accepts_right_credentials_and_can_change_at_runtime():
    with LocalCsms(basic_auth={"CP-1": "secret-key"}) as server:
        client = Client(server.url_for("CP-1"), header=[_basic("CP-1", "secret-key")])
        server.wait_connected("CP-1")
        assert server.handshakes[-1].user == "CP-1"
        assert client.call("Heartbeat", {})[0] == 3
        client.close()
        server.basic_auth = {"CP-1": "new-key"}  # e.g. after ChangeConfiguration AuthorizationKey
        with pytest.raises(websocket.WebSocketBadStatusException):
            Client(server.url_for("CP-1"), header=[_basic("CP-1", "secret-key")])
        Client(server.url_for("CP-1"), header=[_basic("CP-1", "new-key")]).close()
        assert server.connection_count("CP-1") == 2


# ---- TLS ------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def ca():
    return trustme.CA()


def _server_context(ca, require_client_cert=False):
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1", "localhost").configure_cert(context)
    if require_client_cert:
        context.verify_mode = ssl.CERT_REQUIRED
        ca.configure_trust(context)
    return context


def _client_context(ca, cert=None):
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
    ca.configure_trust(context)
    if cert is not None:
        cert.configure_cert(context)
    return context


def test_tls_server_certificate(ca):
    with LocalCsms(ssl_context=_server_context(ca)) as server:
        assert server.url.startswith("wss://127.0.0.1:")
        client = Client(server.url_for("CP-1"), sslopt={"context": _client_context(ca)})
        assert client.call("BootNotification", BOOT)[2]["status"] == "Accepted"
        assert server.peer_subject("CP-1") is None  # no client certificate asked for
        # A client that does not trust the CA must not get in.
        with pytest.raises(ssl.SSLError):
            Client(server.url_for("CP-2"), sslopt={"context": _client_context(trustme.CA())})
        client.close()


def test_mutual_tls_requires_a_client_certificate(ca):
    with LocalCsms(ssl_context=_server_context(ca, require_client_cert=True)) as server:
        with pytest.raises((OSError, websocket.WebSocketException)):
            Client(server.url_for("CP-1"), sslopt={"context": _client_context(ca)})
        assert server.connection_count("CP-1") == 0

        cert = ca.issue_cert("CP-1", common_name="CP-1", organization_name="Acme Charging")
        client = Client(server.url_for("CP-1"), sslopt={"context": _client_context(ca, cert)})
        server.wait_connected("CP-1")
        assert client.call("Heartbeat", {})[0] == 3
        subject = server.peer_subject("CP-1")
        assert subject["commonName"] == "CP-1"
        assert subject["organizationName"] == "Acme Charging"
        client.close()


# ---- answers to the charge point's CALLs -----------------------------------------------------

def _parse_time(text: str) -> datetime:
    assert text.endswith("Z"), text
    return datetime.fromisoformat(text[:-1] + "+00:00")


def test_boot_default_answer_and_record(csms, connect):
    client = connect()
    before = datetime.now(timezone.utc)
    kind, uid, result = client.call("BootNotification", BOOT)
    assert kind == 3
    assert result["status"] == "Accepted" and result["interval"] == 300
    assert abs((_parse_time(result["currentTime"]) - before).total_seconds()) < 5

    record = csms.wait_for("BootNotification")
    assert (record.cp_id, record.action, record.unique_id, record.index) == ("CP-1", "BootNotification", uid, 0)
    assert record.payload == BOOT and record["chargePointModel"] == "AC-22"
    assert record.reply == result and record.error is None and record.violation is None
    assert [(e.direction, json.loads(e.text)[0]) for e in csms.log] == [("in", 2), ("out", 3)]
    csms.assert_no_violations()


def test_boot_response_callable_rejects_then_accepts(csms, connect):
    seen = []

    def boot(cp_id, payload):
        seen.append((cp_id, payload))
        if len(seen) == 1:
            return {"status": "Rejected", "interval": 7}
        return {"status": "Accepted", "interval": 10, "currentTime": "2030-01-01T00:00:00Z"}

    csms.boot_response = boot
    client = connect()
    first = client.call("BootNotification", BOOT)[2]
    second = client.call("BootNotification", BOOT)[2]
    assert first["status"] == "Rejected" and first["interval"] == 7 and "currentTime" in first
    assert second == {"status": "Accepted", "interval": 10, "currentTime": "2030-01-01T00:00:00Z"}
    assert seen == [("CP-1", BOOT), ("CP-1", BOOT)]


def test_transaction_knobs(csms, connect):
    client = connect()
    start = {"connectorId": 1, "idTag": "TAG1", "meterStart": 0, "timestamp": "2024-01-01T00:00:00Z"}
    assert client.call("Authorize", {"idTag": "TAG1"})[2] == {"idTagInfo": {"status": "Accepted"}}
    assert client.call("StartTransaction", start)[2] == {"idTagInfo": {"status": "Accepted"}, "transactionId": 1}
    assert client.call("StartTransaction", start)[2]["transactionId"] == 2
    stop = {"transactionId": 2, "meterStop": 10, "timestamp": "2024-01-01T01:00:00Z"}
    assert client.call("StopTransaction", stop)[2] == {}
    assert client.call("StopTransaction", {**stop, "idTag": "TAG1"})[2] == {"idTagInfo": {"status": "Accepted"}}
    assert client.call("DataTransfer", {"vendorId": "x"})[2] == {"status": "UnknownVendorId"}
    assert client.call("Heartbeat", {})[2].keys() == {"currentTime"}

    csms.authorize_response = {"idTagInfo": {"status": "Invalid"}}
    csms.start_transaction_response = lambda cp_id, p: {"idTagInfo": {"status": "Blocked"}}
    csms.stop_transaction_response = {"idTagInfo": {"status": "Expired"}}
    csms.data_transfer_response = {"status": "Accepted", "data": "ok"}
    assert client.call("Authorize", {"idTag": "TAG2"})[2] == {"idTagInfo": {"status": "Invalid"}}
    assert client.call("StartTransaction", start)[2] == {"idTagInfo": {"status": "Blocked"}, "transactionId": 3}
    assert client.call("StopTransaction", stop)[2] == {"idTagInfo": {"status": "Expired"}}
    assert client.call("DataTransfer", {"vendorId": "x"})[2] == {"status": "Accepted", "data": "ok"}
    csms.assert_no_violations()


NOW = "2024-01-01T00:00:00Z"
VALID_CALLS = {
    "Authorize": {"idTag": "T"},
    "BootNotification": BOOT,
    "DataTransfer": {"vendorId": "v"},
    "DiagnosticsStatusNotification": {"status": "Uploaded"},
    "FirmwareStatusNotification": {"status": "Installed"},
    "Heartbeat": {},
    "MeterValues": {"connectorId": 1, "meterValue": [{"timestamp": NOW, "sampledValue": [{"value": "1"}]}]},
    "StartTransaction": {"connectorId": 1, "idTag": "T", "meterStart": 0, "timestamp": NOW},
    "StatusNotification": {"connectorId": 1, "errorCode": "NoError", "status": "Charging"},
    "StopTransaction": {"transactionId": 1, "meterStop": 5, "timestamp": NOW},
    "SecurityEventNotification": {"type": "StartupOfTheDevice", "timestamp": NOW},
    "SignCertificate": {"csr": "-----BEGIN CERTIFICATE REQUEST-----"},
    "LogStatusNotification": {"status": "Uploaded", "requestId": 1},
    "SignedFirmwareStatusNotification": {"status": "Installed", "requestId": 1},
}


def test_every_charge_point_action_gets_a_valid_answer(csms, connect):
    assert set(VALID_CALLS) == set(CP_ACTIONS)
    client = connect()
    for action, payload in VALID_CALLS.items():
        frame = client.call(action, payload)
        assert frame[0] == 3, frame
    assert [r.action for r in csms.received] == list(VALID_CALLS)
    csms.assert_no_violations()


def test_handlers_override_and_inject_callerrors(csms, connect):
    client = connect()
    csms.handlers["Heartbeat"] = lambda cp_id, p: {"currentTime": "2031-02-03T04:05:06Z"}
    assert client.call("Heartbeat", {})[2] == {"currentTime": "2031-02-03T04:05:06Z"}

    def fail(cp_id, payload):
        raise GenericError(description="try later")

    csms.handlers["MeterValues"] = fail
    sample = {"timestamp": "2024-01-01T00:00:00Z", "sampledValue": [{"value": "1"}]}
    frame = client.call("MeterValues", {"connectorId": 1, "meterValue": [sample]})
    assert frame[0] == 4 and frame[2:4] == ["GenericError", "try later"]
    assert csms.records("MeterValues")[0].error == ("GenericError", "try later")
    assert not csms.violations  # an injected CALLERROR is not the charge point's fault

    csms.handlers["Authorize"] = lambda cp_id, p: None  # observe only: default answer
    assert client.call("Authorize", {"idTag": "A"})[2] == {"idTagInfo": {"status": "Accepted"}}

    csms.handlers["DataTransfer"] = lambda cp_id, p: 1 / 0  # a broken handler
    assert client.call("DataTransfer", {"vendorId": "v"})[2] == "InternalError"


def test_respond_false_swallows_calls(csms, connect):
    client = connect()
    csms.respond = False
    uid = "silent-1"
    client.send([2, uid, "Heartbeat", {}])
    client.assert_silent()
    assert csms.wait_for("Heartbeat").unique_id == uid
    assert csms.records("Heartbeat")[0].reply is None

    csms.respond = {"Heartbeat": False}
    client.send([2, "silent-2", "Heartbeat", {}])
    status = {"connectorId": 0, "errorCode": "NoError", "status": "Available"}
    assert client.call("StatusNotification", status)[0] == 3  # the next frame answers this, not the Heartbeat

    csms.respond = True
    answers = iter([NO_RESPONSE, None])
    csms.handlers["Heartbeat"] = lambda cp_id, p: next(answers)
    client.send([2, "once", "Heartbeat", {}])
    assert client.call("Heartbeat", {})[0] == 3
    assert [r.reply is not None for r in csms.records("Heartbeat")] == [False, False, False, True]


def test_schema_violations_by_the_charge_point_are_visible(csms, connect):
    client = connect()
    frame = client.call("BootNotification", {"chargePointVendor": "Acme"})
    assert frame[0] == 4 and frame[2] == "ProtocolError"
    frame = client.call("StatusNotification", {"connectorId": 1, "errorCode": "NoError", "status": "Busy"})
    assert frame[0] == 4
    frame = client.call("Heartbeat", {"extra": 1})
    assert frame[0] == 4 and frame[2] == "FormatViolation"
    frame = client.call("FlyToTheMoon", {})
    assert frame[0] == 4 and frame[2] in ("NotImplemented", "NotSupported")
    client.send("{not json")
    client.send([3, {"unhashable": "id"}, {}])
    assert client.call("Heartbeat", {})[0] == 3  # the connection survives all of it

    assert [v.action for v in csms.violations] == [
        "BootNotification", "StatusNotification", "Heartbeat", "FlyToTheMoon", None, None,
    ]
    assert "chargePointModel" in csms.violations[0].description
    assert csms.records("BootNotification")[0].violation.startswith("ProtocolError")
    with pytest.raises(AssertionError, match="chargePointModel"):
        csms.assert_no_violations()


def test_validation_can_be_switched_off(csms, connect):
    client = connect()
    csms.validate = False
    assert client.call("Heartbeat", {"vendorExtra": True})[0] == 3
    assert not csms.violations


# ---- CSMS-initiated calls -------------------------------------------------------------------

def test_call_round_trip_while_the_charge_point_calls_too(csms, connect, background):
    client = connect()
    pending = background.submit(csms.call, "CP-1", "ChangeConfiguration", {"key": "HeartbeatInterval", "value": "10"})
    request = client.recv()
    assert request[0] == 2 and request[2:] == ["ChangeConfiguration", {"key": "HeartbeatInterval", "value": "10"}]
    # Both directions at once: the charge point's own CALL is answered while ours is pending.
    assert client.call("Heartbeat", {})[0] == 3
    assert not pending.done()
    client.send([3, request[1], {"status": "Accepted"}])
    assert pending.result(timeout=5) == {"status": "Accepted"}


def test_call_maps_callerrors_to_exceptions(csms, connect, background):
    client = connect()
    pending = background.submit(csms.call, "CP-1", "Reset", {"type": "Soft"})
    request = client.recv()
    client.send([4, request[1], "NotSupported", "no reset here", {}])
    with pytest.raises(NotSupportedError) as raised:
        pending.result(timeout=5)
    assert raised.value.code == "NotSupported" and raised.value.description == "no reset here"

    pending = background.submit(csms.call, "CP-1", "ClearCache", {})
    client.send([4, client.recv()[1], "VendorSpecificError", "?", {}])
    with pytest.raises(UnknownErrorCode) as raised:
        pending.result(timeout=5)
    assert raised.value.code == "VendorSpecificError"


def test_call_validates_both_ways_unless_told_not_to(csms, connect, background):
    client = connect()
    with pytest.raises(SchemaViolation):
        csms.call("CP-1", "ChangeConfiguration", {"key": "HeartbeatInterval"})
    assert len(csms.log) == 0  # refused before sending

    pending = background.submit(csms.call, "CP-1", "ChangeConfiguration", {"key": "K"}, 5, False)
    request = client.recv()
    assert request[3] == {"key": "K"}
    client.send([3, request[1], {"status": "Whatever"}])
    assert pending.result(timeout=5) == {"status": "Whatever"}

    pending = background.submit(csms.call, "CP-1", "ClearCache", {})
    client.send([3, client.recv()[1], {"status": "Maybe"}])
    with pytest.raises(SchemaViolation):
        pending.result(timeout=5)
    assert csms.violations[-1].action == "ClearCache"


def test_call_timeout_and_disconnect(csms, connect, background):
    client = connect()
    with pytest.raises(TimeoutError, match="ClearCache"):
        csms.call("CP-1", "ClearCache", {}, timeout=0.3)
    pending = background.submit(csms.call, "CP-1", "ClearCache", {})
    client.recv()
    client.close()
    with pytest.raises(ConnectionError):
        pending.result(timeout=5)
    with pytest.raises(ConnectionError):
        csms.call("CP-1", "ClearCache", {})


def test_send_raw_returns_the_next_answer_frame(csms, connect, background):
    client = connect()
    pending = background.submit(csms.send_raw, "CP-1", "[2, oops")
    assert client.ws.recv() == "[2, oops"
    # A CALL in between is answered by the CSMS and skipped by send_raw.
    assert client.call("Heartbeat", {})[0] == 3
    client.send([4, "", "FormationViolation", "bad JSON", {}])
    assert pending.result(timeout=5) == [4, "", "FormationViolation", "bad JSON", {}]

    assert csms.send_raw("CP-1", '[2,"x","NoSuchAction",{}]', expect_reply=False) is None
    assert client.recv() == [2, "x", "NoSuchAction", {}]
    with pytest.raises(TimeoutError):
        csms.send_raw("CP-1", "[5]", timeout=0.3)


def test_drop_is_seen_by_the_charge_point(csms, connect):
    client = connect()
    assert csms.drop("CP-1") is True
    assert not csms.connected("CP-1")
    client.assert_closed()
    assert csms.drop("CP-1") is False


def test_new_connection_replaces_the_old_one(csms, connect):
    first = connect()
    second = Client(csms.url_for("CP-1"))
    csms.wait_connected("CP-1", count=2)
    first.assert_closed()
    assert second.call("Heartbeat", {})[0] == 3
    assert csms.connected("CP-1")
    second.close()
    csms.wait_disconnected("CP-1")


# ---- observation ----------------------------------------------------------------------------

def test_wait_for_with_predicate_after_and_cp_id(csms, connect):
    one, two = connect("CP-1"), connect("CP-2")
    for connector in (0, 1, 2):
        one.call("StatusNotification", {"connectorId": connector, "errorCode": "NoError", "status": "Available"})
    two.call("StatusNotification", {"connectorId": 1, "errorCode": "GroundFailure", "status": "Faulted"})

    assert csms.wait_for("StatusNotification", lambda r: r["connectorId"] == 2).index == 2
    assert csms.wait_for("StatusNotification", after=1).index == 1
    assert csms.wait_for("StatusNotification", cp_id="CP-2")["status"] == "Faulted"
    assert csms.wait_for(("Heartbeat", "StatusNotification"), after=3).cp_id == "CP-2"
    assert [r.index for r in csms.records("StatusNotification", cp_id="CP-1")] == [0, 1, 2]
    assert len(csms.received) == 4

    with pytest.raises(TimeoutError) as missing:
        csms.wait_for("StartTransaction", timeout=0.2)
    assert "StartTransaction" in str(missing.value) and "[3] CP-2 StatusNotification" in str(missing.value)


def test_wait_for_wakes_up_on_arrival(csms, connect, background):
    client = connect()
    waiting = background.submit(csms.wait_for, "Heartbeat", None, 10)
    client.call("Heartbeat", {})
    assert waiting.result(timeout=5).action == "Heartbeat"


def test_restart_listens_again_on_the_same_port(csms, connect, background):
    client = connect()
    port = csms.port
    closed = background.submit(client.assert_closed)  # reading, so the close handshake completes
    csms.restart()
    assert csms.port == port
    closed.result(timeout=5)
    again = Client(csms.url_for("CP-1"))
    assert csms.wait_connected("CP-1", count=2) == 2
    assert again.call("Heartbeat", {})[0] == 3
    again.close()


def test_stop_without_close_handshake(csms, connect):
    client = connect()
    csms.stop(graceful=False)
    client.assert_closed()
    csms.start()
    Client(csms.url_for("CP-1")).close()
    assert csms.connection_count("CP-1") == 2


def test_answer_pings_false_suppresses_pongs(csms, connect):
    client = connect()
    client.ws.ping(b"probe-1")
    client.ws.settimeout(5)
    opcode, frame = client.ws.recv_data_frame(control_frame=True)
    assert opcode == websocket.ABNF.OPCODE_PONG and frame.data == b"probe-1"

    csms.answer_pings = False
    client.ws.ping(b"probe-2")
    client.ws.settimeout(SILENCE)
    with pytest.raises(websocket.WebSocketTimeoutException):
        client.ws.recv_data_frame(control_frame=True)
    assert client.call("Heartbeat", {})[0] == 3  # only pongs are withheld

    csms.answer_pings = True
    client.ws.ping(b"probe-3")
    client.ws.settimeout(5)
    opcode, frame = client.ws.recv_data_frame(control_frame=True)
    assert opcode == websocket.ABNF.OPCODE_PONG and frame.data == b"probe-3"


def test_log_path_gets_one_flushed_json_line_per_message(tmp_path, connect):
    path = tmp_path / "csms.jsonl"
    with LocalCsms(log_path=str(path)) as server:
        client = connect(server=server)
        client.call("BootNotification", BOOT)
        client.send("not json")
        client.call("Heartbeat", {})
        lines = read_log(str(path))  # readable while running: flushed per line
        client.close()
    assert lines[0]["event"] == "connected" and lines[0]["cp_id"] == "CP-1"
    frames = [line for line in lines if "direction" in line]
    assert [(f["direction"], (f["message"] or [None, None, None])[0]) for f in frames] == [
        ("in", 2), ("out", 3), ("in", None), ("in", 2), ("out", 3),
    ]
    assert frames[0]["message"][2:] == ["BootNotification", BOOT]
    assert frames[2]["raw"] == "not json"
    _parse_time(frames[0]["time"])


# ---- human-readable output ------------------------------------------------------------------

def test_format_summary():
    when = datetime(2024, 1, 1, 12, 0, 1)
    assert format_summary("in", "CP-1", "BootNotification", BOOT, when=when) == (
        "12:00:01  CP-1 → BootNotification  vendor=Acme model=AC-22"
    )
    assert format_summary("out", "CP-1", "BootNotification", {"status": "Accepted", "interval": 10,
                                                               "currentTime": "x"}, kind="result", when=when) == (
        "12:00:01  CP-1 ← BootNotification.conf Accepted interval=10s"
    )
    status = {"connectorId": 1, "errorCode": "NoError", "status": "Available"}
    assert format_summary("in", "CP-1", "StatusNotification", status, when=when).endswith(
        "StatusNotification  connector 1: Available"
    )
    meter = {"connectorId": 1, "transactionId": 5, "meterValue": [{"timestamp": "t", "sampledValue": [
        {"value": "1234"},
        {"value": "7200", "measurand": "Power.Active.Import", "unit": "W"},
    ]}]}
    assert format_summary("in", "CP-1", "MeterValues", meter, when=when).endswith(
        "MeterValues  connector 1 transaction 5: 1234 Wh, 7.2 kW"
    )
    started = {"idTagInfo": {"status": "Accepted"}, "transactionId": 1}
    assert format_summary("out", "CP-1", "StartTransaction", started, kind="result", when=when).endswith(
        "StartTransaction.conf Accepted, transaction id 1"
    )
    error = {"errorCode": "NotSupported", "errorDescription": "nope"}
    assert format_summary("in", "CP-1", "Reset", error, kind="error", when=when).endswith(
        "CP-1 → Reset CALLERROR NotSupported: nope"
    )


def test_printer_gets_one_line_per_message(connect):
    lines: queue.Queue[str] = queue.Queue()
    with LocalCsms(printer=lines.put) as server:
        client = connect(server=server)
        client.call("BootNotification", BOOT)
        printed = [lines.get(timeout=5) for _ in range(4)]
        client.close()
    assert "listening on" in printed[0]
    assert printed[1].endswith("CP-1 connected (ocpp1.6)")
    assert printed[2].endswith("CP-1 → BootNotification  vendor=Acme model=AC-22")
    assert printed[3].endswith("CP-1 ← BootNotification.conf Accepted interval=300s")


def test_standalone_module_runs_until_ctrl_c():
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    command = [sys.executable, "-m", "chargepoint.csms", "--port", "0", "--heartbeat", "30"]
    with subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          text=True) as proc:
        lines: queue.Queue[str] = queue.Queue()
        reader = threading.Thread(target=lambda: [lines.put(line) for line in proc.stdout], daemon=True)
        reader.start()
        try:
            match = re.search(r"(ws://\S+)/<chargePointId>", lines.get(timeout=20))
            assert match, "no listening line"
            client = Client(match.group(1) + "/CP-9")
            assert client.call("BootNotification", BOOT)[2]["interval"] == 30
            client.close()
            wanted = "CP-9 → BootNotification  vendor=Acme model=AC-22"
            while wanted not in lines.get(timeout=10):
                pass
            proc.send_signal(signal.SIGINT)
            assert proc.wait(timeout=20) == 0
            reader.join(timeout=5)
            assert "Traceback" not in proc.stderr.read()
        finally:
            if proc.poll() is None:
                proc.kill()
