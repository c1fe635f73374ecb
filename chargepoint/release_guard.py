"""The release guard: which release runs, whether it is on trial, and the way back.

Releases live in `<state dir>/releases/`: one directory (a virtual environment) per
version, or a link to one installed by hand, and `current`, a link to the one that runs.
A release switched to over the air is **on trial** (`trial.json`) until the firmware
commits it; until then every launch of it is counted here, and a release that does not
come up within `trial_starts` launches, or gives up itself, is rolled back: `current`
goes back to the previous release and `last-rollback.json` says why.

This module uses the standard library only and imports nothing of the firmware, because
it must work when a release cannot even be imported: a copy of it runs outside every
release, as the unit's `ExecStartPre=` (`release-guard.py start STATE_DIR`) before each
start of the service, and as the parent of the firmware when no service manager runs it
(`supervise`: `chargepoint run` by hand, `chargepoint demo`). It is also the operator's
tool (`status`, `use`, `add`), which works whatever state a release is in.

Every change is a write to a new file renamed into place, so that a power cut at any
moment leaves either the old or the new state, and `start` completes or undoes what a
cut interrupted (docs/firmware-update.md, "Power cuts").
"""
from __future__ import annotations

import argparse
import json
import os
import re
import select
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Optional

#: Version of the files below; a guard reads every format up to its own.
FORMAT = 1
RELEASES = "releases"
CURRENT = "current"
TRIAL = "trial.json"
ROLLBACK = "last-rollback.json"
#: The start of the service the guard last checked ($INVOCATION_ID), so that the firmware
#: knows a guard watches its launches.
GUARDED = "guarded.json"
#: Inside a release directory while it is being installed: such a directory is debris.
INCOMPLETE = ".incomplete"
#: Written last into a release directory installed from a bundle.
RELEASE_INFO = "release.json"

#: The child of `supervise` finds its supervisor's pid here.
SUPERVISOR_ENV = "CHARGEPOINT_RELEASE_SUPERVISOR"

#: What a release directory may be called: a firmwareVersion (CiString50) fit for a path.
VERSION_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+-]{0,49}")


class GuardError(Exception):
    """A request the releases cannot satisfy; the message says why."""


@dataclass
class Policy:
    """How a release is tried: the firmware's `[releases]` settings, stored with the trial
    so that the guard, which reads no configuration, applies the same."""

    trial_s: float = 600.0
    trial_starts: int = 3
    keep: int = 3
    watchdog_s: float = 30.0


@dataclass
class TrialRecord:
    id: str
    version: str
    previous: str
    starts: int
    trial_s: float
    trial_starts: int
    keep: int
    watchdog_s: float
    began: float


@dataclass
class RollbackRecord:
    id: str
    version: str
    previous: str
    reason: str
    at: float


Log = Callable[[str, str], None]


def _stderr_log(level: str, text: str) -> None:
    """One line on standard error; under journald with its priority, as the firmware's."""
    if os.environ.get("JOURNAL_STREAM"):
        priority = {"error": 3, "warning": 4, "info": 6}.get(level, 6)
        print(f"<{priority}>release-guard: {text}", file=sys.stderr, flush=True)
    else:
        print(f"{time.strftime('%H:%M:%S')} {level.upper():7} release-guard: {text}",
              file=sys.stderr, flush=True)


# ------------------------------------------------------------------------------ files

def releases_dir(state_dir: str | os.PathLike) -> Path:
    return Path(state_dir) / RELEASES


