"""The OCPP-J link: malformed input, reconnects, pings, authentication and TLS."""
import json
import logging
import ssl

import pytest

from chargepoint.csms.server import LocalCsms
from tests.harness import Firmware, wait_until


@pytest.fixture
def booted(csms, firmware):
    fw = firmware()
    csms.wait_for("StatusNotification", lambda r: r["connectorId"] == 1)
    fw.settle()
    return fw


MALFORMED = [
    # (frame, expected CALLERROR code)
    ('[2,"m1","GetConfiguration",{"key":["HeartbeatInterval"]', "FormationViolation"),
    ('[2,"m2","GetConfiguration"]', "ProtocolError"),
    ('[2,"m3","GetConfiguration",[]]', "FormationViolation"),
    ('[7,"m4","GetConfiguration",{}]', "FormationViolation"),
    ('[2,"m5","MakeCoffee",{}]', "NotImplemented"),
    ('[2,"m6","Heartbeat",{}]', "NotSupported"),
    ('[2,"m7","GetConfiguration",{"key":"HeartbeatInterval"}]', "TypeConstraintViolation"),
    ('[2,"m8","ChangeConfiguration",{"key":"HeartbeatInterval"}]',
     "OccurenceConstraintViolation"),
    ('[2,"m9","TriggerMessage",{"requestedMessage":"Coffee"}]', "PropertyConstraintViolation"),
    ('[2,"m10","ChangeConfiguration",{"key":"HeartbeatInterval","value":"5","x":1}]',
     "FormationViolation"),
    ('[2,"m11","ChangeConfiguration",{"key":"' + "K" * 60 + '","value":"5"}]',
     "PropertyConstraintViolation"),
]


@pytest.mark.parametrize("frame,code", MALFORMED, ids=[c for _, c in MALFORMED])
def test_malformed_call_gets_the_right_callerror_and_link_stays_up(csms, booted, frame, code):
    reply = csms.send_raw("CP-1", frame)
    uid = json.loads(frame.split(",")[1]) if frame.startswith("[") else None
    assert reply[0] == 4 and reply[1] == uid and reply[2] == code, reply
    # Still connected, still answering.
    assert csms.call("CP-1", "GetConfiguration", {"key": ["HeartbeatInterval"]})
    assert csms.connection_count("CP-1") == 1


@pytest.mark.parametrize("frame", [
    "not json at all",
    "[]",
    '{"a": 1}',
    '[3,"no-such-call",{}]',
    '[4,"no-such-call","GenericError","",{}]',
    '[3]',
    "[" * 100000,
])
def test_unanswerable_frames_are_dropped_without_harm(csms, booted, frame):
    csms.send_raw("CP-1", frame, expect_reply=False)
    assert csms.call("CP-1", "GetConfiguration", {"key": ["HeartbeatInterval"]})
    assert csms.connection_count("CP-1") == 1


def test_huge_frame_is_refused_not_parsed(csms, booted):
    big = '[2,"huge","DataTransfer",{"vendorId":"x","data":"' + "A" * 300_000 + '"}]'
    reply = csms.send_raw("CP-1", big)
    assert reply[:3] == [4, "huge", "FormationViolation"]
    assert csms.call("CP-1", "GetConfiguration", {"key": ["HeartbeatInterval"]})


def test_a_frame_far_beyond_the_limit_ends_the_link_unread(csms, booted, caplog):
    """A frame announcing more than FRAME_CAP_FACTOR x max_frame_bytes is refused from its
    header, before its payload is read into memory; the charger connects again and keeps
    working."""
    monster = '[2,"big","DataTransfer",{"vendorId":"x","data":"' + "A" * 24_000_000 + '"}]'
    try:
        csms.send_raw("CP-1", monster, expect_reply=False)
    except ConnectionError:
        pass                # the charger dropped the link before the CSMS finished sending
    csms.wait_connected("CP-1", count=2, timeout=10)
    assert wait_until(lambda: booted.station.rpc.connected and booted.station.services.link.accepted, 10)
    assert csms.call("CP-1", "GetConfiguration", {"key": ["HeartbeatInterval"]})
    assert "more than 1048576" in caplog.text        # 4 x the default 262144


