"""Drive the simulated charger of a running firmware from another terminal.

The firmware serves a Unix-domain stream socket (mode 0600, in a directory only
its user can enter); `chargepoint sim plug 1` connects, sends one JSON request
per line and prints the JSON reply:

    {"cmd": "plug", "args": ["1"]}        ->  {"ok": true, "result": {...}}
    {"cmd": "plug", "args": ["9"]}        ->  {"ok": false, "error": "no simulated connector 9 ..."}

A Unix socket rather than TCP: no port to pick or to expose, and file
permissions decide who may plug cars in.

Besides the simulated hardware, the socket drives the firmware's link to the
CSMS (`disconnect` holds it down, `reconnect` lets it connect again), so the
charger can be taken offline without touching the CSMS. A command that changes
a connector is answered once the firmware has reacted to it (`on_command`), so
`unplug` shows the contactor the firmware opened, not the one it was about to.
"""
from __future__ import annotations

import errno
import json
import logging
import os
import selectors
import socket
import stat
import sys
import threading
from typing import Any, Callable, Optional

from hal.sim import FAULTS, UNPLUG_SIDES, SimCharger, SimError

log = logging.getLogger(__name__)

MAX_LINE = 64 * 1024
"""Longest request accepted; a longer line is answered with an error and dropped."""

IDLE_TIMEOUT_S = 60.0
"""A connection that sends nothing for this long is closed (frees its thread)."""

COMMANDS = {
    "plug": "[N]              plug an EV into connector N",
    "unplug": "[N] [ev|socket]  unplug the EV (ev: at the car only; socket: the cable "
              "from the socket)",
    "tap": "IDTAG            present an RFID card",
    "ev-suspend": "[N]              the EV pauses charging (SuspendedEV)",
    "ev-resume": "[N]              the EV asks for power again",
    "fault": f"WHAT [N]         inject a fault ({', '.join(FAULTS)})",
    "clear-fault": "WHAT [N]         clear an injected fault",
    "status": "                 show every connector",
    "clock-step": "SECONDS          step the charger's system clock (NTP, an operator); "
                  "monotonic time goes on",
    "disconnect": "                 drop the link to the CSMS and keep it down (offline)",
    "reconnect": "                 let the link to the CSMS connect again",
}

#: Commands for the firmware's link rather than the simulated hardware.
LINK_COMMANDS = ("disconnect", "reconnect")


SERVICE_RUNTIME_DIR = "/run/chargepoint"
"""The unit's RuntimeDirectory=: where the service serves the socket (its /tmp is private)."""


def default_socket_path(client: bool = False, environ: Optional[dict] = None,
                        service_dir: str = SERVICE_RUNTIME_DIR) -> str:
    """Where `chargepoint run` serves the socket (client=False) or `chargepoint sim`
    looks for it (client=True), when `[system] sim_socket` does not say.

    Under systemd, $RUNTIME_DIRECTORY. Otherwise the service's directory: for a
    client if it exists (the service runs), so `sudo chargepoint sim ...` reaches
    the service; for a server if it is its own and writable (as `_prepare_directory`
    demands). Then the per-user fallbacks.
    """
    env = os.environ if environ is None else environ
    runtime_directory = env.get("RUNTIME_DIRECTORY", "").split(":")[0]
    if runtime_directory:
        return os.path.join(runtime_directory, "sim.sock")
    if client and os.path.isdir(service_dir) or not client and _own_writable(service_dir):
        return os.path.join(service_dir, "sim.sock")
    runtime = env.get("XDG_RUNTIME_DIR")
    if runtime:
        return os.path.join(runtime, "chargepoint", "sim.sock")
    return os.path.join("/tmp", f"chargepoint-{os.getuid()}", "sim.sock")


def _own_writable(directory: str) -> bool:
    try:
        owner = os.stat(directory).st_uid
    except OSError:
        return False
    return owner == os.getuid() and os.access(directory, os.W_OK | os.X_OK)


class SimNotRunning(ConnectionError):
    """Nothing listens at the socket path."""


# --------------------------------------------------------------------------- commands