def check_version(version: str) -> str:
    if not VERSION_RE.fullmatch(version) or version == CURRENT:
        raise GuardError(f"{version!r} is not a release version (letters, digits and ._+-, "
                         "at most 50)")
    return version


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def write_json(path: Path, data: dict) -> None:
    """Whole or not at all, and on the card before it returns (a power cut may follow).
    chargepoint/durable.py does the same for the firmware; this module imports nothing."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w") as out:
            json.dump({"format": FORMAT, **data}, out, indent=1, sort_keys=True)
            out.write("\n")
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    _fsync_dir(path.parent)


def _read_json(path: Path) -> Optional[dict]:
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError):
        return None                        # unreadable: as if absent (written whole or not)
    if not isinstance(data, dict) or not isinstance(data.get("format"), int) \
            or data["format"] > FORMAT:
        return None
    return data


def _remove(path: Path) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        return
    _fsync_dir(path.parent)


def _record(cls, data: Optional[dict]):
    if data is None:
        return None
    names = cls.__dataclass_fields__
    try:
        return cls(**{name: data[name] for name in names})
    except (KeyError, TypeError):
        return None


def read_trial(state_dir) -> Optional[TrialRecord]:
    return _record(TrialRecord, _read_json(releases_dir(state_dir) / TRIAL))


def read_rollback(state_dir) -> Optional[RollbackRecord]:
    return _record(RollbackRecord, _read_json(releases_dir(state_dir) / ROLLBACK))


# ------------------------------------------------------------------------------ releases

def current_version(state_dir) -> Optional[str]:
    """The release `current` names, or None (no releases here, or a broken link)."""
    try:
        target = os.readlink(releases_dir(state_dir) / CURRENT)
    except OSError:
        return None
    return target if VERSION_RE.fullmatch(target) else None


def is_complete(state_dir, version: str) -> bool:
    """A release that can run: its directory (or the venv it links to) has a Python, and
    no install of it is under way or was cut short."""
    path = releases_dir(state_dir) / version
    return (VERSION_RE.fullmatch(version) is not None and version != CURRENT
            and (path / "bin" / "python").exists() and not (path / INCOMPLETE).exists())


def release_python(state_dir, version: str) -> Path:
    """The interpreter of a release, by its own path: a process started through `current`
    would load the next release's modules once `current` moves."""
    return releases_dir(state_dir) / version / "bin" / "python"


def launch_command(state_dir, version: str, args: list[str]) -> list[str]:
    """`chargepoint ARGS` of that release; -P: its own modules even when the working
    directory holds a checkout of another."""
    return [str(release_python(state_dir, version)), "-P", "-m", "chargepoint", *args]


def installed(state_dir) -> list[str]:
    """Complete releases, oldest install first."""
    folder = releases_dir(state_dir)
    try:
        names = os.listdir(folder)
    except OSError:
        return []
    found = [n for n in names if not n.startswith(".") and is_complete(state_dir, n)]
    return sorted(found, key=lambda n: (_installed_at(folder / n), n))


def _installed_at(path: Path) -> float:
    info = path / RELEASE_INFO
    try:
        return info.stat().st_mtime if info.exists() else path.lstat().st_mtime
    except OSError:
        return 0.0


def switch(state_dir, version: str) -> None:
    """Point `current` at `version` in one rename: a cut leaves the old link or the new."""
    folder = releases_dir(state_dir)
    tmp = folder / f".{CURRENT}.{os.getpid()}.{uuid.uuid4().hex[:8]}"
    os.symlink(version, tmp)
    try:
        os.replace(tmp, folder / CURRENT)
    except BaseException:
        _remove(tmp)
        raise
    _fsync_dir(folder)


def remove_release(state_dir, version: str) -> None:
    """Delete a release: its directory, or only the link to one installed by hand."""
    path = releases_dir(state_dir) / check_version(version)
    if path.is_symlink():
        _remove(path)
    elif path.is_dir():
        # Marked first: a cut halfway leaves a directory the next start knows is debris.
        try:
            (path / INCOMPLETE).touch()
        except OSError:
            pass
        shutil.rmtree(path, ignore_errors=True)
        _fsync_dir(path.parent)


def clear_debris(state_dir, log: Log = _stderr_log) -> None:
    """Remove what a cut left: releases whose install never finished, stray temporary
    links and files. Only at a start, when nothing can be installing."""
    folder = releases_dir(state_dir)
    try:
        names = os.listdir(folder)
    except OSError:
        return
    for name in names:
        path = folder / name
        if name.startswith("."):
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path, ignore_errors=True)
            else:
                _remove(path)
        elif VERSION_RE.fullmatch(name) and name != CURRENT and not path.is_symlink() \
                and (path / INCOMPLETE).exists():
            log("warning", f"removing release {name}: its install did not finish")
            shutil.rmtree(path, ignore_errors=True)


# ------------------------------------------------------------------------------ the trial

