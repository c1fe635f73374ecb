"""A local OCPP 1.6-J Central System for `chargepoint demo` and the end-to-end tests.

The CSMS side of every connection is an ``ocpp.v16.ChargePoint`` with an ``@on`` handler for
every charge-point-initiated action, so everything the firmware sends is checked against the
official JSON schemas by the ocpp library; refusals are collected in ``LocalCsms.violations``.
The asyncio loop runs in a background thread and the public API is plain blocking calls, so
synchronous tests and the synchronous firmware can drive it directly.
"""
from __future__ import annotations

import asyncio
import base64
import binascii
import collections
import concurrent.futures
import copy
import dataclasses
import functools
import hmac
import itertools
import json
import logging
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Mapping
from datetime import datetime, timezone
from http import HTTPStatus
from typing import Any
from urllib.parse import quote, unquote, urlsplit

from ocpp.exceptions import GenericError, InternalError, OCPPError
from ocpp.messages import Call, CallResult, MessageType, unpack, validate_payload
from ocpp.routing import on
from ocpp.v16 import ChargePoint as _OcppChargePoint
from ocpp.v16.enums import Action
from websockets.asyncio.server import ServerConnection, serve
from websockets.exceptions import ConnectionClosed
from websockets.frames import Opcode

__all__ = [
    "NO_RESPONSE",
    "CP_ACTIONS",
    "Flood",
    "Handshake",
    "LocalCsms",
    "LogEntry",
    "Received",
    "SchemaViolation",
    "UnknownErrorCode",
    "Violation",
    "format_summary",
    "read_log",
]

LOGGER = logging.getLogger("chargepoint.csms")
# The ocpp library logs a full traceback for every CALLERROR it sends; those are expected
# here (injected errors, deliberate schema tests) and already reported by this module, so
# they go to a separate logger that is silent unless someone attaches a handler to it.
_OCPP_LOGGER = logging.getLogger("chargepoint.csms.ocpp")
_OCPP_LOGGER.addHandler(logging.NullHandler())
_OCPP_LOGGER.propagate = False

OCPP_VERSION = "1.6"

#: Actions a charge point may initiate (OCPP 1.6 core profiles plus the Security Whitepaper).
CP_ACTIONS = (
    "Authorize",
    "BootNotification",
    "DataTransfer",
    "DiagnosticsStatusNotification",
    "FirmwareStatusNotification",
    "Heartbeat",
    "MeterValues",
    "StartTransaction",
    "StatusNotification",
    "StopTransaction",
    "SecurityEventNotification",
    "SignCertificate",
    "LogStatusNotification",
    "SignedFirmwareStatusNotification",
)


class _NoResponse:
    """Type of NO_RESPONSE."""

    def __repr__(self) -> str:
        return "NO_RESPONSE"


#: Return this from a handler to swallow that one CALL (no CALLRESULT, no CALLERROR).
NO_RESPONSE = _NoResponse()


class SchemaViolation(Exception):
    """A payload of a CSMS-initiated call, or the charge point's answer, breaks the schema."""

    def __init__(self, message: str, error: OCPPError, payload: Any = None):
        super().__init__(message)
        self.error = error
        self.code = error.code
        self.payload = payload


class UnknownErrorCode(GenericError):
    """A CALLERROR whose errorCode is not one of OCPP's; ``code`` holds what was sent."""

    def __init__(self, code: str, description: str = "", details: Any = None):
        super().__init__(description=description, details=details)
        self.code = code


@dataclasses.dataclass
class Received:
    """One CALL received from a charge point, in arrival order.

    Indexing a record reads its payload (``rec["connectorId"]``), so a predicate works
    whether it is written for the record or for the payload.
    """

    index: int
    time: float  # time.monotonic() at arrival
    wall: datetime  # UTC wall-clock time at arrival
    cp_id: str
    action: str
    payload: Any
    unique_id: str
    reply: dict | None = None  # payload of the CALLRESULT the CSMS sent back
    error: tuple[str, str] | None = None  # (errorCode, errorDescription) of the CALLERROR sent
    violation: str | None = None  # why the ocpp library refused the CALL, if it did

    def __getitem__(self, key):
        return self.payload[key]

    def get(self, key, default=None):
        return self.payload.get(key, default) if isinstance(self.payload, dict) else default

    def __contains__(self, key) -> bool:
        return isinstance(self.payload, dict) and key in self.payload


@dataclasses.dataclass(frozen=True)
class LogEntry:
    """One raw WebSocket message; direction "in" = from the charge point, "out" = to it."""

    time: float
    wall: datetime
    cp_id: str
    direction: str
    text: str | bytes


@dataclasses.dataclass(frozen=True)
class Violation:
    """Something a charge point sent that the ocpp library (or OCPP-J framing) refuses."""

    time: float
    cp_id: str
    code: str
    description: str
    frame: str | bytes
    action: str | None = None


@dataclasses.dataclass(frozen=True)
class Handshake:
    """One opening handshake attempt and the HTTP status it got (101 = accepted)."""

    time: float
    path: str
    cp_id: str | None
    subprotocols: tuple[str, ...]
    user: str | None  # user name from a Basic Authorization header
    status: int
    reason: str
    headers: tuple[tuple[str, str], ...]


class _SyncList:
    """Append-only-from-the-loop list readable from any thread; waiters use the shared condition."""

    def __init__(self, cond: threading.Condition):
        self._cond = cond
        self._items: list = []

    def _append(self, item) -> None:
        with self._cond:
            self._items.append(item)
            self._cond.notify_all()

    def snapshot(self) -> list:
        with self._cond:
            return list(self._items)

    def clear(self) -> None:
        with self._cond:
            self._items.clear()

    def __len__(self) -> int:
        with self._cond:
            return len(self._items)

    def __getitem__(self, index):
        with self._cond:
            return self._items[index]

    def __iter__(self):
        return iter(self.snapshot())

    def __bool__(self) -> bool:
        return len(self) > 0

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.snapshot()!r})"


