"""The CSMS as the model sees it: whether it is reachable, whether it accepted us, and the
one way to send it a CALL.

The model never holds the connection or the queue of CALLs (chargepoint/protocol/rpc.py
does): it reads them through `CallSender`, the port the RPC endpoint fills.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional, Protocol

#: Who goes first among our CALLs that are not transaction messages (the turn rule is in
#: chargepoint/protocol/rpc.py): the reports that open a connection (BootNotification,
#: every connector's status), an Authorize (someone waits at the charger), the rest.
CONNECTION, DRIVER, OTHER = 0, 1, 2
LANES = (CONNECTION, DRIVER, OTHER)

OnResult = Callable[[dict], None]
#: Called with "offline", "timeout", "queue full" or the CALLERROR code.
OnError = Callable[[str], None]


@dataclass(frozen=True)
class QueuedMessage:
    """A transaction message ready to go, with its stored unique id (the same on every
    attempt, so the CSMS can recognise a repeat)."""

    action: str
    payload: dict
    unique_id: str
    on_result: OnResult
    on_error: OnError


class CallSender(Protocol):
    """The RPC endpoint, as far as the model uses it."""

    connected: bool
    #: The CSMS has answered a CALL of ours on the present connection.
    answered_on_link: bool

    def send_call(self, action: str, payload: dict, on_result: Optional[OnResult] = None,
                  on_error: Optional[OnError] = None, before_accept: bool = False,
                  lane: int = OTHER) -> bool: ...

    def busy(self) -> bool: ...

    def has_room(self, action: str, payload: dict) -> bool: ...


class Link:
    """Connection and registration state; CALLs out. Loop thread only."""

    def __init__(self, sender: CallSender):
        self.sender = sender
        #: "new" (never answered), "Pending", "Rejected" or "Accepted".
        self.registration = "new"

    @property
    def connected(self) -> bool:
        return self.sender.connected

    @property
    def accepted(self) -> bool:
        return self.registration == "Accepted"

    @property
    def online(self) -> bool:
        """Connected and accepted: the CSMS decides, messages flow."""
        return self.sender.connected and self.accepted

    @property
    def answered_on_link(self) -> bool:
        return self.sender.answered_on_link

    def send_call(self, action: str, payload: dict, on_result: Optional[OnResult] = None,
                  on_error: Optional[OnError] = None, before_accept: bool = False,
                  lane: int = OTHER) -> bool:
        """Queue a CALL that is not a transaction message (those go through the outbox).

        While offline it fails at once with "offline": a heartbeat or a status that could
        not be sent is not worth replaying later. Returns whether it will go."""
        return self.sender.send_call(action, payload, on_result, on_error, before_accept, lane)

    def busy(self) -> bool:
        """A CALL of ours waits to be sent or answered."""
        return self.sender.busy()

    def has_room(self, action: str, payload: dict) -> bool:
        """Would a CALL like this be queued (merged into a waiting one, or room left)?"""
        return self.sender.has_room(action, payload)

    def describe(self) -> str:
        return f"{'online' if self.connected else 'offline'}, registration {self.registration}"
