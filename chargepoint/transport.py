"""The link to the CSMS over websocket-client: connect, read, ping, reconnect forever.

A daemon thread owns the socket. It turns what arrives into events
(`Connected`, `FrameReceived`, `Disconnected`) on the station loop's queue;
the loop calls `send`. Ping/pong supervision lives here because it is a
property of the socket, not of OCPP: no pong within `pong_timeout_s` means the
link is dead even if TCP has not noticed yet.
"""
from __future__ import annotations

import base64
import logging
import random
import select
import ssl
import threading
import time
from typing import Callable, Optional

import websocket

from chargepoint import events as ev
from chargepoint.config import CsmsSettings

log = logging.getLogger("chargepoint.transport")
# websocket-client logs handshake failures itself; ours say the same more clearly.
logging.getLogger("websocket").setLevel(logging.CRITICAL)

SUBPROTOCOL = "ocpp1.6"


def reconnect_delay(attempt: int, min_s: float, max_s: float,
                    rand: Callable[[], float] = random.random) -> float:
    """Exponential back-off with jitter: attempt 0 waits about min_s, doubling up to max_s.

    The delay lies in [d/2, d] for d = min(max_s, min_s * 2**attempt), so a fleet
    of chargers that lost the same CSMS does not come back in lockstep.
    """
    d = min(max_s, min_s * (2 ** min(attempt, 32)))
    return d / 2 + rand() * d / 2


#: Frames larger than this many times `max_frame_bytes` end the link unread.
FRAME_CAP_FACTOR = 4


class LinkError(Exception):
    """Connecting failed for a reason worth a clear log line."""


#: The TLS 1.2 cipher suites offered, in this order: the OCPP 1.6 Security Whitepaper's
#: (edition 3), TLS_ECDHE_ECDSA_WITH_AES_{128,256}_GCM, then TLS_RSA_WITH_AES_{128,256}_GCM
#: so that a CSMS limited to those is reachable. TLS 1.3 offers OpenSSL's own suites, all
#: AEAD (Python's ssl cannot narrow them). docs/configuration.md lists both.
TLS12_CIPHERS = ("ECDHE-ECDSA-AES128-GCM-SHA256", "ECDHE-ECDSA-AES256-GCM-SHA384",
                 "AES128-GCM-SHA256", "AES256-GCM-SHA384")


def build_ssl_context(settings: CsmsSettings) -> Optional[ssl.SSLContext]:
    """TLS 1.2 or 1.3 for security profiles 2 and 3 (None: no TLS). Built at every connect,
    so a replaced ca_file, crl_file or client certificate applies from the next one."""
    if settings.security_profile < 2:
        return None
    ctx = ssl.create_default_context(cafile=settings.ca_file or None)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.set_ciphers(":".join(TLS12_CIPHERS))
    if settings.crl_file:
        # The CSMS's own certificate is checked against the CRL of the CA that issued it.
        # The CAs above it are not: that needs a CRL from each, and one missing fails all.
        ctx.load_verify_locations(cafile=settings.crl_file)
        ctx.verify_flags |= ssl.VERIFY_CRL_CHECK_LEAF
    if settings.security_profile == 3:
        ctx.load_cert_chain(settings.client_cert, settings.client_key)
    return ctx


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


