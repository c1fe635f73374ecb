"""The contactor opens on the hardware's word, before the loop's turn.

The core decides every output (chargepoint/model/status.py: a contactor is closed only in
pilot state C or D, on a connector without a blocking fault). But its turns can wait: a
commit to a stalled SD card takes seconds, and a hardware event queued behind it waits as
long. What that rule makes certain needs no turn, so the thread that reports the event
opens the contactor at once: a pilot that leaves C/D opens its connector's, a blocking
fault its connector's (connector 0: every outlet's). The core's own `SetContactor(open)`
follows in its turn and changes nothing. The interlock only ever opens; closing is the
core's alone.
"""
from __future__ import annotations

import logging
import threading
from typing import Any, Iterable, Mapping

from chargepoint.model.connector import BLOCKING_FAULTS
from hal.events import HardwareFault, PilotStateChanged
from hal.interfaces import Contactor

log = logging.getLogger("chargepoint.interlock")


def contactors_to_open(event: Any, outlets: Iterable[int]) -> tuple[int, ...]:
    """The connectors whose contactor `event` rules out, by the core's safety rule."""
    if isinstance(event, PilotStateChanged) and not event.state.wants_power:
        return (event.connector_id,)
    if isinstance(event, HardwareFault) and event.active and event.code in BLOCKING_FAULTS:
        return tuple(outlets) if event.connector_id == 0 else (event.connector_id,)
    return ()


class Interlock:
    """Opens contactors from whichever thread reports a hardware event (`observe`)."""

    def __init__(self) -> None:
        self._contactors: dict[int, Contactor] = {}
        self._count_lock = threading.Lock()
        #: Contactors opened here ahead of the core (for the loop's status report).
        self.opened = 0

    def attach(self, contactors: Mapping[int, Contactor]) -> None:
        """The outlets' contactors, once built (events during the build find none)."""
        self._contactors = dict(contactors)

    def observe(self, event: Any) -> None:
        contactors = self._contactors
        for connector_id in contactors_to_open(event, contactors):
            contactor = contactors.get(connector_id)
            if contactor is None:
                continue
            # No lock of ours around the contactor: it has its own, and a backend that
            # reports events while holding its lock (the simulator) would wait on ours.
            try:
                if not contactor.commanded_closed:
                    continue
                contactor.set_closed(False)
            except Exception:                # noqa: BLE001 - the core's own open follows
                log.exception("connector %d: the contactor could not be opened at once",
                              connector_id)
                continue
            with self._count_lock:
                self.opened += 1
            log.debug("connector %d: contactor opened at once (%s)", connector_id, event)
