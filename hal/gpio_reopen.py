"""A GPIO device that cannot be opened: its connector Faulted, the device tried again.

A GPIO chip the service's user may not open (a plain Debian without the udev rule), not
plugged in yet, or a line another program holds is fixed while the firmware runs (`udevadm
trigger`), so it is a connector fault, not a reason to stop: the charger still reaches the
CSMS and says what is wrong. Until the device opens, its stand-in reports the fault under
the OCPP 1.6 code whose meaning it has — a contactor we cannot drive is a "failure to
control power switch" (PowerSwitchFailure), a lock "failure to lock or unlock connector"
(ConnectorLockFailure), a status light has no code of its own (OtherError) — with the chip
in `info`, never closes the contactor, and tries the device again every `[gpio] retry_s`;
once it opens, the fault clears and the real device takes over.
"""
from __future__ import annotations

import logging
import threading
from typing import Callable, Generic, Optional, TypeVar

from hal.events import FaultCode, HardwareFault
from hal.gpio_settings import GpioChipUnavailable, fix_for
from hal.interfaces import ConnectorLock, Contactor, Emit, Indicator, IndicatorColour

log = logging.getLogger(__name__)

Device = TypeVar("Device")

#: The OCPP 1.6 ChargePointErrorCode of each device that cannot be driven (see above).
CODES = {"contactor": FaultCode.POWER_SWITCH_FAILURE,
         "lock": FaultCode.CONNECTOR_LOCK_FAILURE,
         "indicator": FaultCode.OTHER_ERROR}

#: Each reason is logged in full once (one chip fails every device on it).
_told: set[str] = set()
_told_lock = threading.Lock()


def cannot_open(exc: BaseException) -> bool:
    """A GPIO device that cannot be opened now but may later: the chip (permission, not
    there) or a line another program holds (lgpio's "GPIO busy")."""
    return isinstance(exc, (GpioChipUnavailable, OSError)) \
        or type(exc).__module__ == "lgpio"


def fault_texts(exc: BaseException) -> tuple[str, str]:
    """(info, vendorErrorCode), each within OCPP's 50 characters: the chip, and the fix."""
    if isinstance(exc, GpioChipUnavailable):
        return f"cannot open {exc.chip}"[:50], exc.fix[:50]
    if isinstance(exc, OSError) and exc.filename:
        return f"cannot open {exc.filename}"[:50], fix_for(exc)
    # lgpio's own refusal of a line: "GPIO busy" (another program holds it) or "GPIO
    # operation not permitted" (the chip has no such line); `info` carries which.
    return f"GPIO: {exc}"[:50], "GpioLineRefused"


class ThrottledOpen:
    """Opening a device from a loop that polls it (a meter's reads, a pilot's samples):
    once its chip refused, the refusal is raised again without trying until `retry_s` has
    passed, so a poll every few milliseconds does not reopen a chip every time."""

    def __init__(self, retry_s: float):
        self.retry_s = retry_s
        #: The last refusal by a chip that cannot be opened now (None: none, or opened).
        self.refused: Optional[BaseException] = None
        self._tried_at = 0.0

    def open(self, now: float, open_device: Callable[[], Device]) -> Device:
        if self.refused is not None and now - self._tried_at < self.retry_s:
            raise self.refused
        self._tried_at = now
        try:
            device = open_device()
        except Exception as exc:
            self.refused = exc if cannot_open(exc) else None
            raise
        self.refused = None
        return device


def open_or_stand_in(kind: str, open_device: Callable[[], Device], connector_id: int,
                     emit: Emit, retry_s: Optional[float]):
    """The device opened, or, when it cannot be opened now, its stand-in (a fault)."""
    try:
        return open_device()
    except Exception as exc:
        if not cannot_open(exc):
            raise
        stand_in = {"contactor": ReopeningContactor, "lock": ReopeningLock,
                    "indicator": ReopeningIndicator}[kind]
        return stand_in(open_device, connector_id, emit, exc, retry_s)


