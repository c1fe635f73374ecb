"""The OCPP-J RPC endpoint: our CALLs one at a time with their deadline, the CSMS's frames
sorted into events. No socket, no charger.

Like the `websockets` library's `protocol.py` or h11's `Connection`: the station hands
it text frames (`receive`) and asks it for the next frame to send (`next_call`,
`answer`, `answer_error`); every frame it produces is appended to `outgoing`, which
the owner drains in order (`take_outgoing`). Time is what the owner says it is.

- At most one CALL of ours is outstanding (OCPP-J 4.1.1); the rest wait in a bounded,
  coalescing `CallQueue` (chargepoint/protocol/calls.py), or, for transaction messages,
  in the durable outbox, which the endpoint reads through `TransactionSource`.
- A frame the CSMS sends becomes one event: `CallReceived` (to be answered),
  `ResultReceived` / `ErrorReceived` (the answer to our CALL in flight); malformed
  frames are answered here with the right CALLERROR and produce no event.
- Frames reach the log only through `redaction.redact`.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Optional, Protocol, Union

from chargepoint.model.link import CONNECTION, OTHER, OnError, OnResult, QueuedMessage
from chargepoint.protocol import ocppj
from chargepoint.protocol.calls import CallQueue, Outgoing
from chargepoint.protocol.redaction import redact

log = logging.getLogger("chargepoint.rpc")


@dataclass(frozen=True)
class CallReceived:
    """The CSMS sent a CALL (framing checked, payload not yet validated)."""

    call: ocppj.Call


@dataclass(frozen=True)
class ResultReceived:
    """The CSMS answered our CALL `out` with a payload that fits the schema."""

    out: Outgoing
    payload: dict


@dataclass(frozen=True)
class ErrorReceived:
    """Our CALL `out` failed: `reason` is the CALLERROR's code (or the code of the
    schema violation in the CSMS's answer)."""

    out: Outgoing
    reason: str
    #: The CSMS's answer was itself not valid (a CALLRESULT against its schema), rather
    #: than a CALLERROR it sent.
    invalid: bool = False


@dataclass(frozen=True)
class MalformedFrame:
    """A frame that is not OCPP-J (not JSON, a wrong MessageTypeId, a bad UniqueId, too
    long): already answered with a CALLERROR here when it could be, or dropped. `code` is
    the CALLERROR's code."""

    code: str
    answered: bool


Event = Union[CallReceived, ResultReceived, ErrorReceived, MalformedFrame]


class TransactionSource(Protocol):
    """The durable queue of transaction messages, as the turn rule reads it
    (chargepoint/model/delivery.py)."""

    def ready(self) -> bool:
        """A transaction message may be sent now."""

    def next_message(self) -> Optional[QueuedMessage]:
        """The message to send now (None: none may go)."""


