"""The link to the CSMS over websocket-client: connect, read, write, ping, reconnect forever.

None of it runs in the station loop, and none of it can make the loop wait:

- The link thread (`csms-link`) connects and reads. It turns what arrives into
  events (`Connected`, `FrameReceived`, `Disconnected`) on the loop's queue, and
  reads no further while `FRAMES_IN_FLIGHT` of its frames wait there
  (chargepoint/link_flow.py), so TCP pushes back on a CSMS that sends faster than
  the loop handles. A message is capped at FRAME_CAP_FACTOR x `max_frame_bytes` in
  total, however it is fragmented.
- A writer thread per connection (`csms-link-writer`) writes what the loop handed to
  `send` through a bounded buffer (`send` never blocks), and keeps the link's
  deadlines: a frame not written within `send_timeout_s` (the CSMS stopped reading),
  a message not complete `frame_timeout_s` after its first byte (a trickle), no pong
  within `pong_timeout_s` of a ping. Any of them, or a full buffer, drops the link;
  the link thread reports `Disconnected` and connects again with back-off.

Ping/pong supervision lives here because it is a property of the socket, not of
OCPP: no pong in time means the link is dead even if TCP has not noticed yet.
"""
from __future__ import annotations

import base64
import collections
import email.utils
import logging
import math
import random
import re
import select
import socket
import ssl
import struct
import threading
import time
from dataclasses import dataclass
from datetime import timezone
from urllib.parse import urlsplit, urlunsplit
from typing import Callable, Optional

import websocket
from websocket import ABNF
from websocket import _handshake as _ws_handshake
from websocket._http import read_headers as _read_headers
from websocket._socket import recv as _recv

from chargepoint import events as ev
from chargepoint.config import CsmsSettings
from chargepoint.link_flow import FrameCredits, SendBuffer
from chargepoint.ocpp_keys import authorization_password

log = logging.getLogger("chargepoint.transport")
# websocket-client logs handshake failures itself; ours say the same more clearly.
logging.getLogger("websocket").setLevel(logging.CRITICAL)

SUBPROTOCOL = "ocpp1.6"

#: Most of a refused upgrade's body that is read (a 401's or 503's explanation).
REFUSAL_BODY_CAP = 4096


def _refusal_read_capped(sock, success_statuses=_ws_handshake.SUCCESS_STATUSES) -> tuple:
    """websocket-client's reading of the upgrade's answer, but a refusal's body is read only
    up to REFUSAL_BODY_CAP bytes: the library reads whatever Content-Length says into
    memory, so a hostile CSMS could fill the controller's memory with one 503. Installed
    over websocket/_handshake.py `_get_resp_headers` (the library has no option for it)."""
    status, headers, message = _read_headers(sock)
    if status in success_statuses:
        return status, headers
    body = b""
    try:
        remaining = min(int(headers.get("content-length") or 0), REFUSAL_BODY_CAP)
    except ValueError:
        remaining = 0
    while remaining > 0:
        chunk = _recv(sock, remaining)
        body += chunk
        remaining -= len(chunk)
    raise websocket.WebSocketBadStatusException(
        f"Handshake status {status} {message}", status, message, headers, body or None)


_ws_handshake._get_resp_headers = _refusal_read_capped


def reconnect_delay(attempt: int, min_s: float, max_s: float,
                    rand: Callable[[], float] = random.random) -> float:
    """Exponential back-off with jitter: attempt 0 waits about min_s, doubling up to max_s.

    The delay lies in [d/2, d] for d = min(max_s, min_s * 2**attempt), so a fleet
    of chargers that lost the same CSMS does not come back in lockstep.
    """
    d = min(max_s, min_s * (2 ** min(attempt, 32)))
    return d / 2 + rand() * d / 2


def retry_after_s(value: Optional[str], now: Optional[float] = None) -> Optional[float]:
    """Seconds a `Retry-After` header asks to wait (delay-seconds or an HTTP-date,
    RFC 9110 10.2.3); None when it is absent or unreadable."""
    value = (value or "").strip()
    if re.fullmatch(r"[0-9]+", value):
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


def retry_delay(retry_after: float, min_s: float, max_s: float,
                rand: Callable[[], float] = random.random) -> float:
    """The wait after a refusal that said when to come back: not sooner than it asks,
    up to 10 % later so a fleet refused together does not return together, and always
    within min_s..max_s."""
    return min(max_s, max(min_s, retry_after * (1 + 0.1 * rand())))