def test_calls_from_the_csms_are_answered_while_ours_waits(csms, firmware):
    """One CALL of ours outstanding (the CSMS holds its answer); the CSMS's own CALLs are
    still answered."""
    csms.respond = {"BootNotification": False}
    fw = firmware()
    csms.wait_for("BootNotification")
    got = csms.call("CP-1", "GetConfiguration", {"key": ["NumberOfConnectors"]})
    assert got["configurationKey"][0]["value"] == "1"


def test_only_one_call_outstanding(csms, firmware):
    csms.respond = {"StatusNotification": False}
    fw = firmware({"csms": {"response_timeout_s": 20}})
    csms.wait_for("StatusNotification")
    fw.settle(0.3)
    assert [r.action for r in csms.received] == ["BootNotification", "StatusNotification"]
    csms.respond = True
    fw.advance(20)
    assert wait_until(lambda: [r.action for r in csms.received].count("StatusNotification") == 2)


def test_reconnects_after_the_csms_restarts_and_reports_status(csms, booted):
    booted_count = len(csms.received)
    csms.restart()
    assert csms.wait_connected("CP-1", timeout=10)
    sn = csms.wait_for("StatusNotification", after=booted_count, timeout=10)
    assert sn["connectorId"] == 0
    # Registration survives a reconnect: no second BootNotification in the same run.
    assert [r.action for r in csms.received].count("BootNotification") == 1


def test_reconnects_after_pong_timeout(csms, firmware):
    csms.answer_pings = False
    fw = firmware({"ocpp": {"WebSocketPingInterval": 1}, "csms": {"pong_timeout_s": 0.3}})
    csms.wait_for("StatusNotification", lambda r: r["connectorId"] == 1)
    assert wait_until(lambda: csms.connection_count("CP-1") >= 2, timeout=10)


def test_answers_the_servers_pings(tmp_path):
    """A CSMS that pings every 0.1 s and drops peers silent for 1.5 s keeps us connected
    (for twice that: a peer that never answered would be dropped by then)."""
    server = LocalCsms(port=0, ping_interval=0.1, ping_timeout=1.5)
    server.start()
    try:
        fw = Firmware(tmp_path, server.url).start()
        try:
            server.wait_for("StatusNotification", lambda r: r["connectorId"] == 1)
            assert not wait_until(lambda: server.connection_count("CP-1") > 1, timeout=3.2)
            assert server.connected("CP-1")
        finally:
            fw.stop()
    finally:
        server.stop()


def test_subprotocol_refusal_is_a_clear_error(tmp_path, caplog):
    server = LocalCsms(port=0, subprotocols=())
    server.start()
    try:
        fw = Firmware(tmp_path, server.url).start()
        try:
            with caplog.at_level(logging.ERROR, "chargepoint.transport"):
                assert wait_until(lambda: "subprotocol ocpp1.6" in caplog.text, timeout=5)
        finally:
            fw.stop()
    finally:
        server.stop()


KEY = "0123456789abcdef0123"


def test_basic_auth_accepted(tmp_path):
    server = LocalCsms(port=0, basic_auth={"CP-1": KEY})
    server.start()
    try:
        fw = Firmware(tmp_path, server.url, {"csms": {"security_profile": 1,
                                                      "authorization_key": KEY}}).start()
        try:
            server.wait_for("BootNotification")
            assert server.handshakes[-1].user == "CP-1"
        finally:
            fw.stop()
    finally:
        server.stop()


def test_basic_auth_refused_backs_off_with_a_clear_log_line(tmp_path, caplog):
    server = LocalCsms(port=0, basic_auth={"CP-1": KEY})
    server.start()
    try:
        with caplog.at_level(logging.INFO, "chargepoint"):
            fw = Firmware(tmp_path, server.url, {"csms": {
                "security_profile": 1, "authorization_key": "wrong-key-wrong-key"}}).start()
            try:
                assert wait_until(lambda: len(server.handshakes) >= 3, timeout=10)
            finally:
                fw.stop()
        assert all(h.status == 401 for h in server.handshakes)
        assert "refused our credentials (HTTP 401)" in caplog.text
        assert "wrong-key-wrong-key" not in caplog.text
        assert "reconnecting in" in caplog.text
        assert not server.received
    finally:
        server.stop()