def begin_trial(state_dir, version: str, policy: Policy) -> TrialRecord:
    """Put `version` on trial and make it current. The trial is written first: a cut
    before the switch leaves a trial whose switch `start` completes."""
    check_version(version)
    if not is_complete(state_dir, version):
        raise GuardError(f"release {version} is not installed completely in "
                         f"{releases_dir(state_dir)}")
    previous = current_version(state_dir)
    if previous is None or not is_complete(state_dir, previous):
        raise GuardError("no current release to come back to")
    if previous == version:
        raise GuardError(f"release {version} is the current one")
    if read_trial(state_dir) is not None:
        raise GuardError("another release is on trial")
    trial = TrialRecord(id=uuid.uuid4().hex, version=version, previous=previous, starts=0,
                        trial_s=float(policy.trial_s), trial_starts=int(policy.trial_starts),
                        keep=int(policy.keep), watchdog_s=float(policy.watchdog_s),
                        began=time.time())
    write_json(releases_dir(state_dir) / TRIAL, asdict(trial))
    switch(state_dir, version)
    return trial


def roll_back(state_dir, reason: str, log: Log = _stderr_log) -> Optional[RollbackRecord]:
    """End the trial in failure: the reason is written first, then `current` goes back,
    then the trial is removed; a cut in between is completed by `start`. None when no
    release is on trial."""
    trial = read_trial(state_dir)
    if trial is None:
        return None
    record = RollbackRecord(id=trial.id, version=trial.version, previous=trial.previous,
                            reason=reason, at=time.time())
    write_json(releases_dir(state_dir) / ROLLBACK, asdict(record))
    _finish_rollback(state_dir, trial, log)
    log("error", f"release {trial.version} rolled back to {trial.previous}: {reason}")
    return record


def _finish_rollback(state_dir, trial: TrialRecord, log: Log) -> None:
    if is_complete(state_dir, trial.previous):
        if current_version(state_dir) != trial.previous:
            switch(state_dir, trial.previous)
    else:
        log("error", f"release {trial.previous} to roll back to is missing; "
                     f"{current_version(state_dir)} stays current")
    _remove(releases_dir(state_dir) / TRIAL)


def commit(state_dir, running: str, log: Log = _stderr_log) -> Optional[TrialRecord]:
    """End the trial in success, then delete the oldest releases beyond the trial's
    `keep` (never the current one nor the one before it). None when nothing was on
    trial; GuardError if `running` is not the release on trial."""
    trial = read_trial(state_dir)
    if trial is None:
        return None
    if trial.version != running or current_version(state_dir) != running:
        raise GuardError(f"release {running} is not the one on trial ({trial.version})")
    _remove(releases_dir(state_dir) / TRIAL)
    prune(state_dir, trial.keep, keep_also=(trial.previous,), log=log)
    log("info", f"release {trial.version} committed (after {trial.starts} "
                f"start{'s' if trial.starts != 1 else ''})")
    return trial


def prune(state_dir, keep: int, keep_also: tuple[str, ...] = (), log: Log = _stderr_log) \
        -> list[str]:
    """Delete the oldest complete releases until `keep` are left; never current."""
    protected = {current_version(state_dir), *keep_also}
    releases = installed(state_dir)
    removed = []
    for version in releases:
        if len(releases) - len(removed) <= max(keep, 1):
            break
        if version in protected:
            continue
        remove_release(state_dir, version)
        removed.append(version)
        log("info", f"release {version} deleted (keeping {keep})")
    return removed


def start(state_dir, log: Log = _stderr_log, invocation: Optional[str] = None) -> str:
    """Before every launch of a release: finish what a cut interrupted, count a launch
    of the release on trial, and roll it back once it has had `trial_starts`. Returns
    what runs now, as one line."""
    folder = releases_dir(state_dir)
    if not folder.is_dir():
        return "no releases here"
    clear_debris(state_dir, log)
    if invocation:
        write_json(folder / GUARDED, {"invocation": invocation})
    trial = read_trial(state_dir)
    rollback = read_rollback(state_dir)
    if trial is not None and rollback is not None and rollback.id == trial.id:
        log("warning", f"finishing the rollback of release {trial.version} a stop cut short")
        _finish_rollback(state_dir, trial, log)
        trial = None
    if trial is None:
        current = current_version(state_dir)
        if current is not None and is_complete(state_dir, current):
            return f"release {current}"
        fallback = next(reversed(installed(state_dir)), None)
        if fallback is None:
            return "no complete release here"
        log("error", f"current release {current or '(none)'} is missing; "
                     f"switching to {fallback}")
        switch(state_dir, fallback)
        return f"release {fallback}"
    if not is_complete(state_dir, trial.version):
        roll_back(state_dir, f"release {trial.version} is missing or incomplete", log)
        return f"release {trial.previous} (rolled back)"
    if current_version(state_dir) != trial.version:
        log("warning", f"finishing the switch to release {trial.version} a stop cut short")
        switch(state_dir, trial.version)
    trial.starts += 1
    if trial.starts > trial.trial_starts:
        roll_back(state_dir, f"it did not pass its trial in {trial.trial_starts} "
                             f"start{'s' if trial.trial_starts != 1 else ''}", log)
        return f"release {trial.previous} (rolled back)"
    write_json(folder / TRIAL, asdict(trial))
    log("info", f"release {trial.version} on trial: start {trial.starts} of "
                f"{trial.trial_starts}, previous {trial.previous}")
    return f"release {trial.version} on trial"


