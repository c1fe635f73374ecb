"""A serial port that may vanish, a fault that is reported once, and a device thread.

USB serial adapters get unplugged and come back (often under a udev symlink such as
/dev/serial/by-id/...): a backend must never crash on that, but report a fault once
and reopen the port by itself, backing off so that a missing device costs nothing.
"""
from __future__ import annotations

import logging
import threading
from typing import Callable, Optional

import serial

from hal.events import FaultCode, HardwareFault
from hal.interfaces import Clock, Emit, monotonic_clock

log = logging.getLogger(__name__)

#: What pyserial raises when a port is gone or broken: OSError covers ioctl failures,
#: termios.error (not an OSError) comes from tcflush/tcsetattr on a vanished device.
PORT_ERRORS: tuple[type[BaseException], ...] = (serial.SerialException, OSError)
try:
    import termios
    PORT_ERRORS += (termios.error,)
except ImportError:                      # Windows: no termios
    pass


class SerialPort:
    """Opens `url` on demand and, after a failure, reopens it no sooner than a backoff
    that doubles from `backoff_s` up to `backoff_max_s` (reset by a successful open)."""

    def __init__(self, url: str, baudrate: int, *, read_timeout_s: float = 0.05,
                 clock: Clock = monotonic_clock, backoff_s: float = 0.1,
                 backoff_max_s: float = 5.0):
        self.url = url
        self.baudrate = baudrate
        self.read_timeout_s = read_timeout_s
        self._clock = clock
        self._backoff_min = backoff_s
        self._backoff_max = backoff_max_s
        self._backoff = backoff_s
        self._next_attempt = float("-inf")
        self._serial: Optional[serial.Serial] = None
        self.last_error = ""

    @property
    def is_open(self) -> bool:
        return self._serial is not None

    def get(self, now: Optional[float] = None) -> Optional[serial.Serial]:
        """The open port, opening it if the backoff allows; None while unavailable."""
        if self._serial is not None:
            return self._serial
        now = self._clock() if now is None else now
        if now < self._next_attempt:
            return None
        try:
            # serial_for_url so that socket:// and loop:// work as well as device paths.
            self._serial = serial.serial_for_url(self.url, baudrate=self.baudrate,
                                                 timeout=self.read_timeout_s,
                                                 write_timeout=1.0)
        except PORT_ERRORS as exc:
            self._schedule_retry(now, exc)
            return None
        self._backoff = self._backoff_min
        self.last_error = ""
        log.info("opened %s", self.url)
        return self._serial

    def broken(self, exc: BaseException, now: Optional[float] = None) -> None:
        """The port failed in use: close it and retry after the backoff."""
        log.warning("%s failed: %s", self.url, exc)
        self._close_quietly()
        self._schedule_retry(self._clock() if now is None else now, exc)

    def retry_in(self, now: Optional[float] = None) -> float:
        """Seconds until the next open attempt (0 when open or due)."""
        if self._serial is not None:
            return 0.0
        now = self._clock() if now is None else now
        return max(0.0, self._next_attempt - now)

    def close(self) -> None:
        self._close_quietly()

    def _schedule_retry(self, now: float, exc: BaseException) -> None:
        self.last_error = str(exc) or type(exc).__name__
        self._next_attempt = now + self._backoff
        self._backoff = min(self._backoff * 2, self._backoff_max)

    def _close_quietly(self) -> None:
        port, self._serial = self._serial, None
        if port is not None:
            try:
                port.close()
            except PORT_ERRORS:
                pass


class FaultFlag:
    """Emits HardwareFault(active=True) when a condition starts and active=False when it
    ends, once each, so that a device failing on every poll does not flood the core."""

    def __init__(self, emit: Emit, connector_id: int, code: FaultCode):
        self._emit = emit
        self.connector_id = connector_id
        self.code = code
        self.active = False

    def set(self, active: bool, info: str = "", vendor_error_code: str = "") -> None:
        if active == self.active:
            return
        self.active = active
        self._emit(HardwareFault(self.connector_id, self.code, active, info[:50],
                                 vendor_error_code[:50]))


class DeviceThread:
    """Calls `step()` on a daemon thread until `stop()`. Each step must return within a
    fraction of a second (short serial timeouts) so that stopping is prompt."""

    def __init__(self, name: str, step: Callable[[threading.Event], None]):
        self._name = name
        self._step = step
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = None

    @property
    def stopping(self) -> threading.Event:
        return self._stop

    def start(self) -> None:
        if self._thread is not None:
            return
        self._thread = threading.Thread(target=self._run, name=self._name, daemon=True)
        self._thread.start()

    def stop(self, timeout_s: float = 2.0) -> None:
        self._stop.set()
        thread, self._thread = self._thread, None
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout_s)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self._step(self._stop)
            except Exception:  # a bug in one step must not silently kill the device
                log.exception("%s: unexpected error", self._name)
                self._stop.wait(1.0)