#: Frames, and messages however fragmented, larger than this many times `max_frame_bytes`
#: end the link (the core answers those up to max_frame_bytes, and a little larger ones
#: with a CALLERROR).
FRAME_CAP_FACTOR = 4
#: How long a closing link may take to write what is queued and its close frame.
CLOSE_GRACE_S = 1.0
#: Bytes written per call, so the writer keeps its deadlines while a large frame goes out.
WRITE_CHUNK = 16384
CLOSE_NORMAL = struct.pack("!H", websocket.STATUS_NORMAL)
CLOSE_STOPPING = struct.pack("!H", websocket.STATUS_GOING_AWAY) + b"charge point stopping"


class LinkError(Exception):
    """Connecting failed for a reason worth a clear log line."""

    def __init__(self, text: str, retry_after: Optional[float] = None):
        super().__init__(text)
        #: Seconds the CSMS asked us to wait (Retry-After), if it did.
        self.retry_after = retry_after


#: The TLS 1.2 cipher suites offered, in this order: the OCPP 1.6 Security Whitepaper's
#: (edition 3), TLS_ECDHE_ECDSA_WITH_AES_{128,256}_GCM, then TLS_RSA_WITH_AES_{128,256}_GCM
#: so that a CSMS limited to those is reachable. TLS 1.3 offers OpenSSL's own suites, all
#: AEAD (Python's ssl cannot narrow them). docs/configuration.md lists both.
TLS12_CIPHERS = ("ECDHE-ECDSA-AES128-GCM-SHA256", "ECDHE-ECDSA-AES256-GCM-SHA384",
                 "AES128-GCM-SHA256", "AES256-GCM-SHA384")


#: Failed attempts in a row after which an upgraded security profile on trial is reported
#: as not working (the core then goes back to the previous one).
FALLBACK_AFTER = 3


@dataclass(frozen=True)
class LinkSecurity:
    """What the link connects with (the core decides it: chargepoint/model/security_profile.py):
    the security profile, the CSMS roots the CSMS installed (PEM, trusted with [csms]
    ca_file; with neither, the system's), the client certificate and key files, and whether
    the profile is on trial."""

    profile: int
    cadata: str = ""
    client_cert: str = ""
    client_key: str = ""
    trial: bool = False


def build_ssl_context(settings: CsmsSettings,
                      security: Optional[LinkSecurity] = None) -> Optional[ssl.SSLContext]:
    """TLS 1.2 or 1.3 for security profiles 2 and 3 (None: no TLS). Built at every connect,
    so a replaced ca_file, crl_file or client certificate applies from the next one. The
    CSMS's certificate must chain to a trusted root and name the URL's host."""
    security = security or LinkSecurity(settings.security_profile,
                                        client_cert=settings.client_cert,
                                        client_key=settings.client_key)
    if security.profile < 2:
        return None
    ctx = ssl.create_default_context(cafile=settings.ca_file or None,
                                     cadata=security.cadata or None)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.set_ciphers(":".join(TLS12_CIPHERS))
    if settings.crl_file:
        # The CSMS's own certificate is checked against the CRL of the CA that issued it.
        # The CAs above it are not: that needs a CRL from each, and one missing fails all.
        ctx.load_verify_locations(cafile=settings.crl_file)
        ctx.verify_flags |= ssl.VERIFY_CRL_CHECK_LEAF
    if security.profile == 3:
        ctx.load_cert_chain(security.client_cert, security.client_key)
    return ctx


#: OpenSSL's reasons for a handshake that failed on the TLS version, or on the suites.
_TLS_VERSION_REASONS = {"UNSUPPORTED_PROTOCOL", "TLSV1_ALERT_PROTOCOL_VERSION",
                        "WRONG_VERSION_NUMBER", "NO_PROTOCOLS_AVAILABLE",
                        "TLSV1_ALERT_PROTOCOL_VERSION"}
_TLS_CIPHER_REASONS = {"SSLV3_ALERT_HANDSHAKE_FAILURE", "NO_SHARED_CIPHER",
                       "NO_CIPHERS_AVAILABLE", "TLSV1_ALERT_INSUFFICIENT_SECURITY",
                       "NO_SUITABLE_SIGNATURE_ALGORITHM"}