def _utc_iso(moment: datetime) -> str:
    return moment.astimezone(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _as_payload_object(action: str, payload: Mapping):
    """Wrap a camelCase dict in a dataclass so ocpp's serialisation passes it through unchanged.

    ocpp serialises handler results with dataclasses.asdict and snake_to_camel_case; keys that
    are already camelCase (no underscore) come out as they went in.
    """
    return _payload_class(action, tuple(payload))(**payload)


@functools.lru_cache(maxsize=512)
def _payload_class(action: str, keys: tuple[str, ...]):
    # Made once per shape: building a dataclass runs exec(), and CPython 3.11 can fail
    # inside exec() when a dead event loop's coroutine is finalised at that moment.
    return dataclasses.make_dataclass(action, [(key, Any) for key in keys])


class _CsmsSide(_OcppChargePoint):
    """The CSMS end of one charge point's WebSocket connection."""

    def __init__(self, cp_id: str, connection: ServerConnection, csms: "LocalCsms"):
        super().__init__(cp_id, connection, logger=_OCPP_LOGGER)
        self.csms = csms
        self.peercert: dict | None = None
        self.closed = asyncio.Event()
        self._calls: asyncio.Queue = asyncio.Queue()
        self._current: Received | None = None
        self._silent_uid: str | None = None
        self._pending: dict[str, tuple[str, asyncio.Future]] = {}
        self._raw_waiters: collections.deque[asyncio.Future] = collections.deque()

    # ---- receiving ----------------------------------------------------------------------
    def frame_in(self, text: str | bytes) -> None:
        """Log a frame, record CALLs in arrival order and route answers to their waiters."""
        csms = self.csms
        csms._log_frame(self.id, "in", text)
        if isinstance(text, bytes):
            csms._violation(self.id, "FormationViolation", "binary frame (OCPP-J uses text frames)", text)
        try:
            msg = unpack(text)
        except OCPPError as error:
            csms._violation(self.id, error.code, f"{error.description}: {error.details}", text)
            return
        if msg.message_type_id == MessageType.Call:
            record = csms._record_call(self.id, msg)
            self._calls.put_nowait((text, record))
            return
        pending = self._pending.get(msg.unique_id)
        if pending is not None and not pending[1].done():
            action, future = pending
            future.set_result(msg)
            csms._print_message("in", self.id, action, msg)
            return
        while self._raw_waiters:
            waiter = self._raw_waiters.popleft()
            if not waiter.done():
                waiter.set_result(json.loads(text))
                return
        LOGGER.warning("%s: answer with unknown id dropped: %s", self.id, text)

    async def work(self) -> None:
        """Answer CALLs one at a time, in arrival order, while frame_in keeps reading."""
        while True:
            text, record = await self._calls.get()
            self._current = record
            if not self.csms._should_respond(record.action):
                self._silent_uid = record.unique_id
            skip = not self.csms.validate
            for route in self.route_map.values():
                route["_skip_schema_validation"] = skip
            try:
                await self.route_message(text)
            except ConnectionClosed:
                return
            except Exception:  # noqa: BLE001 - a bad handler must not stop the connection
                LOGGER.exception("%s: error while answering %s", self.id, record.action)
            finally:
                if self._silent_uid == record.unique_id:
                    self.csms._print_line(self.id, "←", f"{record.action}: (no response)")
                self._current = None
                self._silent_uid = None

    async def _handle_call(self, msg):
        record = self._current
        if msg.action not in self.route_map:
            self.csms._violation(
                self.id, "NotImplemented", f"unknown action {msg.action!r}", _call_text(msg), msg.action, record
            )
        elif self.csms.validate:
            try:
                await validate_payload(Call(msg.unique_id, msg.action, copy.deepcopy(msg.payload)), OCPP_VERSION)
            except OCPPError as error:
                cause = error.details.get("cause") if isinstance(error.details, dict) else error.details
                # ocpp appends the whole schema to some causes; the first line says what is wrong.
                cause = str(cause or error.description).split("\n", 1)[0]
                self.csms._violation(self.id, error.code, cause, _call_text(msg), msg.action, record)
                raise
        try:
            return await super()._handle_call(msg)
        except OCPPError as error:
            if msg.action in self.route_map:
                LOGGER.error("%s: the response configured for %s breaks the schema: %s", self.id, msg.action, error)
            raise

    async def answer(self) -> Any:
        record = self._current
        assert record is not None
        response = await self.csms._response_for(self.id, record.action, record.payload)
        if response is NO_RESPONSE:
            self._silent_uid = record.unique_id
            response = {}
        return _as_payload_object(record.action, response)

    # One @on handler per charge-point-initiated action; all share answer().
    @on(Action.authorize)
    async def on_authorize(self, call_unique_id, **_):
        return await self.answer()

    @on(Action.boot_notification)
    async def on_boot_notification(self, call_unique_id, **_):
        return await self.answer()

    @on(Action.data_transfer)
    async def on_data_transfer(self, call_unique_id, **_):
        return await self.answer()

    @on(Action.diagnostics_status_notification)
    async def on_diagnostics_status_notification(self, call_unique_id, **_):
        return await self.answer()

    @on(Action.firmware_status_notification)
    async def on_firmware_status_notification(self, call_unique_id, **_):
        return await self.answer()

    @on(Action.heartbeat)
    async def on_heartbeat(self, call_unique_id, **_):
        return await self.answer()

    @on(Action.meter_values)
    async def on_meter_values(self, call_unique_id, **_):
        return await self.answer()

    @on(Action.start_transaction)
    async def on_start_transaction(self, call_unique_id, **_):
        return await self.answer()

    @on(Action.status_notification)
    async def on_status_notification(self, call_unique_id, **_):
        return await self.answer()

    @on(Action.stop_transaction)
    async def on_stop_transaction(self, call_unique_id, **_):
        return await self.answer()

    @on(Action.security_event_notification)
    async def on_security_event_notification(self, call_unique_id, **_):
        return await self.answer()

    @on(Action.sign_certificate)
    async def on_sign_certificate(self, call_unique_id, **_):
        return await self.answer()

    @on(Action.log_status_notification)
    async def on_log_status_notification(self, call_unique_id, **_):
        return await self.answer()

    @on(Action.signed_firmware_status_notification)
    async def on_signed_firmware_status_notification(self, call_unique_id, **_):
        return await self.answer()

    # ---- sending ------------------------------------------------------------------------
    async def _send(self, message):
        """Every frame to the charge point goes through here: log it, or drop a swallowed answer."""
        record = self._current
        if record is not None and isinstance(message, str):
            try:
                frame = json.loads(message)
            except ValueError:
                frame = None
            if isinstance(frame, list) and len(frame) >= 3 and frame[0] in (3, 4) and frame[1] == record.unique_id:
                if self._silent_uid == record.unique_id:
                    return
                if frame[0] == 3:
                    record.reply = frame[2]
                    self.csms._print_summary("out", self.id, record.action, frame[2], "result")
                else:
                    record.error = (str(frame[2]), str(frame[3]) if len(frame) > 3 else "")
                    self.csms._print_summary(
                        "out", self.id, record.action,
                        {"errorCode": frame[2], "errorDescription": frame[3] if len(frame) > 3 else ""}, "error",
                    )
        self.csms._log_frame(self.id, "out", message)
        await self._connection.send(message)

    async def call_action(self, action: str, payload: Any, timeout: float, validate: bool) -> Any:
        """Send a CSMS-initiated CALL and return the CALLRESULT payload (raises on CALLERROR)."""
        request = Call(str(uuid.uuid4()), action, copy.deepcopy(payload))
        if validate:
            try:
                # Validate a copy: ocpp rewrites some floats as Decimal while validating, and the
                # frame must carry exactly what the caller gave.
                await validate_payload(Call(request.unique_id, action, copy.deepcopy(payload)), OCPP_VERSION)
            except OCPPError as error:
                raise SchemaViolation(
                    f"{action} payload breaks the OCPP 1.6 schema ({error.code}: {error.details}); "
                    "pass validate=False to send it anyway",
                    error, payload,
                ) from None
        future = asyncio.get_running_loop().create_future()
        try:
            async with asyncio.timeout(timeout):
                # OCPP: at most one CALL outstanding per direction.
                async with self._call_lock:
                    self._pending[request.unique_id] = (action, future)
                    self.csms._print_summary("out", self.id, action, payload, "call")
                    await self._send(request.to_json())
                    response = await future
        except TimeoutError:
            raise TimeoutError(f"{self.id} did not answer {action} within {timeout}s") from None
        except ConnectionClosed:
            raise ConnectionError(f"{self.id} disconnected") from None
        finally:
            self._pending.pop(request.unique_id, None)
            _settle(future)
        if response.message_type_id == MessageType.CallError:
            try:
                raise response.to_exception()
            except OCPPError:
                raise
            except Exception:  # the ocpp library knows no such code
                raise UnknownErrorCode(
                    str(response.error_code), response.error_description, response.error_details
                ) from None
        if validate:
            result = CallResult(response.unique_id, copy.deepcopy(response.payload), action)
            try:
                await validate_payload(result, OCPP_VERSION)
            except OCPPError as error:
                self.csms._violation(
                    self.id, error.code, f"{action}.conf: {error.details}", json.dumps(response.payload), action
                )
                raise SchemaViolation(
                    f"{self.id} answered {action} with a payload that breaks the schema "
                    f"({error.code}: {error.details})",
                    error, response.payload,
                ) from None
        return response.payload

    async def send_raw(self, text: str | bytes, expect_reply: bool, timeout: float):
        waiter = None
        if expect_reply:
            waiter = asyncio.get_running_loop().create_future()
            self._raw_waiters.append(waiter)
        try:
            self.csms._log_frame(self.id, "out", text)
            await self._connection.send(text)
            if waiter is None:
                return None
            async with asyncio.timeout(timeout):
                return await waiter
        except TimeoutError:
            raise TimeoutError(
                f"{self.id} sent no CALLRESULT/CALLERROR within {timeout}s after {text[:200]!r}"
            ) from None
        except ConnectionClosed:
            raise ConnectionError(f"{self.id} disconnected") from None
        finally:
            if waiter is not None:
                if waiter in self._raw_waiters:
                    self._raw_waiters.remove(waiter)
                _settle(waiter)

    def fail_pending(self) -> None:
        error = ConnectionError(f"{self.id} disconnected")
        for _action, future in list(self._pending.values()):
            if not future.done():
                future.set_exception(error)
        for waiter in self._raw_waiters:
            if not waiter.done():
                waiter.set_exception(error)


@dataclasses.dataclass
class Flood:
    """CALLs that ``LocalCsms.flood`` keeps sending; ``answers`` counts them by the status
    answered (or the CALLERROR code, or TimeoutError / ConnectionError)."""

    action: str
    sent: int = 0
    answers: collections.Counter = dataclasses.field(default_factory=collections.Counter)
    _future: Any = None

    def stop(self, timeout: float = 5.0) -> "Flood":
        """Stop sending (a CALL in flight is abandoned) and return self."""
        if self._future is not None:
            self._future.cancel()
            concurrent.futures.wait([self._future], timeout=timeout)
        return self

    @property
    def answered(self) -> int:
        return sum(n for outcome, n in self.answers.items()
                   if outcome not in ("TimeoutError", "ConnectionError"))


def _settle(future: asyncio.Future) -> None:
    """Cancel an abandoned future, or mark its exception as seen (no "never retrieved" noise)."""
    if not future.done():
        future.cancel()
    elif not future.cancelled():
        future.exception()


def _call_text(msg) -> str:
    return json.dumps([2, msg.unique_id, msg.action, msg.payload], default=str)


class LocalCsms:
    """A small OCPP 1.6-J Central System with a blocking API.

    Knobs (plain attributes, settable from any thread at any time): ``boot_response``,
    ``authorize_response``, ``start_transaction_response``, ``stop_transaction_response``,
    ``data_transfer_response`` (each a dict or ``callable(cp_id, payload) -> dict``),
    ``handlers[action]`` (overrides any of them; may raise an ``ocpp.exceptions.OCPPError``
    subclass to answer with that CALLERROR, or return ``NO_RESPONSE``), ``respond`` (bool, or
    a mapping action -> bool), ``answer_pings``, ``validate``, ``now``, ``frame_limit``.
    ``flood`` keeps sending one CALL at a steady rate.

    Handlers run in a worker thread, so they may use the blocking API (e.g. ``call``); the
    charge point's next CALL waits until the handler returns.
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        ssl_context=None,
        basic_auth: Mapping[str, str] | Callable[[str, str], bool] | None = None,
        subprotocols: Iterable[str] = ("ocpp1.6",),
        path_prefix: str = "/ocpp",
        *,
        heartbeat_interval: int = 300,
        printer: Callable[[str], Any] | None = None,
        log_path: str | None = None,
        ping_interval: float | None = None,
        ping_timeout: float | None = None,
        max_size: int | None = 2**20,
        close_timeout: float = 2.0,
    ):
        self.host = host
        self.port = port
        self.ssl_context = ssl_context
        self.basic_auth = basic_auth
        self.subprotocols = tuple(subprotocols)
        prefix = path_prefix.strip("/")
        self.path_prefix = f"/{prefix}" if prefix else ""
        self.heartbeat_interval = heartbeat_interval
        self.printer = printer
        self.log_path = log_path
        self.ping_interval = ping_interval
        self.ping_timeout = ping_timeout
        self.max_size = max_size
        self.close_timeout = close_timeout

        # Behaviour knobs.
        # "interval" defaults to heartbeat_interval and "currentTime" to now() when left out.
        self.boot_response: dict | Callable = {"status": "Accepted"}
        self.authorize_response: dict | Callable = {"idTagInfo": {"status": "Accepted"}}
        self.start_transaction_response: dict | Callable = {"idTagInfo": {"status": "Accepted"}}
        self.stop_transaction_response: dict | Callable | None = None  # None: Accepted when idTag given
        self.data_transfer_response: dict | Callable = {"status": "UnknownVendorId"}
        self.handlers: dict[str, dict | Callable] = {}
        self.respond: bool | Mapping[str, bool] = True
        self.answer_pings = True
        self.validate = True
        #: Close the link (code 1009) on a frame from the charge point larger than this many
        #: bytes, as a CSMS with a smaller limit than ``max_size`` does; None: no such limit.
        self.frame_limit: int | None = None
        self.now: Callable[[], datetime] = lambda: datetime.now(timezone.utc)

        self._cond = threading.Condition()
        self.received = _SyncList(self._cond)
        self.log = _SyncList(self._cond)
        self.violations = _SyncList(self._cond)
        self.handshakes = _SyncList(self._cond)
        #: (cp_id, bytes) of every frame the link was closed on because of ``frame_limit``.
        self.oversized = _SyncList(self._cond)
        self._sessions: dict[str, _CsmsSide] = {}
        self._counts: collections.Counter[str] = collections.Counter()
        self._peercerts: dict[str, dict | None] = {}
        self._transaction_ids = itertools.count(1)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._server = None
        self._log_file = None
        self._lifecycle = threading.Lock()

    # ---- lifecycle ----------------------------------------------------------------------
    @property
    def url(self) -> str:
        """Base URL; a charge point connects to ``url + "/" + chargePointId``."""
        host = self.host if self.host not in ("", "0.0.0.0", "::") else "127.0.0.1"
        if ":" in host:
            host = f"[{host}]"
        scheme = "wss" if self.ssl_context is not None else "ws"
        return f"{scheme}://{host}:{self.port}{self.path_prefix}"

    def url_for(self, cp_id: str) -> str:
        return f"{self.url}/{quote(cp_id, safe='')}"

    @property
    def running(self) -> bool:
        return self._server is not None

    def start(self) -> "LocalCsms":
        """Listen (on ``port``; 0 picks a free port, kept for ``restart``); returns when ready."""
        with self._lifecycle:
            if self._server is not None:
                return self
            if self.log_path and self._log_file is None:
                self._log_file = open(self.log_path, "a", encoding="utf-8")
            loop = asyncio.new_event_loop()
            thread = threading.Thread(target=loop.run_forever, name="local-csms", daemon=True)
            thread.start()
            self._loop, self._thread = loop, thread
            try:
                asyncio.run_coroutine_threadsafe(self._open(), loop).result(timeout=10)
            except BaseException:
                self._shutdown_loop()
                if self._log_file is not None:
                    self._log_file.close()
                    self._log_file = None
                raise
        self._print_line(None, "", f"Central System listening on {self.url}/<chargePointId>")
        return self

    def stop(self, graceful: bool = True) -> None:
        """Stop listening and close every connection (graceful=False: abort, as in a crash)."""
        with self._lifecycle:
            if self._loop is None:
                return
            try:
                if self._server is not None:
                    future = asyncio.run_coroutine_threadsafe(self._close(graceful), self._loop)
                    try:
                        future.result(timeout=self.close_timeout + 10)
                    except concurrent.futures.TimeoutError:
                        # A connection handler did not end in time; _shutdown_loop below
                        # cancels and finishes whatever is left.
                        future.cancel()
            finally:
                self._server = None
                self._shutdown_loop()
                if self._log_file is not None:
                    self._log_file.close()
                    self._log_file = None
        self._print_line(None, "", "Central System stopped")

    def restart(self, graceful: bool = True) -> None:
        """Stop, then listen again on the same port (charge points must reconnect)."""
        self.stop(graceful)
        self.start()

    def __enter__(self) -> "LocalCsms":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def _shutdown_loop(self) -> None:
        loop, thread = self._loop, self._thread
        self._loop = self._thread = None
        if loop is None:
            return
        loop.call_soon_threadsafe(loop.stop)
        if thread is not None:
            thread.join(timeout=10)
        if not loop.is_running():
            # Finish every task here rather than leave coroutines for the garbage
            # collector to finalise later in some other thread.
            pending = asyncio.all_tasks(loop)
            for task in pending:
                task.cancel()
            if pending:
                loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.run_until_complete(loop.shutdown_default_executor())
            loop.close()

    async def _open(self) -> None:
        csms = self

        class _Connection(ServerConnection):
            """Server connection whose automatic pong can be withheld (``answer_pings``).

            websockets answers a ping inside its sans-I/O protocol (recv_frame sends a PONG
            through protocol.send_frame) before any application code sees it, so the only
            hook is that send_frame: drop PONG frames there while answer_pings is False.
            Everything else, including our own pings, is untouched.
            """

            def __init__(self, protocol, *args, **kwargs):
                send_frame = protocol.send_frame

                def filtered(frame):
                    if frame.opcode is Opcode.PONG and not csms.answer_pings:
                        return
                    send_frame(frame)

                protocol.send_frame = filtered
                super().__init__(protocol, *args, **kwargs)

        self._server = await serve(
            self._handle,
            self.host,
            self.port,
            ssl=self.ssl_context,
            subprotocols=list(self.subprotocols) or None,
            process_request=self._process_request,
            process_response=self._process_response,
            create_connection=_Connection,
            ping_interval=self.ping_interval,
            ping_timeout=self.ping_timeout,
            close_timeout=self.close_timeout,
            max_size=self.max_size,
        )
        self.port = self._server.sockets[0].getsockname()[1]

    async def _close(self, graceful: bool) -> None:
        server = self._server
        if not graceful:
            for session in list(self._sessions.values()):
                session._connection.transport.abort()
        server.close()
        await server.wait_closed()
        # Let cancelled workers and handler tasks finish before the loop stops.
        others = [task for task in asyncio.all_tasks() if task is not asyncio.current_task()]
        for task in others:
            task.cancel()
        if others:
            # A handler thread may be waiting on this very loop; do not wait for it forever
            # (_shutdown_loop finishes whatever is left).
            await asyncio.wait(others, timeout=2)

    # ---- handshake ----------------------------------------------------------------------
    def _cp_id_from_path(self, path: str) -> str | None:
        path = urlsplit(path).path
        if not path.startswith(self.path_prefix + "/"):
            return None
        cp_id = unquote(path.rstrip("/").rsplit("/", 1)[-1])
        if not cp_id or path.rstrip("/") == self.path_prefix:
            return None
        return cp_id

    def _check_auth(self, cp_id: str, header: str | None) -> tuple[str | None, str | None]:
        """Return (user, refusal reason or None) for a Basic Authorization header."""
        if not header:
            return None, "missing Authorization header"
        scheme, _, data = header.strip().partition(" ")
        if scheme.lower() != "basic":
            return None, f"unsupported authorization scheme {scheme!r}"
        try:
            decoded = base64.b64decode(data.strip(), validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            return None, "malformed Basic credentials"
        user, sep, password = decoded.partition(":")
        if not sep:
            return user, "malformed Basic credentials"
        if user != cp_id:
            return user, f"user {user!r} is not the charge point id {cp_id!r}"
        creds = self.basic_auth
        if callable(creds):
            ok = bool(creds(cp_id, password))
        else:
            expected = creds.get(cp_id) if creds is not None else None
            ok = expected is not None and hmac.compare_digest(password.encode(), str(expected).encode())
        return user, None if ok else "wrong password"

    def _process_request(self, connection: ServerConnection, request):
        connection.csms_refusal = None
        connection.csms_user = None
        cp_id = self._cp_id_from_path(request.path)
        if cp_id is None:
            connection.csms_refusal = f"path must be {self.path_prefix}/<chargePointId>"
            return connection.respond(HTTPStatus.NOT_FOUND, connection.csms_refusal + "\n")
        if self.basic_auth is not None:
            user, refusal = self._check_auth(cp_id, request.headers.get("Authorization"))
            connection.csms_user = user
            if refusal is not None:
                connection.csms_refusal = refusal
                response = connection.respond(HTTPStatus.UNAUTHORIZED, "Unauthorized\n")
                response.headers["WWW-Authenticate"] = 'Basic realm="OCPP", charset="UTF-8"'
                return response
        return None

    def _process_response(self, connection: ServerConnection, request, response):
        cp_id = self._cp_id_from_path(request.path)
        offered = tuple(
            p.strip()
            for value in request.headers.get_all("Sec-WebSocket-Protocol")
            for p in value.split(",")
            if p.strip()
        )
        reason = getattr(connection, "csms_refusal", None) or response.reason_phrase
        if response.status_code != 101 and not getattr(connection, "csms_refusal", None):
            reason = response.body.decode("utf-8", "replace").strip() or reason
        user = getattr(connection, "csms_user", None)
        if user is None and self.basic_auth is None:
            header = request.headers.get("Authorization")
            if header and header.lower().startswith("basic "):
                user, _ = self._check_auth(cp_id or "", header)
        self.handshakes._append(
            Handshake(time.monotonic(), request.path, cp_id, offered, user, response.status_code, reason,
                      tuple(request.headers.raw_items()))
        )
        if response.status_code != 101:
            self._print_line(cp_id, "", f"refused: HTTP {response.status_code} ({reason})")
        return None

    # ---- connections --------------------------------------------------------------------
    async def _handle(self, connection: ServerConnection) -> None:
        cp_id = self._cp_id_from_path(connection.request.path)
        side = _CsmsSide(cp_id, connection, self)
        side.peercert = connection.transport.get_extra_info("peercert") or None
        with self._cond:
            old = self._sessions.get(cp_id)
            self._sessions[cp_id] = side
            self._counts[cp_id] += 1
            self._peercerts[cp_id] = side.peercert
            self._cond.notify_all()
        self._log_event(cp_id, "connected")
        details = [connection.subprotocol or "no subprotocol"]
        if side.peercert:
            subject = _subject(side.peercert)
            details.append("client certificate " + ", ".join(f"{k}={v}" for k, v in subject.items()))
        self._print_line(cp_id, "", f"connected ({'; '.join(details)})")
        if old is not None:
            LOGGER.info("%s: new connection replaces the previous one", cp_id)
            asyncio.ensure_future(old._connection.close(1000, "replaced by a new connection"))
        worker = asyncio.ensure_future(side.work())
        try:
            async for frame in connection:
                limit = self.frame_limit
                size = len(frame) if isinstance(frame, bytes) else len(frame.encode("utf-8", "replace"))
                if limit is not None and size > limit:
                    # As a CSMS with a smaller frame limit does: the link ends on the frame.
                    self.oversized._append((cp_id, size))
                    self._log_event(cp_id, "frame too big", size=size)
                    self._print_line(cp_id, "", f"frame of {size} bytes is over {limit}: closing")
                    await connection.close(1009, f"frame over {limit} bytes")
                    break
                try:
                    side.frame_in(frame)
                except Exception as error:  # noqa: BLE001 - e.g. an unhashable unique id
                    self._violation(cp_id, "ProtocolError", f"unusable frame: {error!r}", frame)
        except ConnectionClosed:
            pass
        finally:
            worker.cancel()
            side.fail_pending()
            with self._cond:
                if self._sessions.get(cp_id) is side:
                    del self._sessions[cp_id]
                self._cond.notify_all()
            side.closed.set()
            code = connection.close_code
            self._log_event(cp_id, "disconnected", code=code)
            self._print_line(cp_id, "", f"disconnected (close code {code})")

    def _session(self, cp_id: str) -> _CsmsSide:
        with self._cond:
            session = self._sessions.get(cp_id)
        if session is None:
            raise ConnectionError(f"{cp_id} is not connected")
        return session

    def connected(self, cp_id: str) -> bool:
        with self._cond:
            return cp_id in self._sessions

    def connection_count(self, cp_id: str) -> int:
        """How many WebSocket connections ``cp_id`` has opened since this object was created."""
        with self._cond:
            return self._counts[cp_id]

    def wait_connected(self, cp_id: str, timeout: float = 5.0, count: int | None = None) -> int:
        """Wait until ``cp_id`` is connected (and has connected at least ``count`` times)."""
        def ready():
            return cp_id in self._sessions and (count is None or self._counts[cp_id] >= count)

        with self._cond:
            if not self._cond.wait_for(ready, timeout):
                raise TimeoutError(
                    f"{cp_id} not connected{'' if count is None else f' {count} times'} within {timeout}s "
                    f"(connections so far: {self._counts[cp_id]}; handshakes: "
                    f"{[(h.path, h.status, h.reason) for h in self.handshakes._items[-5:]]})"
                )
            return self._counts[cp_id]

    def wait_disconnected(self, cp_id: str, timeout: float = 5.0) -> None:
        with self._cond:
            if not self._cond.wait_for(lambda: cp_id not in self._sessions, timeout):
                raise TimeoutError(f"{cp_id} still connected after {timeout}s")

    def peer_certificate(self, cp_id: str) -> dict | None:
        """The verified client certificate (``ssl.getpeercert()`` form) of cp_id's last connection."""
        with self._cond:
            return self._peercerts.get(cp_id)

    def peer_subject(self, cp_id: str) -> dict[str, str] | None:
        """Subject of cp_id's client certificate, e.g. ``{"commonName": "CP-1"}``; None without one."""
        cert = self.peer_certificate(cp_id)
        return _subject(cert) if cert else None

    # ---- acting -------------------------------------------------------------------------
    def _run(self, coro, timeout: float):
        loop = self._loop
        if loop is None:
            coro.close()
            raise ConnectionError("the Central System is not running")
        if threading.current_thread() is self._thread:
            coro.close()
            raise RuntimeError("blocking LocalCsms call from inside its own event loop")
        return asyncio.run_coroutine_threadsafe(coro, loop).result(timeout)

    def call(self, cp_id: str, action: str, payload: Mapping | None = None, timeout: float = 10.0,
             validate: bool = True) -> Any:
        """Send a CSMS-initiated CALL and return the CALLRESULT payload.

        A CALLERROR raises the matching ``ocpp.exceptions.OCPPError`` subclass (``.code``);
        a payload or answer that breaks the schema raises SchemaViolation (unless validate=False);
        no answer within ``timeout`` raises TimeoutError; a lost connection ConnectionError.
        """
        session = self._session(cp_id)
        payload = {} if payload is None else payload
        return self._run(session.call_action(action, payload, timeout, validate), timeout + 5)

    def flood(self, cp_id: str, action: str, payload: Mapping | None = None, per_second: float = 200.0,
              timeout: float = 10.0, validate: bool = True) -> "Flood":
        """Send ``action`` to cp_id ``per_second`` times a second until ``stop()`` is called on
        the returned Flood: a CSMS that asks faster than it listens. One CALL is outstanding
        at a time, as OCPP-J requires, so a slow answer slows the flood down."""
        session = self._session(cp_id)
        payload = {} if payload is None else payload
        flood = Flood(action)

        async def run():
            loop = asyncio.get_running_loop()
            start = loop.time()
            while True:
                flood.sent += 1
                try:
                    reply = await session.call_action(action, payload, timeout, validate)
                    outcome = str(reply.get("status", "answered")) if isinstance(reply, dict) else "answered"
                except OCPPError as error:
                    outcome = error.code
                except (TimeoutError, ConnectionError) as error:
                    flood.answers[type(error).__name__] += 1
                    if isinstance(error, ConnectionError):
                        return
                    continue
                flood.answers[outcome] += 1
                await asyncio.sleep(max(0.0, start + flood.sent / per_second - loop.time()))

        flood._future = asyncio.run_coroutine_threadsafe(run(), self._loop)
        return flood

    def send_raw(self, cp_id: str, text: str | bytes, expect_reply: bool = True, timeout: float = 5.0):
        """Send any frame; return the charge point's next CALLRESULT/CALLERROR as a parsed list."""
        session = self._session(cp_id)
        return self._run(session.send_raw(text, expect_reply, timeout), timeout + 5)

    def drop(self, cp_id: str, graceful: bool = False, timeout: float = 5.0) -> bool:
        """Close cp_id's connection: abort the TCP connection (network loss) or, if graceful,
        a normal close handshake. Returns once the CSMS has forgotten the connection."""
        with self._cond:
            session = self._sessions.get(cp_id)
        if session is None:
            return False

        async def _drop():
            if graceful:
                await session._connection.close(1000, "closed by the Central System")
            else:
                session._connection.transport.abort()
            await session.closed.wait()

        self._run(_drop(), timeout)
        return True

    # ---- observing ----------------------------------------------------------------------
    def records(self, action: str | Iterable[str] | None = None, cp_id: str | None = None,
                after: int = 0) -> list[Received]:
        """Received CALLs (index >= after) filtered by action(s) and charge point."""
        actions = _action_set(action)
        return [
            r for r in self.received.snapshot()[after:]
            if (actions is None or r.action in actions) and (cp_id is None or r.cp_id == cp_id)
        ]

    def wait_for(self, action: str | Iterable[str] | None, predicate: Callable[[Received], bool] | None = None,
                 timeout: float = 5.0, after: int = 0, cp_id: str | None = None) -> Received:
        """Return the first received CALL with index >= ``after`` matching action and predicate.

        The predicate gets the Received record; ``rec["key"]`` reads its payload. Raises
        TimeoutError listing what did arrive.
        """
        actions = _action_set(action)
        deadline = time.monotonic() + timeout
        scanned = after
        with self._cond:
            while True:
                items = self.received._items
                for record in items[scanned:]:
                    if (actions is None or record.action in actions) and (cp_id is None or record.cp_id == cp_id):
                        if predicate is None or predicate(record):
                            return record
                scanned = max(scanned, len(items))
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError(self._wait_failure(action, predicate, timeout, after, cp_id))
                self._cond.wait(remaining)

    def _wait_failure(self, action, predicate, timeout, after, cp_id) -> str:
        what = action if action is not None else "any CALL"
        lines = [
            f"no {what}{f' from {cp_id}' if cp_id else ''}"
            f"{' matching the predicate' if predicate else ''} within {timeout}s (index >= {after}); received:"
        ]
        items = self.received._items
        for record in items[-40:]:
            text = json.dumps(record.payload, default=str)
            lines.append(f"  [{record.index}] {record.cp_id} {record.action} {text[:160]}")
        if not items:
            lines.append("  (nothing)")
        if self.violations._items:
            lines.append("violations: " + "; ".join(f"{v.cp_id} {v.code} {v.description}" for v in self.violations._items[-5:]))
        return "\n".join(lines)

    def assert_no_violations(self) -> None:
        """Fail if a charge point sent anything the ocpp library refused."""
        found = self.violations.snapshot()
        if found:
            raise AssertionError(
                "the charge point sent messages that break OCPP 1.6:\n"
                + "\n".join(f"  {v.cp_id} {v.action or ''} {v.code}: {v.description} <- {str(v.frame)[:200]}" for v in found)
            )

    # ---- internals (loop thread) ------------------------------------------------------------
    def _should_respond(self, action: str) -> bool:
        respond = self.respond
        if isinstance(respond, Mapping):
            return bool(respond.get(action, True))
        return bool(respond)

    def _record_call(self, cp_id: str, msg) -> Received:
        with self._cond:
            record = Received(
                index=len(self.received._items), time=time.monotonic(), wall=datetime.now(timezone.utc),
                cp_id=cp_id, action=msg.action, payload=msg.payload, unique_id=msg.unique_id,
            )
            self.received._append(record)
        self._print_summary("in", cp_id, msg.action, msg.payload, "call")
        return record

    def _violation(self, cp_id, code, description, frame, action=None, record=None) -> None:
        if record is not None:
            record.violation = f"{code}: {description}"
        self.violations._append(Violation(time.monotonic(), cp_id, code, description, frame, action))
        LOGGER.warning("%s sent a message that breaks OCPP 1.6 (%s): %s", cp_id, code, description)

    async def _response_for(self, cp_id: str, action: str, payload: Any) -> Any:
        handler = self.handlers.get(action)
        if handler is None:
            handler = {
                "BootNotification": self.boot_response,
                "Authorize": self.authorize_response,
                "StartTransaction": self.start_transaction_response,
                "StopTransaction": self.stop_transaction_response,
                "DataTransfer": self.data_transfer_response,
            }.get(action)
        if callable(handler):
            try:
                result = await asyncio.to_thread(handler, cp_id, copy.deepcopy(payload))
            except OCPPError:
                raise  # injected CALLERROR
            except Exception as error:
                LOGGER.exception("%s handler for %s failed", cp_id, action)
                raise InternalError(description=f"{action} handler failed: {error!r}") from error
        else:
            result = copy.deepcopy(handler)
        if result is NO_RESPONSE:
            return result
        if result is None:
            result = self._default_response(action, payload)
        return self._complete(action, dict(result))

    def _default_response(self, action: str, payload: Any) -> dict:
        if action == "BootNotification":
            return {"status": "Accepted", "interval": self.heartbeat_interval}
        if action in ("Authorize", "StartTransaction"):
            return {"idTagInfo": {"status": "Accepted"}}
        if action == "StopTransaction":
            return {"idTagInfo": {"status": "Accepted"}} if isinstance(payload, dict) and "idTag" in payload else {}
        if action == "DataTransfer":
            return {"status": "UnknownVendorId"}
        if action == "SignCertificate":
            return {"status": "Accepted"}
        return {}

    def _complete(self, action: str, result: dict) -> dict:
        """Fill the fields a test rarely cares about: currentTime, interval, transactionId."""
        if action in ("BootNotification", "Heartbeat"):
            result.setdefault("currentTime", _utc_iso(self.now()))
        if action == "BootNotification":
            result.setdefault("interval", self.heartbeat_interval)
        if action == "StartTransaction":
            result.setdefault("idTagInfo", {"status": "Accepted"})
            if "transactionId" not in result:
                result["transactionId"] = next(self._transaction_ids)
        return result

    def _log_frame(self, cp_id: str, direction: str, text: str | bytes) -> None:
        entry = LogEntry(time.monotonic(), datetime.now(timezone.utc), cp_id, direction, text)
        self.log._append(entry)
        if self._log_file is not None:
            line: dict[str, Any] = {"time": _utc_iso(entry.wall), "cp_id": cp_id, "direction": direction}
            try:
                line["message"] = json.loads(text)
            except (ValueError, UnicodeDecodeError):
                line["message"] = None
                line["raw"] = text if isinstance(text, str) else text.decode("latin-1")
            self._write_log_line(line)

    def _log_event(self, cp_id: str, event: str, **extra) -> None:
        if self._log_file is not None:
            self._write_log_line({"time": _utc_iso(datetime.now(timezone.utc)), "cp_id": cp_id, "event": event, **extra})

    def _write_log_line(self, line: dict) -> None:
        try:
            self._log_file.write(json.dumps(line, default=str) + "\n")
            self._log_file.flush()
        except (OSError, ValueError):
            LOGGER.exception("cannot write the CSMS log %s", self.log_path)

    def _print_summary(self, direction: str, cp_id: str, action: str, payload: Any, kind: str) -> None:
        if self.printer is not None:
            self._emit(format_summary(direction, cp_id, action, payload, kind=kind))

    def _print_message(self, direction: str, cp_id: str, action: str, msg) -> None:
        if msg.message_type_id == MessageType.CallError:
            self._print_summary(direction, cp_id, action,
                                {"errorCode": msg.error_code, "errorDescription": msg.error_description}, "error")
        else:
            self._print_summary(direction, cp_id, action, msg.payload, "result")

    def _print_line(self, cp_id: str | None, arrow: str, text: str) -> None:
        if self.printer is not None:
            parts = [datetime.now().strftime("%H:%M:%S"), " "]
            if cp_id:
                parts.append(f" {cp_id}")
            if arrow:
                parts.append(f" {arrow}")
            parts.append(f" {text}")
            self._emit("".join(parts))

    def _emit(self, line: str) -> None:
        try:
            self.printer(line)
        except Exception:  # noqa: BLE001 - a broken printer must not break the protocol
            LOGGER.exception("CSMS printer failed")


def _action_set(action) -> set[str] | None:
    if action is None:
        return None
    if isinstance(action, str):
        return {action}
    return set(action)


def _subject(cert: Mapping) -> dict[str, str]:
    return {key: value for rdn in cert.get("subject", ()) for key, value in rdn}


def read_log(path: str) -> list[dict]:
    """Parse a ``log_path`` file: one dict per line ("direction"+"message", or "event")."""
    with open(path, encoding="utf-8") as handle:
        return [json.loads(line) for line in handle if line.strip()]


# ---- human-readable one-line summaries ----------------------------------------------------------

def _compact(value: Any, limit: int = 80) -> str:
    text = value if isinstance(value, str) else json.dumps(value, separators=(",", ":"), default=str)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _generic(payload: Any) -> str:
    if not isinstance(payload, dict):
        return _compact(payload, 120)
    if not payload:
        return ""
    parts = []
    for key, value in payload.items():
        shown = value if isinstance(value, (str, int, float, bool)) or value is None else _compact(value, 60)
        parts.append(f"{key}={shown}")
    return _compact(" ".join(parts), 160)


def _number(text: Any) -> float | None:
    try:
        return float(text)
    except (TypeError, ValueError):
        return None


def _fmt(value: float) -> str:
    return f"{value:.1f}".rstrip("0").rstrip(".") if value != int(value) else str(int(value))


def _meter_summary(meter_values: Any) -> str:
    """Energy and power of the last sample, e.g. "1234 Wh, 7.2 kW"."""
    if not isinstance(meter_values, list) or not meter_values:
        return ""
    sample = meter_values[-1] if isinstance(meter_values[-1], dict) else {}
    values = [v for v in sample.get("sampledValue", []) if isinstance(v, dict)]
    parts, others = [], 0
    for value in values:
        measurand = value.get("measurand", "Energy.Active.Import.Register")
        unit = value.get("unit", "Wh" if measurand.startswith("Energy") else "")
        number = _number(value.get("value"))
        if value.get("phase"):
            others += 1
        elif measurand == "Energy.Active.Import.Register" and number is not None:
            parts.append(f"{_fmt(number)} {unit}")
        elif measurand == "Power.Active.Import" and number is not None:
            kw = number / 1000 if unit in ("W", "") else number
            parts.append(f"{kw:.1f} kW")
        else:
            others += 1
    if others:
        parts.append(f"+{others} more")
    if len(meter_values) > 1:
        parts.append(f"({len(meter_values)} samples)")
    return ", ".join(parts)


def _call_summary(action: str, p: dict) -> str:
    if action == "BootNotification":
        text = f"vendor={p.get('chargePointVendor')} model={p.get('chargePointModel')}"
        for key, label in (("chargePointSerialNumber", "serial"), ("firmwareVersion", "firmware")):
            if key in p:
                text += f" {label}={p[key]}"
        return text
    if action == "StatusNotification":
        text = f"connector {p.get('connectorId')}: {p.get('status')}"
        extra = [str(p[k]) for k in ("errorCode", "info", "vendorErrorCode") if k in p and p[k] != "NoError"]
        return text + (f" ({', '.join(extra)})" if extra else "")
    if action == "MeterValues":
        text = f"connector {p.get('connectorId')}"
        if "transactionId" in p:
            text += f" transaction {p['transactionId']}"
        return f"{text}: {_meter_summary(p.get('meterValue'))}"
    if action == "Authorize":
        return f"idTag={p.get('idTag')}"
    if action == "StartTransaction":
        text = f"connector {p.get('connectorId')} idTag={p.get('idTag')} meterStart={p.get('meterStart')} Wh"
        return text + (f" reservation={p['reservationId']}" if "reservationId" in p else "")
    if action == "StopTransaction":
        text = f"transaction {p.get('transactionId')} meterStop={p.get('meterStop')} Wh"
        for key in ("reason", "idTag"):
            if key in p:
                text += f" {key}={p[key]}"
        if p.get("transactionData"):
            text += f" +{len(p['transactionData'])} meter values"
        return text
    if action == "DataTransfer":
        text = f"vendorId={p.get('vendorId')}"
        return text + (f" messageId={p['messageId']}" if "messageId" in p else "")
    if action in ("DiagnosticsStatusNotification", "FirmwareStatusNotification",
                  "LogStatusNotification", "SignedFirmwareStatusNotification"):
        return str(p.get("status")) + (f" requestId={p['requestId']}" if "requestId" in p else "")
    if action == "SecurityEventNotification":
        return f"{p.get('type')}" + (f" ({p['techInfo']})" if "techInfo" in p else "")
    if action == "SignCertificate":
        return f"CSR ({len(str(p.get('csr', '')))} chars)"
    if action == "ChangeConfiguration":
        return f"{p.get('key')} = {p.get('value')}"
    if action == "RemoteStartTransaction":
        return f"idTag={p.get('idTag')}" + (f" connector {p['connectorId']}" if "connectorId" in p else "")
    if action == "RemoteStopTransaction":
        return f"transaction {p.get('transactionId')}"
    if action == "TriggerMessage":
        return str(p.get("requestedMessage")) + (f" connector {p['connectorId']}" if "connectorId" in p else "")
    return _generic(p)


def _result_summary(action: str, p: dict) -> str:
    if action == "BootNotification":
        return f"{p.get('status')} interval={p.get('interval')}s"
    if action == "Heartbeat":
        return f"currentTime={p.get('currentTime')}"
    if action == "StartTransaction":
        status = (p.get("idTagInfo") or {}).get("status")
        return f"{status}, transaction id {p.get('transactionId')}"
    if isinstance(p.get("idTagInfo"), dict):
        return str(p["idTagInfo"].get("status"))
    if action == "GetConfiguration":
        keys = p.get("configurationKey") or []
        text = f"{len(keys)} keys"
        return text + (f", unknown: {', '.join(map(str, p['unknownKey']))}" if p.get("unknownKey") else "")
    if "status" in p:
        rest = {k: v for k, v in p.items() if k != "status"}
        return str(p["status"]) + (f" {_generic(rest)}" if rest else "")
    return _generic(p) or "ok"


def format_summary(direction: str, cp_id: str, action: str, payload: Any, *, kind: str = "call",
                   when: datetime | float | None = None) -> str:
    """One readable line for a message, e.g. ``12:00:01  CP-1 → BootNotification  vendor=X model=Y``.

    direction: "in" (charge point → CSMS, shown →) or "out" (CSMS → charge point, shown ←).
    kind: "call", "result" (payload = CALLRESULT payload) or "error"
    (payload = {"errorCode", "errorDescription"}).
    """
    if when is None:
        moment = datetime.now()
    elif isinstance(when, datetime):
        moment = when.astimezone() if when.tzinfo else when
    else:
        moment = datetime.fromtimestamp(when)
    arrow = "→" if direction == "in" else "←"
    stamp = moment.strftime("%H:%M:%S")
    if kind == "error":
        p = payload if isinstance(payload, dict) else {}
        text = f"{action} CALLERROR {p.get('errorCode')}"
        if p.get("errorDescription"):
            text += f": {p['errorDescription']}"
        return f"{stamp}  {cp_id} {arrow} {text}"
    if kind == "result":
        body = _result_summary(action, payload) if isinstance(payload, dict) else _compact(payload)
        return f"{stamp}  {cp_id} {arrow} {action}.conf {body}".rstrip()
    body = _call_summary(action, payload) if isinstance(payload, dict) else _compact(payload)
    return f"{stamp}  {cp_id} {arrow} {action}  {body}".rstrip()
