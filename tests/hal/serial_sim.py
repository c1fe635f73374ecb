"""Simulated serial devices for tests: the device runs on the master end of a real
pseudo-terminal pair, the backend under test opens the slave end through pyserial.

The port is published under a symlink (like udev's /dev/serial/by-id/... names) so
that a test can make the device vanish and come back at the same path.
"""
from __future__ import annotations

import os
import select
import threading
import tty
from pathlib import Path
from typing import Callable, Optional

Respond = Callable[[bytes], bytes]


class PtyDevice:
    """Runs `respond(received_bytes) -> reply_bytes` on a thread for every chunk the
    backend writes. `write()` sends unsolicited bytes (notifications, card frames)."""

    def __init__(self, link: Path, respond: Optional[Respond] = None):
        self.link = Path(link)
        self._respond = respond
        self._master, self._slave = os.openpty()
        # Raw from the start: before pyserial configures the slave, the line discipline
        # would echo and translate bytes the device writes.
        tty.setraw(self._slave)
        if self.link.is_symlink() or self.link.exists():
            self.link.unlink()
        self.link.symlink_to(os.ttyname(self._slave))
        self._write_lock = threading.Lock()
        self._cond = threading.Condition()
        self.received = bytearray()
        self._closed = False
        self._thread = threading.Thread(target=self._run, name="pty-device", daemon=True)
        self._thread.start()

    @property
    def path(self) -> str:
        return str(self.link)

    def write(self, data: bytes) -> None:
        with self._write_lock:
            if self._closed:
                return
            view = memoryview(data)
            while view:
                n = os.write(self._master, view)
                view = view[n:]

    def wait_received(self, predicate: Callable[[bytes], bool], timeout: float = 3.0) -> bool:
        """Wait until `predicate(all bytes received so far)` holds."""
        with self._cond:
            return self._cond.wait_for(lambda: predicate(bytes(self.received)), timeout)

    def vanish(self) -> None:
        """Unplug: close both ends and remove the path."""
        self._stop()
        if self.link.is_symlink():
            self.link.unlink()

    close = vanish

    def _stop(self) -> None:
        with self._write_lock:
            if self._closed:
                return
            self._closed = True
        self._thread.join(2.0)
        for fd in (self._master, self._slave):
            try:
                os.close(fd)
            except OSError:
                pass

    def _run(self) -> None:
        while not self._closed:
            ready, _, _ = select.select([self._master], [], [], 0.02)
            if not ready:
                continue
            try:
                data = os.read(self._master, 4096)
            except OSError:
                continue
            if not data:
                continue
            with self._cond:
                self.received += data
                self._cond.notify_all()
            if self._respond is not None:
                reply = self._respond(data)
                if reply:
                    self.write(reply)