def _connector_arg(sim: SimCharger, args: list, index: int) -> int:
    """Connector N from args[index]; may be left out when there is one connector."""
    if len(args) > index:
        value = args[index]
        if isinstance(value, bool) or not (isinstance(value, int) or
                                           (isinstance(value, str) and value.isdigit())):
            raise SimError(f"a connector id is a number, got {value!r}")
        return int(value)
    ids = sim.connector_ids
    if len(ids) == 1:
        return ids[0]
    raise SimError(f"which connector? (connectors: {', '.join(map(str, ids)) or 'none'})")


def _check_count(cmd: str, args: list, least: int, most: int) -> None:
    if not least <= len(args) <= most:
        raise SimError(f"usage: {cmd} {COMMANDS[cmd].split('  ')[0].strip()}")


def execute(sim: SimCharger, cmd: Any, args: Any, link: Any = None) -> Any:
    """Carry out one command; SimError for anything the user got wrong. `link` is the
    firmware's link to the CSMS (`hold`, `release`, `status`), if it lets itself be driven."""
    if not isinstance(cmd, str):
        raise SimError("'cmd' must be a string")
    if not isinstance(args, list):
        raise SimError("'args' must be a list")
    if cmd not in COMMANDS:
        raise SimError(f"unknown command {cmd!r} (commands: {', '.join(COMMANDS)})")
    if cmd == "unplug":
        _check_count(cmd, args, 0, 2)
        side = "both"
        if args and args[-1] in UNPLUG_SIDES:
            side, args = args[-1], args[:-1]
        _check_count(cmd, args, 0, 1)
        return sim.unplug(_connector_arg(sim, args, 0), side=side)
    if cmd in ("plug", "ev-suspend", "ev-resume"):
        _check_count(cmd, args, 0, 1)
        cid = _connector_arg(sim, args, 0)
        action = {"plug": sim.plug, "ev-suspend": sim.ev_suspend,
                  "ev-resume": sim.ev_resume}[cmd]
        return action(cid)
    if cmd == "tap":
        _check_count(cmd, args, 1, 1)
        return sim.tap(str(args[0]))
    if cmd in ("fault", "clear-fault"):
        _check_count(cmd, args, 1, 2)
        what = args[0]
        if not isinstance(what, str):
            raise SimError(f"a fault is a name, got {what!r}")
        cid = _connector_arg(sim, args, 1)
        return (sim.fault if cmd == "fault" else sim.clear_fault)(what, cid)
    if cmd == "clock-step":
        _check_count(cmd, args, 1, 1)
        try:
            seconds = float(args[0])
        except (TypeError, ValueError):
            raise SimError(f"a clock step is a number of seconds, got {args[0]!r}") from None
        if sim.step_system_clock is None or not -1e10 < seconds < 1e10:
            raise SimError("this charger's clock cannot be stepped" if
                           sim.step_system_clock is None else f"step {seconds} s is too large")
        sim.step_system_clock(seconds)
        return {"stepped_s": seconds}
    _check_count(cmd, args, 0, 0)
    if cmd in LINK_COMMANDS:
        if link is None:
            raise SimError("this simulated charger has no link to the CSMS to drive")
        if cmd == "disconnect":
            link.hold("disconnected on request (chargepoint sim disconnect)")
        else:
            link.release()
        return {"link": link.status()}
    return sim.status()


def handle_line(sim: SimCharger, line: bytes,
                status_extra: Optional[Callable[[], dict]] = None,
                link: Any = None) -> tuple[dict, bool]:
    """The reply to one request line, and whether the command succeeded; `status_extra()`
    is merged into the result of `status`."""
    try:
        request = json.loads(line)
    except (ValueError, UnicodeDecodeError) as exc:
        return {"ok": False, "error": f"bad request: not JSON ({exc})"}, False
    if not isinstance(request, dict) or "cmd" not in request:
        return {"ok": False, "error": 'bad request: expected {"cmd": ..., "args": [...]}'}, False
    try:
        result = execute(sim, request["cmd"], request.get("args", []), link)
        if request["cmd"] == "status" and status_extra is not None:
            result = {**result, **status_extra()}
    except SimError as exc:
        return {"ok": False, "error": str(exc)}, False
    except Exception as exc:                      # a bug must not kill the server
        log.exception("simulator command %r failed", request)
        return {"ok": False, "error": f"internal error: {exc!r}"}, False
    return {"ok": True, "result": result}, True


