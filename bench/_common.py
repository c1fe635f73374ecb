"""Shared pieces of the benchmarks in bench/: the machine, the real firmware process,
/proc readings, medians and Markdown tables.

Every benchmark prints Markdown (the machine, the settings, a result table) that can be
pasted into docs/performance.md as it stands. Linux only (/proc).
"""
from __future__ import annotations

import datetime
import json
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Iterable, Optional, Sequence

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE_KB = os.sysconf("SC_PAGE_SIZE") // 1024

#: The charger of every benchmark: config.toml's simulated hardware, 32 A three-phase;
#: `[ocpp]` is DEFAULT_OCPP with the benchmark's own keys over it.
CONFIG = """\
[csms]
url = "{url}"
charge_point_id = "{cp_id}"
reconnect_min_s = {reconnect_min_s}
reconnect_max_s = {reconnect_max_s}
response_timeout_s = 30
{csms}
[identity]
vendor = "OpenEVSE-Py"
model = "AC-Wallbox"
serial_number = "SIM-0001"

[storage]
path = "{db}"

[log]
level = "{log_level}"
{log}
[system]
sim_socket = "{sock}"
{system}

[ocpp]
{ocpp}

[[connectors]]
id = 1
max_current_a = 32
phases = 3
nominal_voltage_v = 230
fixed_cable = true

[connectors.meter]
type = "sim"

[connectors.contactor]
type = "sim"

[connectors.pilot]
type = "sim"

[connectors.indicator]
type = "sim"

[[readers]]
type = "sim"
"""

#: As config.toml ships them, without WebSocket pings (the loopback CSMS needs none).
DEFAULT_OCPP = {
    "HeartbeatInterval": 300,
    "MeterValueSampleInterval": 60,
    "MeterValuesSampledData": "Energy.Active.Import.Register,Power.Active.Import",
    "WebSocketPingInterval": 0,
}

CP_ID = "CP-BENCH"
TAG = "04A1B2C3"


# ------------------------------------------------------------------------------ the machine
def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def hypervisor() -> str:
    """The hypervisor's vendor when this runs in a virtual machine, else ""."""
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=5).stdout
    except (OSError, subprocess.SubprocessError):
        out = ""
    for line in out.splitlines():
        if line.startswith("Hypervisor vendor:"):
            return line.split(":", 1)[1].strip()
    try:
        with open("/proc/cpuinfo") as f:
            if " hypervisor" in f.read():
                return "a hypervisor"
    except OSError:
        pass
    return ""


def machine() -> dict:
    virt = hypervisor()
    return {
        "cpu": cpu_model() + (f" (virtual machine on {virt})" if virt else ""),
        "cores": os.cpu_count(),
        "arch": platform.machine(),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "date": datetime.date.today().isoformat(),
    }


def machine_lines() -> list[str]:
    m = machine()
    return [f"- machine: {m['cpu']}, {m['cores']} logical CPUs, {m['arch']}, "
            f"Linux {m['kernel']}",
            f"- Python {m['python']}; measured {m['date']}"]


# ------------------------------------------------------------------------------ numbers
def median(values: Iterable[float]) -> float:
    values = list(values)
    return statistics.median(values) if values else float("nan")


