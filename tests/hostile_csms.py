"""A Central System that misbehaves on request, for tests and bench/hostile.py.

`HostileCsms` is a `websockets` server on loopback (its asyncio loop in a thread, as
chargepoint/csms/server.py runs) that is a plain CSMS until told otherwise: it accepts
BootNotification, answers Authorize, StartTransaction, StopTransaction, MeterValues,
StatusNotification, Heartbeat and DataTransfer, so sessions run. On request it:

- stops reading its socket (`stop_reading`): the charger's frames pile up in TCP;
- floods CALLs (`flood`), as fast as the socket takes them or at a given rate;
- trickles one frame a byte at a time (`trickle`), written raw to the socket;
- sends one huge message as many fragments (`send_fragmented`);
- sends many large frames (`send_large_frames`);
- answers the next handshakes with an HTTP status instead of the upgrade (`refuse`):
  503 with a `Retry-After`, or a redirect (`redirect`, 301 with a `Location`).

Everything it sees is recorded with `time.monotonic()`: the handshakes and their
status, each connection's opening and closing (`connections`), the CALLs received.
Tests judge timings from this log rather than by sleeping.
"""
from __future__ import annotations

import asyncio
import datetime
import itertools
import json
import threading
import time
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any, Callable, Optional

from websockets.asyncio.server import ServerConnection, serve
from websockets.exceptions import ConnectionClosed
from websockets.frames import Frame, Opcode


@dataclass
class Handshake:
    time: float
    path: str
    status: int                       # 101: accepted


@dataclass
class Connection:
    """One accepted WebSocket connection."""

    number: int
    cp_id: str
    opened: float
    closed: Optional[float] = None
    close_code: Optional[int] = None


@dataclass
class Received:
    """A CALL of the charge point."""

    time: float
    connection: int
    action: str
    unique_id: str
    payload: Any


@dataclass
class Answer:
    """A CALLRESULT or CALLERROR of the charge point to one of our CALLs."""

    time: float
    connection: int
    frame: list


@dataclass
class Operation:
    """A misbehaviour running in the background: how far it got, and how it ended."""

    name: str
    sent: int = 0
    sent_bytes: int = 0
    started: float = field(default_factory=time.monotonic)
    ended: Optional[float] = None
    error: str = ""
    done: threading.Event = field(default_factory=threading.Event)

    def wait(self, timeout: float = 30.0) -> bool:
        return self.done.wait(timeout)