def guarded(state_dir) -> bool:
    """Does a guard count this process's launches: `supervise` is its parent, or the
    unit's ExecStartPre= checked this start of the service?"""
    supervisor = os.environ.get(SUPERVISOR_ENV, "")
    if supervisor.isdigit() and int(supervisor) == os.getppid():
        return True
    invocation = os.environ.get("INVOCATION_ID")
    seen = _read_json(releases_dir(state_dir) / GUARDED)
    return bool(invocation) and seen is not None and seen.get("invocation") == invocation


def adopt(state_dir, venv: str | os.PathLike, log: Log = _stderr_log) -> str:
    """Register a release installed by hand (its virtual environment) under its version,
    as a link; it becomes current if nothing is. Returns the version."""
    venv = Path(venv).absolute()
    if not (venv / "bin" / "python").exists():
        raise GuardError(f"{venv} is not a virtual environment (no bin/python)")
    infos = sorted(venv.glob("lib/python*/site-packages/chargepoint-*.dist-info"))
    if len(infos) != 1:
        raise GuardError(f"{venv} holds {len(infos)} installs of chargepoint, not one")
    version = check_version(infos[0].name[len("chargepoint-"):-len(".dist-info")])
    folder = releases_dir(state_dir)
    folder.mkdir(mode=0o750, parents=True, exist_ok=True)
    path = folder / version
    if path.exists() and not path.is_symlink():
        raise GuardError(f"release {version} is already installed in {path}")
    tmp = folder / f".{version}.{os.getpid()}"
    os.symlink(venv, tmp)
    os.replace(tmp, path)
    _fsync_dir(folder)
    if current_version(state_dir) is None:
        switch(state_dir, version)
    log("info", f"release {version} registered ({venv}); current: "
                f"{current_version(state_dir)}")
    return version


def use(state_dir, version: str, log: Log = _stderr_log) -> None:
    """Make `version` current by hand, without a trial (an operator's rollback or
    upgrade); a trial in progress ends as rolled back, with that reason."""
    check_version(version)
    if not is_complete(state_dir, version):
        raise GuardError(f"release {version} is not installed here "
                         f"(installed: {', '.join(installed(state_dir)) or 'none'})")
    trial = read_trial(state_dir)
    if trial is not None and trial.version != version:
        record = RollbackRecord(id=trial.id, version=trial.version, previous=version,
                                reason=f"switched by hand to {version}", at=time.time())
        write_json(releases_dir(state_dir) / ROLLBACK, asdict(record))
    switch(state_dir, version)
    if trial is not None:
        _remove(releases_dir(state_dir) / TRIAL)
    log("info", f"current release: {version}")


def status(state_dir) -> str:
    """What an operator wants to see: the releases, which runs, the trial, the last
    rollback."""
    current = current_version(state_dir)
    lines = []
    for version in installed(state_dir):
        path = releases_dir(state_dir) / version
        where = f" -> {os.readlink(path)}" if path.is_symlink() else ""
        lines.append(f"{'*' if version == current else ' '} {version}{where}")
    if not lines:
        lines.append(f"no releases in {releases_dir(state_dir)}")
    trial = read_trial(state_dir)
    if trial is not None:
        lines.append(f"on trial: {trial.version} (start {trial.starts} of "
                     f"{trial.trial_starts}, {trial.trial_s:g} s each to pass; "
                     f"previous {trial.previous})")
    rollback = read_rollback(state_dir)
    if rollback is not None:
        lines.append(f"last rollback: {rollback.version} -> {rollback.previous} at "
                     f"{time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(rollback.at))}: "
                     f"{rollback.reason}")
    return "\n".join(lines)


