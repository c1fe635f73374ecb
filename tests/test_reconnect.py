"""Coming back to a CSMS that refused: Retry-After honoured within the back-off bounds, and
every failed attempt reaching the log, one summary line at most per interval. (The real
process against a CSMS that answers 503: tests/test_hostile.py.)"""
import email.utils
import logging

from hypothesis import given, strategies as st

from chargepoint.transport import FailureLog, retry_after_s, retry_delay
from tests.hostile_csms import HostileCsms


def test_retry_after_reads_seconds_and_http_dates():
    assert retry_after_s("120") == 120.0
    assert retry_after_s(" 7 ") == 7.0
    now = 1_767_225_600.0
    date = email.utils.formatdate(now + 90, usegmt=True)   # "Thu, 01 Jan 2026 00:01:30 GMT"
    assert retry_after_s(date, now=now) == 90.0
    assert retry_after_s(email.utils.formatdate(now - 90, usegmt=True), now=now) == 0.0
    assert retry_after_s("9" * 5000) == float("inf")          # clamped later, never an error


def test_retry_after_unreadable_or_missing_is_none():
    for value in (None, "", "soon", "-5", "1.5", "²", "Thu, 99 Foo 2026 99:99:99 GMT"):
        assert retry_after_s(value) is None, value


@given(st.floats(min_value=0, max_value=1e9), st.floats(min_value=0.01, max_value=10),
       st.floats(min_value=10, max_value=600), st.floats(min_value=0, max_value=1))
def test_retry_delay_is_not_sooner_than_asked_and_within_the_bounds(asked, lo, hi, r):
    d = retry_delay(asked, lo, hi, lambda: r)
    assert lo <= d <= hi
    assert d >= min(asked, hi)
    assert d <= max(lo, asked * 1.1)


class Clock:
    def __init__(self):
        self.t = 0.0

    def __call__(self):
        return self.t


def test_failure_log_writes_the_first_at_once_then_one_summary_per_interval(caplog):
    clock = Clock()
    failures = FailureLog(60, clock, logging.getLogger("test.link"))
    with caplog.at_level(logging.DEBUG, "test.link"):
        failures.failed("cannot reach ws://csms: Connection refused")
        for t in range(1, 59):
            clock.t = t
            failures.failed("cannot reach ws://csms: Connection refused" if t % 3
                            else "the CSMS is not accepting connections now: HTTP 503")
        assert len(caplog.records) == 1                 # nothing more within the minute
        clock.t = 61
        failures.failed("cannot reach ws://csms: Connection refused")
        assert len(caplog.records) == 2
        summary = caplog.records[1]
        assert summary.levelno == logging.ERROR
        assert summary.getMessage() == (
            "59 more connection attempts failed in the last 61 s: 40 x cannot reach "
            "ws://csms: Connection refused; 19 x the CSMS is not accepting connections now: "
            "HTTP 503")
        clock.t = 70
        failures.failed("cannot reach ws://csms: Connection refused")
        clock.t = 75
        failures.connected()                            # the outage ends: say the rest
        assert [r.getMessage() for r in caplog.records[2:]] == [
            "1 more connection attempt failed in the last 14 s: 1 x cannot reach ws://csms: "
            "Connection refused",
            "connected after 61 failed attempts"]
        clock.t = 80
        failures.failed("closed")                       # a new outage: at once again
        assert caplog.records[-1].getMessage() == "closed"
        assert all(r.levelno >= logging.WARNING for r in caplog.records)


def test_a_redirect_mode_answers_with_its_location(tmp_path):
    """The hostile CSMS's redirect answers a handshake with 301 and a Location."""
    import urllib.error
    import urllib.request

    csms = HostileCsms().start()
    try:
        csms.redirect("ws://127.0.0.1:9/elsewhere/CP-1")
        request = urllib.request.Request(csms.url.replace("ws://", "http://") + "/CP-1", headers={
            "Upgrade": "websocket", "Connection": "Upgrade", "Sec-WebSocket-Version": "13",
            "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ=="})

        class NoFollow(urllib.request.HTTPRedirectHandler):
            def redirect_request(self, *args, **kwargs):
                return None

        try:
            urllib.request.build_opener(NoFollow).open(request, timeout=5)
        except urllib.error.HTTPError as exc:
            assert exc.code == 301
            assert exc.headers["Location"] == "ws://127.0.0.1:9/elsewhere/CP-1"
        else:
            raise AssertionError("the handshake was not redirected")
        assert [h.status for h in csms.handshakes] == [301]
    finally:
        csms.stop()


def test_a_refusal_with_a_huge_body_is_not_read_whole(tmp_path):
    """A CSMS answering the upgrade with 503 and a Content-Length of a gigabyte, streaming
    it: the charger reads at most REFUSAL_BODY_CAP bytes of it, fails the connect with the
    503 and hangs up, instead of reading the gigabyte into memory."""
    import socket
    import threading

    from chargepoint.config import parse_settings
    from chargepoint.transport import LinkError, Transport

    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    streamed = []

    def serve() -> None:
        conn, _ = listener.accept()
        with conn:
            conn.recv(65536)                                # the upgrade request
            conn.sendall(b"HTTP/1.1 503 Service Unavailable\r\n"
                         b"Content-Length: 1000000000\r\n\r\n")
            sent, chunk = 0, b"x" * 65536
            try:
                while sent < 10 ** 9:
                    conn.sendall(chunk)
                    sent += len(chunk)
            except OSError:                                 # the charger hung up
                pass
            streamed.append(sent)

    server = threading.Thread(target=serve, daemon=True)
    server.start()
    settings = parse_settings({"csms": {"url": f"ws://127.0.0.1:{port}/ocpp",
                                        "charge_point_id": "CP-1", "response_timeout_s": 5},
                               "connectors": [{"id": 1, "meter": {"type": "sim"},
                                               "contactor": {"type": "sim"},
                                               "pilot": {"type": "sim"}}]}, "<test>")
    link = Transport(settings.csms, emit=lambda event: None, password=lambda: "")
    try:
        link._connect()
    except LinkError as exc:
        assert "HTTP 503" in str(exc)
    else:
        raise AssertionError("the connect did not fail")
    server.join(timeout=30)
    listener.close()
    assert streamed and streamed[0] < 10 ** 9       # it stopped long before the end


def test_failures_not_yet_summed_up_are_logged_when_the_link_closes(caplog):
    """A charger stopped in the middle of an outage: the attempts since the last line are
    not lost, the link's close sums them up with their reasons (real sockets: nothing
    listens on the port)."""
    import socket

    from chargepoint.config import CsmsSettings
    from chargepoint.transport import Transport
    from tests.harness import wait_until

    with socket.socket() as probe:                     # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    settings = CsmsSettings(url=f"ws://127.0.0.1:{port}/ocpp", charge_point_id="CP-1",
                            reconnect_min_s=0.01, reconnect_max_s=0.02)
    link = Transport(settings, lambda event: None, password=lambda: "",
                     failure_log_interval_s=3600)
    with caplog.at_level(logging.INFO, "chargepoint.transport"):
        link.start()
        try:
            assert wait_until(lambda: link._failures.failed_attempts >= 3, 10)
        finally:
            link.close()
    errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert errors[0].startswith(f"cannot reach ws://127.0.0.1:{port}/ocpp/CP-1")
    assert len(errors) == 2, errors
    count = link._failures.failed_attempts - 1
    assert errors[1].startswith(f"{count} more connection attempt")
    assert f"{count} x cannot reach ws://127.0.0.1:{port}/ocpp/CP-1" in errors[1]
