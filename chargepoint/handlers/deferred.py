"""An answer that waits for the hardware (UnlockConnector) or for a worker
(SignedUpdateFirmware's CRLs): the CALLRESULT goes out when `resolve(payload)` is called,
in a later turn."""
from __future__ import annotations

from typing import Callable, Optional

#: answer(unique_id, action, payload): sends the CALLRESULT if the link is still up.
Answer = Callable[[str, str, dict], None]


class Deferred:
    def __init__(self) -> None:
        self._answer: Optional[Answer] = None
        self._unique_id = ""
        self._action = ""
        self.resolved = False

    def bind(self, answer: Answer, unique_id: str, action: str) -> None:
        """The station says where the answer goes once it is known."""
        self._answer, self._unique_id, self._action = answer, unique_id, action

    def resolve(self, payload: dict) -> None:
        if self.resolved or self._answer is None:
            return
        self.resolved = True
        self._answer(self._unique_id, self._action, payload)
