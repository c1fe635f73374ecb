"""The station loop: one thread owns the core; adapters feed it events and obey its actions.

Threads of the link, the meter poller, the pilot sampler and the RFID reader only
put events on one queue. The loop takes the next event (or wakes at the core's
next deadline), lets the station handle it, carries out the returned actions and
feeds the systemd watchdog, so a hung loop gets the service restarted.

The loop never waits on the network: frames go to the link through a bounded
buffer (chargepoint/link_flow.py) and the link reads no further while a few of
its frames wait here. Every turn is timed (chargepoint/turns.py); the simulator's
`status` and the log line at stop report the worst turn and the worst time from
a hardware event to the contactor it opened.
"""
from __future__ import annotations

import logging
import queue
import threading
import time
from pathlib import Path
from typing import Any, Optional

from chargepoint import maintenance
from chargepoint import actions as act
from chargepoint import events as ev
from chargepoint.clock import SystemClock
from chargepoint.diagnostics import FrameRing
from chargepoint.config import Settings
from chargepoint.ocpp_keys import OcppKeys
from chargepoint.handlers import PROFILES
from chargepoint.interlock import Interlock
from chargepoint.key_files import KeyFiles
from chargepoint.model.connector import ConnectorInfo
from chargepoint.sdnotify import Notifier
from chargepoint.station import Station, StationConfig
from chargepoint.storage import Storage
from chargepoint.transfers import PROTOCOLS
from chargepoint.transport import LinkSecurity, Transport
from chargepoint.turns import Stamped, TurnAccounting
from hal import events as hal_events
from hal.factory import Hardware, build_hardware
from hal.meter_poller import MeterPoller
from hal.interfaces import IndicatorColour

log = logging.getLogger("chargepoint.runtime")

#: Longest the loop sleeps, so the watchdog and the simulator are fed even when idle.
MAX_SLEEP_S = 1.0
#: Longest a simulator command waits for the loop to handle what it caused.
CATCH_UP_S = 2.0


class _CaughtUp:
    """Put on the loop's queue by `Runtime.caught_up`: set once the loop reaches it."""

    __slots__ = ("done",)

    def __init__(self) -> None:
        self.done = threading.Event()


def boot_payload(settings: Settings) -> dict:
    ident = settings.identity
    payload = {"chargePointVendor": ident.vendor, "chargePointModel": ident.model,
               "firmwareVersion": ident.reported_firmware_version()}
    optional = {"chargePointSerialNumber": ident.serial_number,
                "chargeBoxSerialNumber": ident.charge_box_serial_number,
                "iccid": ident.iccid, "imsi": ident.imsi, "meterType": ident.meter_type,
                "meterSerialNumber": ident.meter_serial_number}
    payload.update({k: v for k, v in optional.items() if v})
    return payload


