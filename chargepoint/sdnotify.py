"""sd_notify client: tells systemd the firmware is ready, alive, or stopping.

Hand-written because the protocol is one datagram on a Unix socket, and
python-systemd would need libsystemd's headers on the controller. See
sd_notify(3) for the fields.

Typical use by the main program::

    notifier = Notifier.from_environment()
    ...open the database, start the hardware...
    notifier.ready("connecting to the Central System")
    while running:
        ...one turn of the main loop...
        notifier.watchdog()          # cheap: sends at most every WatchdogSec/2
    notifier.stopping("stopping transactions")

systemd arms the watchdog (WatchdogSec=) when READY=1 arrives and disarms it
once the service is stopping, so only the running main loop must ping.
Outside systemd (no $NOTIFY_SOCKET) every method is a no-op returning False.
A failed send is logged once and never raised: the charger must keep
charging when the service manager has gone away.
"""
from __future__ import annotations

import logging
import os
import re
import socket
import threading
import time
from typing import Callable, Mapping, MutableMapping, Optional, Union

log = logging.getLogger(__name__)

Address = Union[str, bytes]

_FIELD_NAME = re.compile(r"[A-Z][A-Z0-9_]*\Z")


def _encode_value(value: object) -> str:
    if isinstance(value, bool):
        return "1" if value else "0"
    return str(value)