def test_new_authorization_key_is_used_after_reconnect(tmp_path):
    new_key = "fedcba9876543210fedc"
    accepted = {"CP-1": KEY}
    server = LocalCsms(port=0, basic_auth=lambda user, pw: accepted.get(user) == pw)
    server.start()
    try:
        fw = Firmware(tmp_path, server.url, {"csms": {"security_profile": 1,
                                                      "authorization_key": KEY}}).start()
        try:
            server.wait_for("StatusNotification", lambda r: r["connectorId"] == 1)
            fw.settle()
            assert server.call("CP-1", "ChangeConfiguration",
                               {"key": "AuthorizationKey", "value": new_key}) == \
                {"status": "Accepted"}
            accepted["CP-1"] = new_key
            assert wait_until(lambda: server.connection_count("CP-1") == 2, timeout=10)
            got = server.call("CP-1", "GetConfiguration", {"key": ["AuthorizationKey"]})
            assert got["configurationKey"] == [{"key": "AuthorizationKey", "readonly": False}]
        finally:
            fw.stop()
    finally:
        server.stop()


@pytest.fixture(scope="module")
def ca():
    import trustme

    return trustme.CA()


def _tls_server(ca, require_client_cert=False, **kw):
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1", "localhost").configure_cert(ctx)
    if require_client_cert:
        ctx.verify_mode = ssl.CERT_REQUIRED
        ca.configure_trust(ctx)
    server = LocalCsms(port=0, ssl_context=ctx, **kw)
    server.start()
    return server


def test_security_profile_2_tls_with_basic_auth(tmp_path, ca):
    server = _tls_server(ca, basic_auth={"CP-1": KEY})
    ca_file = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    try:
        assert server.url.startswith("wss://")
        fw = Firmware(tmp_path, server.url, {"csms": {
            "security_profile": 2, "authorization_key": KEY, "ca_file": str(ca_file)}}).start()
        try:
            server.wait_for("BootNotification", timeout=10)
        finally:
            fw.stop()
    finally:
        server.stop()


def test_tls_server_not_signed_by_the_configured_ca_is_refused(tmp_path, ca, caplog):
    import trustme

    server = _tls_server(ca, basic_auth={"CP-1": KEY})
    other = tmp_path / "other-ca.pem"
    trustme.CA().cert_pem.write_to_path(str(other))
    try:
        with caplog.at_level(logging.ERROR, "chargepoint.transport"):
            fw = Firmware(tmp_path, server.url, {"csms": {
                "security_profile": 2, "authorization_key": KEY, "ca_file": str(other)}}).start()
            try:
                assert wait_until(lambda: "certificate is not trusted" in caplog.text, 10)
            finally:
                fw.stop()
        assert not server.received
    finally:
        server.stop()


def test_security_profile_3_client_certificate(tmp_path, ca):
    server = _tls_server(ca, require_client_cert=True)
    ca_file, cert_file, key_file = (tmp_path / n for n in ("ca.pem", "cp.pem", "cp.key"))
    ca.cert_pem.write_to_path(str(ca_file))
    client = ca.issue_cert("CP-1")
    client.cert_chain_pems[0].write_to_path(str(cert_file))
    client.private_key_pem.write_to_path(str(key_file))
    try:
        fw = Firmware(tmp_path, server.url, {"csms": {
            "security_profile": 3, "ca_file": str(ca_file), "client_cert": str(cert_file),
            "client_key": str(key_file)}}).start()
        try:
            server.wait_for("BootNotification", timeout=10)
            subject = dict(x[0] for x in server.peer_certificate("CP-1")["subject"])
            assert subject.get("commonName") == "CP-1" or subject
        finally:
            fw.stop()
    finally:
        server.stop()
