"""The station core: every event in, a list of actions out, no I/O, no wall clock.

`Station.handle(event, now)` is the only entry point. It owns the RPC
bookkeeping (one outstanding CALL of ours, its deadline, the queue behind it),
routes the CSMS's CALLs to `chargepoint.operations`, keeps the connectors'
state and the timers. Adapters (chargepoint.runtime) carry out the returned
actions: send a frame, switch the contactor, offer a current.
"""
from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass
from typing import Any, Callable, Optional

from chargepoint import actions as act
from chargepoint import events as ev
from chargepoint import ocppj
from chargepoint.calls import CONNECTION, OTHER, CallQueue, Outgoing
from chargepoint.connector import Connector, ConnectorInfo
from chargepoint.ocpp_keys import OcppKeys, key_id
from chargepoint.operations import HANDLERS, load_all
from chargepoint.operations.registry import Deferred
from chargepoint.outbox import Item, Outbox
from chargepoint.registration import REFUSE, SILENT, allows, refusal
from chargepoint.station_clock import StationClock
from chargepoint.timers import Timers
from chargepoint.write_faults import WriteFaults, is_storage_fault
from hal import events as hal_events

log = logging.getLogger("chargepoint.station")


_SECRET = re.compile(r'("key"\s*:\s*"(?i:AuthorizationKey)"\s*,\s*"value"\s*:\s*)"(?:[^"\\]|\\.)*"')


def _hide_secret(node: Any) -> bool:
    """Blank the value of every {"key": "AuthorizationKey", "value": ...} in a parsed frame
    (the key's name in any case: the CSMS may spell it so, see ocpp_keys.key_id)."""
    if isinstance(node, dict):
        name = node.get("key")
        found = isinstance(name, str) and key_id(name) == "authorizationkey" and "value" in node
        if found:
            node["value"] = "***"
        children = list(node.values())
    elif isinstance(node, list):
        found, children = False, node
    else:
        return False
    for child in children:
        found = _hide_secret(child) or found
    return found


def redact(text: str) -> str:
    """A frame as it may be logged: the AuthorizationKey value never appears, whatever the
    order of the JSON members or the escapes that spell the key."""
    if "authorizationkey" not in text.lower() and "\\u" not in text:
        return text
    try:
        frame = json.loads(text)
        found = _hide_secret(frame)
    except (ValueError, RecursionError):
        # Not JSON (refused unread): the key-first spelling is still blanked.
        return _SECRET.sub(r'\1"***"', text)
    return json.dumps(frame, ensure_ascii=False, separators=(",", ":")) if found else text


#: A transaction message after which the CSMS closed the link this many times in a row
#: (each time on a connection where it had answered another CALL first) counts one failed
#: attempt of TransactionMessageAttempts: a message the CSMS cannot take (a frame over its
#: size limit) must not hold the queue forever (docs/delivery.md, "Poison messages").
CLOSES_PER_ATTEMPT = 3


@dataclass
class StationConfig:
    charge_point_id: str
    boot_payload: dict
    connectors: list[ConnectorInfo]
    response_timeout_s: float = 30.0
    max_frame_bytes: int = 262144
    strict_schema: bool = True
    log_frames: bool = False


