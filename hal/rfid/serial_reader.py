"""What every serial RFID reader shares: the port that may vanish, the fault it
raises, the daemon thread, and folding repeated sightings into one presentation."""
from __future__ import annotations

import logging
from typing import Optional

from hal.events import FaultCode, TagPresented
from hal.interfaces import Clock, Emit, IdReader
from hal.rfid.presentation import PresentationFilter
from hal.serial_port import DeviceThread, FaultFlag, SerialPort

log = logging.getLogger(__name__)


class SerialTagReader(IdReader):
    """Subclasses implement `_step(stopping)` and call `_open_port` and `_present`."""

    def __init__(self, name: str, port: str, baudrate: int, removal_s: float, emit: Emit,
                 clock: Clock, read_timeout_s: float = 0.05):
        self._emit = emit
        self._clock = clock
        self._port = SerialPort(port, baudrate, read_timeout_s=read_timeout_s, clock=clock)
        self._fault = FaultFlag(emit, 0, FaultCode.READER_FAILURE)
        self._filter = PresentationFilter(removal_s)
        self._thread = DeviceThread(f"{name} {port}", self._step)

    def start(self) -> None:
        self._thread.start()

    def close(self) -> None:
        self._thread.stop()
        self._port.close()

    def _step(self, stopping) -> None:
        raise NotImplementedError

    def _open_port(self, stopping):
        """The open port, or None after reporting the fault and waiting for a retry."""
        port = self._port.get()
        if port is None:
            self._fault.set(True, f"reader port: {self._port.last_error}")
            stopping.wait(min(max(self._port.retry_in(), 0.01), 0.2))
        return port

    def _present(self, tag: str, now: Optional[float] = None) -> None:
        """A sighting of `tag`: emitted only when it begins a new presentation."""
        if self._filter.seen(tag, self._clock() if now is None else now):
            log.info("card %s presented", tag)
            self._emit(TagPresented(tag))