class Notifier:
    """Sends sd_notify messages to `address`; disabled when `address` is None.

    `address` is a filesystem path, or an abstract socket name starting with
    '@' (as systemd writes it in $NOTIFY_SOCKET). `watchdog_usec` enables
    `watchdog()`; pings are sent at most every `watchdog_fraction` of that
    period, measured with `clock` (seconds, monotonic).
    """

    def __init__(self, address: Optional[Address] = None, watchdog_usec: Optional[int] = None, *,
                 clock: Callable[[], float] = time.monotonic, watchdog_fraction: float = 0.5):
        if not 0 < watchdog_fraction <= 1:
            raise ValueError("watchdog_fraction must be in (0, 1]")
        self._address = self._socket_address(address) if address else None
        self._watchdog_interval = (watchdog_usec / 1_000_000
                                   if self._address is not None and watchdog_usec else None)
        self._min_ping_gap = (self._watchdog_interval * watchdog_fraction
                              if self._watchdog_interval else None)
        self._clock = clock
        self._last_ping: Optional[float] = None
        self._sock: Optional[socket.socket] = None
        self._failing = False
        self._lock = threading.Lock()

    # ------------------------------------------------------------------ construction

    @classmethod
    def from_environment(cls, environ: Optional[MutableMapping[str, str]] = None, *,
                         clock: Callable[[], float] = time.monotonic,
                         unset_environment: bool = False) -> "Notifier":
        """Build from $NOTIFY_SOCKET, $WATCHDOG_USEC and $WATCHDOG_PID.

        The watchdog is enabled only when $WATCHDOG_PID is unset or names this
        process (the variables may have been inherited from a parent). With
        `unset_environment`, the variables are removed so that child processes
        (the reboot command, helpers) do not talk to systemd in our name.
        """
        env: MutableMapping[str, str] = os.environ if environ is None else environ
        address = env.get("NOTIFY_SOCKET") or None
        watchdog_usec = cls._watchdog_usec(env)
        if unset_environment:
            for name in ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID"):
                env.pop(name, None)
        return cls(address, watchdog_usec, clock=clock)

    @staticmethod
    def _watchdog_usec(env: Mapping[str, str]) -> Optional[int]:
        raw = env.get("WATCHDOG_USEC")
        if not raw:
            return None
        try:
            usec = int(raw)
        except ValueError:
            log.warning("ignoring invalid WATCHDOG_USEC=%r", raw)
            return None
        if usec <= 0:
            return None
        pid = env.get("WATCHDOG_PID")
        if pid:
            try:
                if int(pid) != os.getpid():
                    return None
            except ValueError:
                log.warning("ignoring watchdog: invalid WATCHDOG_PID=%r", pid)
                return None
        return usec

    @staticmethod
    def _socket_address(address: Address) -> Optional[bytes]:
        raw = os.fsencode(address)
        if raw.startswith(b"@"):
            return b"\0" + raw[1:]  # abstract namespace
        if raw.startswith(b"/"):
            return raw
        # e.g. "vsock:..." (systemd in a VM): not spoken here.
        log.warning("unsupported NOTIFY_SOCKET %r; not notifying systemd", address)
        return None

    # ------------------------------------------------------------------ properties

    @property
    def enabled(self) -> bool:
        """True when messages go somewhere."""
        return self._address is not None

    @property
    def watchdog_interval(self) -> Optional[float]:
        """systemd's WatchdogSec= in seconds, or None when no watchdog is expected.

        The main loop must call `watchdog()` well within this period; blocking
        waits in it should time out after at most half of it.
        """
        return self._watchdog_interval

    # ------------------------------------------------------------------ messages

    def notify(self, **fields: object) -> bool:
        """Send one datagram of `NAME=value` lines; True if it was sent.

        `notify(READY=1, STATUS="up")` sends ``READY=1\\nSTATUS=up``. Names must
        be upper case; values must not contain a newline (ValueError).
        """
        if self._address is None or not fields:
            return False
        lines = []
        for name, value in fields.items():
            if not _FIELD_NAME.match(name):
                raise ValueError(f"invalid sd_notify field name {name!r}")
            text = _encode_value(value)
            if "\n" in text:
                raise ValueError(f"sd_notify field {name} must not contain a newline")
            lines.append(f"{name}={text}")
        return self._send("\n".join(lines).encode())

    def ready(self, status: Optional[str] = None) -> bool:
        """Start-up is complete: systemd starts units ordered after this one."""
        return self._with_status(status, READY=1)

    def status(self, text: str) -> bool:
        """One line shown by `systemctl status chargepoint`."""
        return self.notify(STATUS=self._one_line(text))

    def stopping(self, status: Optional[str] = None) -> bool:
        """A clean stop has begun (sent before the slow part of the shutdown)."""
        return self._with_status(status, STOPPING=1)

    def reloading(self, status: Optional[str] = None) -> bool:
        """A configuration reload has begun; follow with `ready()` when done.

        Carries MONOTONIC_USEC, which systemd 253+ requires with RELOADING=1.
        """
        usec = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        return self._with_status(status, RELOADING=1, MONOTONIC_USEC=usec)

    def watchdog(self) -> bool:
        """Ping the watchdog if due; cheap enough to call on every loop turn.

        Sends WATCHDOG=1 at most once per half watchdog period. Returns True
        when a ping was sent. A failed ping is retried on the next call.
        """
        if self._min_ping_gap is None:
            return False
        now = self._clock()
        with self._lock:
            if self._last_ping is not None and now - self._last_ping < self._min_ping_gap:
                return False
        if not self._send(b"WATCHDOG=1"):
            return False
        with self._lock:
            self._last_ping = now
        return True

    def close(self) -> None:
        """Release the socket; later messages open a new one."""
        with self._lock:
            sock, self._sock = self._sock, None
        if sock is not None:
            sock.close()

    # ------------------------------------------------------------------ internals

    @staticmethod
    def _one_line(text: str) -> str:
        return " ".join(str(text).splitlines())

    def _with_status(self, status: Optional[str], **fields: object) -> bool:
        if status is not None:
            fields["STATUS"] = self._one_line(status)
        return self.notify(**fields)

    def _send(self, message: bytes) -> bool:
        assert self._address is not None
        try:
            with self._lock:
                if self._sock is None:
                    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
                    # Never block the main loop on a full queue of a stuck manager.
                    sock.setblocking(False)
                    self._sock = sock
                self._sock.sendto(message, self._address)
        except OSError as exc:
            if not self._failing:
                self._failing = True
                log.warning("cannot notify systemd at %r: %s (not logged again until it works)",
                            self._address, exc)
            return False
        if self._failing:
            self._failing = False
            log.info("notifying systemd works again")
        return True