class RpcEndpoint:
    """One end of an OCPP-J connection, without I/O. Not thread-safe: one loop owns it."""

    def __init__(self, response_timeout_s: float = 30.0, max_frame_bytes: int = 262144,
                 strict_schema: bool = True, log_frames: bool = False):
        self.response_timeout_s = response_timeout_s
        self.max_frame_bytes = max_frame_bytes
        self.strict_schema = strict_schema
        self.log_frames = log_frames
        self.connected = False
        #: The CSMS has answered a CALL of ours on the present connection.
        self.answered_on_link = False
        self.calls = CallQueue()
        #: Our CALL awaiting its answer, and when it stops waiting.
        self.inflight: Optional[Outgoing] = None
        self.deadline: Optional[float] = None
        #: A transaction message was ready when another CALL took the turn: it goes next.
        self._tx_passed_over = False
        #: Frames produced and not yet taken by the owner, in order.
        self.outgoing: list[str] = []
        self.stats = {"frames_in": 0, "frames_out": 0, "errors_answered": 0}

    # ------------------------------------------------------------------ the connection
    def connection_made(self) -> None:
        self.connected = True
        self.answered_on_link = False
        self._tx_passed_over = False

    def connection_lost(self) -> list[Outgoing]:
        """The link is gone: every CALL waiting or in flight is dropped and returned (in
        flight first); their senders are to hear "offline"."""
        self.connected = False
        dropped = self.calls.clear()
        inflight = self._finish_inflight()
        if inflight is not None:
            dropped.insert(0, inflight)
        return dropped

    def take_outgoing(self) -> list[str]:
        out, self.outgoing = self.outgoing, []
        return out

    # ------------------------------------------------------------------ our CALLs
    def send_call(self, action: str, payload: dict, on_result: Optional[OnResult] = None,
                  on_error: Optional[OnError] = None, before_accept: bool = False,
                  lane: int = OTHER) -> bool:
        """Queue a CALL (merged into a waiting one of its kind; at the queue's bound it
        fails at once with "queue full"; offline with "offline"). Returns whether it will go."""
        ocppj.check_outgoing(ocppj.CALL, action, payload)
        out = Outgoing(action, payload, on_result, on_error, before_accept, lane=lane)
        if not self.connected:
            if on_error:
                on_error("offline")
            return False
        if self.calls.put(out) == "full":
            log.warning("%s not sent: %d CALLs are already waiting", action, len(self.calls))
            if on_error:
                on_error("queue full")
            return False
        return True

    def busy(self) -> bool:
        """A CALL of ours waits to be sent or answered."""
        return self.inflight is not None or bool(self.calls)

    def has_room(self, action: str, payload: dict) -> bool:
        return self.calls.has_room(action, payload)

    def queued_actions(self) -> list[str]:
        return [o.action for o in self.calls]

    def next_call(self, now: float, accepted: bool,
                  transactions: TransactionSource) -> Optional[Outgoing]:
        """Send the next CALL if connected and none of ours is outstanding; returns it."""
        if not self.connected or self.inflight is not None:
            return None
        out = self._next_outgoing(accepted, transactions)
        if out is None:
            return None
        self.inflight = out
        self.deadline = now + self.response_timeout_s
        self._send(ocppj.encode_call(out.unique_id, out.action, out.payload))
        return out

    def _next_outgoing(self, accepted: bool,
                       transactions: TransactionSource) -> Optional[Outgoing]:
        """Whose turn it is; nothing waits behind a flood of anything else.

        1. The reports that open a connection (BootNotification, every connector's
           status) go before anything: what follows makes sense to the CSMS only after them.
        2. A transaction message that was ready when another CALL last took the turn goes
           next. So when both wait they take turns: transaction messages keep their
           rate under any number of CSMS-triggered messages, and the others (a driver's
           Authorize among them) wait for at most one transaction message.
        3. Otherwise the other CALLs first, an Authorize before the rest (someone is
           standing at the charger), then the head of the transaction queue.
        Before the BootNotification is accepted only what may go then (`before_accept`)
        leaves, and no transaction message.
        """
        def may_go(out: Outgoing) -> bool:
            return accepted or out.before_accept

        out = self.calls.pop(may_go, lanes=(CONNECTION,))
        if out is not None:
            return out
        if self._tx_passed_over:
            self._tx_passed_over = False
            out = self._transaction(accepted, transactions)
            if out is not None:
                return out
        out = self.calls.pop(may_go)
        if out is not None:
            self._tx_passed_over = accepted and transactions.ready()
            return out
        return self._transaction(accepted, transactions)

    @staticmethod
    def _transaction(accepted: bool, transactions: TransactionSource) -> Optional[Outgoing]:
        message = transactions.next_message() if accepted else None
        if message is None:
            return None
        try:
            ocppj.check_outgoing(ocppj.CALL, message.action, message.payload)
        except Exception:
            log.exception("queued %s is not valid", message.action)
        return Outgoing(message.action, message.payload, on_result=message.on_result,
                        on_error=message.on_error, unique_id=message.unique_id)

    def expire(self, now: float) -> Optional[Outgoing]:
        """The CALL in flight got no answer by its deadline: dropped and returned (its
        sender is to hear "timeout")."""
        if self.inflight is None or self.deadline is None or now < self.deadline:
            return None
        out = self._finish_inflight()
        log.warning("no answer to %s within %.0f s", out.action, self.response_timeout_s)
        return out

    def _finish_inflight(self) -> Optional[Outgoing]:
        out, self.inflight, self.deadline = self.inflight, None, None
        return out

    # ------------------------------------------------------------------ frames in
    def receive(self, text: str) -> Optional[Event]:
        """A text frame from the CSMS: the event it makes, or None (a response to no call
        of ours, dropped)."""
        self.stats["frames_in"] += 1
        self._log_frame("<-", text)
        try:
            frame = ocppj.parse_frame(text, self.max_frame_bytes)
        except ocppj.FrameError as exc:
            answered = bool(exc.answerable and exc.unique_id)
            if answered:
                self.answer_error(exc.unique_id, exc.code, exc.description)
            else:
                log.warning("dropped a frame that cannot be answered: %s", exc.description)
            return MalformedFrame(exc.code, answered)
        if isinstance(frame, ocppj.Call):
            return CallReceived(frame)
        return self._on_response(frame)

    def _on_response(self, frame) -> Optional[Event]:
        out = self.inflight
        if out is None or frame.unique_id != out.unique_id:
            log.warning("dropped a response to unknown call %s", frame.unique_id)
            return None
        self._finish_inflight()
        self.answered_on_link = True
        if isinstance(frame, ocppj.CallError):
            log.warning("CSMS answered %s with CALLERROR %s: %s", out.action, frame.code,
                        frame.description)
            return ErrorReceived(out, frame.code)
        payload = frame.payload
        try:
            if not isinstance(payload, dict):
                raise ocppj.OcppError("FormationViolation", "response payload is not an object")
            ocppj.validate_payload(ocppj.CALLRESULT, out.action, payload, strict=False)
        except ocppj.OcppError as exc:
            log.warning("CSMS's answer to %s violates the schema (%s); treated as an error",
                        out.action, exc)
            return ErrorReceived(out, exc.code, invalid=True)
        return ResultReceived(out, payload)

    def check_call(self, call: ocppj.Call, supported: bool) -> Optional[ocppj.OcppError]:
        """Why `call` cannot be handled (the CALLERROR to answer), or None: an action OCPP
        1.6 does not define, one this charger does not `supported`, a payload against
        its schema."""
        action = call.action
        if action not in ocppj.KNOWN_ACTIONS:
            return ocppj.OcppError("NotImplemented", f"unknown action {action!r}"[:255])
        if not supported:
            return ocppj.OcppError("NotSupported",
                                   f"{action} is not supported by this charge point")
        try:
            ocppj.validate_payload(ocppj.CALL, action, call.payload, self.strict_schema)
        except ocppj.OcppError as exc:
            return exc
        except OSError:
            return ocppj.OcppError("NotSupported", f"{action} is not an OCPP 1.6 request")
        return None

    # ------------------------------------------------------------------ frames out
    def answer(self, unique_id: str, action: str, payload: dict) -> None:
        """The CALLRESULT to the CSMS's CALL `unique_id` (checked against its schema)."""
        ocppj.check_outgoing(ocppj.CALLRESULT, action, payload)
        self._send(ocppj.encode_result(unique_id, payload))

    def answer_error(self, unique_id: str, code: str, description: str) -> None:
        self.stats["errors_answered"] += 1
        log.warning("answering %s with CALLERROR %s: %s", unique_id, code, description)
        self._send(ocppj.encode_error(unique_id, code, description))

    def _send(self, text: str) -> None:
        self.stats["frames_out"] += 1
        self._log_frame("->", text)
        self.outgoing.append(text)

    def _log_frame(self, direction: str, text: str) -> None:
        level = logging.INFO if self.log_frames else logging.DEBUG
        if log.isEnabledFor(level):
            shown = redact(text)
            log.log(level, "%s %s", direction, shown if len(shown) < 2000 else shown[:2000] + "…")