# ------------------------------------------------------------------------------ supervise

class Supervisor:
    """Runs the current release as a child, as systemd runs the service: every launch
    goes through `start`; a child that exits in failure, sends no READY=1 within
    `start_timeout_s` or stops pinging the watchdog is killed and launched again while
    its release is on trial; a trial not committed within `trial_s` of a launch is
    rolled back. The child's sd_notify messages reach our own $NOTIFY_SOCKET too."""

    def __init__(self, state_dir: str, args: list[str], log: Log = _stderr_log,
                 start_timeout_s: float = 90.0, kill_grace_s: float = 10.0):
        self.state_dir = state_dir
        self.args = args
        self.log = log
        self.start_timeout_s = start_timeout_s
        self.kill_grace_s = kill_grace_s
        self.child: Optional[subprocess.Popen] = None
        self._stop_signal: Optional[int] = None
        self._upstream = os.environ.get("NOTIFY_SOCKET") or None
        self._tmp = tempfile.mkdtemp(prefix="chargepoint-supervisor-")
        self._sock_path = os.path.join(self._tmp, "notify")
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
        self._sock.bind(self._sock_path)
        self._out = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)

    def run(self) -> int:
        for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            signal.signal(signum, self._on_signal)
        try:
            while True:
                code = self._one_launch()
                if code is not None:
                    return code
        finally:
            self._sock.close()
            self._out.close()
            shutil.rmtree(self._tmp, ignore_errors=True)

    def _on_signal(self, signum, frame) -> None:
        self._stop_signal = signum
        if self.child is not None and self.child.poll() is None:
            try:
                self.child.send_signal(signum)
            except OSError:
                pass

    def _one_launch(self) -> Optional[int]:
        """Launch once; the exit status to end with, or None to launch again."""
        if self._stop_signal is not None:
            return 0
        start(self.state_dir, self.log)
        version = current_version(self.state_dir)
        trial = read_trial(self.state_dir)
        watchdog_s = self._watchdog_s(trial)
        env = {k: v for k, v in os.environ.items()
               if k not in ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID",
                            "INVOCATION_ID")}
        env.update({SUPERVISOR_ENV: str(os.getpid()), "NOTIFY_SOCKET": self._sock_path,
                    "WATCHDOG_USEC": str(int(watchdog_s * 1_000_000))})
        # No releases here (the demo's firmware after a Reset): the one this came from.
        command = (launch_command(self.state_dir, version, self.args) if version is not None
                   else [sys.executable, "-m", "chargepoint", *self.args])
        self.child = subprocess.Popen(command, env=env, preexec_fn=_die_with_parent)
        outcome = self._watch(self.child, trial if trial and trial.version == version
                              else None, watchdog_s)
        code = self.child.returncode
        if self._stop_signal is not None:
            return 0 if code in (0, -self._stop_signal) else (code if code > 0 else 1)
        trial = read_trial(self.state_dir)
        on_trial = trial is not None and trial.version == version
        if outcome == "deadline" and trial is not None:
            roll_back(self.state_dir, f"it did not pass its trial within {trial.trial_s:g} s",
                      self.log)
            return None
        if outcome == "exit" and code == 0:
            return 0
        why = (f"exited with status {code}" if code >= 0 else
               f"was killed by {signal.Signals(-code).name}") if outcome == "exit" else outcome
        if on_trial:
            self.log("error", f"release {version} on trial {why}; launching again")
            return None
        self.log("error", f"release {version} {why}")
        return code if code > 0 else 1

    def _watchdog_s(self, trial: Optional[TrialRecord]) -> float:
        upstream = os.environ.get("WATCHDOG_USEC", "")
        if upstream.isdigit() and int(upstream) > 0:
            return int(upstream) / 1_000_000
        return trial.watchdog_s if trial is not None else Policy.watchdog_s

    def _watch(self, child: subprocess.Popen, trial: Optional[TrialRecord],
               watchdog_s: float) -> str:
        """Until the child ends: "exit", or after killing it: "no READY=1 within …",
        "the watchdog was not fed …", "deadline"."""
        launched = time.monotonic()
        ready_at: Optional[float] = None
        last_ping = launched
        while child.poll() is None:
            now = time.monotonic()
            if trial is not None and now - launched > trial.trial_s:
                if read_trial(self.state_dir) is None:
                    trial = None                                # committed meanwhile
                    continue
                self.log("error", f"release {trial.version} did not pass its trial within "
                                  f"{trial.trial_s:g} s")
                self._kill(child, signal.SIGTERM)
                return "deadline"
            if ready_at is None and now - launched > self.start_timeout_s:
                self._kill(child, signal.SIGABRT)
                return f"sent no READY=1 within {self.start_timeout_s:g} s"
            if ready_at is not None and now - last_ping > watchdog_s:
                self._kill(child, signal.SIGABRT)
                return f"did not feed the watchdog for {watchdog_s:g} s"
            if self._stop_signal is not None:
                try:
                    child.wait(timeout=0.2)
                except subprocess.TimeoutExpired:
                    pass
                continue
            readable, _, _ = select.select([self._sock], [], [], 0.2)
            if not readable:
                continue
            try:
                message = self._sock.recv(4096)
            except OSError:
                continue
            fields = dict(line.split("=", 1) for line in message.decode(errors="replace")
                          .splitlines() if "=" in line)
            if fields.get("READY") == "1" and ready_at is None:
                ready_at = last_ping = time.monotonic()
            if fields.get("WATCHDOG") == "1":
                last_ping = time.monotonic()
            self._forward(message)
        return "exit"

    def _kill(self, child: subprocess.Popen, signum: int) -> None:
        """`signum`, then SIGKILL after the grace time, as systemd's stop does."""
        try:
            child.send_signal(signum)
            child.wait(timeout=self.kill_grace_s)
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()
        except OSError:
            pass

    def _forward(self, message: bytes) -> None:
        if self._upstream is None:
            return
        address = self._upstream
        target = "\0" + address[1:] if address.startswith("@") else address
        try:
            self._out.sendto(message, target)
        except OSError:
            pass