def tls_security_event(exc: ssl.SSLError) -> Optional[str]:
    """The whitepaper's security event for a failed TLS handshake, if it names one."""
    if isinstance(exc, ssl.SSLCertVerificationError):
        return "InvalidCentralSystemCertificate"
    if exc.reason in _TLS_VERSION_REASONS:
        return "InvalidTLSVersion"
    if exc.reason in _TLS_CIPHER_REASONS:
        return "InvalidTLSCipherSuite"
    return None


def url_for_profile(url: str, tls_url: str, profile: int) -> str:
    """The CSMS URL for `profile`: [csms] url when its scheme fits (ws:// for 0 and 1, wss://
    for 2 and 3), else [csms] tls_url, else url with the other scheme (same host and port)."""
    wanted = "wss" if profile >= 2 else "ws"
    parts = urlsplit(url)
    if parts.scheme == wanted:
        return url
    if wanted == "wss" and tls_url:
        return tls_url
    return urlunsplit((wanted, *parts[1:]))


#: OpenSSL's verify codes for a certificate checked against a CRL (X509_V_ERR_*).
_CRL_TROUBLE = {
    23: "it is revoked: crl_file {crl} lists it",
    3: "crl_file {crl} has no CRL from the CA that issued it",
    8: "the CRL in crl_file {crl} is not signed by the CA that issued it",
    11: "the CRL in crl_file {crl} is not valid yet (is the clock right?)",
    12: "the CRL in crl_file {crl} has expired (its nextUpdate has passed): install a "
        "current one",
}


def _untrusted(exc: ssl.SSLCertVerificationError, settings: CsmsSettings) -> str:
    why = _CRL_TROUBLE.get(exc.verify_code) if settings.crl_file else None
    detail = why.format(crl=settings.crl_file) if why else exc.verify_message
    return f"the CSMS's TLS certificate is not trusted: {detail}"


class FailureLog:
    """Failed connection attempts in the log: the first of an outage at once, then at most
    one line per `interval_s` that says how many attempts failed since, and why.

    Every failure reaches an operator's log (ERROR), and a CSMS that stays away for a
    day costs a line a minute, not one per back-off step."""

    def __init__(self, interval_s: float = 60.0, clock: Callable[[], float] = time.monotonic,
                 logger: logging.Logger = log):
        self.interval_s = interval_s
        self._clock = clock
        self._log = logger
        self._since: Optional[float] = None          # when the last line was written
        self._unlogged: collections.Counter[str] = collections.Counter()
        self.failed_attempts = 0

    def failed(self, reason: str) -> None:
        now = self._clock()
        self.failed_attempts += 1
        if self._since is None:
            self._log.error("%s", reason)
            self._since = now
            return
        self._unlogged[reason] += 1
        if now - self._since >= self.interval_s:
            self._summarise(now)

    def connected(self) -> None:
        """The outage is over: say what was not said yet, start afresh."""
        if self._unlogged:
            self._summarise(self._clock())
        if self.failed_attempts > 1:
            self._log.warning("connected after %d failed attempts", self.failed_attempts)
        self._since = None
        self.failed_attempts = 0

    def flush(self) -> None:
        """Say what was not said yet (the link is closing in the middle of an outage)."""
        if self._unlogged:
            self._summarise(self._clock())

    def _summarise(self, now: float) -> None:
        count = sum(self._unlogged.values())
        reasons = "; ".join(f"{n} x {reason}" for reason, n in self._unlogged.most_common())
        self._log.error("%d more connection attempt%s failed in the last %.0f s: %s", count,
                        "" if count == 1 else "s", now - self._since, reasons)
        self._unlogged.clear()
        self._since = now


