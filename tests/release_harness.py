"""Releases as the tests need them: bundles of other versions built from copies of this
checkout, the firmware run by hand (`chargepoint run`) or as the unit runs it, and a
stand-in for systemd that starts the unit's commands as systemd would.

`build_variant` copies the tree, gives it another version and optionally breaks it
(a module that cannot be imported, a main loop that hangs) and builds its bundle with
`chargepoint.releases.build_bundle`, as `chargepoint release build` does.

`ServiceStandIn` reads `systemd/chargepoint.service` and does for it what systemd does:
`ExecStartPre=` (a leading `-` lets it fail), then `ExecStart=` with $NOTIFY_SOCKET,
$WATCHDOG_USEC, a new $INVOCATION_ID and $STATE_DIRECTORY; a main process that exits in
failure, or stops pinging the watchdog after READY=1 (SIGABRT, as WatchdogSec= does), is
started again after `RestartSec=` (shortened here). Paths of the controller are replaced
by the test's: the guard by the repository's copy, /opt/chargepoint/venv by the state
directory's `current`, the configuration by the test's.
"""
from __future__ import annotations

import fcntl
import hashlib
import importlib.util
import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Optional

from chargepoint import __version__
from chargepoint.releases import build_bundle

ROOT = Path(__file__).resolve().parents[1]
UNIT = ROOT / "systemd" / "chargepoint.service"

#: A loop that never turns again once the firmware said READY=1.
HANG = ("chargepoint/runtime.py", "    def _loop(self) -> None:\n",
        "    def _loop(self) -> None:\n        threading.Event().wait()   # hangs\n")
#: A release whose self-test always finds a problem (chargepoint/selftest.py): accepted by
#: the CSMS, it rolls itself back.
SELF_TEST_FAILS = ("chargepoint/selftest.py", "    problems = []\n",
                   "    problems = ['the self-test of this release fails on purpose']\n")
#: A release whose firmware cannot be imported (`chargepoint run` dies at once).
BROKEN_IMPORT = ("chargepoint/runtime.py", "from __future__ import annotations\n",
                 "from __future__ import annotations\nraise ImportError('broken release')\n")


def load_dev():
    spec = importlib.util.spec_from_file_location("dev", ROOT / "dev.py")
    dev = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(dev)
    return dev


def build_variant(workdir: Path, version: str, *patches: tuple[str, str, str]) -> Path:
    """The bundle of this checkout as release `version`, with `patches` (file, old, new)."""
    source = workdir / f"src-{version}"
    shutil.copytree(ROOT, source, ignore=load_dev()._NOT_BUILT_FROM)
    init = source / "chargepoint" / "__init__.py"
    text = init.read_text()
    assert f'__version__ = "{__version__}"' in text
    init.write_text(text.replace(f'__version__ = "{__version__}"', f'__version__ = "{version}"'))
    for name, old, new in patches:
        path = source / name
        text = path.read_text()
        assert old in text, (name, old)
        path.write_text(text.replace(old, new, 1))
    bundle = build_bundle(workdir / "bundles", source=source)
    shutil.rmtree(source)
    return bundle


class BundleShelf:
    """Bundles built once per test run and shared, by the run's worker processes too
    (pytest-xdist): building one takes seconds. A lock file makes the one that builds a
    bundle the only one; the others wait for it and take the same file."""

    def __init__(self, workdir: Path):
        self.workdir = workdir
        self._lock = threading.Lock()

    def get(self, version: str, *patches: tuple[str, str, str]) -> Path:
        key = hashlib.sha256(repr((version, patches)).encode()).hexdigest()[:16]
        done = self.workdir / f"{key}.built"
        with self._lock, open(self.workdir / ".lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            if not done.exists():
                built = build_variant(self.workdir / key, version, *patches)
                done.write_text(str(built))
            return Path(done.read_text())


CONFIG = """\
[csms]
url = "{url}"
charge_point_id = "{cp_id}"
reconnect_min_s = 0.05
reconnect_max_s = 0.2
response_timeout_s = 5

[log]
level = "info"

[system]
sim_socket = "{sock}"

[ocpp]
WebSocketPingInterval = 0

[[connectors]]
id = 1
fixed_cable = true

[connectors.meter]
type = "sim"

[connectors.contactor]
type = "sim"

[connectors.pilot]
type = "sim"

[connectors.indicator]
type = "sim"
"""


def accept_only(version: str):
    """A CSMS's BootNotification answer that accepts `version` and leaves any other release
    Pending: a release the CSMS accepts self-tests and commits itself (or rolls itself
    back), so a test that drives a trial by hand keeps the release under test Pending."""

    def answer(cp_id: str, payload: dict) -> dict:
        accepted = payload.get("firmwareVersion") == version
        return {"status": "Accepted" if accepted else "Pending", "interval": 300}

    return answer


def write_config(workdir: Path, csms_url: str, cp_id: str) -> Path:
    config = workdir / "config.toml"
    config.write_text(CONFIG.format(url=csms_url, cp_id=cp_id, sock=workdir / "sim.sock"))
    return config


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if k not in ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID", "JOURNAL_STREAM",
                        "INVOCATION_ID", "STATE_DIRECTORY", "CHARGEPOINT_RELEASE_SUPERVISOR")}
    env.update(PYTHONUNBUFFERED="1", **extra)
    return env