# --------------------------------------------------------------------------- server

class SimControlServer:
    """Serves the simulator's commands on a Unix socket from a daemon thread.

    `start()` binds (removing a stale socket file left by a crash) and returns;
    `close()` stops and removes the socket. `on_command()` runs after each
    successful command and before its reply, in the server's thread: it wakes the
    firmware's loop and returns once the loop has handled what the command caused,
    and a connector's state in the reply is read after it. `status_extra()` adds
    the firmware's own figures (its loop's turn accounting, its link) to the reply
    to `status`, so what the simulator shows and what the firmware measured are
    read together. `link` is the firmware's link to the CSMS, for `disconnect` and
    `reconnect`.
    """

    def __init__(self, sim: SimCharger, path: str, on_command: Optional[Callable[[], None]] = None,
                 status_extra: Optional[Callable[[], dict]] = None, link: Any = None):
        self.sim = sim
        self.path = os.fspath(path)
        self.on_command = on_command
        self.status_extra = status_extra
        self.link = link
        self._listener: Optional[socket.socket] = None
        self._wake_r: Optional[socket.socket] = None
        self._wake_w: Optional[socket.socket] = None
        self._thread: Optional[threading.Thread] = None
        self._inode: Optional[tuple[int, int]] = None
        self._stopping = threading.Event()

    def __enter__(self) -> "SimControlServer":
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def start(self) -> None:
        if len(os.fsencode(self.path)) > 107:
            raise ValueError(f"socket path too long for a Unix socket (over 107 bytes): "
                             f"{self.path}")
        _prepare_directory(os.path.dirname(os.path.abspath(self.path)))
        _remove_stale_socket(self.path)
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            listener.bind(self.path)
            # The directory is 0700, so nobody else can connect before the chmod.
            os.chmod(self.path, 0o600)
            listener.listen(8)
        except BaseException:
            listener.close()
            raise
        st = os.stat(self.path)
        self._inode = (st.st_dev, st.st_ino)
        self._listener = listener
        self._wake_r, self._wake_w = socket.socketpair()
        self._thread = threading.Thread(target=self._accept_loop, name="sim-control", daemon=True)
        self._thread.start()
        log.info("simulator control socket at %s", self.path)

    def close(self) -> None:
        if self._thread is None:
            return
        self._stopping.set()
        try:
            self._wake_w.send(b"x")
        except OSError:
            pass
        self._thread.join(timeout=5)
        self._thread = None
        for sock in (self._listener, self._wake_r, self._wake_w):
            sock.close()
        try:                                      # only our own file, not a successor's
            st = os.stat(self.path)
            if (st.st_dev, st.st_ino) == self._inode:
                os.unlink(self.path)
        except FileNotFoundError:
            pass

    def _accept_loop(self) -> None:
        with selectors.DefaultSelector() as sel:
            sel.register(self._listener, selectors.EVENT_READ)
            sel.register(self._wake_r, selectors.EVENT_READ)
            while not self._stopping.is_set():
                for key, _ in sel.select():
                    if key.fileobj is self._wake_r:
                        return
                    try:
                        conn, _ = self._listener.accept()
                    except OSError as exc:
                        log.warning("simulator control socket: accept failed: %s", exc)
                        continue
                    threading.Thread(target=self._serve, args=(conn,),
                                     name="sim-control-conn", daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        """Answer each request line of one connection until it closes."""
        with conn:
            conn.settimeout(IDLE_TIMEOUT_S)
            buffer = b""
            try:
                while True:
                    newline = buffer.find(b"\n")
                    if newline < 0:
                        if len(buffer) > MAX_LINE:
                            self._reply(conn, {"ok": False, "error":
                                               f"request too long (over {MAX_LINE} bytes)"})
                            return
                        chunk = conn.recv(4096)
                        if not chunk:
                            if buffer.strip():            # last request without newline
                                self._answer(conn, buffer)
                            return
                        buffer += chunk
                        continue
                    line, buffer = buffer[:newline], buffer[newline + 1:]
                    if len(line) > MAX_LINE:
                        self._reply(conn, {"ok": False, "error":
                                           f"request too long (over {MAX_LINE} bytes)"})
                        return
                    if line.strip():
                        self._answer(conn, line)
            except (OSError, socket.timeout):
                return

    def _answer(self, conn: socket.socket, line: bytes) -> None:
        reply, ok = handle_line(self.sim, line, self.status_extra, self.link)
        # Let the firmware react before replying: once a client has its answer, the
        # firmware has seen the change, and the connector shown is as it left it.
        if ok and self.on_command is not None:
            try:
                self.on_command()
            except Exception:
                log.exception("simulator control socket: on_command failed")
        result = reply.get("result")
        if ok and isinstance(result, dict) and "connector_id" in result:
            try:
                reply["result"] = self.sim.connector_status(result["connector_id"])
            except SimError:
                pass
        self._reply(conn, reply)

    @staticmethod
    def _reply(conn: socket.socket, reply: dict) -> None:
        conn.sendall(json.dumps(reply).encode() + b"\n")


def _prepare_directory(directory: str) -> None:
    """Create the socket's directory 0700, and refuse one another user could write to."""
    os.makedirs(directory, mode=0o700, exist_ok=True)
    st = os.stat(directory)
    if st.st_uid != os.getuid():
        raise PermissionError(f"{directory} belongs to another user; "
                              f"choose another socket path")
    if st.st_mode & 0o022 and not st.st_mode & stat.S_ISVTX:
        raise PermissionError(f"{directory} is writable by others; "
                              f"choose another socket path")


def _remove_stale_socket(path: str) -> None:
    """Remove a socket file left by a firmware that died; refuse if one still listens."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(st.st_mode):
        raise FileExistsError(f"{path} exists and is not a socket; not removing it")
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.connect(path)
    except OSError as exc:
        if exc.errno not in (errno.ECONNREFUSED, errno.ENOENT):
            raise
    else:
        raise FileExistsError(f"another simulated charger is already serving {path}")
    finally:
        probe.close()
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


# --------------------------------------------------------------------------- client

def send_command(path: str, cmd: str, args: list, timeout: float = 5) -> dict:
    """Send one command and return the reply {"ok": ..., "result"/"error": ...}.

    Raises SimNotRunning when nothing listens at `path`.
    """
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    try:
        try:
            sock.connect(os.fspath(path))
        except (FileNotFoundError, ConnectionRefusedError) as exc:
            raise SimNotRunning(f"no simulated charger is running at {path}") from exc
        sock.sendall(json.dumps({"cmd": cmd, "args": list(args)}).encode() + b"\n")
        buffer = b""
        while b"\n" not in buffer:
            chunk = sock.recv(65536)
            if not chunk:
                break
            buffer += chunk
    finally:
        sock.close()
    line = buffer.split(b"\n", 1)[0]
    if not line:
        raise ConnectionError(f"the simulated charger at {path} closed without answering")
    return json.loads(line)


def _usage() -> str:
    lines = ["usage: chargepoint sim COMMAND [ARGS] [--json]", "", "commands:"]
    lines += [f"  {name:<12} {text}" for name, text in COMMANDS.items()]
    lines += ["", "N is the connector id; it may be left out when there is one connector.",
              "--json prints the firmware's answer as JSON instead of text."]
    return "\n".join(lines)


def _fmt_number(value: Optional[float], unit: str, scale: float = 1.0, digits: int = 1) -> str:
    return "-" if value is None else f"{value / scale:.{digits}f} {unit}"


def format_connector(st: dict) -> str:
    """One line about one connector, for the commands that change it."""
    parts = [f"connector {st['connector_id']}: pilot {st['pilot']}",
             "EV plugged in" if st["plugged"] else "no EV",
             f"contactor {st['contactor']}"]
    if not st["plugged"] and st.get("cable_in_socket"):
        parts.insert(2, "cable in the socket")
    if st["plugged"]:
        parts.append(f"battery {_fmt_number(st['soc_percent'], '%', digits=0)}")
    if st["faults"]:
        parts.append("faults: " + ", ".join(st["faults"]))
    return ", ".join(parts)


def format_status(status: dict) -> str:
    """A small table of every connector."""
    header = ("conn", "pilot", "offered", "contactor", "lock", "cable", "power", "energy",
              "soc", "light", "faults")
    rows = [header]
    for st in status["connectors"].values():
        contactor = st["contactor"]
        if st["contactor_feedback"] != st["contactor"]:
            contactor += f" (reads {st['contactor_feedback']})"
        rows.append((
            str(st["connector_id"]),
            st["pilot"] + (" (paused)" if st["ev_suspended"] else ""),
            _fmt_number(st["offered_a"], "A"),
            contactor,
            st["lock"] or "-",
            {True: "in socket", False: "out"}.get(st.get("cable_in_socket"), "-"),
            _fmt_number(st["power_w"], "kW", 1000.0, 2),
            _fmt_number(st["energy_wh"], "kWh", 1000.0, 3),
            _fmt_number(st["soc_percent"], "%", digits=0),
            st["indicator"] or "-",
            ", ".join(st["faults"]) or "-",
        ))
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in rows]
    if status.get("faults"):
        lines.append("charger faults: " + ", ".join(status["faults"]))
    link = status.get("link")
    if link:
        lines.append(format_link(link))
    loop = status.get("loop")
    if loop:
        lines.append(f"firmware loop: {loop['turns']} turns, worst {loop['worst_turn_ms']:.1f} ms; "
                     f"contactor opened {loop['contactor_opens']} times after a hardware event, "
                     f"worst {loop['worst_contactor_open_ms']:.1f} ms after it")
    return "\n".join(lines)


def format_link(link: dict) -> str:
    """One line about the firmware's link to the CSMS."""
    if link.get("held"):
        state = ("held down by `chargepoint sim disconnect` (the charger is offline; "
                 "`chargepoint sim reconnect` ends it)")
    elif link.get("connected"):
        state = "connected"
    else:
        state = "connecting" + (f" (last attempt: {link['last_error']})"
                                if link.get("last_error") else "")
    return f"link to {link.get('url', 'the CSMS')}: {state}"


def _format_result(cmd: str, result: Any) -> str:
    if cmd == "status":
        return format_status(result)
    if cmd in LINK_COMMANDS:
        return format_link(result["link"])
    if cmd == "tap":
        return f"card {result['id_tag']} presented"
    if isinstance(result, dict) and "connector_id" in result:
        return format_connector(result)
    if isinstance(result, dict) and "faults" in result:      # charger-wide fault
        return "charger faults: " + (", ".join(result["faults"]) or "none")
    return json.dumps(result)


def client_main(argv: list[str], path: str, as_json: bool = False) -> int:
    """`chargepoint sim <cmd> [args] [--json]`: 0 on success, 1 on any failure. With
    `--json` (anywhere among the words, or `as_json`) the result is printed as JSON."""
    if "--json" in argv:
        as_json, argv = True, [word for word in argv if word != "--json"]
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(_usage(), file=sys.stdout if argv else sys.stderr)
        return 0 if argv else 1
    cmd, args = argv[0], argv[1:]
    if cmd not in COMMANDS:
        print(f"chargepoint sim: unknown command {cmd!r}\n\n{_usage()}", file=sys.stderr)
        return 1
    try:
        reply = send_command(path, cmd, args)
    except SimNotRunning:
        print(f"no simulated charger is running at {path} "
              f"(start it with `chargepoint run` or `chargepoint demo`)", file=sys.stderr)
        return 1
    except (OSError, ValueError) as exc:
        print(f"chargepoint sim: cannot talk to {path}: {exc}", file=sys.stderr)
        return 1
    if not reply.get("ok"):
        print(f"chargepoint sim {cmd}: {reply.get('error', 'failed')}", file=sys.stderr)
        return 1
    result = reply.get("result")
    print(json.dumps(result, indent=1) if as_json else _format_result(cmd, result))
    return 0