class _Link:
    """One open WebSocket: what waits to be written, the deadlines' clocks, why it ended.

    The link thread reads, the writer thread writes; both and the loop (through
    `Transport.send`) may end it, whoever notices first: `fail` at once, `finish`
    after what is already queued and a close frame are written."""

    def __init__(self, ws: websocket.WebSocket):
        self.ws = ws
        self.buffer = SendBuffer()
        self.reason: Optional[str] = None
        self.ended = threading.Event()
        now = time.monotonic()
        #: First byte of the message being read (None: between messages).
        self.message_since: Optional[float] = None
        #: The reader waits for the loop to take frames (None: it is reading).
        self.held_since: Optional[float] = None
        #: When reading last resumed after such a wait: a pong cannot arrive while held.
        self.resumed_at = now
        self.last_ping = now
        #: A ping was sent at this time and its pong has not come (None: none outstanding).
        self.ping_sent_at: Optional[float] = None
        #: When the frame being written was handed over (None: none is being written).
        self.writing_since: Optional[float] = None
        #: Why `finish` was called, and when: the link ends once its close frame is out.
        self.closing: Optional[str] = None
        self.closing_since: Optional[float] = None
        self._lock = threading.Lock()

    @property
    def dead(self) -> bool:
        return self.reason is not None

    def fail(self, reason: str) -> None:
        """End the link now (the first reason wins): the reader's and writer's calls return."""
        with self._lock:
            if self.reason is not None:
                return
            self.reason = reason
        self.buffer.close()
        sock = self.ws.sock
        try:
            if sock is not None:
                sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.ended.set()

    def finish(self, reason: str, close_payload: bytes) -> None:
        """End the link once what is queued and then a close frame are written (at most
        CLOSE_GRACE_S from now); never waits. Nothing more is queued after the close."""
        with self._lock:
            if self.reason is not None or self.closing is not None:
                return
            self.closing, self.closing_since = reason, time.monotonic()
        if not self.buffer.put(ABNF.OPCODE_CLOSE, close_payload):
            self.fail(reason)                      # full: no point waiting for it
        self.buffer.seal()


class _Ended(Exception):
    """The link ends for a reason the reader found (a close frame, a protocol error)."""


