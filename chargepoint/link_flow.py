"""Bounded hand-overs between the station loop and the link to the CSMS.

The loop must never wait on the network, and the network must never make the
firmware's memory grow without bound. Two small pieces keep both true:

`SendBuffer` carries frames from the loop to the link's writer. `put` never
blocks; when the buffer is full (the CSMS stopped reading and the socket's own
buffers are full too) it refuses, and the link is dropped instead of the loop
waiting. Control frames (pong, ping, close) jump the queue and have their own
small bound.

`FrameCredits` bounds the CSMS's frames that wait in the loop's queue: the link
thread takes a credit before it reads a message and the loop gives it back when
it has handled the frame, so a CSMS that sends faster than the loop handles is
pushed back by TCP rather than buffered in this process. Hardware events use the
same queue without credits: they always get through.
"""
from __future__ import annotations

import threading
import time
from collections import deque
from dataclasses import dataclass
from typing import Callable, Optional

#: Frames of the CSMS that may wait in the loop's queue at once.
FRAMES_IN_FLIGHT = 4
#: Frames and bytes the loop may have handed to the link and not yet written.
SEND_BUFFER_FRAMES = 256
SEND_BUFFER_BYTES = 1 << 20
#: Control frames waiting at once; beyond it a pong is dropped (RFC 6455 5.5.3 allows
#: answering only the latest ping).
CONTROL_FRAMES = 4


@dataclass(frozen=True)
class Outgoing:
    """One frame for the writer: its WebSocket opcode, payload and when it was handed over."""

    opcode: int
    payload: bytes
    queued_at: float


class SendBuffer:
    """Frames waiting for the link's writer, bounded in frames and bytes; never blocks `put`."""

    def __init__(self, max_frames: int = SEND_BUFFER_FRAMES, max_bytes: int = SEND_BUFFER_BYTES,
                 max_control: int = CONTROL_FRAMES, clock: Callable[[], float] = time.monotonic):
        self.max_frames = max_frames
        self.max_bytes = max_bytes
        self.max_control = max_control
        self._clock = clock
        self._cond = threading.Condition()
        self._frames: deque[Outgoing] = deque()
        self._control: deque[Outgoing] = deque()
        self._bytes = 0
        self._closed = False
        self._woken = False

    def put(self, opcode: int, payload: bytes) -> bool:
        """Queue a data frame; False when the buffer is full or closed (nothing is queued).

        The frame at the head (the next to be written) does not count against
        `max_bytes`: a legitimate large answer is never refused for its size, nor does it
        crowd out the small frames that follow it while it goes out."""
        with self._cond:
            behind = self._bytes - (len(self._frames[0].payload) if self._frames else 0)
            if self._closed or len(self._frames) >= self.max_frames or (
                    self._frames and behind + len(payload) > self.max_bytes):
                return False
            self._frames.append(Outgoing(opcode, payload, self._clock()))
            self._bytes += len(payload)
            self._cond.notify_all()
            return True

    def put_control(self, opcode: int, payload: bytes = b"") -> bool:
        """Queue a control frame ahead of the data frames; False when too many wait."""
        with self._cond:
            if self._closed or len(self._control) >= self.max_control:
                return False
            self._control.append(Outgoing(opcode, payload, self._clock()))
            self._cond.notify_all()
            return True

    def take(self, timeout: float) -> Optional[Outgoing]:
        """The next frame (control frames first), or None after `timeout`, `wake` or `close`."""
        with self._cond:
            if not (self._control or self._frames or self._closed or self._woken):
                self._cond.wait(max(0.0, timeout))
            self._woken = False
            if self._control:
                return self._control.popleft()
            if self._frames:
                out = self._frames.popleft()
                self._bytes -= len(out.payload)
                self._cond.notify_all()
                return out
            return None

    def wake(self) -> None:
        """Make a waiting `take` return now (the writer has something else to do)."""
        with self._cond:
            self._woken = True
            self._cond.notify_all()

    def seal(self) -> None:
        """Refuse further frames; what is queued can still be taken."""
        with self._cond:
            self._closed = True

    def close(self) -> None:
        """Refuse further frames and wake the writer (the link is gone)."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    def oldest(self) -> Optional[float]:
        """When the longest-waiting frame was handed over (None: nothing waits)."""
        with self._cond:
            times = [q[0].queued_at for q in (self._control, self._frames) if q]
            return min(times) if times else None

    @property
    def frames(self) -> int:
        return len(self._frames) + len(self._control)

    @property
    def bytes(self) -> int:
        return self._bytes


class FrameCredits:
    """How many of the CSMS's frames may wait in the loop at once.

    The link thread `acquire`s one before reading a message and keeps it while the
    frame waits in the loop's queue; the loop `release`s it once the frame is handled.
    A release without an acquire (a frame put on the queue by something other than
    the link) is ignored, so the count never exceeds its limit.
    """

    def __init__(self, limit: int = FRAMES_IN_FLIGHT):
        self.limit = limit
        self._cond = threading.Condition()
        self._taken = 0

    def acquire(self, timeout: float) -> bool:
        with self._cond:
            if not self._cond.wait_for(lambda: self._taken < self.limit, max(0.0, timeout)):
                return False
            self._taken += 1
            return True

    def release(self) -> None:
        with self._cond:
            if self._taken > 0:
                self._taken -= 1
                self._cond.notify_all()

    @property
    def in_flight(self) -> int:
        return self._taken