class _Reopening(Generic[Device]):
    """The fault while the device cannot be opened; `retry()` tries once (a daemon thread
    calls it every `retry_s`; tests call it directly)."""

    kind = ""

    def __init__(self, open_device: Callable[[], Device], connector_id: int, emit: Emit,
                 error: BaseException, retry_s: Optional[float]):
        self._open = open_device
        self._cid = connector_id
        self._emit = emit
        self._lock = threading.RLock()
        self.device: Optional[Device] = None
        self.code = CODES[self.kind]
        self.info, self.vendor_error_code = fault_texts(error)
        self._tell(error, retry_s)
        emit(HardwareFault(connector_id, self.code, True, self.info, self.vendor_error_code))
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = None
        if retry_s:
            self._thread = threading.Thread(target=self._retry_every, args=(retry_s,),
                                            daemon=True,
                                            name=f"gpio-retry-{connector_id}-{self.kind}")
            self._thread.start()

    def _tell(self, error: BaseException, retry_s: Optional[float]) -> None:
        with _told_lock:
            first = str(error) not in _told
            _told.add(str(error))
        then = f"; tried again every {retry_s:g} s" if retry_s else ""
        if first:
            log.error("connector %d %s: %s (the connector reports %s, Faulted%s)", self._cid,
                      self.kind, error, self.code.value, then)
        else:
            log.error("connector %d %s: cannot open %s either, as above (the connector "
                      "reports %s, Faulted)", self._cid, self.kind,
                      getattr(error, "chip", None) or getattr(error, "filename", None) or error,
                      self.code.value)

    def retry(self) -> bool:
        """Try to open the device once; True when it is open (now or before)."""
        with self._lock:
            if self.device is not None:
                return True
            try:
                device = self._open()
            except Exception as exc:
                if not cannot_open(exc):
                    log.exception("connector %d %s cannot be opened", self._cid, self.kind)
                return False
            self._opened(device)
            self.device = device
        with _told_lock:
            _told.clear()
        log.warning("connector %d %s: opened; the %s fault is cleared", self._cid, self.kind,
                    self.code.value)
        self._emit(HardwareFault(self._cid, self.code, False))
        return True

    def _opened(self, device: Device) -> None:
        """Bring the device to what was asked of it meanwhile."""

    def _retry_every(self, every_s: float) -> None:
        while not self._stop.wait(every_s):
            if self.retry():
                return

    def _close(self) -> None:
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=2)
        with self._lock:
            if self.device is not None:
                self.device.close()


class ReopeningContactor(_Reopening[Contactor], Contactor):
    """Open while it cannot be driven: a close is refused (logged), never attempted."""

    kind = "contactor"

    def set_closed(self, closed: bool) -> None:
        with self._lock:
            if self.device is not None:
                self.device.set_closed(closed)
            elif closed:
                log.error("connector %d: the contactor cannot be driven (%s); not closing it",
                          self._cid, self.info)

    @property
    def commanded_closed(self) -> bool:
        device = self.device
        return device.commanded_closed if device is not None else False

    def feedback_closed(self) -> Optional[bool]:
        device = self.device
        return device.feedback_closed() if device is not None else None

    @property
    def fault(self) -> Optional[str]:
        device = self.device
        return getattr(device, "fault", None) if device is not None else self.info

    def close(self) -> None:
        self._close()


class ReopeningLock(_Reopening[ConnectorLock], ConnectorLock):
    """A lock that cannot be moved answers that it did not move."""

    kind = "lock"

    def set_locked(self, locked: bool) -> bool:
        with self._lock:
            return self.device.set_locked(locked) if self.device is not None else False

    def is_locked(self) -> Optional[bool]:
        device = self.device
        return device.is_locked() if device is not None else None

    def close(self) -> None:
        self._close()


class ReopeningIndicator(_Reopening[Indicator], Indicator):
    """Remembers the colour asked for, and shows it once the light opens."""

    kind = "indicator"
    _wanted: Optional[IndicatorColour] = None

    def show(self, colour: IndicatorColour) -> None:
        with self._lock:
            self._wanted = colour
            if self.device is not None:
                self.device.show(colour)

    def _opened(self, device: Indicator) -> None:
        if self._wanted is not None:
            device.show(self._wanted)

    def close(self) -> None:
        self._close()