def _die_with_parent() -> None:
    """In the child before exec: end with the supervisor, as it would have ended with the
    process it replaced (a SIGKILL, a power cut in tests). Linux prctl(PR_SET_PDEATHSIG);
    through ctypes, as the standard library has no binding for it."""
    import ctypes  # noqa: only in the child, where nothing else runs yet

    try:
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL, 0, 0, 0)
    except (OSError, AttributeError):
        pass


def supervise_command(state_dir, args: list[str]) -> list[str]:
    """The command that replaces a firmware process by a supervisor of `args`, with this
    very file (of the release that runs now, known to work) and its interpreter."""
    return [sys.executable, "-I", os.path.abspath(__file__), "supervise",
            str(state_dir), "--", *args]


# ------------------------------------------------------------------------------ command line

def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(
        prog="release-guard", description="The firmware's releases: check before a start, "
        "supervise a run by hand, show them, switch by hand (docs/firmware-update.md).")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("start", help="before a start of the service (ExecStartPre=): finish "
                       "an interrupted switch or rollback, count a launch of a release on "
                       "trial, roll it back after too many")
    p.add_argument("state_dir")
    p = sub.add_parser("supervise", help="run the current release as a child, guarding its "
                       "trial (chargepoint run by hand, chargepoint demo)")
    p.add_argument("state_dir")
    p.add_argument("args", nargs=argparse.REMAINDER, help="-- then chargepoint's arguments")
    p = sub.add_parser("status", help="the releases, the current one, the trial, the last "
                       "rollback")
    p.add_argument("state_dir")
    p = sub.add_parser("use", help="make an installed release current, without a trial")
    p.add_argument("state_dir")
    p.add_argument("version")
    p = sub.add_parser("add", help="register a release installed by hand (its virtual "
                       "environment); current if none is")
    p.add_argument("state_dir")
    p.add_argument("venv")
    args = parser.parse_args(argv)
    try:
        if args.command == "start":
            # Never stop the service from starting: whatever fails here is logged only.
            try:
                _stderr_log("info", start(args.state_dir,
                                          invocation=os.environ.get("INVOCATION_ID")))
            except Exception as exc:                       # noqa: BLE001
                _stderr_log("error", f"the release check failed: {exc!r}")
            return 0
        if args.command == "supervise":
            rest = args.args[1:] if args.args[:1] == ["--"] else args.args
            return Supervisor(args.state_dir, rest).run()
        if args.command == "status":
            print(status(args.state_dir))
        elif args.command == "use":
            use(args.state_dir, args.version)
        elif args.command == "add":
            adopt(args.state_dir, args.venv)
    except (GuardError, OSError) as exc:
        print(f"release-guard: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