class Station:
    """The charge point's logic. Not thread-safe: one loop owns it."""

    def __init__(self, config: StationConfig, keys: OcppKeys, store, now: float,
                 wall: Optional[float] = None):
        load_all()
        self.config = config
        self.keys = keys
        self.store = store
        self.now = now
        self.clock = StationClock(now, wall)
        self.timers = Timers()
        self.connected = False
        #: "new" (never answered), "Pending", "Rejected" or "Accepted".
        self.registration = "new"
        self.connectors: dict[int, Connector] = {
            0: Connector(ConnectorInfo(0), self),
            **{c.id: Connector(c, self) for c in config.connectors},
        }
        #: connector id -> (status, errorCode) the CSMS was last told.
        self.reported_status: dict[int, tuple[str, str]] = {}
        self.diagnostics_status = "Idle"
        self.firmware_status = "Idle"
        #: connector id -> (contactor closed, offered amps) last commanded.
        self._commanded: dict[int, tuple[bool, Optional[float]]] = {}
        #: connector id -> callbacks waiting for the result of the next SetLock.
        self.lock_waiters: dict[int, list[Callable[[bool], None]]] = {}
        self.calls = CallQueue()
        self._inflight: Optional[Outgoing] = None
        #: A transaction message was ready when another CALL took the turn: it goes next.
        self._tx_passed_over = False
        #: The CSMS has answered a CALL of ours on the present connection.
        self._answered_on_link = False
        self._actions: list[Any] = []
        #: A clean stop is under way (`shutdown`): no new transaction starts.
        self.closing = False
        self.stats = {"frames_in": 0, "frames_out": 0, "errors_answered": 0}
        keys.on_change(self._key_changed)
        from chargepoint import sessions
        from chargepoint.operations import boot, metering
        from chargepoint.operations.transactions import Ledger

        self.write_faults = WriteFaults(self)
        self.ledger = Ledger(store)
        self.outbox = Outbox(store)
        self.sessions = sessions.Sessions(self)
        from chargepoint.operations import local_list, reservation

        local_list.install(self)
        reservation.install(self)
        from chargepoint.operations import smart_charging

        smart_charging.install(self)
        sessions.recover(self)
        from chargepoint.operations import availability

        availability.install(self)
        for connector_id in self.connectors:  # fail safe from the first turn
            self.refresh_outputs(connector_id)
        boot.on_start(self)
        metering.schedule_aligned(self)

    # ------------------------------------------------------------------ entry point
    def handle(self, event: Any, now: float, wall: Optional[float] = None) -> list[Any]:
        """Consume one event at local time `now` (monotonic); return the actions to carry
        out, in order. `wall` is the system clock's reading, from which the time of day is
        learnt while the CSMS has not told it."""
        self.now = now
        if self.clock.observe(now, wall):
            try:
                self._real_time_moved()
            except Exception:
                log.exception("could not re-arm what follows real time")
        for step in (lambda: self._dispatch(event), lambda: self.timers.fire_due(now), self._pump):
            try:
                step()
            except Exception as exc:  # a bug must not take the charger down: log, go on
                if is_storage_fault(exc):
                    self.storage_failed(exc)
                else:
                    log.exception("error while handling %r", event)
        out, self._actions = self._actions, []
        return out

    def next_deadline(self) -> Optional[float]:
        """When `handle(Tick(), t)` must be called next, at the latest."""
        return self.timers.next_deadline()

    def emit(self, action: Any) -> None:
        self._actions.append(action)

    # ------------------------------------------------------------------ time
    @property
    def time_known(self) -> bool:
        return self.clock.known

    @property
    def time_offset(self) -> Optional[float]:
        """Real time − local time, or None while unknown (see StationClock)."""
        return self.clock.offset

    def station_time(self) -> float:
        """Real time now, as well as it is known."""
        return self.clock.utc(self.now)

    def timestamp(self, local: Optional[float] = None) -> Optional[str]:
        """OCPP dateTime for local instant `local` (default now); None while unknown."""
        return self.clock.timestamp(self.now if local is None else local)

    def _real_time_moved(self) -> None:
        """Real time moved against local time (the clock became known, the CSMS corrected
        it, or a stepped system clock is followed): what is scheduled by real time is
        re-armed. Timers by local time (heartbeat, samples, timeouts) stay as they are."""
        from chargepoint.operations import metering

        metering.schedule_aligned(self)
        self.reservations.rearm()
        self.smart.refresh()

    def set_csms_time(self, text: str) -> None:
        """Adopt the CSMS's clock (BootNotification / Heartbeat currentTime)."""
        if self.clock.set_csms_time(text):
            self._real_time_moved()

    # ------------------------------------------------------------------ outgoing CALLs
    def send_call(self, action: str, payload: dict,
                  on_result: Optional[Callable[[dict], None]] = None,
                  on_error: Optional[Callable[[str], None]] = None,
                  before_accept: bool = False, lane: int = OTHER) -> bool:
        """Queue a CALL that is not a transaction message (those go through the outbox).

        While offline such a CALL fails at once with "offline": a heartbeat or a
        status that could not be sent is not worth replaying later. A message of a
        kind already waiting is merged into it; at the queue's bound a new one fails
        at once with "queue full" (chargepoint/calls.py). Returns whether it will go.
        """
        ocppj.check_outgoing(ocppj.CALL, action, payload)
        out = Outgoing(action, payload, on_result, on_error, before_accept, lane=lane)
        if not self.connected:
            if on_error:
                on_error("offline")
            return False
        outcome = self.calls.put(out)
        if outcome == "full":
            log.warning("%s not sent: %d CALLs are already waiting", action, len(self.calls))
            if on_error:
                on_error("queue full")
            return False
        return True

    def queued_actions(self) -> list[str]:
        return [o.action for o in self.calls]

    @property
    def accepted(self) -> bool:
        return self.registration == "Accepted"

    def _pump(self) -> None:
        """Send the next CALL if the link is up and none of ours is outstanding."""
        while self.connected and self._inflight is None:
            out = self._next_outgoing()
            if out is None:
                return
            self._inflight = out
            self._send(ocppj.encode_call(out.unique_id, out.action, out.payload))
            self.timers.set("rpc-timeout", self.now + self.config.response_timeout_s,
                            self._call_timed_out)

    def _next_outgoing(self) -> Optional[Outgoing]:
        """Whose turn it is; nothing waits behind a flood of anything else.

        1. The reports that open a connection (BootNotification, every connector's
           status) go before anything: what follows makes sense to the CSMS only after them.
        2. A transaction message that was ready when another CALL last took the turn goes
           next. So when both wait they take turns: transaction messages keep their
           rate under any number of CSMS-triggered messages, and the others (a driver's
           Authorize among them) wait for at most one transaction message.
        3. Otherwise the other CALLs first, an Authorize before the rest (someone is
           standing at the charger), then the head of the transaction queue.
        """
        def may_go(out: Outgoing) -> bool:
            return self.accepted or out.before_accept

        out = self.calls.pop(may_go, lanes=(CONNECTION,))
        if out is not None:
            return out
        if self._tx_passed_over:
            self._tx_passed_over = False
            out = self._outbox_outgoing()
            if out is not None:
                return out
        out = self.calls.pop(may_go)
        if out is not None:
            self._tx_passed_over = self._transaction_ready()
            return out
        return self._outbox_outgoing()

    def _transaction_ready(self) -> bool:
        head = self.outbox.head() if self.accepted else None
        return head is not None and head.next_attempt <= self.now

    def _outbox_outgoing(self) -> Optional[Outgoing]:
        from chargepoint.operations import transactions

        if not self.accepted or self.write_faults.failing:
            return None     # an answer that cannot be recorded would only bring a repeat
        while True:
            head = self.outbox.head()
            if head is None:
                self.timers.cancel("outbox-retry")
                return None
            if self.outbox.ready(self.now) is None:
                self.timers.set("outbox-retry", head.next_attempt, lambda: None)
                return None
            payload = transactions.payload_for_send(self, head)
            if payload is None:
                self.outbox.failed(head, "no transactionId", self.now, 1, 0)
                continue
            try:
                ocppj.check_outgoing(ocppj.CALL, head.action, payload)
            except Exception:
                log.exception("queued %s is not valid", head.action)
            return Outgoing(head.action, payload,
                            on_result=lambda p, item=head: transactions.delivered(self, item, p),
                            on_error=lambda reason, item=head: self._outbox_failed(item, reason),
                            unique_id=head.unique_id)

    def _outbox_failed(self, item: Item, reason: str) -> None:
        """A transaction message got a CALLERROR or no answer, or the link closed on it."""
        if reason == "offline":
            # A lost link is not an attempt: the message waits for the next one. Unless
            # the CSMS keeps closing a working link on this very message (a poison).
            if not self._answered_on_link:
                return
            item.closures += 1
            if item.closures < CLOSES_PER_ATTEMPT:
                log.warning("the CSMS closed the link while %s %s was outstanding (%d of %d "
                            "in a row count as a failed attempt)", item.action,
                            item.unique_id, item.closures, CLOSES_PER_ATTEMPT)
                return
            reason = f"the CSMS closed the link on it {CLOSES_PER_ATTEMPT} times in a row"
        item.closures = 0
        tx = self.ledger.by_local.get(item.tx_local) if item.tx_local is not None else None
        self.outbox.failed(item, reason, self.now, self.keys.int("TransactionMessageAttempts"),
                           self.keys.int("TransactionMessageRetryInterval"),
                           transaction_id=tx.transaction_id if tx is not None else None)

    def _finish_inflight(self) -> Optional[Outgoing]:
        out, self._inflight = self._inflight, None
        self.timers.cancel("rpc-timeout")
        return out

    def _call_timed_out(self) -> None:
        out = self._finish_inflight()
        if out is not None:
            log.warning("no answer to %s within %.0f s", out.action,
                        self.config.response_timeout_s)
            if out.on_error:
                out.on_error("timeout")

    # ------------------------------------------------------------------ events
    def _dispatch(self, event: Any) -> None:
        if isinstance(event, ev.FrameReceived):
            self._on_frame(event.text)
        elif isinstance(event, ev.Tick):
            pass
        elif isinstance(event, ev.Connected):
            self._on_connected()
        elif isinstance(event, ev.Disconnected):
            self._on_disconnected(event.reason)
        elif isinstance(event, (hal_events.PilotStateChanged, hal_events.HardwareFault,
                                hal_events.MeterSampled, hal_events.CableDetected)):
            from chargepoint import sessions

            sessions.on_hardware(self, self.connectors[event.connector_id], event)
        elif isinstance(event, hal_events.TagPresented):
            self.on_tag(event.id_tag)
        elif isinstance(event, ev.LockResult):
            conn = self.connectors.get(event.connector_id)
            failing = hal_events.FaultCode.CONNECTOR_LOCK_FAILURE in (conn.faults if conn else {})
            if conn is not None and failing == event.ok:     # the lock's health changed
                from chargepoint import sessions

                sessions.on_hardware(self, conn, hal_events.HardwareFault(
                    conn.id, hal_events.FaultCode.CONNECTOR_LOCK_FAILURE, not event.ok,
                    "" if event.ok else "lock did not " + ("lock" if event.locked else "unlock")))
            waiters = self.lock_waiters.pop(event.connector_id, [])
            for then in waiters:
                then(event.ok)
        else:
            log.debug("ignored event %r", event)

    def on_tag(self, id_tag: str) -> None:
        from chargepoint import sessions

        log.info("idTag %s presented", id_tag)
        sessions.on_tag(self, id_tag)

    def shutdown(self, now: float) -> list[Any]:
        """A clean stop: end transactions durably, open contactors; returns the actions."""
        from chargepoint import sessions

        self.now = now
        self.closing = True
        try:
            sessions.shutdown(self)
            self.outbox.flush()
        except Exception as exc:
            if is_storage_fault(exc):
                self.storage_failed(exc)
            else:
                log.exception("error while shutting down the station")
        out, self._actions = self._actions, []
        return out

    def delivering(self) -> bool:
        """Transaction messages are going to the CSMS now: the link is up, the charger is
        accepted, and the head of the outbox is due or awaits its answer. A clean stop waits
        while this holds (chargepoint/runtime.py); a head waiting out a retry delay does not
        count, it would only hold the stop up."""
        if not (self.connected and self.accepted) or self.write_faults.failing:
            return False
        head = self.outbox.head()
        return head is not None and head.next_attempt <= self.now

    def storage_failed(self, exc: BaseException) -> None:
        """A write to the database failed: logged once, retried with backoff
        (chargepoint/write_faults.py)."""
        self.write_faults.failed(exc)

    def busy(self) -> bool:
        """Work is under way that will produce more events soon (a CALL, a meter read)."""
        return (self._inflight is not None or bool(self.calls) or any(self.lock_waiters.values())
                or any(c.reading_pending for c in self.connectors.values()))

    def set_lock(self, connector_id: int, locked: bool,
                 then: Optional[Callable[[bool], None]] = None) -> None:
        """Lock or unlock; `then(ok)` runs when the hardware has answered."""
        if then is not None:
            self.lock_waiters.setdefault(connector_id, []).append(then)
        self.emit(act.SetLock(connector_id, locked))

    def _on_connected(self) -> None:
        self.connected = True
        self._answered_on_link = False
        self._tx_passed_over = False
        log.info("connected to the CSMS")
        from chargepoint.operations import boot, status

        if self.accepted:
            status.report_all(self)
        else:
            boot.on_connected(self)
        self.emit_status()

    def _on_disconnected(self, reason: str) -> None:
        was = self.connected
        self.connected = False
        if was:
            log.warning("disconnected from the CSMS: %s", reason)
        dropped = self.calls.clear()
        inflight = self._finish_inflight()
        if inflight is not None:
            dropped.insert(0, inflight)
        for out in dropped:
            if out.on_error:
                out.on_error("offline")
        self.emit_status()

    def on_accepted(self) -> None:
        """Registration accepted: queued transaction messages may flow."""

    def emit_status(self) -> None:
        self.emit(act.ReportStatus(self.describe()))

    def connector_changed(self, connector_id: int) -> None:
        """A connector's facts changed: bring its outputs in line and report its status."""
        from chargepoint.operations import status

        status.notify(self, connector_id)

    def refresh_outputs(self, connector_id: int) -> None:
        """Bring contactor, pilot offer and indicator in line with the connector's facts.

        Opening comes before withdrawing the offer, offering before closing, and only
        changes are commanded, so leaving state C or a new fault opens the contactor in
        the same turn of the loop that learnt of it.
        """
        conn = self.connectors[connector_id]
        if connector_id != 0:
            closed, amps = conn.contactor_closed(), conn.offered_current()
            before = self._commanded.get(connector_id)
            if before is None or before[0] != closed and not closed:
                self.emit(act.SetContactor(connector_id, False))
            if before is None or before[1] != amps:
                self.emit(act.OfferCurrent(connector_id, amps))
                if amps is not None and (before is None or before[1] is None):
                    conn.offered_since = self.now
            if closed and (before is None or not before[0]):
                self.emit(act.SetContactor(connector_id, True))
            self._commanded[connector_id] = (closed, amps)
        colour = {"Available": "available", "Faulted": "fault", "Unavailable": "off",
                  "Charging": "charging"}.get(conn.status(), "occupied")
        self.emit(act.ShowIndicator(connector_id, colour))

    def describe(self) -> str:
        link = "online" if self.connected else "offline"
        return f"{link}, registration {self.registration}"

    # ------------------------------------------------------------------ frames
    def send_frame(self, text: str) -> None:
        """Send a frame now (a deferred answer); CALLs go through `send_call`."""
        self._send(text)

    def _send(self, text: str) -> None:
        self.stats["frames_out"] += 1
        self._log_frame("->", text)
        self.emit(act.SendFrame(text))

    def _log_frame(self, direction: str, text: str) -> None:
        level = logging.INFO if self.config.log_frames else logging.DEBUG
        if log.isEnabledFor(level):
            shown = redact(text)
            log.log(level, "%s %s", direction, shown if len(shown) < 2000 else shown[:2000] + "…")

    def _answer_error(self, unique_id: str, code: str, description: str) -> None:
        self.stats["errors_answered"] += 1
        log.warning("answering %s with CALLERROR %s: %s", unique_id, code, description)
        self._send(ocppj.encode_error(unique_id, code, description))

    def _on_frame(self, text: str) -> None:
        self.stats["frames_in"] += 1
        self._log_frame("<-", text)
        try:
            frame = ocppj.parse_frame(text, self.config.max_frame_bytes)
        except ocppj.FrameError as exc:
            if exc.answerable and exc.unique_id:
                self._answer_error(exc.unique_id, exc.code, exc.description)
            else:
                log.warning("dropped a frame that cannot be answered: %s", exc.description)
            return
        if isinstance(frame, ocppj.Call):
            self._on_call(frame)
        else:
            self._on_response(frame)

    def _on_call(self, call: ocppj.Call) -> None:
        action = call.action
        allowed = allows(self.registration, action)
        if allowed == SILENT:
            log.warning("not answering %s %s: the CSMS rejected this charger's registration "
                        "(OCPP 1.6 4.2)", action[:60], call.unique_id)
            return
        if action not in ocppj.KNOWN_ACTIONS:
            return self._answer_error(call.unique_id, "NotImplemented",
                                      f"unknown action {action!r}"[:255])
        handler = HANDLERS.get(action)
        if handler is None:
            return self._answer_error(call.unique_id, "NotSupported",
                                      f"{action} is not supported by this charge point")
        try:
            ocppj.validate_payload(ocppj.CALL, action, call.payload, self.config.strict_schema)
        except ocppj.OcppError as exc:
            return self._answer_error(call.unique_id, exc.code, exc.description)
        except OSError:
            return self._answer_error(call.unique_id, "NotSupported",
                                      f"{action} is not an OCPP 1.6 request")
        if allowed == REFUSE:
            return self._refuse(call)
        mark = len(self._actions)
        try:
            response = handler(self, call.payload)
        except ocppj.OcppError as exc:
            del self._actions[mark:]
            return self._answer_error(call.unique_id, exc.code, exc.description)
        except Exception as exc:
            del self._actions[mark:]
            if is_storage_fault(exc):
                self.storage_failed(exc)
            else:
                log.exception("handler for %s failed", action)
            return self._answer_error(call.unique_id, "InternalError",
                                      f"{type(exc).__name__} while handling {action}")
        # The answer goes out before whatever the handler set in motion (a reconnect,
        # a restart, a switched contactor), so the CSMS always hears it first.
        side_effects = self._actions[mark:]
        del self._actions[mark:]
        if isinstance(response, Deferred):
            response.bind(self, call.unique_id, action)
        else:
            ocppj.check_outgoing(ocppj.CALLRESULT, action, response)
            self._send(ocppj.encode_result(call.unique_id, response))
        self._actions.extend(side_effects)

    def _refuse(self, call: ocppj.Call) -> None:
        """Answer a CALL the registration state does not allow (chargepoint/registration.py)."""
        state = "not answered yet" if self.registration == "new" else self.registration
        why = f"{call.action} is not allowed while the registration is {state}"
        answer = refusal(call.action)
        if answer is None:
            return self._answer_error(call.unique_id, "GenericError", why)
        log.warning("%s: answered %s", why, answer["status"])
        self._send(ocppj.encode_result(call.unique_id, answer))

    def _on_response(self, frame) -> None:
        out = self._inflight
        if out is None or frame.unique_id != out.unique_id:
            log.warning("dropped a response to unknown call %s", frame.unique_id)
            return
        self._finish_inflight()
        self._answered_on_link = True
        if isinstance(frame, ocppj.CallError):
            log.warning("CSMS answered %s with CALLERROR %s: %s", out.action, frame.code,
                        frame.description)
            if out.on_error:
                out.on_error(frame.code)
            return
        payload = frame.payload
        try:
            if not isinstance(payload, dict):
                raise ocppj.OcppError("FormationViolation", "response payload is not an object")
            ocppj.validate_payload(ocppj.CALLRESULT, out.action, payload, strict=False)
        except ocppj.OcppError as exc:
            log.warning("CSMS's answer to %s violates the schema (%s); treated as an error",
                        out.action, exc)
            if out.on_error:
                out.on_error(exc.code)
            return
        if out.on_result:
            out.on_result(payload)

    # ------------------------------------------------------------------ keys
    def _key_changed(self, name: str, value: str) -> None:
        from chargepoint.operations import boot

        if name == "HeartbeatInterval" and self.accepted:
            boot.schedule_heartbeat(self)
        elif name == "ClockAlignedDataInterval":
            from chargepoint.operations import metering

            metering.schedule_aligned(self)
        elif name == "MeterValueSampleInterval":
            from chargepoint.operations import metering

            metering.sample_interval_changed(self)
        elif name == "WebSocketPingInterval":
            self.emit(act.LinkSettingsChanged(int(value)))
        elif name == "AuthorizationKey":
            self.emit(act.Reconnect("AuthorizationKey changed"))