class Transport:
    def __init__(self, settings: CsmsSettings, emit: Callable[[object], None],
                 password: Callable[[], str], ping_interval_s: float = 60.0,
                 failure_log_interval_s: float = 60.0):
        self.settings = settings
        self.security = LinkSecurity(settings.security_profile,
                                     client_cert=settings.client_cert,
                                     client_key=settings.client_key)
        self._trial_failures = 0
        self._emit = emit
        self._password = password
        self.ping_interval_s = float(ping_interval_s)
        self._link: Optional[_Link] = None
        self._credits = FrameCredits()
        self._failures = FailureLog(failure_log_interval_s)
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._reconnect_reason: Optional[str] = None
        #: Why the link is held down (`hold`), or None.
        self._held: Optional[str] = None
        #: A connection is being served, from Connected until Disconnected is emitted.
        self._serving = False
        self._thread: Optional[threading.Thread] = None
        self.connections = 0
        self.last_error = ""

    @property
    def url(self) -> str:
        """The URL connected to, with the security profile in use."""
        base = url_for_profile(self.settings.url, getattr(self.settings, "tls_url", ""),
                               self.security.profile)
        return base.rstrip("/") + "/" + self.settings.charge_point_id

    # -- control from the station loop: none of these waits on the network
    def use_security(self, security: LinkSecurity) -> None:
        """Connect with `security` from the next connection (the loop asks for it)."""
        if security != self.security:
            self._trial_failures = 0
        self.security = security

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="csms-link", daemon=True)
        self._thread.start()

    def close(self) -> None:
        """Stop for good: what is queued and a close frame get CLOSE_GRACE_S to go out."""
        self._stop.set()
        self._wake.set()
        link = self._link
        if link is not None:
            link.finish("shutting down", CLOSE_STOPPING)
            link.ended.wait(CLOSE_GRACE_S)
            link.fail("shutting down")
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._failures.flush()             # failures of an outage not summed up yet

    def hold(self, reason: str, wait_s: float = CLOSE_GRACE_S + 2) -> bool:
        """Drop the link and keep it down until `release` (`chargepoint sim disconnect`: the
        charger offline on demand, the CSMS untouched). Waits up to `wait_s` for the link to
        be down; returns whether it is."""
        self._held = reason
        self._wake.set()
        link = self._link
        if link is not None:
            link.finish(reason, CLOSE_NORMAL)
        deadline = time.monotonic() + wait_s
        while self._serving and time.monotonic() < deadline:
            time.sleep(0.01)
        return not self._serving

    def release(self) -> None:
        """End `hold`: connect again at once."""
        self._held = None
        self._wake.set()

    def status(self) -> dict:
        """The link as an operator sees it (`chargepoint sim status`)."""
        return {"url": self.url, "connected": self._serving, "held": self._held is not None,
                "connections": self.connections, "last_error": self.last_error}

    def send(self, text: str) -> bool:
        """Hand one text frame to the link; False when there is no link (the core learns it
        from `Disconnected`) or the frame cannot be queued. Never blocks: a full buffer
        means the CSMS stopped reading, and the link is dropped instead."""
        link = self._link
        if link is None or link.dead:
            return False
        if link.closing is not None:
            # Closing on purpose (a reconnect with new credentials): what came before the
            # close goes out, what comes after waits for the next connection.
            return False
        try:
            data = text.encode("utf-8")
        except UnicodeEncodeError as exc:
            log.error("not sent: a frame that is not valid Unicode (%s)", exc)
            return False
        if link.buffer.put(ABNF.OPCODE_TEXT, data):
            return True
        link.fail(f"the CSMS is not reading: {link.buffer.frames} frames "
                  f"({link.buffer.bytes} bytes) wait to be sent")
        return False

    def frame_handled(self) -> None:
        """The loop has handled a `FrameReceived`: the link may read one more."""
        self._credits.release()

    def reconnect(self, reason: str) -> None:
        """Drop the link and connect again at once (new credentials, new settings); what
        the loop already handed over (the answer that asked for this) goes out first."""
        self._reconnect_reason = reason
        link = self._link
        if link is not None:
            link.finish(reason, CLOSE_NORMAL)
        self._wake.set()

    def set_ping_interval(self, seconds: float) -> None:
        self.ping_interval_s = float(seconds)
        link = self._link
        if link is not None:
            link.buffer.wake()

    # -- the link thread: connect
    def _headers(self) -> list[str]:
        if self.security.profile not in (1, 2):
            return []
        password = self._password()
        if not password:
            log.error("security profile %d needs an AuthorizationKey; none is set",
                      self.security.profile)
        token = base64.b64encode(self.settings.charge_point_id.encode() + b":"
                                 + authorization_password(password)).decode()
        return [f"Authorization: Basic {token}"]

    def _connect(self) -> websocket.WebSocket:
        try:
            ctx = build_ssl_context(self.settings, self.security)
        except (OSError, ssl.SSLError) as exc:
            raise LinkError(f"cannot load the TLS files of [csms] (ca_file, crl_file, "
                            f"client_cert, client_key): {exc}") from None
        # UTF-8 is checked in _read_loop: websocket-client's own check runs in Python byte
        # by byte (7 us for a 60-byte frame, 32 ms for one of 250 KB).
        ws = websocket.WebSocket(sslopt={"context": ctx} if ctx else None,
                                 enable_multithread=True, skip_utf8_validation=True)
        try:
            # The subprotocol is offered by hand and checked below, so that a CSMS that
            # does not agree to it gets its own clear error rather than "bad header".
            # Redirects are never followed (websocket-client follows three by default, to
            # any scheme and host, with our Authorization header): see _redirect_refused.
            ws.connect(self.url, header=[f"Sec-WebSocket-Protocol: {SUBPROTOCOL}",
                                         *self._headers()],
                       timeout=self.settings.response_timeout_s,
                       suppress_origin=True, redirect_limit=0)
        except websocket.WebSocketBadStatusException as exc:
            if exc.status_code == 401:
                self._emit(ev.SecurityIncident("FailedToAuthenticateAtCentralSystem",
                                               "HTTP 401 to the Basic credentials"))
                raise LinkError(f"the CSMS refused our credentials (HTTP 401) for charge point "
                                f"{self.settings.charge_point_id}: check AuthorizationKey") from None
            if exc.status_code == 404:
                raise LinkError(f"the CSMS does not know {self.url} (HTTP 404): check the URL "
                                "and charge_point_id") from None
            if exc.status_code in (429, 503):        # busy: it may say when to come back
                wait = retry_after_s((exc.resp_headers or {}).get("retry-after"))
                raise LinkError(f"the CSMS is not accepting connections now: HTTP "
                                f"{exc.status_code}" + ("" if wait is None else
                                                        f", retry after {wait:.0f} s"),
                                retry_after=wait) from None
            refused = self._redirect_refused(exc.status_code, exc.resp_headers)
            raise LinkError(refused or f"the CSMS refused the WebSocket upgrade: HTTP "
                                       f"{exc.status_code}") from None
        except ssl.SSLCertVerificationError as exc:
            why = _untrusted(exc, self.settings)
            self._emit(ev.SecurityIncident("InvalidCentralSystemCertificate", why))
            raise LinkError(why) from None
        except ssl.SSLError as exc:
            kind = tls_security_event(exc)
            why = f"TLS handshake failed: {exc.reason or exc}"
            if kind == "InvalidTLSVersion":
                why += " (the CSMS offers no TLS 1.2 or newer)"
            elif kind == "InvalidTLSCipherSuite":
                why += " (no cipher suite of the whitepaper's agreed, see docs/security.md)"
            if kind is not None:
                self._emit(ev.SecurityIncident(kind, why))
            raise LinkError(why) from None
        except websocket.WebSocketException as exc:
            response = ws.handshake_response
            refused = response and self._redirect_refused(response.status, response.headers)
            raise LinkError(refused or f"WebSocket handshake failed: {exc}") from None
        except OSError as exc:
            raise LinkError(f"cannot reach {self.url}: {exc.strerror or exc}") from None
        agreed = (ws.getheaders() or {}).get("sec-websocket-protocol")
        if agreed != SUBPROTOCOL:
            ws.close()
            raise LinkError(f"the CSMS did not agree to the WebSocket subprotocol {SUBPROTOCOL} "
                            f"(it answered {agreed!r}); it is not an OCPP 1.6 endpoint")
        ws.sock.settimeout(self.settings.response_timeout_s)
        self._limit_frames(ws)
        return ws

    def _redirect_refused(self, status: Optional[int], headers: Optional[dict]) -> Optional[str]:
        """Why a redirect is not followed (None: `status` is no redirect). Following one
        could send the Basic credentials and the OCPP traffic to another host, or without
        TLS while the log still names the configured wss:// URL; the charger connects only
        to the URL it was given, whatever the security profile."""
        if status is None or not 300 <= status < 400:
            return None
        location = str((headers or {}).get("location", ""))[:200]
        return (f"the CSMS answered HTTP {status}, redirecting to {location!r}: "
                f"redirects are not followed, the charger connects only to {self.url}; if "
                "the new address is right, set it as [csms] url")

    def _limit_frames(self, ws: websocket.WebSocket) -> None:
        """Refuse a frame whose header announces more than FRAME_CAP_FACTOR x max_frame_bytes
        before reading it: websocket-client would read it whole into memory (a 600 MB frame
        stalled the controller for minutes). The core answers frames up to max_frame_bytes
        and those a little larger with a CALLERROR; beyond the cap the link is dropped.
        websocket-client has no option for this, so its frame reader's length step is
        wrapped (websocket/_abnf.py frame_buffer.recv_length)."""
        cap = FRAME_CAP_FACTOR * self.settings.max_frame_bytes
        frames = getattr(ws, "frame_buffer", None)
        original = getattr(frames, "recv_length", None)
        if original is None:
            return

        def recv_length() -> None:
            original()
            if frames.length is not None and frames.length > cap:
                raise websocket.WebSocketPayloadException(
                    f"a frame of {frames.length} bytes, more than {cap}")
        frames.recv_length = recv_length

    def _run(self) -> None:
        attempt = 0
        while not self._stop.is_set():
            if self._held is not None:             # down on request until `release`
                self._wake.wait(1.0)
                self._wake.clear()
                attempt = 0
                continue
            self._wake.clear()
            retry_after = None
            try:
                ws = self._connect()
            except LinkError as exc:
                self._note_error(str(exc))
                retry_after = exc.retry_after
                self._trial_failed(str(exc))
            except Exception as exc:  # anything else: keep trying, never die
                self._note_error(f"unexpected error while connecting: {exc!r}")
            else:
                self._failures.connected()
                self._trial_failures = 0
                self.connections += 1
                self.last_error = ""
                started = time.monotonic()
                log.info("connected to %s", self.url)
                self._serve(ws)
                if time.monotonic() - started > 30:
                    attempt = 0
                if self._reconnect_reason or self._held is not None:
                    self._reconnect_reason = None
                    attempt = 0
                    continue
            if self._stop.is_set():
                return
            s = self.settings
            if retry_after is not None:
                delay = retry_delay(retry_after, s.reconnect_min_s, s.reconnect_max_s)
                log.info("the CSMS asked to come back in %.0f s; reconnecting in %.1f s",
                         retry_after, delay)
            else:
                delay = reconnect_delay(attempt, s.reconnect_min_s, s.reconnect_max_s)
                log.info("reconnecting in %.1f s", delay)
            attempt += 1
            self._wake.wait(delay)

    def _trial_failed(self, why: str) -> None:
        """One more failed attempt with a profile on trial; FALLBACK_AFTER in a row are
        reported, once."""
        security = self.security
        if not security.trial:
            return
        self._trial_failures += 1
        if self._trial_failures == FALLBACK_AFTER:
            log.error("security profile %d failed %d connection attempts in a row",
                      security.profile, FALLBACK_AFTER)
            self._emit(ev.SecurityProfileFailed(security.profile, why))

    def _note_error(self, text: str) -> None:
        self._failures.failed(text)
        self.last_error = text

    def _serve(self, ws: websocket.WebSocket) -> None:
        """One connection, from Connected to Disconnected."""
        link = _Link(ws)
        writer = threading.Thread(target=self._write_loop, args=(link,),
                                  name="csms-link-writer", daemon=True)
        self._serving = True
        self._link = link
        writer.start()
        self._emit(ev.Connected())
        if self._held is not None:            # held while this connection was being made
            link.finish(self._held, CLOSE_NORMAL)
        reason = self._read_loop(link)
        if link.closing is not None:          # let our close frame go out after the queue
            link.ended.wait(max(0.0, link.closing_since + CLOSE_GRACE_S - time.monotonic()))
        link.fail(reason)
        self._link = None
        writer.join(timeout=5)
        try:
            ws.shutdown()
        except Exception:
            pass
        self._emit(ev.Disconnected(link.reason or reason))
        self._serving = False

    # -- the link thread: read
    def _read_loop(self, link: _Link) -> str:
        """Read messages until the link ends; returns why it ended."""
        cap = FRAME_CAP_FACTOR * self.settings.max_frame_bytes
        while not link.dead:
            if not self._credits.acquire(0):
                link.held_since = time.monotonic()     # the loop is behind: stop reading
                while not self._credits.acquire(0.2):
                    if link.dead:
                        return self._end_reason(link, "shutting down")
                link.held_since = None
                link.resumed_at = time.monotonic()
            text = None
            try:
                text = self._read_message(link, cap)
            except _Ended as exc:
                return self._end_reason(link, str(exc))
            except websocket.WebSocketConnectionClosedException as exc:
                return self._end_reason(link, f"connection lost: {exc or 'closed'}")
            except (websocket.WebSocketTimeoutException, OSError) as exc:
                return self._end_reason(link, f"connection lost: {exc or type(exc).__name__}")
            except websocket.WebSocketException as exc:
                return self._end_reason(link, f"protocol error: {exc}")
            except Exception as exc:     # a socket shut down under an SSL read, and the like
                return self._end_reason(link, f"connection lost: {exc!r}")
            finally:
                if text is None:
                    self._credits.release()
            if text is not None:
                self._emit(ev.FrameReceived(text))   # the loop gives the credit back
        return self._end_reason(link, "link dropped")

    def _end_reason(self, link: _Link, found: str) -> str:
        """Why the link ended: whoever ended it on purpose knows best."""
        return link.reason or self._reconnect_reason or found

    def _read_message(self, link: _Link, cap: int) -> Optional[str]:
        """The next text message, or None (nothing within a second, a control frame, a
        binary frame). Fragments are put together here, not by websocket-client, whose
        assembly has no size limit and copies the whole message once per fragment."""
        ws = link.ws
        sock = ws.sock
        if sock is None:
            raise _Ended("socket closed")
        pending = isinstance(sock, ssl.SSLSocket) and sock.pending()
        if not pending and not select.select([sock], [], [], 1.0)[0]:
            return None
        link.message_since = time.monotonic()
        chunks: list[bytes] = []
        size, opcode = 0, None
        try:
            while True:
                frame = ws.recv_frame()
                op = frame.opcode
                if op in (ABNF.OPCODE_TEXT, ABNF.OPCODE_BINARY, ABNF.OPCODE_CONT):
                    if (op == ABNF.OPCODE_CONT) != (opcode is not None):
                        raise _Ended("protocol error: a fragment out of place")
                    opcode = opcode or op
                    size += len(frame.data)
                    if size > cap:
                        raise _Ended(f"protocol error: a message of more than {cap} bytes "
                                     f"(in fragments)")
                    chunks.append(frame.data)
                    if frame.fin:
                        break
                elif op == ABNF.OPCODE_PING:
                    link.buffer.put_control(ABNF.OPCODE_PONG, frame.data)
                elif op == ABNF.OPCODE_PONG:
                    link.ping_sent_at = None
                elif op == ABNF.OPCODE_CLOSE:
                    link.finish("closed by the CSMS", frame.data[:2])
                    raise _Ended("closed by the CSMS")
                if opcode is None:                   # a control frame between messages
                    return None
        finally:
            link.message_since = None
        data = b"".join(chunks)
        if opcode == ABNF.OPCODE_BINARY:
            log.warning("ignored a binary frame of %d bytes (OCPP-J is text)", len(data))
            return None
        try:
            return data.decode("utf-8")
        except UnicodeDecodeError:    # fatal to the link (RFC 6455, 8.1)
            raise _Ended("protocol error: a text frame that is not valid UTF-8") from None

    # -- the writer thread
    def _write_loop(self, link: _Link) -> None:
        """Write what the loop handed over, ping, and end the link when a deadline passes."""
        pending = memoryview(b"")
        closing = False                 # the frame being written is our close frame
        try:
            while not link.dead:
                now = time.monotonic()
                when, kind = self._next_deadline(link, ping=not pending)
                if now >= when and kind != "ping":
                    why = self._overdue(link, kind)
                    log.warning("%s; dropping the link", why)
                    link.fail(why)
                    return
                wait = max(0.0, min(when - now, 1.0)) + 0.001
                if not pending:
                    if now >= when:                  # (kind == "ping")
                        link.last_ping = link.ping_sent_at = link.writing_since = now
                        pending = self._format(link.ws, ABNF.OPCODE_PING, b"")
                    else:
                        out = link.buffer.take(wait)
                        if out is None:
                            continue
                        link.writing_since = out.queued_at
                        pending = self._format(link.ws, out.opcode, out.payload)
                        closing = out.opcode == ABNF.OPCODE_CLOSE
                sock = link.ws.sock
                if sock is None:
                    return
                if select.select([], [sock], [], wait)[1]:
                    pending = pending[sock.send(pending[:WRITE_CHUNK]):]
                    if not pending:
                        link.writing_since = None
                        if closing:                  # our close frame is out: done
                            link.fail(link.closing or "closed")
                            return
        except Exception as exc:
            link.fail(f"connection lost while sending: {exc or type(exc).__name__}")

    @staticmethod
    def _format(ws: websocket.WebSocket, opcode: int, payload: bytes) -> memoryview:
        frame = ABNF.create_frame(payload, opcode)
        if ws.get_mask_key:
            frame.get_mask_key = ws.get_mask_key
        return memoryview(frame.format())

    def _next_deadline(self, link: _Link, ping: bool = True) -> tuple[float, str]:
        """The writer's next duty and when: a deadline of the link ("send", "message",
        "close", "pong": past it, the link is dropped) or, if `ping`, the next "ping"."""
        s = self.settings
        best, kind = math.inf, ""
        oldest = link.buffer.oldest()
        if link.writing_since is not None and (oldest is None or link.writing_since < oldest):
            oldest = link.writing_since
        if oldest is not None:
            best, kind = oldest + s.send_timeout_s, "send"
        if link.message_since is not None and link.message_since + s.frame_timeout_s < best:
            best, kind = link.message_since + s.frame_timeout_s, "message"
        if link.closing_since is not None and link.closing_since + CLOSE_GRACE_S < best:
            best, kind = link.closing_since + CLOSE_GRACE_S, "close"
        if link.ping_sent_at is not None:
            if link.held_since is None:               # a pong cannot come while not reading
                pong = max(link.ping_sent_at, link.resumed_at) + s.pong_timeout_s
                if pong < best:
                    best, kind = pong, "pong"
        elif ping and self.ping_interval_s > 0 and \
                link.last_ping + self.ping_interval_s < best:
            best, kind = link.last_ping + self.ping_interval_s, "ping"
        return best, kind

    def _overdue(self, link: _Link, kind: str) -> str:
        s = self.settings
        if kind == "send":
            return (f"the CSMS took no frame for {s.send_timeout_s:g} s, it is not reading "
                    f"({link.buffer.frames} more frames wait)")
        if kind == "message":
            return f"a message from the CSMS took more than {s.frame_timeout_s:g} s to arrive"
        if kind == "pong":
            return f"no pong within {s.pong_timeout_s:g} s of a ping"
        return link.closing or "closing"