def table(headers: Sequence[str], rows: Iterable[Sequence]) -> str:
    lines = ["| " + " | ".join(headers) + " |",
             "| " + " | ".join("---" for _ in headers) + " |"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def fmt(value: float, digits: int = 1) -> str:
    return f"{value:,.{digits}f}"


# ------------------------------------------------------------------------------ /proc
def proc_status(pid: int) -> dict[str, int]:
    """VmRSS, VmHWM, VmSize … of `pid` in kB, from /proc/<pid>/status."""
    out = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("Vm") or line.startswith("Rss"):
                key, value = line.split(":", 1)
                out[key] = int(value.split()[0])
    return out


def proc_cpu_s(pid: int) -> float:
    """utime + stime of `pid` (all its threads) in seconds, from /proc/<pid>/stat."""
    with open(f"/proc/{pid}/stat") as f:
        text = f.read()
    fields = text[text.rindex(")") + 2:].split()
    # fields[0] is field 3 (state); utime and stime are fields 14 and 15.
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


# ------------------------------------------------------------------------------ the firmware
class FirmwareProcess:
    """`python -m chargepoint run --config ...` in a work directory, output in a log file.

    `csms`, `log` and `system` add keys to those sections of CONFIG (not the ones it sets);
    `args` go to `run` (e.g. `--state-dir DIR`); `module` is what runs it (a test's driver
    that kills it at a chosen step, tests/kill_step_driver.py); `env` adds to its
    environment."""

    def __init__(self, workdir: Path, csms_url: str, ocpp: Optional[dict] = None,
                 log_level: str = "info", cp_id: str = CP_ID,
                 reconnect_min_s: float = 0.05, reconnect_max_s: float = 0.2,
                 csms: Optional[dict] = None, log: Optional[dict] = None,
                 system: Optional[dict] = None, args: Sequence[str] = (),
                 module: str = "chargepoint", env: Optional[dict] = None):
        self.args = list(args)
        self.module = module
        self.env = dict(env or {})
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.db = self.workdir / "cp.db"
        self.sock = self.workdir / "sim.sock"
        self.config = self.workdir / "config.toml"
        self.log = self.workdir / "firmware.log"
        keys = {**DEFAULT_OCPP, **(ocpp or {})}
        self.config.write_text(CONFIG.format(
            url=csms_url, cp_id=cp_id, db=self.db, sock=self.sock, log_level=log_level,
            ocpp="\n".join(f"{k} = {_toml(v)}" for k, v in keys.items()),
            reconnect_min_s=reconnect_min_s, reconnect_max_s=reconnect_max_s,
            csms="".join(f"{k} = {_toml(v)}\n" for k, v in (csms or {}).items()),
            log="".join(f"{k} = {_toml(v)}\n" for k, v in (log or {}).items()),
            system="".join(f"{k} = {_toml(v)}\n" for k, v in (system or {}).items())))
        self.proc: Optional[subprocess.Popen] = None
        self.started_at = 0.0

    def start(self) -> "FirmwareProcess":
        env = dict(os.environ, PYTHONUNBUFFERED="1", **self.env)
        for name in ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID", "JOURNAL_STREAM"):
            env.pop(name, None)
        with open(self.log, "ab") as out:
            self.started_at = time.monotonic()
            self.proc = subprocess.Popen(
                [sys.executable, "-m", self.module, "run", "--config", str(self.config),
                 *self.args],
                cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)
        return self

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def sim(self, cmd: str, *args: str) -> dict:
        from hal.sim_control import send_command

        reply = send_command(str(self.sock), cmd, list(args), timeout=5)
        if not reply.get("ok"):
            raise RuntimeError(f"sim {cmd} {' '.join(args)}: {reply.get('error')}")
        return reply["result"]

    def wait_sim(self, timeout: float = 10.0) -> None:
        """Until the simulator's control socket answers."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                self.sim("status")
                return
            except (OSError, ValueError):
                if time.monotonic() > deadline or self.proc.poll() is not None:
                    raise RuntimeError("the firmware's sim socket never answered:\n"
                                       + self.tail())
                time.sleep(0.02)

    def charge(self, csms, tag: str = "TAG1", timeout: float = 10.0):
        """Once started: wait until it has booted at `csms` (a LocalCsms), plug an EV into
        connector 1 and present `tag`; the StartTransaction the CSMS received."""
        self.wait_sim(timeout)
        csms.wait_for("BootNotification", timeout=timeout)
        self.sim("plug", "1")
        csms.wait_for("StatusNotification", lambda r: r["status"] == "Preparing",
                      timeout=timeout)
        self.sim("tap", tag)
        return csms.wait_for("StartTransaction", lambda r: r["idTag"] == tag, timeout=timeout)

    def stop(self, timeout: float = 20.0) -> int:
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else 0
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=10)
            return -9

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)

    def tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except FileNotFoundError:
            return "(no log)"


def _toml(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return str(value)
    return '"' + str(value).replace("\\", "\\\\").replace('"', '\\"') + '"'


class Workdir:
    """A temporary directory, removed afterwards unless `keep`."""

    def __init__(self, prefix: str, keep: bool = False, base: Optional[str] = None):
        self.path = Path(tempfile.mkdtemp(prefix=prefix, dir=base))
        self.keep = keep

    def __enter__(self) -> Path:
        return self.path

    def __exit__(self, *exc) -> None:
        if not self.keep:
            shutil.rmtree(self.path, ignore_errors=True)


def quiet_csms(**kwargs):
    """The bundled loopback CSMS (chargepoint/csms/server.py), started, printing nothing."""
    from chargepoint.csms.server import LocalCsms

    csms = LocalCsms(host="127.0.0.1", port=0, **kwargs)
    csms.start()
    return csms


# ------------------------------------------------------------------------------ a raw CSMS
class RawCsms:
    """A minimal OCPP-J endpoint on the `websockets` library, without the `ocpp` library.

    It answers every CALL of a charge point at once with a fixed schema-valid payload
    (no validation, no per-message thread hop), records what arrived, and can drive a
    tight loop of its own CALLs (`call_loop`) or of echo round trips (`echo_loop`), so
    the charge point's side, not the CSMS, bounds what is measured. Every frame in both
    directions passes the same reader and `json.loads`, whatever the peer.
    """

    def __init__(self, host: str = "127.0.0.1", port: int = 0):
        self.host, self.port = host, port
        #: (time.monotonic() at arrival, action, unique id, payload) of every CALL received.
        self.received: list[tuple[float, str, str, dict]] = []
        self._cond = threading.Condition()
        self._sessions: dict[str, "_RawSession"] = {}
        self._loop = None
        self._thread = None
        self._server = None
        self._tx_ids = 0

    @property
    def url(self) -> str:
        return f"ws://{self.host}:{self.port}/ocpp"

    def start(self) -> "RawCsms":
        import asyncio

        ready = threading.Event()
        self._loop = asyncio.new_event_loop()

        def run():
            asyncio.set_event_loop(self._loop)
            self._loop.run_until_complete(self._open())
            ready.set()
            self._loop.run_forever()

        self._thread = threading.Thread(target=run, name="raw-csms", daemon=True)
        self._thread.start()
        if not ready.wait(10):
            raise RuntimeError("the raw CSMS did not start")
        return self

    async def _open(self) -> None:
        from websockets.asyncio.server import serve

        self._server = await serve(self._handle, self.host, self.port,
                                   subprotocols=["ocpp1.6"], ping_interval=None,
                                   compression=None, max_size=2 ** 20)
        self.port = self._server.sockets[0].getsockname()[1]

    def stop(self) -> None:
        import asyncio

        if self._loop is None:
            return

        async def close():
            self._server.close()
            await self._server.wait_closed()

        try:
            asyncio.run_coroutine_threadsafe(close(), self._loop).result(10)
        except Exception:
            pass
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
        self._loop = None

    # -- the connections (loop thread)
    async def _handle(self, conn) -> None:
        import asyncio

        name = conn.request.path.rsplit("/", 1)[-1]
        session = _RawSession(conn)
        with self._cond:
            self._sessions[name] = session
            self._cond.notify_all()
        try:
            async for text in conn:
                frame = json.loads(text)
                if frame[0] == 2 and not session.echo:
                    now = time.monotonic()
                    _, uid, action, payload = frame
                    with self._cond:
                        self.received.append((now, action, uid, payload))
                        self._cond.notify_all()
                    await conn.send(json.dumps([3, uid, self._answer(action)],
                                               separators=(",", ":")))
                elif session.waiter is not None and not session.waiter.done():
                    session.waiter.set_result(frame)
        except Exception:
            pass
        finally:
            with self._cond:
                if self._sessions.get(name) is session:
                    del self._sessions[name]
                self._cond.notify_all()
            if session.waiter is not None and not session.waiter.done():
                session.waiter.set_exception(asyncio.CancelledError())

    def _answer(self, action: str) -> dict:
        now = datetime.datetime.now(datetime.timezone.utc).isoformat(
            timespec="milliseconds").replace("+00:00", "Z")
        if action == "BootNotification":
            return {"status": "Accepted", "currentTime": now, "interval": 300}
        if action == "Heartbeat":
            return {"currentTime": now}
        if action == "Authorize":
            return {"idTagInfo": {"status": "Accepted"}}
        if action == "StartTransaction":
            self._tx_ids += 1
            return {"transactionId": self._tx_ids, "idTagInfo": {"status": "Accepted"}}
        if action == "StopTransaction":
            return {"idTagInfo": {"status": "Accepted"}}
        if action == "DataTransfer":
            return {"status": "UnknownVendorId"}
        return {}

    # -- the benchmark's side (any thread)
    def wait_for(self, action: str, count: int = 1, timeout: float = 10.0) -> float:
        """Arrival time (time.monotonic()) of the `count`-th CALL `action`."""
        deadline = time.monotonic() + timeout
        seen, scanned = 0, 0
        with self._cond:
            while True:
                # Only what arrived since the last look: a rescan of everything on every
                # arrival holds the lock the CSMS needs and slows a long drain down.
                for record in self.received[scanned:]:
                    if record[1] == action:
                        seen += 1
                        if seen == count:
                            return record[0]
                scanned = len(self.received)
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"{count} x {action} not received within {timeout} s "
                                       f"({seen} were)")
                self._cond.wait(left)

    def wait_connected(self, name: str, timeout: float = 10.0) -> None:
        with self._cond:
            if not self._cond.wait_for(lambda: name in self._sessions, timeout):
                raise TimeoutError(f"{name} did not connect within {timeout} s")

    def call_loop(self, name: str, count: int, action: str, payload: dict,
                  timeout: float = 120.0) -> float:
        """Send `count` CALLs to `name` one after the other, each after the previous
        answer; returns the seconds taken. Every answer must be a CALLRESULT to it."""
        return self._run(self._loop_calls(name, count, action, payload), timeout)

    def echo_loop(self, name: str, count: int, text: str, timeout: float = 120.0) -> float:
        """`count` round trips of `text` through an echoing peer; returns the seconds."""
        self._sessions[name].echo = True
        return self._run(self._loop_calls(name, count, None, text), timeout)

    def _run(self, coro, timeout: float) -> float:
        import asyncio

        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout)

    async def _loop_calls(self, name: str, count: int, action: Optional[str], payload) -> float:
        import asyncio

        session = self._sessions[name]
        loop = asyncio.get_running_loop()
        started = time.perf_counter()
        for i in range(count):
            uid = f"b{i}"
            session.waiter = loop.create_future()
            if action is None:
                text = payload
            else:
                text = json.dumps([2, uid, action, payload], separators=(",", ":"))
            await session.conn.send(text)
            frame = await session.waiter
            if action is not None and (frame[0] != 3 or frame[1] != uid):
                raise RuntimeError(f"CALL {uid} {action} was answered with {frame!r}")
        return time.perf_counter() - started


class _RawSession:
    def __init__(self, conn):
        self.conn = conn
        self.waiter = None
        self.echo = False


#: The peer of `RawCsms.echo_loop`: websocket-client, as the firmware's link uses it
#: (chargepoint/transport.py), sending back every text frame it receives.
ECHO_CLIENT = """\
import sys, websocket
ws = websocket.WebSocket(enable_multithread=True)
ws.connect(sys.argv[1], header=["Sec-WebSocket-Protocol: ocpp1.6"], suppress_origin=True)
print("connected", flush=True)
while True:
    try:
        opcode, data = ws.recv_data(control_frame=True)
    except Exception:
        break
    if opcode == websocket.ABNF.OPCODE_TEXT:
        ws.send(data.decode("utf-8"))
    elif opcode == websocket.ABNF.OPCODE_CLOSE:
        break
"""


def torture_report(res, heading: str, command: str, body: str, json_path: Optional[str],
                   workdir: Path, keep: bool, figures: dict) -> int:
    """Print a torture benchmark's Markdown (machine, command, `body`, problems), write its
    figures as JSON if asked, remove the work directory unless kept or something failed;
    the exit status is 0 only when nothing failed."""
    import json
    import shutil

    print()
    print(f"### {heading}\n")
    print("\n".join(machine_lines()))
    print(f"- command: `{command}`\n")
    print(body)
    for problem in res.problems[:40]:
        print(f"  PROBLEM {problem}")
    if len(res.problems) > 40:
        print(f"  … {len(res.problems) - 40} more")
    if json_path:
        Path(json_path).write_text(json.dumps({**figures, "ok": res.ok}, indent=1,
                                              default=repr))
    if res.ok and not keep:
        shutil.rmtree(workdir, ignore_errors=True)
    elif not res.ok:
        print(f"work directory kept: {workdir}")
    return 0 if res.ok else 1

