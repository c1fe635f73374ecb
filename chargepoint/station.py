"""The station core: every event in, a list of actions out, no I/O, no wall clock.

`Station.handle(event, now)` is the only entry point. It routes the event: a frame to
the RPC endpoint (chargepoint/protocol/rpc.py) and a CSMS request on to its handler
(chargepoint/handlers/), a hardware event or a tag to the sessions
(chargepoint/model/sessions.py). Then it fires the timers that are due, and once per
turn *reconciles* every connector whose facts changed: the contactor opens first (at
the head of the turn's actions), then the offer on the pilot, the indicator and the
StatusNotification follow, each once per connector per turn. Last, the next CALL goes
out if none is outstanding. Adapters (chargepoint/runtime.py) carry out the returned
actions: send a frame, switch the contactor, offer a current.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Optional

from chargepoint import actions as act
from chargepoint import events as ev
from chargepoint.handlers import HANDLERS
from chargepoint.handlers.deferred import Deferred
from chargepoint.model.clock import StationClock
from chargepoint.model.connector import ConnectorInfo
from chargepoint.model.firmware import RunningRelease
from chargepoint.model.services import Services, build_services
from chargepoint.model.write_faults import is_storage_fault
from chargepoint.ocpp_keys import OcppKeys
from chargepoint.protocol import ocppj
from chargepoint.protocol.registration import REFUSE, SILENT, allows, refusal
from chargepoint.protocol.rpc import (CallReceived, ErrorReceived, MalformedFrame,
                                      ResultReceived, RpcEndpoint)
from chargepoint.store import Store
from hal import events as hal_events

log = logging.getLogger("chargepoint.station")

_HARDWARE_EVENTS = (hal_events.PilotStateChanged, hal_events.HardwareFault,
                    hal_events.MeterSampled, hal_events.CableDetected)


@dataclass
class StationConfig:
    charge_point_id: str
    boot_payload: dict
    connectors: list[ConnectorInfo]
    response_timeout_s: float = 30.0
    max_frame_bytes: int = 262144
    strict_schema: bool = True
    log_frames: bool = False
    #: [csms] security_profile: the floor of SecurityProfile.
    security_profile: int = 0
    #: [csms] client_cert's PEM (profile 3 until the CSMS signs a certificate), if any.
    client_certificate: Optional[str] = None
    #: [csms] ca_file is set: the link trusts it besides the CSMS roots installed.
    ca_configured: bool = False
    #: [csms] security_events: "auto", "on" or "off" (chargepoint/model/security_events.py).
    security_events: str = "auto"
    #: The release this process runs, and its trial (None: this package, not on trial).
    release: Optional[RunningRelease] = None
    #: [releases] revocation_check: "soft", "hard" or "off"
    #: (chargepoint/model/firmware_revocation.py).
    revocation_check: str = "soft"


class Station:
    """The charge point's logic. Not thread-safe: one loop owns it."""

    def __init__(self, config: StationConfig, keys: OcppKeys, store: Store, now: float,
                 wall: Optional[float] = None):
        self.config = config
        self.rpc = RpcEndpoint(config.response_timeout_s, config.max_frame_bytes,
                               config.strict_schema, config.log_frames)
        self.services: Services = build_services(
            keys, store, StationClock(now, wall), self.rpc, config.connectors,
            config.boot_payload, config.response_timeout_s, config.charge_point_id,
            config.security_profile, config.client_certificate, config.ca_configured,
            config.security_events, config.release, config.revocation_check)
        #: connector id -> (contactor closed, offered amps) last commanded.
        self._commanded: dict[int, tuple[bool, Optional[float]]] = {}
        #: (connected, registration) as last reported in the systemd STATUS line.
        self._described: Optional[tuple[bool, str]] = None
        keys.on_change(self._key_changed)
        services = self.services
        services.sessions.recover()
        services.connectors.touch_all()          # fail safe from the first turn
        self._reconcile()
        services.metering.schedule_aligned()
        services.security_events.record("StartupOfTheDevice")

    # ------------------------------------------------------------------ entry point
    def handle(self, event: Any, now: float, wall: Optional[float] = None) -> list[Any]:
        """Consume one event at local time `now` (monotonic); return the actions to carry
        out, in order. `wall` is the system clock's reading, from which the time of day is
        learnt while the CSMS has not told it."""
        services = self.services
        if services.clock.observe(now, wall):
            try:
                services.timekeeping.moved()
            except Exception:
                log.exception("could not re-arm what follows real time")
        for step in (lambda: self._dispatch(event), lambda: services.timers.fire_due(now),
                     self._reconcile, self._pump):
            try:
                step()
            except Exception as exc:  # a bug must not take the charger down: log, go on
                if is_storage_fault(exc):
                    services.write_faults.failed(exc)
                else:
                    log.exception("error while handling %r", event)
        self._report_status()
        return services.effects.take()

    def next_deadline(self) -> Optional[float]:
        """When `handle(Tick(), t)` must be called next, at the latest."""
        return self.services.timers.next_deadline()

    def busy(self) -> bool:
        """Work is under way that will produce more events soon (a CALL, a meter read)."""
        services = self.services
        return self.rpc.busy() or services.locks.pending() or services.meter_reads.pending()

    def shutdown(self, now: float) -> list[Any]:
        """A clean stop: end transactions durably, open contactors; returns the actions."""
        services = self.services
        services.clock.observe(now)
        services.availability.closing = True
        try:
            services.sessions.shutdown()
            services.outbox.flush()
        except Exception as exc:
            if is_storage_fault(exc):
                services.write_faults.failed(exc)
            else:
                log.exception("error while shutting down the station")
        self._reconcile()
        return services.effects.take()

    def delivering(self) -> bool:
        """Transaction messages are going to the CSMS now: the link is up, the charger is
        accepted, and the head of the outbox is due or awaits its answer. A clean stop waits
        while this holds (chargepoint/runtime.py); a head waiting out a retry delay does not
        count, it would only hold the stop up."""
        services = self.services
        return (services.link.online and not services.write_faults.failing
                and services.delivery.ready())

    # ------------------------------------------------------------------ events
    def _dispatch(self, event: Any) -> None:
        services = self.services
        if isinstance(event, ev.FrameReceived):
            self._on_frame(event.text)
        elif isinstance(event, ev.Tick):
            pass
        elif isinstance(event, _HARDWARE_EVENTS):
            services.sessions.on_hardware(services.connectors[event.connector_id], event)
        elif isinstance(event, hal_events.TagPresented):
            services.sessions.on_tag(event.id_tag)
        elif isinstance(event, ev.LockResult):
            services.sessions.lock_answered(event.connector_id, event.locked, event.ok)
        elif isinstance(event, ev.FirmwareDownloaded):
            services.firmware.downloaded(event.request_id, event.ok, event.reason, event.final)
        elif isinstance(event, ev.CrlsFetched):
            services.firmware.crls_fetched(event.fetch_id, event.results)
        elif isinstance(event, ev.FirmwareVerified):
            services.firmware.verified(event.request_id, event.outcome, event.reason)
        elif isinstance(event, ev.FirmwareInstalled):
            services.firmware.installed(event.request_id, event.ok, event.version,
                                        event.reason)
        elif isinstance(event, ev.ReleaseTested):
            services.firmware.tested(event.ok, event.reason)
        elif isinstance(event, ev.DiagnosticsUploaded):
            # GetDiagnostics' or GetLog's: each knows its own request_id, ignores the other's.
            for upload in (services.diagnostics, services.log_upload):
                upload.uploaded(event.request_id, event.ok, event.reason, event.final,
                                event.cause)
        elif isinstance(event, ev.Connected):
            self.rpc.connection_made()
            log.info("connected to the CSMS")
            services.boot.connected()
            services.security_profile.connected()
        elif isinstance(event, ev.SecurityIncident):
            services.security_events.record(event.kind, event.tech_info)
        elif isinstance(event, ev.SecurityProfileFailed):
            services.security_profile.failed(event.profile, event.reason)
        elif isinstance(event, ev.Disconnected):
            if self.rpc.connected:
                log.warning("disconnected from the CSMS: %s", event.reason)
            services.timers.cancel("rpc-timeout")
            for out in self.rpc.connection_lost():
                if out.on_error:
                    out.on_error("offline")
        else:
            log.debug("ignored event %r", event)

    # ------------------------------------------------------------------ once per turn
    def _reconcile(self) -> None:
        """Bring each changed connector's outputs and report in line with its facts.

        Opening the contactor goes to the head of the turn's actions; then, per connector,
        the offer, closing (only after offering), the indicator; then the StatusNotifications.
        Only changes of contactor and offer are commanded, so leaving state C or a new
        fault opens the contactor in the same turn of the loop that learnt of it.
        """
        services = self.services
        connectors, view = services.connectors, services.view
        changed = connectors.take_changed()
        if not changed:
            return
        if 0 in changed:
            changed = set(connectors)
        elif services.reservations.anywhere() and any(
                not connectors[cid].starting for cid in changed):
            # A reservation of connector 0 holds whichever connectors are the last free
            # ones: one going busy, Unavailable or Faulted can make another Reserved (told
            # once a start is decided: the reserved id may be the one starting there).
            changed = set(connectors)
        opening, rest = [], []
        for cid in sorted(changed):
            conn = connectors[cid]
            if cid != 0:
                closed, amps = view.contactor_closed(conn), view.offered_current(conn)
                before = self._commanded.get(cid)
                if before is None or before[0] != closed and not closed:
                    opening.append(act.SetContactor(cid, False))
                if before is None or before[1] != amps:
                    rest.append(act.OfferCurrent(cid, amps))
                    if amps is not None and (before is None or before[1] is None):
                        conn.offered_since = services.clock.now
                if closed and (before is None or not before[0]):
                    rest.append(act.SetContactor(cid, True))
                self._commanded[cid] = (closed, amps)
            rest.append(act.ShowIndicator(cid, view.indicator(conn)))
        services.effects.pending[0:0] = opening
        services.effects.pending.extend(rest)
        for cid in sorted(changed):
            services.status_reports.report(cid)

    def _pump(self) -> None:
        """Send the next CALL if the link is up and none of ours is outstanding."""
        services = self.services
        if self.rpc.next_call(services.clock.now, services.link.accepted,
                              services.delivery) is not None:
            services.timers.set("rpc-timeout", self.rpc.deadline, self._call_timed_out)
        self._frames_out()

    def _call_timed_out(self) -> None:
        out = self.rpc.expire(self.services.clock.now)
        if out is not None and out.on_error:
            out.on_error("timeout")

    def _report_status(self) -> None:
        link = self.services.link
        state = (link.connected, link.registration)
        if state != self._described:
            self._described = state
            self.services.effects.emit(act.ReportStatus(link.describe()))

    # ------------------------------------------------------------------ frames
    def _frames_out(self) -> None:
        if self.rpc.outgoing:
            for text in self.rpc.take_outgoing():
                self.services.effects.emit(act.SendFrame(text))

    def _on_frame(self, text: str) -> None:
        event = self.rpc.receive(text)
        self._frames_out()
        if isinstance(event, CallReceived):
            self._on_call(event.call)
            return
        if isinstance(event, MalformedFrame):
            self.services.security_events.record("InvalidMessages", f"frame: {event.code}")
            return
        if isinstance(event, ErrorReceived) and event.invalid:
            self.services.security_events.record(
                "InvalidMessages", f"answer to {event.out.action}: {event.reason}")
        if isinstance(event, (ResultReceived, ErrorReceived)):
            self.services.timers.cancel("rpc-timeout")
        if isinstance(event, ResultReceived) and event.out.on_result:
            event.out.on_result(event.payload)
        elif isinstance(event, ErrorReceived) and event.out.on_error:
            event.out.on_error(event.reason)

    def _on_call(self, call: ocppj.Call) -> None:
        services, rpc = self.services, self.rpc
        action = call.action
        registration = services.link.registration
        allowed = allows(registration, action)
        if allowed == SILENT:
            log.warning("not answering %s %s: the CSMS rejected this charger's registration "
                        "(OCPP 1.6 4.2)", action[:60], call.unique_id)
            return
        handler = HANDLERS.get(action)
        error = rpc.check_call(call, handler is not None)
        if error is not None and error.code in ("FormationViolation", "PropertyConstraintViolation",
                                                "OccurenceConstraintViolation",
                                                "TypeConstraintViolation", "ProtocolError"):
            services.security_events.record("InvalidMessages",
                                            f"{action[:60]}: {error.code}")
        if error is None and allowed == REFUSE:
            self._refuse(call, registration)
            return
        mark = len(services.effects.pending)
        if error is None:
            try:
                response = handler(services, call.payload)
            except ocppj.OcppError as exc:
                error = exc
            except Exception as exc:
                if is_storage_fault(exc):
                    services.write_faults.failed(exc)
                else:
                    log.exception("handler for %s failed", action)
                error = ocppj.OcppError("InternalError",
                                        f"{type(exc).__name__} while handling {action}")
        if error is not None:
            del services.effects.pending[mark:]
            rpc.answer_error(call.unique_id, error.code, error.description)
            self._frames_out()
            return
        # The answer goes out before whatever the handler set in motion (a reconnect,
        # a restart, a switched contactor), so the CSMS always hears it first.
        side_effects = services.effects.pending[mark:]
        del services.effects.pending[mark:]
        if isinstance(response, Deferred):
            response.bind(self._answer_later, call.unique_id, action)
        else:
            rpc.answer(call.unique_id, action, response)
            self._frames_out()
        services.effects.pending.extend(side_effects)

    def _answer_later(self, unique_id: str, action: str, payload: dict) -> None:
        """A Deferred answer is known: sent if the link is still up."""
        ocppj.check_outgoing(ocppj.CALLRESULT, action, payload)
        if self.rpc.connected:
            self.rpc.answer(unique_id, action, payload)
            self._frames_out()

    def _refuse(self, call: ocppj.Call, registration: str) -> None:
        """Answer a CALL the registration state does not allow
        (chargepoint/protocol/registration.py)."""
        state = "not answered yet" if registration == "new" else registration
        why = f"{call.action} is not allowed while the registration is {state}"
        answer = refusal(call.action)
        if answer is None:
            self.rpc.answer_error(call.unique_id, "GenericError", why)
        else:
            log.warning("%s: answered %s", why, answer["status"])
            self.rpc.answer(call.unique_id, call.action, answer)
        self._frames_out()

    # ------------------------------------------------------------------ keys
    def _key_changed(self, name: str, value: str) -> None:
        services = self.services
        if name == "HeartbeatInterval":
            services.boot.heartbeat_interval_changed()
        elif name == "ClockAlignedDataInterval":
            services.metering.schedule_aligned()
        elif name == "MeterValueSampleInterval":
            services.metering.sample_interval_changed()
        elif name == "WebSocketPingInterval":
            services.effects.emit(act.LinkSettingsChanged(int(value)))
        elif name == "CpoName":
            services.security_events.record("ReconfigurationOfSecurityParameters",
                                            "CpoName changed")
        elif name == "AuthorizationKey":
            services.security_events.record("ReconfigurationOfSecurityParameters",
                                            "AuthorizationKey changed")
            services.effects.emit(act.Reconnect("AuthorizationKey changed"))
