"""Our CALLs that are not transaction messages: a bounded queue that coalesces repeats.

Heartbeats, statuses, Authorize, DataTransfer and the messages a CSMS asks for with
TriggerMessage wait here in memory for their turn (transaction messages wait in the
durable outbox instead, chargepoint/model/outbox.py). Two rules keep the queue small whatever
the CSMS does:

- **Coalescing.** A message that only reports the present — a Heartbeat, a connector's
  StatusNotification, a Diagnostics/(Signed)Firmware/LogStatusNotification, a
  BootNotification, a connector's triggered or clock-aligned MeterValues — takes the place
  of one of the same kind that is still waiting: its content replaces the older one, which keeps its place
  in line. A StatusNotification tells the current status (statuses that changed again
  before they could be sent are skipped, which MinimumStatusDuration also allows), so a
  CSMS that triggers StatusNotification 200 times a second gets one per connector at a
  time, not a growing backlog.
- **A bound.** At most `MAX_QUEUED` CALLs wait; one more is refused at once (its sender
  hears "queue full", as if offline; a TriggerMessage is answered Rejected). Coalescing
  never grows the queue, so the bound is only reached by messages that cannot be
  merged (Authorize, DataTransfer).

Lanes say who may go first (chargepoint/protocol/rpc.py `_next_outgoing` holds the turn rule):
`CONNECTION` for the reports that open a connection (BootNotification, every connector's
status), `DRIVER` for an Authorize (someone is waiting at the charger), `OTHER` for the
rest, each first in, first out.
"""
from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Callable, Hashable, Iterator, Optional

from chargepoint.model.link import LANES, OTHER
from chargepoint.protocol import ocppj

#: Most non-transaction CALLs waiting at once; each is a few hundred bytes.
MAX_QUEUED = 64


@dataclass
class Outgoing:
    """A CALL of ours waiting to be sent or answered."""

    action: str
    payload: dict
    on_result: Optional[Callable[[dict], None]] = None
    #: Called with "offline", "timeout", "queue full" or the CALLERROR code.
    on_error: Optional[Callable[[str], None]] = None
    #: May go out before BootNotification is Accepted (Boot itself, triggered messages).
    before_accept: bool = False
    unique_id: str = field(default_factory=ocppj.new_unique_id)
    lane: int = OTHER


def coalesce_key(action: str, payload: dict) -> Optional[Hashable]:
    """Messages with the same key report the same thing; only the newest is worth sending.
    None: never merged (every Authorize and DataTransfer counts)."""
    if action in ("Heartbeat", "BootNotification"):
        return (action,)
    if action in ("DiagnosticsStatusNotification", "FirmwareStatusNotification",
                  "SignedFirmwareStatusNotification", "LogStatusNotification"):
        # Each step of an upload or update is news (Downloading, Downloaded, Installing...);
        # only the same status of the same request told twice (a trigger flood) is merged.
        return (action, payload.get("status"), payload.get("requestId"))
    if action == "StatusNotification":
        # A fault is reported even if it cleared before it could be sent: an error code
        # keys apart from NoError, so a repair's report is not replaced by the all-clear.
        return (action, payload.get("connectorId"), payload.get("errorCode"),
                payload.get("vendorErrorCode"))
    if action == "MeterValues":
        # MeterValues here are never transaction messages (those wait in the outbox):
        # a triggered or clock-aligned reading, of which the newest says it all.
        return (action, payload.get("connectorId"))
    return None


class CallQueue:
    """The waiting CALLs, by lane. Loop thread only."""

    def __init__(self, bound: int = MAX_QUEUED):
        self.bound = bound
        self._lanes: dict[int, deque[Outgoing]] = {lane: deque() for lane in LANES}
        self._by_key: dict[Hashable, Outgoing] = {}

    def __len__(self) -> int:
        return sum(len(q) for q in self._lanes.values())

    def __iter__(self) -> Iterator[Outgoing]:
        for lane in LANES:
            yield from self._lanes[lane]

    def has_room(self, action: str, payload: dict) -> bool:
        """Would `put` take this message (merge it or queue it)? `payload` needs only what
        `coalesce_key` reads (for MeterValues, the connectorId)."""
        key = coalesce_key(action, payload)
        return (key is not None and key in self._by_key) or len(self) < self.bound

    def put(self, out: Outgoing) -> str:
        """Queue `out`: "queued", "merged" (into a waiting one of its kind) or "full"."""
        key = coalesce_key(out.action, out.payload)
        waiting = self._by_key.get(key) if key is not None else None
        if waiting is not None:
            waiting.payload = out.payload
            waiting.on_result, waiting.on_error = out.on_result, out.on_error
            waiting.before_accept = waiting.before_accept or out.before_accept
            if out.lane < waiting.lane:             # asked for sooner: it moves up
                self._lanes[waiting.lane].remove(waiting)
                waiting.lane = out.lane
                self._lanes[out.lane].append(waiting)
            return "merged"
        if len(self) >= self.bound:
            return "full"
        self._lanes[out.lane].append(out)
        if key is not None:
            self._by_key[key] = out
        return "queued"

    def pop(self, may_go: Callable[[Outgoing], bool],
            lanes: tuple[int, ...] = LANES) -> Optional[Outgoing]:
        """The first waiting CALL of `lanes` (in lane order) that `may_go`; removed."""
        for lane in lanes:
            queue = self._lanes[lane]
            for i, out in enumerate(queue):
                if may_go(out):
                    del queue[i]
                    self._forget(out)
                    return out
        return None

    def clear(self) -> list[Outgoing]:
        """Empty the queue (the link is gone); returns what was waiting, in lane order."""
        dropped = list(self)
        for queue in self._lanes.values():
            queue.clear()
        self._by_key.clear()
        return dropped

    def _forget(self, out: Outgoing) -> None:
        key = coalesce_key(out.action, out.payload)
        if key is not None and self._by_key.get(key) is out:
            del self._by_key[key]
