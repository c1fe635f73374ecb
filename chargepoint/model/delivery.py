"""Sending the transaction messages: the head of the outbox, in order, and what its answer
or its failure means.

A CALLERROR or no answer while the link stays up is a failed attempt
(`TransactionMessageAttempts`, `TransactionMessageRetryInterval`). A lost link is not:
the message waits for the next connection. Unless the CSMS keeps closing a working link
on this very message (a poison message, e.g. a frame over its size limit): CLOSES_PER_ATTEMPT
closures in a row, each on a connection where the CSMS had answered something first,
count one failed attempt (docs/delivery.md, "Poison messages").
"""
from __future__ import annotations

import logging
from typing import Optional

from chargepoint.model.authorization import Authorization
from chargepoint.model.clock import StationClock
from chargepoint.model.link import Link, QueuedMessage
from chargepoint.model.outbox import Item, Outbox
from chargepoint.model.sessions import Sessions
from chargepoint.model.transactions import Transactions
from chargepoint.model.write_faults import WriteFaults
from chargepoint.ocpp_keys import OcppKeys
from chargepoint.timers import Timers

log = logging.getLogger("chargepoint.delivery")

#: A transaction message after which the CSMS closed the link this many times in a row
#: counts one failed attempt of TransactionMessageAttempts.
CLOSES_PER_ATTEMPT = 3


class Delivery:
    """The outbox's head on its way to the CSMS. Loop thread only."""

    def __init__(self, keys: OcppKeys, clock: StationClock, timers: Timers, link: Link,
                 outbox: Outbox, transactions: Transactions, authorization: Authorization,
                 sessions: Sessions, write_faults: WriteFaults):
        self._keys = keys
        self._clock = clock
        self._timers = timers
        self._link = link
        self._outbox = outbox
        self._transactions = transactions
        self._authorization = authorization
        self._sessions = sessions
        self._write_faults = write_faults

    def ready(self) -> bool:
        """A transaction message is due (it waits only for its turn)."""
        head = self._outbox.head()
        return head is not None and head.next_attempt <= self._clock.now

    def next_message(self) -> Optional[QueuedMessage]:
        """The head of the queue, as it goes on the wire now; None when nothing may go."""
        if self._write_faults.failing:
            return None     # an answer that cannot be recorded would only bring a repeat
        outbox = self._outbox
        while True:
            head = outbox.head()
            if head is None:
                self._timers.cancel("outbox-retry")
                return None
            if outbox.ready(self._clock.now) is None:
                self._timers.set("outbox-retry", head.next_attempt, lambda: None)
                return None
            payload = self._transactions.payload_for_send(head)
            if payload is None:
                outbox.failed(head, "no transactionId", self._clock.now, 1, 0)
                continue
            return QueuedMessage(head.action, payload, head.unique_id,
                                 on_result=lambda p, item=head: self._delivered(item, p),
                                 on_error=lambda reason, item=head: self._failed(item, reason))

    def _delivered(self, item: Item, response: dict) -> None:
        confirmed = self._transactions.delivered(item, response)
        if confirmed is None:
            return
        if confirmed.id_tag and confirmed.info:
            self._authorization.remember(confirmed.id_tag, confirmed.info)
        if confirmed.deauthorized:
            self._sessions.deauthorized(confirmed.tx, confirmed.info)

    def _failed(self, item: Item, reason: str) -> None:
        """A transaction message got a CALLERROR or no answer, or the link closed on it."""
        if reason == "offline":
            if not self._link.answered_on_link:
                return
            item.closures += 1
            if item.closures < CLOSES_PER_ATTEMPT:
                log.warning("the CSMS closed the link while %s %s was outstanding (%d of %d "
                            "in a row count as a failed attempt)", item.action,
                            item.unique_id, item.closures, CLOSES_PER_ATTEMPT)
                return
            reason = f"the CSMS closed the link on it {CLOSES_PER_ATTEMPT} times in a row"
        item.closures = 0
        tx = self._transactions.of(item)
        self._outbox.failed(item, reason, self._clock.now,
                            self._keys.int("TransactionMessageAttempts"),
                            self._keys.int("TransactionMessageRetryInterval"),
                            transaction_id=tx.transaction_id if tx is not None else None)