class HandRun:
    """`python -m chargepoint run --config C --state-dir S` of this checkout, as a person
    starts it; output in `log`."""

    def __init__(self, workdir: Path, config: Path, state_dir: Path):
        self.workdir, self.config, self.state_dir = workdir, config, state_dir
        self.log = workdir / "hand-run.log"
        self.proc: Optional[subprocess.Popen] = None

    def start(self) -> "HandRun":
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "chargepoint", "run", "--config", str(self.config),
                 "--state-dir", str(self.state_dir)], cwd=ROOT, env=clean_env(),
                stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        return self

    def stop(self, timeout: float = 30.0) -> int:
        """SIGTERM, as Ctrl-C or `kill` would; its exit status."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        finally:
            self.kill()

    def kill(self) -> None:
        """Everything it started, as a power cut would end it."""
        if self.proc is not None:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.proc.wait(10)

    def text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""


def unit_commands() -> dict[str, list[str]]:
    """The unit's Exec lines (ExecStartPre may repeat) and settings, as written."""
    found: dict[str, list[str]] = {}
    for line in UNIT.read_text().splitlines():
        key, sep, value = line.partition("=")
        if sep and key in ("ExecStartPre", "ExecStart", "WatchdogSec", "RestartSec",
                           "Restart", "StateDirectory"):
            found.setdefault(key, []).append(value)
    return found


class ServiceStandIn:
    """systemd for chargepoint.service, as far as the releases are concerned (module doc)."""

    def __init__(self, workdir: Path, config: Path, state_dir: Path,
                 watchdog_s: Optional[float] = None, restart_s: float = 0.2):
        self.workdir, self.config, self.state_dir = workdir, config, state_dir
        unit = unit_commands()
        self.pre = [self._command(c) for c in unit.get("ExecStartPre", [])]
        (main,) = unit["ExecStart"]
        self.main = self._command(main)
        self.watchdog_s = watchdog_s if watchdog_s is not None else \
            float(unit["WatchdogSec"][0])
        assert unit["Restart"] == ["on-failure"]
        self.restart_s = restart_s
        self.log = workdir / "service.log"
        self.starts = 0
        #: (invocation, how the main process ended) of every start.
        self.ends: list[tuple[str, str]] = []
        self.main_pid: Optional[int] = None
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = None
        self._proc: Optional[subprocess.Popen] = None

    def _command(self, line: str) -> tuple[bool, list[str]]:
        may_fail = line.startswith("-")
        words = shlex.split(line.lstrip("-"))
        out = []
        for word in words:
            word = word.replace("%S/chargepoint", str(self.state_dir))
            word = word.replace("/opt/chargepoint/release-guard.py",
                                str(ROOT / "chargepoint" / "release_guard.py"))
            word = word.replace("/opt/chargepoint/venv",
                                str(self.state_dir / "releases" / "current"))
            word = word.replace("/etc/chargepoint/config.toml", str(self.config))
            out.append(word)
        if out[0] == "/usr/bin/python3" and not os.path.exists(out[0]):
            out[0] = sys._base_executable
        return may_fail, out

    def start(self) -> "ServiceStandIn":
        self._thread = threading.Thread(target=self._run, name="systemd-stand-in",
                                        daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        with open(self.log, "ab") as out:
            while not self._stop.is_set():
                invocation = uuid.uuid4().hex
                self.starts += 1
                env = clean_env(INVOCATION_ID=invocation, STATE_DIRECTORY=str(self.state_dir))
                failed = False
                for may_fail, command in self.pre:
                    out.write(f"--- ExecStartPre {' '.join(command)}\n".encode())
                    out.flush()
                    code = subprocess.run(command, env=env, stdout=out, stderr=out,
                                          cwd=self.workdir).returncode
                    failed = failed or (code != 0 and not may_fail)
                if failed:
                    self.ends.append((invocation, "ExecStartPre failed"))
                    self._stop.wait(self.restart_s)
                    continue
                how = self._run_main(env, out)
                self.ends.append((invocation, how))
                if how in ("exit 0", "stopped"):
                    return
                self._stop.wait(self.restart_s)

    def _run_main(self, env: dict, out) -> str:
        path = self.workdir / f"notify-{uuid.uuid4().hex[:8]}"
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        sock.bind(str(path))
        sock.settimeout(0.1)
        env = dict(env, NOTIFY_SOCKET=str(path),
                   WATCHDOG_USEC=str(int(self.watchdog_s * 1_000_000)))
        out.write(f"--- ExecStart {' '.join(self.main[1])}\n".encode())
        out.flush()
        proc = subprocess.Popen(self.main[1], env=env, stdout=out, stderr=out,
                                cwd=self.workdir, start_new_session=True)
        self._proc, self.main_pid = proc, proc.pid
        ready = None
        last_ping = time.monotonic()
        try:
            while proc.poll() is None:
                if self._stop.is_set():
                    proc.send_signal(signal.SIGTERM)
                    try:
                        proc.wait(30)
                    except subprocess.TimeoutExpired:
                        os.killpg(proc.pid, signal.SIGKILL)
                    return "stopped"
                if ready is not None and time.monotonic() - last_ping > self.watchdog_s:
                    proc.send_signal(signal.SIGABRT)            # what WatchdogSec= does
                    try:
                        proc.wait(10)
                    except subprocess.TimeoutExpired:
                        os.killpg(proc.pid, signal.SIGKILL)
                        proc.wait()
                    return "watchdog"
                try:
                    message = sock.recv(4096).decode()
                except socket.timeout:
                    continue
                if "READY=1" in message.split("\n") and ready is None:
                    ready = last_ping = time.monotonic()
                if "WATCHDOG=1" in message.split("\n"):
                    last_ping = time.monotonic()
            return f"exit {proc.returncode}"
        finally:
            sock.close()
            path.unlink(missing_ok=True)

    def stop(self, timeout: float = 40.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def kill(self) -> None:
        """A power cut: the main process and all it started, at once."""
        self._stop.set()
        proc = self._proc
        if proc is not None and proc.poll() is None:
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        if self._thread is not None:
            self._thread.join(20)

    def text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""