class Transport:
    def __init__(self, settings: CsmsSettings, emit: Callable[[object], None],
                 password: Callable[[], str], ping_interval_s: float = 60.0):
        self.settings = settings
        self.url = settings.url.rstrip("/") + "/" + settings.charge_point_id
        self._emit = emit
        self._password = password
        self.ping_interval_s = float(ping_interval_s)
        self._ws: Optional[websocket.WebSocket] = None
        self._send_lock = threading.Lock()
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._reconnect_reason: Optional[str] = None
        self._thread: Optional[threading.Thread] = None
        self.connections = 0
        self.last_error = ""

    # -- control from the station loop
    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="csms-link", daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._stop.set()
        self._wake.set()
        ws = self._ws
        if ws is not None:
            try:
                with self._send_lock:
                    ws.send_close(websocket.STATUS_NORMAL, b"charge point stopping")
            except Exception:
                pass
        self._drop()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def send(self, text: str) -> bool:
        """Send one text frame; False when there is no link (the core already knows)."""
        ws = self._ws
        if ws is None:
            return False
        try:
            with self._send_lock:
                ws.send(text)
            return True
        except Exception as exc:
            log.warning("send failed: %s", exc)
            self._drop()
            return False

    def reconnect(self, reason: str) -> None:
        """Drop the link and connect again at once (new credentials, new settings)."""
        self._reconnect_reason = reason
        self._drop()
        self._wake.set()

    def set_ping_interval(self, seconds: float) -> None:
        self.ping_interval_s = float(seconds)

    # -- the link thread
    def _drop(self) -> None:
        """Shut the socket down; the link thread notices and reports why."""
        ws = self._ws
        if ws is not None:
            try:
                ws.sock and ws.sock.shutdown(2)
            except OSError:
                pass

    def _headers(self) -> list[str]:
        if self.settings.security_profile not in (1, 2):
            return []
        password = self._password()
        if not password:
            log.error("security profile %d needs an AuthorizationKey; none is set",
                      self.settings.security_profile)
        token = base64.b64encode(f"{self.settings.charge_point_id}:{password}".encode()).decode()
        return [f"Authorization: Basic {token}"]

    def _connect(self) -> websocket.WebSocket:
        try:
            ctx = build_ssl_context(self.settings)
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
                raise LinkError(f"the CSMS refused our credentials (HTTP 401) for charge point "
                                f"{self.settings.charge_point_id}: check AuthorizationKey") from None
            if exc.status_code == 404:
                raise LinkError(f"the CSMS does not know {self.url} (HTTP 404): check the URL "
                                "and charge_point_id") from None
            refused = self._redirect_refused(exc.status_code, exc.resp_headers)
            raise LinkError(refused or f"the CSMS refused the WebSocket upgrade: HTTP "
                                       f"{exc.status_code}") from None
        except ssl.SSLCertVerificationError as exc:
            raise LinkError(_untrusted(exc, self.settings)) from None
        except ssl.SSLError as exc:
            raise LinkError(f"TLS handshake failed: {exc.reason or exc}") from None
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
            self._wake.clear()
            try:
                ws = self._connect()
            except LinkError as exc:
                self._note_error(str(exc))
            except Exception as exc:  # anything else: keep trying, never die
                self._note_error(f"unexpected error while connecting: {exc!r}")
            else:
                self.connections += 1
                self.last_error = ""
                started = time.monotonic()
                self._ws = ws
                log.info("connected to %s", self.url)
                self._emit(ev.Connected())
                reason = self._read_loop(ws)
                self._ws = None
                try:
                    ws.close(timeout=1)
                except Exception:
                    pass
                self._emit(ev.Disconnected(reason))
                if time.monotonic() - started > 30:
                    attempt = 0
                if self._reconnect_reason:
                    self._reconnect_reason = None
                    attempt = 0
                    continue
            if self._stop.is_set():
                return
            delay = reconnect_delay(attempt, self.settings.reconnect_min_s,
                                    self.settings.reconnect_max_s)
            attempt += 1
            log.info("reconnecting in %.1f s", delay)
            self._wake.wait(delay)

    def _note_error(self, text: str) -> None:
        if text != self.last_error:
            log.error("%s", text)
        else:
            log.debug("%s", text)
        self.last_error = text

    def _read_loop(self, ws: websocket.WebSocket) -> str:
        last_ping = time.monotonic()
        waiting_pong_since: Optional[float] = None
        while not self._stop.is_set():
            now = time.monotonic()
            interval = self.ping_interval_s
            wait = 1.0
            if interval > 0 and waiting_pong_since is None:
                wait = min(wait, max(0.0, last_ping + interval - now))
            elif waiting_pong_since is not None:
                wait = min(wait, max(0.0, waiting_pong_since + self.settings.pong_timeout_s - now))
            try:
                sock = ws.sock
                if sock is None:
                    return self._reconnect_reason or "socket closed"
                pending = isinstance(sock, ssl.SSLSocket) and sock.pending()
                if pending or select.select([sock], [], [], wait)[0]:
                    opcode, data = ws.recv_data(control_frame=True)
                    if opcode == websocket.ABNF.OPCODE_TEXT:
                        try:
                            text = data.decode("utf-8")
                        except UnicodeDecodeError:    # fatal to the link (RFC 6455, 8.1)
                            return "protocol error: a text frame that is not valid UTF-8"
                        self._emit(ev.FrameReceived(text))
                    elif opcode == websocket.ABNF.OPCODE_BINARY:
                        log.warning("ignored a binary frame of %d bytes (OCPP-J is text)",
                                    len(data))
                    elif opcode == websocket.ABNF.OPCODE_PONG:
                        waiting_pong_since = None
                    elif opcode == websocket.ABNF.OPCODE_CLOSE:
                        return "closed by the CSMS"
            except (websocket.WebSocketConnectionClosedException, OSError, ValueError) as exc:
                return self._reconnect_reason or f"connection lost: {exc or type(exc).__name__}"
            except websocket.WebSocketException as exc:
                return f"protocol error: {exc}"
            now = time.monotonic()
            if waiting_pong_since is not None and now - waiting_pong_since > \
                    self.settings.pong_timeout_s:
                log.warning("no pong within %.0f s; the link is dead",
                            self.settings.pong_timeout_s)
                return "pong timeout"
            if interval > 0 and waiting_pong_since is None and now - last_ping >= interval:
                try:
                    with self._send_lock:
                        ws.ping()
                except Exception as exc:
                    return f"ping failed: {exc}"
                last_ping = waiting_pong_since = now
        return "shutting down"