class Runtime:
    """Builds the firmware from settings and runs the loop until stopped."""

    def __init__(self, settings: Settings, clock=None, notifier: Optional[Notifier] = None,
                 hardware: Optional[Hardware] = None):
        self.settings = settings
        self.clock = clock or SystemClock()
        self.notifier = notifier or Notifier.from_environment()
        # SimpleQueue: its put() is safe from a signal handler (SIGTERM calls stop()),
        # where queue.Queue's lock could already be held by the interrupted loop.
        self.events: "queue.SimpleQueue[Any]" = queue.SimpleQueue()
        self.exit_action: Optional[act.Restart] = None
        self._stopping = threading.Event()
        #: How many times a stop was asked for: a second one ends the wait for the CSMS.
        self._stop_requests = 0
        self._power_cut = False
        self._idle = threading.Event()
        self.turns = TurnAccounting()
        #: Opens a contactor from the reporting thread when the hardware rules it out.
        self.interlock = Interlock()
        # Never fails for a damaged or unwritable database (chargepoint/storage.py); raises
        # AlreadyRunning if another process holds it.
        self.storage = Storage.open(settings.storage.path)
        self.store = self.storage.store
        try:
            self._build(settings, hardware)
        except BaseException:
            self.storage.close()
            raise

    def _build(self, settings: Settings, hardware: Optional[Hardware]) -> None:
        self.hardware = hardware or build_hardware(settings.connectors, settings.readers,
                                                   emit=self.hardware_event, clock=self.clock.now,
                                                   gpio=settings.gpio)
        self.interlock.attach({cid: conn.contactor
                               for cid, conn in self.hardware.connectors.items()})
        measurands = frozenset().union(*(c.meter.measurands
                                         for c in self.hardware.connectors.values()))
        initial = dict(settings.ocpp)
        if settings.csms.authorization_key:
            initial.setdefault("AuthorizationKey", settings.csms.authorization_key)
        initial["SecurityProfile"] = str(settings.csms.security_profile)
        self.keys = OcppKeys(self.store, initial, fixed={
            "NumberOfConnectors": str(len(settings.connectors)),
            "SupportedFeatureProfiles": ",".join(["Core", *PROFILES]),
            "SupportedFileTransferProtocols": PROTOCOLS,
        }, measurands=measurands)
        self.key_files = KeyFiles(Path(settings.storage.path).resolve().parent)
        #: The last OCPP frames, for a diagnostics archive.
        self.frames = FrameRing()
        self.maintenance = maintenance.Maintenance(settings, self.events.put, self.frames)
        self.station = Station(StationConfig(
            charge_point_id=settings.csms.charge_point_id,
            boot_payload=boot_payload(settings),
            connectors=[ConnectorInfo(c.id, c.max_current_a, c.phases, c.nominal_voltage_v,
                                      c.fixed_cable, c.lock is not None)
                        for c in settings.connectors],
            response_timeout_s=settings.csms.response_timeout_s,
            max_frame_bytes=settings.csms.max_frame_bytes,
            strict_schema=settings.csms.strict_schema,
            log_frames=settings.log.frames,
            security_profile=settings.csms.security_profile,
            client_certificate=_read_text(settings.csms.client_cert),
            ca_configured=bool(settings.csms.ca_file),
            security_events=settings.csms.security_events,
            release=maintenance.running_release(maintenance.state_dir_of(settings)),
            revocation_check=settings.releases.revocation_check,
        ), self.keys, self.store, self.clock.now(), self.clock.wall())
        self.transport = Transport(settings.csms, self.events.put,
                                   password=lambda: self.keys.raw("AuthorizationKey"),
                                   ping_interval_s=self.keys.int("WebSocketPingInterval"),
                                   failure_log_interval_s=settings.log.link_failures_every_s)
        self._use_link_security(self.station.services.security_profile.link_security())
        self.meter_poller = None
        self.sim_server = None

    # -- life cycle
    def start(self) -> None:
        """Start the adapters (link, hardware, pollers); the loop runs in `run`."""

        self.hardware.start()
        self.storage.watch(self.events.put)
        self.meter_poller = MeterPoller({cid: c.meter for cid, c in
                                         self.hardware.connectors.items()},
                                        self.hardware_event, interval_s=1.0,
                                        clock=self.clock.now)
        self.meter_poller.start()
        sim = self.hardware.simulator
        if sim is not None:
            sim.step_system_clock = getattr(self.clock, "step_wall", None)
            from hal.sim_control import (  # lazy: only the simulated charger serves it
                SimControlServer, default_socket_path)

            path = self.settings.system.sim_socket or default_socket_path()
            try:
                self.sim_server = SimControlServer(
                    sim, path, on_command=self.caught_up, link=self.transport,
                    status_extra=lambda: {"loop": {**self.turns.snapshot(),
                                                   "interlock_opens": self.interlock.opened},
                                          "link": self.transport.status()})
                self.sim_server.start()
                log.info("simulated charger: control it with `chargepoint sim ...` (socket %s)",
                         path)
            except OSError as exc:
                log.warning("simulator control socket unavailable at %s: %s", path, exc)
        self.transport.start()

    def wake(self) -> None:
        self.events.put(ev.Tick())

    def caught_up(self, timeout_s: float = CATCH_UP_S) -> bool:
        """Wake the loop and wait, at most `timeout_s`, until it has handled every event
        queued before: the simulator's commands answer with what the firmware made of them
        (an unplug with the contactor it opened). Never called from the loop itself."""
        marker = _CaughtUp()
        self.events.put(marker)
        return marker.done.wait(timeout_s)

    def hardware_event(self, event: Any) -> None:
        """Queue an event of the hardware, stamped for the contactor-open latency; then, in
        this thread, open a contactor the event rules out (chargepoint/interlock.py). Queued
        first: what opening it makes the hardware report comes after it."""
        self.events.put(Stamped(event, time.monotonic()))
        self.interlock.observe(event)

    def stop(self) -> None:
        """Ask the loop to end cleanly (thread-safe, e.g. from a signal handler). Asked
        again while the stop waits for the CSMS, it ends the wait."""
        self._stop_requests += 1
        self._stopping.set()
        self.events.put(ev.ShutdownRequested())

    def cut_power(self) -> None:
        """End the loop as a power cut would: no clean-up in the core, nothing flushed.

        What was committed to SQLite is all that survives (tests of power loss)."""
        self._power_cut = True
        self._stopping.set()
        self.events.put(ev.ShutdownRequested())

    def run(self) -> Optional[act.Restart]:
        """Run until stopped or until the core asks for a restart (returned)."""
        self.start()
        self.notifier.ready()
        self.notifier.status("starting: connecting to the CSMS")
        try:
            self._loop()
            if not self._power_cut:
                self._execute(self.station.shutdown(self.clock.now()))
                if self.exit_action is None:      # a Reset has waited for the CSMS already
                    self._deliver_before_exit()
                    if not self._power_cut:  # what the CSMS confirmed meanwhile: durable
                        self._execute(self.station.shutdown(self.clock.now()))
        finally:
            log.info("loop: %s; %d contactor(s) opened at once by the interlock",
                     self.turns.describe(), self.interlock.opened)
            self.shutdown()
        return self.exit_action

    def shutdown(self) -> None:
        # STOPPING=1 only when the process ends: systemd takes it for the service stopping
        # by itself, sends no SIGTERM of its own after it (not even for a reboot) and kills
        # the process TimeoutStopSec later. A Reset restarts in place or waits for the
        # reboot's stop, so it does not say it.
        if self.exit_action is None:
            self.notifier.stopping()
        for closer in (getattr(self.sim_server, "close", None),
                       getattr(self.meter_poller, "close", None),
                       self.transport.close, self.hardware.close, self.storage.close):
            if closer is None:
                continue
            try:
                closer()
            except Exception:
                log.exception("error while shutting down")

    # -- the loop
    def _loop(self) -> None:
        self._execute(self.station.handle(ev.Tick(), self.clock.now(), self.clock.wall()))
        while not self._stopping.is_set() and self.exit_action is None:
            event = self._next_event(MAX_SLEEP_S)
            if isinstance(event, ev.ShutdownRequested):
                break
            self._turn(event)

    def _next_event(self, longest: float) -> Any:
        """The next event, or None once `longest` seconds or the core's next deadline pass."""
        deadline = self.station.next_deadline()
        timeout = longest
        if deadline is not None:
            timeout = min(timeout, deadline - self.clock.now())
        self._idle.set()
        event = self.turns.unwrap(self.clock.wait(self.events, timeout))
        self._idle.clear()
        return event

    def _turn(self, event: Any) -> None:
        """Hand one event (None: time passed) to the core and carry out what it returns."""
        marker = event if isinstance(event, _CaughtUp) else None
        if marker is not None:
            event = None
        if isinstance(event, ev.FrameReceived):
            self.frames.add("in", event.text, self.clock.wall())
        sim = self.hardware.simulator
        if sim is not None:
            try:
                sim.update()
            except Exception:
                log.exception("simulated charger failed to advance")
        self._execute(self.station.handle(event if event is not None else ev.Tick(),
                                          self.clock.now(), self.clock.wall()))
        if isinstance(event, ev.FrameReceived):
            self.transport.frame_handled()       # the link may read the next one
        self.turns.end()
        self.notifier.watchdog()
        if marker is not None:
            marker.done.set()

    def _deliver_before_exit(self) -> None:
        """A clean stop with the CSMS connected: wait, at most `[system] stop_wait_s`, until
        it has confirmed the StopTransactions just queued and everything queued before them.
        Offline, once the link drops, or when the bound passes, what is left stays on disk
        and goes at the next start (docs/delivery.md, "A clean stop")."""
        station, limit = self.station, self.settings.system.stop_wait_s
        self._turn(None)                         # hand the first message to the link now
        if not station.delivering() or limit <= 0:
            if len(station.services.outbox):
                log.info("stopping: %d transaction message(s) wait for the next start (%s)",
                         len(station.services.outbox), self._undelivered_because(limit))
            return
        log.info("stopping: delivering %d transaction message(s) to the CSMS first "
                 "(at most %g s)", len(station.services.outbox), limit)
        self.notifier.status(f"stopping: delivering {len(station.services.outbox)} transaction "
                             "message(s) to the CSMS")
        deadline = self.clock.now() + limit
        while station.delivering():
            left = deadline - self.clock.now()
            if left <= 0 or self._power_cut:
                if not self._power_cut:
                    log.warning("stopping: the CSMS did not confirm %d transaction message(s) "
                                "within %g s ([system] stop_wait_s); they are sent at the next "
                                "start", len(station.services.outbox), limit)
                return
            event = self._next_event(min(MAX_SLEEP_S, left))
            if isinstance(event, ev.ShutdownRequested):
                if self._stop_requests > 1 or self._power_cut:
                    log.warning("stopping at once, as asked again: %d transaction message(s) "
                                "wait for the next start", len(station.services.outbox))
                    return
                continue                         # the request that began this stop
            self._turn(event)
        if len(station.services.outbox):
            log.warning("stopping: %d transaction message(s) wait for the next start (%s)",
                        len(station.services.outbox), self._undelivered_because(limit))
        else:
            log.info("stopping: the CSMS has confirmed every transaction message")

    def _undelivered_because(self, limit: float) -> str:
        services = self.station.services
        if not services.link.connected:
            return "offline"
        if not services.link.accepted:
            return f"registration {services.link.registration}"
        if services.write_faults.failing:
            return "the database cannot be written"
        if limit <= 0:
            return "[system] stop_wait_s = 0"
        return "the next attempt of the first is not due yet"

    def _use_link_security(self, security: act.LinkSecurity) -> None:
        """The link connects with `security` from its next connection; the charger's own
        certificate, if the CSMS signed one, is written beside its key for the TLS client,
        and the key pairs no longer needed are deleted."""
        self.key_files.prune(self.station.services.charger_certificate.key_ids())
        csms = self.settings.csms
        cert, key = csms.client_cert, csms.client_key
        if security.charger_key_id and security.charger_chain:
            try:
                cert, key = self.key_files.certificate_files(security.charger_key_id,
                                                             security.charger_chain)
            except OSError as exc:
                log.error("the charger's certificate cannot be used (%s); the configured "
                          "client_cert stays in use", exc)
        self.transport.use_security(LinkSecurity(security.profile, cadata=security.roots_pem,
                                                 client_cert=cert, client_key=key,
                                                 trial=security.trial))

    def quiescent(self) -> bool:
        """Nothing left to do right now (tests use it to step a virtual clock)."""
        return (self._idle.is_set() and self.events.empty() and not self.station.busy()
                and not self.maintenance.busy())

    def _execute(self, actions: list) -> None:
        for action in actions:
            try:
                self._carry_out(action)
            except Exception as exc:
                log.exception("could not carry out %r", action)
                cid = getattr(action, "connector_id", 0)
                self.events.put(hal_events.HardwareFault(
                    cid, hal_events.FaultCode.OTHER_ERROR, True, f"{type(exc).__name__}"[:50]))

    def _carry_out(self, action: Any) -> None:
        conns = self.hardware.connectors
        if isinstance(action, act.SendFrame):
            self.transport.send(action.text)
            self.frames.add("out", action.text, self.clock.wall())
        elif isinstance(action, act.SetContactor):
            conns[action.connector_id].contactor.set_closed(action.closed)
            if not action.closed:
                self.turns.contactor_opened()
        elif isinstance(action, act.OfferCurrent):
            conns[action.connector_id].pilot.set_max_current(action.amps)
        elif isinstance(action, act.ReadMeter):
            if self.meter_poller is not None:
                self.meter_poller.request()
            else:                                   # before start(): nobody would answer
                self.events.put(hal_events.HardwareFault(
                    action.connector_id, hal_events.FaultCode.POWER_METER_FAILURE, True,
                    "meter not started"))
        elif isinstance(action, act.SetLock):
            lock = conns[action.connector_id].lock
            ok = False
            try:
                ok = lock is None or lock.set_locked(action.locked)
            finally:
                self.events.put(ev.LockResult(action.connector_id, action.locked, ok))
            if not ok:
                log.warning("connector %d lock did not confirm %s", action.connector_id,
                            "locking" if action.locked else "unlocking")
        elif isinstance(action, act.ShowIndicator):
            conn = conns.get(action.connector_id)
            if conn is not None and conn.indicator is not None:
                conn.indicator.show(IndicatorColour(action.colour))
        elif isinstance(action, act.Reconnect):
            self.transport.reconnect(action.reason)
        elif isinstance(action, act.LinkSettingsChanged):
            self.transport.set_ping_interval(action.ping_interval_s)
        elif isinstance(action, act.StorePrivateKey):
            self.key_files.store_private_key(action.key_id, action.pem)
            # The CSR it replaces (its row already overwritten) needs its key no more: a
            # CSMS triggering SignChargePointCertificate again and again leaves one file.
            self.key_files.prune(self.station.services.charger_certificate.key_ids()
                                 | {action.key_id})
        elif isinstance(action, act.LinkSecurity):
            self._use_link_security(action)
        elif isinstance(action, act.ReportStatus):
            self.notifier.status(action.text)
        elif isinstance(action, act.Restart):
            self.exit_action = action
        elif isinstance(action, maintenance.ACTIONS):
            restart = self.maintenance.carry_out(action)
            if restart is not None:
                self.exit_action = restart
        else:
            log.warning("no adapter for %r", action)


def _read_text(path: str) -> Optional[str]:
    """A PEM file's text for the core (the configured client certificate), None if unset or
    unreadable (chargepoint/tls_files.py reports why at start)."""
    if not path:
        return None
    try:
        return Path(path).read_text("ascii")
    except (OSError, UnicodeDecodeError):
        return None