class _Session:
    def __init__(self, conn: ServerConnection, record: Connection):
        self.conn = conn
        self.record = record
        self.reading = asyncio.Event()
        self.reading.set()
        #: While a frame is written raw (a trickle), websockets must write nothing else.
        self.raw = False
        self.pending: dict[str, asyncio.Future] = {}

    async def may_read(self) -> bool:
        """Wait while reading is stopped; False if the connection closed meanwhile.

        A message taken off the connection just as reading stopped waits here; were this
        a plain `reading.wait()`, a close that came meanwhile would never be recorded and
        the connection would look open for ever."""
        if self.reading.is_set():
            return True
        resumed = asyncio.ensure_future(self.reading.wait())
        closed = asyncio.ensure_future(self.conn.wait_closed())
        try:
            done, _ = await asyncio.wait({resumed, closed}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            resumed.cancel()
            closed.cancel()
        return resumed in done


class HostileCsms:
    """See the module's docstring. Blocking methods may be called from any thread."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0, max_size: int = 2 ** 25):
        self.host, self.port, self.max_size = host, port, max_size
        self.handshakes: list[Handshake] = []
        self.connections: list[Connection] = []
        self.received: list[Received] = []
        self.answers: list[Answer] = []
        self._cond = threading.Condition()
        self._refusals: list[tuple[int, dict[str, str]]] = []
        self._session: Optional[_Session] = None
        self._live: set[_Session] = set()
        self._tx_ids = itertools.count(1)
        self._ids = itertools.count(1)
        self._loop: Optional[asyncio.AbstractEventLoop] = None
        self._thread: Optional[threading.Thread] = None
        self._server = None

    # ------------------------------------------------------------------ life cycle
    @property
    def url(self) -> str:
        return f"ws://{self.host}:{self.port}/ocpp"

    def start(self) -> "HostileCsms":
        ready = threading.Event()
        self._loop = asyncio.new_event_loop()

        def run():
            asyncio.set_event_loop(self._loop)
            self._loop.run_until_complete(self._open())
            ready.set()
            self._loop.run_forever()

        self._thread = threading.Thread(target=run, name="hostile-csms", daemon=True)
        self._thread.start()
        if not ready.wait(10):
            raise RuntimeError("the hostile CSMS did not start")
        return self

    def stop(self) -> None:
        """Abort every connection and stop listening (as a crash would, but tidily)."""
        if self._loop is None:
            return
        loop, thread = self._loop, self._thread

        async def close():
            for session in list(self._live):
                session.conn.transport.abort()
            self._server.close()
            try:
                await asyncio.wait_for(self._server.wait_closed(), 5)
            except TimeoutError:
                pass

        try:
            asyncio.run_coroutine_threadsafe(close(), loop).result(10)
        except Exception:  # noqa: BLE001 - stopping regardless
            pass
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=10)
        pending = asyncio.all_tasks(loop)
        for task in pending:
            task.cancel()
        if pending:
            loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
        loop.run_until_complete(loop.shutdown_asyncgens())
        loop.close()
        self._loop = None

    def __enter__(self) -> "HostileCsms":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    async def _open(self) -> None:
        csms = self

        class _Conn(ServerConnection):
            """A connection whose outgoing frames can be held back while one is written raw."""

            def __init__(self, protocol, *args, **kwargs):
                send_frame = protocol.send_frame

                def filtered(frame):
                    session = csms._session
                    if session is not None and session.conn is self and session.raw:
                        return                      # (a pong would land inside the frame)
                    send_frame(frame)

                protocol.send_frame = filtered
                super().__init__(protocol, *args, **kwargs)

        self._server = await serve(self._handle, self.host, self.port,
                                   subprotocols=["ocpp1.6"], ping_interval=None,
                                   compression=None, max_size=self.max_size,
                                   process_request=self._process_request,
                                   create_connection=_Conn)
        self.port = self._server.sockets[0].getsockname()[1]

    # ------------------------------------------------------------------ handshakes
    def refuse(self, count: int = 1, status: int = 503, retry_after: Optional[str] = None,
               location: Optional[str] = None) -> None:
        """Answer the next `count` handshakes with `status` instead of the upgrade, with a
        `Retry-After` and/or a `Location` header if given."""
        headers = {}
        if retry_after is not None:
            headers["Retry-After"] = retry_after
        if location is not None:
            headers["Location"] = location
        with self._cond:
            self._refusals += [(status, headers)] * count

    def redirect(self, location: str, count: int = 1, status: int = 301) -> None:
        """Answer the next `count` handshakes with a redirect to `location`."""
        self.refuse(count, status, location=location)

    def _process_request(self, connection: ServerConnection, request):
        with self._cond:
            status, headers = self._refusals.pop(0) if self._refusals else (101, {})
            self.handshakes.append(Handshake(time.monotonic(), request.path, status))
            self._cond.notify_all()
        if status == 101:
            return None
        response = connection.respond(HTTPStatus(status), f"{HTTPStatus(status).phrase}\n")
        for name, value in headers.items():
            response.headers[name] = value
        return response

    # ------------------------------------------------------------------ connections
    async def _handle(self, conn: ServerConnection) -> None:
        with self._cond:
            record = Connection(len(self.connections) + 1,
                                conn.request.path.rsplit("/", 1)[-1], time.monotonic())
            self.connections.append(record)
            session = self._session = _Session(conn, record)
            self._live.add(session)
            self._cond.notify_all()
        try:
            async for text in conn:
                if not await session.may_read():
                    break
                await self._frame_in(session, text)
        except ConnectionClosed:
            pass
        finally:
            for future in session.pending.values():
                if not future.done():
                    future.set_exception(ConnectionError("the charge point disconnected"))
            with self._cond:
                record.closed = time.monotonic()
                record.close_code = conn.close_code
                if self._session is session:
                    self._session = None
                self._live.discard(session)
                self._cond.notify_all()

    async def _frame_in(self, session: _Session, text) -> None:
        try:
            frame = json.loads(text)
            kind, uid = frame[0], frame[1]
        except (ValueError, TypeError, IndexError, KeyError):
            return
        if kind == 2:
            with self._cond:
                self.received.append(Received(time.monotonic(), session.record.number,
                                              frame[2], uid, frame[3]))
                self._cond.notify_all()
            answer = json.dumps([3, uid, self._answer(frame[2], frame[3])],
                                separators=(",", ":"))
            if not session.raw:
                await session.conn.send(answer)
        else:
            with self._cond:
                self.answers.append(Answer(time.monotonic(), session.record.number, frame))
                self._cond.notify_all()
            future = session.pending.pop(uid, None)
            if future is not None and not future.done():
                future.set_result(frame)

    def _answer(self, action: str, payload: Any) -> dict:
        now = datetime.datetime.now(datetime.timezone.utc).isoformat(
            timespec="milliseconds").replace("+00:00", "Z")
        if action == "BootNotification":
            return {"status": "Accepted", "currentTime": now, "interval": 300}
        if action == "Heartbeat":
            return {"currentTime": now}
        if action in ("Authorize", "StopTransaction"):
            return {"idTagInfo": {"status": "Accepted"}}
        if action == "StartTransaction":
            return {"transactionId": next(self._tx_ids), "idTagInfo": {"status": "Accepted"}}
        if action == "DataTransfer":
            return {"status": "UnknownVendorId"}
        return {}

    # ------------------------------------------------------------------ waiting
    def wait_connected(self, count: int = 1, timeout: float = 10.0) -> Connection:
        """The `count`-th connection, once it is open."""
        with self._cond:
            if not self._cond.wait_for(lambda: len(self.connections) >= count, timeout):
                raise TimeoutError(f"{count} connections not made within {timeout} s "
                                   f"({len(self.connections)} were)")
            return self.connections[count - 1]

    def wait_closed(self, number: int, timeout: float = 10.0) -> Connection:
        """Connection `number` (1 = the first), once it has closed."""
        with self._cond:
            ok = self._cond.wait_for(lambda: len(self.connections) >= number and
                                     self.connections[number - 1].closed is not None, timeout)
            if not ok:
                raise TimeoutError(f"connection {number} did not close within {timeout} s")
            return self.connections[number - 1]

    def wait_handshakes(self, count: int, timeout: float = 10.0) -> list[Handshake]:
        with self._cond:
            if not self._cond.wait_for(lambda: len(self.handshakes) >= count, timeout):
                raise TimeoutError(f"{count} handshakes not seen within {timeout} s "
                                   f"({len(self.handshakes)} were)")
            return list(self.handshakes)

    def wait_for(self, action: str, predicate: Callable[[Received], bool] = lambda r: True,
                 count: int = 1, timeout: float = 10.0, after: float = 0.0) -> Received:
        """The `count`-th CALL `action` (arrived after `after`, time.monotonic()) that
        satisfies `predicate`."""
        def found():
            hits = [r for r in self.received if r.action == action and r.time > after
                    and predicate(r)]
            return hits[count - 1] if len(hits) >= count else None

        with self._cond:
            if not self._cond.wait_for(lambda: found() is not None, timeout):
                raise TimeoutError(f"{count} x {action} not received within {timeout} s")
            return found()

    @property
    def connected(self) -> bool:
        return self._session is not None

    # ------------------------------------------------------------------ acting
    def _run(self, coro, timeout: float = 30.0):
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout)

    def _current(self) -> _Session:
        session = self._session
        if session is None:
            raise ConnectionError("no charge point is connected")
        return session

    def call(self, action: str, payload: dict, timeout: float = 10.0) -> list:
        """Send one CALL and return the charge point's answer frame (CALLRESULT or CALLERROR)."""
        session = self._current()

        async def go():
            uid = f"h{next(self._ids)}"
            future = asyncio.get_running_loop().create_future()
            session.pending[uid] = future
            await session.conn.send(json.dumps([2, uid, action, payload]))
            return await asyncio.wait_for(future, timeout)

        return self._run(go(), timeout + 5)

    def stop_reading(self) -> None:
        """Read nothing more from the current connection's socket (until `resume_reading`)."""
        session = self._current()

        def pause():
            session.reading.clear()
            session.conn.transport.pause_reading()

        self._loop.call_soon_threadsafe(pause)

    def resume_reading(self) -> None:
        session = self._current()

        def resume():
            session.reading.set()
            session.conn.transport.resume_reading()

        self._loop.call_soon_threadsafe(resume)

    def _background(self, name: str, work) -> Operation:
        session = self._current()
        op = Operation(name)

        async def run():
            try:
                await work(session, op)
            except ConnectionClosed:
                op.error = "connection closed"
            except Exception as exc:  # noqa: BLE001 - reported through the operation
                op.error = repr(exc)
            finally:
                op.ended = time.monotonic()
                op.done.set()

        asyncio.run_coroutine_threadsafe(run(), self._loop)
        return op

    def flood(self, action: str = "GetConfiguration", payload: Optional[dict] = None,
              rate: Optional[float] = None, count: Optional[int] = None,
              stop_reading: bool = False) -> Operation:
        """Send CALLs `action` one after the other (at `rate` per second, else as fast as
        the socket takes them) until `count` are sent or the connection closes; with
        `stop_reading`, read nothing from the charger meanwhile."""
        payload = {} if payload is None else payload

        async def work(session: _Session, op: Operation):
            if stop_reading:
                session.reading.clear()
                session.conn.transport.pause_reading()
            started = time.monotonic()
            while count is None or op.sent < count:
                text = json.dumps([2, f"f{op.sent}", action, payload], separators=(",", ":"))
                await session.conn.send(text)
                op.sent += 1
                op.sent_bytes += len(text)
                if rate:
                    await asyncio.sleep(max(0.0, started + op.sent / rate - time.monotonic()))
                elif op.sent % 64 == 0:
                    await asyncio.sleep(0)          # let the rest of the server breathe

        return self._background(f"flood {action}", work)

    def trickle(self, text: str = '[2,"slow","Heartbeat",{}]', interval_s: float = 2.0) -> \
            Operation:
        """Write one text frame to the socket a byte every `interval_s` (nothing else is
        written meanwhile)."""
        data = Frame(Opcode.TEXT, text.encode()).serialize(mask=False, extensions=[])

        async def work(session: _Session, op: Operation):
            session.raw = True
            try:
                for i in range(len(data)):
                    if session.record.closed is not None or session.conn.transport.is_closing():
                        raise ConnectionClosed(None, None)
                    session.conn.transport.write(data[i:i + 1])
                    op.sent_bytes += 1
                    await asyncio.sleep(interval_s)
                op.sent = 1
            finally:
                session.raw = False

        return self._background("trickle", work)

    def send_fragmented(self, total_bytes: int = 200 * 10 ** 6,
                        fragment_bytes: int = 10 ** 6) -> Operation:
        """One text message of `total_bytes` (a DataTransfer CALL) in fragments of
        `fragment_bytes`, made as they are sent."""
        head = '[2,"huge","DataTransfer",{"vendorId":"x","data":"'
        tail = '"}]'

        async def fragments(op: Operation):
            left = total_bytes - len(head) - len(tail)
            yield head
            while left > 0:
                n = min(fragment_bytes, left)
                yield "A" * n
                left -= n
                op.sent += 1
                op.sent_bytes += n
            yield tail

        async def work(session: _Session, op: Operation):
            await session.conn.send(fragments(op))

        return self._background("fragmented message", work)

    def send_large_frames(self, count: int = 400, size: int = 900_000,
                          stop_reading: bool = True) -> Operation:
        """`count` DataTransfer CALLs of `size` bytes each; with `stop_reading`, read
        nothing from the charger meanwhile."""
        async def work(session: _Session, op: Operation):
            if stop_reading:
                session.reading.clear()
                session.conn.transport.pause_reading()
            for i in range(count):
                head = f'[2,"big{i}","DataTransfer",{{"vendorId":"x","data":"'
                text = head + "A" * (size - len(head) - 3) + '"}]'
                await session.conn.send(text)
                op.sent += 1
                op.sent_bytes += len(text)

        return self._background("large frames", work)
